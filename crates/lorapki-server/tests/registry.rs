//! Device registry: CSV and JSON import with line-numbered errors, all-or-nothing storage,
//! identity keys raw, PEM or as certificates chained to a manufacturer CA (made with the openssl
//! command-line tool), sealing at rest, and the store's version guard — on SQLite and, when
//! `LORAPKI_TEST_POSTGRES` is set, PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::*;
use lorapki_server::config::Config;
use lorapki_server::kek::open_root_keys;
use lorapki_server::registry::{
    Check, ImportPolicy, TrustAnchors, check_registered_identities, parse_csv, parse_csv_with,
    parse_json, parse_json_with, text_names_dev_eui,
};
use lorapki_server::store::{Commit, KeyOp, SessionWrite};
use lorapki_server::{Error, Eui64, KeyState, Metrics, StorageKek, Store, app};

const KEY_A: &str = "2b7e151628aed2a6abf7158809cf4f3c";

fn public_hex(i: u32) -> String {
    let dev = SimDevice::new(i, lorapki_server::MacVersion::V1_0_3, server_key().public());
    hex::encode(dev.identity.as_bytes())
}

fn import_errors(e: Error) -> Vec<(usize, String)> {
    match e {
        Error::Import(list) => list.into_iter().map(|e| (e.line, e.message)).collect(),
        other => panic!("not an import error: {other}"),
    }
}

#[test]
fn csv_errors_carry_line_numbers() {
    let k = public_hex(1);
    let text = format!(
        "dev_eui,join_eui,lorawan_version,app_key,nwk_key,identity_key\n\
         70b3d57e00000001,70b3d57ed0000000,1.0.3,{KEY_A},,{k}\n\
         70b3d57e0000000Z,70b3d57ed0000000,1.0.3,{KEY_A},,{k}\n\
         70b3d57e00000003,70b3d57ed0000000,1.0.3,abcd,,{k}\n\
         70b3d57e00000001,70b3d57ed0000000,1.0.3,{KEY_A},,{k}\n\
         70b3d57e00000005,70b3d57ed0000000,1.0.3,{KEY_A},,\n\
         70b3d57e00000006,70b3d57ed0000000,2.0,{KEY_A},,{k}\n\
         70b3d57e00000007,70b3d57ed0000000,1.1,{KEY_A},,{k}\n\
         70b3d57e00000008,70b3d57ed0000000,1.0.3,{KEY_A},,02{}\n\
         70b3d57e00000009,70b3d57ed0000000\n",
        "ff".repeat(48)
    );
    let errors = import_errors(parse_csv(&text, &TrustAnchors::none(), now()).unwrap_err());
    let lines: Vec<usize> = errors.iter().map(|e| e.0).collect();
    assert_eq!(lines, [3, 4, 5, 6, 7, 8, 9, 10], "{errors:?}");
    assert!(errors[0].1.contains("EUI-64"), "{errors:?}");
    assert!(errors[1].1.contains("app_key"));
    assert!(errors[2].1.contains("twice"));
    assert!(errors[3].1.contains("identity_key or certificate"));
    assert!(errors[4].1.contains("LoRaWAN version"));
    assert!(errors[5].1.contains("nwk_key"));
    assert!(errors[6].1.contains("P-384"));
    let e = parse_csv("dev_eui,bogus\n1,2\n", &TrustAnchors::none(), now()).unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
}

#[test]
fn json_errors_carry_line_numbers() {
    let k = public_hex(1);
    let text = format!(
        "[\n  {{\"dev_eui\": \"70b3d57e00000001\", \"join_eui\": \"70b3d57ed0000000\",\n    \
         \"lorawan_version\": \"1.0.4\", \"app_key\": \"{KEY_A}\", \"identity_key\": \"{k}\"}},\n  \
         {{\"dev_eui\": \"70b3d57e00000002\", \"join_eui\": \"70b3d57ed0000000\",\n    \
         \"lorawan_version\": \"1.0.4\", \"app_key\": \"{KEY_A}\", \"identity_key\": \"{k}\", \"colour\": 1}},\n  \
         {{\"dev_eui\": 7}}\n]\n"
    );
    let errors = import_errors(parse_json(&text, &TrustAnchors::none(), now()).unwrap_err());
    assert_eq!(
        errors.iter().map(|e| e.0).collect::<Vec<_>>(),
        [4, 6],
        "{errors:?}"
    );
    assert!(errors[0].1.contains("colour"));
    let syntax = import_errors(parse_json("[\n{\n", &TrustAnchors::none(), now()).unwrap_err());
    assert_eq!(syntax[0].0, 3);
    let wrapped = format!(
        "{{\"devices\": [{{\"dev_eui\": \"70b3d57e00000001\", \"join_eui\": \"70b3d57ed0000000\", \
         \"lorawan_version\": \"1.1\", \"app_key\": \"{KEY_A}\", \"nwk_key\": \"{KEY_A}\", \
         \"identity_key\": \"{k}\"}}]}}"
    );
    assert_eq!(
        parse_json(&wrapped, &TrustAnchors::none(), now())
            .unwrap()
            .len(),
        1
    );
}

fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A CA and a device certificate (P-384, ECDSA-SHA384), plus a certificate from another CA.
fn certificates(dir: &Path) -> Option<()> {
    let steps: &[&[&str]] = &[
        &[
            "ecparam",
            "-name",
            "secp384r1",
            "-genkey",
            "-noout",
            "-out",
            "ca.key",
        ],
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-sha384",
            "-days",
            "3650",
            "-subj",
            "/CN=Manufacturer CA",
            "-out",
            "ca.pem",
        ],
        &[
            "ecparam",
            "-name",
            "secp384r1",
            "-genkey",
            "-noout",
            "-out",
            "dev.key",
        ],
        &[
            "req",
            "-new",
            "-key",
            "dev.key",
            "-subj",
            "/CN=70b3d57e00000001",
            "-out",
            "dev.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "dev.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-sha384",
            "-days",
            "365",
            "-out",
            "dev.pem",
        ],
        &["ec", "-in", "dev.key", "-pubout", "-out", "dev.pub.pem"],
        &[
            "ecparam",
            "-name",
            "secp384r1",
            "-genkey",
            "-noout",
            "-out",
            "rogue.key",
        ],
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "rogue.key",
            "-sha384",
            "-days",
            "3650",
            "-subj",
            "/CN=Manufacturer CA",
            "-out",
            "rogue.pem",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "dev.csr",
            "-CA",
            "rogue.pem",
            "-CAkey",
            "rogue.key",
            "-CAcreateserial",
            "-sha384",
            "-days",
            "365",
            "-out",
            "forged.pem",
        ],
    ];
    for step in steps {
        if !openssl(dir, step) {
            return None;
        }
    }
    Some(())
}

#[test]
fn certificates_must_chain_to_the_manufacturer_ca() {
    let dir = tempfile::tempdir().unwrap();
    if certificates(dir.path()).is_none() {
        println!("SKIPPED: certificate import (the openssl command is not available)");
        return;
    }
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    let anchors = TrustAnchors::from_pem(&read("ca.pem")).unwrap();
    let cert = read("dev.pem");
    let from_cert = anchors.verify(&cert, now()).unwrap();
    let from_pem = lorapki_server::registry::parse_public_key(&read("dev.pub.pem")).unwrap();
    assert_eq!(
        from_cert, from_pem,
        "the certificate's key is the device's key"
    );
    let e = anchors.verify(&read("forged.pem"), now()).unwrap_err();
    assert!(e.to_string().contains("does not verify"), "{e}");
    let far_future = now() + std::time::Duration::from_secs(400 * 86400);
    assert!(
        anchors
            .verify(&cert, far_future)
            .unwrap_err()
            .to_string()
            .contains("expired")
    );
    // JSON import with a PEM certificate and a PEM public key.
    let json = serde_json::json!([
        {"dev_eui": "70b3d57e00000001", "join_eui": "70b3d57ed0000000", "lorawan_version": "1.0.3",
         "app_key": KEY_A, "certificate": cert},
        {"dev_eui": "70b3d57e00000002", "join_eui": "70b3d57ed0000000", "lorawan_version": "1.0.3",
         "app_key": KEY_A, "identity_key": read("dev.pub.pem")},
        {"dev_eui": "70b3d57e00000003", "join_eui": "70b3d57ed0000000", "lorawan_version": "1.0.3",
         "app_key": KEY_A, "certificate": read("forged.pem")}
    ])
    .to_string();
    let errors = import_errors(parse_json(&json, &anchors, now()).unwrap_err());
    assert_eq!(errors.len(), 2, "{errors:?}");
    // The PEM public key is the certificate's key: one identity key for two devices.
    assert!(
        errors[0]
            .1
            .starts_with("identity_key: the same key as DevEUI 70b3d57e00000001 on line 1"),
        "{errors:?}"
    );
    assert!(errors[1].1.contains("signature"), "{errors:?}");
    let no_ca = import_errors(parse_json(&json, &TrustAnchors::none(), now()).unwrap_err());
    assert!(no_ca[0].1.contains("no manufacturer CA"), "{no_ca:?}");
}

