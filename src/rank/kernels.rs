//! AVX-512 kernels of the native DLRM's CPU forward pass: fully connected
//! layers on weights packed once at load, with the bias and the ReLU fused
//! into the store, and the pairwise-dot interaction with its horizontal sums
//! done 16 at a time.
//!
//! Why our own and not a library: `matrixmultiply` (the portable path, kept
//! for CPUs without AVX-512) and `gemm` both pack both operands on every
//! call, and on these shapes (200 rows, 8-128 wide) packing costs as much as
//! the arithmetic: `matrixmultiply` spends 1.9 µs on the 200 x 8 x 64 layer
//! (53 GFMA/s) and 4.9 µs on 200 x 64 x 1 (2.6 GFMA/s), `gemm` 2.4 and 0.5,
//! on a core whose FMA peak is 144 GFMA/s. Weights never change between
//! calls, so they are packed once here, and the activations are read in
//! place (broadcast from their rows).

use std::arch::x86_64::*;

use super::dlrm::Linear;

/// Outputs per packed panel: two 16-lane registers.
const PANEL: usize = 32;
/// Rows per register tile: 2 x 12 accumulators, 2 weight registers and a
/// broadcast (27 of the 32 registers).
const ROWS: usize = 12;

/// True when this CPU runs the kernels of this module.
pub fn available() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// A layer's weights in panels of [`PANEL`] outputs: panel `p`, input `k`,
/// lane `j` holds `weight[p * 32 + j][k]` (zero past the last output).
#[derive(Debug, Clone)]
pub struct PackedLinear {
    input: usize,
    output: usize,
    weight: Vec<f32>,
    /// Panel `p`, lane `j`: `bias[p * 32 + j]`.
    bias: Vec<f32>,
    /// Narrow layers (the score head): the weights as they are, one dot per
    /// output and row.
    narrow: Option<Linear>,
}

impl PackedLinear {
    pub fn new(l: &Linear) -> PackedLinear {
        if l.output < 4 {
            return PackedLinear {
                input: l.input,
                output: l.output,
                weight: Vec::new(),
                bias: Vec::new(),
                narrow: Some(l.clone()),
            };
        }
        let panels = l.output.div_ceil(PANEL);
        let mut weight = vec![0f32; panels * l.input * PANEL];
        let mut bias = vec![0f32; panels * PANEL];
        for o in 0..l.output {
            let (p, j) = (o / PANEL, o % PANEL);
            bias[p * PANEL + j] = l.bias[o];
            for k in 0..l.input {
                weight[(p * l.input + k) * PANEL + j] = l.weight[o * l.input + k];
            }
        }
        PackedLinear {
            input: l.input,
            output: l.output,
            weight,
            bias,
            narrow: None,
        }
    }

    /// `y[n, out] = relu?(x[n, in] · Wᵀ + b)`.
    ///
    /// # Safety
    /// The CPU has AVX-512F ([`available`]).
    pub unsafe fn forward(&self, n: usize, x: &[f32], y: &mut [f32], relu: bool) {
        assert!(x.len() >= n * self.input && y.len() >= n * self.output);
        if let Some(l) = &self.narrow {
            return narrow(l, n, x, y, relu);
        }
        let mut r = 0;
        while r + ROWS <= n {
            tile::<ROWS>(self, r, x, y, relu);
            r += ROWS;
        }
        match n - r {
            0 => {}
            1 => tile::<1>(self, r, x, y, relu),
            2 => tile::<2>(self, r, x, y, relu),
            3 => tile::<3>(self, r, x, y, relu),
            4 => tile::<4>(self, r, x, y, relu),
            5 => tile::<5>(self, r, x, y, relu),
            6 => tile::<6>(self, r, x, y, relu),
            7 => tile::<7>(self, r, x, y, relu),
            8 => tile::<8>(self, r, x, y, relu),
            9 => tile::<9>(self, r, x, y, relu),
            10 => tile::<10>(self, r, x, y, relu),
            _ => tile::<11>(self, r, x, y, relu),
        }
    }
}

/// The first `n` lanes of a register.
fn lanes(n: usize) -> u16 {
    if n >= 16 {
        u16::MAX
    } else {
        (1u16 << n) - 1
    }
}

