//! Implicit-feedback ALS (Hu, Koren and Volinsky 2008), as implicit (PyPI)
//! computes it, so the two compare like for like: confidence `c = alpha *
//! weight`, `YtY = YᵀY + λI` from faer's matrix product, and per user (then
//! per item) either a few conjugate-gradient steps warm-started from the
//! current factors (implicit's default) or an exact Cholesky solve (faer).
//! Users run in parallel on rayon; each solve depends only on its own row,
//! so the result is the same for any thread count and a given seed.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par, Side};
use rayon::prelude::*;
use recsys::rng::SplitMix;

/// Training settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlsParams {
    pub factors: usize,
    pub iterations: usize,
    pub regularization: f32,
    /// Confidence of an interaction: alpha x its weight.
    pub alpha: f32,
    /// Conjugate-gradient steps per solve; 0: exact Cholesky solves.
    pub cg_steps: usize,
    pub seed: u64,
}

impl Default for AlsParams {
    fn default() -> Self {
        AlsParams {
            factors: 64,
            iterations: 15,
            // The starting point of the choice on validation (train::tune).
            regularization: 1.0,
            alpha: 5.0,
            cg_steps: 3,
            seed: 1,
        }
    }
}

/// A sparse matrix by rows: row r's columns are `cols[ptr[r]..ptr[r+1]]`.
#[derive(Debug, Clone, Default)]
pub struct Csr {
    pub ptr: Vec<usize>,
    pub cols: Vec<u32>,
    pub vals: Vec<f32>,
}

impl Csr {
    /// From per-row (column, weight) lists.
    pub fn from_rows(rows: &[Vec<(u32, f32)>]) -> Csr {
        let mut m = Csr {
            ptr: Vec::with_capacity(rows.len() + 1),
            ..Csr::default()
        };
        m.ptr.push(0);
        for r in rows {
            for &(c, v) in r {
                m.cols.push(c);
                m.vals.push(v);
            }
            m.ptr.push(m.cols.len());
        }
        m
    }

    pub fn rows(&self) -> usize {
        self.ptr.len() - 1
    }

    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.ptr[r], self.ptr[r + 1]);
        (&self.cols[a..b], &self.vals[a..b])
    }

    /// The transpose with `n_cols` columns.
    pub fn transpose(&self, n_cols: usize) -> Csr {
        let mut counts = vec![0usize; n_cols + 1];
        for &c in &self.cols {
            counts[c as usize + 1] += 1;
        }
        for i in 0..n_cols {
            counts[i + 1] += counts[i];
        }
        let mut next = counts.clone();
        let mut cols = vec![0u32; self.cols.len()];
        let mut vals = vec![0f32; self.vals.len()];
        for r in 0..self.rows() {
            let (cs, vs) = self.row(r);
            for (&c, &v) in cs.iter().zip(vs) {
                let at = &mut next[c as usize];
                cols[*at] = r as u32;
                vals[*at] = v;
                *at += 1;
            }
        }
        Csr {
            ptr: counts,
            cols,
            vals,
        }
    }
}

/// Row-major factor matrices (`k` columns).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Factors {
    pub k: usize,
    pub users: Vec<f32>,
    pub items: Vec<f32>,
}

impl Factors {
    pub fn user(&self, u: usize) -> &[f32] {
        &self.users[u * self.k..(u + 1) * self.k]
    }
    pub fn item(&self, i: usize) -> &[f32] {
        &self.items[i * self.k..(i + 1) * self.k]
    }
}

/// `a · b` with eight independent accumulators (vectorizes).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `y += a * x`.
#[inline]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `out = M v` for a k x k row-major M.
#[inline]
fn matvec(m: &[f32], v: &[f32], out: &mut [f32]) {
    let k = v.len();
    for (o, row) in out.iter_mut().zip(m.chunks_exact(k)) {
        *o = dot(row, v);
    }
}

