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

use crate::features::attrs::Attrs;

static ENV: Lazy<Arc<Env>> = Lazy::new(|| Arc::new(Env::stdlib()));

/// A compiled WHERE expression.
pub struct Filter {
    program: Program,
    source: String,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Filter({})", self.source)
    }
}

struct ItemResolver<'a>(&'a Attrs);

impl VariableResolver for ItemResolver<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let v: Value = self.0.get(variable)?.clone();
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
        Ok(Filter {
            program,
            source: source.to_string(),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether an item with `attrs` passes.
    pub fn matches(&self, attrs: &Attrs) -> bool {
        let resolver = ItemResolver(attrs);
        let mut ctx = Context::with_env(Arc::clone(&ENV));
        ctx.set_variable_resolver(&resolver);
        matches!(self.program.execute(&ctx), Ok(Value::Bool(true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(json: &str) -> Attrs {
        Attrs::from_text(json)
    }

    #[test]
    fn comparisons_logic_and_membership() {
        let a = attrs(
            r#"{"genre":"drama","year":1999,"price":9.5,"in_stock":true,"tags":["kids","new"]}"#,
        );
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
            assert_eq!(Filter::compile(expr).unwrap().matches(&a), want, "{expr}");
        }
    }

    #[test]
    fn parse_errors_say_where() {
        let e = Filter::compile("year >= ").unwrap_err();
        assert!(e.contains("column"), "{e}");
        assert!(Filter::compile("  ").is_err());
    }
}

#[cfg(test)]
mod speed {
    #[test]
    #[ignore]
    fn print_eval_cost() {
        let a = super::Attrs::from_text(r#"{"genre":"drama","year":1999,"price":9.5}"#);
        let f = super::Filter::compile(r#"genre == "drama" && year > 1990"#).unwrap();
        let t = std::time::Instant::now();
        let mut n = 0;
        for _ in 0..100_000 {
            n += f.matches(&a) as usize;
        }
        eprintln!("{} ns per eval ({n})", t.elapsed().as_nanos() / 100_000);
    }
}
