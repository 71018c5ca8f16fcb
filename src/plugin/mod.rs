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

/// The flattened request a plugin sees: the WIT `types.request` record
/// itself (lists of numbers and a few strings, so the canonical ABI copies in
/// bulk), built once per request and lowered into each plugin without an
/// intermediate copy.
///
/// `ids` holds the candidate ids concatenated with `n + 1` offsets;
/// `numeric_values` and `text_values` are row-major (candidate i, column j at
/// `i * names.len() + j`); `text_values` index `text_dict` ([`MISSING`] when
/// absent).
pub type PluginInput = bindings::filter::recsys::plugin::types::Request;

impl Default for PluginInput {
    fn default() -> Self {
        PluginInput {
            user_id: String::new(),
            context_keys: Vec::new(),
            context_values: Vec::new(),
            ids: String::new(),
            id_offsets: Vec::new(),
            scores: Vec::new(),
            numeric_names: Vec::new(),
            numeric_values: Vec::new(),
            text_names: Vec::new(),
            text_dict: Vec::new(),
            text_values: Vec::new(),
        }
    }
}

impl PluginInput {
    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Keeps only the candidates at `keep` (ascending, in range), in place:
    /// rows move down, names and the text dictionary stay.
    pub fn retain_rows(&mut self, keep: &[u32]) {
        let (nw, tw) = (self.numeric_names.len(), self.text_names.len());
        let mut ids = String::with_capacity(self.ids.len());
        let mut offsets = Vec::with_capacity(keep.len() + 1);
        offsets.push(0);
        for (row, &i) in keep.iter().enumerate() {
            let i = i as usize;
            let (a, b) = (self.id_offsets[i] as usize, self.id_offsets[i + 1] as usize);
            ids.push_str(&self.ids[a..b]);
            offsets.push(ids.len() as u32);
            self.scores[row] = self.scores[i];
            self.numeric_values
                .copy_within(i * nw..(i + 1) * nw, row * nw);
            self.text_values.copy_within(i * tw..(i + 1) * tw, row * tw);
        }
        self.ids = ids;
        self.id_offsets = offsets;
        self.scores.truncate(keep.len());
        self.numeric_values.truncate(keep.len() * nw);
        self.text_values.truncate(keep.len() * tw);
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
