//! SmartOS `vmadm` JSON payloads: validation with SmartOS's error shape, and
//! conversion of create payloads to [`InstanceSpec`]s.
//!
//! Brands `joyent`, `joyent-minimal` and `lx` become zones; `kvm` and `bhyve` become
//! HVM instances. Sizes are SmartOS's: memory in MiB, quota in GiB, disk sizes in MiB.

mod check;
mod convert;
pub mod props;
mod update;

pub use update::{apply_update, Updated};

use crate::model::InstanceSpec;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use uuid::Uuid;

/// The brands skerry accepts.
pub const BRANDS: &[&str] = &["joyent", "joyent-minimal", "lx", "kvm", "bhyve"];

/// An invalid payload, in SmartOS's shape:
/// `{"bad_brand": ..., "bad_properties": [...], "bad_values": [...], "missing_properties": [...]}`.
/// `notes` say in words what is wrong with each entry (not part of the JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmartosErrors {
    /// The brand, when it is not one skerry knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bad_brand: Option<String>,
    /// Properties that do not exist (for this brand and action).
    pub bad_properties: Vec<String>,
    /// Properties whose value is wrong.
    pub bad_values: Vec<String>,
    /// Required properties that are absent.
    pub missing_properties: Vec<String>,
    /// One sentence per problem, for a person.
    #[serde(skip)]
    pub notes: Vec<String>,
}

impl SmartosErrors {
    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.bad_brand.is_none()
            && self.bad_properties.is_empty()
            && self.bad_values.is_empty()
            && self.missing_properties.is_empty()
            && self.notes.is_empty()
    }

    /// SmartOS's JSON error object, pretty-printed.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }

    /// Every entry as `list:property` (`bad_values:autoboot`), the form SmartOS's
    /// tests use.
    pub fn fields(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .bad_brand
            .iter()
            .map(|b| format!("bad_brand:{b}"))
            .collect();
        for (list, names) in [
            ("bad_properties", &self.bad_properties),
            ("bad_values", &self.bad_values),
            ("missing_properties", &self.missing_properties),
        ] {
            out.extend(names.iter().map(|n| format!("{list}:{n}")));
        }
        out
    }

    pub(crate) fn bad_property(&mut self, name: &str, note: String) {
        push_unique(&mut self.bad_properties, name);
        self.notes.push(note);
    }

    pub(crate) fn bad_value(&mut self, name: &str, note: String) {
        push_unique(&mut self.bad_values, name);
        self.notes.push(note);
    }

    pub(crate) fn missing(&mut self, name: &str, note: String) {
        push_unique(&mut self.missing_properties, name);
        self.notes.push(note);
    }

    fn note(note: impl Into<String>) -> Self {
        SmartosErrors {
            notes: vec![note.into()],
            ..Default::default()
        }
    }

    fn into_result(self) -> Result<(), SmartosErrors> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

fn push_unique(list: &mut Vec<String>, name: &str) {
    if !list.iter().any(|n| n == name) {
        list.push(name.to_owned());
    }
}

impl fmt::Display for SmartosErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.notes.is_empty() {
            f.write_str(&self.fields().join(", "))
        } else {
            f.write_str(&self.notes.join("; "))
        }
    }
}

impl std::error::Error for SmartosErrors {}

/// The two `vmadm validate` actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `vmadm validate create`.
    Create,
    /// `vmadm validate update BRAND`.
    Update,
}

/// A `vmadm validate` action other than create or update.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action `{0}`: use create or update")]
pub struct UnknownAction(pub String);

impl std::str::FromStr for Action {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, UnknownAction> {
        match s {
            "create" => Ok(Action::Create),
            "update" => Ok(Action::Update),
            other => Err(UnknownAction(other.to_string())),
        }
    }
}

/// What a brand becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// joyent, joyent-minimal, lx.
    Zone,
    /// kvm, bhyve.
    Hvm,
}

/// The family of a SmartOS brand, if skerry knows the brand.
pub fn family(brand: &str) -> Option<Family> {
    match brand {
        "joyent" | "joyent-minimal" | "lx" => Some(Family::Zone),
        "kvm" | "bhyve" => Some(Family::Hvm),
        _ => None,
    }
}

/// Tells whether an image is installed, so payloads naming a missing image are
/// refused (`bad_values: image_uuid`). Without one, image UUIDs are only checked
/// for form.
pub trait ImageLookup {
    /// Whether the image `uuid` is installed.
    fn has_image(&self, uuid: &Uuid) -> bool;
}

impl<F: Fn(&Uuid) -> bool> ImageLookup for F {
    fn has_image(&self, uuid: &Uuid) -> bool {
        self(uuid)
    }
}

/// Options of validation beyond the payload itself.
#[derive(Default, Clone, Copy)]
pub struct Options<'a> {
    /// The installed images, when known.
    pub images: Option<&'a dyn ImageLookup>,
}

