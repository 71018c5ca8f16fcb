//! A model's feature schema: which user hash fields, item attributes and the
//! retrieval score feed which model input, how categorical values become
//! embedding ids, and the defaults for missing values. It also assembles the
//! one batched input of a request (user features broadcast to every
//! candidate, Merlin's UnrollFeatures).
//!
//! Syntax (the tokens after `SCHEMA`):
//!
//! ```text
//! DENSE  <source> [DEFAULT <number>]
//! SPARSE <source> <cardinality> [VOCAB v1,v2,...] [HASH] [DEFAULT <id>] [ROWS <prefix>]
//! source := user.<hash field> | item.<attribute> | score
//!         | popularity | session | activity
//! ```
//!
//! `score`, `popularity`, `session` and `activity` are numbers the request
//! computes ([`CandidateSignals`]), DENSE only: the retrieval score;
//! `ln(1 + the item's time-decayed popularity now)`; the cosine between the
//! item's vector and the mean of the user's [`SESSION_SIGNAL_ITEMS`] most
//! recent items (0 without any); `ln(1 + the number of the user's recent
//! items)`.
//!
//! Dense features fill the `dense` input (float32 `[n, #DENSE]`) and sparse
//! features the `sparse` input (int64 `[n, #SPARSE]`), in the order given.
//! A sparse value maps to an id by VOCAB (position in the list), HASH
//! (FNV-1a of the text modulo the cardinality) or, without either, as an
//! integer in `[0, cardinality)`. Anything missing, unparsable, unknown or out
//! of range takes the feature's DEFAULT (0 unless given).
//!
//! `ROWS <prefix>` keeps the feature's embedding table out of the model:
//! row `id` is the Redis key `<prefix><id>` ([`super::rows`]; DLRM models
//! with ROLE RANK only).

use std::collections::HashMap;

use crate::features::attrs::{cel_number, cel_text};
use crate::features::columns::{Column, Columns};

/// Largest cardinality a sparse feature may declare.
pub const MAX_CARDINALITY: u64 = 1 << 32;
/// Most features a schema may declare.
pub const MAX_FEATURES: usize = 1024;

/// The words of the syntax (a ROWS prefix may not be one).
const KEYWORDS: [&str; 6] = ["DENSE", "SPARSE", "VOCAB", "HASH", "DEFAULT", "ROWS"];

/// Where a feature's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A field of the user's hash.
    User(String),
    /// An attribute of the candidate item (its ATTRS).
    Item(String),
    /// The candidate's retrieval score (higher is better).
    Score,
    /// `ln(1 + the candidate's popularity now)`.
    Popularity,
    /// Cosine between the candidate and the user's recent items' mean.
    Session,
    /// `ln(1 + the user's recent items)`.
    Activity,
}

/// Recent items whose mean the `session` source compares candidates with.
pub const SESSION_SIGNAL_ITEMS: usize = 5;

/// What the request knows about a candidate or the user beyond the hash
/// and the attributes (the `popularity`, `session` and `activity` sources).
pub trait CandidateSignals {
    /// The item's popularity now.
    fn popularity(&self, slot: u32) -> f32;
    /// Cosine between the item and the user's recent items' mean (0 when
    /// the user has none).
    fn session_similarity(&self, slot: u32) -> f32;
    /// The number of the user's recent items.
    fn recent_items(&self) -> usize;
}

/// No signals: every one is 0 (a QUERY model's batch, benchmarks).
pub struct NoSignals;

impl CandidateSignals for NoSignals {
    fn popularity(&self, _: u32) -> f32 {
        0.0
    }
    fn session_similarity(&self, _: u32) -> f32 {
        0.0
    }
    fn recent_items(&self) -> usize {
        0
    }
}

/// The sources that are numbers computed by the request, by name.
const COMPUTED: [(&str, Source); 4] = [
    ("score", Source::Score),
    ("popularity", Source::Popularity),
    ("session", Source::Session),
    ("activity", Source::Activity),
];

