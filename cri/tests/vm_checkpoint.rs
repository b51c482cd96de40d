//! CheckpointContainer's archive, made in the test VM (runtime-tests/vm/run.sh: Debian's
//! kernel under qemu), where Debian's criu works; it fails on this host's kernel (see
//! runtime-tests/tests/checkpoint.rs). The host test boots the VM, which runs this same
//! binary's ignored test through runtime-tests/vm/cri-checkpoint.sh against capsa-cri: a
//! running container of a pod with a bridge network is checkpointed, keeps running, and the
//! archive has what checkpointctl reads. The refusals and a failed dump are in
//! containers.rs.

mod common;
#[path = "../../runtime-tests/tests/common/vm.rs"]
mod vm;
use common::containers::*;
use common::*;
use k8s_cri::v1::*;
use std::collections::HashMap;
use vm::Vm;

#[test]
fn checkpoint_container_in_a_vm() {
    // Built here: below the VM's writable /tmp is this machine's, read-only.
    Fixture::Busybox.archive();
    let capsa = std::path::Path::new(CAPSA_CRI).with_file_name("capsa");
    let me = std::env::current_exe().unwrap();
    Vm::new(&capsa, "runtime-tests/vm/cri-checkpoint.sh")
        .switch_root()
        .guest_env(format!("CRI_TEST={}", me.display()))
        .require(["cri_checkpoint"]);
}

/// The entries of a tar archive.
fn tar_entries(path: &std::path::Path) -> Vec<String> {
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .map(|p| p.trim_start_matches("./").to_string())
        .collect()
}

/// CheckpointContainer (kubelet's /checkpoint API): the running container is dumped with
/// CRIU and keeps running; the archive has the layout checkpointctl reads (CRIU's images,
/// config.dump, spec.dump, status.dump, rootfs-diff.tar with the container's writes);
/// nothing of a checkpoint is left but the archive, and a caller's timeout shorter than the
/// dump keeps no archive either. capsa-cri alone: containerd 1.6 predates the call.
#[tokio::test]
#[ignore = "run inside the VM by checkpoint_container_in_a_vm"]
async fn checkpoint_container_in_the_vm() {
    {
        let (_netns, server, mut c, _) = with_busybox(Kind::Capsa).await;
        let pod = Pod::run(&mut c, &server, "ckpt").await;
        let id = start_counter(&mut c, &server, &pod, BUSYBOX).await;
        let location = server.dir.join("checkpoints/ck.tar");
        let done = c
            .runtime
            .checkpoint_container(checkpoint_request(&id, &location, 0))
            .await;
        done.unwrap_or_else(|e| panic!("CheckpointContainer: {e}\n{}", server.log()));
        let entries = tar_entries(&location);
        for want in [
            "checkpoint/inventory.img",
            "checkpoint/pstree.img",
            "dump.log",
            "config.dump",
            "spec.dump",
            "status.dump",
            "rootfs-diff.tar",
        ] {
            assert!(entries.iter().any(|e| e == want), "{want} in {entries:?}");
        }
        let mut a = tar::Archive::new(std::fs::File::open(&location).unwrap());
        let mut files = HashMap::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            if ["config.dump", "spec.dump", "rootfs-diff.tar"].contains(&name.as_str()) {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
                files.insert(name, bytes);
            }
        }
        let config: serde_json::Value = serde_json::from_slice(&files["config.dump"]).unwrap();
        assert_eq!(config["id"], id.as_str());
        assert_eq!(config["name"], "ck");
        let spec: serde_json::Value = serde_json::from_slice(&files["spec.dump"]).unwrap();
        assert!(spec["ociVersion"].is_string(), "{spec}");
        let diff = server.dir.join("checkpoints/diff.tar");
        std::fs::write(&diff, &files["rootfs-diff.tar"]).unwrap();
        assert!(
            tar_entries(&diff).iter().any(|e| e == "tmp/count"),
            "the container's write"
        );
        // Still running, and still counting.
        assert_counts_on(&mut c, &id).await;
        let mut left: Vec<_> = std::fs::read_dir(server.dir.join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["ck.tar", "diff.tar"],
            "only the archive (and the test's copy)"
        );
        let scratch = server
            .dir
            .join("state/containers")
            .join(&id)
            .join("checkpoint.tmp");
        assert!(!scratch.exists(), "work files left");
        // A timeout shorter than the dump (seconds under emulation): DeadlineExceeded; the
        // dump runs to its end, then its work files go and no archive is kept.
        let late = server.dir.join("checkpoints/late.tar");
        let e = c
            .runtime
            .checkpoint_container(checkpoint_request(&id, &late, 1))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e}");
        // A whole dump under emulation on a busy machine: up to five minutes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while scratch.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the abandoned dump's work files were not removed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert!(!late.exists(), "the abandoned dump's archive was kept");
        let status = container_status(&mut c, &id).await.unwrap();
        assert_eq!(
            status.status.as_ref().unwrap().state(),
            ContainerState::ContainerRunning
        );
        pod.remove(&mut c).await;
    }
}
