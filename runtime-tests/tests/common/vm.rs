//! The test VM (runtime-tests/vm/run.sh: Debian's kernel under qemu) as the host tests boot
//! it: a script runs in it against the built capsa and prints a `RESULT name PASS|FAIL
//! detail` line per scenario, which the host test checks. Self-contained (no `super`), so
//! that capsa-cri's tests include this same file.

use std::path::Path;
use std::process::Command;

/// One boot of the VM: `script` (a path under the repository) runs against `capsa`.
pub struct Vm<'a> {
    capsa: &'a Path,
    script: &'a str,
    switch_root: bool,
    guest_env: String,
}

impl<'a> Vm<'a> {
    pub fn new(capsa: &'a Path, script: &'a str) -> Self {
        Vm {
            capsa,
            script,
            switch_root: false,
            guest_env: String::new(),
        }
    }

    /// The script runs with the host's root as its mount namespace's root, not chrooted
    /// (VM_SWITCH_ROOT, see runtime-tests/vm/init): criu refuses a container made from a
    /// chroot.
    pub fn switch_root(mut self) -> Self {
        self.switch_root = true;
        self
    }

    /// Environment for the script in the guest, as `KEY=VALUE` (CAPSA_VM_ENV).
    pub fn guest_env(mut self, env: String) -> Self {
        self.guest_env = env;
        self
    }

    /// Boots the VM and requires that run.sh succeeded, that no scenario failed and that
    /// each of `expected` passed.
    pub fn require<S: AsRef<str>>(self, expected: impl IntoIterator<Item = S>) {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        // capsa-cri's tests are built from cri/: the repository is its parent.
        let repo = if repo.join("runtime-tests").is_dir() {
            repo
        } else {
            repo.parent().unwrap()
        };
        let out = Command::new("bash")
            .arg(repo.join("runtime-tests/vm/run.sh"))
            .arg(self.capsa)
            .arg(repo.join(self.script))
            .env("VM_SWITCH_ROOT", if self.switch_root { "1" } else { "0" })
            .env("CAPSA_VM_ENV", &self.guest_env)
            // Emulation on a loaded machine: room beyond run.sh's default.
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
        assert!(failed.is_empty(), "failed in the VM: {failed:#?}\n{text}");
        for name in expected {
            let pass = format!("RESULT {} PASS", name.as_ref());
            assert!(
                results.iter().any(|l| l.starts_with(&pass)),
                "{} did not pass:\n{text}",
                name.as_ref()
            );
        }
        assert!(out.status.success(), "run.sh failed:\n{text}");
    }
}
