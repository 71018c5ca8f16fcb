//! WHERE expressions: CEL (Common Expression Language, the `cel` crate) over
//! item attributes. Attribute names are variables: `genre == "drama" &&
//! year >= 2000`, `genre in ["drama", "comedy"]`, `"kids" in tags`.
//!
//! An item matches only when the expression evaluates to `true`. A missing
//! attribute or a type mismatch makes the expression fail for that item, which
//! counts as "no match" — never as an error of the whole request.
//!
//! Expressions are untrusted input with a budget: at most [`MAX_WHERE_LEN`]
//! bytes, brackets nested at most [`MAX_NESTING`] deep, an expression tree at
//! most [`MAX_DEPTH`] deep, no comprehension (`all`, `exists`, `map`, ...)
//! inside another, and at most [`EVAL_BUDGET`] of evaluation per request
//! ([`FilterEval::exhausted`]). The compiled-filter cache is bounded in bytes.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cel::common::ast::{EntryExpr, Expr};
use cel::common::value::CowVal;
use cel::context::VariableResolver;
use cel::{Context, Env, IdedExpr, Program, Value};
use once_cell::sync::Lazy;

use crate::error::{Error, Result};
use crate::features::columns::{Column, Columns};
use crate::pipeline::typed_filter::{TypedEval, TypedFilter};

/// Longest WHERE expression accepted, in bytes.
pub const MAX_WHERE_LEN: usize = 4096;
/// Deepest nesting of brackets in the source.
pub const MAX_NESTING: usize = 32;
/// Deepest expression tree after parsing.
pub const MAX_DEPTH: usize = 64;
/// Evaluation time one request may spend in WHERE.
pub const EVAL_BUDGET: Duration = Duration::from_millis(100);

static ENV: Lazy<Arc<Env>> = Lazy::new(|| Arc::new(Env::stdlib()));

