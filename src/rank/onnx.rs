//! ONNX models through ONNX Runtime (`ort`, loaded at run time from the
//! library path the module is given). Nothing here calls `ort::init()`: it
//! panics when the library is missing, while `init_from` returns an error.
//!
//! Input convention: a float32 input named `dense` (`[n, #DENSE]`) and an
//! int64 input named `sparse` (`[n, #SPARSE]`), each present exactly when the
//! schema declares such features (a single float32 or int64 input of another
//! name is bound by its type); the first float32 output is the score (`[n]`,
//! `[n, 1]`, or two-class probabilities `[n, 2]`) or, for a query tower, the
//! user vector (`[1, DIM]`).
//!
//! A session runs with one intra-op thread; a model keeps one session per
//! worker so concurrent requests do not queue on one lock.

use std::path::Path;

use once_cell::sync::OnceCell;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use parking_lot::Mutex;

use super::schema::Batch;

static ENVIRONMENT: OnceCell<Result<ort::environment::Environment, String>> = OnceCell::new();

/// Loads ONNX Runtime from `library` (once per process; later calls return
/// the first outcome).
pub fn init(library: &Path) -> Result<(), String> {
    ENVIRONMENT
        .get_or_init(|| {
            let path = library.to_path_buf();
            std::panic::catch_unwind(move || -> Result<_, String> {
                if !path.exists() {
                    return Err(format!("{} does not exist", path.display()));
                }
                ort::init_from(&path)
                    .map_err(|e| format!("cannot load {}: {e}", path.display()))?
                    .with_name("recsys")
                    .build()
                    .map_err(|e| format!("ONNX Runtime at {} did not start: {e}", path.display()))
            })
            .unwrap_or_else(|_| Err("ONNX Runtime panicked while loading".into()))
        })
        .as_ref()
        .map(|_| ())
        .map_err(Clone::clone)
}

/// Whether ONNX Runtime is loaded, or why not.
pub fn status() -> Result<(), String> {
    match ENVIRONMENT.get() {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(format!("ONNX Runtime is not available: {e}")),
        None => Err(
            "ONNX Runtime is not loaded: start the module with ORT_LIB /path/to/libonnxruntime.so.1.31.1 (pip install onnxruntime==1.31.1; the library is in onnxruntime/capi/)".into(),
        ),
    }
}

/// One compiled ONNX model.
pub struct OnnxModel {
    sessions: Vec<Mutex<Session>>,
    /// The model inputs that receive the dense and sparse features.
    dense_input: Option<String>,
    sparse_input: Option<String>,
    output: String,
}

/// Binds the model's inputs to the schema's dense and sparse features: by
/// name (`dense`, `sparse`), else by element type when that is unambiguous
/// (one float32 input takes the dense features, e.g. `input` of an XGBoost
/// or scikit-learn export; one int64 input the sparse ones). Every input must
/// be bound, with the width the schema gives.
fn bind_inputs(
    session: &Session,
    dense: usize,
    sparse: usize,
) -> Result<(Option<String>, Option<String>), String> {
    let inputs = session.inputs();
    let named = |n: &str| inputs.iter().find(|i| i.name() == n);
    let of_type = |ty: TensorElementType| {
        let others: Vec<_> = inputs
            .iter()
            .filter(|i| {
                i.name() != "dense" && i.name() != "sparse" && i.dtype().tensor_type() == Some(ty)
            })
            .collect();
        (others.len() == 1).then(|| others[0])
    };
    let dense_in = named("dense").or_else(|| of_type(TensorElementType::Float32));
    let sparse_in = named("sparse").or_else(|| of_type(TensorElementType::Int64));
    for (role, input, ty, width) in [
        ("dense", dense_in, TensorElementType::Float32, dense),
        ("sparse", sparse_in, TensorElementType::Int64, sparse),
    ] {
        match input {
            Some(i) => check_input(i.name(), role, i.dtype(), ty, width)?,
            None if width > 0 => {
                return Err(format!(
                    "the schema declares {width} {} features but the model has no '{role}' input (nor a single {ty:?} input to take them)",
                    role.to_ascii_uppercase()
                ))
            }
            None => {}
        }
    }
    let bound = [dense_in.map(|i| i.name()), sparse_in.map(|i| i.name())];
    if let Some(extra) = inputs.iter().find(|i| !bound.contains(&Some(i.name()))) {
        return Err(format!(
            "model input '{}' ({}) is not one the schema provides: expected 'dense' (float32 [n, {dense}]) and/or 'sparse' (int64 [n, {sparse}])",
            extra.name(),
            describe(extra.dtype())
        ));
    }
    Ok((
        dense_in.map(|i| i.name().to_string()),
        sparse_in.map(|i| i.name().to_string()),
    ))
}

