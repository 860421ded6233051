//! Reading KDL values: one positional argument, strings, booleans, whole numbers in a
//! range, sizes, addresses, each with a problem recorded at its span when it is not
//! what the property takes.

use crate::error::Collector;
use crate::format::parse_size;
use kdl::{KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;
use std::net::IpAddr;

/// Span of the first argument, or of the node name when there is none.
pub(super) fn arg_span(node: &KdlNode) -> SourceSpan {
    node.entries()
        .iter()
        .find(|e| e.name().is_none())
        .map_or_else(|| node.name().span(), KdlEntry::span)
}

/// The single positional value of a property node; anything else is a problem.
pub(super) fn single_arg<'n>(c: &mut Collector, node: &'n KdlNode) -> Option<&'n KdlEntry> {
    let pname = node.name().value();
    let mut arg = None;
    let mut ok = true;
    for e in node.entries() {
        if let Some(key) = e.name() {
            c.push(
                e.span(),
                format!("`{pname}` takes no `{}=` property", key.value()),
            );
            ok = false;
        } else if arg.is_none() {
            arg = Some(e);
        } else {
            c.push(
                e.span(),
                format!("`{pname}` takes one value; this one is extra"),
            );
            ok = false;
        }
    }
    if arg.is_none() {
        c.push(node.name().span(), format!("`{pname}` needs a value"));
    }
    arg.filter(|_| ok)
}

pub(super) fn string_arg(c: &mut Collector, node: &KdlNode) -> Option<String> {
    let e = single_arg(c, node)?;
    match e.value() {
        KdlValue::String(s) => Some(s.clone()),
        other => {
            c.push(
                e.span(),
                format!(
                    "`{}` takes a string, not {}",
                    node.name().value(),
                    describe(other)
                ),
            )
            .help = Some(format!("quote it: \"{}\"", plain(other)));
            None
        }
    }
}

pub(super) fn bool_arg(c: &mut Collector, node: &KdlNode) -> Option<bool> {
    let e = single_arg(c, node)?;
    bool_value(c, node.name().value(), e)
}

pub(super) fn bool_value(c: &mut Collector, what: &str, e: &KdlEntry) -> Option<bool> {
    match e.value() {
        KdlValue::Bool(b) => Some(*b),
        other => {
            let p = c.push(
                e.span(),
                format!("`{what}` takes #true or #false, not {}", describe(other)),
            );
            if let KdlValue::String(s) = other {
                if s == "true" || s == "false" {
                    p.help = Some(format!("a boolean is written #{s}, without quotes"));
                }
            }
            None
        }
    }
}

pub(super) fn int_arg(c: &mut Collector, node: &KdlNode, min: i128, max: i128) -> Option<i128> {
    let e = single_arg(c, node)?;
    int_value(c, node.name().value(), e, min, max)
}

pub(super) fn int_value(
    c: &mut Collector,
    what: &str,
    e: &KdlEntry,
    min: i128,
    max: i128,
) -> Option<i128> {
    match e.value() {
        KdlValue::Integer(n) if (min..=max).contains(n) => Some(*n),
        KdlValue::Integer(n) => {
            let range = if max >= i128::from(u32::MAX) {
                format!("at least {min}")
            } else {
                format!("{min} to {max}")
            };
            c.push(e.span(), format!("`{what}` is {n}; it must be {range}"));
            None
        }
        other => {
            c.push(
                e.span(),
                format!("`{what}` takes a whole number, not {}", describe(other)),
            );
            None
        }
    }
}

pub(super) fn size_arg(c: &mut Collector, node: &KdlNode, min: Option<u64>) -> Option<u64> {
    let e = single_arg(c, node)?;
    size_value(c, node.name().value(), e, min)
}

pub(super) fn size_value(
    c: &mut Collector,
    what: &str,
    e: &KdlEntry,
    min: Option<u64>,
) -> Option<u64> {
    let KdlValue::String(s) = e.value() else {
        c.push(
            e.span(),
            format!("`{what}` takes a size string, not {}", describe(e.value())),
        )
        .help = Some("write it with a unit, like \"256M\" or \"2G\"".into());
        return None;
    };
    match parse_size(s) {
        Ok(n) if min.is_some_and(|m| n < m) => {
            let m = crate::format::format_size(min.unwrap_or(0));
            c.push(e.span(), format!("`{what}` is {s}; the minimum is {m}"));
            None
        }
        Ok(n) => Some(n),
        Err(why) => {
            c.push(e.span(), why.to_string());
            None
        }
    }
}

pub(super) fn ip_value(c: &mut Collector, span: SourceSpan, s: &str) -> Option<IpAddr> {
    match s.parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            c.push(span, format!("`{s}` is not an IP address"));
            None
        }
    }
}

/// "a number", "a string" ... for messages about a value of the wrong type.
pub(super) fn describe(v: &KdlValue) -> &'static str {
    match v {
        KdlValue::String(_) => "a string",
        KdlValue::Integer(_) => "a whole number",
        KdlValue::Float(_) => "a decimal number",
        KdlValue::Bool(_) => "a boolean",
        KdlValue::Null => "#null",
    }
}

/// A value's text without KDL syntax, for "quote it" hints.
pub(super) fn plain(v: &KdlValue) -> String {
    match v {
        KdlValue::String(s) => s.clone(),
        KdlValue::Integer(n) => n.to_string(),
        KdlValue::Float(x) => x.to_string(),
        KdlValue::Bool(b) => b.to_string(),
        KdlValue::Null => String::new(),
    }
}
