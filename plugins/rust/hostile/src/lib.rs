//! A deliberately hostile filter plugin for the sandbox tests. The config
//! picks the misbehaviour: loop, oom, stack, trap, range, dup, huge, error,
//! `alloc:<MiB>` (hold that much memory, then keep everything: fine under
//! the memory cap, a trap above it), `deep:<n>` (recurse n calls deep in wasm
//! frames only, no shadow stack: fine under PLUGIN_STACK_KB, a trap above
//! it), `remember` (count its calls in a static and keep that many
//! candidates: 1 every time when no state survives between calls), or
//! anything else to behave (keep everything).

wit_bindgen::generate!({ world: "filter", path: "../../../wit" });

struct Plugin;

/// Calls this instance has served (`remember`): lives in linear memory.
static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64, buf: &mut [u8; 256]) -> u64 {
    buf[(depth % 256) as usize] = depth as u8;
    let mut local = [0u8; 256];
    local[0] = buf[0];
    recurse(depth + 1, &mut local) + local[1] as u64
}

/// Recursion whose frames live on the engine's stack (wasm locals only, no
/// address taken, so nothing goes to the shadow stack in linear memory); the
/// multiply keeps LLVM from turning it into a loop.
#[inline(never)]
fn deep(n: u64) -> u64 {
    if n == 0 {
        1
    } else {
        deep(n - 1).wrapping_mul(3).wrapping_add(n)
    }
}

impl Guest for Plugin {
    fn filter(req: Request, config: String) -> Result<Vec<u32>, String> {
        let n = req.scores.len() as u32;
        match config.as_str() {
            "loop" => {
                let mut x: u64 = 1;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "oom" => {
                // Reserve without touching: growing memory is cheap, so the
                // memory cap stops this long before the time limit does.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(Vec::with_capacity(1 << 20));
                    std::hint::black_box(&hoard);
                }
            }
            "stack" => {
                let mut buf = [0u8; 256];
                Ok(vec![recurse(0, &mut buf) as u32])
            }
            "trap" => {
                let v: Vec<u32> = Vec::new();
                Ok(vec![v[std::hint::black_box(3)]])
            }
            "range" => Ok(vec![0, n + 5]),
            "dup" => Ok(vec![0, 0]),
            "huge" => Ok((0..300_000).collect()),
            "error" => Err("refusing on purpose".into()),
            "remember" => {
                let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                Ok((0..calls.min(n)).collect())
            }
            alloc if alloc.starts_with("alloc:") => {
                let mib: usize = alloc[6..].parse().map_err(|_| "alloc:<MiB>".to_string())?;
                let held: Vec<Vec<u8>> = (0..mib).map(|i| vec![i as u8; 1 << 20]).collect();
                std::hint::black_box(&held);
                Ok((0..n).collect())
            }
            arg if arg.starts_with("deep:") => {
                let depth: u64 = arg[5..].parse().map_err(|_| "deep:<n>".to_string())?;
                std::hint::black_box(deep(std::hint::black_box(depth)));
                Ok((0..n).collect())
            }
            _ => {
                println!("behaving: keeping {n} candidates");
                Ok((0..n).collect())
            }
        }
    }
}

export!(Plugin);
