//! What `create` and `update` send: payload format detection and `k=v` properties.

use serde_json::{Map, Value};

/// A `create`/`update` input that cannot be turned into a request.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// A property argument without `=`.
    #[error("bad property '{0}': expected KEY=VALUE")]
    Property(String),
    /// The update file or stdin is not a JSON object.
    #[error("{source_name}: not a JSON object of properties: {detail}")]
    NotAnObject {
        /// File name or `<stdin>`.
        source_name: String,
        /// What is wrong.
        detail: String,
    },
}

/// Turns `k=v` arguments into the JSON object Update takes, SmartOS style: integers and
/// `true`/`false` are typed, a value that is a JSON array or object is taken as such, and
/// anything else is a string. `k=` sets an empty string.
pub fn properties(args: &[String]) -> Result<Value, PayloadError> {
    let mut object = Map::new();
    for arg in args {
        let (key, raw) = arg
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| PayloadError::Property(arg.clone()))?;
        object.insert(key.to_string(), typed_value(raw));
    }
    Ok(Value::Object(object))
}

fn typed_value(raw: &str) -> Value {
    if let Ok(n) = raw.parse::<i64>() {
        return Value::from(n);
    }
    match raw {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if raw.starts_with('[') || raw.starts_with('{') {
        if let Ok(v) = serde_json::from_str::<Value>(raw) {
            return v;
        }
    }
    Value::String(raw.to_string())
}

/// Checks an update payload read from a file or stdin is a JSON object; returns it
/// re-serialised compactly.
pub fn update_object(source_name: &str, text: &str) -> Result<String, PayloadError> {
    let not_object = |detail: String| PayloadError::NotAnObject {
        source_name: source_name.to_string(),
        detail,
    };
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v.to_string()),
        Ok(other) => Err(not_object(format!("got {}", kind_of(&other)))),
        Err(e) => Err(not_object(e.to_string())),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn properties_are_typed_like_smartos() {
        let args: Vec<String> = [
            "ram=512",
            "autoboot=false",
            "alias=web02",
            "hostname=",
            "resolvers=[\"1.1.1.1\"]",
            "memory=1G",
            "note=a=b",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            properties(&args).unwrap(),
            json!({"ram": 512, "autoboot": false, "alias": "web02", "hostname": "",
                   "resolvers": ["1.1.1.1"], "memory": "1G", "note": "a=b"})
        );
        let meta: Vec<String> = [
            r#"set_customer_metadata={"user-script":"x","k":"v"}"#,
            r#"remove_customer_metadata=["k"]"#,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            properties(&meta).unwrap(),
            json!({"set_customer_metadata": {"user-script": "x", "k": "v"},
                   "remove_customer_metadata": ["k"]})
        );
        let e = properties(&["ram".to_string()]).unwrap_err().to_string();
        assert_eq!(e, "bad property 'ram': expected KEY=VALUE");
    }

    #[test]
    fn update_files_must_hold_an_object() {
        assert_eq!(update_object("f", "{ \"ram\": 1 }").unwrap(), "{\"ram\":1}");
        let e = update_object("f.json", "[1]").unwrap_err().to_string();
        assert_eq!(e, "f.json: not a JSON object of properties: got an array");
        assert!(update_object("<stdin>", "{").is_err());
    }
}
