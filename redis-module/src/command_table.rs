//! The command table: name, flags, arity, key specs and docs of every
//! RECSYS.* command, and the registration that hands them to Redis. Each
//! handler is wrapped so that a panic becomes an error reply instead of
//! killing the server.

use std::ffi::CString;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::time::Instant;

use redis_module::commands::{get_redis_key_spec, BeginSearch, FindKeys, KeySpec, KeySpecFlags};
use redis_module::{raw, Context, RedisString};

use crate::args::CmdResult;
use crate::cluster::store as cl;
use crate::cluster::wait as cw;
use crate::cmd::batch as b;
use crate::cmd::catalog as c;
use crate::cmd::experiment as x;
use crate::cmd::model as m;
use crate::cmd::plugin as p;
use crate::cmd::recommend as r;
use crate::cmd::request_args::pipeline_syntax;
use crate::command_docs;
use crate::metrics::{self, CommandStats};
use crate::reply::Reply;
use crate::util::{log_warning, panic_message};

type Handler = fn(&Context, &[RedisString]) -> CmdResult<Reply>;
type RawCmd =
    extern "C" fn(*mut raw::RedisModuleCtx, *mut *mut raw::RedisModuleString, c_int) -> c_int;

/// Runs a handler with a panic guard and writes its reply; counts the
/// call (a command that blocks its client is counted when its worker
/// finishes, see [`crate::workers::Blocked`]).
fn dispatch(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
    handler: Handler,
    stats: &'static CommandStats,
) -> c_int {
    let started = Instant::now();
    metrics::set_current(Some((stats, started)));
    let run = || {
        let context = Context::new(ctx);
        let args = redis_module::decode_args(ctx, argv, argc);
        handler(&context, &args)
    };
    let reply = match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => Reply::Error(e),
        Err(p) => {
            log_warning(&format!("recsys: handler panicked: {}", panic_message(&p)));
            Reply::internal(panic_message(&p))
        }
    };
    metrics::set_current(None);
    if !matches!(reply, Reply::Blocked) {
        stats.record(started, matches!(reply, Reply::Error(_)));
    }
    // SAFETY: `ctx` is the live context Redis passed to this command.
    unsafe { reply.write(ctx) };
    raw::REDISMODULE_OK as c_int
}

/// How a command touches its key (first argument).
#[derive(Clone, Copy)]
enum KeyUse {
    Create,
    Insert,
    Delete,
    Read,
    /// Read and written (the user hash of RECSYS.EVENT).
    Update,
}

impl KeyUse {
    fn flags(self) -> KeySpecFlags {
        match self {
            KeyUse::Create => KeySpecFlags::READ_WRITE | KeySpecFlags::INSERT,
            KeyUse::Insert => KeySpecFlags::READ_WRITE | KeySpecFlags::UPDATE,
            KeyUse::Delete => KeySpecFlags::READ_WRITE | KeySpecFlags::DELETE,
            KeyUse::Read => KeySpecFlags::READ_ONLY | KeySpecFlags::ACCESS,
            KeyUse::Update => {
                KeySpecFlags::READ_WRITE | KeySpecFlags::ACCESS | KeySpecFlags::UPDATE
            }
        }
    }
}

struct Spec {
    name: &'static str,
    /// The entry point Redis calls, and the command's counters for INFO.
    func: RawCmd,
    stats: &'static CommandStats,
    flags: &'static str,
    arity: c_int,
    /// Uses of the keys at argv[1], argv[2], ...
    keys: &'static [KeyUse],
    summary: &'static str,
    complexity: &'static str,
    /// The arguments after the command name, in the grammar of
    /// [`crate::command_docs`] (COMMAND DOCS `arguments`); `{recommend}`
    /// stands for RECOMMEND's own options
    /// ([`crate::cmd::recommend::OWN_OPTIONS`]), `{pipeline}`
    /// stands for the shared pipeline options
    /// ([`crate::cmd::request_args::pipeline_syntax`]).
    syntax: &'static str,
}

