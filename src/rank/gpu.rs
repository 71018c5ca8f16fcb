//! The DLRM forward pass on an NVIDIA GPU through cudarc (driver, cuBLAS and
//! NVRTC, all loaded at run time, so this builds and runs without CUDA).
//!
//! [`init`] is called once at module load with the `GPU` argument: `off`
//! never touches CUDA, `auto` uses the first GPU when libcuda, cuBLAS and
//! NVRTC load and falls back to the CPU otherwise, `on` makes their absence
//! an error. `CudaContext::new` panics without libcuda, so the libraries are
//! probed first and the call is guarded.
//!
//! Per call: the batch is copied in, the MLP layers run as cuBLAS SGEMMs
//! followed by a bias + activation kernel, the embedding gather and pairwise
//! interaction run in one kernel (one thread per output value), and the
//! scores are copied back. Calls on one model are serialized on its stream.

use std::sync::Arc;

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use once_cell::sync::OnceCell;
use parking_lot::Mutex;

use super::dlrm::{Dlrm, Linear};
use super::GpuMode;

const KERNELS: &str = r#"
extern "C" __global__ void bias_act(float* y, const float* b, int rows, int cols, int act) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * cols) return;
    float v = y[i] + b[i % cols];
    if (act == 1) v = fmaxf(v, 0.0f);
    else if (act == 2) v = 1.0f / (1.0f + expf(-v));
    y[i] = v;
}

extern "C" __global__ void interact(const float* bottom, const float* tables,
        const long long* offsets, const long long* table_rows, const long long* sparse,
        float* out, int n, int s, int d, int has_bottom, int width) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * width) return;
    int r = (int)(i / width), c = (int)(i % width);
    if (has_bottom && c < d) { out[i] = bottom[(long long)r * d + c]; return; }
    int p = c - (has_bottom ? d : 0);
    int a = 1;
    while (p >= a) { p -= a; a++; }
    int vec[2] = {a, p};
    const float* v[2];
    for (int k = 0; k < 2; k++) {
        int x = vec[k];
        if (has_bottom && x == 0) { v[k] = bottom + (long long)r * d; continue; }
        int t = x - (has_bottom ? 1 : 0);
        long long id = sparse[(long long)r * s + t];
        if (id < 0) id = 0;
        if (id >= table_rows[t]) id = table_rows[t] - 1;
        v[k] = tables + (offsets[t] + id) * d;
    }
    float acc = 0.0f;
    for (int j = 0; j < d; j++) acc += v[0][j] * v[1][j];
    out[i] = acc;
}
"#;

/// The GPU this process uses.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    name: String,
    bias_act: CudaFunction,
    interact: CudaFunction,
}

static DEVICE: OnceCell<Option<Arc<Gpu>>> = OnceCell::new();

/// Starts (or not) the GPU. Returns the line to log; an error only for
/// `GPU on` without a usable GPU.
pub fn init(mode: GpuMode) -> Result<String, String> {
    if mode == GpuMode::Off {
        let _ = DEVICE.set(None);
        return Ok("GPU off: DLRM models run on the CPU".into());
    }
    match open() {
        Ok(gpu) => {
            let line = format!("DLRM models run on GPU 0 ({})", gpu.name);
            let _ = DEVICE.set(Some(Arc::new(gpu)));
            Ok(line)
        }
        Err(why) => {
            let _ = DEVICE.set(None);
            if mode == GpuMode::On {
                Err(format!("GPU on, but no usable GPU: {why}"))
            } else {
                Ok(format!("no usable GPU ({why}): DLRM models run on the CPU"))
            }
        }
    }
}

/// The GPU in use, if any.
pub fn device() -> Option<Arc<Gpu>> {
    DEVICE.get().cloned().flatten()
}

fn open() -> Result<Gpu, String> {
    // SAFETY: these only try to dlopen the libraries.
    let present = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            cudarc::cublas::sys::is_culib_present(),
            cudarc::nvrtc::sys::is_culib_present(),
        )
    };
    match present {
        (false, _, _) => return Err("libcuda (the NVIDIA driver) not found".into()),
        (_, false, _) => return Err("libcublas not found".into()),
        (_, _, false) => return Err("libnvrtc not found".into()),
        _ => {}
    }
    std::panic::catch_unwind(|| -> Result<Gpu, String> {
        let ctx = CudaContext::new(0).map_err(|e| format!("cannot open GPU 0: {e:?}"))?;
        // Each model works on its own stream and synchronizes it before
        // returning, so cross-stream event tracking is pure overhead.
        // SAFETY: no slice is shared between streams (see above).
        unsafe { ctx.disable_event_tracking() };
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let ptx = cudarc::nvrtc::compile_ptx(KERNELS).map_err(|e| format!("NVRTC: {e:?}"))?;
        let module = ctx
            .load_module(ptx)
            .map_err(|e| format!("loading kernels: {e:?}"))?;
        let f = |n: &str| {
            module
                .load_function(n)
                .map_err(|e| format!("kernel {n}: {e:?}"))
        };
        Ok(Gpu {
            bias_act: f("bias_act")?,
            interact: f("interact")?,
            ctx,
            name,
        })
    })
    .unwrap_or_else(|_| Err("CUDA initialisation panicked".into()))
}

