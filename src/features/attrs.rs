//! Item attributes: the JSON object a user writes (`ATTRS {...}`), checked
//! and parsed once, and the conversions between JSON, the value model of the
//! filter language (CEL) and model inputs.

use cel::Value;

use crate::error::{Error, Result};

/// Largest ATTRS document accepted, in bytes.
pub const MAX_ATTRS_LEN: usize = 64 * 1024;

/// A checked ATTRS object: its compact JSON text (what is stored and
/// returned) and the parsed object (what the columns are built from).
#[derive(Debug, Clone, PartialEq)]
pub struct Attrs {
    json: Box<str>,
    object: serde_json::Map<String, serde_json::Value>,
}

impl Attrs {
    /// Checks and parses ATTRS: a JSON object of at most [`MAX_ATTRS_LEN`] bytes.
    pub fn parse(json: &str) -> Result<Attrs> {
        if json.len() > MAX_ATTRS_LEN {
            return Err(Error::invalid(format!(
                "ATTRS larger than {MAX_ATTRS_LEN} bytes"
            )));
        }
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::invalid(format!("ATTRS is not valid JSON: {e}")))?;
        match value {
            serde_json::Value::Object(object) => Ok(Attrs {
                json: serde_json::Value::Object(object.clone())
                    .to_string()
                    .into_boxed_str(),
                object,
            }),
            _ => Err(Error::invalid(
                "ATTRS must be a JSON object, e.g. {\"genre\":\"drama\"}",
            )),
        }
    }

    /// The compact JSON text.
    pub fn json(&self) -> &str {
        &self.json
    }

    pub fn object(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.object
    }

    /// The JSON text, dropping the parsed object.
    pub fn into_json(self) -> Box<str> {
        self.json
    }
}

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

/// An attribute value as a finite number: numbers, booleans (0/1) and text
/// that parses as a number; anything else is `None`.
pub fn cel_number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::UInt(u) => Some(*u as f64),
        Value::Float(f) => Some(*f),
        Value::Bool(b) => Some(*b as u8 as f64),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|x: &f64| x.is_finite())
}

/// An attribute value as text (the key of a categorical feature): strings
/// as they are, integers (and integral floats) in decimal, booleans as
/// `true`/`false`; lists and maps are `None`.
pub fn cel_text(v: &Value) -> Option<String> {
    match v {
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => Some((*f as i64).to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::String(s) => Some(s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_checks_and_compacts() {
        let a = Attrs::parse(r#"{ "genre" : "drama", "year": 1999 }"#).unwrap();
        assert_eq!(a.json(), r#"{"genre":"drama","year":1999}"#);
        assert_eq!(a.object().len(), 2);
        assert!(Attrs::parse("[1]").is_err());
        assert!(Attrs::parse("{").is_err());
        let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(MAX_ATTRS_LEN));
        assert!(Attrs::parse(&big).is_err());
    }

    #[test]
    fn numbers_and_text() {
        assert_eq!(cel_number(&Value::Int(3)), Some(3.0));
        assert_eq!(cel_number(&Value::Bool(true)), Some(1.0));
        assert_eq!(
            cel_number(&Value::String(" 2.5 ".to_string().into())),
            Some(2.5)
        );
        assert_eq!(cel_number(&Value::String("x".to_string().into())), None);
        assert_eq!(cel_number(&Value::Float(f64::NAN)), None);
        assert_eq!(cel_text(&Value::Float(3.0)).as_deref(), Some("3"));
        assert_eq!(cel_text(&Value::Null), None);
    }
}
