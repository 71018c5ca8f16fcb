//! Attribute values: JSON as written by users, converted to the value model
//! of the filter language (CEL).

use cel::Value;

/// Converts JSON into the CEL value model (integers stay integers).
pub fn json_to_cel(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::String(s.clone().into()),
        serde_json::Value::Array(a) => {
            Value::List(a.iter().map(json_to_cel).collect::<Vec<_>>().into())
        }
        serde_json::Value::Object(o) => {
            let map: std::collections::HashMap<String, Value> =
                o.iter().map(|(k, v)| (k.clone(), json_to_cel(v))).collect();
            map.into()
        }
    }
}
