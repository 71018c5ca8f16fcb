//! Index tests: recall against brute force, deletes with slot reuse,
//! snapshot round trips and corrupt snapshots.

use super::snapshot::{decode, encode};
use super::*;
use crate::codec::Reader;
use crate::rng::SplitMix;
use crate::synth::clustered;

fn build(params: IndexParams, data: &[Vec<f32>]) -> Hnsw {
    let mut h = Hnsw::new(params);
    for v in data {
        let p = h.prepare(v);
        h.insert(&p);
    }
    h
}

fn recall(h: &Hnsw, queries: &[Vec<f32>], k: usize, ef: usize) -> f64 {
    let mut found = 0usize;
    let mut total = 0usize;
    for q in queries {
        let q = h.prepare(q);
        let truth: Vec<u32> = h.brute_force(&q, k).iter().map(|x| x.slot).collect();
        let got: Vec<u32> = h
            .walk(&q, k, ef, |_| true, usize::MAX)
            .0
            .iter()
            .map(|x| x.slot)
            .collect();
        total += truth.len();
        found += got.iter().filter(|s| truth.contains(s)).count();
    }
    found as f64 / total.max(1) as f64
}

fn small_params(metric: Metric, quant: Quant) -> IndexParams {
    IndexParams {
        metric,
        quant,
        ef_construction: 100,
        ..IndexParams::new(32)
    }
}

#[test]
fn recall_is_high_for_every_metric_and_quantization() {
    let data = clustered(3000, 32, 20, 0.6, 1);
    let queries = clustered(100, 32, 20, 0.6, 2);
    for metric in [Metric::Cosine, Metric::Ip, Metric::L2] {
        for quant in [Quant::F32, Quant::Q8] {
            let h = build(small_params(metric, quant), &data);
            let r = recall(&h, &queries, 10, 128);
            assert!(r >= 0.95, "{metric:?}/{quant:?}: recall {r}");
        }
    }
}

