//! runc parity of process setup, exec, hooks and logging: each scenario runs with capsa and
//! with runc on the same bundle (`on_both`), and asserts what runc does.

mod common;
use common::*;
use serde_json::json;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

#[test]
fn a_non_root_process_can_reopen_the_pipes_it_was_given_as_stdio() {
    on_both(|w| {
        let mut b = w.bundle(&[
            "sh",
            "-c",
            "echo out > /dev/stdout && echo err > /dev/stderr",
        ]);
        b.set(|c| c["process"]["user"] = json!({"uid": 1000, "gid": 1000}));
        // stdin is /dev/null, stdout and stderr pipes created by this (root) process.
        let (code, out, err) = w.run(&b);
        assert_eq!((code, out.as_str(), err.as_str()), (0, "out\n", "err\n"));
        // /dev/null is never handed over: it is the host's.
        let null = std::fs::metadata("/dev/null").unwrap();
        assert_eq!((null.uid(), null.gid()), (0, 0));
    });
}

#[test]
fn a_workdir_only_root_can_traverse_is_entered_before_the_switch_to_the_user() {
    on_both(|w| {
        let mut b = w.bundle(&["pwd"]);
        b.set(|c| {
            c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
            c["process"]["cwd"] = json!("/secret/work");
        });
        let secret = b.rootfs().join("secret");
        std::fs::create_dir_all(secret.join("work")).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700)).unwrap();
        let (code, out, err) = w.run(&b);
        assert_eq!((code, out.as_str()), (0, "/secret/work\n"), "stderr: {err}");
    });
}
