//! The host against the example and hostile plugins built by plugins/build.sh.

use super::*;

fn wasm(name: &str) -> Vec<u8> {
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("plugins/dist/{name}.wasm"));
    std::fs::read(&p).unwrap_or_else(|_| panic!("{} missing: run plugins/build.sh", p.display()))
}

fn input(n: usize) -> PluginInput {
    let mut inp = PluginInput {
        user_id: "u1".into(),
        scores: (0..n).map(|i| 1.0 - i as f32 / 100.0).collect(),
        numeric_names: vec!["sponsored".into()],
        numeric_values: (0..n).map(|i| if i == 5 { 1.0 } else { 0.0 }).collect(),
        text_names: vec!["category".into(), "stock".into()],
        // dict: c0 c1 c2 out in
        text_dict: ["c0", "c1", "c2", "out", "in"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        text_values: (0..n)
            .flat_map(|i| [(i % 3) as u32, if i % 4 == 0 { 3 } else { 4 }])
            .collect(),
        ..PluginInput::default()
    };
    for i in 0..n {
        inp.push_id(&format!("i{i}"));
    }
    inp
}

#[test]
fn example_plugins_work() {
    let host = Host::new(Limits::default()).unwrap();
    let ex = host.compile("ex", wasm("exclude-attr")).unwrap();
    assert_eq!(ex.world, World::Filter);
    let kept = host.call_filter(&ex, &input(10), "stock=out").unwrap();
    assert_eq!(kept, vec![1, 2, 3, 5, 6, 7, 9]);
    let cat = host.compile("cat", wasm("max-per-category")).unwrap();
    assert_eq!(
        host.call_filter(&cat, &input(10), "category:1").unwrap(),
        vec![0, 1, 2]
    );
    let boost = host.compile("boost", wasm("boost-sponsored")).unwrap();
    assert_eq!(boost.world, World::Order);
    let o = host
        .call_order(&boost, &input(10), "sponsored:0.5")
        .unwrap();
    assert_eq!(o.indices[0], 5);
    assert_eq!(o.indices.len(), 10);
    assert!(
        host.call_filter(&boost, &input(3), "").is_err(),
        "world mismatch is an error"
    );
    assert_eq!(ex.stats.calls.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn hostile_plugins_are_contained() {
    let host = Host::new(Limits::default()).unwrap();
    let bad = host.compile("bad", wasm("hostile")).unwrap();
    let inp = input(20);
    let t = std::time::Instant::now();
    let e = host.call_filter(&bad, &inp, "loop").unwrap_err();
    assert!(
        matches!(&e, CallError::Trap(m) if m.contains("deadline")),
        "{e}"
    );
    // 5 ms of CPU time; a generous wall-clock bound for a busy test machine.
    assert!(
        t.elapsed() < std::time::Duration::from_secs(1),
        "cut at the deadline"
    );
    // The other cases are about what the guest does, not about time: a
    // roomier budget (set at run time, as CONFIG SET does) keeps a loaded
    // test machine from turning "huge" into a deadline trap.
    let l = host.limits();
    host.set_limits(std::time::Duration::from_millis(500), l.max_component_bytes);
    assert_eq!(host.limits().timeout, std::time::Duration::from_millis(500));
    for (cfg, want) in [
        ("oom", "trap"),
        ("stack", "trap"),
        ("trap", "trap"),
        ("range", "out of range"),
        ("dup", "twice"),
        ("huge", "indices for 20 candidates"),
        ("error", "refusing on purpose"),
    ] {
        let e = host.call_filter(&bad, &inp, cfg).unwrap_err().to_string();
        assert!(
            e.contains(want) || (want == "trap" && e.contains("plugin trapped")),
            "{cfg}: {e}"
        );
    }
    // After all that, the same plugin still serves a well-behaved call.
    assert_eq!(host.call_filter(&bad, &inp, "ok").unwrap().len(), 20);
    assert!(
        bad.stats.last_log().contains("behaving"),
        "stdout is captured"
    );
    let e = host
        .compile("sneaky", wasm("forbidden-import"))
        .err()
        .unwrap();
    assert!(e.contains("evil:plugin/network"), "{e}");
    assert!(host
        .compile("junk", b"\0asm garbage".to_vec())
        .err()
        .unwrap()
        .contains("not a valid"));
}

/// A plugin that counts its calls in a static (its linear memory) sees 1
/// every time: each call starts from the component's initial state, on one
/// thread or several.
#[test]
fn no_state_survives_between_calls() {
    let host = std::sync::Arc::new(Host::new(Limits::default()).unwrap());
    let bad = std::sync::Arc::new(host.compile("bad", wasm("hostile")).unwrap());
    let inp = input(20);
    for _ in 0..5 {
        assert_eq!(host.call_filter(&bad, &inp, "remember").unwrap(), vec![0]);
    }
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (host, bad, inp) = (host.clone(), bad.clone(), inp.clone());
            std::thread::spawn(move || {
                (0..50)
                    .map(|_| host.call_filter(&bad, &inp, "remember").unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap().iter().all(|kept| kept == &[0]));
    }
}

#[test]
#[ignore]
fn print_call_cost() {
    let host = Host::new(Limits::default()).unwrap();
    let ex = host.compile("ex", wasm("exclude-attr")).unwrap();
    let inp = input(200);
    let mut times = Vec::new();
    for _ in 0..2000 {
        let t = std::time::Instant::now();
        host.call_filter(&ex, &inp, "stock=out").unwrap();
        times.push(t.elapsed().as_micros());
    }
    times.sort_unstable();
    eprintln!(
        "filter call on 200 candidates: median {} us, p99 {} us",
        times[1000], times[1980]
    );
}
