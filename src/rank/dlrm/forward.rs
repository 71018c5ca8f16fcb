//! The DLRM's CPU forward pass, in chunks of [`CHUNK`] rows: through the
//! AVX-512 kernels on weights packed at load ([`crate::rank::kernels`]), or
//! through `matrixmultiply` on CPUs without them. Scratch buffers live per
//! thread (the AVX-512 path) or per call (the portable one).

use super::{Dlrm, Linear, Packed};
use crate::aligned::Aligned;

/// Rows per forward chunk: bounds the scratch memory of huge batches.
const CHUNK: usize = 128;

impl Dlrm {
    /// Scores `rows` rows: `dense` is `[rows, #DENSE]`, `sparse` `[rows,
    /// #tables]`. Returns `[rows, outputs]`.
    pub fn forward(&self, rows: usize, dense: &[f32], sparse: &[i64]) -> Vec<f32> {
        self.forward_on(self.packed.as_ref(), rows, dense, sparse, &[])
    }

    /// [`Dlrm::forward`] with the rows of the external tables
    /// ([`crate::rank::schema::Batch::external`]).
    pub fn forward_external(
        &self,
        rows: usize,
        dense: &[f32],
        sparse: &[i64],
        external: &[Vec<f32>],
    ) -> Vec<f32> {
        self.forward_on(self.packed.as_ref(), rows, dense, sparse, external)
    }

    /// [`Dlrm::forward`] through `matrixmultiply` even where the AVX-512
    /// kernels could run (tests compare the two).
    pub fn forward_portable(&self, rows: usize, dense: &[f32], sparse: &[i64]) -> Vec<f32> {
        self.forward_on(None, rows, dense, sparse, &[])
    }

    fn forward_on(
        &self,
        packed: Option<&Packed>,
        rows: usize,
        dense: &[f32],
        sparse: &[i64],
        external: &[Vec<f32>],
    ) -> Vec<f32> {
        let (dw, sw, outs) = (self.dense_inputs, self.tables.len(), self.outputs());
        let mut out = vec![0f32; rows * outs];
        let mut scratch = Scratch::default();
        let mut start = 0;
        while start < rows {
            let n = CHUNK.min(rows - start);
            let chunk_out = &mut out[start * outs..(start + n) * outs];
            let input = Inputs {
                dense: &dense[start * dw..(start + n) * dw],
                sparse: &sparse[start * sw..(start + n) * sw],
                first: start,
                external,
            };
            match packed {
                #[cfg(target_arch = "x86_64")]
                Some(p) => PACKED_SCRATCH.with_borrow_mut(|s| {
                    // SAFETY: `Packed` exists only where the CPU has AVX-512F.
                    unsafe { self.forward_chunk_packed(p, n, input, chunk_out, s) }
                }),
                _ => self.forward_chunk(n, input, chunk_out, &mut scratch),
            }
            start += n;
        }
        out
    }

    fn forward_chunk(&self, n: usize, input: Inputs, out: &mut [f32], s: &mut Scratch) {
        let Inputs { dense, sparse, .. } = input;
        let d = self.dim;
        // Bottom MLP.
        s.a.clear();
        s.a.extend_from_slice(dense);
        for layer in &self.bottom {
            linear(layer, n, &s.a, &mut s.b, true);
            std::mem::swap(&mut s.a, &mut s.b);
        }
        let has_bottom = !self.bottom.is_empty();
        // Interaction: [bottom output, pairwise dots].
        let width = self.interaction_width();
        s.b.clear();
        s.b.resize(n * width, 0.0);
        let sw = self.tables.len();
        let mut vectors: Vec<&[f32]> = Vec::with_capacity(sw + 1);
        for r in 0..n {
            vectors.clear();
            let row = &mut s.b[r * width..(r + 1) * width];
            let mut k = 0;
            if has_bottom {
                let bottom = &s.a[r * d..(r + 1) * d];
                row[..d].copy_from_slice(bottom);
                vectors.push(bottom);
                k = d;
            }
            for t in 0..sw {
                vectors.push(self.table_row(
                    t,
                    sparse[r * sw + t],
                    input.first + r,
                    input.external,
                ));
            }
            for i in 1..vectors.len() {
                for j in 0..i {
                    row[k] = dot(vectors[i], vectors[j]);
                    k += 1;
                }
            }
        }
        std::mem::swap(&mut s.a, &mut s.b);
        // Top MLP.
        let last = self.top.len() - 1;
        for (i, layer) in self.top.iter().enumerate() {
            linear(layer, n, &s.a, &mut s.b, i < last);
            std::mem::swap(&mut s.a, &mut s.b);
        }
        self.write_output(&s.a, out);
    }

