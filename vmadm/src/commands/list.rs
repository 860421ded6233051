//! `list`, `lookup` and `reconcile`: instances and plans as tables or JSON.

use super::{print, print_json, Init, Result, VmadmError};
use crate::cli::TableArgs;
use crate::client::{ClientError, Node};
use crate::filter::{self, Filter, SortKey};
use crate::record::{self, Record};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::Value;
use spec::api::Action;
use spec::table::{Table, TableStyle};

/// One instance: its JSON as init sent it, and the flat record filters look at.
struct Instance {
    json: Value,
    record: Record,
}

/// Gets in flight at once when details are needed: pipelined on one connection, so a
/// node with many instances costs about one round trip per batch, not per instance.
const GETS_IN_FLIGHT: usize = 32;

/// Fetches every instance; with `detail`, each one's full `Get` (spec fields), which
/// costs one call per instance, so only when a field needs it.
async fn fetch(node: &Node, detail: bool) -> Result<Vec<Instance>> {
    let summaries = node.list().await?;
    let jsons: Vec<Option<Value>> = if detail {
        futures_util::stream::iter(summaries.iter())
            .map(|s| async move {
                match node.get(&s.uuid).await {
                    Ok(detail) => serde_json::to_value(detail)
                        .map(Some)
                        .map_err(|e| ClientError::Protocol(e.to_string())),
                    // Deleted between List and Get: it is simply no longer there.
                    Err(ClientError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffered(GETS_IN_FLIGHT)
            .try_collect()
            .await?
    } else {
        summaries
            .iter()
            .map(|s| serde_json::to_value(s).map(Some))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| ClientError::Protocol(e.to_string()))?
    };
    Ok(jsons
        .into_iter()
        .flatten()
        .map(|json| Instance {
            record: record::from_json(&json),
            json,
        })
        .collect())
}

/// True when one of these fields is not in a `List` row.
fn needs_detail<'a>(mut fields: impl Iterator<Item = &'a str>) -> bool {
    fields.any(|f| !record::is_summary_field(f))
}

fn style(table: &TableArgs) -> TableStyle {
    TableStyle {
        no_header: table.no_header,
        parsable: table.parsable,
    }
}

/// The fields to show: `-o`, else the defaults.
fn columns(table: &TableArgs, defaults: &[&str]) -> Vec<String> {
    if table.fields.is_empty() {
        defaults.iter().map(|s| s.to_string()).collect()
    } else {
        table.fields.clone()
    }
}

/// `vmadm list`.
pub(super) async fn list(
    init: &Init,
    table: &TableArgs,
    sort: &[String],
    filters: &[String],
) -> Result<()> {
    let fields = columns(table, record::DEFAULT_COLUMNS);
    for f in &fields {
        filter::check_field(f)?;
    }
    let keys = if sort.is_empty() {
        filter::parse_sort(&[record::DEFAULT_SORT.join(",")])?
    } else {
        filter::parse_sort(sort)?
    };
    let filters = filter::parse_filters(filters)?;
    let detail = needs_detail(
        fields
            .iter()
            .map(String::as_str)
            .chain(keys.iter().map(|k| k.field.as_str()))
            .chain(filters.iter().map(|f| f.field.as_str())),
    );
    let instances = select(fetch(init.node().await?, detail).await?, &filters, &keys);
    if table.json {
        let rows: Vec<Value> = instances
            .iter()
            .map(|i| {
                if table.fields.is_empty() {
                    i.json.clone()
                } else {
                    record::select(&i.record, &fields)
                }
            })
            .collect();
        return print_json(&Value::Array(rows));
    }
    print(&render(&instances, &fields, style(table)))
}

/// Filters, then sorts.
fn select(instances: Vec<Instance>, filters: &[Filter], keys: &[SortKey]) -> Vec<Instance> {
    let mut kept: Vec<Instance> = instances
        .into_iter()
        .filter(|i| filter::matches_all(filters, &i.record))
        .collect();
    filter::sort_by(&mut kept, keys, |i| &i.record);
    kept
}

fn render(instances: &[Instance], fields: &[String], style: TableStyle) -> String {
    let mut table = Table::new(fields.iter().cloned());
    for i in instances {
        table.push(fields.iter().map(|f| record::display(i.record.get(f))));
    }
    table.render(style)
}

/// `vmadm lookup`.
pub(super) async fn lookup(
    init: &Init,
    json: bool,
    one: bool,
    fields: &[String],
    filters: &[String],
) -> Result<()> {
    for f in fields {
        filter::check_field(f)?;
    }
    let filters = filter::parse_filters(filters)?;
    // `-j` prints whole instances (SmartOS prints full VM objects), so it needs details.
    let detail = (json && fields.is_empty())
        || needs_detail(
            fields
                .iter()
                .map(String::as_str)
                .chain(filters.iter().map(|f| f.field.as_str())),
        );
    let keys = filter::parse_sort(&["uuid".to_string()])?;
    let found = select(fetch(init.node().await?, detail).await?, &filters, &keys);
    if one && found.len() != 1 {
        return Err(VmadmError::NotExactlyOne(found.len()));
    }
    if json {
        let rows: Vec<Value> = found
            .iter()
            .map(|i| {
                if fields.is_empty() {
                    i.json.clone()
                } else {
                    record::select(&i.record, fields)
                }
            })
            .collect();
        // SmartOS: `lookup -j -1` prints the one object, not an array of one.
        return match (one, rows.as_slice()) {
            (true, [only]) => print_json(only),
            _ => print_json(&Value::Array(rows)),
        };
    }
    let mut out = String::new();
    for i in &found {
        out.push_str(&record::display(i.record.get("uuid")));
        out.push('\n');
    }
    print(&out)
}

/// A plan step the operator must act on. init reports a manifest it could not use as
/// an `error` step, a clash it will not resolve alone as `refuse`, and a step that
/// failed with `; FAILED: ...` after its reason (init/API-CHANGES.md).
fn is_problem(step: &spec::api::PlanStep) -> bool {
    matches!(step.action, Action::Error | Action::Refuse) || step.reason.contains("; FAILED: ")
}

/// The columns of a reconcile plan.
const PLAN_FIELDS: &[&str] = &["name", "action", "reason"];

/// `vmadm reconcile`.
pub(super) async fn reconcile(init: &Init, table: &TableArgs) -> Result<()> {
    let fields = columns(table, PLAN_FIELDS);
    if let Some(bad) = fields.iter().find(|f| !PLAN_FIELDS.contains(&f.as_str())) {
        return Err(filter::FilterError::UnknownColumn {
            field: bad.clone(),
            allowed: PLAN_FIELDS.join(","),
        }
        .into());
    }
    let plan = init.node().await?.reconcile().await?;
    let problems = plan.iter().filter(|s| is_problem(s)).count();
    if table.json {
        let steps =
            serde_json::to_value(&plan).map_err(|e| ClientError::Protocol(e.to_string()))?;
        print_json(&steps)?;
    } else if plan.is_empty() {
        eprintln!("Nothing to do: every instance matches the manifests");
    } else {
        let mut out = Table::new(fields.iter().cloned());
        for step in &plan {
            out.push(fields.iter().map(|f| match f.as_str() {
                "name" => step.name.clone(),
                "action" => step.action.to_string(),
                _ => step.reason.clone(),
            }));
        }
        print(&out.render(style(table)))?;
    }
    match problems {
        0 => Ok(()),
        n => Err(VmadmError::ReconcileProblems(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inst(name: &str, uuid: &str, mib: u64, state: &str) -> Instance {
        let json = json!({
            "name": name, "uuid": uuid, "kind": "zone", "state": state,
            "image": "busybox", "memory": mib << 20, "autoboot": true, "pid": 0, "reason": ""
        });
        Instance {
            record: record::from_json(&json),
            json,
        }
    }

    fn sample() -> Vec<Instance> {
        vec![
            inst("web02", "c", 512, "running"),
            inst("web01", "b", 512, "stopped"),
            inst("db01", "a", 1024, "running"),
        ]
    }

    #[test]
    fn default_list_is_sorted_by_ram_then_uuid() {
        let keys = filter::parse_sort(&["ram,uuid".into()]).unwrap();
        let shown = select(sample(), &[], &keys);
        let fields: Vec<String> = record::DEFAULT_COLUMNS
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            render(&shown, &fields, TableStyle::default()),
            "UUID  TYPE  RAM   STATE    ALIAS\n\
             b     zone  512   stopped  web01\n\
             c     zone  512   running  web02\n\
             a     zone  1024  running  db01\n"
        );
    }

    #[test]
    fn filters_then_parsable_output() {
        let keys = filter::parse_sort(&["-alias".into()]).unwrap();
        let filters = filter::parse_filters(&["alias=~^web".into()]).unwrap();
        let shown = select(sample(), &filters, &keys);
        let style = TableStyle {
            no_header: false,
            parsable: true,
        };
        let fields = vec!["alias".to_string(), "state".to_string()];
        assert_eq!(
            render(&shown, &fields, style),
            "web02:running\nweb01:stopped\n"
        );
        assert_eq!(
            shown[0].json["name"],
            json!("web02"),
            "JSON follows its record"
        );
    }

    #[test]
    fn plan_problems() {
        let step = |action: &str, reason: &str| spec::api::PlanStep {
            name: "web01".into(),
            action: action.parse().unwrap(),
            reason: reason.into(),
        };
        assert!(!is_problem(&step("create", "declared in a.kdl:1:1")));
        assert!(is_problem(&step(
            "error",
            "a.kdl:1:7: memory: expected a size"
        )));
        assert!(is_problem(&step("refuse", "uuid clash")));
        assert!(is_problem(&step(
            "start",
            "autoboot; FAILED: image missing"
        )));
    }

    #[test]
    fn detail_is_fetched_only_for_spec_fields() {
        assert!(!needs_detail(["uuid", "ram", "alias"].into_iter()));
        assert!(needs_detail(["uuid", "cpu_cap"].into_iter()));
        assert!(needs_detail(["nics.0.ip"].into_iter()));
    }
}