/// The command table, one entry per command: `command_table! { Spec {
/// name: "RECSYS.CREATE", handler: c::create, flags: ..., ... }, ... }` defines
/// [`SPECS`] with, for each entry, the `extern "C"` entry point Redis calls
/// (the handler behind [`dispatch`]'s panic guard) and its
/// [`CommandStats`], so a command is named once.
macro_rules! command_table {
    ($( Spec { name: $name:literal, handler: $handler:path, $($field:ident : $value:expr),* $(,)? } ),* $(,)?) => {
        /// Every RECSYS.* command.
        static SPECS: &[Spec] = &[$(
            {
                static STATS: CommandStats = CommandStats::new($name);
                extern "C" fn entry(
                    ctx: *mut raw::RedisModuleCtx,
                    argv: *mut *mut raw::RedisModuleString,
                    argc: c_int,
                ) -> c_int {
                    dispatch(ctx, argv, argc, $handler, &STATS)
                }
                Spec { name: $name, func: entry, stats: &STATS, $($field: $value),* }
            }
        ),*];
    };
}

/// The counters of every command, in table order, for INFO.
pub fn command_stats() -> impl Iterator<Item = &'static CommandStats> {
    SPECS.iter().map(|s| s.stats)
}

command_table! {
    Spec { name: "RECSYS.CREATE", handler: c::create,
        flags: "write deny-oom",
        arity: -4,
        keys: &[KeyUse::Create],
        summary: "Creates a catalog of item vectors",
        complexity: "O(1)",
        syntax: "key:key DIM dim:integer [METRIC metric=(IP | COSINE | L2)] [M m:integer] [EF_CONSTRUCTION ef_construction:integer] [EF_SEARCH ef_search:integer] [QUANT quant=(F32 | Q8)] [SESSION session=(items:integer weight:double)]",
    },
    Spec { name: "RECSYS.ITEM.SET", handler: c::item_set,
        flags: "write deny-oom",
        arity: -5,
        keys: &[KeyUse::Insert],
        summary: "Inserts or replaces one item (vector and attributes)",
        complexity: "O(log(N)) graph insertion",
        syntax: "key:key id:string vector=(VALUES values:double... | FP32 blob:string) [ATTRS attrs:string]",
    },
    Spec { name: "RECSYS.ITEM.MSET", handler: c::item_mset,
        flags: "write deny-oom",
        arity: -4,
        keys: &[KeyUse::Insert],
        summary: "Inserts or replaces many items given as FP32 blobs, optionally with attributes",
        complexity: "O(K log(N)) for K items",
        syntax: "key:key [WITHATTRS] item=(id:string blob:string [attrs:string])...",
    },
    Spec { name: "RECSYS.ITEM.SETATTRS", handler: c::item_setattrs,
        flags: "write deny-oom fast",
        arity: 4,
        keys: &[KeyUse::Update],
        summary: "Replaces an item's attributes, keeping its vector, graph links and popularity",
        complexity: "O(size of the attributes)",
        syntax: "key:key id:string attrs:string",
    },
    Spec { name: "RECSYS.ALTER", handler: c::alter,
        flags: "write deny-oom fast",
        arity: -2,
        keys: &[KeyUse::Update],
        summary: "Changes a catalog's settings (the default SESSION blend and SEQUENCE weight)",
        complexity: "O(1)",
        syntax: "key:key [SESSION session=(items:integer weight:double)] [SEQUENCE sequence:double]",
    },
    Spec { name: "RECSYS.ITEM.GET", handler: c::item_get,
        flags: "readonly fast",
        arity: -3,
        keys: &[KeyUse::Read],
        summary: "Returns an item's vector and attributes",
        complexity: "O(DIM)",
        syntax: "key:key id:string [FP32]",
    },
    Spec { name: "RECSYS.ITEM.DEL", handler: c::item_del,
        flags: "write fast",
        arity: -3,
        keys: &[KeyUse::Delete],
        summary: "Deletes items",
        complexity: "O(K) for K ids",
        syntax: "key:key id:string...",
    },
    Spec { name: "RECSYS.SEARCH", handler: c::search,
        flags: "readonly",
        arity: -5,
        keys: &[KeyUse::Read],
        summary: "Nearest items to a vector (runs on a worker thread)",
        complexity: "O(EF log(N))",
        syntax: "key:key k:integer vector=(VALUES values:double... | FP32 blob:string) [EF ef:integer] [WITHSCORES]",
    },
    Spec { name: "RECSYS.SIMILAR", handler: c::similar,
        flags: "readonly",
        arity: -4,
        keys: &[KeyUse::Read],
        summary: "Items nearest to an item, never the item itself (runs on a worker thread)",
        complexity: "O(EF log(N))",
        syntax: "key:key id:string k:integer [EF ef:integer] [WITHSCORES]",
    },
    Spec { name: "RECSYS.INFO", handler: c::info,
        flags: "readonly fast",
        arity: 2,
        keys: &[KeyUse::Read],
        summary: "Catalog parameters, item counts and memory",
        complexity: "O(1)",
        syntax: "key:key",
    },
    Spec { name: "RECSYS.RECOMMEND", handler: r::recommend, flags: "readonly", arity: -3, keys: &[KeyUse::Read, KeyUse::Read],
        summary: "Recommends items for a user: user vector, retrieval, filters, ranking, ordering (runs on a worker thread)",
        complexity: "O(EF log(N)) retrieval + O(CANDIDATES) filtering and ordering",
        syntax: "catalog:key user:key [K k:integer] {pipeline} {recommend}" },
    Spec { name: "RECSYS.EVENT", handler: r::event, flags: "write deny-oom fast", arity: -4, keys: &[KeyUse::Update, KeyUse::Update],
        summary: "Records an interaction: the user's recent items and the item's popularity; REQUEST credits it to an experiment's variant", complexity: "O(HISTORY)",
        syntax: "catalog:key user:key item:string [TYPE type:string] [WEIGHT weight:double] [TS ts:integer] [REQUEST request:string]" },
    Spec { name: "RECSYS.POPULARITY.SET", handler: c::popularity_set, flags: "write deny-oom", arity: -6, keys: &[KeyUse::Insert],
        summary: "Sets items' popularity (scores in units at an epoch); AOF rewrite writes popularity back with it", complexity: "O(N) for N items",
        syntax: "catalog:key EPOCH epoch:integer pair=(id:string score:double)..." },
    Spec { name: "RECSYS.BATCH", handler: b::batch, flags: "write deny-oom", arity: -8, keys: &[KeyUse::Read],
        summary: "Starts a background job writing recommendations for every user hash matching a pattern into lists",
        complexity: "O(users x RECOMMEND), in the background",
        syntax: "catalog:key MATCH pattern:pattern K k:integer INTO prefix:string [TTL ttl:integer] {pipeline}" },
    Spec { name: "RECSYS.BATCH.STATUS", handler: b::status, flags: "readonly fast", arity: -1, keys: &[],
        summary: "Progress and errors of batch jobs", complexity: "O(1)",
        syntax: "[id:integer]" },
    Spec { name: "RECSYS.PLUGIN.LOAD", handler: p::load, flags: "write admin deny-oom", arity: -3, keys: &[],
        summary: "Loads (or with REPLACE swaps) a WebAssembly plugin component; compiles on a worker thread",
        complexity: "O(component size)",
        syntax: "name:string component:string [REPLACE]" },
    Spec { name: "RECSYS.PLUGIN.LIST", handler: p::list, flags: "readonly fast", arity: 1, keys: &[],
        summary: "Lists the loaded plugins", complexity: "O(plugins)",
        syntax: "" },
    Spec { name: "RECSYS.PLUGIN.INFO", handler: p::info, flags: "readonly fast", arity: 2, keys: &[],
        summary: "A plugin's world, sha256, size, calls, errors, traps and latency", complexity: "O(1)",
        syntax: "name:string" },
    Spec { name: "RECSYS.PLUGIN.DEL", handler: p::del, flags: "write admin fast", arity: 2, keys: &[],
        summary: "Removes a plugin (calls in flight finish)", complexity: "O(1)",
        syntax: "name:string" },
    Spec { name: "RECSYS.MODEL.SET", handler: m::set, flags: "write admin deny-oom", arity: -5, keys: &[KeyUse::Insert],
        summary: "Adds or atomically replaces a ranking (ROLE RANK), query (ROLE QUERY) or sequence (SEQUENCE, ROLE RECENT) model of a catalog: ONNX or native DLRM weights with a feature SCHEMA, or native sequence-tower weights; builds on a worker thread",
        complexity: "O(model size)",
        syntax: "catalog:key name:string model=(ONNX onnx:string | DLRM dlrm:string | SEQUENCE sequence:string) [ROLE role=(RANK | QUERY | RECENT)] [SCHEMA feature:string...]" },
    Spec { name: "RECSYS.MODEL.LIST", handler: m::list, flags: "readonly fast", arity: 2, keys: &[KeyUse::Read],
        summary: "Lists a catalog's models", complexity: "O(models)",
        syntax: "catalog:key" },
    Spec { name: "RECSYS.MODEL.INFO", handler: m::info, flags: "readonly fast", arity: 3, keys: &[KeyUse::Read],
        summary: "A model's kind, role, device, schema, sha256, calls, errors and mean latency", complexity: "O(1)",
        syntax: "catalog:key name:string" },
    Spec { name: "RECSYS.COPY", handler: cl::copy_command, flags: "write admin deny-oom", arity: -3, keys: &[],
        summary: "Internal: what a cluster master did to its catalog copies, replayed by its replicas and AOF (refused from clients)",
        complexity: "O(size of the write)",
        syntax: "subcommand:string catalog:string arg:string..." },
    Spec { name: "RECSYS.COPIES", handler: cl::copies_command, flags: "readonly fast", arity: 1, keys: &[],
        summary: "This cluster node's copies of other nodes' catalogs: state, position, owner, items", complexity: "O(copies)",
        syntax: "" },
    Spec { name: "RECSYS.COPIES.WAIT", handler: cw::command, flags: "readonly", arity: 4, keys: &[KeyUse::Read],
        summary: "Blocks until numcopies other masters' copies of the catalog have its writes so far, or timeout milliseconds; replies with how many do (0 outside a cluster)",
        complexity: "O(masters)",
        syntax: "key:key numcopies:integer timeout:integer" },
    Spec { name: "RECSYS.EXPERIMENT.SET", handler: x::set, flags: "write deny-oom", arity: -5, keys: &[KeyUse::Update],
        summary: "Sets (or replaces, with fresh counts) an A/B experiment of a catalog: variants with weights and the RECOMMEND options each applies",
        complexity: "O(variants x size of their OPTIONS)",
        syntax: "catalog:key name:string variant=(VARIANT variant:string [WEIGHT weight:integer] [OPTIONS options:string])... [CREATED created:integer]" },
    Spec { name: "RECSYS.EXPERIMENT.DEL", handler: x::del, flags: "write fast", arity: 3, keys: &[KeyUse::Update],
        summary: "Removes an experiment and its counts", complexity: "O(1)",
        syntax: "catalog:key name:string" },
    Spec { name: "RECSYS.EXPERIMENT.REPORT", handler: x::report, flags: "readonly fast", arity: 3, keys: &[KeyUse::Read],
        summary: "Per variant of an experiment: users, impressions, clicks, purchases, CTR and purchase rate with 95% intervals, lift and significance against the control",
        complexity: "O(variants)",
        syntax: "catalog:key name:string" },
    Spec { name: "RECSYS.EXPERIMENT.SYNC", handler: x::sync, flags: "write admin deny-oom", arity: -4, keys: &[KeyUse::Update],
        summary: "Internal: experiment counts a master flushed, and experiments written by AOF rewrite (refused from clients)",
        complexity: "O(variants)",
        syntax: "catalog:key form:string arg:string..." },
    Spec { name: "RECSYS.MODEL.DEL", handler: c::model_del, flags: "write admin fast", arity: 3, keys: &[KeyUse::Delete],
        summary: "Removes a model from a catalog (requests in flight finish with it)", complexity: "O(1)",
        syntax: "catalog:key name:string" },
}

