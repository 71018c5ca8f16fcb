//! Recall through Redis on a generated set, before and after deleting and
//! re-adding 30% of the items.

mod common;
use common::*;

fn recall(c: &mut redis::Connection, items: &[(String, Vec<f32>)], queries: &[Vec<f32>]) -> f64 {
    recall_of(c, "cat", items, queries)
}

/// Recall@10 of SEARCH on `key`; fails if any search returns fewer than 10.
fn recall_of(
    c: &mut redis::Connection,
    key: &str,
    items: &[(String, Vec<f32>)],
    queries: &[Vec<f32>],
) -> f64 {
    let mut hit = 0;
    for q in queries {
        let exact = exact_ids(items, q, 10);
        let got = search_ids(c, key, q, 10);
        assert_eq!(got.len(), 10, "a K=10 search on {key} returned {got:?}");
        hit += got.iter().filter(|g| exact.contains(g)).count();
    }
    hit as f64 / (10 * queries.len()) as f64
}

/// The churn case, smaller: three rounds of deleting 30% of the
/// items and adding them back (they take the tombstoned slots) leave recall
/// within 0.01 of a fresh catalog of the same items, and no search comes back
/// short. `recsys bench churn` is the full-size figure.
#[test]
fn churn_keeps_recall_within_a_hundredth_of_a_fresh_build() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = recsys::synth::clustered(4000, 32, 20, 0.5, 61);
    let opts = "METRIC IP EF_SEARCH 32";
    load_catalog(&mut c, "cat", &vs, opts);
    let items: Vec<(String, Vec<f32>)> = vs
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("item:{i}"), v.clone()))
        .collect();
    let queries = recsys::synth::clustered(200, 32, 20, 0.5, 62);
    let mut rng = recsys::rng::SplitMix::new(63);
    for _ in 0..3 {
        let chosen: Vec<usize> = (0..items.len()).filter(|_| rng.uniform() < 0.3).collect();
        let mut del = redis::cmd("RECSYS.ITEM.DEL");
        del.arg("cat");
        for &i in &chosen {
            del.arg(&items[i].0);
        }
        let n: i64 = del.query(&mut c).unwrap();
        assert_eq!(n as usize, chosen.len());
        for group in chosen.chunks(500) {
            let mut mset = redis::cmd("RECSYS.ITEM.MSET");
            mset.arg("cat");
            for &i in group {
                mset.arg(&items[i].0)
                    .arg(recsys::vector::to_fp32_blob(&items[i].1));
            }
            let _: i64 = mset.query(&mut c).unwrap();
        }
    }
    assert_eq!(info_field(&mut c, "cat", "items"), 4000);
    assert!(
        info_field(&mut c, "cat", "slots") <= 4003,
        "slots were reused"
    );
    load_catalog(&mut c, "fresh", &vs, opts);
    let churned = recall_of(&mut c, "cat", &items, &queries);
    let fresh = recall_of(&mut c, "fresh", &items, &queries);
    assert!(
        churned >= fresh - 0.01,
        "recall after three rounds of churn {churned:.4}, fresh build {fresh:.4}"
    );
}

#[test]
fn recall_stays_high_after_deleting_and_readding_30_percent() {
    let s = server();
    let mut c = s.connection().unwrap();
    let vs = vectors(5000, 32, 51);
    load_catalog(&mut c, "cat", &vs, "");
    let mut items: Vec<(String, Vec<f32>)> = vs
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("item:{i}"), v.clone()))
        .collect();
    let queries = vectors(200, 32, 52);
    let r0 = recall(&mut c, &items, &queries);
    assert!(r0 >= 0.95, "recall {r0}");

    let deleted: Vec<String> = (0..5000)
        .filter(|i| i % 10 < 3)
        .map(|i| format!("item:{i}"))
        .collect();
    let n: i64 = redis::cmd("RECSYS.ITEM.DEL")
        .arg("cat")
        .arg(&deleted)
        .query(&mut c)
        .unwrap();
    assert_eq!(n as usize, deleted.len());
    items.retain(|(id, _)| !deleted.contains(id));
    let r1 = recall(&mut c, &items, &queries);
    assert!(r1 >= 0.95, "recall after deletes {r1}");

    let fresh = vectors(deleted.len(), 32, 53);
    let mut mset = redis::cmd("RECSYS.ITEM.MSET");
    mset.arg("cat");
    for (i, v) in fresh.iter().enumerate() {
        mset.arg(format!("new:{i}"))
            .arg(recsys::vector::to_fp32_blob(v));
        items.push((format!("new:{i}"), v.clone()));
    }
    let _: i64 = mset.query(&mut c).unwrap();
    assert_eq!(info_field(&mut c, "cat", "items"), 5000);
    assert!(
        info_field(&mut c, "cat", "slots") <= 5001,
        "deleted slots were reused"
    );
    assert_eq!(
        info_field(&mut c, "cat", "deleted_not_reclaimed"),
        info_field(&mut c, "cat", "slots") - 5000
    );
    let r2 = recall(&mut c, &items, &queries);
    assert!(r2 >= 0.95, "recall after delete + re-add {r2}");
}