/// `<name>.pem`: a P-384 device certificate (its own key) for `subject`, with the
/// subjectAltName `san` if given, issued by the CA that [`certificates`] made in `dir`.
fn device_certificate(dir: &Path, name: &str, subject: &str, san: Option<&str>) -> Option<String> {
    let (key, csr, pem, ext) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    let mut sign = vec![
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-sha384",
        "-days",
        "365",
        "-out",
        &pem,
    ];
    if let Some(san) = san {
        std::fs::write(dir.join(&ext), format!("subjectAltName = {san}\n")).ok()?;
        sign.extend(["-extfile", &ext]);
    }
    let steps: [&[&str]; 3] = [
        &[
            "ecparam",
            "-name",
            "secp384r1",
            "-genkey",
            "-noout",
            "-out",
            &key,
        ],
        &["req", "-new", "-key", &key, "-subj", subject, "-out", &csr],
        &sign,
    ];
    for step in steps {
        if !openssl(dir, step) {
            return None;
        }
    }
    std::fs::read_to_string(dir.join(&pem)).ok()
}

/// A JSON import file with one record per line: record `i` starts on line `i + 2`.
fn json_lines(records: &[serde_json::Value]) -> String {
    let lines: Vec<String> = records.iter().map(ToString::to_string).collect();
    format!("[\n{}\n]\n", lines.join(",\n"))
}

fn cert_record(dev_eui: &str, cert: &str) -> serde_json::Value {
    serde_json::json!({"dev_eui": dev_eui, "join_eui": "70b3d57ed0000000",
        "lorawan_version": "1.0.3", "app_key": KEY_A, "certificate": cert})
}

#[test]
fn the_dev_eui_is_named_by_its_hex_digits() {
    let dev: Eui64 = "70b3d57e00000001".parse().unwrap();
    for yes in [
        "70b3d57e00000001",
        "70B3D57E00000001",
        "eui-70b3d57e00000001",
        "urn:dev:mac:70b3d57e00000001",
        "70-B3-D5-7E-00-00-00-01",
        "70:b3:d5:7e:00:00:00:01",
        "Sensor 70b3d57e00000001 rev. B",
    ] {
        assert!(text_names_dev_eui(yes, dev), "{yes:?} names it");
    }
    for no in [
        "70b3d57e00000002",
        "170b3d57e00000001",
        "70b3d57e000000010",
        "70b3d57e0000001",
        "Widget",
        "",
    ] {
        assert!(!text_names_dev_eui(no, dev), "{no:?} does not name it");
    }
}

