//! The binary's `devices import`: a check refuses the whole file with the line and field, and
//! `--allow <check>` imports it with a warning instead.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_lorapki-server");
const KEY_A: &str = "2b7e151628aed2a6abf7158809cf4f3c";

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// A fresh P-384 public key (SEC1 compressed hex), from `keygen`'s output.
fn public_key(dir: &Path, file: &str) -> String {
    let out = run(dir, &["keygen", "--key", file]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("public key (SEC1 compressed): "))
        .unwrap()
        .to_owned()
}

fn import(dir: &Path, file: &str, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["devices", "import", file, "--config", "server.toml"];
    args.extend(extra);
    let out = run(dir, &args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn checks_refuse_and_allow_warns() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        run(d, &["keygen", "--key", "k.pem", "--kek", "kek.hex"])
            .status
            .success()
    );
    std::fs::write(
        d.join("server.toml"),
        "[server]\nkey_file = \"k.pem\"\nkek_file = \"kek.hex\"\n\
         [database]\nurl = \"sqlite://db.sqlite\"\n",
    )
    .unwrap();
    let (k1, k2) = (public_key(d, "d1.pem"), public_key(d, "d2.pem"));
    let header = "dev_eui,join_eui,lorawan_version,app_key,identity_key\n";
    let zero = "0".repeat(32);
    std::fs::write(
        d.join("zero.csv"),
        format!(
            "{header}70b3d57e00000001,70b3d57ed0000000,1.0.3,{zero},{k1}\n\
             70b3d57e00000002,70b3d57ed0000000,1.0.3,{KEY_A},{k2}\n"
        ),
    )
    .unwrap();
    let (ok, _, err) = import(d, "zero.csv", &[]);
    assert!(!ok);
    assert!(err.contains("nothing imported"), "{err}");
    assert!(
        err.contains(
            "line 2: app_key: all zero (a factory key must be secret) (--allow zero-key imports \
             it with a warning)"
        ),
        "{err}"
    );
    let (ok, out, err) = import(d, "zero.csv", &["--allow", "zero-key"]);
    assert!(ok, "{err}");
    assert!(out.contains("imported 2 devices"), "{out}");
    assert!(
        err.contains("warning: line 2: app_key: all zero (a factory key must be secret) (imported: --allow zero-key)"),
        "{err}"
    );
    // The identity key of a registered device, for another device.
    std::fs::write(
        d.join("shared.csv"),
        format!("{header}70b3d57e00000003,70b3d57ed0000000,1.0.3,{KEY_A},{k1}\n"),
    )
    .unwrap();
    let (ok, _, err) = import(d, "shared.csv", &[]);
    assert!(!ok);
    assert!(
        err.contains(
            "line 2: identity_key: the key of DevEUI 70b3d57e00000001, already registered"
        ),
        "{err}"
    );
    let list = run(d, &["devices", "list", "--config", "server.toml"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert_eq!(list.lines().count(), 3, "header and two devices: {list}");
    let (ok, _, err) = import(d, "shared.csv", &["--allow", "bogus"]);
    assert!(!ok);
    assert!(err.contains("unknown import check \"bogus\""), "{err}");
}
