use super::*;

/// A catalog stand-in: the writes applied, in order.
type Log = Vec<Vec<u8>>;

fn create() -> Update {
    let write = vec![b"RECSYS.CREATE".to_vec(), b"shop".to_vec()];
    let refs: Vec<&[u8]> = write.iter().map(Vec::as_slice).collect();
    Update {
        prev: LogPos::ZERO,
        pos: LogPos::ZERO.next(&refs),
        write,
    }
}

fn after(u: &Update, arg: &str) -> Update {
    let write = vec![b"RECSYS.ITEM.SET".to_vec(), arg.as_bytes().to_vec()];
    let refs: Vec<&[u8]> = write.iter().map(Vec::as_slice).collect();
    Update {
        prev: u.pos,
        pos: u.pos.next(&refs),
        write,
    }
}

/// Feeds an update as the module does: apply, then report.
fn feed(t: &mut Copies<Log>, from: &str, u: Update) -> UpdateAction {
    let action = t.on_update(from, 0, b"shop", u.clone());
    if let UpdateAction::Apply { create } = action {
        let mut log = if create {
            Vec::new()
        } else {
            t.get(b"shop").unwrap().catalog.clone().unwrap()
        };
        log.push(u.write[1].clone());
        t.applied(b"shop", Some(log), u.pos, 0);
    }
    action
}

#[test]
fn updates_in_order_apply_and_a_gap_asks_for_a_snapshot() {
    let mut t = Copies::default();
    let c = create();
    let (a, b) = (after(&c, "a"), after(&after(&c, "a"), "b"));
    assert_eq!(
        feed(&mut t, "n1", c.clone()),
        UpdateAction::Apply { create: true }
    );
    assert_eq!(
        feed(&mut t, "n1", a.clone()),
        UpdateAction::Apply { create: false }
    );
    assert_eq!(
        feed(&mut t, "n1", a.clone()),
        UpdateAction::Ignore,
        "a repeat"
    );
    assert!(t.get(b"shop").unwrap().serving(true).is_some());
    // b's successor arrives without b: catch up, serve nothing meanwhile.
    let lost = after(&b, "c");
    assert_eq!(
        feed(&mut t, "n1", lost.clone()),
        UpdateAction::Request("n1".into())
    );
    assert!(t.get(b"shop").unwrap().serving(true).is_none());
    let d = after(&lost, "d");
    assert_eq!(
        feed(&mut t, "n1", d.clone()),
        UpdateAction::Ignore,
        "held, asked once"
    );
    // The snapshot at b, in two parts; the held c and d follow it.
    assert_eq!(t.on_snapshot_part("n1", b"shop", b.pos, 0, 2, b"xy"), None);
    assert_eq!(
        t.on_snapshot_part("n2", b"shop", b.pos, 1, 2, b"z"),
        None,
        "not asked"
    );
    let whole = t.on_snapshot_part("n1", b"shop", b.pos, 1, 2, b"z");
    assert_eq!(whole.as_deref(), Some(&b"xyz"[..]));
    let held = t.install(
        b"shop",
        vec![b"shop".to_vec(), b"a".to_vec(), b"b".to_vec()],
        b.pos,
        0,
    );
    assert_eq!(held, vec![lost.clone(), d.clone()]);
    for u in held {
        assert_eq!(feed(&mut t, "n1", u), UpdateAction::Apply { create: false });
    }
    let copy = t.get(b"shop").unwrap();
    assert_eq!(copy.pos, d.pos);
    assert_eq!(copy.catalog.as_ref().unwrap().len(), 5);
    assert!(copy.serving(true).is_some());
}

#[test]
fn announces_confirm_reveal_divergence_and_orphan_copies() {
    let mut t = Copies::default();
    let c = create();
    let a = after(&c, "a");
    feed(&mut t, "n1", c.clone());
    feed(&mut t, "n1", a.clone());
    // The owner confirms where the copy is: nothing to do.
    assert!(t
        .on_announce("n1", 1, &[(b"shop".to_vec(), a.pos)])
        .is_empty());
    // A promoted replica that never got `a` writes `a2` at the same seq:
    // the hash differs, so the copy asks the new owner.
    let a2 = after(&c, "a2");
    assert_eq!(a2.pos.seq, a.pos.seq);
    let asks = t.on_announce("n2", 2, &[(b"shop".to_vec(), a2.pos)]);
    assert_eq!(asks, vec![(b"shop".to_vec(), "n2".to_string())]);
    assert!(t.get(b"shop").unwrap().serving(true).is_none());
    assert!(
        t.on_announce("n2", 3, &[(b"shop".to_vec(), a2.pos)])
            .is_empty(),
        "asked already"
    );
    assert_eq!(
        t.on_announce("n2", 3 + SNAPSHOT_TIMEOUT_MS, &[(b"shop".to_vec(), a2.pos)])
            .len(),
        1,
        "asked again after the timeout"
    );
    t.install(b"shop", vec![b"a2".to_vec()], a2.pos, 4);
    assert!(t.get(b"shop").unwrap().serving(true).is_some());
    // The owner stops announcing it (DEL): dropped after the grace period,
    // unless someone announces it meanwhile.
    t.on_announce("n2", 10, &[]);
    assert!(t.expire(10 + ORPHAN_GRACE_MS).is_empty());
    t.on_announce("n3", 11, &[(b"shop".to_vec(), a2.pos)]);
    assert!(t.expire(20 + ORPHAN_GRACE_MS).is_empty(), "adopted by n3");
    t.on_announce("n3", 30, &[]);
    assert_eq!(t.expire(31 + ORPHAN_GRACE_MS), vec![b"shop".to_vec()]);
    assert!(t.get(b"shop").is_none());
}