/// `MR` rows from `r0`, every panel: accumulators start at the bias, one
/// broadcast of `x[r][k]` feeds two FMAs per row and input.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const MR: usize>(p: &PackedLinear, r0: usize, x: &[f32], y: &mut [f32], relu: bool) {
    let (input, output) = (p.input, p.output);
    let xp = x.as_ptr().add(r0 * input);
    let yp = y.as_mut_ptr().add(r0 * output);
    let zero = _mm512_setzero_ps();
    for panel in 0..output.div_ceil(PANEL) {
        let wp = p.weight.as_ptr().add(panel * input * PANEL);
        let b0 = _mm512_loadu_ps(p.bias.as_ptr().add(panel * PANEL));
        let b1 = _mm512_loadu_ps(p.bias.as_ptr().add(panel * PANEL + 16));
        let mut acc = [[b0, b1]; MR];
        for k in 0..input {
            let w0 = _mm512_loadu_ps(wp.add(k * PANEL));
            let w1 = _mm512_loadu_ps(wp.add(k * PANEL + 16));
            for (i, a) in acc.iter_mut().enumerate() {
                let xb = _mm512_set1_ps(*xp.add(i * input + k));
                a[0] = _mm512_fmadd_ps(xb, w0, a[0]);
                a[1] = _mm512_fmadd_ps(xb, w1, a[1]);
            }
        }
        let col = panel * PANEL;
        let valid = (output - col).min(PANEL);
        let (m0, m1) = (lanes(valid), lanes(valid.saturating_sub(16)));
        for (i, a) in acc.iter().enumerate() {
            let (mut a0, mut a1) = (a[0], a[1]);
            if relu {
                a0 = _mm512_max_ps(a0, zero);
                a1 = _mm512_max_ps(a1, zero);
            }
            let out = yp.add(i * output + col);
            _mm512_mask_storeu_ps(out, m0, a0);
            _mm512_mask_storeu_ps(out.add(16), m1, a1);
        }
    }
}

/// A layer with a few outputs: one dot product per row and output.
#[target_feature(enable = "avx512f")]
unsafe fn narrow(l: &Linear, n: usize, x: &[f32], y: &mut [f32], relu: bool) {
    for r in 0..n {
        let row = x.as_ptr().add(r * l.input);
        for o in 0..l.output {
            let mut v = l.bias[o] + dot(row, l.weight.as_ptr().add(o * l.input), l.input);
            if relu {
                v = v.max(0.0);
            }
            y[r * l.output + o] = v;
        }
    }
}

/// Dot product of two `len`-float arrays.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn dot(a: *const f32, b: *const f32, len: usize) -> f32 {
    _mm512_reduce_add_ps(dot_lanes(a, b, len))
}

/// The 16 partial sums of a dot product (lane `l` sums elements `l mod 16`).
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn dot_lanes(a: *const f32, b: *const f32, len: usize) -> __m512 {
    let mut acc = _mm512_setzero_ps();
    let mut c = 0;
    while c + 16 <= len {
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a.add(c)), _mm512_loadu_ps(b.add(c)), acc);
        c += 16;
    }
    if c < len {
        let m = lanes(len - c);
        acc = _mm512_fmadd_ps(
            _mm512_maskz_loadu_ps(m, a.add(c)),
            _mm512_maskz_loadu_ps(m, b.add(c)),
            acc,
        );
    }
    acc
}

/// Lane `k` of the result is the sum of the 16 lanes of `x[k]`: three
/// rounds of interleave-and-add (32-bit, 64-bit, then 128-bit blocks), 45
/// operations for 16 sums instead of ~10 per sum.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn sum16(x: &[__m512; 16]) -> __m512 {
    let mut y = [_mm512_setzero_ps(); 8];
    for (m, v) in y.iter_mut().enumerate() {
        let (a, b) = (x[2 * m], x[2 * m + 1]);
        // Per 128-bit block: [a, b, a, b] partial sums.
        *v = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    }
    let mut z = [_mm512_setzero_ps(); 4];
    for (m, v) in z.iter_mut().enumerate() {
        let (c, d) = (_mm512_castps_pd(y[2 * m]), _mm512_castps_pd(y[2 * m + 1]));
        // Per 128-bit block: the block's sums of x[4m .. 4m + 4].
        *v = _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(c, d)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(c, d)),
        );
    }
    let w0 = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x88>(z[0], z[1]),
        _mm512_shuffle_f32x4::<0xDD>(z[0], z[1]),
    );
    let w1 = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x88>(z[2], z[3]),
        _mm512_shuffle_f32x4::<0xDD>(z[2], z[3]),
    );
    _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x88>(w0, w1),
        _mm512_shuffle_f32x4::<0xDD>(w0, w1),
    )
}

