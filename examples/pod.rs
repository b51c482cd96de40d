//! A pod with two containers: the pod's infra process (`capsa-pause`) holds the network,
//! IPC and UTS namespaces, two containers join them and run side by side, each with its
//! output captured; then both are deleted and the pod removed. Each container prints its
//! hostname (the pod's) and its network and mount namespaces: the network one is the
//! pod's, the same for both; each has a mount namespace (a root) of its own.
//!
//!     cargo build --bin capsa-pause && cargo run --example pod -- ROOTFS [CAPSA_PAUSE]
//!
//! as root; CAPSA_PAUSE defaults to `capsa-pause` in the directory cargo builds the
//! package's binaries into (the parent of this example's), the state goes under
//! `$CAPSA_ROOT` (default /run/capsa).

mod common;

use capsa::{CreateOptions, PodOptions, Runtime};
use std::path::PathBuf;

const SCRIPT: &str = "echo hostname $(hostname); echo net $(readlink /proc/self/ns/net); \
                      echo mnt $(readlink /proc/self/ns/mnt)";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (rootfs, pause) = match args.as_slice() {
        [rootfs] => (rootfs.clone(), beside_the_package_binaries()?),
        [rootfs, pause] => (rootfs.clone(), PathBuf::from(pause)),
        _ => return Err("usage: pod ROOTFS [CAPSA_PAUSE]".into()),
    };
    let pod = format!("example-pod-{}", std::process::id());
    let runtime = Runtime::new(common::state_root());
    runtime.create_pod(&pod, &PodOptions::new().pause_binary(pause))?;
    println!("pod: {pod}");
    let result = run_two(&runtime, &pod, rootfs.as_ref());
    // The pod goes whatever happened to its containers (force: a failure may have left one
    // running).
    let removed = runtime.remove_pod(&pod, result.is_err());
    result?;
    removed?;
    println!("pod removed");
    Ok(())
}

/// Creates containers a and b in `pod`, starts both, prints what each printed, deletes them.
fn run_two(
    runtime: &Runtime,
    pod: &str,
    rootfs: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut started = Vec::new();
    for name in ["a", "b"] {
        let id = format!("{pod}-{name}");
        let bundle = common::Bundle::new(&id, rootfs, &["sh", "-c", SCRIPT])?;
        let (stdio, stdout, _stderr) = common::captured()?;
        let opts = CreateOptions::new(&bundle.0).pod(pod).stdio(stdio);
        let container = runtime.create(&id, &opts)?;
        drop(opts);
        started.push((name, container, bundle, stdout));
    }
    let mut running = Vec::new();
    for (name, container, bundle, stdout) in started {
        let output = common::read_on_a_thread(stdout);
        container.start()?;
        running.push((name, container, bundle, output));
    }
    for (name, container, _bundle, output) in running {
        let status = container.wait()?;
        let text = output
            .join()
            .map_err(|_| format!("reading container {name}'s stdout"))?;
        container.delete(false)?;
        for line in text.lines() {
            println!("{name}: {line}");
        }
        println!("{name}: exit code {}", status.code().unwrap_or(-1));
    }
    Ok(())
}

/// `capsa-pause` in the parent of this program's directory: cargo puts examples in
/// `target/<profile>/examples/` and the package's binaries in `target/<profile>/`.
fn beside_the_package_binaries() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let pause = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("capsa-pause"))
        .ok_or("no directory above this program")?;
    if !pause.exists() {
        return Err(format!(
            "{} not found: build it (cargo build --bin capsa-pause) or name it",
            pause.display()
        )
        .into());
    }
    Ok(pause)
}
