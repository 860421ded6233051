#![cfg(feature = "kdl")]
//! SmartOS's own `VM.validate` cases (tests/compat, taken from smartos-live's
//! test-validate-payload.js and test-bhyve-pci.js, MPL-2.0): at least 90% must agree on
//! valid/invalid. Disagreements, and invalid cases whose reported fields differ from
//! SmartOS's, are printed with the reason.

use serde_json::Value;
use spec::smartos::{self, Action, Options};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The images SmartOS's test suite has installed when it runs these cases.
const INSTALLED: &[&str] = &[
    "01b2c898-945f-11e1-a523-af1afbe22822",
    "71101322-43a5-11e1-8f01-cf2a3031a7f4",
    "462d1d03-8457-e134-a408-cf9ea2b9be96",
];

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat")
}

fn cases() -> Vec<(PathBuf, Value)> {
    let root = compat_dir();
    assert!(
        root.is_dir(),
        "the SmartOS compatibility cases are missing: expected {}",
        root.display()
    );
    let mut out = Vec::new();
    for sub in ["smartos-validate", "smartos-validate-bhyve-pci"] {
        let dir = root.join(sub);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for f in files {
            let case: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            out.push((f, case));
        }
    }
    out
}

#[test]
fn smartos_validate_cases_agree() {
    let installed = |u: &Uuid| INSTALLED.contains(&u.to_string().as_str());
    let opts = Options {
        images: Some(&installed),
    };
    let cases = cases();
    assert!(
        cases.len() >= 80,
        "expected the SmartOS cases, found {}",
        cases.len()
    );
    let (mut agree, mut fields_agree, mut with_fields) = (0, 0, 0);
    let mut report = Vec::new();
    for (file, case) in &cases {
        let name = file.file_name().unwrap().to_string_lossy();
        let brand = case["brand"].as_str().unwrap_or("");
        let payload = case["payload"].to_string();
        let result = match case["action"].as_str().unwrap_or("").parse::<Action>() {
            Ok(action) => smartos::validate(action, Some(brand), &payload, opts),
            // SmartOS's validate refuses an action it does not know; so does ours.
            Err(why) => Err(smartos::SmartosErrors {
                notes: vec![why.to_string()],
                ..Default::default()
            }),
        };
        let expect_valid = case["expect"] == "valid";
        if result.is_ok() == expect_valid {
            agree += 1;
        } else {
            let ours = match &result {
                Ok(()) => "valid".to_owned(),
                Err(e) => format!("invalid {:?}: {e}", e.fields()),
            };
            report.push(format!(
                "DISAGREE {name}: SmartOS says {}, skerry says {ours}",
                case["expect"]
            ));
        }
        let expected: Vec<&str> = case["expect_fields"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let (false, Err(e)) = (expected.is_empty(), &result) {
            with_fields += 1;
            let ours = e.fields();
            let missing: Vec<&&str> = expected
                .iter()
                .filter(|f| !ours.iter().any(|o| o == *f))
                .collect();
            if missing.is_empty() {
                fields_agree += 1;
            } else {
                report.push(format!(
                    "FIELDS {name}: SmartOS reports {expected:?}, skerry {ours:?}"
                ));
            }
        }
    }
    for line in &report {
        println!("{line}");
    }
    let pct = 100.0 * f64::from(agree) / cases.len() as f64;
    println!(
        "SmartOS compat: {agree}/{} agree on valid/invalid ({pct:.1}%); {fields_agree}/{with_fields} invalid cases report SmartOS's fields",
        cases.len()
    );
    assert!(
        pct >= 90.0,
        "only {pct:.1}% of SmartOS's cases agree:\n{}",
        report.join("\n")
    );
}
