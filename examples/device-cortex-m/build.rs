//! Puts the board's memory layout on the linker's search path as `memory.x` (read by
//! cortex-m-rt's `link.x`) and links with `link.x`.
//!
//! The board follows from the target: `thumbv8m.main-none-eabihf` runs on QEMU's `mps2-an505`
//! (Cortex-M33), `thumbv7m-none-eabi` on `mps2-an385` (Cortex-M3). `FIRMWARE_RAM` (for example
//! `16K`) shrinks the RAM region to that length, to show that the run fits in it: the stack then
//! starts at the end of that region, and on the Cortex-M33 MSPLIM faults on an overflow.

use std::env;
use std::fs;
use std::io;
use std::path::PathBuf;

fn main() -> io::Result<()> {
    let target = env::var("TARGET").unwrap_or_default();
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    let (layout, board) = if target.starts_with("thumbv7m") {
        ("memory-an385.x", "mps2-an385 (Cortex-M3)")
    } else {
        ("memory-an505.x", "mps2-an505 (Cortex-M33)")
    };
    println!("cargo:rustc-env=FIRMWARE_BOARD={board}, {target}");
    let mut memory = fs::read_to_string(layout)?;
    if let Ok(length) = env::var("FIRMWARE_RAM") {
        memory = with_ram_length(&memory, &length)?;
    }
    fs::write(out.join("memory.x"), memory)?;
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed={layout}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=FIRMWARE_RAM");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-Tlink.x");
    }
    Ok(())
}

/// The layout with `LENGTH = length` on its `RAM` line.
fn with_ram_length(memory: &str, length: &str) -> io::Result<String> {
    let valid = length
        .strip_suffix(['K', 'M'])
        .unwrap_or(length)
        .bytes()
        .all(|b| b.is_ascii_digit());
    if length.is_empty() || !valid {
        return Err(io::Error::other(format!(
            "FIRMWARE_RAM={length}: expected a length such as 16K"
        )));
    }
    let mut found = false;
    let lines: Vec<String> = memory
        .lines()
        .map(|line| match line.split_once("LENGTH =") {
            Some((head, _)) if line.trim_start().starts_with("RAM") => {
                found = true;
                format!("{head}LENGTH = {length}")
            }
            _ => line.to_owned(),
        })
        .collect();
    if !found {
        return Err(io::Error::other("no RAM line in the memory layout"));
    }
    Ok(lines.join("\n") + "\n")
}
