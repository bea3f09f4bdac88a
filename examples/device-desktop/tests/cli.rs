//! The demo binary: the DevEUI printed in hex everywhere, the payload arguments (`N`, `UP/DOWN`,
//! a data rate's name) bounding uplinks and downlinks separately, the session number explained.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_lorapki-device-desktop");

/// Runs the demo; its standard output (it must succeed).
fn run(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("rekey completed"), "{stdout}");
    stdout
}

/// The sizes of the printed frames: uplinks (`U…`) and FPort-1 downlinks (`D…`).
fn frame_sizes(out: &str) -> (Vec<usize>, Vec<usize>) {
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for line in out.lines() {
        let mut words = line.split_whitespace();
        let (Some(tag), Some(size), Some("B")) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let Ok(size) = size.parse() else { continue };
        match tag.as_bytes().first() {
            Some(b'U') => up.push(size),
            Some(b'D') => down.push(size),
            _ => {}
        }
    }
    (up, down)
}

/// The uplink count the demo reports.
fn uplinks(out: &str) -> usize {
    let line = out
        .lines()
        .find(|l| l.starts_with("rekey completed: "))
        .unwrap();
    line["rekey completed: ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn dev_eui_is_printed_in_hex() {
    let out = run(&[]);
    assert!(!out.contains("[112, 179"), "no decimal bytes: {out}");
    let mut seen = 0;
    for (i, _) in out.match_indices("dev_eui: ") {
        let value = &out[i + "dev_eui: ".len()..];
        let digits: String = value.chars().take_while(char::is_ascii_hexdigit).collect();
        assert_eq!(digits, "70b3d57ed0000001", "{out}");
        seen += 1;
    }
    assert!(seen >= 4, "the server's events name the device: {out}");
    assert!(
        out.starts_with("lorapki: rekey of DevEUI 70b3d57ed0000001 at "),
        "{out}"
    );
}

#[test]
fn session_number_is_explained() {
    let out = run(&[]);
    let s: u8 = out
        .split("RunStarted { session: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(s < 64);
    assert!(
        out.contains(&format!("(S = {s}: the run's 6-bit session number; a device that never ran draws its first at random")),
        "{out}"
    );
    assert!(out.contains(&format!("PubKeyReq(S={s})")), "{out}");
}

#[test]
fn up_and_down_payloads_are_separate() {
    for args in [["11/242", "next-uplink"], ["us915-dr0", "next-uplink"]] {
        let out = run(&args);
        assert!(
            out.contains("at N = 11 up / 242 down (US915 DR0), next-uplink model"),
            "{out}"
        );
        let (up, down) = frame_sizes(&out);
        assert_eq!(up.iter().max(), Some(&11), "{out}");
        let largest = *down.iter().max().unwrap();
        assert!(
            largest > 51 && largest <= 242,
            "downlinks use the 242 bytes: {down:?}"
        );
        // benches/airtime.md's row: US915 DR0, 11/242, next-uplink, pipelined.
        assert_eq!(uplinks(&out), 24, "{out}");
    }
    // The default: EU868 DR0, 51/51, same-window.
    let out = run(&[]);
    assert!(out.contains("at N = 51 up / 51 down (EU868 DR0), same-window model"));
    assert_eq!(uplinks(&out), 4, "{out}");
    // One number is both ways: 11/11, the AS923 dwell-time row.
    let out = run(&["11", "next-uplink"]);
    assert!(
        out.contains("at N = 11 up / 11 down (AS923 DR2 with dwell time)"),
        "{out}"
    );
    let (up, down) = frame_sizes(&out);
    assert_eq!(up.iter().max(), Some(&11));
    assert_eq!(down.iter().max(), Some(&11));
    assert_eq!(uplinks(&out), 36, "{out}");
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [
        &["10/242"][..],
        &["11/243"],
        &["us915"],
        &["51", "sometimes"],
        &["51", "next-uplink", "x"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("usage: device-desktop"), "{args:?}: {err}");
    }
}

/// Standard output closed early (`| head -1`): the demo ends quietly, without a panic.
#[test]
fn closed_standard_output_ends_quietly() {
    let mut child = Command::new(BIN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The read end closes before the demo has printed its first line (it generates keys first).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}
