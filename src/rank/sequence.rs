//! The sequence tower: a user's recent items (newest first, as their
//! catalog vectors) to a vector in the catalog's item space, so the index
//! serves it. One attention block in the manner of SASRec, read out at the
//! newest item:
//!
//! ```text
//! x_j = v_j·W_in + P_j                 j = 0 (newest) .. n-1, n <= L
//! a   = softmax_j((x_0·W_q)·(x_j·W_k) / sqrt(h))
//! y   = x_0 + Σ_j a_j (x_j·W_v)
//! y   = y + relu(y·W_1 + b_1)·W_2 + b_2
//! q   = y·W_out
//! ```
//!
//! It reads item vectors, never item ids, so it needs no vocabulary: items
//! added after training and users created a minute ago are served without
//! retraining. `recsys train` fits it with candle on the same equations
//! (`cli/src/train/sequence.rs`); this is the forward pass the module runs
//! (about `n·d·h + 3·h² + 2·n·h + 2·h·f + h·d` multiply-adds: 0.24M for
//! 50 items at 64 dimensions, hidden 64, feed-forward 128).

use safetensors::SafeTensors;

use super::dlrm::{dot, f32_tensor};

/// A row-major matrix.
#[derive(Debug, Clone, PartialEq)]
struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl Matrix {
    /// `out = x·self` for a row vector `x` (`rows` long).
    fn apply(&self, x: &[f32], out: &mut [f32]) {
        out.fill(0.0);
        self.add_apply(x, out);
    }

    /// `out += x·self` (`out` at least `cols` long; the rest is untouched):
    /// a row-scaled sum the compiler vectorizes, built for the widest FMA
    /// the CPU has.
    fn add_apply(&self, x: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the feature was detected.
                return unsafe { self.add_apply_avx512(x, out) };
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the features were detected.
                return unsafe { self.add_apply_avx2(x, out) };
            }
        }
        self.add_apply_portable(x, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn add_apply_avx512(&self, x: &[f32], out: &mut [f32]) {
        self.rows_scaled::<true>(x, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn add_apply_avx2(&self, x: &[f32], out: &mut [f32]) {
        self.rows_scaled::<true>(x, out)
    }

    fn add_apply_portable(&self, x: &[f32], out: &mut [f32]) {
        self.rows_scaled::<false>(x, out)
    }

    /// `out += Σ_r x_r · row_r`; `FUSED` only where the CPU has FMA (else
    /// `mul_add` is a library call).
    #[inline(always)]
    fn rows_scaled<const FUSED: bool>(&self, x: &[f32], out: &mut [f32]) {
        let out = &mut out[..self.cols];
        for (xi, row) in x.iter().zip(self.data.chunks_exact(self.cols)) {
            for (o, w) in out.iter_mut().zip(row) {
                *o = if FUSED {
                    xi.mul_add(*w, *o)
                } else {
                    *o + xi * w
                };
            }
        }
    }

    /// The transpose.
    fn transposed(&self) -> Matrix {
        let mut data = vec![0f32; self.data.len()];
        for (r, row) in self.data.chunks_exact(self.cols).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                data[c * self.rows + r] = v;
            }
        }
        Matrix {
            rows: self.cols,
            cols: self.rows,
            data,
        }
    }
}

/// The tower's weights.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceTower {
    w_in: Matrix,
    pos: Matrix,
    w_q: Matrix,
    /// W_k transposed: a logit's `W_k·q` is then a row-scaled sum.
    w_k_t: Matrix,
    w_v: Matrix,
    w_1: Matrix,
    b_1: Vec<f32>,
    w_2: Matrix,
    b_2: Vec<f32>,
    w_out: Matrix,
}

