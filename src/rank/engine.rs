//! What runs a model once it is built: the native DLRM (its CPU copy and,
//! when a GPU is in use, its device copy), an ONNX Runtime session pool, or
//! the sequence tower; and the dispatch of one batch to it, with the GPU's
//! failures served by the CPU copy and counted.

use super::dlrm::Dlrm;
use super::gpu;
use super::onnx::OnnxModel;
use super::schema::Batch;
use super::sequence::SequenceTower;
use super::{settings, ModelStats};

/// The runnable part of a model (the spec and schema stay in `Model`).
pub(super) enum Engine {
    Native {
        cpu: Box<Dlrm>,
        /// The GPU copy; `Err` says why the model stayed on the CPU
        /// although a GPU is in use.
        gpu: Result<Option<Box<gpu::GpuDlrm>>, String>,
    },
    Onnx(OnnxModel),
    Sequence(Box<SequenceTower>),
}

impl Engine {
    /// Where it runs: "cpu", "gpu (name)", "cpu (the GPU copy failed: why)"
    /// or "onnxruntime cpu, n sessions".
    pub(super) fn device(&self) -> String {
        match self {
            Engine::Native {
                gpu: Ok(Some(g)), ..
            } => format!("gpu ({})", g.device_name()),
            Engine::Native { gpu: Ok(None), .. } => "cpu".into(),
            Engine::Native { gpu: Err(e), .. } => format!("cpu (the GPU copy failed: {e})"),
            Engine::Onnx(m) => format!("onnxruntime cpu, {} sessions", m.sessions()),
            Engine::Sequence(_) => "cpu".into(),
        }
    }

    /// Runs a checked batch of model `name`: the output's shape and values.
    /// The GPU takes batches of at least `gpu_min_rows` rows.
    pub(super) fn run(
        &self,
        name: &str,
        batch: &Batch,
        stats: &ModelStats,
    ) -> Result<(Vec<usize>, Vec<f32>), String> {
        match self {
            Engine::Native { cpu, gpu } => {
                let on_gpu = match gpu {
                    Ok(Some(g)) if batch.rows >= settings().gpu_min_rows => {
                        Some(g.forward(batch.rows, &batch.dense, &batch.sparse))
                    }
                    _ => None,
                };
                let on_cpu = || {
                    cpu.forward_external(batch.rows, &batch.dense, &batch.sparse, &batch.external)
                };
                let out = match on_gpu {
                    Some(Ok(out)) => out,
                    // A GPU failure (out of memory, a lost device) is served
                    // by the CPU copy, and counted.
                    Some(Err(_)) => {
                        stats.count(|s| &s.gpu_fallbacks, 1);
                        on_cpu()
                    }
                    None => on_cpu(),
                };
                Ok((vec![batch.rows, cpu.outputs()], out))
            }
            Engine::Onnx(m) => m.run(batch),
            Engine::Sequence(_) => Err(format!(
                "model '{name}' is a SEQUENCE model: it reads recent items and scores no batch"
            )),
        }
    }
}