/// A compiled WHERE expression.
pub struct Filter {
    program: Program,
    source: String,
    /// Variables (attribute names) the expression reads, sorted.
    variables: Vec<String>,
    /// The same expression as typed column terms, when it is one.
    typed: Option<TypedFilter>,
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

/// Checks the raw text before the parser sees it: its length, and how deep
/// brackets nest (the parser recurses on them).
fn check_source(source: &str) -> Result<()> {
    if source.trim().is_empty() {
        return Err(Error::invalid("WHERE expression is empty"));
    }
    if source.len() > MAX_WHERE_LEN {
        return Err(Error::invalid(format!(
            "WHERE expression is {} bytes, the limit is {MAX_WHERE_LEN}",
            source.len()
        )));
    }
    let (mut depth, mut deepest) = (0usize, 0usize);
    // The open quote, whether the string is raw (r"..": no escapes), and
    // whether the previous character was a backslash.
    let (mut quote, mut raw, mut escaped) = (None, false, false);
    let mut previous = ' ';
    for c in source.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && !raw {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => {
                    quote = Some(c);
                    raw = matches!(previous, 'r' | 'R');
                }
                '(' | '[' | '{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        previous = c;
    }
    if deepest > MAX_NESTING {
        return Err(Error::invalid(format!(
            "WHERE expression nests brackets {deepest} deep, the limit is {MAX_NESTING}"
        )));
    }
    Ok(())
}

/// What a parsed expression costs to walk: its depth, and the deepest
/// nesting of comprehensions.
fn shape(e: &IdedExpr) -> (usize, usize) {
    let children: Vec<&IdedExpr> = match &e.expr {
        Expr::Call(c) => c.target.iter().map(|t| &**t).chain(&c.args).collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::List(l) => l.elements.iter().collect(),
        Expr::Map(m) => entries(&m.entries),
        Expr::Struct(s) => entries(&s.entries),
        Expr::Select(s) => vec![&*s.operand],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    };
    let (depth, loops) = children
        .into_iter()
        .map(shape)
        .fold((0, 0), |(d, l), (cd, cl)| (d.max(cd), l.max(cl)));
    let own = matches!(e.expr, Expr::Comprehension(_)) as usize;
    (depth + 1, loops + own)
}

fn entries(list: &[cel::common::ast::IdedEntryExpr]) -> Vec<&IdedExpr> {
    list.iter()
        .flat_map(|e| match &e.expr {
            EntryExpr::StructField(f) => vec![&f.value],
            EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
        })
        .collect()
}

impl Filter {
    /// Compiles `source`; the error names the position of the problem, or
    /// the limit it breaks.
    pub fn compile(source: &str) -> Result<Filter> {
        check_source(source)?;
        let program = ENV.compile(source).map_err(|e| {
            let detail: Vec<String> = e
                .errors
                .iter()
                .map(|pe| format!("at line {} column {}: {}", pe.pos.0, pe.pos.1 + 1, pe.msg))
                .collect();
            Error::invalid(format!(
                "WHERE expression does not parse: {}",
                detail.join("; ")
            ))
        })?;
        let (depth, loops) = shape(program.expression());
        if depth > MAX_DEPTH {
            return Err(Error::invalid(format!(
                "WHERE expression is {depth} levels deep, the limit is {MAX_DEPTH}"
            )));
        }
        if loops > 1 {
            return Err(Error::invalid(
                "WHERE expression nests a comprehension (all, exists, exists_one, map, filter) inside another: one level is allowed",
            ));
        }
        let mut variables: Vec<String> = program
            .references()
            .variables()
            .into_iter()
            .map(str::to_string)
            .collect();
        variables.sort();
        let typed = TypedFilter::from_expr(program.expression());
        Ok(Filter {
            program,
            source: source.to_string(),
            variables,
            typed,
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

    /// The expression as typed column terms, when it is a conjunction of
    /// them ([`TypedFilter`]): then no interpreter runs per item.
    pub fn typed(&self) -> Option<&TypedFilter> {
        self.typed.as_ref()
    }
}

/// Compiled filters by source text, shared by requests: Redis clients send
/// the same few WHERE expressions over and over.
struct Cache {
    filters: std::collections::HashMap<String, Arc<Filter>>,
    /// Estimated heap held by the cached filters.
    bytes: usize,
}

static CACHE: Lazy<parking_lot::Mutex<Cache>> = Lazy::new(|| {
    parking_lot::Mutex::new(Cache {
        filters: Default::default(),
        bytes: 0,
    })
});
/// Heap the cache may hold (it is emptied when a new filter would pass it).
const CACHE_BYTES: usize = 8 << 20;

/// Estimated heap of a compiled filter: the parsed tree is a few hundred
/// bytes per node, about one node per three source bytes, plus the source.
fn estimated_bytes(source: &str) -> usize {
    1024 + source.len() * 128
}

impl Filter {
    /// The compiled `source` if the cache has it; never compiles (for the
    /// Redis main thread, which must not run the parser).
    pub fn cached_only(source: &str) -> Option<Arc<Filter>> {
        CACHE.lock().filters.get(source).cloned()
    }

    /// [`Filter::compile`] through a process-wide cache.
    pub fn cached(source: &str) -> Result<Arc<Filter>> {
        if let Some(f) = CACHE.lock().filters.get(source).cloned() {
            return Ok(f);
        }
        let f = Arc::new(Filter::compile(source)?);
        let cost = estimated_bytes(source);
        let mut c = CACHE.lock();
        if c.bytes + cost > CACHE_BYTES {
            c.filters.clear();
            c.bytes = 0;
        }
        if c.filters
            .insert(source.to_string(), Arc::clone(&f))
            .is_none()
        {
            c.bytes += cost;
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
    /// The typed form, when the expression has one: used instead of CEL.
    typed: Option<TypedEval<'f>>,
    columns: Vec<Option<&'f Column>>,
    /// One variable: answer by value id (-1 unknown, 0 no, 1 yes).
    single: std::cell::RefCell<Vec<i8>>,
    /// Several variables: answer by the tuple of value ids.
    multi: std::cell::RefCell<std::collections::HashMap<Vec<u32>, bool>>,
    /// Past this instant no expression is evaluated ([`FilterEval::exhausted`]).
    deadline: Instant,
    exhausted: Cell<bool>,
}

impl<'f> FilterEval<'f> {
    /// Typed terms where the expression has them, else the interpreter.
    pub fn new(filter: &'f Filter, columns: &'f Columns) -> Self {
        FilterEval {
            typed: filter.typed().map(|t| t.bind(columns)),
            ..FilterEval::interpreted(filter, columns)
        }
    }

    /// Always the interpreter (the reference the typed terms are tested
    /// against).
    pub fn interpreted(filter: &'f Filter, columns: &'f Columns) -> Self {
        FilterEval {
            filter,
            typed: None,
            columns: filter.variables.iter().map(|v| columns.column(v)).collect(),
            single: Default::default(),
            multi: Default::default(),
            deadline: Instant::now() + EVAL_BUDGET,
            exhausted: Cell::new(false),
        }
    }

    /// Whether evaluation ran out of its budget ([`EVAL_BUDGET`]); from then
    /// on nothing more matches, and the request must fail.
    pub fn exhausted(&self) -> bool {
        self.exhausted.get()
    }

    fn eval(&self, ids: &[u32]) -> bool {
        if self.exhausted.get() || Instant::now() > self.deadline {
            self.exhausted.set(true);
            return false;
        }
        let values: Vec<Option<&Value>> = self
            .columns
            .iter()
            .zip(ids)
            .map(|(c, &id)| c.and_then(|c| c.value(id)))
            .collect();
        self.filter.matches_values(&values)
    }

    /// Whether the item in `slot` passes.
    #[inline]
    pub fn matches(&self, slot: u32) -> bool {
        if let Some(t) = &self.typed {
            return t.matches(slot);
        }
        self.interpret(slot)
    }

    /// Whether evaluation is typed (a few loads per item, no budget needed).
    pub fn is_typed(&self) -> bool {
        self.typed.is_some()
    }

    fn interpret(&self, slot: u32) -> bool {
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
        let e = Filter::compile("year >= ").unwrap_err().message;
        assert!(e.contains("column"), "{e}");
        assert!(Filter::compile("  ").is_err());
    }

    #[test]
    fn limits_are_enforced() {
        let err = |s: &str| Filter::compile(s).unwrap_err().message;
        assert!(err(&"a == 1 || ".repeat(500)).contains("limit is 4096"));
        let deep = format!("{}true{}", "(".repeat(40), ")".repeat(40));
        assert!(err(&deep).contains("nests brackets 40 deep"));
        // Brackets inside strings do not count; a raw string has no escapes.
        assert!(Filter::compile(&format!("genre == \"{}\"", "(".repeat(40))).is_ok());
        let after_raw = format!(
            r#"genre == r"\" || {}true{}"#,
            "(".repeat(40),
            ")".repeat(40)
        );
        assert!(
            err(&after_raw).contains("nests brackets 40 deep"),
            "{}",
            err(&after_raw)
        );
        let nested = "[1,2,3].all(a, [1,2,3].exists(b, a == b))";
        assert!(err(nested).contains("inside another"), "{}", err(nested));
        assert!(Filter::compile(r#"tags.exists(t, t == "x") && [1,2].all(y, y > 0)"#).is_ok());
        let chain = format!("{} > 0", vec!["year"; 100].join(" + "));
        assert!(err(&chain).contains("levels deep"), "{}", err(&chain));
    }
}
