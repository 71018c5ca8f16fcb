//! Module arguments: WORKERS n works; bad arguments fail MODULE LOAD with a
//! message instead of a broken server.

mod common;
use common::*;

#[test]
fn bad_module_arguments_fail_the_load_with_a_message() {
    let s = server();
    let module = s.module.to_string_lossy().to_string();
    let dir = s.stop(false);
    for (args, msg) in [
        (
            vec!["WORKERS", "0"],
            "WORKERS must be an integer between 1 and 256",
        ),
        (vec!["WORKERS", "many"], "WORKERS must be an integer"),
        (vec!["WORKERS"], "needs a value"),
        (vec!["COLOR", "red"], "unknown module argument 'COLOR'"),
    ] {
        let d = tempfile::tempdir().unwrap();
        let r = RedisServer::start_in(d, std::path::Path::new(&module), &args, &[]);
        let e = match r {
            Ok(_) => panic!("{args:?} should fail"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(msg), "{args:?}: {e}");
    }
    drop(dir);
    // A valid WORKERS value loads and serves searches.
    let s = RedisServer::start_in(
        tempfile::tempdir().unwrap(),
        std::path::Path::new(&module),
        &["WORKERS", "1"],
        &[],
    )
    .unwrap();
    let mut c = s.connection().unwrap();
    cmd(&mut c, "RECSYS.CREATE cat DIM 2").unwrap();
    cmd(&mut c, "RECSYS.ITEM.SET cat a VALUES 1 0").unwrap();
    assert_eq!(search_ids(&mut c, "cat", &[1.0, 0.0], 1), vec!["a"]);
}
