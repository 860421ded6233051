//! `FIELD=VALUE` / `FIELD=~REGEX` filters and `-s` sort keys over [`Record`]s.

use crate::record::{self, Record};
use crate::suggest;
use regex::Regex;
use std::cmp::Ordering;

/// A command line the filters or sort keys cannot be made of.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Not of the form `FIELD=VALUE` or `FIELD=~REGEX`.
    #[error("bad filter '{0}': expected FIELD=VALUE or FIELD=~REGEX")]
    Syntax(String),
    /// The regular expression does not compile.
    #[error("bad filter '{filter}': {source}")]
    Regex {
        /// The filter as written.
        filter: String,
        /// Why the expression is invalid.
        #[source]
        source: regex::Error,
    },
    /// A field no instance can have.
    #[error("unknown field '{field}'{}; fields: {}", hint(.suggestion), record::all_fields().collect::<Vec<_>>().join(","))]
    UnknownField {
        /// The field as written.
        field: String,
        /// The closest known field.
        suggestion: Option<String>,
    },
    /// A field a fixed-shape table (such as a reconcile plan) does not have.
    #[error("unknown field '{field}'; fields: {allowed}")]
    UnknownColumn {
        /// The field as written.
        field: String,
        /// The fields there are, comma-separated.
        allowed: String,
    },
}

fn hint(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!(" (did you mean '{s}'?)"))
        .unwrap_or_default()
}

/// Fails with a helpful error unless `field` is one a record may carry.
pub fn check_field(field: &str) -> Result<(), FilterError> {
    if record::is_known_field(field) {
        return Ok(());
    }
    Err(FilterError::UnknownField {
        field: field.to_string(),
        suggestion: suggest::closest(field, record::all_fields()).map(str::to_string),
    })
}

/// How a filter tests a field's displayed value.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// `FIELD=VALUE`: the whole value equals.
    Equals(String),
    /// `FIELD=~REGEX`: the regex matches somewhere in the value.
    Regex(Regex),
}

/// One `FIELD=VALUE` or `FIELD=~REGEX` argument.
#[derive(Debug, Clone)]
pub struct Filter {
    /// The field tested.
    pub field: String,
    /// How it is tested.
    pub matcher: Matcher,
}

impl Filter {
    /// Parses one argument, checking the field exists.
    pub fn parse(arg: &str) -> Result<Self, FilterError> {
        let (field, value) = arg
            .split_once('=')
            .filter(|(f, _)| !f.is_empty())
            .ok_or_else(|| FilterError::Syntax(arg.to_string()))?;
        check_field(field)?;
        let matcher = match value.strip_prefix('~') {
            Some(re) => Matcher::Regex(Regex::new(re).map_err(|source| FilterError::Regex {
                filter: arg.to_string(),
                source,
            })?),
            None => Matcher::Equals(value.to_string()),
        };
        Ok(Filter {
            field: field.to_string(),
            matcher,
        })
    }

    /// True when the record passes. A record without the field never does.
    pub fn matches(&self, record: &Record) -> bool {
        let Some(value) = record.get(&self.field).filter(|v| !v.is_null()) else {
            return false;
        };
        let shown = record::display(Some(value));
        match &self.matcher {
            Matcher::Equals(expected) => shown == *expected,
            Matcher::Regex(re) => re.is_match(&shown),
        }
    }
}

/// Parses every filter argument.
pub fn parse_filters(args: &[String]) -> Result<Vec<Filter>, FilterError> {
    args.iter().map(|a| Filter::parse(a)).collect()
}

/// True when the record passes every filter.
pub fn matches_all(filters: &[Filter], record: &Record) -> bool {
    filters.iter().all(|f| f.matches(record))
}

/// One `-s` key: a field, ascending unless written `-field`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// The field sorted on.
    pub field: String,
    /// `-field` sorts descending.
    pub descending: bool,
}

impl SortKey {
    /// Parses `field`, `+field` or `-field`, checking the field exists.
    pub fn parse(arg: &str) -> Result<Self, FilterError> {
        let (field, descending) = match arg.strip_prefix('-') {
            Some(f) => (f, true),
            None => (arg.strip_prefix('+').unwrap_or(arg), false),
        };
        check_field(field)?;
        Ok(SortKey {
            field: field.to_string(),
            descending,
        })
    }
}

/// Parses sort keys; `keys` may hold comma-separated lists.
pub fn parse_sort(keys: &[String]) -> Result<Vec<SortKey>, FilterError> {
    keys.iter()
        .flat_map(|k| k.split(','))
        .filter(|k| !k.is_empty())
        .map(SortKey::parse)
        .collect()
}

/// Sorts records by the keys, in order; ties keep their original order.
pub fn sort(records: &mut [Record], keys: &[SortKey]) {
    sort_by(records, keys, |r| r)
}

/// Sorts items by the keys applied to each item's record; ties keep their order.
pub fn sort_by<T>(items: &mut [T], keys: &[SortKey], record: impl Fn(&T) -> &Record) {
    items.sort_by(|a, b| {
        let (a, b) = (record(a), record(b));
        for key in keys {
            let mut ord = record::compare(a.get(&key.field), b.get(&key.field));
            if key.descending {
                ord = ord.reverse();
            }
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(name: &str, ram: u64, state: &str) -> Record {
        record::from_json(&json!({
            "name": name, "uuid": format!("uuid-{name}"), "kind": "zone", "state": state,
            "image": "busybox", "memory": ram << 20, "autoboot": true, "pid": 0, "reason": ""
        }))
    }

    #[test]
    fn equality_and_regex_filters() {
        let web = rec("web01", 256, "running");
        assert!(Filter::parse("state=running").unwrap().matches(&web));
        assert!(!Filter::parse("state=run").unwrap().matches(&web));
        assert!(Filter::parse("alias=~^web").unwrap().matches(&web));
        assert!(Filter::parse("ram=256").unwrap().matches(&web));
        assert!(Filter::parse("ram=~^2").unwrap().matches(&web));
        assert!(
            !Filter::parse("cpu_cap=0").unwrap().matches(&web),
            "absent field"
        );
        let both = parse_filters(&["alias=~web".into(), "state=stopped".into()]).unwrap();
        assert!(!matches_all(&both, &web));
    }

    #[test]
    fn bad_filters_say_why() {
        let e = Filter::parse("state").unwrap_err().to_string();
        assert!(e.contains("expected FIELD=VALUE"), "{e}");
        let e = Filter::parse("alias=~(").unwrap_err().to_string();
        assert!(e.contains("bad filter 'alias=~('"), "{e}");
        let e = Filter::parse("stat=running").unwrap_err().to_string();
        assert!(e.contains("did you mean 'state'?"), "{e}");
        assert!(Filter::parse("=x").is_err());
    }

    #[test]
    fn sorting_by_several_keys_and_descending() {
        let mut rs = vec![
            rec("c", 512, "running"),
            rec("a", 1024, "stopped"),
            rec("b", 512, "stopped"),
        ];
        sort(&mut rs, &parse_sort(&["ram,uuid".into()]).unwrap());
        let names: Vec<_> = rs.iter().map(|r| r["alias"].clone()).collect();
        assert_eq!(names, vec![json!("b"), json!("c"), json!("a")]);
        sort(
            &mut rs,
            &parse_sort(&["-ram".into(), "alias".into()]).unwrap(),
        );
        let names: Vec<_> = rs.iter().map(|r| r["alias"].clone()).collect();
        assert_eq!(names, vec![json!("a"), json!("b"), json!("c")]);
        assert!(parse_sort(&["rma".into()]).is_err());
    }
}
