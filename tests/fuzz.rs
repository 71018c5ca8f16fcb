//! A bounded fuzz run in CI: random and half-valid arguments at every
//! command (directly, in MULTI, from Lua) and mutated DUMP payloads at
//! RESTORE, against a real server. Zero deaths, zero `internal error`
//! replies, zero hangs, and the dataset still loads. `RECSYS_FUZZ_SECONDS`
//! sets the length (default 90); `recsys fuzz --seconds N` runs longer.

use recsys_cli::fuzz::{run, Fuzz};

#[test]
fn fuzzed_commands_and_payloads_never_break_the_server() {
    let seconds = std::env::var("RECSYS_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let report = run(&Fuzz {
        seconds,
        seed: 0xF022,
        plugins: root.join("plugins/dist"),
        fixtures: root.join("tests/fixtures"),
    })
    .expect("fuzz run");
    report.print();
    assert!(
        report.iterations > 1000,
        "too few commands: {}",
        report.iterations
    );
    assert!(
        report.restores > 10,
        "too few RESTOREs: {}",
        report.restores
    );
    assert!(report.clean(), "the fuzzer found failures (printed above)");
}
