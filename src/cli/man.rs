//! The man pages in man/ are generated from the clap definitions; this test fails when they
//! drift. Regenerate with `CAPSA_UPDATE_MAN=1 cargo test --bin capsa man_pages`.

use clap::CommandFactory;
use std::path::PathBuf;

fn render(cmd: clap::Command) -> Vec<u8> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("8")
        .manual("capsa manual")
        .render(&mut out)
        .expect("rendering to a Vec cannot fail");
    out
}

fn pages() -> Vec<(String, Vec<u8>)> {
    let top = super::Cli::command();
    let mut pages = vec![("capsa.8".to_string(), render(top.clone()))];
    for sub in top.get_subcommands() {
        let name = format!("capsa-{}", sub.get_name());
        let static_name: &'static str = Box::leak(name.clone().into_boxed_str());
        let cmd = sub.clone().name(static_name).bin_name(static_name);
        pages.push((format!("{name}.8"), render(cmd)));
        // Command groups (`capsa rootfs unpack`, `capsa pod create`) get a page per command.
        for nested in sub.get_subcommands().filter(|n| n.get_name() != "help") {
            let name = format!("capsa-{}-{}", sub.get_name(), nested.get_name());
            let static_name: &'static str = Box::leak(name.clone().into_boxed_str());
            let cmd = nested.clone().name(static_name).bin_name(static_name);
            pages.push((format!("{name}.8"), render(cmd)));
        }
    }
    pages
}

#[test]
fn man_pages() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("man");
    let update = std::env::var_os("CAPSA_UPDATE_MAN").is_some();
    for (name, content) in pages() {
        let path = dir.join(&name);
        if update {
            std::fs::write(&path, &content).expect("writing man page");
            continue;
        }
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert!(
            on_disk == content,
            "man/{name} is out of date with the CLI; run CAPSA_UPDATE_MAN=1 cargo test --bin capsa man_pages"
        );
    }
}