#[test]
fn scores_follow_the_metric() {
    let mut h = Hnsw::new(IndexParams {
        metric: Metric::L2,
        ..IndexParams::new(2)
    });
    h.insert(&[0.0, 0.0]);
    h.insert(&[3.0, 4.0]);
    let hits = h.walk(&[0.0, 0.0], 2, 10, |_| true, usize::MAX).0;
    assert_eq!(hits[0].slot, 0);
    assert!((hits[1].score - 5.0).abs() < 1e-5);

    let mut c = Hnsw::new(IndexParams::new(2));
    let a = c.prepare(&[2.0, 0.0]);
    c.insert(&a);
    let q = c.prepare(&[1.0, 1.0]);
    let hits = c.walk(&q, 1, 10, |_| true, usize::MAX).0;
    assert!((hits[0].score - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-5);
}

#[test]
fn deleted_items_are_never_returned_and_slots_are_reused() {
    let data = clustered(2000, 32, 10, 0.6, 3);
    let mut h = build(small_params(Metric::Cosine, Quant::F32), &data);
    let mut rng = SplitMix::new(9);
    let mut removed = Vec::new();
    for s in 0..2000u32 {
        if rng.uniform() < 0.3 && h.remove(s) {
            removed.push(s);
        }
    }
    assert_eq!(h.len(), 2000 - removed.len());
    for q in clustered(50, 32, 10, 0.6, 4) {
        let q = h.prepare(&q);
        for hit in h.walk(&q, 20, 50, |_| true, usize::MAX).0 {
            assert!(h.is_live(hit.slot), "deleted slot {} returned", hit.slot);
        }
    }
    let slots_before = h.slots();
    for v in clustered(removed.len(), 32, 10, 0.6, 5) {
        let p = h.prepare(&v);
        h.insert(&p);
    }
    assert!(
        h.slots() <= slots_before + 1,
        "tombstoned slots were not reused"
    );
    let r = recall(&h, &clustered(100, 32, 10, 0.6, 6), 10, 64);
    assert!(r >= 0.95, "recall after delete + re-add: {r}");
}

#[test]
fn filtered_search_only_returns_accepted_slots() {
    let data = clustered(2000, 32, 10, 0.6, 7);
    let h = build(small_params(Metric::Cosine, Quant::F32), &data);
    let q = h.prepare(&data[0]);
    let hits = h.walk(&q, 10, 50, |s| s % 100 == 0, usize::MAX).0;
    assert_eq!(hits.len(), 10, "a 1% filter must still fill k");
    assert!(hits.iter().all(|x| x.slot % 100 == 0));
}

#[test]
fn snapshot_round_trip_preserves_answers() {
    let data = clustered(1500, 32, 10, 0.6, 8);
    for quant in [Quant::F32, Quant::Q8] {
        let mut h = build(small_params(Metric::Cosine, quant), &data);
        for s in (0..1500).step_by(7) {
            h.remove(s);
        }
        let mut bytes = Vec::new();
        encode(&h, &mut bytes);
        let back = decode(&mut Reader::new(&bytes)).expect("decode");
        assert_eq!(back.len(), h.len());
        for q in clustered(20, 32, 10, 0.6, 9) {
            let q = h.prepare(&q);
            assert_eq!(
                h.walk(&q, 10, 40, |_| true, usize::MAX).0,
                back.walk(&q, 10, 40, |_| true, usize::MAX).0
            );
        }
    }
}

/// Rewrites a current snapshot of `h` in an older layout: `version`'s word,
/// a link count before each layer-0 block's links (versions 1 and 2), and
/// for version 1 a squared-norm word after each block.
fn older_snapshot(h: &Hnsw, current: &[u8], version: u32) -> Vec<u8> {
    let header_len = u64::from_le_bytes(current[12..20].try_into().unwrap()) as usize;
    let slots = h.slots();
    let nodes_at = 20 + header_len + 2 * slots + 4 * h.free.len();
    let block_bytes = 4 * h.store.stride;
    let m0_bytes = 4 * h.store.m0;
    let mut old = current[..nodes_at].to_vec();
    old[8..12].copy_from_slice(&version.to_le_bytes());
    let blocks = &current[nodes_at..nodes_at + slots * block_bytes];
    for (slot, block) in blocks.chunks_exact(block_bytes).enumerate() {
        let n = h.links(slot as u32, 0).len() as u32;
        old.extend_from_slice(&n.to_le_bytes());
        // What followed the count in older versions past the live links
        // was stale: write something other than NO_LINK there.
        old.extend_from_slice(&block[..4 * n as usize]);
        old.extend(std::iter::repeat_n(7u8, m0_bytes - 4 * n as usize));
        old.extend_from_slice(&block[m0_bytes..]);
        if version == 1 {
            old.extend_from_slice(&1.0f32.to_le_bytes());
        }
    }
    old.extend_from_slice(&current[nodes_at + slots * block_bytes..]);
    old
}

/// Snapshots of versions 1 (a Q8 COSINE index: one more word per block,
/// the squared norm that only L2 uses) and 2 (a link count per block)
/// decode to the same index.
#[test]
fn older_snapshots_still_decode() {
    let data = clustered(1500, 32, 10, 0.6, 8);
    for (version, quant) in [(1, Quant::Q8), (2, Quant::Q8), (2, Quant::F32)] {
        let h = build(small_params(Metric::Cosine, quant), &data);
        let mut current = Vec::new();
        encode(&h, &mut current);
        let old = older_snapshot(&h, &current, version);
        let back = decode(&mut Reader::new(&old)).expect("decode an older version");
        let mut again = Vec::new();
        encode(&back, &mut again);
        assert_eq!(
            again, current,
            "version {version} decoded to the same index"
        );
        assert!(decode(&mut Reader::new(&old[..old.len() - 4])).is_err());
    }
}

#[test]
fn corrupt_or_truncated_snapshots_fail_cleanly() {
    let data = clustered(300, 16, 5, 0.6, 10);
    let h = build(IndexParams::new(16), &data);
    let mut bytes = Vec::new();
    encode(&h, &mut bytes);
    for cut in [0, 4, 8, 12, 40, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            decode(&mut Reader::new(&bytes[..cut])).is_err(),
            "cut {cut}"
        );
    }
    // Flip bytes everywhere: decoding must either fail or give a usable index.
    let mut rng = SplitMix::new(11);
    for _ in 0..300 {
        let mut bad = bytes.clone();
        let i = rng.below(bad.len() as u64) as usize;
        bad[i] ^= 1 << rng.below(8);
        if let Ok(idx) = decode(&mut Reader::new(&bad)) {
            let q = idx.prepare(&data[0]);
            let _ = idx.walk(&q, 5, 20, |_| true, usize::MAX).0;
        }
    }
}