struct DeviceLinear {
    input: usize,
    output: usize,
    weight: CudaSlice<f32>,
    bias: CudaSlice<f32>,
}

/// Device buffers reused by every call: the activations ping-pong between
/// `a` and `b` (each `rows x widest`), the ids live in `ids`.
struct Buffers {
    rows: usize,
    a: CudaSlice<f32>,
    b: CudaSlice<f32>,
    ids: CudaSlice<i64>,
}

struct Stream {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    buffers: Option<Buffers>,
}

/// A DLRM's weights on the GPU.
pub struct GpuDlrm {
    gpu: Arc<Gpu>,
    dim: usize,
    dense: usize,
    tables: CudaSlice<f32>,
    offsets: CudaSlice<i64>,
    table_rows: CudaSlice<i64>,
    sparse_width: usize,
    bottom: Vec<DeviceLinear>,
    top: Vec<DeviceLinear>,
    width: usize,
    /// The widest activation: inputs, any layer's output, the interaction.
    widest: usize,
    sigmoid: bool,
    outputs: usize,
    stream: Mutex<Stream>,
}

/// Copies a DLRM to the GPU when one is in use: `Ok(None)` without a GPU,
/// `Err(why)` when the copy failed (the model then runs on the CPU).
pub fn upload(m: &Dlrm) -> Result<Option<GpuDlrm>, String> {
    let Some(gpu) = device() else {
        return Ok(None);
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| GpuDlrm::new(gpu, m)))
        .unwrap_or_else(|_| Err("CUDA panicked".into()))
        .map(Some)
}

fn err<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("GPU {what}: {e:?}")
}

impl GpuDlrm {
    fn new(gpu: Arc<Gpu>, m: &Dlrm) -> Result<GpuDlrm, String> {
        gpu.ctx.bind_to_thread().map_err(err("context"))?;
        let stream = gpu.ctx.new_stream().map_err(err("stream"))?;
        let blas = CudaBlas::new(stream.clone()).map_err(err("cuBLAS"))?;
        let up = |v: &[f32]| stream.clone_htod(v).map_err(err("copy"));
        let layers = |ls: &[Linear]| -> Result<Vec<DeviceLinear>, String> {
            ls.iter()
                .map(|l| {
                    Ok(DeviceLinear {
                        input: l.input,
                        output: l.output,
                        weight: up(&l.weight)?,
                        bias: up(&l.bias)?,
                    })
                })
                .collect()
        };
        let mut all = Vec::new();
        let mut offsets = Vec::new();
        for t in &m.tables {
            offsets.push((all.len() / m.dim.max(1)) as i64);
            all.extend_from_slice(&t.data);
        }
        if all.is_empty() {
            all.push(0.0);
        }
        let rows: Vec<i64> = m.tables.iter().map(|t| t.rows as i64).collect();
        let ids = |v: &[i64]| {
            stream
                .clone_htod(if v.is_empty() { &[0][..] } else { v })
                .map_err(err("copy"))
        };
        Ok(GpuDlrm {
            dim: m.dim,
            dense: m.dense_inputs,
            tables: up(&all)?,
            offsets: ids(&offsets)?,
            table_rows: ids(&rows)?,
            sparse_width: m.tables.len(),
            bottom: layers(&m.bottom)?,
            top: layers(&m.top)?,
            width: m.interaction_width(),
            widest: m
                .bottom
                .iter()
                .chain(&m.top)
                .map(|l| l.output)
                .chain([m.dense_inputs, m.interaction_width()])
                .max()
                .unwrap_or(1),
            sigmoid: m.sigmoid,
            outputs: m.outputs(),
            stream: Mutex::new(Stream {
                stream,
                blas,
                buffers: None,
            }),
            gpu,
        })
    }

    pub fn device_name(&self) -> &str {
        &self.gpu.name
    }

