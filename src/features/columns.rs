//! Item attributes as dictionary-encoded columns: one column per attribute
//! name, holding a small value id per slot (0 = the item lacks it) and the
//! distinct values once.
//!
//! Filters read `ids[slot]` (4 bytes, contiguous) instead of chasing pointers
//! through per-item maps, and the value ids double as memo keys: a WHERE
//! expression runs once per distinct combination of the values it reads.

use std::collections::HashMap;

use cel::Value;

use super::attrs::json_to_cel;

/// A number as the `f64` that holds it exactly: floats (not NaN), and
/// integers within ±2^53; `None` for anything else. Two such numbers
/// compare as CEL compares the values (integers of either sign and
/// floats alike).
pub fn exact_number(v: &Value) -> Option<f64> {
    const EXACT: u64 = 1 << 53;
    match *v {
        Value::Float(x) if !x.is_nan() => Some(x),
        Value::Int(i) if i.unsigned_abs() <= EXACT => Some(i as f64),
        Value::UInt(u) if u <= EXACT => Some(u as f64),
        _ => None,
    }
}

/// One attribute across all slots.
#[derive(Default, Debug)]
pub struct Column {
    /// Value id per slot; 0 means "no value".
    ids: Vec<u32>,
    /// Distinct values; id `i` is `dict[i - 1]`.
    dict: Vec<Value>,
    /// Each distinct value as an `f64` when it is a number that `f64`
    /// holds exactly ([`exact_number`]), NaN otherwise: typed filters
    /// compare prices and counts with one load ([`Column::number`]).
    numbers: Vec<f64>,
    /// Canonical JSON text of each value -> id, for interning.
    lookup: HashMap<String, u32>,
    /// Distinct values that are not numbers/booleans, and not strings:
    /// kept as values are interned so readers need not scan the dictionary.
    non_numeric: usize,
    non_text: usize,
}

impl Column {
    #[inline]
    pub fn id(&self, slot: u32) -> u32 {
        self.ids.get(slot as usize).copied().unwrap_or(0)
    }

    /// Every distinct value is a number or a boolean.
    pub fn is_numeric(&self) -> bool {
        self.non_numeric == 0
    }

    /// Every distinct value is a string.
    pub fn is_text(&self) -> bool {
        self.non_text == 0
    }

    /// Distinct values (ids run from 1 to this).
    pub fn values(&self) -> usize {
        self.dict.len()
    }

    pub fn value(&self, id: u32) -> Option<&Value> {
        id.checked_sub(1).and_then(|i| self.dict.get(i as usize))
    }

    /// The value of `id` as an exact `f64` ([`exact_number`]); NaN for
    /// any other value, and for id 0 (no value).
    #[inline]
    pub fn number(&self, id: u32) -> f64 {
        id.checked_sub(1)
            .and_then(|i| self.numbers.get(i as usize))
            .copied()
            .unwrap_or(f64::NAN)
    }

    fn set(&mut self, slot: u32, id: u32) {
        let slot = slot as usize;
        if slot >= self.ids.len() {
            if id == 0 {
                return;
            }
            crate::growth::resize_by_eighths(&mut self.ids, slot + 1, 0);
        }
        self.ids[slot] = id;
    }

    fn intern(&mut self, v: &serde_json::Value) -> u32 {
        let key = v.to_string();
        if let Some(&id) = self.lookup.get(&key) {
            return id;
        }
        self.non_numeric += !(v.is_number() || v.is_boolean()) as usize;
        self.non_text += !v.is_string() as usize;
        let value = json_to_cel(v);
        self.numbers.push(exact_number(&value).unwrap_or(f64::NAN));
        self.dict.push(value);
        let id = self.dict.len() as u32;
        self.lookup.insert(key, id);
        id
    }

    fn heap_bytes(&self) -> usize {
        self.ids.capacity() * 4
            + self.dict.capacity() * std::mem::size_of::<Value>()
            + self.numbers.capacity() * 8
            + self.lookup.keys().map(|k| k.len() * 2 + 48).sum::<usize>()
    }
}

/// All attribute columns of a catalog.
#[derive(Default, Debug)]
pub struct Columns {
    by_name: HashMap<Box<str>, usize>,
    columns: Vec<Column>,
}

impl Columns {
    /// Sets the attributes of `slot` from a JSON object (replacing what the
    /// slot had); `None` clears them.
    pub fn set(&mut self, slot: u32, attrs: Option<&serde_json::Map<String, serde_json::Value>>) {
        self.clear(slot);
        let Some(attrs) = attrs else { return };
        for (name, value) in attrs {
            let col = match self.by_name.get(name.as_str()) {
                Some(&c) => c,
                None => {
                    self.columns.push(Column::default());
                    self.by_name
                        .insert(name.as_str().into(), self.columns.len() - 1);
                    self.columns.len() - 1
                }
            };
            let column = &mut self.columns[col];
            let id = column.intern(value);
            column.set(slot, id);
        }
    }

    /// Removes every attribute of `slot`.
    pub fn clear(&mut self, slot: u32) {
        for c in &mut self.columns {
            c.set(slot, 0);
        }
    }

    /// All columns with their attribute names.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Column)> {
        self.by_name
            .iter()
            .map(|(n, &i)| (n.as_ref(), &self.columns[i]))
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.by_name.get(name).map(|&i| &self.columns[i])
    }

    /// The value of attribute `name` for `slot`.
    pub fn get(&self, name: &str, slot: u32) -> Option<&Value> {
        let c = self.column(name)?;
        c.value(c.id(slot))
    }

    pub fn heap_bytes(&self) -> usize {
        self.columns.iter().map(Column::heap_bytes).sum::<usize>()
            + self.by_name.keys().map(|k| k.len() + 32).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn values_are_interned_and_slots_cleared() {
        let mut c = Columns::default();
        c.set(0, Some(&obj(r#"{"genre":"a","year":1999}"#)));
        c.set(5, Some(&obj(r#"{"genre":"a"}"#)));
        c.set(3, Some(&obj(r#"{"genre":"b","tags":["x"]}"#)));
        let g = c.column("genre").unwrap();
        assert_eq!(g.id(0), g.id(5));
        assert_ne!(g.id(0), g.id(3));
        assert_eq!(c.get("year", 5), None);
        assert_eq!(c.get("year", 0), Some(&Value::Int(1999)));
        assert!(c.column("genre").unwrap().is_text() && !c.column("genre").unwrap().is_numeric());
        assert!(c.column("year").unwrap().is_numeric());
        assert!(!c.column("tags").unwrap().is_text() && !c.column("tags").unwrap().is_numeric());
        c.set(0, None);
        assert_eq!(c.get("genre", 0), None);
        assert_eq!(c.column("genre").unwrap().id(100), 0);
    }
}