#[test]
fn certificate_subject_must_name_the_dev_eui() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let made = certificates(d).and_then(|()| {
        Some([
            device_certificate(d, "widget", "/CN=Widget 3000/O=Acme", None)?,
            device_certificate(
                d,
                "serial",
                "/CN=Widget/serialNumber=70B3D57E00000003",
                None,
            )?,
            device_certificate(
                d,
                "san",
                "/CN=Widget",
                Some("URI:urn:dev:mac:70b3d57e00000004"),
            )?,
            device_certificate(d, "dashed", "/CN=70-B3-D5-7E-00-00-00-05", None)?,
            device_certificate(d, "longer", "/CN=70b3d57e000000061", None)?,
        ])
    });
    let Some([widget, serial, san, dashed, longer]) = made else {
        println!("SKIPPED: certificate subjects (the openssl command is not available)");
        return;
    };
    let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap();
    let anchors = TrustAnchors::from_pem(&read("ca.pem")).unwrap();
    let dev = read("dev.pem");
    let records = [
        cert_record("70b3d57e00000001", &dev),
        cert_record("70b3d57e00000002", &widget),
        cert_record("70b3d57e00000003", &serial),
        cert_record("70b3d57e00000004", &san),
        cert_record("70b3d57e00000005", &dashed),
        cert_record("70b3d57e00000006", &longer),
        // dev.pem names 70b3d57e00000001: not this device.
        cert_record("70b3d57e00000009", &dev),
    ];
    let errors = import_errors(parse_json(&json_lines(&records), &anchors, now()).unwrap_err());
    assert_eq!(
        errors.iter().map(|e| e.0).collect::<Vec<_>>(),
        [3, 7, 8],
        "{errors:?}"
    );
    assert_eq!(
        errors[0].1,
        "certificate: the subject does not name DevEUI 70b3d57e00000002 (it names \
         CN=Widget 3000; its CN, serialNumber or a subjectAltName must hold the DevEUI's 16 hex \
         digits) (--allow certificate-subject imports it with a warning)"
    );
    assert!(
        errors[1]
            .1
            .contains("DevEUI 70b3d57e00000006 (it names CN=70b3d57e000000061"),
        "{errors:?}"
    );
    assert!(
        errors[2]
            .1
            .contains("DevEUI 70b3d57e00000009 (it names CN=70b3d57e00000001"),
        "{errors:?}"
    );
    // Relaxed, the mismatches are imported with a warning on their lines.
    let policy = ImportPolicy::default().allowing(Check::CertificateSubject);
    let parsed = parse_json_with(&json_lines(&records[..6]), &anchors, now(), &policy).unwrap();
    assert_eq!(parsed.devices.len(), 6);
    let warnings: Vec<(usize, &str)> = parsed
        .warnings
        .iter()
        .map(|w| (w.line, w.message.as_str()))
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert_eq!(warnings[0].0, 3);
    assert_eq!(warnings[1].0, 7);
    assert!(
        warnings
            .iter()
            .all(|w| w.1.ends_with("(imported: --allow certificate-subject)")),
        "{warnings:?}"
    );
    // The certificate subject is the only check relaxed: the same key twice is still refused.
    let errors = import_errors(
        parse_json_with(&json_lines(&records), &anchors, now(), &policy).unwrap_err(),
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, 8);
    assert!(
        errors[0]
            .1
            .starts_with("certificate: the same key as DevEUI 70b3d57e00000001 on line 2"),
        "{errors:?}"
    );
}

#[test]
fn zero_keys_and_reserved_dev_euis_are_refused() {
    let k: Vec<String> = (1..=6).map(public_hex).collect();
    let zero = "0".repeat(32);
    let text = format!(
        "dev_eui,join_eui,lorawan_version,app_key,nwk_key,identity_key\n\
         0000000000000000,70b3d57ed0000000,1.0.3,{KEY_A},,{}\n\
         FFFFFFFFFFFFFFFF,70b3d57ed0000000,1.0.3,{KEY_A},,{}\n\
         70b3d57e00000004,70b3d57ed0000000,1.0.3,{zero},,{}\n\
         70b3d57e00000005,70b3d57ed0000000,1.1,{KEY_A},{zero},{}\n\
         70b3d57e00000006,0000000000000000,1.0.3,{KEY_A},,{}\n",
        k[0], k[1], k[3], k[4], k[5]
    );
    let errors = import_errors(parse_csv(&text, &TrustAnchors::none(), now()).unwrap_err());
    assert_eq!(
        errors,
        [
            (
                2,
                "dev_eui: 0000000000000000 is reserved (the all-zero and all-ones EUI-64s name \
                 no device)"
                    .to_owned()
            ),
            (
                3,
                "dev_eui: ffffffffffffffff is reserved (the all-zero and all-ones EUI-64s name \
                 no device)"
                    .to_owned()
            ),
            (
                4,
                "app_key: all zero (a factory key must be secret) (--allow zero-key imports it \
                 with a warning)"
                    .to_owned()
            ),
            (
                5,
                "nwk_key: all zero (a factory key must be secret) (--allow zero-key imports it \
                 with a warning)"
                    .to_owned()
            ),
        ]
    );
    // --allow zero-key: the keys pass with a warning, the reserved DevEUIs never do.
    let policy = ImportPolicy::default().allowing(Check::ZeroKey);
    let errors =
        import_errors(parse_csv_with(&text, &TrustAnchors::none(), now(), &policy).unwrap_err());
    assert_eq!(errors.iter().map(|e| e.0).collect::<Vec<_>>(), [2, 3]);
    let allowed: String = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i == 0 || *i >= 3)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let parsed = parse_csv_with(&allowed, &TrustAnchors::none(), now(), &policy).unwrap();
    assert_eq!(
        parsed.devices.len(),
        3,
        "a zero JoinEUI is an ordinary JoinEUI"
    );
    let warnings: Vec<String> = parsed.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "line 2: app_key: all zero (a factory key must be secret) (imported: --allow zero-key)",
            "line 3: nwk_key: all zero (a factory key must be secret) (imported: --allow zero-key)",
        ]
    );
}

