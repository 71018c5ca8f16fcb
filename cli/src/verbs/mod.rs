//! The tool's verbs from interactions to recommendations: `import`,
//! `train`, `load`, `eval` and `batch` (each its command-line arguments and
//! what it prints; the work lives in `data`, `train`, `eval` and `loader`).

pub mod batch;
pub mod eval;
pub mod import;
pub mod load;
pub mod train;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar for `len` steps of `what` (hidden when stderr is not a
/// terminal, as indicatif does).
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(what.to_string());
    b
}
