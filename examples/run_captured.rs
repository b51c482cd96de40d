//! Runs one command in a container and captures what it prints: create with the container's
//! stdout and stderr handed over as pipes, start, read both to their end, wait for its exit
//! status, delete. This program is the container's parent (it creates it while it has a
//! single thread), so `Container::wait` collects init's status, as a per-container monitor
//! does.
//!
//!     cargo run --example run_captured -- ROOTFS COMMAND [ARG...]
//!
//! as root; ROOTFS is a root filesystem (`bash rootfs-fixtures/busybox-rootfs.sh DIR` makes
//! one), the state goes under `$CAPSA_ROOT` (default /run/capsa).

mod common;

use capsa::{CreateOptions, Runtime};
use std::os::unix::process::ExitStatusExt;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [rootfs, command @ ..] = args.as_slice() else {
        return Err("usage: run_captured ROOTFS COMMAND [ARG...]".into());
    };
    if command.is_empty() {
        return Err("usage: run_captured ROOTFS COMMAND [ARG...]".into());
    }
    let id = format!("example-run-{}", std::process::id());
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let bundle = common::Bundle::new(&id, rootfs.as_ref(), &command)?;
    let runtime = Runtime::new(common::state_root());

    let (stdio, stdout, stderr) = common::captured()?;
    let opts = CreateOptions::new(&bundle.0).stdio(stdio);
    println!("id: {id}");
    let container = runtime.create(&id, &opts)?;
    // The write ends now belong to the container alone: dropping ours lets the pipes end
    // when it exits.
    drop(opts);
    println!("status: {}", container.status());
    let stdout = common::read_on_a_thread(stdout);
    let stderr = common::read_on_a_thread(stderr);
    container.start()?;
    let status = container.wait()?;
    let (out, err) = (stdout.join(), stderr.join());
    container.delete(false)?;
    for (name, text) in [("stdout", out), ("stderr", err)] {
        let text = text.map_err(|_| format!("reading the container's {name}"))?;
        for line in text.lines() {
            println!("{name}: {line}");
        }
    }
    match (status.code(), status.signal()) {
        (Some(code), _) => println!("exit code: {code}"),
        (None, Some(signal)) => println!("killed by signal: {signal}"),
        (None, None) => println!("exit status: {status:?}"),
    }
    Ok(())
}