#[test]
fn duplicate_vectors_do_not_cut_off_parts_of_the_graph() {
    // Items re-added with the vectors they had (churn) and items sharing a
    // vector: every search must still fill K.
    let data = clustered(3000, 32, 10, 0.6, 13);
    let mut h = build(small_params(Metric::Cosine, Quant::F32), &data);
    for v in data.iter().take(1500) {
        let p = h.prepare(v);
        h.insert(&p);
    }
    for s in (0..1500).step_by(3) {
        h.remove(s);
    }
    for v in data.iter().take(1500).step_by(3) {
        let p = h.prepare(v);
        h.insert(&p);
    }
    for q in clustered(300, 32, 10, 0.6, 14) {
        let q = h.prepare(&q);
        assert_eq!(h.walk(&q, 10, 40, |_| true, usize::MAX).0.len(), 10);
    }
}

#[test]
fn structurally_inconsistent_snapshots_are_refused() {
    let data = clustered(400, 16, 5, 0.6, 12);
    let h = build(IndexParams::new(16), &data);
    let (upper_node, ground_node) = {
        let up = (0..h.slots() as u32)
            .find(|&s| h.levels[s as usize] >= 1 && h.upper[&s][0] > 0)
            .expect("a node with upper-layer links");
        let ground = (0..h.slots() as u32)
            .find(|&s| h.levels[s as usize] == 0)
            .expect("a layer-0 node");
        (up, ground)
    };
    let encoded = |h: &Hnsw| {
        let mut bytes = Vec::new();
        encode(h, &mut bytes);
        bytes
    };
    // An upper-layer link to a node that has no such layer.
    let mut bad = build(IndexParams::new(16), &data);
    bad.upper.get_mut(&upper_node).unwrap()[1] = ground_node;
    let e = decode(&mut Reader::new(&encoded(&bad)))
        .err()
        .expect("refused");
    assert!(e.contains("names a node below that layer"), "{e}");
    // A free list naming a slot twice.
    let mut bad = build(IndexParams::new(16), &data);
    bad.remove(ground_node);
    bad.free.push(ground_node);
    let e = decode(&mut Reader::new(&encoded(&bad)))
        .err()
        .expect("refused");
    assert!(e.contains("free list"), "{e}");
    assert!(decode(&mut Reader::new(&encoded(&h))).is_ok());
}

#[test]
#[ignore]
fn print_recall_curve() {
    let data = clustered(3000, 32, 20, 0.6, 1);
    let queries = clustered(100, 32, 20, 0.6, 2);
    let h = build(small_params(Metric::Cosine, Quant::F32), &data);
    for ef in [10, 32, 64, 128, 256, 1000] {
        eprintln!("ef {ef} recall {}", recall(&h, &queries, 10, ef));
    }
}

/// Rounds of deleting and re-adding items (the slots are reused) keep the
/// graph as good as a fresh build of the same items (`recsys bench churn` is
/// the full-size version of this).
#[test]
fn churn_keeps_recall_of_a_fresh_build() {
    let params = IndexParams {
        metric: Metric::Ip,
        ..small_params(Metric::Ip, Quant::F32)
    };
    let data = clustered(3000, 32, 20, 0.5, 11);
    let queries = clustered(200, 32, 20, 0.5, 12);
    let mut h = build(params, &data);
    let mut vector_of: Vec<usize> = (0..data.len()).collect(); // slot -> data row
    let mut rng = SplitMix::new(13);
    for _ in 0..3 {
        let mut gone: Vec<u32> = Vec::new();
        for s in 0..h.slots() as u32 {
            if rng.uniform() < 0.3 && h.remove(s) {
                gone.push(s);
            }
        }
        let rows: Vec<usize> = gone.iter().map(|&s| vector_of[s as usize]).collect();
        for row in rows {
            let p = h.prepare(&data[row]);
            let slot = h.insert(&p) as usize;
            // A deleted entry point keeps its slot, so one new slot may appear.
            if slot >= vector_of.len() {
                vector_of.resize(slot + 1, usize::MAX);
            }
            vector_of[slot] = row;
        }
        assert!(h.slots() <= data.len() + 3, "slots were not reused");
    }
    // The entry point goes too: the top passes to a lower live node, and the
    // graph still round-trips through a snapshot (tombstones above the new
    // top level are legal) to the same answers.
    let old_top = h.max_level;
    let mut removed = Vec::new();
    while h.max_level == old_top {
        removed.push(h.entry);
        assert!(h.remove(h.entry));
        assert!(h.is_live(h.entry));
    }
    let mut bytes = Vec::new();
    encode(&h, &mut bytes);
    let back = decode(&mut Reader::new(&bytes)).expect("snapshot after an entry handover");
    for q in &queries {
        let q = h.prepare(q);
        let a: Vec<u32> = h
            .walk(&q, 10, 32, |_| true, usize::MAX)
            .0
            .iter()
            .map(|x| x.slot)
            .collect();
        let b: Vec<u32> = back
            .walk(&q, 10, 32, |_| true, usize::MAX)
            .0
            .iter()
            .map(|x| x.slot)
            .collect();
        assert_eq!(a, b);
    }
    for slot in removed {
        let p = h.prepare(&data[vector_of[slot as usize]]);
        h.insert(&p);
    }
    let churned = recall(&h, &queries, 10, 32);
    let fresh = recall(&build(params, &data), &queries, 10, 32);
    assert!(
        churned >= fresh - 0.01,
        "recall after churn {churned:.4}, fresh build {fresh:.4}"
    );
    for q in &queries {
        let q = h.prepare(q);
        assert_eq!(h.walk(&q, 10, 32, |_| true, usize::MAX).0.len(), 10);
    }
}

