//! The README's redis-cli session, run as written against a real server:
//! every `> command` line goes through `redis-cli -3` (its own quoting
//! rules included) and every `$ command` line through `sh` with `redis-cli`
//! pointed at the test server; each reply must match the lines shown under
//! it. `...` ends a shown reply early; numbers match to 6 significant digits.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// One runnable line and the reply the README shows for it.
struct Step {
    /// `>` (inside redis-cli) or `$` (a shell line).
    kind: char,
    line: String,
    expected: Vec<String>,
}

/// The steps of every fenced block that starts with a `$ ` line.
fn steps(markdown: &str) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    let mut in_block = false;
    let mut runnable = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            runnable = false;
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            runnable = true;
            // The server and the interactive prompt are the harness's.
            if cmd.starts_with("redis-server") || cmd == "redis-cli -3" {
                continue;
            }
            out.push(Step {
                kind: '$',
                line: cmd.into(),
                expected: vec![],
            });
        } else if let (true, Some(cmd)) = (runnable, line.strip_prefix("> ")) {
            out.push(Step {
                kind: '>',
                line: cmd.into(),
                expected: vec![],
            });
        } else if runnable {
            if let Some(s) = out.last_mut() {
                s.expected.push(line.to_string());
            }
        }
    }
    out
}

fn same_token(want: &str, got: &str) -> bool {
    if want == got {
        return true;
    }
    match (want.parse::<f64>(), got.parse::<f64>()) {
        (Ok(a), Ok(b)) => (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1e-12),
        _ => false,
    }
}

fn matches(expected: &[String], actual: &str) -> Result<(), String> {
    let got: Vec<&str> = actual.lines().collect();
    for (i, want) in expected.iter().enumerate() {
        if want == "..." {
            return Ok(());
        }
        let Some(g) = got.get(i) else {
            return Err(format!("line {i}: expected {want:?}, the reply ended"));
        };
        let (w, g2): (Vec<&str>, Vec<&str>) = (
            want.split_whitespace().collect(),
            g.split_whitespace().collect(),
        );
        if w.len() != g2.len() || !w.iter().zip(&g2).all(|(a, b)| same_token(a, b)) {
            return Err(format!("line {i}: expected {want:?}, got {g:?}"));
        }
    }
    if got.len() > expected.len() {
        return Err(format!(
            "the reply has more lines: {:?}",
            &got[expected.len()..]
        ));
    }
    Ok(())
}

/// A folder with a `redis-cli` that talks to `port` (first on the PATH).
fn redis_cli_shim(port: u16) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let real = String::from_utf8(
        Command::new("sh")
            .arg("-c")
            .arg("command -v redis-cli")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let shim = dir.path().join("redis-cli");
    std::fs::write(&shim, format!("#!/bin/sh\n# As on a terminal: formatted replies.\nexec {real} -p {port} --no-raw \"$@\"\n")).unwrap();
    Command::new("chmod").arg("+x").arg(&shim).status().unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (dir, PathBuf::from(path))
}

fn run_step(step: &Step, path: &Path, root: &Path) -> String {
    let mut command = if step.kind == '>' {
        let mut c = Command::new("redis-cli");
        c.args(["-3", "--no-raw"]);
        c
    } else {
        let mut c = Command::new("sh");
        c.arg("-c").arg(&step.line).current_dir(root);
        c
    };
    let mut child = command
        .env("PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if step.kind == '>' {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{}\n", step.line).as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn the_readme_session_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let steps = steps(&readme);
    assert!(
        steps.len() >= 15,
        "found only {} runnable README lines",
        steps.len()
    );
    let s = server();
    let (_shim, path) = redis_cli_shim(s.port);
    let mut failures = Vec::new();
    for step in &steps {
        let actual = run_step(step, &path, root);
        if let Err(e) = matches(&step.expected, &actual) {
            failures.push(format!(
                "{} {}\n  {e}\n  actual:\n{actual}",
                step.kind, step.line
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "README lines whose replies differ:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_comparison_can_fail() {
    assert!(matches(&["1) \"a\"".into()], "1) \"b\"\n").is_err());
    assert!(matches(&["(double) 0.5".into()], "(double) 0.5000000001\n").is_ok());
    assert!(matches(&["x".into(), "...".into()], "x\ny\nz\n").is_ok());
    assert!(matches(&["x".into()], "x\ny\n").is_err());
}