#[test]
fn identity_keys_get_length_errors() {
    let k = public_hex(1);
    let text = format!(
        "dev_eui,join_eui,lorawan_version,app_key,identity_key\n\
         70b3d57e00000001,70b3d57ed0000000,1.0.3,{KEY_A},{}\n\
         70b3d57e00000002,70b3d57ed0000000,1.0.3,{KEY_A},{}\n\
         70b3d57e00000003,70b3d57ed0000000,1.0.3,{KEY_A},02{}\n\
         70b3d57e00000004,70b3d57ed0000000,1.0.3,{KEY_A},{k}00\n",
        &k[..80],
        "04".repeat(98),
        "ff".repeat(48)
    );
    let errors = import_errors(parse_csv(&text, &TrustAnchors::none(), now()).unwrap_err());
    assert_eq!(
        errors,
        [
            (
                2,
                "identity_key: 40 bytes; a P-384 public key is 49 (compressed) or 97 \
                 (uncompressed) bytes"
                    .to_owned()
            ),
            (
                3,
                "identity_key: 98 bytes; a P-384 public key is 49 (compressed) or 97 \
                 (uncompressed) bytes"
                    .to_owned()
            ),
            (4, "identity_key: not a valid P-384 point".to_owned()),
            (
                5,
                "identity_key: 50 bytes; a P-384 public key is 49 (compressed) or 97 \
                 (uncompressed) bytes"
                    .to_owned()
            ),
        ]
    );
}

/// The CSV import example of the README, between its markers, as it stands.
fn readme_csv_example() -> &'static str {
    let readme = include_str!("../README.md");
    let start = "<!-- csv-import-example -->\n```text\n";
    let from = readme.find(start).expect("the README's CSV example marker") + start.len();
    let len = readme[from..]
        .find("```\n<!-- /csv-import-example -->")
        .expect("the README's CSV example end marker");
    &readme[from..from + len]
}