impl Source {
    fn parse(s: &str) -> Result<Source, String> {
        if let Some((_, source)) = COMPUTED.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
            return Ok(source.clone());
        }
        let bad = || {
            format!("feature source '{s}' is not user.<field>, item.<attribute>, score, popularity, session or activity")
        };
        let (scope, name) = s.split_once('.').ok_or_else(bad)?;
        if name.is_empty() {
            return Err(bad());
        }
        match scope.to_ascii_lowercase().as_str() {
            "user" => Ok(Source::User(name.to_string())),
            "item" => Ok(Source::Item(name.to_string())),
            _ => Err(bad()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::User(f) => format!("user.{f}"),
            Source::Item(a) => format!("item.{a}"),
            computed => COMPUTED
                .iter()
                .find(|(_, s)| s == computed)
                .map_or("?", |(n, _)| n)
                .into(),
        }
    }

    /// Whether the request computes it (a number: DENSE only).
    fn is_computed(&self) -> bool {
        COMPUTED.iter().any(|(_, s)| s == self)
    }
}

/// How a categorical value becomes an id.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapping {
    /// The value is the id.
    Integer,
    /// Position in this list.
    Vocab(Vec<String>),
    /// FNV-1a 64 of the text, modulo the cardinality.
    Hash,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DenseFeature {
    pub source: Source,
    pub default: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SparseFeature {
    pub source: Source,
    pub cardinality: u64,
    pub mapping: Mapping,
    pub default: i64,
    /// The key prefix of the embedding table's rows, when they live in
    /// Redis keys instead of the model ([`super::rows`]).
    pub rows: Option<String>,
    vocab_index: HashMap<String, i64>,
}

impl SparseFeature {
    /// The id of a value given as text (`None` = missing).
    pub fn id_of(&self, text: Option<&str>) -> i64 {
        let Some(t) = text else {
            return self.default;
        };
        match &self.mapping {
            Mapping::Integer => t
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|&i| i >= 0 && (i as u64) < self.cardinality)
                .unwrap_or(self.default),
            Mapping::Vocab(_) => self.vocab_index.get(t).copied().unwrap_or(self.default),
            Mapping::Hash => (crate::codec::fnv1a64(t.as_bytes()) % self.cardinality) as i64,
        }
    }
}

impl DenseFeature {
    /// The value of a user-sourced feature: the hash field as a finite
    /// number, else the default.
    fn user_value(&self, user: &HashMap<String, String>) -> f32 {
        match &self.source {
            Source::User(field) => user
                .get(field)
                .and_then(|t| t.trim().parse::<f32>().ok())
                .filter(|x| x.is_finite())
                .unwrap_or(self.default),
            _ => self.default,
        }
    }
}

impl SparseFeature {
    /// The id of a user-sourced feature (the default when the field is missing).
    fn user_value(&self, user: &HashMap<String, String>) -> i64 {
        match &self.source {
            Source::User(field) => self.id_of(user.get(field).map(String::as_str)),
            _ => self.default,
        }
    }
}

/// The declared inputs of a model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Schema {
    pub dense: Vec<DenseFeature>,
    pub sparse: Vec<SparseFeature>,
    /// The tokens it was parsed from (persisted and replayed as is).
    pub tokens: Vec<String>,
    /// The user hash fields it reads (derived once at parse: requests ask
    /// for them on the main thread).
    user_fields: Vec<String>,
}

/// One batched model input: `n` rows, row-major.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub rows: usize,
    pub dense: Vec<f32>,
    pub sparse: Vec<i64>,
    /// For each SPARSE feature whose table lives in Redis keys (ROWS), the
    /// rows of its ids, `[rows, d]` ([`super::rows::gather`]); empty for
    /// the tables inside the model. A table left empty reads zeros.
    pub external: Vec<Vec<f32>>,
}

impl Batch {
    pub fn dense_width(&self) -> usize {
        self.dense.len().checked_div(self.rows).unwrap_or(0)
    }
    pub fn sparse_width(&self) -> usize {
        self.sparse.len().checked_div(self.rows).unwrap_or(0)
    }
}

fn parse_number(what: &str, s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| format!("{what} must be a finite number, got '{s}'"))
}

