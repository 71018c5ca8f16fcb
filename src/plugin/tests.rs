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
    assert_eq!(bad.instance_reuse, Ok(()), "calls share an instance");
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

/// A component from a core module in the text format implementing the
/// filter world by hand (canonical ABI: one pointer in, one pointer out).
fn hand_written_filter(body: &str) -> Vec<u8> {
    let wat = format!(
        r#"(module
          (memory (export "memory") 1)
          (global $heap (mut i32) (i32.const 1024))
          (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
            (local $p i32)
            global.get $heap
            i32.const 7
            i32.add
            i32.const -8
            i32.and
            local.tee $p
            local.get 3
            i32.add
            global.set $heap
            local.get $p)
          (data (i32.const 64) "\00\00\00\00\01\00\00\00\02\00\00\00\03\00\00\00")
          {body})"#
    );
    let mut core = wat::parse_str(&wat).unwrap();
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve
        .push_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("wit"))
        .unwrap();
    let world = resolve.select_world(&[pkg], Some("filter")).unwrap();
    wit_component::embed_component_metadata(
        &mut core,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    wit_component::ComponentEncoder::default()
        .module(&core)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}

/// `filter` keeping the first `$calls` candidates after counting this call
/// in a mutable global: 1 every time when globals start over at each call.
const COUNTS_IN_A_GLOBAL: &str = r#"
  (global $calls (mut i32) (i32.const 0))
  (func (export "filter") (param i32) (result i32)
    global.get $calls
    i32.const 1
    i32.add
    global.set $calls
    i32.const 16
    i32.const 0
    i32.store8
    i32.const 20
    i32.const 64
    i32.store
    i32.const 24
    global.get $calls
    i32.const 4
    i32.rem_u
    i32.store
    i32.const 16)"#;

#[test]
fn globals_start_over_at_each_call() {
    let host = Host::new(Limits::default()).unwrap();
    let counter = host
        .compile("counter", hand_written_filter(COUNTS_IN_A_GLOBAL))
        .unwrap();
    assert_eq!(counter.instance_reuse, Ok(()));
    for _ in 0..4 {
        assert_eq!(host.call_filter(&counter, &input(8), "").unwrap(), vec![0]);
    }
}

/// A module that can change a table at run time is not reused (its table
/// could carry state), and still runs with a fresh instance per call.
#[test]
fn a_component_that_cannot_be_reset_runs_fresh() {
    let host = Host::new(Limits::default()).unwrap();
    let with_table = COUNTS_IN_A_GLOBAL.replace(
        "(func (export \"filter\") (param i32) (result i32)",
        "(table 1 funcref)
         (func (export \"filter\") (param i32) (result i32)
           i32.const 0
           ref.null func
           table.set 0",
    );
    let plugin = host
        .compile("tabled", hand_written_filter(&with_table))
        .unwrap();
    let why = plugin.instance_reuse.clone().unwrap_err();
    assert!(why.contains("changes a table"), "{why}");
    for _ in 0..3 {
        assert_eq!(host.call_filter(&plugin, &input(8), "").unwrap(), vec![0]);
    }
}

#[test]
#[ignore]
fn print_instances_per_call() {
    let host = Host::new(Limits::default()).unwrap();
    for (name, cfg) in [
        ("exclude-attr", "stock=out"),
        ("boost-sponsored", "sponsored:0.1"),
        ("min-score", "0.5"),
    ] {
        let p = host.compile(name, wasm(name)).unwrap();
        let (inp, mut times) = (input(200), Vec::new());
        for _ in 0..2000 {
            let t = std::time::Instant::now();
            if p.world == World::Filter {
                host.call_filter(&p, &inp, cfg).unwrap();
            } else {
                host.call_order(&p, &inp, cfg).unwrap();
            }
            times.push(t.elapsed().as_nanos());
        }
        times.sort_unstable();
        eprintln!(
            "{name}: reuse {:?}, {:?} instances for 2000 calls, median {} ns",
            p.instance_reuse, p.stats.instances, times[1000]
        );
    }
}
