//! Parsed item attributes: a small sorted map from name to a CEL value,
//! built once when an item is written.

use cel::Value;

/// Attributes of one item, sorted by name for binary search.
#[derive(Clone, Debug, Default)]
pub struct Attrs(Vec<(Box<str>, Value)>);

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

impl Attrs {
    /// Attributes of a JSON object (anything else gives no attributes).
    pub fn from_json(json: &serde_json::Value) -> Attrs {
        let mut fields: Vec<(Box<str>, Value)> = match json.as_object() {
            Some(o) => o
                .iter()
                .map(|(k, v)| (k.as_str().into(), json_to_cel(v)))
                .collect(),
            None => Vec::new(),
        };
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        Attrs(fields)
    }

    /// Parses compact JSON text (as stored by the catalog).
    pub fn from_text(text: &str) -> Attrs {
        serde_json::from_str::<serde_json::Value>(text)
            .map(|v| Attrs::from_json(&v))
            .unwrap_or_default()
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(name))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// The attribute as a grouping key (strings, numbers, booleans).
    pub fn group_key(&self, name: &str) -> Option<String> {
        Some(match self.get(name)? {
            Value::String(s) => s.to_string(),
            Value::Int(i) => i.to_string(),
            Value::UInt(u) => u.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return None,
        })
    }
}
