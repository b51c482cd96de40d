//! `capsa-cri-monitor`: the process that owns one container's stdio, started by capsa-cri
//! (see `capsa_cri::monitor`). No async runtime: it is one per container.
//!
//! `capsa-cri-monitor exec` is the helper of one exec instead (see `capsa_cri::exec`): the
//! same small single-threaded binary, so a node carries one helper program, not two.

fn main() {
    let code = if std::env::args_os().nth(1).is_some_and(|a| a == "exec") {
        capsa_cri::exec::helper::main()
    } else {
        capsa_cri::monitor::server::main()
    };
    std::process::exit(code);
}