#[test]
fn csv_import_example_in_the_readme_imports() {
    let text = readme_csv_example();
    assert!(
        text.contains("\"-----BEGIN CERTIFICATE-----\n"),
        "a quoted PEM"
    );
    let anchors = TrustAnchors::from_pem(include_str!("data/manufacturer-ca.pem")).expect("the CA");
    let devices = parse_csv(text, &anchors, now()).unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<(usize, String, &str, &str)> = devices
        .iter()
        .map(|(line, d)| {
            (
                *line,
                d.dev_eui.to_string(),
                d.mac_version.as_str(),
                d.identity_source.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (2, "70b3d57ed0000001".into(), "1.0.3", "raw"),
            (3, "70b3d57ed0000002".into(), "1.0.4", "certificate"),
            (13, "70b3d57ed0000003".into(), "1.1", "certificate"),
        ],
        "the PEM record spans lines 3 to 12"
    );
    assert!(devices[2].1.nwk_key.is_some());
    // The certificates are what is checked: without the CA both are refused, each at the line
    // its record starts on; another CA's certificates would not verify.
    let errors = import_errors(parse_csv(text, &TrustAnchors::none(), now()).unwrap_err());
    assert_eq!(
        errors.iter().map(|e| e.0).collect::<Vec<_>>(),
        [3, 13],
        "{errors:?}"
    );
    assert!(errors.iter().all(|e| e.1.contains("no manufacturer CA")));
}

/// One identity key per device: in one file and against the registered devices.
async fn shared_identity_suite(db: Db) {
    let store = Store::open(&db.url()).await.unwrap();
    let (k1, k2, k3) = (public_hex(1), public_hex(2), public_hex(3));
    let header = "dev_eui,join_eui,lorawan_version,app_key,identity_key\n";
    let row = |i: u32, k: &str| format!("70b3d57e{i:08x},70b3d57ed0000000,1.0.3,{KEY_A},{k}\n");
    let strict = ImportPolicy::default();
    let relaxed = ImportPolicy::default().allowing(Check::SharedIdentityKey);
    // In one file.
    let text = format!("{header}{}{}{}", row(1, &k1), row(2, &k2), row(3, &k1));
    let errors = import_errors(parse_csv(&text, &TrustAnchors::none(), now()).unwrap_err());
    assert_eq!(
        errors,
        [(
            4,
            "identity_key: the same key as DevEUI 70b3d57e00000001 on line 2 (one identity key \
             per device) (--allow shared-identity-key imports it with a warning)"
                .to_owned()
        )]
    );
    let parsed = parse_csv_with(&text, &TrustAnchors::none(), now(), &relaxed).unwrap();
    assert_eq!(parsed.devices.len(), 3);
    assert_eq!(parsed.warnings.len(), 1);
    assert_eq!(parsed.warnings[0].line, 4);
    // Against the registry: 70b3d57e00000001 holds k1.
    let mut first = parse_csv_with(
        &format!("{header}{}", row(1, &k1)),
        &TrustAnchors::none(),
        now(),
        &strict,
    )
    .unwrap();
    check_registered_identities(
        &store
            .devices_with_identities(&first.identities())
            .await
            .unwrap(),
        &mut first,
        &strict,
    )
    .unwrap();
    store
        .import_devices(&first.devices, &kek(), 1)
        .await
        .unwrap();
    let text = format!("{header}{}{}", row(10, &k3), row(11, &k1));
    let mut parsed = parse_csv_with(&text, &TrustAnchors::none(), now(), &strict).unwrap();
    let errors = import_errors(
        check_registered_identities(
            &store
                .devices_with_identities(&parsed.identities())
                .await
                .unwrap(),
            &mut parsed,
            &strict,
        )
        .unwrap_err(),
    );
    assert_eq!(
        errors,
        [(
            3,
            "identity_key: the key of DevEUI 70b3d57e00000001, already registered (one \
             identity key per device) (--allow shared-identity-key imports it with a warning)"
                .to_owned()
        )]
    );
    assert_eq!(
        store.list_devices().await.unwrap().len(),
        1,
        "nothing imported"
    );
    // The registered device itself is not its own conflict (the import refuses it as such).
    let mut again = parse_csv_with(
        &format!("{header}{}", row(1, &k1)),
        &TrustAnchors::none(),
        now(),
        &strict,
    )
    .unwrap();
    check_registered_identities(
        &store
            .devices_with_identities(&again.identities())
            .await
            .unwrap(),
        &mut again,
        &strict,
    )
    .unwrap();
    // Relaxed: a warning, and the import goes through.
    let mut parsed = parse_csv_with(&text, &TrustAnchors::none(), now(), &relaxed).unwrap();
    check_registered_identities(
        &store
            .devices_with_identities(&parsed.identities())
            .await
            .unwrap(),
        &mut parsed,
        &relaxed,
    )
    .unwrap();
    assert_eq!(parsed.warnings.len(), 1);
    assert_eq!(parsed.warnings[0].line, 3);
    assert!(
        parsed.warnings[0]
            .message
            .ends_with("(imported: --allow shared-identity-key)")
    );
    store
        .import_devices(&parsed.devices, &kek(), 2)
        .await
        .unwrap();
    assert_eq!(store.list_devices().await.unwrap().len(), 3);
    store.close().await;
}

#[tokio::test]
async fn one_identity_key_per_device_sqlite() {
    shared_identity_suite(Db::sqlite()).await;
}

#[tokio::test]
async fn one_identity_key_per_device_postgres() {
    let Some((db, _lock)) = postgres_for("identity keys on PostgreSQL").await else {
        return;
    };
    shared_identity_suite(db).await;
}

async fn store_suite(db: Db) {
    let store = Store::open(&db.url()).await.unwrap();
    let (k, k2, k3) = (public_hex(1), public_hex(2), public_hex(3));
    let text = format!(
        "dev_eui,join_eui,lorawan_version,app_key,nwk_key,identity_key\n\
         70b3d57e00000001,70b3d57ed0000000,1.0.3,{KEY_A},,{k}\n\
         70b3d57e00000002,70b3d57ed0000000,1.1,{KEY_A},{KEY_A},{k2}\n"
    );
    let devices = parse_csv(&text, &TrustAnchors::none(), now()).unwrap();
    assert_eq!(store.import_devices(&devices, &kek(), 1).await.unwrap(), 2);
    // All or nothing: one DevEUI already registered, so the new one is not stored either.
    let again = format!(
        "dev_eui,join_eui,lorawan_version,app_key,identity_key\n\
         70b3d57e00000003,70b3d57ed0000000,1.0.3,{KEY_A},{k3}\n\
         70b3d57e00000002,70b3d57ed0000000,1.0.3,{KEY_A},{k2}\n"
    );
    let devices = parse_csv(&again, &TrustAnchors::none(), now()).unwrap();
    let errors = import_errors(store.import_devices(&devices, &kek(), 2).await.unwrap_err());
    assert_eq!(
        errors,
        [(3, "DevEUI 70b3d57e00000002 is already registered".into())]
    );
    let list = store.list_devices().await.unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|d| d.key_state == KeyState::Factory));
    // Sealed at rest: the key bytes are not in the row, and only the right KEK opens them.
    let dev: Eui64 = "70b3d57e00000001".parse().unwrap();
    let row = store.device(dev).await.unwrap().unwrap();
    let raw = hex::decode(KEY_A).unwrap();
    assert!(!row.active_keys.windows(16).any(|w| w == raw.as_slice()));
    let keys = open_root_keys(&kek(), dev, &row.active_keys).unwrap();
    assert_eq!(keys.app_key.expose_secret().as_slice(), raw.as_slice());
    let other = StorageKek::from_hex(&"44".repeat(32)).unwrap();
    assert!(open_root_keys(&other, dev, &row.active_keys).is_err());
    let dev2: Eui64 = "70b3d57e00000002".parse().unwrap();
    assert!(
        open_root_keys(&kek(), dev2, &row.active_keys).is_err(),
        "bound to its DevEUI"
    );
    // The version guard: two writers from the same read, only the first wins.
    let mut a = Commit::new(dev, 5);
    a.device_version = Some(row.version);
    a.key_ops.push(KeyOp::Stage(row.active_keys.clone()));
    a.session = Some(SessionWrite {
        expected_version: None,
        sealed: vec![1, 2, 3],
        pending: true,
        deadline_ms: Some(10),
    });
    store.commit(&a).await.unwrap();
    assert!(matches!(store.commit(&a).await, Err(Error::Conflict)));
    let row = store.device(dev).await.unwrap().unwrap();
    assert_eq!(row.key_state, KeyState::PendingNew);
    assert_eq!(store.pending_sessions().await.unwrap(), 1);
    assert_eq!(store.due_sessions(10, 10).await.unwrap(), [dev]);
    // A failed transaction leaves nothing behind: stage + a stale session write.
    let mut b = Commit::new(dev, 6);
    b.device_version = Some(row.version);
    b.key_ops.push(KeyOp::Activate);
    b.session = Some(SessionWrite {
        expected_version: Some(99),
        sealed: vec![],
        pending: false,
        deadline_ms: None,
    });
    assert!(matches!(store.commit(&b).await, Err(Error::Conflict)));
    assert_eq!(
        store.device(dev).await.unwrap().unwrap().key_state,
        KeyState::PendingNew
    );
    b.session = None;
    store.commit(&b).await.unwrap();
    let row = store.device(dev).await.unwrap().unwrap();
    assert_eq!((row.key_state, row.generation), (KeyState::ActiveNew, 1));
    let history: Vec<String> = store
        .key_history(dev)
        .await
        .unwrap()
        .into_iter()
        .map(|(g, e)| format!("{e}@{g}"))
        .collect();
    assert_eq!(history, ["staged@1", "retired@0", "activated@1"]);
    store.close().await;
    println!("store suite passed on {}", db.name());
}

