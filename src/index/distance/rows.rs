//! Distances from one query to [`ROWS`] stored rows at once: the exact
//! scan's kernel. One row at a time, a 64-d distance is four FMAs and then
//! a horizontal sum whose shuffles and adds form a chain longer than the
//! FMAs; here the eight rows' sums are reduced together (their lanes
//! transposed into one register), so the reduction costs about a sixth per
//! row.
//!
//! Each result is bit for bit what the one-row kernel ([`super::avx512`]
//! `dot_impl` / `l2sq_impl`) gives for that row: the same accumulators,
//! and the reduction adds the same pairs in the same order as
//! `_mm512_reduce_add_ps`. So a slot scores the same whether a scan or a
//! graph walk reaches it.

/// Rows per call.
pub(crate) const ROWS: usize = 8;

/// The one-row fallback: `ROWS` distances from the one-row kernel `dist`
/// (starting at slot `first`), for stores and CPUs without a row kernel.
#[inline(always)]
pub(crate) fn each_row(first: u32, dist: impl Fn(u32) -> f32) -> [f32; ROWS] {
    std::array::from_fn(|i| dist(first + i as u32))
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::ROWS;

    /// One accumulation step: `acc + q * r` (dot) or `acc + (q - r)^2`
    /// (L2), as the one-row kernels compute it.
    #[inline(always)]
    unsafe fn step<const L2: bool>(q: __m512, r: __m512, acc: __m512) -> __m512 {
        if L2 {
            let d = _mm512_sub_ps(q, r);
            _mm512_fmadd_ps(d, d, acc)
        } else {
            _mm512_fmadd_ps(q, r, acc)
        }
    }

    /// The dot products (`L2` false) or squared distances (`L2` true)
    /// from `q` to the `ROWS` rows in `rows`, row `r` starting at word
    /// `r * stride` and `q.len()` long.
    ///
    /// # Panics
    /// When `rows` is shorter than the last row's end.
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    pub(crate) unsafe fn rows_impl<const L2: bool>(
        q: &[f32],
        rows: &[f32],
        stride: usize,
    ) -> [f32; ROWS] {
        let n = q.len();
        assert!(rows.len() >= (ROWS - 1) * stride + n, "rows past the block");
        let (pq, pr) = (q.as_ptr(), rows.as_ptr());
        // Two accumulators per row, filled as dot_impl / l2sq_impl fill
        // theirs: 32-float steps, then one of 16, then a masked tail.
        let mut acc0 = [_mm512_setzero_ps(); ROWS];
        let mut acc1 = [_mm512_setzero_ps(); ROWS];
        let mut i = 0;
        while i + 32 <= n {
            let (q0, q1) = (_mm512_loadu_ps(pq.add(i)), _mm512_loadu_ps(pq.add(i + 16)));
            for r in 0..ROWS {
                let p = pr.add(r * stride + i);
                acc0[r] = step::<L2>(q0, _mm512_loadu_ps(p), acc0[r]);
                acc1[r] = step::<L2>(q1, _mm512_loadu_ps(p.add(16)), acc1[r]);
            }
            i += 32;
        }
        if i + 16 <= n {
            let q0 = _mm512_loadu_ps(pq.add(i));
            for (r, acc) in acc0.iter_mut().enumerate() {
                *acc = step::<L2>(q0, _mm512_loadu_ps(pr.add(r * stride + i)), *acc);
            }
            i += 16;
        }
        if i < n {
            let mask: __mmask16 = (1u32 << (n - i)) as u16 - 1;
            let q1 = _mm512_maskz_loadu_ps(mask, pq.add(i));
            for (r, acc) in acc1.iter_mut().enumerate() {
                let row = _mm512_maskz_loadu_ps(mask, pr.add(r * stride + i));
                *acc = step::<L2>(q1, row, *acc);
            }
        }
        let v: [__m512; ROWS] = std::array::from_fn(|r| _mm512_add_ps(acc0[r], acc1[r]));
        reduce8(&v)
    }

    /// The sums of eight 16-lane vectors, each added as
    /// `_mm512_reduce_add_ps` adds: lanes `j` and `j + 8`, then `j` and
    /// `j + 4`, then `j` and `j + 2`, then the last two.
    #[inline(always)]
    unsafe fn reduce8(v: &[__m512; ROWS]) -> [f32; ROWS] {
        // [a lanes 0-7 + 8-15, b lanes 0-7 + 8-15]: the 256-bit halves.
        let halves = |a: __m512, b: __m512| {
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
            )
        };
        let (x01, x23) = (halves(v[0], v[1]), halves(v[2], v[3]));
        let (x45, x67) = (halves(v[4], v[5]), halves(v[6], v[7]));
        // Four rows per register, one per 128-bit lane: j + (j + 4).
        let quarters = |a: __m512, b: __m512| {
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
            )
        };
        let (y0, y1) = (quarters(x01, x23), quarters(x45, x67));
        // Within each lane: j + (j + 2), then element 0 + element 1.
        let last = |y: __m512| {
            let z = _mm512_add_ps(y, _mm512_permute_ps::<0b01_00_11_10>(y));
            _mm512_add_ps(z, _mm512_movehdup_ps(z))
        };
        let mut lanes = [0f32; 32];
        _mm512_storeu_ps(lanes.as_mut_ptr(), last(y0));
        _mm512_storeu_ps(lanes.as_mut_ptr().add(16), last(y1));
        std::array::from_fn(|r| lanes[r * 4])
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::index::distance::avx512::{dot_impl, l2sq_impl};

    #[test]
    fn eight_rows_equal_the_one_row_kernels_bit_for_bit() {
        if !std::is_x86_feature_detected!("avx512f") {
            return;
        }
        let mut seed = 0x9e37_79b9u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed % 20_000) as f32 / 10_000.0 - 1.0
        };
        for dim in [1, 7, 15, 16, 17, 31, 32, 33, 48, 64, 100, 128, 300] {
            let stride = dim + 5;
            let q: Vec<f32> = (0..dim).map(|_| next()).collect();
            let rows: Vec<f32> = (0..ROWS * stride).map(|_| next()).collect();
            // SAFETY: AVX-512F was detected above.
            let (dots, l2s) = unsafe {
                (
                    avx512::rows_impl::<false>(&q, &rows, stride),
                    avx512::rows_impl::<true>(&q, &rows, stride),
                )
            };
            for r in 0..ROWS {
                let row = &rows[r * stride..r * stride + dim];
                // SAFETY: as above.
                let (dot, l2) = unsafe { (dot_impl(&q, row), l2sq_impl(&q, row)) };
                assert_eq!(dots[r].to_bits(), dot.to_bits(), "dot, dim {dim}, row {r}");
                assert_eq!(l2s[r].to_bits(), l2.to_bits(), "l2, dim {dim}, row {r}");
            }
        }
    }
}
