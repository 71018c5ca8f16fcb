//! The rewrite against the example plugins and small hand-written modules.

use super::*;

fn dist(name: &str) -> Vec<u8> {
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("plugins/dist/{name}.wasm"));
    std::fs::read(&p).unwrap_or_else(|_| panic!("{} missing: run plugins/build.sh", p.display()))
}

#[test]
fn example_plugins_are_reusable_and_stay_valid() {
    for name in [
        "exclude-attr",
        "boost-sponsored",
        "max-per-category",
        "hostile",
        "min-score",
    ] {
        let out = prepare(&dist(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        if std::env::var("RECSYS_DUMP").is_ok() {
            std::fs::write(format!("/tmp/{name}.reuse.wasm"), &out).unwrap();
        }
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
            .validate_all(&out)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
