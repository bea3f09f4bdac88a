//! The lorapki PKI server binary (skeleton: the server lands with its tracking issue).

fn main() {
    eprintln!("lorapki-server: not implemented yet; see the README status table");
    std::process::exit(2);
}