const INFO_VERSION: raw::RedisModuleCommandInfoVersion = raw::RedisModuleCommandInfoVersion {
    version: 1,
    sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
    sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
    sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
};

/// ACL categories of a command, from its flags: @read or @write, @fast or
/// @slow, and @admin @dangerous for the commands that install or remove
/// code (plugins, models).
fn acl_categories(flags: &str) -> String {
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let mut cats = vec![if has("write") { "write" } else { "read" }];
    cats.push(if has("fast") { "fast" } else { "slow" });
    if has("admin") {
        cats.extend(["admin", "dangerous"]);
    }
    cats.join(" ")
}

/// Sets the ACL categories where the server lets modules do so (Redis
/// 7.2+; on 7.0 docs/operations.md gives the ACL rules to write instead).
///
/// # Safety
/// `cmd` must be a command handle from `RedisModule_GetCommand`.
unsafe fn set_acl_categories(cmd: *mut raw::RedisModuleCommand, flags: &str) -> Result<(), String> {
    // SAFETY: the API table is set at init.
    let Some(set) = (unsafe { raw::RedisModule_SetCommandACLCategories }) else {
        return Ok(());
    };
    let cats = CString::new(acl_categories(flags)).map_err(|e| e.to_string())?;
    // SAFETY: live command handle and string.
    if unsafe { set(cmd, cats.as_ptr()) } != raw::REDISMODULE_OK as c_int {
        return Err(format!(
            "cannot set ACL categories '{}'",
            acl_categories(flags)
        ));
    }
    Ok(())
}

