//! WHERE expressions: CEL (Common Expression Language, the `cel` crate) over
//! item attributes. Attribute names are variables: `genre == "drama" &&
//! year >= 2000`, `genre in ["drama", "comedy"]`, `"kids" in tags`.
//!
//! An item matches only when the expression evaluates to `true`. A missing
//! attribute or a type mismatch makes the expression fail for that item, which
//! counts as "no match" — never as an error of the whole request.

use std::sync::Arc;

use cel::common::value::CowVal;
use cel::context::VariableResolver;
use cel::{Context, Env, Program, Value};
use once_cell::sync::Lazy;

use crate::features::columns::{Column, Columns};

static ENV: Lazy<Arc<Env>> = Lazy::new(|| Arc::new(Env::stdlib()));

/// A compiled WHERE expression.
pub struct Filter {
    program: Program,
    source: String,
    /// Variables (attribute names) the expression reads, sorted.
    variables: Vec<String>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Filter({})", self.source)
    }
}

/// The values of one item for the variables a filter reads.
struct ItemResolver<'a> {
    names: &'a [String],
    values: &'a [Option<&'a Value>],
}

impl VariableResolver for ItemResolver<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let i = self.names.iter().position(|n| n == variable)?;
        let v: Value = self.values[i]?.clone();
        let boxed: Box<dyn cel::common::value::Val> = v.try_into().ok()?;
        Some(CowVal::Owned(boxed))
    }
}