impl SequenceTower {
    /// Reads safetensors weights for item vectors of `dim` dimensions,
    /// checking every shape.
    pub fn from_safetensors(bytes: &[u8], dim: usize) -> Result<SequenceTower, String> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| format!("sequence tower weights are not valid safetensors: {e}"))?;
        let get = |name: &str| -> Result<Matrix, String> {
            let (shape, data) = f32_tensor(&st, "sequence tower", name)?;
            let (rows, cols) = match shape[..] {
                [r, c] => (r, c),
                [c] => (1, c),
                _ => {
                    return Err(format!(
                        "sequence tower tensor '{name}' has shape {shape:?}"
                    ))
                }
            };
            Ok(Matrix { rows, cols, data })
        };
        let t = SequenceTower {
            w_in: get("w_in")?,
            pos: get("pos")?,
            w_q: get("w_q")?,
            w_k_t: get("w_k")?,
            w_v: get("w_v")?,
            w_1: get("w_1")?,
            b_1: get("b_1")?.data,
            w_2: get("w_2")?,
            b_2: get("b_2")?.data,
            w_out: get("w_out")?,
        };
        let h = t.w_in.cols;
        let f = t.w_1.cols;
        let expect = [
            ("w_in", &t.w_in, dim, h),
            ("pos", &t.pos, t.pos.rows, h),
            ("w_q", &t.w_q, h, h),
            ("w_k", &t.w_k_t, h, h),
            ("w_v", &t.w_v, h, h),
            ("w_1", &t.w_1, h, f),
            ("w_2", &t.w_2, f, h),
            ("w_out", &t.w_out, h, dim),
        ];
        for (name, m, rows, cols) in expect {
            if (m.rows, m.cols) != (rows, cols) || rows == 0 || cols == 0 {
                return Err(format!(
                    "sequence tower tensor '{name}' is {}x{}, expected {rows}x{cols} (item vectors of {dim} dimensions, hidden {h}, feed-forward {f})",
                    m.rows, m.cols
                ));
            }
        }
        if t.b_1.len() != f || t.b_2.len() != h {
            return Err("sequence tower biases b_1/b_2 do not match w_1/w_2".into());
        }
        Ok(SequenceTower {
            w_k_t: t.w_k_t.transposed(),
            ..t
        })
    }

    /// Item vectors' dimension.
    pub fn dim(&self) -> usize {
        self.w_in.rows
    }

    /// Most recent items it reads.
    pub fn positions(&self) -> usize {
        self.pos.rows
    }

    /// Multiply-adds of one call on `n` items.
    pub fn multiply_adds(&self, n: usize) -> usize {
        let (d, h, f) = (self.dim(), self.w_in.cols, self.w_1.cols);
        let n = n.min(self.positions());
        n * d * h + 3 * h * h + 2 * n * h + 2 * h * f + h * d
    }

    /// The query vector for `recent` (newest first; items past
    /// [`SequenceTower::positions`] are ignored); `None` without items.
    ///
    /// Computed as written in the module doc, reassociated so that only the
    /// input projection grows with `n` times `h`: a key's logit is
    /// `x_j·(W_k·q)` and the attention's value `(Σ_j a_j x_j)·W_v`. The
    /// projection is one `matrixmultiply` product; the vector-matrix
    /// products are row-scaled sums built for the CPU's FMA width (`recsys
    /// bench rank`: 50 items at 64 dimensions in 6.5 µs on the 2-core
    /// AVX-512 machine, 21 µs with plain loops).
    pub fn query<'a>(&self, recent: impl IntoIterator<Item = &'a [f32]>) -> Option<Vec<f32>> {
        let (h, d) = (self.w_in.cols, self.dim());
        // The items as the rows of one matrix, projected in one product
        // onto the position rows: x = P[..n] + V·W_in.
        let mut items: Vec<f32> = Vec::with_capacity(self.positions() * d);
        for v in recent.into_iter().take(self.positions()) {
            if v.len() != d {
                return None;
            }
            items.extend_from_slice(v);
        }
        let n = items.len() / d;
        if n == 0 {
            return None;
        }
        let mut x = self.pos.data[..n * h].to_vec();
        // SAFETY: `items` is n x d, `w_in` d x h and `x` n x h, all
        // row-major with the strides given.
        unsafe {
            matrixmultiply::sgemm(
                n,
                d,
                h,
                1.0,
                items.as_ptr(),
                d as isize,
                1,
                self.w_in.data.as_ptr(),
                h as isize,
                1,
                1.0,
                x.as_mut_ptr(),
                h as isize,
                1,
            );
        }
        let x0 = &x[..h];
        let mut q = vec![0f32; h];
        self.w_q.apply(x0, &mut q);
        // u = W_k·q / sqrt(h) = (q / sqrt(h))·W_kᵀ.
        let scale = 1.0 / (h as f32).sqrt();
        q.iter_mut().for_each(|v| *v *= scale);
        let mut u = vec![0f32; h];
        self.w_k_t.apply(&q, &mut u);
        let logits: Vec<f32> = x.chunks_exact(h).map(|xj| dot(xj, &u)).collect();
        let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f32> = logits.iter().map(|l| (l - top).exp()).collect();
        let total: f32 = weights.iter().sum();
        let mut mixed = vec![0f32; h];
        for (xj, w) in x.chunks_exact(h).zip(&weights) {
            let a = w / total;
            mixed.iter_mut().zip(xj).for_each(|(m, x)| *m += a * x);
        }
        let mut y = x0.to_vec();
        self.w_v.add_apply(&mixed, &mut y);
        let mut hidden = self.b_1.clone();
        self.w_1.add_apply(&y, &mut hidden);
        hidden.iter_mut().for_each(|a| *a = a.max(0.0));
        y.iter_mut().zip(&self.b_2).for_each(|(y, b)| *y += b);
        self.w_2.add_apply(&hidden, &mut y);
        let mut out = vec![0f32; self.dim()];
        self.w_out.apply(&y, &mut out);
        out.iter().all(|v| v.is_finite()).then_some(out)
    }
}

