//! Interoperability with the `openssl` command-line tool: ECDSA P-384/SHA-384 both ways and ECDH
//! P-384 with keys from both sides. Skipped (with a message) where `openssl` is not installed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use lorapki_crypto::conformance::{
    der_signature_to_p1363, p1363_to_der_signature, spki_p384_der, spki_p384_point,
};
use lorapki_crypto::{CryptoBackend, KeyImport, KeySlot, Secret, Signature};
use lorapki_crypto_soft::{SoftBackend, TestRng};

/// A scratch directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "lorapki-openssl-{name}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn openssl_available() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        println!("SKIPPED: openssl binary not found");
    }
    found
}

/// Runs `openssl args…`, panicking with its stderr on failure; returns stdout.
fn openssl(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(args.iter().map(|arg| arg.as_ref()))
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {:?} failed: {}",
        args.iter()
            .map(|arg| arg.as_ref().to_owned())
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Writes a SEC1 point as a PEM SubjectPublicKeyInfo.
fn write_public_pem(path: &Path, point: &[u8]) {
    let encoded = base64(&spki_p384_der(point));
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in encoded.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    fs::write(path, pem).unwrap();
}

/// The private scalar of an OpenSSL EC key, from its DER `ECPrivateKey` (RFC 5915 §3):
/// `SEQUENCE { INTEGER 1, OCTET STRING privateKey, … }`.
fn openssl_private_scalar(key_pem: &Path) -> Secret<48> {
    let der = openssl(&[&"ec", &"-in", &key_pem, &"-outform", &"DER"]);
    let prefix = [0x02, 0x01, 0x01, 0x04, 0x30];
    // After the outer SEQUENCE header: version INTEGER 1, then the 48-byte OCTET STRING.
    let start = der
        .windows(prefix.len())
        .position(|window| window == prefix)
        .expect("ECPrivateKey with a 48-byte private key")
        + prefix.len();
    Secret::from_slice(&der[start..start + 48]).unwrap()
}

fn openssl_public_point(key_pem: &Path, scratch: &Scratch) -> Vec<u8> {
    let out = scratch.path("openssl_pub.der");
    openssl(&[
        &"ec",
        &"-in",
        &key_pem,
        &"-pubout",
        &"-outform",
        &"DER",
        &"-out",
        &out,
    ]);
    let spki = fs::read(out).unwrap();
    spki_p384_point(&spki)
        .expect("named-curve P-384 SubjectPublicKeyInfo")
        .to_vec()
}

fn openssl_generate_key(path: &Path) {
    openssl(&[
        &"ecparam",
        &"-name",
        &"secp384r1",
        &"-genkey",
        &"-noout",
        &"-out",
        &path,
    ]);
}

#[test]
fn openssl_verifies_our_signatures() {
    if !openssl_available() {
        return;
    }
    let scratch = Scratch::new("verify");
    let mut backend = SoftBackend::new(TestRng::from_seed(11));
    let slot = KeySlot(1);
    backend.identity_generate(slot).unwrap();
    let public_pem = scratch.path("pub.pem");
    write_public_pem(
        &public_pem,
        &backend.identity_public_key_uncompressed(slot).unwrap(),
    );

    for (index, message) in [&b""[..], b"abc", &[0xa5; 1000]].iter().enumerate() {
        let message_path = scratch.path(&format!("msg{index}"));
        let signature_path = scratch.path(&format!("sig{index}.der"));
        fs::write(&message_path, message).unwrap();
        let signature = backend.identity_sign(slot, message).unwrap();
        fs::write(
            &signature_path,
            p1363_to_der_signature(signature.as_bytes()),
        )
        .unwrap();
        let stdout = openssl(&[
            &"dgst",
            &"-sha384",
            &"-verify",
            &public_pem,
            &"-signature",
            &signature_path,
            &message_path,
        ]);
        assert_eq!(String::from_utf8_lossy(&stdout).trim(), "Verified OK");
    }
}

#[test]
fn we_verify_openssl_signatures() {
    if !openssl_available() {
        return;
    }
    let scratch = Scratch::new("sign");
    let mut backend = SoftBackend::new(TestRng::from_seed(12));
    for round in 0..3 {
        let key = scratch.path(&format!("key{round}.pem"));
        openssl_generate_key(&key);
        let public = backend
            .public_key_from_sec1(&openssl_public_point(&key, &scratch))
            .unwrap();
        let message = format!("message {round} signed by OpenSSL");
        let message_path = scratch.path("msg");
        let signature_path = scratch.path("sig.der");
        fs::write(&message_path, &message).unwrap();
        openssl(&[
            &"dgst",
            &"-sha384",
            &"-sign",
            &key,
            &"-out",
            &signature_path,
            &message_path,
        ]);
        let der = fs::read(&signature_path).unwrap();
        let signature = Signature::from_bytes(der_signature_to_p1363(&der).expect("DER signature"));
        backend
            .ecdsa_verify(&public, message.as_bytes(), &signature)
            .unwrap();
        assert_eq!(
            backend.ecdsa_verify(&public, b"another message", &signature),
            Err(lorapki_crypto::Error::InvalidSignature)
        );
    }
}

#[test]
fn ecdh_agrees_with_openssl() {
    if !openssl_available() {
        return;
    }
    let scratch = Scratch::new("ecdh");
    let mut backend = SoftBackend::new(TestRng::from_seed(13));
    for round in 0..3 {
        // OpenSSL's key pair.
        let openssl_key = scratch.path(&format!("a{round}.pem"));
        openssl_generate_key(&openssl_key);
        let openssl_public = backend
            .public_key_from_sec1(&openssl_public_point(&openssl_key, &scratch))
            .unwrap();

        // Our ephemeral key pair, its public key exported as PEM.
        let (ours, our_public) = backend.ephemeral_generate().unwrap();
        let our_public_pem = scratch.path(&format!("b{round}_pub.pem"));
        write_public_pem(
            &our_public_pem,
            &backend.public_key_uncompressed(&our_public).unwrap(),
        );

        let by_openssl = openssl(&[
            &"pkeyutl",
            &"-derive",
            &"-inkey",
            &openssl_key,
            &"-peerkey",
            &our_public_pem,
        ]);
        let by_us = backend.ecdh_agree(ours, &openssl_public).unwrap();
        assert_eq!(
            &by_openssl[..],
            &by_us.expose_secret()[..],
            "our side vs OpenSSL"
        );

        // OpenSSL's private key imported through the test-only path gives the same secret
        // against our public key.
        let (imported, imported_public) = backend
            .ephemeral_import(&openssl_private_scalar(&openssl_key))
            .unwrap();
        assert_eq!(
            imported_public, openssl_public,
            "imported key has OpenSSL's public key"
        );
        let by_import = backend.ecdh_agree(imported, &our_public).unwrap();
        assert_eq!(by_import, by_us, "imported OpenSSL key vs our key");
    }
}
