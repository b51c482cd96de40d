//! The `capsa` command: a runc-compatible front end over the capsa library.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