/// The one-dot name of a two-dot command (`RECSYS.ITEM.SET` ->
/// `RECSYS.ITEM_SET`): cluster clients such as redis-py's RedisCluster
/// read `module.command` and refuse names with a second dot
/// (docs/cluster.md), so every such command is registered under both.
fn one_dot_alias(name: &str) -> Option<String> {
    let (module, rest) = name.split_once('.')?;
    rest.contains('.')
        .then(|| format!("{module}.{}", rest.replace('.', "_")))
}

/// Commands routed by their user key in a cluster: their key specs name
/// only the user (argv 2), and the catalog is the node's key or copy
/// (docs/cluster.md).
const USER_ROUTED: &[&str] = &["RECSYS.RECOMMEND", "RECSYS.EVENT"];

/// Commands that declare no key in a cluster: BATCH runs on every master
/// (send it to all of them), each over its own users, with the catalog's
/// key or copy.
const KEYLESS_IN_CLUSTER: &[&str] = &["RECSYS.BATCH"];

/// The key uses a command declares and the argv index of the first: in a
/// cluster, the user-routed commands declare only their user key, BATCH
/// none.
fn declared_keys(s: &Spec) -> (&'static [KeyUse], i32) {
    let cluster = crate::cluster::enabled();
    if cluster && USER_ROUTED.contains(&s.name) {
        (&s.keys[1..], 2)
    } else if cluster && KEYLESS_IN_CLUSTER.contains(&s.name) {
        (&[], 1)
    } else {
        (s.keys, 1)
    }
}

