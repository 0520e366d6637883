//! rimctl: operate and inspect rimd.
#![forbid(unsafe_code)]

fn main() {
    println!("rimctl {}", env!("CARGO_PKG_VERSION"));
}