/// Every search path this CPU has (AVX-512, AVX2, portable) walks the same
/// graph to the same answers: the AVX2 path is exercised on an AVX-512
/// machine too, by switching the flags that pick the path.
#[test]
fn every_kernel_path_gives_the_same_answers() {
    use super::distance::portable_kernels;
    for metric in [Metric::Ip, Metric::Cosine, Metric::L2] {
        let data = clustered(3000, 32, 10, 0.5, 21);
        let mut h = build(small_params(metric, Quant::F32), &data);
        let queries: Vec<Vec<f32>> = clustered(100, 32, 10, 0.5, 22)
            .iter()
            .map(|q| h.prepare(q))
            .collect();
        let answers = |h: &Hnsw| -> Vec<Vec<Hit>> {
            queries
                .iter()
                .map(|q| h.walk(q, 10, 64, |_| true, usize::MAX).0)
                .collect()
        };
        let native = h.store.kernels;
        let reference = {
            h.store.kernels = portable_kernels();
            answers(&h)
        };
        let mut paths = vec![("portable", portable_kernels())];
        if native.avx2 {
            paths.push((
                "avx2",
                super::distance::Kernels {
                    avx512: false,
                    ..native
                },
            ));
        }
        if native.avx512 {
            paths.push(("avx512", native));
        }
        for (name, kernels) in paths {
            h.store.kernels = kernels;
            let got = answers(&h);
            let mut same = 0;
            for (a, b) in got.iter().zip(&reference) {
                same += usize::from(a.iter().map(|x| x.slot).eq(b.iter().map(|x| x.slot)));
                for (x, y) in a.iter().zip(b) {
                    if x.slot == y.slot {
                        assert!((x.score - y.score).abs() < 1e-4, "{metric:?} {name}");
                    }
                }
            }
            // Sums in another order may swap two near-equal neighbours.
            assert!(same >= 97, "{metric:?} {name}: {same}/100 answers agree");
        }
        eprintln!("{metric:?}: kernels {:?}", native);
    }
}

/// Below the scan limit a search is an exact scan: it returns exactly what
/// brute force returns, filters and tombstones included; above it, the walk.
#[test]
fn small_indexes_are_scanned_exactly() {
    let data = clustered(900, 32, 5, 0.6, 21);
    let mut h = build(small_params(Metric::Cosine, Quant::F32), &data);
    for s in (0..900).step_by(7) {
        h.remove(s);
    }
    assert!(h.prefers_scan(10) && h.prefers_scan(200));
    for q in clustered(20, 32, 5, 0.6, 22) {
        let q = h.prepare(&q);
        let accept = |s: u32| !s.is_multiple_of(3);
        let want: Vec<u32> = h
            .brute_force(&q, 900)
            .iter()
            .map(|x| x.slot)
            .filter(|&s| accept(s))
            .take(50)
            .collect();
        let got: Vec<u32> = h
            .search(&q, 50, 10, accept)
            .iter()
            .map(|x| x.slot)
            .collect();
        assert_eq!(got, want);
        assert!(got.iter().all(|&s| h.is_live(s)));
    }
}
