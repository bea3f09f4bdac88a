//! Links the MS500 vendor crypto library when the `ms500` binding is compiled for the chip.
//!
//! With the `ms500` feature on a `target_os = "none"` target, the binding declares the C
//! functions listed in `src/ms500.rs`. They come from one of:
//!
//! * `MS500_SDK_LIB_DIR` (and optionally `MS500_SDK_LIB_NAME`, default `ms500_crypto`): the
//!   directory of a static library that provides them — the vendor SDK plus the thin C shim
//!   described in `src/ms500.rs`; this script passes both to the linker;
//! * the `ms500-link-stub` feature: stubs in the binding itself that fail every call (CI only);
//! * neither: the symbols stay unresolved in the rlib, and the firmware's final link must
//!   provide them (e.g. its own build script links the SDK).

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MS500_SDK_LIB_DIR");
    println!("cargo:rerun-if-env-changed=MS500_SDK_LIB_NAME");
    let binding = env::var_os("CARGO_FEATURE_MS500").is_some();
    let stub = env::var_os("CARGO_FEATURE_MS500_LINK_STUB").is_some();
    let bare_metal = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "none");
    if !binding || !bare_metal || stub {
        return;
    }
    if let Ok(dir) = env::var("MS500_SDK_LIB_DIR") {
        let name = env::var("MS500_SDK_LIB_NAME").unwrap_or_else(|_| "ms500_crypto".into());
        println!("cargo:rustc-link-search=native={dir}");
        println!("cargo:rustc-link-lib=static={name}");
    }
}