impl Schema {
    /// Parses the tokens after SCHEMA.
    pub fn parse(tokens: &[String]) -> Result<Schema, String> {
        let mut s = Schema {
            tokens: tokens.to_vec(),
            ..Schema::default()
        };
        let mut i = 0;
        let next = |i: &mut usize, what: &str| -> Result<String, String> {
            let t = tokens
                .get(*i)
                .cloned()
                .ok_or_else(|| format!("SCHEMA: missing {what}"))?;
            *i += 1;
            Ok(t)
        };
        let peek_kw = |i: usize| tokens.get(i).map(|t| t.to_ascii_uppercase());
        while i < tokens.len() {
            let kind = next(&mut i, "DENSE or SPARSE")?.to_ascii_uppercase();
            match kind.as_str() {
                "DENSE" => {
                    let source = Source::parse(&next(&mut i, "DENSE source")?)?;
                    let mut default = 0.0;
                    if peek_kw(i).as_deref() == Some("DEFAULT") {
                        i += 1;
                        default =
                            parse_number("DENSE DEFAULT", &next(&mut i, "DEFAULT value")?)? as f32;
                    }
                    s.dense.push(DenseFeature { source, default });
                }
                "SPARSE" => {
                    let source = Source::parse(&next(&mut i, "SPARSE source")?)?;
                    if source.is_computed() {
                        return Err(format!(
                            "SCHEMA: {} is a number; declare it DENSE",
                            source.describe()
                        ));
                    }
                    let card_text = next(&mut i, "SPARSE cardinality")?;
                    let cardinality = card_text
                        .parse::<u64>()
                        .ok()
                        .filter(|&c| (1..=MAX_CARDINALITY).contains(&c))
                        .ok_or_else(|| {
                            format!(
                                "SCHEMA: cardinality of {} must be an integer between 1 and {MAX_CARDINALITY}, got '{card_text}'",
                                source.describe()
                            )
                        })?;
                    let mut f = SparseFeature {
                        source,
                        cardinality,
                        mapping: Mapping::Integer,
                        default: 0,
                        rows: None,
                        vocab_index: HashMap::new(),
                    };
                    loop {
                        match peek_kw(i).as_deref() {
                            Some("VOCAB") => {
                                i += 1;
                                let list: Vec<String> = next(&mut i, "VOCAB list")?
                                    .split(',')
                                    .map(str::to_string)
                                    .collect();
                                if list.len() as u64 > cardinality {
                                    return Err(format!(
                                        "SCHEMA: VOCAB of {} has {} values but the cardinality is {cardinality}",
                                        f.source.describe(),
                                        list.len()
                                    ));
                                }
                                f.vocab_index = list
                                    .iter()
                                    .enumerate()
                                    .map(|(i, v)| (v.clone(), i as i64))
                                    .collect();
                                f.mapping = Mapping::Vocab(list);
                            }
                            Some("HASH") => {
                                i += 1;
                                f.mapping = Mapping::Hash;
                            }
                            Some("ROWS") => {
                                i += 1;
                                let prefix = next(&mut i, "ROWS key prefix")?;
                                if KEYWORDS.contains(&prefix.to_ascii_uppercase().as_str()) {
                                    return Err(format!(
                                        "SCHEMA: ROWS of {} needs a key prefix, got the keyword '{prefix}'",
                                        f.source.describe()
                                    ));
                                }
                                super::rows::check_prefix(&prefix)
                                    .map_err(|e| format!("SCHEMA: {e}"))?;
                                f.rows = Some(prefix);
                            }
                            Some("DEFAULT") => {
                                i += 1;
                                let t = next(&mut i, "DEFAULT id")?;
                                f.default = t
                                    .parse::<i64>()
                                    .ok()
                                    .filter(|&d| d >= 0 && (d as u64) < cardinality)
                                    .ok_or_else(|| {
                                        format!(
                                            "SCHEMA: DEFAULT of {} must be an id in [0, {cardinality}), got '{t}'",
                                            f.source.describe()
                                        )
                                    })?;
                            }
                            _ => break,
                        }
                    }
                    s.sparse.push(f);
                }
                other => return Err(format!("SCHEMA: expected DENSE or SPARSE, got '{other}'")),
            }
            if s.dense.len() + s.sparse.len() > MAX_FEATURES {
                return Err(format!("SCHEMA: at most {MAX_FEATURES} features"));
            }
        }
        if s.dense.is_empty() && s.sparse.is_empty() {
            return Err("SCHEMA declares no features: add DENSE or SPARSE entries".into());
        }
        s.user_fields = s
            .sources()
            .filter_map(|s| match s {
                Source::User(f) => Some(f.clone()),
                _ => None,
            })
            .collect();
        Ok(s)
    }

