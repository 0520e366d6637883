//! The rimd daemon binary.
#![forbid(unsafe_code)]

fn main() {
    println!("rimd {}", env!("CARGO_PKG_VERSION"));
}
