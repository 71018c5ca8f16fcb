//! Distance kernels: dot products and squared L2 over `f32` vectors, and the
//! asymmetric `f32 x i8` dot product used by Q8-quantized storage.
//!
//! Each kernel has a portable version (written with independent accumulators so
//! the compiler can vectorize it with whatever the build target allows) and, on
//! x86-64, an AVX2+FMA version chosen once at run time. The choice is stored in a
//! [`Kernels`] table of plain function pointers so the hot loop pays one
//! indirect call per distance, like hnswlib.

pub(crate) mod rows;

/// Function-pointer table of the kernels best suited to this CPU.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub dot: fn(&[f32], &[f32]) -> f32,
    pub l2sq: fn(&[f32], &[f32]) -> f32,
    pub dot_i8: fn(&[f32], &[i8]) -> f32,
    /// AVX2+FMA present: F32 searches may take the fully inlined path.
    pub avx2: bool,
    /// AVX-512F present as well: F32 searches use 16-lane kernels.
    pub avx512: bool,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(kernel_name())
    }
}

/// The kernels for this CPU (AVX2+FMA when present, portable otherwise).
pub fn kernels() -> Kernels {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Kernels {
                dot: avx2::dot,
                l2sq: avx2::l2sq,
                dot_i8: avx2::dot_i8,
                avx2: true,
                avx512: std::is_x86_feature_detected!("avx512f"),
            };
        }
    }
    portable_kernels()
}

/// The portable kernel set.
pub fn portable_kernels() -> Kernels {
    Kernels {
        dot: portable::dot,
        l2sq: portable::l2sq,
        dot_i8: portable::dot_i8,
        avx2: false,
        avx512: false,
    }
}

/// Human-readable name of the kernel set [`kernels`] picks.
pub fn kernel_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            if std::is_x86_feature_detected!("avx512f") {
                return "avx512f (search), avx2+fma";
            }
            return "avx2+fma";
        }
    }
    "portable"
}

/// Portable kernels: 8 independent accumulators let LLVM vectorize them.
pub mod portable {
    const LANES: usize = 8;

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0f32; LANES];
        let chunks = n / LANES;
        for c in 0..chunks {
            let (x, y) = (
                &a[c * LANES..c * LANES + LANES],
                &b[c * LANES..c * LANES + LANES],
            );
            for l in 0..LANES {
                acc[l] += x[l] * y[l];
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for i in chunks * LANES..n {
            sum += a[i] * b[i];
        }
        sum
    }

    pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0f32; LANES];
        let chunks = n / LANES;
        for c in 0..chunks {
            let (x, y) = (
                &a[c * LANES..c * LANES + LANES],
                &b[c * LANES..c * LANES + LANES],
            );
            for l in 0..LANES {
                let d = x[l] - y[l];
                acc[l] += d * d;
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for i in chunks * LANES..n {
            let d = a[i] - b[i];
            sum += d * d;
        }
        sum
    }

    pub fn dot_i8(a: &[f32], b: &[i8]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0f32; LANES];
        let chunks = n / LANES;
        for c in 0..chunks {
            let (x, y) = (
                &a[c * LANES..c * LANES + LANES],
                &b[c * LANES..c * LANES + LANES],
            );
            for l in 0..LANES {
                acc[l] += x[l] * y[l] as f32;
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for i in chunks * LANES..n {
            sum += a[i] * b[i] as f32;
        }
        sum
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
        _mm_cvtss_f32(s)
    }

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: only installed in the kernel table after run-time detection
        // of AVX2 and FMA; slices are bounds-limited to the shorter length.
        unsafe { dot_impl(a, b) }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(crate) unsafe fn dot_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                acc1,
            );
            i += 16;
        }
        if i + 8 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            i += 8;
        }
        let mut sum = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            sum += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        sum
    }

    pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: see `dot`.
        unsafe { l2sq_impl(a, b) }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(crate) unsafe fn l2sq_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            let d0 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
            let d1 = _mm256_sub_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
            );
            acc0 = _mm256_fmadd_ps(d0, d0, acc0);
            acc1 = _mm256_fmadd_ps(d1, d1, acc1);
            i += 16;
        }
        if i + 8 <= n {
            let d0 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
            acc0 = _mm256_fmadd_ps(d0, d0, acc0);
            i += 8;
        }
        let mut sum = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            let d = *pa.add(i) - *pb.add(i);
            sum += d * d;
            i += 1;
        }
        sum
    }

    pub fn dot_i8(a: &[f32], b: &[i8]) -> f32 {
        // SAFETY: see `dot`.
        unsafe { dot_i8_impl(a, b) }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(crate) unsafe fn dot_i8_impl(a: &[f32], b: &[i8]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            let codes = _mm_loadu_si128(pb.add(i) as *const __m128i);
            let lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(codes));
            let hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(codes, 8)));
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), lo, acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), hi, acc1);
            i += 16;
        }
        let mut sum = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            sum += *pa.add(i) * *pb.add(i) as f32;
            i += 1;
        }
        sum
    }
}

