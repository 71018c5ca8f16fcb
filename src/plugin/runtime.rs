//! A wasmtime engine with the linker of the imports a plugin may use, in
//! the two shapes the host needs: pooled fresh instances, or on-demand
//! instances whose memories the host owns (for per-thread reuse).

use std::collections::HashSet;
use std::sync::Arc;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::filter::recsys::plugin::host as host_api;
use super::bindings::filter::FilterPre;
use super::bindings::order::OrderPre;
use super::host::{root_cause, Limits, Pre, StoreData, World};
use super::memory;

/// An engine and the linker of the imports a plugin may use.
pub(super) struct Runtime {
    pub(super) engine: Engine,
    pub(super) linker: Linker<StoreData>,
}

impl Runtime {
    /// `pooled`: instances from wasmtime's pool, a fresh one per call.
    /// Otherwise instances on demand with memories from [`memory::Creator`],
    /// kept per thread and reset by the host.
    pub(super) fn new(limits: &Limits, pooled: bool) -> Result<Runtime, String> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(limits.stack_bytes)
            .memory_reservation(limits.memory_bytes as u64)
            .memory_guard_size(64 << 10)
            // Data segments are copied into the resident pages on each
            // instantiation: no mmap per call (and no TLB shootdowns
            // between worker threads), cheaper for small plugins.
            .memory_init_cow(false);
        if pooled {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(limits.max_instances)
                .total_core_instances(limits.max_instances * 4)
                .total_memories(limits.max_instances * 4)
                .total_tables(limits.max_instances * 4)
                .max_memory_size(limits.memory_bytes)
                // Reset the first pages of a memory by zeroing instead of
                // unmapping: the next call does not page-fault them back in.
                .linear_memory_keep_resident(128 << 10)
                .table_keep_resident(64 << 10);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        } else {
            config
                .allocation_strategy(InstanceAllocationStrategy::OnDemand)
                .with_host_memory(Arc::new(memory::Creator));
        }
        let engine =
            Engine::new(&config).map_err(|e| format!("cannot start the plugin engine: {e}"))?;
        let mut linker: Linker<StoreData> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| e.to_string())?;
        host_api::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |s| s)
            .map_err(|e| e.to_string())?;
        Ok(Runtime { engine, linker })
    }

    /// Compiles and pre-links a component for `world`.
    pub(super) fn prepare(&self, bytes: &[u8]) -> Result<(World, Pre), String> {
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| format!("not a valid WebAssembly component: {}", root_cause(&e)))?;
        let ty = component.component_type();
        let exports: HashSet<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let world = if exports.contains("filter") {
            World::Filter
        } else if exports.contains("order") {
            World::Order
        } else {
            return Err(
                "component exports neither `filter` nor `order` (see wit/recsys.wit)".into(),
            );
        };
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            format!(
                "component needs an import the sandbox does not provide: {}",
                root_cause(&e)
            )
        })?;
        let pre = match world {
            World::Filter => Pre::Filter(
                FilterPre::new(pre).map_err(|e| format!("not a filter world component: {e}"))?,
            ),
            World::Order => Pre::Order(
                OrderPre::new(pre).map_err(|e| format!("not an order world component: {e}"))?,
            ),
        };
        Ok((world, pre))
    }
}
