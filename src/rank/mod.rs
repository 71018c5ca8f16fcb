//! Ranking models: a catalog's named models (ONNX through ort, the native
//! DLRM on CPU or GPU, or the native sequence tower), their schemas, and the
//! three things they do in a request: score the candidates in one batched
//! call (ROLE RANK), turn the user's features into the query vector (ROLE
//! QUERY), or turn the user's recent items into a vector blended into the
//! query (ROLE RECENT, kind SEQUENCE).
//!
//! - [`schema`]: feature declarations and batch assembly;
//! - [`engine`]: what runs a model (native DLRM on CPU or GPU, ONNX
//!   Runtime, the sequence tower) and the dispatch of a batch to it;
//! - [`dlrm`]: the native DLRM and its safetensors weights;
//! - [`sequence`]: the sequence tower (recent items to a query vector);
//! - [`onnx`]: ONNX Runtime sessions;
//! - [`rows`]: embedding tables kept as Redis keys, and their hot-row cache;
//! - [`gpu`]: the DLRM forward pass on CUDA (cudarc), when a GPU is present;
//! - [`stats`]: call counters per model and for the process.

pub mod dlrm;
mod engine;
pub mod gpu;
#[cfg(target_arch = "x86_64")]
pub mod kernels;
pub mod models;
pub mod onnx;
pub mod rows;
pub mod schema;
pub mod sequence;
mod stats;

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::features::columns::Columns;
use dlrm::Dlrm;
use engine::Engine;
use onnx::OnnxModel;
use schema::{Batch, CandidateSignals, Schema};
use sequence::SequenceTower;
pub use stats::{ModelStats, TOTALS};

/// What a model file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Onnx,
    Dlrm,
    /// The native sequence tower ([`sequence::SequenceTower`]).
    Sequence,
}

impl Kind {
    /// Every kind, in the order error messages list them.
    pub const ALL: [Kind; 3] = [Kind::Onnx, Kind::Dlrm, Kind::Sequence];

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
    }
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Onnx => "ONNX",
            Kind::Dlrm => "DLRM",
            Kind::Sequence => "SEQUENCE",
        }
    }
    /// Whether MODEL.SET needs a feature SCHEMA for it.
    pub fn takes_schema(&self) -> bool {
        *self != Kind::Sequence
    }
    /// The role a model of this kind has when MODEL.SET names none.
    pub fn default_role(&self) -> Role {
        match self {
            Kind::Sequence => Role::Recent,
            Kind::Onnx | Kind::Dlrm => Role::Rank,
        }
    }
}

/// What a model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Scores candidates (RECOMMEND ... RANK name).
    Rank,
    /// Computes the user vector from user features.
    Query,
    /// Computes a vector from the user's recent items, blended into the
    /// query vector (RECOMMEND ... SEQUENCE weight).
    Recent,
}

impl Role {
    /// Every role, in the order error messages list them.
    pub const ALL: [Role; 3] = [Role::Rank, Role::Query, Role::Recent];

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(s))
    }
    pub fn name(&self) -> &'static str {
        match self {
            Role::Rank => "RANK",
            Role::Query => "QUERY",
            Role::Recent => "RECENT",
        }
    }
    /// Whether a catalog holds at most one model of this role (it is used
    /// without being named, so two would be ambiguous).
    pub fn is_implicit(&self) -> bool {
        matches!(self, Role::Query | Role::Recent)
    }
}

/// Where DLRM models run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuMode {
    /// On the GPU when CUDA is found, else on the CPU (logged).
    Auto,
    /// On the GPU; no GPU fails the module load.
    On,
    Off,
}