/// Safetensors of a tower with weights drawn uniformly from ±`scale`
/// (tests and benchmarks: a tower of a given shape without training).
pub fn random_weights(
    dim: usize,
    hidden: usize,
    feed_forward: usize,
    positions: usize,
    scale: f32,
    seed: u64,
) -> Vec<u8> {
    let mut rng = crate::rng::SplitMix::new(seed);
    let mut t = |name: &str, shape: Vec<usize>| {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| (rng.uniform() as f32 * 2.0 - 1.0) * scale)
            .collect();
        (name.to_string(), shape, data)
    };
    let (d, h, f, l) = (dim, hidden, feed_forward, positions);
    super::dlrm::write_safetensors(&[
        t("w_in", vec![d, h]),
        t("pos", vec![l, h]),
        t("w_q", vec![h, h]),
        t("w_k", vec![h, h]),
        t("w_v", vec![h, h]),
        t("w_1", vec![h, f]),
        t("b_1", vec![f]),
        t("w_2", vec![f, h]),
        t("b_2", vec![h]),
        t("w_out", vec![h, d]),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(d: usize, h: usize, f: usize, l: usize) -> Vec<u8> {
        random_weights(d, h, f, l, 0.5, 3)
    }

    #[test]
    fn shapes_are_checked_and_one_item_attends_to_itself() {
        let bytes = weights(4, 6, 5, 3);
        assert!(SequenceTower::from_safetensors(&bytes, 5)
            .unwrap_err()
            .contains("w_in"));
        let t = SequenceTower::from_safetensors(&bytes, 4).unwrap();
        assert_eq!((t.dim(), t.positions()), (4, 3));
        assert_eq!(t.query(std::iter::empty()), None);
        let v = [0.5f32, -1.0, 2.0, 0.25];
        // One item: the attention weight is 1, so the output is the plain
        // composition of the layers.
        let one = t.query([&v[..]]).unwrap();
        let mut x = vec![0f32; 6];
        t.w_in.apply(&v, &mut x);
        x.iter_mut()
            .zip(&t.pos.data[..6])
            .for_each(|(a, b)| *a += b);
        let mut val = vec![0f32; 6];
        t.w_v.apply(&x, &mut val);
        let mut y: Vec<f32> = x.iter().zip(&val).map(|(a, b)| a + b).collect();
        let mut hid = vec![0f32; 5];
        t.w_1.apply(&y, &mut hid);
        hid.iter_mut()
            .zip(&t.b_1)
            .for_each(|(a, b)| *a = (*a + b).max(0.0));
        let mut back = vec![0f32; 6];
        t.w_2.apply(&hid, &mut back);
        for ((y, b), c) in y.iter_mut().zip(&back).zip(&t.b_2) {
            *y += b + c;
        }
        let mut want = vec![0f32; 4];
        t.w_out.apply(&y, &mut want);
        for (a, b) in one.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5);
        }
        // Items past the positions are ignored; a wrong width is refused.
        let many: Vec<[f32; 4]> = (0..5).map(|i| [i as f32; 4]).collect();
        let first3 = t.query(many.iter().take(3).map(|v| &v[..])).unwrap();
        assert_eq!(t.query(many.iter().map(|v| &v[..])).unwrap(), first3);
        assert_eq!(t.query([&v[..3]]), None);
    }
}
