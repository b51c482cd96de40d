//! `capsa-cri-monitor`: the process that owns one container's stdio, started by capsa-cri
//! (see `capsa_cri::monitor`). No async runtime: it is one per container.

fn main() {
    std::process::exit(capsa_cri::monitor::server::main());
}
