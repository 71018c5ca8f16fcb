//! Host bindings generated from `wit/recsys.wit`, one module per world. The
//! `order` world reuses the `filter` world's types and host interface.

pub mod filter {
    wasmtime::component::bindgen!({ world: "filter", path: "wit" });
}

pub mod order {
    wasmtime::component::bindgen!({
        world: "order",
        path: "wit",
        with: {
            "recsys:plugin/types": super::filter::recsys::plugin::types,
            "recsys:plugin/host": super::filter::recsys::plugin::host,
        },
    });
}
