// Records the git commit for `capsa --version` ("commit: ..."), as runc prints it.
fn main() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CAPSA_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    // The functions capsa's commands run, laid out together (runtime-tests/bench/hot-symbols.sh
    // says why and regenerates the list). Release builds on x86_64 only, where rustc links
    // with lld; symbols the list names but the binary lacks are skipped.
    let order = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("runtime-tests/bench/hot-symbols.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    if std::env::var("PROFILE").as_deref() == Ok("release")
        && std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu")
        && order.exists()
    {
        println!(
            "cargo:rustc-link-arg-bin=capsa=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=capsa=-Wl,--no-warn-symbol-ordering");
    }
    // capsa-pause is freestanding: no C runtime, no libc, one static ELF of a few KiB.
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-Wl,--build-id=none",
    ] {
        println!("cargo:rustc-link-arg-bin=capsa-pause={arg}");
    }
}