/// Process-wide model settings (module arguments).
#[derive(Debug, Clone)]
pub struct Settings {
    /// ONNX sessions per model (one per worker thread).
    pub sessions: usize,
    /// Largest model accepted, in bytes.
    pub max_bytes: usize,
    /// Batches smaller than this run on the CPU copy of a GPU model: a GPU
    /// call costs ~70 µs whatever its size (H200: batch 1 in 72 µs on the
    /// GPU vs 11 µs on one core, batch 64 in 83 vs 47, batch 200 in 86 vs
    /// 150+; docs/benchmarks.md).
    pub gpu_min_rows: usize,
    /// The hot-row cache's budget ([`rows`]), in bytes.
    pub row_cache_bytes: u64,
    /// How long a request waits for the rows it misses.
    pub row_fetch_timeout: std::time::Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sessions: 2,
            max_bytes: 256 << 20,
            gpu_min_rows: 128,
            row_cache_bytes: 64 << 20,
            row_fetch_timeout: std::time::Duration::from_millis(20),
        }
    }
}

static SETTINGS: parking_lot::RwLock<Option<Settings>> = parking_lot::RwLock::new(None);

/// Sets the settings (at module load, and again when CONFIG SET changes
/// one; models already built keep their ONNX sessions).
pub fn configure(s: Settings) {
    rows::configure(s.row_cache_bytes);
    *SETTINGS.write() = Some(s);
}

pub fn settings() -> Settings {
    SETTINGS.read().clone().unwrap_or_default()
}

/// What MODEL.SET is given, and what is persisted.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub name: String,
    pub kind: Kind,
    pub role: Role,
    pub schema: Vec<String>,
    pub bytes: Arc<[u8]>,
}

/// Refuses a model file larger than the MODEL_MAX_MB cap.
pub fn check_size(bytes: usize) -> Result<(), String> {
    let cap = settings().max_bytes;
    if bytes > cap {
        return Err(format!(
            "the model is {bytes} bytes, above the cap of {} MB (module argument MODEL_MAX_MB)",
            cap >> 20
        ));
    }
    Ok(())
}

impl ModelSpec {
    /// The arguments of the `RECSYS.MODEL.SET` that recreates this model in
    /// the catalog at `key` (replicated, and written by AOF rewrite).
    pub fn command_args(&self, key: &[u8]) -> Vec<Vec<u8>> {
        let mut args = vec![
            key.to_vec(),
            self.name.as_bytes().to_vec(),
            self.kind.name().as_bytes().to_vec(),
            self.bytes.to_vec(),
            b"ROLE".to_vec(),
            self.role.name().as_bytes().to_vec(),
        ];
        if self.kind.takes_schema() {
            args.push(b"SCHEMA".to_vec());
            args.push(self.schema.join(" ").into_bytes());
        }
        args
    }

    /// The parsed schema, checked against the kind and the role (a QUERY
    /// model reads only the user; a SEQUENCE model reads recent items, no schema,
    /// and is the RECENT role's only kind).
    pub fn parse_schema(&self) -> Result<Schema, String> {
        if (self.kind == Kind::Sequence) != (self.role == Role::Recent) {
            return Err(format!(
                "a {} model cannot have ROLE {}: ROLE RECENT is for SEQUENCE models, and a SEQUENCE model is always RECENT",
                self.kind.name(),
                self.role.name()
            ));
        }
        if !self.kind.takes_schema() {
            if self.schema.iter().any(|t| !t.trim().is_empty()) {
                return Err(format!(
                    "a {} model takes no SCHEMA: it reads the user's recent items",
                    self.kind.name()
                ));
            }
            return Ok(Schema::default());
        }
        let schema = Schema::parse(&self.schema)?;
        if self.role == Role::Query {
            schema.check_user_only()?;
        }
        if schema.sparse.iter().any(|f| f.rows.is_some())
            && (self.kind != Kind::Dlrm || self.role != Role::Rank)
        {
            return Err(format!(
                "SCHEMA ... ROWS (embedding rows in Redis keys) is for DLRM models with ROLE RANK, not a {} model with ROLE {}",
                self.kind.name(),
                self.role.name()
            ));
        }
        Ok(schema)
    }
}

