//! The Docker image and compose file, checked without Docker (these
//! machines cannot run it): docker-compose.yml parsed by a YAML parser and
//! held to what it promises (healthcheck, data volume, password from an env
//! file, loader, GPU profile, no port open to the world); the Dockerfile's
//! build stage runs the same setup as `.ci/run`; and the image's redis.conf
//! and entrypoint health check run for real against redis-server.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use yaml_rust2::{Yaml, YamlLoader};

fn repo_file(p: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(p))
        .unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn compose() -> Yaml {
    let docs = YamlLoader::load_from_str(&repo_file("docker-compose.yml")).expect("valid YAML");
    assert_eq!(docs.len(), 1);
    docs[0].clone()
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_file_declares_what_it_promises() {
    let c = compose();
    let services = &c["services"];
    for name in ["redis", "loader", "redis-gpu"] {
        assert!(!services[name].is_badvalue(), "service {name} missing");
        assert_eq!(
            services[name]["env_file"].as_str(),
            Some(".env"),
            "{name} takes the password from .env"
        );
    }
    let redis = &services["redis"];
    assert_eq!(
        redis["build"].as_str(),
        Some("."),
        "built from the Dockerfile"
    );
    // Published on loopback only.
    for s in ["redis", "redis-gpu"] {
        for p in strings(&services[s]["ports"]) {
            assert!(
                p.starts_with("127.0.0.1:"),
                "{s} publishes {p} beyond loopback"
            );
        }
    }
    // A named data volume at /data, declared at the top level.
    let vols = strings(&redis["volumes"]);
    let data = vols
        .iter()
        .find(|v| v.ends_with(":/data"))
        .expect("a /data volume");
    let name = data.split(':').next().unwrap();
    assert!(
        !c["volumes"][name].is_badvalue(),
        "volume {name} is not declared"
    );
    // Health checks, and the loader waits for them.
    for s in ["redis", "redis-gpu"] {
        let test = strings(&services[s]["healthcheck"]["test"]);
        assert!(test.join(" ").contains("health"), "{s}: {test:?}");
    }
    assert_eq!(
        services["loader"]["depends_on"]["redis"]["condition"].as_str(),
        Some("service_healthy")
    );
    // The GPU profile reserves a GPU.
    let gpu = &services["redis-gpu"];
    assert_eq!(strings(&gpu["profiles"]), ["gpu"]);
    let dev = &gpu["deploy"]["resources"]["reservations"]["devices"][0];
    assert_eq!(dev["driver"].as_str(), Some("nvidia"));
    assert_eq!(strings(&dev["capabilities"]), ["gpu"]);
    // No password is written in the file.
    let text = repo_file("docker-compose.yml");
    assert!(
        !text.contains("requirepass"),
        "the password belongs in .env"
    );
    // The loader's commands are verbs the tool has.
    let script = strings(&services["loader"]["command"]).join(" ");
    for verb in [
        "recsys import generate",
        "recsys train",
        "recsys load",
        "recsys eval",
    ] {
        assert!(script.contains(verb), "{script}");
    }
}

#[test]
fn dockerfile_builds_like_ci_and_ships_what_redis_conf_loads() {
    let dockerfile = repo_file("Dockerfile");
    let ci = repo_file(".ci/run");
    let test_sh = repo_file("scripts/test.sh");
    // Same setup: CI runs scripts/test.sh, which runs scripts/setup.sh.
    assert!(ci.contains("scripts/test.sh") && test_sh.contains("scripts/setup.sh"));
    assert!(
        dockerfile.contains("RUN scripts/setup.sh"),
        "the image builds with scripts/setup.sh"
    );
    // What redis.conf loads is what the final stage copies in.
    let conf = repo_file("docker/redis.conf");
    let load = conf
        .lines()
        .find(|l| l.starts_with("loadmodule "))
        .expect("loadmodule line");
    for path in load.split_whitespace().filter(|w| w.starts_with('/')) {
        let dir = Path::new(path)
            .parent()
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(
            dockerfile.contains(&format!(" {dir}/\n")),
            "{path}: the Dockerfile copies nothing into {dir}/"
        );
    }
    assert!(dockerfile.contains("HEALTHCHECK"));
    assert!(dockerfile.contains("FROM redis:7.4"));
    // The entrypoint is valid sh.
    let sh = Command::new("sh")
        .arg("-n")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/entrypoint.sh"))
        .status()
        .unwrap();
    assert!(sh.success());
}

#[test]
fn the_image_config_and_health_check_work_on_a_real_server() {
    // docker/redis.conf with this machine's paths, plus what the
    // entrypoint adds (the password).
    let module = recsys_cli::server::find_module().unwrap();
    let conf = repo_file("docker/redis.conf")
        .lines()
        .filter(|l| !l.starts_with("loadmodule") && !l.starts_with("dir "))
        .collect::<Vec<_>>()
        .join("\n");
    let s = RedisServer::start_with_conf(&[], &format!("{conf}\nrequirepass s3cret\n"))
        .unwrap_or_else(|e| {
            panic!(
                "redis-server refused docker/redis.conf: {e} (module {})",
                module.display()
            )
        });
    let port = s.port.to_string();
    let health = entrypoint("health", Some("s3cret"), &port);
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    let wrong = entrypoint("health", Some("wrong"), &port);
    assert!(
        !wrong.status.success(),
        "a wrong password must fail the health check"
    );
    // Without REDIS_PASSWORD the server is not started at all.
    let no_pass = entrypoint("server", None, &port);
    assert!(!no_pass.status.success());
    assert!(String::from_utf8_lossy(&no_pass.stderr).contains("REDIS_PASSWORD"));
}

/// Runs docker/entrypoint.sh `verb` with REDIS_PASSWORD (or without it).
fn entrypoint(verb: &str, password: Option<&str>, port: &str) -> std::process::Output {
    let mut c = Command::new("sh");
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/entrypoint.sh"))
        .arg(verb)
        .env("REDIS_PORT", port);
    match password {
        Some(p) => c.env("REDIS_PASSWORD", p),
        None => c.env_remove("REDIS_PASSWORD"),
    };
    c.output().unwrap()
}