#[tokio::test]
async fn store_suite_sqlite() {
    store_suite(Db::sqlite()).await;
}

#[tokio::test]
async fn store_suite_postgres() {
    let Some((db, _lock)) = postgres_for("store suite on PostgreSQL").await else {
        return;
    };
    store_suite(db).await;
}

/// Rows of the `meta` table (the KEK check value), read beside the store.
async fn meta_rows(url: &str) -> i64 {
    use sqlx::{Connection, Row};
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(url).await.unwrap();
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM meta")
        .fetch_one(&mut c)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    c.close().await.unwrap();
    n
}

/// One database, one storage KEK: the first use of a KEK pins it (a sealed check value), and a
/// well-formed but different KEK is refused by `app::build` (what `serve` runs) and by the
/// import, which then stores nothing. A database of the previous version (sealed rows, no check
/// value) is verified by opening one of its rows, and gets its check value from the right KEK.
async fn wrong_kek_suite(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("server.pem");
    lorapki_server::identity::generate_file(&key_file).unwrap();
    let config = |kek: &str| {
        Config::parse(&format!(
            "[server]\nkey_file = {:?}\nkek = \"{kek}\"\n[database]\nurl = {:?}\n",
            key_file.display().to_string(),
            db.url()
        ))
        .unwrap()
    };
    let wrong_hex = "44".repeat(32);
    let wrong = StorageKek::from_hex(&wrong_hex).unwrap();
    let refused = |e: Error| {
        let text = e.to_string();
        assert!(
            text.contains("the storage KEK does not match the one this database was sealed with")
                && text.contains("[server] kek "),
            "{text}"
        );
    };
    // An empty database: the first server pins its KEK.
    let server = app::build(&config(KEK_HEX), Arc::new(Metrics::default()))
        .await
        .unwrap();
    server.store().close().await;
    drop(server);
    refused(
        app::build(&config(&wrong_hex), Arc::new(Metrics::default()))
            .await
            .unwrap_err(),
    );
    let store = Store::open(&db.url()).await.unwrap();
    let k = public_hex(1);
    let csv = format!(
        "dev_eui,join_eui,lorawan_version,app_key,identity_key\n\
         70b3d57e00000001,70b3d57ed0000000,1.0.3,{KEY_A},{k}\n"
    );
    let devices = parse_csv(&csv, &TrustAnchors::none(), now()).unwrap();
    let e = store.import_devices(&devices, &wrong, 1).await.unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
    assert!(
        store.list_devices().await.unwrap().is_empty(),
        "nothing imported"
    );
    assert_eq!(store.import_devices(&devices, &kek(), 1).await.unwrap(), 1);
    store.close().await;
    assert_eq!(meta_rows(&db.url()).await, 1);

    // The previous version's database: sealed rows and no check value.
    {
        use sqlx::Connection;
        let mut c = sqlx::AnyConnection::connect(&db.url()).await.unwrap();
        sqlx::query("DELETE FROM meta")
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
    }
    refused(
        app::build(&config(&wrong_hex), Arc::new(Metrics::default()))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        meta_rows(&db.url()).await,
        0,
        "a wrong KEK writes no check value"
    );
    let store = Store::open(&db.url()).await.unwrap();
    let two = csv.replace("70b3d57e00000001", "70b3d57e00000002");
    let two = parse_csv(&two, &TrustAnchors::none(), now()).unwrap();
    assert!(store.import_devices(&two, &wrong, 2).await.is_err());
    assert_eq!(store.list_devices().await.unwrap().len(), 1);
    store.close().await;
    assert_eq!(meta_rows(&db.url()).await, 0);
    let server = app::build(&config(KEK_HEX), Arc::new(Metrics::default()))
        .await
        .unwrap();
    server.store().close().await;
    assert_eq!(meta_rows(&db.url()).await, 1, "the right KEK writes it");
    refused(
        app::build(&config(&wrong_hex), Arc::new(Metrics::default()))
            .await
            .unwrap_err(),
    );
    println!("wrong-KEK suite passed on {}", db.name());
}

#[tokio::test]
async fn wrong_kek_is_refused_sqlite() {
    wrong_kek_suite(Db::sqlite()).await;
}

#[tokio::test]
async fn wrong_kek_is_refused_postgres() {
    let Some((db, _lock)) = postgres_for("wrong-KEK suite on PostgreSQL").await else {
        return;
    };
    wrong_kek_suite(db).await;
}