/// A named model of a catalog.
pub struct Model {
    pub spec: ModelSpec,
    pub schema: Schema,
    pub sha256: String,
    /// The runnable model, or why it cannot run (a model restored from an
    /// RDB on a server without ONNX Runtime keeps its bytes and says so).
    engine: Result<Engine, String>,
    pub stats: ModelStats,
    /// Keeps writes to its tables' row keys invalidating the row cache
    /// while the model exists.
    _row_prefixes: Option<rows::PrefixLease>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Model({} {} {})",
            self.spec.name,
            self.spec.kind.name(),
            self.spec.role.name()
        )
    }
}

fn has_nan(v: &[f32]) -> Option<usize> {
    v.iter().position(|x| !x.is_finite())
}

impl Model {
    /// Builds and checks a model for a catalog of dimension `dim` (MODEL.SET):
    /// the size cap applies, and every mismatch between the file, the schema
    /// and the role is an error.
    pub fn build(spec: ModelSpec, dim: usize) -> Result<Model, String> {
        check_size(spec.bytes.len())?;
        let model = Model::assemble(spec, dim);
        model.runnable()?;
        if model.spec.role == Role::Recent {
            // A zero item: every shape was checked when the weights were read.
            if model.recent_query([&vec![0f32; dim][..]])?.is_none() {
                return Err("the tower outputs NaN or infinity for a zero item vector".into());
            }
            model.stats.reset();
            return Ok(model);
        }
        // Try it once on the schema's defaults: catches models whose shapes
        // only fail at run time, and outputs of the wrong size.
        let trial = model
            .schema
            .defaults(if model.spec.role == Role::Rank { 2 } else { 1 });
        let out = model.run(&trial)?;
        if has_nan(&out).is_some() {
            return Err(
                "the model outputs NaN or infinity for the schema's default features".into(),
            );
        }
        if model.spec.role == Role::Query && out.len() != dim {
            return Err(format!(
                "a QUERY model must output the catalog's {dim}-d vector, this one outputs {} values",
                out.len()
            ));
        }
        model.stats.reset();
        Ok(model)
    }

    /// A model read back from an RDB: like [`Model::build`] without the cap
    /// or the trial run, and a model whose runtime is missing (ONNX Runtime
    /// not loaded) is kept, bytes and all, and says why it cannot run.
    pub fn restore(spec: ModelSpec, dim: usize) -> Result<Model, String> {
        let model = Model::assemble(spec, dim);
        if let Err(e) = model.runnable() {
            let missing_runtime = model.spec.kind == Kind::Onnx && onnx::status().is_err();
            if !missing_runtime {
                return Err(e);
            }
        }
        Ok(model)
    }