/// Converts a SmartOS create payload to the instance it asks for (one, in a `Vec`
/// for symmetry with manifests). Invalid payloads get SmartOS's error shape.
pub fn from_payload(json_text: &str) -> Result<Vec<InstanceSpec>, SmartosErrors> {
    from_payload_with(json_text, Options::default())
}

/// [`from_payload`] with image lookup.
pub fn from_payload_with(
    json_text: &str,
    opts: Options<'_>,
) -> Result<Vec<InstanceSpec>, SmartosErrors> {
    let payload = parse_object(json_text)?;
    let brand = create_brand(&payload)?;
    let fam = family(&brand).expect("create_brand returns known brands");
    let mut errs = SmartosErrors::default();
    check::check_payload(
        &payload,
        &brand,
        fam,
        Action::Create,
        opts.images,
        &mut errs,
    );
    check_top_image(&payload, fam, opts, &mut errs);
    if !errs.is_empty() {
        return Err(errs);
    }
    let spec = convert::to_spec(&payload, fam)?;
    let mut errs = SmartosErrors::default();
    check_as_manifest(&spec, &mut errs);
    errs.into_result().map(|()| vec![spec])
}

/// Whatever a payload creates or updates is stored as a manifest, so it must pass
/// the manifest rules too: a net for any rule the payload checks do not mirror.
fn check_as_manifest(spec: &InstanceSpec, errs: &mut SmartosErrors) {
    if let Err(e) = crate::manifest::parse_str("payload", &crate::manifest::to_kdl(spec)) {
        for p in &e.problems {
            errs.bad_value("payload", p.message.clone());
        }
    }
}

/// Validates an update payload for an instance of `brand`.
pub fn validate_update(brand: &str, json_text: &str) -> Result<(), SmartosErrors> {
    validate_update_with(brand, json_text, Options::default())
}

/// [`validate_update`] with image lookup.
pub fn validate_update_with(
    brand: &str,
    json_text: &str,
    opts: Options<'_>,
) -> Result<(), SmartosErrors> {
    let Some(fam) = family(brand) else {
        return Err(SmartosErrors {
            bad_brand: Some(brand.to_owned()),
            notes: vec![format!(
                "unknown brand `{brand}`: use one of {}",
                BRANDS.join(", ")
            )],
            ..Default::default()
        });
    };
    let payload = parse_object(json_text)?;
    let mut errs = SmartosErrors::default();
    check::check_payload(&payload, brand, fam, Action::Update, opts.images, &mut errs);
    errs.into_result()
}

/// `vmadm validate ACTION [BRAND]`: create payloads name their brand themselves;
/// update payloads are checked against `brand`.
pub fn validate(
    action: Action,
    brand: Option<&str>,
    json_text: &str,
    opts: Options<'_>,
) -> Result<(), SmartosErrors> {
    match action {
        Action::Create => from_payload_with(json_text, opts).map(|_| ()),
        Action::Update => validate_update_with(brand.unwrap_or(""), json_text, opts),
    }
}

fn parse_object(json_text: &str) -> Result<Map<String, Value>, SmartosErrors> {
    match serde_json::from_str::<Value>(json_text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(SmartosErrors::note(format!(
            "a payload is a JSON object, not {}",
            match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        ))),
        Err(e) => Err(SmartosErrors::note(format!(
            "invalid JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        ))),
    }
}

/// The payload's brand, which a create payload must name.
fn create_brand(payload: &Map<String, Value>) -> Result<String, SmartosErrors> {
    match payload.get("brand") {
        None => {
            let mut errs = SmartosErrors::default();
            errs.missing(
                "brand",
                format!(
                    "a create payload names its brand: one of {}",
                    BRANDS.join(", ")
                ),
            );
            // Report the rest too, as far as it can be judged without a brand.
            for name in payload.keys().filter(|k| props::find(k).is_none()) {
                errs.bad_property(name, format!("`{name}` is not a property skerry knows"));
            }
            Err(errs)
        }
        Some(Value::String(b)) if family(b).is_some() => Ok(b.clone()),
        Some(other) => Err(SmartosErrors {
            bad_brand: Some(
                other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_owned),
            ),
            notes: vec![format!(
                "unknown brand {other}: use one of {}",
                BRANDS.join(", ")
            )],
            ..Default::default()
        }),
    }
}

/// A zone's top-level `image_uuid`: required, and installed when images are known.
fn check_top_image(
    payload: &Map<String, Value>,
    fam: Family,
    opts: Options<'_>,
    errs: &mut SmartosErrors,
) {
    match payload.get("image_uuid").and_then(Value::as_str) {
        None if fam == Family::Zone && !payload.contains_key("image_uuid") => errs.missing(
            "image_uuid",
            "a zone needs an image_uuid (see imgadm avail)".into(),
        ),
        Some(u) => {
            if let (Some(images), Ok(u)) = (opts.images, Uuid::parse_str(u)) {
                if !images.has_image(&u) {
                    errs.bad_value(
                        "image_uuid",
                        format!("image {u} is not installed (imgadm import {u})"),
                    );
                }
            }
        }
        None => {}
    }
}