/// The pairwise dots of `vectors` (each `d` floats), pairs `(i, j)` with
/// `j < i` in row-major order, written to `out`.
///
/// # Safety
/// The CPU has AVX-512F; every pointer in `vectors` reads `d` floats.
#[target_feature(enable = "avx512f")]
pub unsafe fn interact(vectors: &[*const f32], d: usize, out: &mut [f32]) {
    let pairs = vectors.len() * vectors.len().saturating_sub(1) / 2;
    assert!(out.len() >= pairs);
    let mut group = [_mm512_setzero_ps(); 16];
    let (mut filled, mut written) = (0, 0);
    for i in 1..vectors.len() {
        for j in 0..i {
            group[filled] = dot_lanes(vectors[i], vectors[j], d);
            filled += 1;
            if filled == 16 {
                _mm512_storeu_ps(out.as_mut_ptr().add(written), sum16(&group));
                written += 16;
                filled = 0;
            }
        }
    }
    if filled > 0 {
        for g in &mut group[filled..] {
            *g = _mm512_setzero_ps();
        }
        _mm512_mask_storeu_ps(out.as_mut_ptr().add(written), lanes(filled), sum16(&group));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix;

    fn random(n: usize, rng: &mut SplitMix) -> Vec<f32> {
        (0..n).map(|_| rng.normal() as f32).collect()
    }

    #[test]
    fn packed_layers_match_the_plain_product() {
        if !available() {
            eprintln!("no AVX-512 on this CPU: the portable path is tested instead");
            return;
        }
        let mut rng = SplitMix::new(4);
        for (input, output, n) in [
            (8, 64, 200),
            (68, 128, 13),
            (7, 33, 9),
            (64, 1, 5),
            (5, 17, 1),
        ] {
            let l = Linear {
                input,
                output,
                weight: random(input * output, &mut rng),
                bias: random(output, &mut rng),
            };
            let x = random(n * input, &mut rng);
            for relu in [false, true] {
                let mut y = vec![f32::NAN; n * output];
                unsafe { PackedLinear::new(&l).forward(n, &x, &mut y, relu) };
                for r in 0..n {
                    for o in 0..output {
                        let mut want = l.bias[o]
                            + (0..input)
                                .map(|k| x[r * input + k] * l.weight[o * input + k])
                                .sum::<f32>();
                        if relu {
                            want = want.max(0.0);
                        }
                        let got = y[r * output + o];
                        assert!(
                            (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                            "{input}x{output} row {r} out {o}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn interaction_matches_plain_dots() {
        if !available() {
            return;
        }
        let mut rng = SplitMix::new(5);
        for (v, d) in [
            (9, 32),
            (2, 16),
            (7, 20),
            (12, 48),
            (6, 3),
            (1, 32),
            (8, 64),
            (23, 16),
        ] {
            let data = random(v * d, &mut rng);
            let ptrs: Vec<*const f32> = (0..v).map(|i| data[i * d..].as_ptr()).collect();
            let pairs = v * (v - 1) / 2;
            let mut out = vec![f32::NAN; pairs + 3];
            unsafe { interact(&ptrs, d, &mut out) };
            let mut k = 0;
            for i in 1..v {
                for j in 0..i {
                    let want: f32 = (0..d).map(|t| data[i * d + t] * data[j * d + t]).sum();
                    assert!(
                        (out[k] - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "v {v} d {d} pair ({i},{j}): {} vs {want}",
                        out[k]
                    );
                    k += 1;
                }
            }
            assert!(
                out[pairs..].iter().all(|x| x.is_nan()),
                "wrote past the pairs"
            );
        }
    }
}