    /// Parses the schema and starts the engine; a failed step is kept in
    /// `engine` (schema errors included) for the callers to judge.
    fn assemble(spec: ModelSpec, dim: usize) -> Model {
        let sha256 = Sha256::digest(&spec.bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let schema = spec.parse_schema();
        let leases = schema.as_ref().ok().map(|s| {
            let prefixes = s.row_prefixes().into_iter().flatten().map(str::to_string);
            rows::PrefixLease::new(prefixes.collect())
        });
        let engine = schema.as_ref().map_err(Clone::clone).and_then(|schema| {
            let (dense, sparse) = (schema.dense.len(), schema.sparse.len());
            match spec.kind {
                Kind::Dlrm => {
                    let cards: Vec<u64> = schema.sparse.iter().map(|f| f.cardinality).collect();
                    let (outputs, sigmoid) = match spec.role {
                        Role::Rank => (1, true),
                        Role::Query | Role::Recent => (dim, false),
                    };
                    let external: Vec<bool> =
                        schema.sparse.iter().map(|f| f.rows.is_some()).collect();
                    let cpu = Dlrm::from_safetensors(
                        &spec.bytes,
                        dense,
                        &cards,
                        &external,
                        outputs,
                        sigmoid,
                    )?;
                    // The GPU copy holds every table on the device; one
                    // whose rows come with each batch runs on the CPU.
                    let gpu = match cpu.has_external_tables() {
                        true => Ok(None),
                        false => gpu::upload(&cpu).map(|g| g.map(Box::new)),
                    };
                    Ok(Engine::Native {
                        cpu: Box::new(cpu),
                        gpu,
                    })
                }
                Kind::Onnx => OnnxModel::compile(&spec.bytes, dense, sparse, settings().sessions)
                    .map(Engine::Onnx),
                Kind::Sequence => SequenceTower::from_safetensors(&spec.bytes, dim)
                    .map(|t| Engine::Sequence(Box::new(t))),
            }
        });
        Model {
            spec,
            schema: schema.unwrap_or_default(),
            sha256,
            engine,
            stats: ModelStats::default(),
            _row_prefixes: leases,
        }
    }

    /// Ok when the model can run, else why not.
    pub fn runnable(&self) -> Result<(), String> {
        self.engine.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    /// Where it runs: "cpu", "gpu (name)", "cpu (the GPU copy failed: why)",
    /// "onnxruntime cpu, n sessions" or "unavailable: why".
    pub fn device(&self) -> String {
        match &self.engine {
            Ok(engine) => engine.device(),
            Err(e) => format!("unavailable: {e}"),
        }
    }

    /// User hash fields the model reads.
    pub fn user_fields(&self) -> &[String] {
        self.schema.user_fields()
    }

    fn run_raw(&self, batch: &Batch) -> Result<(Vec<usize>, Vec<f32>), String> {
        let (dw, sw) = (self.schema.dense.len(), self.schema.sparse.len());
        if batch.dense.len() != batch.rows * dw || batch.sparse.len() != batch.rows * sw {
            return Err(format!(
                "batch of {} rows has {} dense and {} sparse values, model '{}' takes {dw} and {sw} per row",
                batch.rows,
                batch.dense.len(),
                batch.sparse.len(),
                self.spec.name
            ));
        }
        let engine = self
            .engine
            .as_ref()
            .map_err(|e| format!("model '{}' cannot run: {e}", self.spec.name))?;
        engine.run(&self.spec.name, batch, &self.stats)
    }

    /// Runs a batch and counts the call; checks a RANK model gives one value
    /// per row.
    fn run(&self, batch: &Batch) -> Result<Vec<f32>, String> {
        let t = std::time::Instant::now();
        let result = self.run_raw(batch).and_then(|(shape, mut out)| {
            // Two-class probabilities (classifier exports): the positive class.
            let two_class = self.spec.role == Role::Rank && shape == [batch.rows, 2];
            if two_class {
                out = out.chunks_exact(2).map(|p| p[1]).collect();
            }
            // A QUERY model's width was checked when it was built.
            let scores_shape = two_class
                || (out.len() == batch.rows && shape.iter().filter(|&&d| d != 1).count() <= 1);
            if self.spec.role == Role::Rank && !scores_shape {
                return Err(format!(
                    "model '{}' output has shape {shape:?}; a RANK model must output [n] or [n, 1] scores, or [n, 2] two-class probabilities",
                    self.spec.name
                ));
            }
            Ok(out)
        });
        self.stats.count(|s| &s.calls, 1);
        self.stats.count(|s| &s.rows, batch.rows as u64);
        self.stats
            .count(|s| &s.micros, t.elapsed().as_micros() as u64);
        if result.is_err() {
            self.stats.count(|s| &s.errors, 1);
        }
        result
    }

    /// Scores a prepared batch (benchmarks call this directly).
    pub fn score_batch(&self, batch: &Batch) -> Result<Vec<f32>, String> {
        let scores = self.run(batch)?;
        if let Some(i) = has_nan(&scores) {
            self.stats.count(|s| &s.errors, 1);
            return Err(format!(
                "model '{}' scored candidate {i} as {}: NaN and infinite scores are errors",
                self.spec.name, scores[i]
            ));
        }
        Ok(scores)
    }

    /// Scores candidates (slot, retrieval score) for a user; item features
    /// come from the catalog's attribute `columns`.
    pub fn score(
        &self,
        user: &HashMap<String, String>,
        columns: &Columns,
        signals: &dyn CandidateSignals,
        candidates: &[(u32, f32)],
    ) -> Result<Vec<f32>, String> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        self.score_batch(&self.features(user, columns, signals, candidates))
    }

    /// The model's input for `candidates`: user features broadcast to every
    /// row, item features from the attribute `columns`.
    pub fn features(
        &self,
        user: &HashMap<String, String>,
        columns: &Columns,
        signals: &dyn CandidateSignals,
        candidates: &[(u32, f32)],
    ) -> Batch {
        let mut batch = self.schema.assemble(user, columns, signals, candidates);
        if let Ok(Engine::Native { cpu, .. }) = &self.engine {
            if cpu.has_external_tables() {
                batch.external = rows::gather(
                    &self.schema.row_prefixes(),
                    &batch.sparse,
                    batch.rows,
                    cpu.dim,
                );
            }
        }
        batch
    }

    /// The query vector for a user (ROLE QUERY): the user's features alone.
    pub fn query(&self, user: &HashMap<String, String>) -> Result<Vec<f32>, String> {
        let v = self.run(&self.schema.assemble_user(user))?;
        if has_nan(&v).is_some() {
            return Err(format!(
                "query model '{}' produced NaN or infinity",
                self.spec.name
            ));
        }
        Ok(v)
    }

    /// The tower's vector for the user's recent items (ROLE RECENT; newest
    /// first, as catalog vectors; items past the tower's positions are not
    /// read); `None` without items. Counted like a call of one row.
    pub fn recent_query<'a>(
        &self,
        recent: impl IntoIterator<Item = &'a [f32]>,
    ) -> Result<Option<Vec<f32>>, String> {
        let Ok(Engine::Sequence(tower)) = &self.engine else {
            return Err(format!(
                "model '{}' is not a SEQUENCE model",
                self.spec.name
            ));
        };
        let t = std::time::Instant::now();
        let mut items = 0;
        let out = tower.query(recent.into_iter().inspect(|_| items += 1));
        self.stats.count(|s| &s.calls, 1);
        self.stats.count(|s| &s.rows, items as u64);
        self.stats
            .count(|s| &s.micros, t.elapsed().as_micros() as u64);
        match out {
            Some(v) if has_nan(&v).is_some() => {
                self.stats.count(|s| &s.errors, 1);
                Err(format!(
                    "tower '{}' produced NaN or infinity",
                    self.spec.name
                ))
            }
            out => Ok(out),
        }
    }

    /// Multiply-adds of a RECENT call on `n` recent items (0 for other
    /// models).
    pub fn recent_work(&self, n: usize) -> usize {
        match &self.engine {
            Ok(Engine::Sequence(t)) if n > 0 => t.multiply_adds(n),
            _ => 0,
        }
    }

    /// Most recent items a RECENT model reads (0 for other models).
    pub fn recent_positions(&self) -> usize {
        match &self.engine {
            Ok(Engine::Sequence(t)) => t.positions(),
            _ => 0,
        }
    }

    /// Approximate heap held: the bytes kept for persistence plus the
    /// engine's copies of the weights (one per ONNX session).
    pub fn memory_bytes(&self) -> usize {
        let copies = match &self.engine {
            Ok(Engine::Onnx(m)) => m.sessions(),
            Ok(Engine::Native { .. } | Engine::Sequence(_)) => 1,
            Err(_) => 0,
        };
        (1 + copies) * self.spec.bytes.len()
    }
}

#[cfg(test)]
mod tests;