/// Registers every command (and its one-dot alias) with its key spec and docs.
pub fn register(ctx: &Context) -> Result<(), String> {
    for s in SPECS {
        register_one(ctx, s, s.name, s.summary.to_string())?;
        if let Some(alias) = one_dot_alias(s.name) {
            register_one(
                ctx,
                s,
                &alias,
                format!("{} (the one-dot name of {})", s.summary, s.name),
            )?;
        }
    }
    Ok(())
}

fn register_one(
    ctx: &Context,
    s: &Spec,
    command_name: &str,
    summary: String,
) -> Result<(), String> {
    {
        let name = CString::new(command_name).map_err(|e| e.to_string())?;
        let flags = CString::new(s.flags).map_err(|e| e.to_string())?;
        // SAFETY: called from module init on the main thread with live strings.
        unsafe {
            let (keys, first_key) = declared_keys(s);
            let (first, last, step) = match keys.len() {
                0 => (0, 0, 0),
                n => (first_key, first_key + n as c_int - 1, 1),
            };
            if raw::RedisModule_CreateCommand.unwrap()(
                ctx.ctx,
                name.as_ptr(),
                Some(s.func),
                flags.as_ptr(),
                first,
                last,
                step,
            ) != raw::REDISMODULE_OK as c_int
            {
                return Err(format!("cannot register {command_name}"));
            }
            let cmd = raw::RedisModule_GetCommand.unwrap()(ctx.ctx, name.as_ptr());
            if cmd.is_null() {
                return Err(format!("cannot find {command_name} after registering it"));
            }
            // A server that refuses the categories still serves the command
            // (ACL rules by name keep working): log it, do not fail the load.
            if let Err(e) = set_acl_categories(cmd, s.flags) {
                crate::util::log_warning(&format!("recsys: {command_name}: {e}"));
            }
            let specs = keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    KeySpec::new(
                        None,
                        k.flags(),
                        BeginSearch::new_index(i as i32 + first_key),
                        FindKeys::new_range(0, 1, 0),
                    )
                })
                .collect();
            let mut key_specs = get_redis_key_spec(specs);
            // A catalog that is not a declared key is documented as a name.
            let mut syntax = s
                .syntax
                .replace("{pipeline}", &pipeline_syntax())
                .replace("{recommend}", &crate::cmd::recommend::own_syntax());
            if keys.len() < s.keys.len() {
                syntax = syntax.replacen("catalog:key", "catalog:string", 1);
            }
            let arg_tree = command_docs::parse(&syntax)
                .map_err(|e| format!("{command_name}: bad syntax in the command table: {e}"))?;
            let mut raw_args = command_docs::RawArgs::new(&arg_tree)?;
            let summary = CString::new(summary).map_err(|e| e.to_string())?;
            let complexity = CString::new(s.complexity).map_err(|e| e.to_string())?;
            let since = CString::new(env!("CARGO_PKG_VERSION")).map_err(|e| e.to_string())?;
            let mut info = raw::RedisModuleCommandInfo {
                version: &INFO_VERSION,
                summary: summary.as_ptr(),
                complexity: complexity.as_ptr(),
                since: since.as_ptr(),
                history: ptr::null_mut(),
                tips: ptr::null(),
                arity: s.arity,
                key_specs: key_specs.as_mut_ptr(),
                args: if arg_tree.is_empty() {
                    ptr::null_mut()
                } else {
                    raw_args.as_ptr()
                },
            };
            let ok = raw::RedisModule_SetCommandInfo.unwrap()(cmd, &mut info)
                == raw::REDISMODULE_OK as c_int;
            // The key spec's notes are never set, so nothing else to free.
            drop(key_specs);
            if !ok {
                return Err(format!("cannot set command info of {command_name}"));
            }
        }
    }
    Ok(())
}