/// 16-lane kernels, called only from code compiled for AVX-512F.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    pub(crate) unsafe fn dot_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        let mut i = 0;
        while i + 32 <= n {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i + 16)),
                _mm512_loadu_ps(pb.add(i + 16)),
                acc1,
            );
            i += 32;
        }
        if i + 16 <= n {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
            i += 16;
        }
        if i < n {
            let mask: __mmask16 = (1u32 << (n - i)) as u16 - 1;
            acc1 = _mm512_fmadd_ps(
                _mm512_maskz_loadu_ps(mask, pa.add(i)),
                _mm512_maskz_loadu_ps(mask, pb.add(i)),
                acc1,
            );
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    pub(crate) unsafe fn l2sq_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        let mut i = 0;
        while i + 32 <= n {
            let d0 = _mm512_sub_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)));
            let d1 = _mm512_sub_ps(
                _mm512_loadu_ps(pa.add(i + 16)),
                _mm512_loadu_ps(pb.add(i + 16)),
            );
            acc0 = _mm512_fmadd_ps(d0, d0, acc0);
            acc1 = _mm512_fmadd_ps(d1, d1, acc1);
            i += 32;
        }
        if i + 16 <= n {
            let d0 = _mm512_sub_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)));
            acc0 = _mm512_fmadd_ps(d0, d0, acc0);
            i += 16;
        }
        if i < n {
            let mask: __mmask16 = (1u32 << (n - i)) as u16 - 1;
            let d = _mm512_sub_ps(
                _mm512_maskz_loadu_ps(mask, pa.add(i)),
                _mm512_maskz_loadu_ps(mask, pb.add(i)),
            );
            acc1 = _mm512_fmadd_ps(d, d, acc1);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
    }

    /// `a . b` for int8 codes `b`, 16 codes per step (widened to f32).
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    pub(crate) unsafe fn dot_i8_impl(a: &[f32], b: &[i8]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            let codes = _mm_loadu_si128(pb.add(i) as *const __m128i);
            let c = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(codes));
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), c, acc);
            i += 16;
        }
        let mut sum = _mm512_reduce_add_ps(acc);
        while i < n {
            sum += *pa.add(i) * *pb.add(i) as f32;
            i += 1;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn kernels_agree_with_portable_versions() {
        let k = kernels();
        for n in [1, 7, 8, 15, 16, 17, 64, 100, 768] {
            let a = sample(n, 1);
            let b = sample(n, 7);
            let q: Vec<i8> = b.iter().map(|x| (x * 100.0) as i8).collect();
            assert!(
                ((k.dot)(&a, &b) - portable::dot(&a, &b)).abs() < 1e-3,
                "dot n={n}"
            );
            assert!(
                ((k.l2sq)(&a, &b) - portable::l2sq(&a, &b)).abs() < 1e-3,
                "l2 n={n}"
            );
            assert!(
                ((k.dot_i8)(&a, &q) - portable::dot_i8(&a, &q)).abs() < 1e-2,
                "i8 n={n}"
            );
            #[cfg(target_arch = "x86_64")]
            if k.avx512 {
                // SAFETY: avx512 is set only after run-time detection.
                unsafe {
                    assert!(
                        (avx512::dot_impl(&a, &b) - portable::dot(&a, &b)).abs() < 1e-3,
                        "512 dot n={n}"
                    );
                    assert!(
                        (avx512::l2sq_impl(&a, &b) - portable::l2sq(&a, &b)).abs() < 1e-3,
                        "512 l2 n={n}"
                    );
                    assert!(
                        (avx512::dot_i8_impl(&a, &q) - portable::dot_i8(&a, &q)).abs() < 1e-2,
                        "512 i8 n={n}"
                    );
                }
            }
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((portable::dot(&a, &b) - naive).abs() < 1e-3);
        }
    }
}