    /// Each SPARSE feature's ROWS prefix (`None`: its table is in the model).
    pub fn row_prefixes(&self) -> Vec<Option<&str>> {
        self.sparse.iter().map(|f| f.rows.as_deref()).collect()
    }

    /// User hash fields the schema reads.
    pub fn user_fields(&self) -> &[String] {
        &self.user_fields
    }

    fn sources(&self) -> impl Iterator<Item = &Source> {
        self.dense
            .iter()
            .map(|f| &f.source)
            .chain(self.sparse.iter().map(|f| &f.source))
    }

    /// A schema for a query model may only read the user.
    pub fn check_user_only(&self) -> Result<(), String> {
        match self.sources().find(|s| !matches!(s, Source::User(_))) {
            Some(s) => Err(format!(
                "a QUERY model sees only the user: {} is not a user.<field> source",
                s.describe()
            )),
            None => Ok(()),
        }
    }

    /// Assembles the batch for `candidates` (slot, retrieval score), item
    /// features read from `columns`: user features are computed once and
    /// broadcast to every row.
    pub fn assemble(
        &self,
        user: &HashMap<String, String>,
        columns: &Columns,
        signals: &dyn CandidateSignals,
        candidates: &[(u32, f32)],
    ) -> Batch {
        let rows = candidates.len();
        let (dw, sw) = (self.dense.len(), self.sparse.len());
        let mut batch = Batch {
            rows,
            dense: vec![0.0; rows * dw],
            sparse: vec![0; rows * sw],
            external: Vec::new(),
        };
        for (j, f) in self.dense.iter().enumerate() {
            match &f.source {
                Source::User(_) => {
                    let x = f.user_value(user);
                    (0..rows).for_each(|r| batch.dense[r * dw + j] = x);
                }
                Source::Score => candidates
                    .iter()
                    .enumerate()
                    .for_each(|(r, c)| batch.dense[r * dw + j] = c.1),
                Source::Popularity => candidates.iter().enumerate().for_each(|(r, c)| {
                    batch.dense[r * dw + j] = signals.popularity(c.0).max(0.0).ln_1p()
                }),
                Source::Session => candidates
                    .iter()
                    .enumerate()
                    .for_each(|(r, c)| batch.dense[r * dw + j] = signals.session_similarity(c.0)),
                Source::Activity => {
                    let x = (signals.recent_items() as f32).ln_1p();
                    (0..rows).for_each(|r| batch.dense[r * dw + j] = x);
                }
                Source::Item(attr) => match columns.column(attr) {
                    Some(col) => per_value(
                        col,
                        candidates,
                        |id| {
                            col.value(id)
                                .and_then(cel_number)
                                .map(|x| x as f32)
                                .filter(|x| x.is_finite())
                                .unwrap_or(f.default)
                        },
                        |r, x| batch.dense[r * dw + j] = x,
                    ),
                    None => (0..rows).for_each(|r| batch.dense[r * dw + j] = f.default),
                },
            }
        }
        for (j, f) in self.sparse.iter().enumerate() {
            match &f.source {
                Source::User(_) => {
                    let id = f.user_value(user);
                    (0..rows).for_each(|r| batch.sparse[r * sw + j] = id);
                }
                Source::Item(attr) => match columns.column(attr) {
                    Some(col) => per_value(
                        col,
                        candidates,
                        |id| f.id_of(col.value(id).and_then(cel_text).as_deref()),
                        |r, id| batch.sparse[r * sw + j] = id,
                    ),
                    None => (0..rows).for_each(|r| batch.sparse[r * sw + j] = f.default),
                },
                // Refused by Schema::parse; the default keeps the batch whole.
                _ => (0..rows).for_each(|r| batch.sparse[r * sw + j] = f.default),
            }
        }
        batch
    }