fn describe(t: &ValueType) -> String {
    match (t.tensor_type(), t.tensor_shape()) {
        (Some(ty), Some(shape)) => format!("{ty:?} {shape}"),
        _ => format!("{t:?}"),
    }
}

/// Checks an input declared by the model against what the schema provides
/// for `role` (dense or sparse).
fn check_input(
    name: &str,
    role: &str,
    t: &ValueType,
    ty: TensorElementType,
    width: usize,
) -> Result<(), String> {
    if width == 0 {
        return Err(format!(
            "the model has a '{name}' input ({}) but the schema declares no {} features",
            describe(t),
            role.to_ascii_uppercase()
        ));
    }
    let shape = t.tensor_shape().map(|s| s.to_vec());
    let ok = t.tensor_type() == Some(ty)
        && matches!(shape.as_deref(), Some([_, w]) if *w == -1 || *w == width as i64);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "model input '{name}' is {}, the schema gives {ty:?} [n, {width}]",
            describe(t)
        ))
    }
}

impl OnnxModel {
    /// Compiles `bytes` into `sessions` sessions and checks its inputs
    /// against `dense`/`sparse` feature counts.
    pub fn compile(
        bytes: &[u8],
        dense: usize,
        sparse: usize,
        sessions: usize,
    ) -> Result<OnnxModel, String> {
        status()?;
        let Some(Ok(env)) = ENVIRONMENT.get() else {
            unreachable!("status() checked it");
        };
        let build = || -> Result<Session, String> {
            Session::builder(env)
                .and_then(|b| b.with_intra_threads(1).map_err(Into::into))
                .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
                .and_then(|b| b.with_intra_op_spinning(false).map_err(Into::into))
                .and_then(|b| {
                    b.with_optimization_level(GraphOptimizationLevel::All)
                        .map_err(Into::into)
                })
                .and_then(|mut b| b.commit_from_memory(bytes))
                .map_err(|e| format!("ONNX Runtime refused the model: {e}"))
        };
        let first = build()?;
        let (dense_input, sparse_input) = bind_inputs(&first, dense, sparse)?;
        // The first float32 tensor output (classifier exports put an int64
        // label first and the probabilities second).
        let output = first
            .outputs()
            .iter()
            .find(|o| o.dtype().tensor_type() == Some(TensorElementType::Float32))
            .ok_or_else(|| {
                let all: Vec<String> = first
                    .outputs()
                    .iter()
                    .map(|o| format!("'{}' {}", o.name(), describe(o.dtype())))
                    .collect();
                format!(
                    "the model has no float32 tensor output (outputs: {})",
                    all.join(", ")
                )
            })?
            .name()
            .to_string();
        let mut all = vec![Mutex::new(first)];
        for _ in 1..sessions.max(1) {
            all.push(Mutex::new(build()?));
        }
        Ok(OnnxModel {
            sessions: all,
            dense_input,
            sparse_input,
            output,
        })
    }

    /// Runs one batch; returns the first output flattened and its shape.
    pub fn run(&self, batch: &Batch) -> Result<(Vec<usize>, Vec<f32>), String> {
        let mut session = self.session();
        let err = |e: ort::Error| format!("ONNX Runtime: {e}");
        let dense_shape = [batch.rows, batch.dense_width()];
        let sparse_shape = [batch.rows, batch.sparse_width()];
        let mut inputs: Vec<(std::borrow::Cow<str>, ort::session::SessionInputValue)> = Vec::new();
        if let Some(name) = &self.dense_input {
            let t = TensorRef::from_array_view((dense_shape, &batch.dense[..])).map_err(err)?;
            inputs.push((name.clone().into(), t.into()));
        }
        if let Some(name) = &self.sparse_input {
            let t = TensorRef::from_array_view((sparse_shape, &batch.sparse[..])).map_err(err)?;
            inputs.push((name.clone().into(), t.into()));
        }
        let outputs = session.run(inputs).map_err(err)?;
        let value = outputs
            .get(&self.output)
            .ok_or_else(|| format!("model output '{}' missing", self.output))?;
        let (shape, data) = value.try_extract_tensor::<f32>().map_err(err)?;
        Ok((
            shape.iter().map(|&d| d.max(0) as usize).collect(),
            data.to_vec(),
        ))
    }

    /// A free session if there is one, else waits for the first.
    fn session(&self) -> parking_lot::MutexGuard<'_, Session> {
        let start = thread_slot() % self.sessions.len();
        for i in 0..self.sessions.len() {
            if let Some(g) = self.sessions[(start + i) % self.sessions.len()].try_lock() {
                return g;
            }
        }
        self.sessions[start].lock()
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }
}

/// A small per-thread number, so threads start at different sessions.
fn thread_slot() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed));
    SLOT.with(|s| *s)
}
