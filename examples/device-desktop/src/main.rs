//! The lorapki device logic on a PC (skeleton: grows with the protocol crates).

fn main() {
    println!("lorapki device-desktop: see the README for the current status");
}