/// `YᵀY + λI` (k x k, row-major) by faer's parallel matrix product.
fn gram(y: &[f32], k: usize, reg: f32) -> Vec<f32> {
    let n = y.len() / k;
    let y = MatRef::from_row_major_slice(y, n, k);
    let mut g = Mat::<f32>::zeros(k, k);
    matmul(
        g.as_mut(),
        Accum::Replace,
        y.transpose(),
        y,
        1.0,
        Par::rayon(0),
    );
    let mut out = vec![0f32; k * k];
    for r in 0..k {
        for c in 0..k {
            out[r * k + c] = g[(r, c)] + if r == c { reg } else { 0.0 };
        }
    }
    out
}

/// Solves every row of `x` against the fixed side `y` (one half-iteration).
fn solve_side(x: &mut [f32], y: &[f32], m: &Csr, p: &AlsParams) {
    let k = p.factors;
    let yty = gram(y, k, p.regularization);
    x.par_chunks_mut(k).enumerate().for_each(|(r, xr)| {
        let (cols, vals) = m.row(r);
        if p.cg_steps == 0 {
            cholesky_row(xr, y, &yty, cols, vals, p.alpha);
        } else {
            cg_row(xr, y, &yty, cols, vals, p.alpha, p.cg_steps);
        }
    });
}

/// A few conjugate-gradient steps on `(YtY + Σ (c-1) y yᵀ) x = Σ c y`,
/// warm-started from `x` (implicit's `_least_squares_cg`).
fn cg_row(
    x: &mut [f32],
    y: &[f32],
    yty: &[f32],
    cols: &[u32],
    vals: &[f32],
    alpha: f32,
    steps: usize,
) {
    let k = x.len();
    let mut r = vec![0f32; k];
    matvec(yty, x, &mut r);
    r.iter_mut().for_each(|v| *v = -*v);
    for (&c, &w) in cols.iter().zip(vals) {
        let yi = &y[c as usize * k..(c as usize + 1) * k];
        let conf = alpha * w;
        axpy(&mut r, conf - (conf - 1.0) * dot(yi, x), yi);
    }
    let mut p = r.clone();
    let mut rs_old = dot(&r, &r);
    if rs_old < 1e-20 {
        return;
    }
    let mut ap = vec![0f32; k];
    for _ in 0..steps {
        matvec(yty, &p, &mut ap);
        for (&c, &w) in cols.iter().zip(vals) {
            let yi = &y[c as usize * k..(c as usize + 1) * k];
            let conf = alpha * w;
            axpy(&mut ap, (conf - 1.0) * dot(yi, &p), yi);
        }
        let step = rs_old / dot(&p, &ap);
        if !step.is_finite() {
            return;
        }
        axpy(x, step, &p);
        axpy(&mut r, -step, &ap);
        let rs_new = dot(&r, &r);
        if rs_new < 1e-20 {
            return;
        }
        let beta = rs_new / rs_old;
        for (pv, rv) in p.iter_mut().zip(&r) {
            *pv = rv + beta * *pv;
        }
        rs_old = rs_new;
    }
}

/// The exact solve by faer's Cholesky factorization.
fn cholesky_row(x: &mut [f32], y: &[f32], yty: &[f32], cols: &[u32], vals: &[f32], alpha: f32) {
    let k = x.len();
    let mut a = Mat::<f32>::from_fn(k, k, |r, c| yty[r * k + c]);
    let mut b = Mat::<f32>::zeros(k, 1);
    for (&c, &w) in cols.iter().zip(vals) {
        let yi = &y[c as usize * k..(c as usize + 1) * k];
        let conf = alpha * w;
        for r in 0..k {
            b[(r, 0)] += conf * yi[r];
            let s = (conf - 1.0) * yi[r];
            if s != 0.0 {
                for c2 in 0..k {
                    a[(r, c2)] += s * yi[c2];
                }
            }
        }
    }
    // YtY + λI is positive definite for λ > 0 and confidences >= 1.
    if let Ok(llt) = a.llt(Side::Lower) {
        use faer::linalg::solvers::Solve;
        let sol = llt.solve(&b);
        for (r, v) in x.iter_mut().enumerate() {
            *v = sol[(r, 0)];
        }
    }
}

