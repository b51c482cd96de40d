//! config.json loading and validation: any bytes must give a spec or a typed error, never a
//! panic, a hang or an abort.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let bundle = Path::new("/tmp/capsa-fuzz-bundle");
    let _ = std::fs::create_dir_all(bundle.join("rootfs"));
    if let Ok(spec) = capsa::spec::parse(data, &bundle.join("config.json")) {
        let _ = capsa::spec::validate(&spec, bundle);
    }
});