impl Filter {
    /// Compiles `source`; the error names the position of the problem.
    pub fn compile(source: &str) -> Result<Filter, String> {
        if source.trim().is_empty() {
            return Err("WHERE expression is empty".into());
        }
        let program = ENV.compile(source).map_err(|e| {
            let detail: Vec<String> = e
                .errors
                .iter()
                .map(|pe| format!("at line {} column {}: {}", pe.pos.0, pe.pos.1 + 1, pe.msg))
                .collect();
            format!("WHERE expression does not parse: {}", detail.join("; "))
        })?;
        let mut variables: Vec<String> = program
            .references()
            .variables()
            .into_iter()
            .map(str::to_string)
            .collect();
        variables.sort();
        Ok(Filter {
            program,
            source: source.to_string(),
            variables,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether an item whose values for [`Filter::variables`] are `values` passes.
    pub fn matches_values(&self, values: &[Option<&Value>]) -> bool {
        let resolver = ItemResolver {
            names: &self.variables,
            values,
        };
        let mut ctx = Context::with_env(Arc::clone(&ENV));
        ctx.set_variable_resolver(&resolver);
        matches!(self.program.execute(&ctx), Ok(Value::Bool(true)))
    }

    /// Attribute names the expression reads.
    pub fn variables(&self) -> &[String] {
        &self.variables
    }
}

/// Compiled filters by source text, shared by requests: Redis clients send the
/// same few WHERE expressions over and over, and compiling takes microseconds
/// of the server's main thread.
static CACHE: once_cell::sync::Lazy<
    std::sync::Mutex<std::collections::HashMap<String, Arc<Filter>>>,
> = once_cell::sync::Lazy::new(Default::default);
/// Most expressions kept in the cache (it is emptied when full).
const CACHE_CAP: usize = 512;

impl Filter {
    /// [`Filter::compile`] through a process-wide cache.
    pub fn cached(source: &str) -> Result<Arc<Filter>, String> {
        if let Some(f) = CACHE.lock().ok().and_then(|c| c.get(source).cloned()) {
            return Ok(f);
        }
        let f = Arc::new(Filter::compile(source)?);
        if let Ok(mut c) = CACHE.lock() {
            if c.len() >= CACHE_CAP {
                c.clear();
            }
            c.insert(source.to_string(), Arc::clone(&f));
        }
        Ok(f)
    }
}

/// Most distinct attribute combinations remembered per request.
const MEMO_CAP: usize = 1 << 16;

/// Evaluates one [`Filter`] over the items of a catalog for one request,
/// remembering the answer per combination of the value ids the expression
/// reads: with categorical attributes CEL runs a handful of times per request
/// instead of once per candidate.
pub struct FilterEval<'f> {
    filter: &'f Filter,
    columns: Vec<Option<&'f Column>>,
    /// One variable: answer by value id (-1 unknown, 0 no, 1 yes).
    single: std::cell::RefCell<Vec<i8>>,
    /// Several variables: answer by the tuple of value ids.
    multi: std::cell::RefCell<std::collections::HashMap<Vec<u32>, bool>>,
}

impl<'f> FilterEval<'f> {
    pub fn new(filter: &'f Filter, columns: &'f Columns) -> Self {
        FilterEval {
            filter,
            columns: filter.variables.iter().map(|v| columns.column(v)).collect(),
            single: Default::default(),
            multi: Default::default(),
        }
    }

    fn eval(&self, ids: &[u32]) -> bool {
        let values: Vec<Option<&Value>> = self
            .columns
            .iter()
            .zip(ids)
            .map(|(c, &id)| c.and_then(|c| c.value(id)))
            .collect();
        self.filter.matches_values(&values)
    }

    /// Whether the item in `slot` passes.
    pub fn matches(&self, slot: u32) -> bool {
        match self.columns.as_slice() {
            [] => self.eval(&[]),
            [col] => {
                let id = col.map_or(0, |c| c.id(slot));
                let mut memo = self.single.borrow_mut();
                if let Some(&known) = memo.get(id as usize).filter(|&&m| m >= 0) {
                    return known == 1;
                }
                let ok = self.eval(&[id]);
                if (id as usize) < MEMO_CAP {
                    if memo.len() <= id as usize {
                        memo.resize(id as usize + 1, -1);
                    }
                    memo[id as usize] = ok as i8;
                }
                ok
            }
            cols => {
                let ids: Vec<u32> = cols.iter().map(|c| c.map_or(0, |c| c.id(slot))).collect();
                if let Some(&known) = self.multi.borrow().get(&ids) {
                    return known;
                }
                let ok = self.eval(&ids);
                let mut memo = self.multi.borrow_mut();
                if memo.len() < MEMO_CAP {
                    memo.insert(ids, ok);
                }
                ok
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Columns holding one item per JSON document, slot = position.
    fn items(docs: &[&str]) -> Columns {
        let mut c = Columns::default();
        for (slot, d) in docs.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(d).unwrap();
            c.set(slot as u32, v.as_object());
        }
        c
    }

    fn check(expr: &str, doc: &str) -> bool {
        let cols = items(&[doc]);
        let f = Filter::compile(expr).unwrap();
        FilterEval::new(&f, &cols).matches(0)
    }

    #[test]
    fn comparisons_logic_and_membership() {
        let a =
            r#"{"genre":"drama","year":1999,"price":9.5,"in_stock":true,"tags":["kids","new"]}"#;
        for (expr, want) in [
            (r#"genre == "drama""#, true),
            (r#"genre != "drama""#, false),
            ("year >= 1990 && year < 2000", true),
            ("price > 9.0 || year > 3000", true),
            ("!in_stock", false),
            (r#"genre in ["comedy", "drama"]"#, true),
            (r#""kids" in tags"#, true),
            (r#""old" in tags"#, false),
            ("missing == 1", false),
            (r#"year == "1999""#, false),
        ] {
            assert_eq!(check(expr, a), want, "{expr}");
        }
    }

    #[test]
    fn memoized_evaluation_agrees() {
        let docs = [
            r#"{"genre":"a","year":2001,"tags":["x"]}"#,
            r#"{"genre":"a","year":2001,"tags":["y"]}"#,
            r#"{"genre":"a","year":1999,"tags":["x"]}"#,
            r#"{"genre":"b","year":2001,"tags":["x"]}"#,
            r#"{"genre":"a","year":2001,"tags":["x"]}"#,
            r#"{}"#,
        ];
        let cols = items(&docs);
        let f = Filter::compile(r#"genre == "a" && year > 2000 && ("x" in tags)"#).unwrap();
        let eval = FilterEval::new(&f, &cols);
        let got: Vec<bool> = (0..docs.len() as u32).map(|s| eval.matches(s)).collect();
        assert_eq!(got, vec![true, false, false, false, true, false]);
        let g = Filter::compile(r#"genre == "a""#).unwrap();
        let eval = FilterEval::new(&g, &cols);
        let got: Vec<bool> = (0..docs.len() as u32).map(|s| eval.matches(s)).collect();
        assert_eq!(got, vec![true, true, true, false, true, false]);
        assert!(!eval.matches(99), "unknown slots have no attributes");
    }

    #[test]
    fn parse_errors_say_where() {
        let e = Filter::compile("year >= ").unwrap_err();
        assert!(e.contains("column"), "{e}");
        assert!(Filter::compile("  ").is_err());
    }
}