    /// The one-row batch of a user alone (a QUERY model's input): user
    /// features from the hash, every other source at its default.
    pub fn assemble_user(&self, user: &HashMap<String, String>) -> Batch {
        let dense = self.dense.iter().map(|f| f.user_value(user)).collect();
        let sparse = self.sparse.iter().map(|f| f.user_value(user)).collect();
        Batch {
            rows: 1,
            dense,
            sparse,
            external: Vec::new(),
        }
    }

    /// A batch of `rows` rows of defaults (used to try a model at MODEL.SET).
    pub fn defaults(&self, rows: usize) -> Batch {
        let dense_row: Vec<f32> = self.dense.iter().map(|f| f.default).collect();
        let sparse_row: Vec<i64> = self.sparse.iter().map(|f| f.default).collect();
        Batch {
            rows,
            dense: dense_row.repeat(rows),
            sparse: sparse_row.repeat(rows),
            external: Vec::new(),
        }
    }
}

/// A column memoizes per value id in a plain array when it has at most this
/// many distinct values per candidate (the array, zeroed per request, stays
/// proportional to the request); otherwise in a hash map.
const ARRAY_MEMO_PER_CANDIDATE: usize = 8;

/// Feeds `put(row, value)` for every candidate, `value` being
/// `resolve(value id)` of the candidate's item in `col`, resolved once per
/// distinct value. The value ids are gathered first in a tight loop (random
/// reads the CPU overlaps), then resolved.
fn per_value<T: Copy>(
    col: &Column,
    candidates: &[(u32, f32)],
    mut resolve: impl FnMut(u32) -> T,
    mut put: impl FnMut(usize, T),
) {
    let ids: Vec<u32> = candidates.iter().map(|&(slot, _)| col.id(slot)).collect();
    if col.values() <= ARRAY_MEMO_PER_CANDIDATE * candidates.len() {
        let mut memo: Vec<Option<T>> = vec![None; col.values() + 1];
        for (r, &id) in ids.iter().enumerate() {
            let v = match memo.get_mut(id as usize) {
                Some(m) => *m.get_or_insert_with(|| resolve(id)),
                None => resolve(id),
            };
            put(r, v);
        }
    } else {
        let mut memo: hashbrown::HashMap<u32, T> = hashbrown::HashMap::new();
        for (r, &id) in ids.iter().enumerate() {
            put(r, *memo.entry(id).or_insert_with(|| resolve(id)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::attrs::Attrs;

    fn toks(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn parses_and_refuses() {
        let s = Schema::parse(&toks(
            "DENSE user.age DEFAULT 30 DENSE score SPARSE item.genre 8 VOCAB a,b,c DEFAULT 7 SPARSE user.country 100 HASH SPARSE item.year 3000",
        ))
        .unwrap();
        assert_eq!((s.dense.len(), s.sparse.len()), (2, 3));
        assert_eq!(s.user_fields(), vec!["age", "country"]);
        assert!(s.check_user_only().is_err());
        for (bad, msg) in [
            ("", "no features"),
            ("DENSE", "missing DENSE source"),
            ("DENSE foo", "not user.<field>"),
            ("SPARSE score 4", "declare it DENSE"),
            ("SPARSE item.g 0", "cardinality"),
            ("SPARSE item.g 2 VOCAB a,b,c", "has 3 values"),
            ("SPARSE item.g 2 DEFAULT 2", "DEFAULT of item.g"),
            ("DENSE user.a DEFAULT nan", "finite number"),
            ("WIDE user.a", "expected DENSE or SPARSE"),
        ] {
            let e = Schema::parse(&toks(bad)).unwrap_err();
            assert!(e.contains(msg), "{bad}: {e}");
        }
    }

    #[test]
    fn assembles_broadcast_batch() {
        // Item "a" in slot 0, item "b" in slot 1.
        let mut columns = Columns::default();
        let a = Attrs::parse(r#"{"genre":"b","price":2.5,"year":1999}"#).unwrap();
        let b = Attrs::parse(r#"{"genre":"zzz"}"#).unwrap();
        columns.set(0, Some(a.object()));
        columns.set(1, Some(b.object()));
        let s = Schema::parse(&toks(
            "DENSE user.age DEFAULT 30 DENSE item.price DEFAULT -1 DENSE score SPARSE item.genre 8 VOCAB a,b,c DEFAULT 7 SPARSE item.year 3000 SPARSE user.country 100 HASH",
        ))
        .unwrap();
        let user: HashMap<String, String> = [("age".to_string(), "41".to_string())]
            .into_iter()
            .collect();
        let batch = s.assemble(&user, &columns, &NoSignals, &[(0, 0.5), (1, 0.25)]);
        let one = s.assemble_user(&user);
        assert_eq!(one.dense, vec![41.0, -1.0, 0.0]);
        assert_eq!(one.sparse, vec![7, 0, s.sparse[2].id_of(None)]);
        assert_eq!(batch.dense, vec![41.0, 2.5, 0.5, 41.0, -1.0, 0.25]);
        // genre "b" is vocabulary entry 1, "zzz" is unknown (DEFAULT 7); a
        // missing year and a missing country take the default 0.
        assert_eq!(batch.sparse, vec![1, 1999, 0, 7, 0, 0]);
        assert!(Mapping::Hash == s.sparse[2].mapping);
        assert_ne!(s.sparse[2].id_of(Some("fr")), s.sparse[2].id_of(Some("de")));
    }

    #[test]
    fn computed_sources_come_from_the_signals() {
        struct Fixed;
        impl CandidateSignals for Fixed {
            fn popularity(&self, slot: u32) -> f32 {
                slot as f32 * 10.0
            }
            fn session_similarity(&self, slot: u32) -> f32 {
                -(slot as f32)
            }
            fn recent_items(&self) -> usize {
                3
            }
        }
        let s = Schema::parse(&toks(
            "DENSE activity DENSE popularity DENSE session DENSE score",
        ))
        .unwrap();
        assert_eq!(s.dense[1].source.describe(), "popularity");
        let b = s.assemble(&HashMap::new(), &Columns::default(), &Fixed, &[(2, 0.5)]);
        assert_eq!(b.dense, vec![3f32.ln_1p(), 20f32.ln_1p(), -2.0, 0.5]);
        // Numbers only, and only for ranking (a QUERY model sees the user).
        for bad in ["SPARSE session 4", "SPARSE activity 4"] {
            let e = Schema::parse(&toks(bad)).unwrap_err();
            assert!(e.contains("declare it DENSE"), "{bad}: {e}");
        }
        assert!(s.check_user_only().is_err());
    }

    /// Columns with more distinct values than the array memo holds resolve
    /// through the hash map, to the same ids and numbers.
    #[test]
    fn assembles_columns_with_many_distinct_values() {
        let mut columns = Columns::default();
        let n = 5000;
        for slot in 0..n {
            let a = Attrs::parse(&format!(r#"{{"code":"{slot}","w":{slot}}}"#)).unwrap();
            columns.set(slot, Some(a.object()));
        }
        let s = Schema::parse(&toks("DENSE item.w SPARSE item.code 100000")).unwrap();
        let cands: Vec<(u32, f32)> = (0..n)
            .rev()
            .step_by(7)
            .chain([3, 3, n + 9])
            .map(|i| (i, 0.0))
            .collect();
        let batch = s.assemble(&HashMap::new(), &columns, &NoSignals, &cands);
        for (r, &(slot, _)) in cands.iter().enumerate() {
            let (w, code) = if slot < n {
                (slot as f32, slot as i64)
            } else {
                (0.0, 0)
            };
            assert_eq!((batch.dense[r], batch.sparse[r]), (w, code), "slot {slot}");
        }
    }
}
