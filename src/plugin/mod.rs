//! Sandboxed WebAssembly plugins (components built against `wit/recsys.wit`)
//! that filter or order RECOMMEND's candidates.
//!
//! One [`Host`] per process owns the wasmtime `Engine` (pooling allocator,
//! epoch interruption, bounded stack) and a `Linker` with the only imports a
//! plugin may use: the `host.log` function and a WASI p2 context with no
//! filesystem, no network, no environment and stdout/stderr going into a
//! bounded buffer. A [`Plugin`] is a compiled component pre-linked into an
//! `InstancePre`; every call gets a fresh `Store` (no state survives between
//! requests), a memory cap, a deadline, and its output is validated before use.

mod bindings;
mod host;

pub use host::{CallError, Host, Limits, Plugin, PluginStats, PluginTotals, World, TOTALS};

/// Marks a missing text attribute in [`PluginInput::text_values`].
pub const MISSING: u32 = u32::MAX;

/// The flattened request a plugin sees (mirrors `types.request` in the WIT):
/// lists of numbers and a few strings, so the canonical ABI copies in bulk.
#[derive(Debug, Clone, Default)]
pub struct PluginInput {
    pub user_id: String,
    pub context: Vec<(String, String)>,
    /// Candidate ids concatenated, with `n + 1` offsets.
    pub ids: String,
    pub id_offsets: Vec<u32>,
    pub scores: Vec<f32>,
    pub numeric_names: Vec<String>,
    /// Row-major: candidate i, column j at `i * numeric_names.len() + j`.
    pub numeric_values: Vec<f64>,
    pub text_names: Vec<String>,
    pub text_dict: Vec<String>,
    /// Row-major indices into `text_dict` ([`MISSING`] when absent).
    pub text_values: Vec<u32>,
}

impl PluginInput {
    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// The request restricted to the candidates at `keep` (in that order);
    /// names and the text dictionary are shared.
    pub fn subset(&self, keep: &[u32]) -> PluginInput {
        let (nw, tw) = (self.numeric_names.len(), self.text_names.len());
        let mut out = PluginInput {
            user_id: self.user_id.clone(),
            context: self.context.clone(),
            numeric_names: self.numeric_names.clone(),
            text_names: self.text_names.clone(),
            text_dict: self.text_dict.clone(),
            ..PluginInput::default()
        };
        for &i in keep {
            let i = i as usize;
            let (a, b) = (self.id_offsets[i] as usize, self.id_offsets[i + 1] as usize);
            out.push_id(&self.ids[a..b]);
            out.scores.push(self.scores[i]);
            out.numeric_values
                .extend_from_slice(&self.numeric_values[i * nw..(i + 1) * nw]);
            out.text_values
                .extend_from_slice(&self.text_values[i * tw..(i + 1) * tw]);
        }
        out
    }

    /// Appends a candidate id (call once per candidate, in order).
    pub fn push_id(&mut self, id: &str) {
        if self.id_offsets.is_empty() {
            self.id_offsets.push(0);
        }
        self.ids.push_str(id);
        self.id_offsets.push(self.ids.len() as u32);
    }
}

/// What an order plugin returns, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderOutput {
    pub indices: Vec<u32>,
    pub scores: Option<Vec<f32>>,
}

#[cfg(test)]
mod tests;