#[test]
fn a_copy_read_from_disk_serves_on_a_master_only_once_confirmed() {
    let mut t: Copies<Log> = Copies::default();
    let c = create();
    t.map.insert(
        b"shop".to_vec(),
        Copy::restored(vec![], c.pos, "n1".into(), false, 0),
    );
    let copy = t.get(b"shop").unwrap();
    assert!(copy.serving(true).is_none());
    assert!(copy.serving(false).is_some(), "a replica trusts its master");
    t.on_announce("n1", 1, &[(b"shop".to_vec(), c.pos)]);
    assert!(t.get(b"shop").unwrap().serving(true).is_some());
}

#[test]
fn a_recreated_catalog_replaces_the_copy_and_unknown_catalogs_are_fetched() {
    let mut t = Copies::default();
    let c = create();
    feed(&mut t, "n1", c.clone());
    feed(&mut t, "n1", after(&c, "a"));
    assert_eq!(
        feed(&mut t, "n1", c.clone()),
        UpdateAction::Apply { create: true }
    );
    assert_eq!(t.get(b"shop").unwrap().pos, c.pos);
    let asks = t.on_announce("n1", 0, &[(b"other".to_vec(), c.pos)]);
    assert_eq!(asks, vec![(b"other".to_vec(), "n1".to_string())]);
    assert!(t.get(b"other").unwrap().catching_up());
    // Parts out of order or of another snapshot are dropped.
    assert_eq!(t.on_snapshot_part("n1", b"other", c.pos, 1, 2, b"x"), None);
    assert_eq!(t.on_snapshot_part("n1", b"other", c.pos, 0, 2, b"x"), None);
    assert_eq!(
        t.on_snapshot_part("n1", b"other", LogPos::ZERO, 1, 2, b"y"),
        None
    );
    assert_eq!(t.on_snapshot_part("n1", b"other", c.pos, 1, 2, b"y"), None);
    assert_eq!(t.on_snapshot_part("n1", b"other", c.pos, 0, 0, b""), None);
}

#[test]
fn a_key_that_leaves_serves_again_once_its_new_owner_announces_it() {
    let mut t: Copies<Log> = Copies::default();
    let c = create();
    t.hand_over(b"shop", vec![], c.pos, "me", 0);
    let copy = t.get(b"shop").unwrap();
    assert!(copy.serving(true).is_none());
    assert!(copy.serving(false).is_none(), "nor on a replica");
    assert_eq!(t.handed_over_names(), vec![b"shop".to_vec()]);
    // The node the key moved to announces it where it was: no snapshot.
    assert!(t
        .on_announce("n2", 1, &[(b"shop".to_vec(), c.pos)])
        .is_empty());
    assert!(t.get(b"shop").unwrap().serving(true).is_some());
    assert_eq!(t.get(b"shop").unwrap().owner, "n2");
    assert_eq!(
        t.confirmed_among(&[b"shop".to_vec()]),
        vec![(b"shop".to_vec(), c.pos)]
    );
    assert!(t.expire(10 + ORPHAN_GRACE_MS).is_empty());
    // Deleted (nobody announces it): gone after the grace period.
    t.hand_over(b"gone", vec![], c.pos, "me", 100);
    assert!(t.expire(100 + ORPHAN_GRACE_MS).is_empty());
    assert_eq!(t.expire(101 + ORPHAN_GRACE_MS), vec![b"gone".to_vec()]);
    // A replica follows its master's confirmation.
    t.hand_over(b"r", vec![], c.pos, "me", 0);
    t.confirm_replicated(b"r", c.pos, 1);
    assert!(t.get(b"r").unwrap().serving(false).is_some());
}

#[test]
fn copies_loaded_from_disk_wait_for_their_owner_on_a_master() {
    let mut t = Copies::default();
    let c = create();
    feed(&mut t, "n1", c.clone());
    t.unconfirm_all();
    assert!(t.get(b"shop").unwrap().serving(true).is_none());
    assert!(t.get(b"shop").unwrap().serving(false).is_some());
    t.on_announce("n1", 1, &[(b"shop".to_vec(), c.pos)]);
    assert!(t.get(b"shop").unwrap().serving(true).is_some());
}
