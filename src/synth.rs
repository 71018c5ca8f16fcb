//! Deterministic synthetic data for tests, demos and benchmarks: clustered unit
//! vectors like real embedding spaces (items gather around topics).

use crate::rng::SplitMix;

fn normalize(v: &mut [f32]) {
    let n: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// `n` unit vectors of `dim` components around `clusters` random centres;
/// `spread` is the noise scale relative to the centre (0.5 is a good default).
pub fn clustered(n: usize, dim: usize, clusters: usize, spread: f32, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = SplitMix::new(seed);
    let centres: Vec<Vec<f32>> = (0..clusters.max(1))
        .map(|_| {
            let mut c: Vec<f32> = (0..dim).map(|_| rng.normal() as f32).collect();
            normalize(&mut c);
            c
        })
        .collect();
    let noise = spread / (dim as f32).sqrt();
    (0..n)
        .map(|_| {
            let c = &centres[rng.below(centres.len() as u64) as usize];
            let mut v: Vec<f32> = c.iter().map(|x| x + noise * rng.normal() as f32).collect();
            normalize(&mut v);
            v
        })
        .collect()
}

/// Like [`clustered`], but the spread around each centre lives in a shared
/// random `latent`-dimensional subspace (plus a little isotropic noise): the
/// low intrinsic dimension of real embedding spaces.
pub fn clustered_lowrank(
    n: usize,
    dim: usize,
    clusters: usize,
    latent: usize,
    seed: u64,
) -> Vec<Vec<f32>> {
    // The subspace and centres depend only on the shapes, so queries drawn
    // with another seed come from the same distribution as the items.
    let mut shape = SplitMix::new(0x5EED ^ (dim as u64) << 32 ^ clusters as u64);
    let basis: Vec<Vec<f32>> = (0..latent.max(1))
        .map(|_| {
            (0..dim)
                .map(|_| shape.normal() as f32 / (dim as f32).sqrt())
                .collect()
        })
        .collect();
    let centres: Vec<Vec<f32>> = (0..clusters.max(1))
        .map(|_| {
            let mut c: Vec<f32> = (0..dim).map(|_| shape.normal() as f32).collect();
            normalize(&mut c);
            c
        })
        .collect();
    let mut rng = SplitMix::new(seed);
    let noise = 0.02 / (dim as f32).sqrt();
    (0..n)
        .map(|_| {
            let c = &centres[rng.below(centres.len() as u64) as usize];
            let mut v: Vec<f32> = c.iter().map(|x| x + noise * rng.normal() as f32).collect();
            for b in &basis {
                let z = 0.6 * rng.normal() as f32;
                v.iter_mut().zip(b).for_each(|(x, y)| *x += z * y);
            }
            normalize(&mut v);
            v
        })
        .collect()
}
