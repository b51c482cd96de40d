//! Scenarios run in the test VM (runtime-tests/vm/run.sh, Debian's kernel under qemu): each
//! prints a `RESULT name PASS|FAIL detail` line, which the host test checks.

use std::process::Command;

/// Boots the VM with `script` (a path under the repository) against the built capsa and
/// requires that none failed and each of `expected` passed. `switch_root`: the script runs
/// with the host's root as its mount namespace's root, not chrooted (VM_SWITCH_ROOT, see
/// runtime-tests/vm/init).
pub fn scenarios_pass(script: &str, switch_root: bool, expected: &[&str]) {
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{repo}/runtime-tests/vm/run.sh"))
        .arg(super::BIN)
        .arg(format!("{repo}/{script}"))
        .env("VM_SWITCH_ROOT", if switch_root { "1" } else { "0" })
        // criu under emulation on a loaded machine: room beyond run.sh's default.
        .env("CAPSA_VM_TIMEOUT", "2400")
        .output()
        .expect("running runtime-tests/vm/run.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<&str> = text.lines().filter(|l| l.starts_with("RESULT ")).collect();
    let failed: Vec<&&str> = results
        .iter()
        .filter(|l| l.split(' ').nth(2) == Some("FAIL"))
        .collect();
    assert!(failed.is_empty(), "failed in the VM: {failed:#?}");
    for scenario in expected {
        assert!(
            results
                .iter()
                .any(|l| l.starts_with(&format!("RESULT {scenario} PASS"))),
            "scenario {scenario} did not pass:\n{text}"
        );
    }
    assert!(out.status.success(), "run.sh failed:\n{text}");
}