    /// `y = act(x · Wᵀ + b)` for `n` rows (x and y may be longer).
    fn linear(
        &self,
        s: &Stream,
        l: &DeviceLinear,
        n: usize,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        act: i32,
    ) -> Result<(), String> {
        let cfg = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_T,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: l.output as i32,
            n: n as i32,
            k: l.input as i32,
            alpha: 1.0f32,
            lda: l.input as i32,
            ldb: l.input as i32,
            beta: 0.0f32,
            ldc: l.output as i32,
        };
        // SAFETY: W is out x in row-major (= in x out column-major, read
        // transposed), x holds n x in row-major (= in x n column-major), y
        // holds n x out row-major (= out x n column-major); the buffers are
        // at least that long (rows x widest).
        unsafe { s.blas.gemm(cfg, &l.weight, x, y) }.map_err(err("SGEMM"))?;
        let (rows, cols) = (n as i32, l.output as i32);
        let mut launch = s.stream.launch_builder(&self.gpu.bias_act);
        launch.arg(y).arg(&l.bias).arg(&rows).arg(&cols).arg(&act);
        // SAFETY: the kernel touches rows*cols values of y and cols of b.
        unsafe { launch.launch(LaunchConfig::for_num_elems((n * l.output) as u32)) }
            .map_err(err("kernel"))?;
        Ok(())
    }

    /// Same contract as [`Dlrm::forward`].
    pub fn forward(&self, rows: usize, dense: &[f32], sparse: &[i64]) -> Result<Vec<f32>, String> {
        let mut guard = self.stream.lock();
        let s = &mut *guard;
        // Worker threads take turns: make this model's context current here.
        self.gpu.ctx.bind_to_thread().map_err(err("context"))?;
        if rows == 0 {
            return Ok(Vec::new());
        }
        let n = rows;
        if s.buffers.as_ref().is_none_or(|b| b.rows < n) {
            let cap = n.next_power_of_two().max(256);
            // SAFETY: every value is written (copy, GEMM with beta 0, the
            // interaction kernel) before it is read.
            let alloc = |len: usize| unsafe { s.stream.alloc::<f32>(len) }.map_err(err("alloc"));
            s.buffers = Some(Buffers {
                rows: cap,
                a: alloc(cap * self.widest)?,
                b: alloc(cap * self.widest)?,
                ids: unsafe { s.stream.alloc::<i64>(cap * self.sparse_width.max(1)) }
                    .map_err(err("alloc"))?,
            });
        }
        let mut buf = s.buffers.take().ok_or("GPU buffers missing")?;
        let result = self.run_on(s, &mut buf, rows, dense, sparse);
        s.buffers = Some(buf);
        result
    }

    fn run_on(
        &self,
        s: &Stream,
        buf: &mut Buffers,
        n: usize,
        dense: &[f32],
        sparse: &[i64],
    ) -> Result<Vec<f32>, String> {
        if self.dense > 0 {
            s.stream
                .memcpy_htod(dense, &mut buf.a)
                .map_err(err("copy"))?;
        }
        if self.sparse_width > 0 {
            s.stream
                .memcpy_htod(sparse, &mut buf.ids)
                .map_err(err("copy"))?;
        }
        for l in &self.bottom {
            self.linear(s, l, n, &buf.a, &mut buf.b, 1)?;
            std::mem::swap(&mut buf.a, &mut buf.b);
        }
        let (ni, si, di, hb, wi) = (
            n as i32,
            self.sparse_width as i32,
            self.dim as i32,
            i32::from(!self.bottom.is_empty()),
            self.width as i32,
        );
        let mut launch = s.stream.launch_builder(&self.gpu.interact);
        launch
            .arg(&buf.a)
            .arg(&self.tables)
            .arg(&self.offsets)
            .arg(&self.table_rows)
            .arg(&buf.ids)
            .arg(&mut buf.b)
            .arg(&ni)
            .arg(&si)
            .arg(&di)
            .arg(&hb)
            .arg(&wi);
        // SAFETY: the buffers hold n rows of the widths the kernel indexes.
        unsafe { launch.launch(LaunchConfig::for_num_elems((n * self.width) as u32)) }
            .map_err(err("kernel"))?;
        std::mem::swap(&mut buf.a, &mut buf.b);
        let last = self.top.len() - 1;
        for (i, l) in self.top.iter().enumerate() {
            let act = if i < last {
                1
            } else if self.sigmoid {
                2
            } else {
                0
            };
            self.linear(s, l, n, &buf.a, &mut buf.b, act)?;
            std::mem::swap(&mut buf.a, &mut buf.b);
        }
        let mut out = vec![0f32; n * self.outputs];
        s.stream
            .memcpy_dtoh(&buf.a.slice(..n * self.outputs), &mut out)
            .map_err(err("copy back"))?;
        s.stream.synchronize().map_err(err("synchronize"))?;
        Ok(out)
    }
}