    /// The top MLP's last activations into `out`: through the sigmoid for
    /// rankers, as they are for query towers.
    fn write_output(&self, top: &[f32], out: &mut [f32]) {
        if self.sigmoid {
            for (o, &x) in out.iter_mut().zip(top) {
                *o = 1.0 / (1.0 + (-x).exp());
            }
        } else {
            out.copy_from_slice(&top[..out.len()]);
        }
    }

    /// One chunk through the AVX-512 kernels: every layer writes its
    /// activations (bias and ReLU fused) straight into the next one's input,
    /// the bottom output lands in place in the interaction rows.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn forward_chunk_packed(
        &self,
        p: &Packed,
        n: usize,
        input: Inputs,
        out: &mut [f32],
        s: &mut PackedScratch,
    ) {
        let Inputs { dense, sparse, .. } = input;
        let d = self.dim;
        let width = self.interaction_width();
        let widest = self
            .bottom
            .iter()
            .chain(&self.top)
            .map(|l| l.output)
            .chain([width])
            .max()
            .unwrap_or(width);
        for buf in [&mut s.a, &mut s.b] {
            if buf.len() < n * widest {
                buf.resize_zeroed(n * widest);
            }
        }
        // Bottom MLP: the first layer reads the dense features in place;
        // every layer's output ends up in `s.a`.
        for (i, layer) in p.bottom.iter().enumerate() {
            if i == 0 {
                layer.forward(n, dense, &mut s.a, true);
            } else {
                layer.forward(n, &s.a, &mut s.b, true);
                std::mem::swap(&mut s.a, &mut s.b);
            }
        }
        // Interaction rows into `s.b`: [bottom output, pairwise dots].
        let has_bottom = !p.bottom.is_empty();
        let sw = self.tables.len();
        let mut vectors: Vec<*const f32> = Vec::with_capacity(sw + 1);
        for r in 0..n {
            vectors.clear();
            let row = &mut s.b[r * width..(r + 1) * width];
            let mut k = 0;
            if has_bottom {
                let b = &s.a[r * d..(r + 1) * d];
                row[..d].copy_from_slice(b);
                vectors.push(b.as_ptr());
                k = d;
            }
            for t in 0..sw {
                let v = self.table_row(t, sparse[r * sw + t], input.first + r, input.external);
                vectors.push(v.as_ptr());
            }
            crate::rank::kernels::interact(&vectors, d, &mut row[k..]);
        }
        std::mem::swap(&mut s.a, &mut s.b);
        // Top MLP.
        let last = p.top.len() - 1;
        for (i, layer) in p.top.iter().enumerate() {
            layer.forward(n, &s.a, &mut s.b, i < last);
            std::mem::swap(&mut s.a, &mut s.b);
        }
        self.write_output(&s.a, out);
    }
}

/// One chunk's inputs: its dense and sparse values, and where its rows of
/// the external tables are (the batch's rows from `first` on).
#[derive(Clone, Copy)]
struct Inputs<'a> {
    dense: &'a [f32],
    sparse: &'a [i64],
    first: usize,
    external: &'a [Vec<f32>],
}

#[derive(Default)]
struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

/// The AVX-512 path's activations, kept per thread between calls (no
/// allocation, no fresh pages per call) and aligned like the tables.
#[derive(Default)]
struct PackedScratch {
    a: Aligned<f32>,
    b: Aligned<f32>,
}

thread_local! {
    static PACKED_SCRATCH: std::cell::RefCell<PackedScratch> = Default::default();
}

/// A dot product in 8 lanes (one sequential sum would not vectorize).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorize.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y[n, out] = x[n, in] · Wᵀ + b`, then ReLU when asked.
fn linear(l: &Linear, n: usize, x: &[f32], y: &mut Vec<f32>, relu: bool) {
    y.clear();
    y.reserve(n * l.output);
    for _ in 0..n {
        y.extend_from_slice(&l.bias);
    }
    // SAFETY: x is n x in (row-major), weight is out x in read as its
    // transpose (in x out: row stride 1, column stride in), y is n x out; all
    // slices have exactly these sizes.
    unsafe {
        matrixmultiply::sgemm(
            n,
            l.input,
            l.output,
            1.0,
            x.as_ptr(),
            l.input as isize,
            1,
            l.weight.as_ptr(),
            1,
            l.input as isize,
            1.0,
            y.as_mut_ptr(),
            l.output as isize,
            1,
        );
    }
    if relu {
        y.iter_mut().for_each(|v| *v = v.max(0.0));
    }
}
