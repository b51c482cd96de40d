//! The `capsa` command: a runc-compatible front end over the capsa library.
#![deny(clippy::undocumented_unsafe_blocks)]

mod cli;

fn main() {
    std::process::exit(cli::main());
}
