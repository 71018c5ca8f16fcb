//! Starts a throw-away `redis-server` with the module loaded on a free port:
//! used by the demo, the benchmarks and the integration tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

/// File name of the module library.
pub const MODULE_FILE: &str = "librecsys.so";

/// Finds the module: `$RECSYS_MODULE`, else next to this executable or one
/// level up (target/<profile>/ from target/<profile>/deps/).
pub fn find_module() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("RECSYS_MODULE") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join(MODULE_FILE);
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "cannot find {MODULE_FILE}: build it with `cargo build --release -p recsys-module` or set RECSYS_MODULE"
    )
}

/// Finds ONNX Runtime: `$RECSYS_ORT_LIB`, else the copy that
/// `scripts/ort-venv.sh` installs under target/ort-venv (onnxruntime 1.31.1
/// from PyPI). `None` when neither exists.
pub fn find_onnxruntime() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("RECSYS_ORT_LIB") {
        return Some(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ort-venv/lib");
    for entry in std::fs::read_dir(root).ok()?.flatten() {
        let lib = entry
            .path()
            .join("site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1");
        if lib.exists() {
            return lib.canonicalize().ok();
        }
    }
    None
}

/// Like [`find_onnxruntime`], failing with how to install it.
pub fn require_onnxruntime() -> Result<PathBuf> {
    find_onnxruntime().ok_or_else(|| {
        anyhow!("ONNX Runtime 1.31.1 not found: run scripts/ort-venv.sh (pip install onnxruntime==1.31.1 into target/ort-venv) or set RECSYS_ORT_LIB to libonnxruntime.so.1.31.1")
    })
}

/// A free TCP port on localhost.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The redis-server to run: `RECSYS_REDIS_SERVER` (the tests run a second
/// time against Redis 7.4 this way, see scripts/redis74.sh), else the one
/// on the PATH.
pub fn server_binary() -> String {
    std::env::var("RECSYS_REDIS_SERVER")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "redis-server".into())
}

/// A running redis-server; killed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub module: PathBuf,
}

impl RedisServer {
    /// Starts redis-server with the module and `extra` config arguments
    /// (e.g. `["--appendonly", "yes"]`), module args in `module_args`.
    pub fn start(module_args: &[&str], extra: &[&str]) -> Result<RedisServer> {
        let dir = tempfile::tempdir()?;
        Self::start_in(dir, &find_module()?, module_args, extra)
    }

    /// Like [`RedisServer::start`], with `conf` as the server's redis.conf
    /// (restarting with [`RedisServer::start_in`] on the same directory
    /// reads it again, with what CONFIG REWRITE wrote).
    pub fn start_with_conf(module_args: &[&str], conf: &str) -> Result<RedisServer> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("redis.conf"), conf)?;
        Self::start_in(dir, &find_module()?, module_args, &[])
    }

    /// Like [`RedisServer::start`] in a given data directory (to restart on the same files).
    pub fn start_in(
        dir: tempfile::TempDir,
        module: &Path,
        module_args: &[&str],
        extra: &[&str],
    ) -> Result<RedisServer> {
        Self::start_on(dir, module, module_args, extra, free_port()?)
    }

    /// Like [`RedisServer::start_in`] on a given port (cluster nodes need
    /// their bus port, +10000, free as well).
    pub fn start_on(
        dir: tempfile::TempDir,
        module: &Path,
        module_args: &[&str],
        extra: &[&str],
        port: u16,
    ) -> Result<RedisServer> {
        Self::launch(&server_binary(), dir, module, module_args, extra, port)
    }

    /// Like [`RedisServer::start`] with a given redis-server binary (a
    /// bench that needs another server's modules beside this one).
    pub fn start_binary(binary: &str, module_args: &[&str], extra: &[&str]) -> Result<RedisServer> {
        let dir = tempfile::tempdir()?;
        Self::launch(
            binary,
            dir,
            &find_module()?,
            module_args,
            extra,
            free_port()?,
        )
    }

    fn launch(
        binary: &str,
        dir: tempfile::TempDir,
        module: &Path,
        module_args: &[&str],
        extra: &[&str],
        port: u16,
    ) -> Result<RedisServer> {
        let mut load = vec![
            "--loadmodule".to_string(),
            module.to_string_lossy().to_string(),
        ];
        load.extend(module_args.iter().map(|s| s.to_string()));
        // A redis.conf in the data directory (see `start_with_conf`) comes
        // first, as redis-server wants it; CONFIG REWRITE writes it back.
        let conf = dir.path().join("redis.conf");
        // After CONFIG REWRITE the file loads the module itself.
        let conf_loads_module = std::fs::read_to_string(&conf)
            .is_ok_and(|t| t.lines().any(|l| l.starts_with("loadmodule ")));
        let child = Command::new(binary)
            .args(conf.exists().then_some(&conf))
            .arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(dir.path())
            .arg("--save")
            .arg("")
            .arg("--enable-debug-command")
            .arg("yes")
            .arg("--logfile")
            .arg(dir.path().join("redis.log"))
            .args(if conf_loads_module {
                &[][..]
            } else {
                &load[..]
            })
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start redis-server (apt-get install redis-server)")?;
        let mut server = RedisServer {
            child,
            port,
            dir,
            module: module.to_path_buf(),
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("redis-server exited ({status}): {}", self.log_tail());
            }
            if let Ok(mut c) = self.connection() {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query(&mut c);
                match pong {
                    Ok(_) => return Ok(()),
                    // Up, with a password (requirepass in a redis.conf).
                    Err(e) if e.to_string().contains("NOAUTH") => return Ok(()),
                    Err(_) => {}
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(anyhow!("redis-server did not answer: {}", self.log_tail()))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn connection(&self) -> Result<redis::Connection> {
        Ok(redis::Client::open(self.url())?.get_connection()?)
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of the server log.
    pub fn log_tail(&self) -> String {
        self.log_lines(15)
    }

    /// The last `n` lines of the server log.
    pub fn log_lines(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops the server (SHUTDOWN, with a save when asked) and returns its data directory.
    pub fn stop(mut self, save: bool) -> tempfile::TempDir {
        if let Ok(mut c) = self.connection() {
            let mode = if save { "SAVE" } else { "NOSAVE" };
            let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").arg(mode).query(&mut c);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && self.is_alive() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
