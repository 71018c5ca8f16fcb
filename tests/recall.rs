//! Recall through Redis on a generated set, before and after deleting and
//! re-adding 30% of the items.

mod common;
use common::*;

fn recall(c: &mut redis::Connection, items: &[(String, Vec<f32>)], queries: &[Vec<f32>]) -> f64 {
    let mut hit = 0;
    for q in queries {
        let exact = exact_ids(items, q, 10);
        let got = search_ids(c, "cat", q, 10);
        hit += got.iter().filter(|g| exact.contains(g)).count();
    }
    hit as f64 / (10 * queries.len()) as f64
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
