//! Seccomp profile translation: any linux.seccomp JSON must translate (plan) and compile into
//! a libseccomp filter or fail with a typed error; nothing is loaded.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(profile) = serde_json::from_slice::<oci_spec::runtime::LinuxSeccomp>(data) {
        let _ = capsa::security::seccomp::plan(&profile);
        let _ = capsa::security::seccomp::Filter::compile(&profile);
    }
});