/// Trains user and item factors on `user_items` (per user: (item, weight));
/// `on_iteration(i)` is called after each full iteration.
pub fn train(
    user_items: &Csr,
    n_items: usize,
    p: &AlsParams,
    mut on_iteration: impl FnMut(usize),
) -> Factors {
    let k = p.factors;
    let n_users = user_items.rows();
    let item_users = user_items.transpose(n_items);
    let mut rng = SplitMix::new(p.seed);
    let mut init =
        |n: usize| -> Vec<f32> { (0..n * k).map(|_| rng.uniform() as f32 * 0.01).collect() };
    let mut users = init(n_users);
    let mut items = init(n_items);
    for it in 0..p.iterations {
        solve_side(&mut users, &items, user_items, p);
        solve_side(&mut items, &users, &item_users, p);
        on_iteration(it + 1);
    }
    Factors { k, users, items }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two blocks of users and items: users 0..10 like items 0..10,
    /// users 10..20 like items 10..20.
    fn blocks() -> Csr {
        let rows: Vec<Vec<(u32, f32)>> = (0..20u32)
            .map(|u| {
                let base = if u < 10 { 0 } else { 10 };
                (0..10u32)
                    .filter(|i| (i + u) % 3 != 0)
                    .map(|i| (base + i, 1.0))
                    .collect()
            })
            .collect();
        Csr::from_rows(&rows)
    }

    #[test]
    fn learns_the_blocks_with_both_solvers_and_is_deterministic() {
        let m = blocks();
        for cg_steps in [0, 3] {
            let p = AlsParams {
                factors: 8,
                iterations: 10,
                cg_steps,
                alpha: 10.0,
                ..AlsParams::default()
            };
            let f = train(&m, 20, &p, |_| {});
            assert_eq!(f, train(&m, 20, &p, |_| {}), "same seed, same factors");
            for u in 0..20 {
                let (own, other) = if u < 10 {
                    (0..10, 10..20)
                } else {
                    (10..20, 0..10)
                };
                let best_own = own
                    .map(|i| dot(f.user(u), f.item(i)))
                    .fold(f32::MIN, f32::max);
                let best_other = other
                    .map(|i| dot(f.user(u), f.item(i)))
                    .fold(f32::MIN, f32::max);
                assert!(
                    best_own > best_other + 0.1,
                    "cg {cg_steps} user {u}: {best_own} vs {best_other}"
                );
            }
        }
    }

    #[test]
    fn cg_approaches_the_exact_solution() {
        let m = blocks();
        let exact = AlsParams {
            factors: 8,
            iterations: 1,
            cg_steps: 0,
            alpha: 5.0,
            ..AlsParams::default()
        };
        let f = train(&m, 20, &exact, |_| {});
        // One more user half-step by CG from zero with many steps equals
        // the Cholesky solve against the same items.
        let k = 8;
        let yty = gram(&f.items, k, exact.regularization);
        let (cols, vals) = m.row(3);
        let mut x_cg = vec![0f32; k];
        cg_row(&mut x_cg, &f.items, &yty, cols, vals, 5.0, 50);
        let mut x_ch = vec![0f32; k];
        cholesky_row(&mut x_ch, &f.items, &yty, cols, vals, 5.0);
        for (a, b) in x_cg.iter().zip(&x_ch) {
            assert!(
                (a - b).abs() < 1e-3 * (1.0 + b.abs()),
                "{x_cg:?} vs {x_ch:?}"
            );
        }
        let t = m.transpose(20).transpose(20);
        assert_eq!((t.ptr, t.cols), (m.ptr.clone(), m.cols.clone()));
    }
}
