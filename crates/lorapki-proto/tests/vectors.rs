//! The test vectors of PROTOCOL.md §11: one complete run with fixed identity keys and fixed
//! ephemeral scalars at N = 51 (same-window schedule), every frame, the transcript hash, the key
//! schedule and both signatures.
//!
//! Three checks keep the vectors honest:
//! * the implementation reproduces the values below, byte for byte;
//! * PROTOCOL.md §11 contains exactly these values (run with `LORAPKI_PRINT_VECTORS=1` to print
//!   the section after a deliberate change);
//! * an independent oracle, the `openssl` command-line tool, recomputes the ECDH secret, TH, the
//!   HKDF outputs and verifies both signatures from the public values and the fixed scalars
//!   (skipped with a message where `openssl` is missing; CI installs it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::process::Command;

use lorapki_crypto::conformance as der;
use lorapki_crypto::{
    CryptoBackend, DelegateBackend, KeyImport, KeySlot, KeyStoreStatus, PublicKey,
    Result as CryptoResult, SHA384_LEN, Secret, SharedSecret, Signature,
};
use lorapki_crypto_soft::{SoftBackend, TestRng};
use lorapki_proto::keys::{self, LorawanVersion, Role, Transcript};
use lorapki_proto::{
    DeviceConfig, DeviceEvent, DevicePersistent, DeviceRecord, DeviceSession, Instant,
    ServerConfig, ServerEndpoint,
};

const DEV_EUI: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0x00, 0x00, 0x01];
const JOIN_EUI: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0x00, 0x00, 0x00];
const SLOT: KeySlot = KeySlot(0);

/// The fixed private scalars (big-endian, all below the P-384 group order).
fn scalar(byte: u8) -> [u8; 48] {
    let mut s = [byte; 48];
    s[0] = 0x1f;
    s
}
const DEVICE_IDENTITY: u8 = 0x11;
const SERVER_IDENTITY: u8 = 0x22;
const DEVICE_EPHEMERAL: u8 = 0x33;
const SERVER_EPHEMERAL: u8 = 0x44;

/// A backend whose ephemeral keys come from a fixed list (known-answer testing only).
struct FixedEphemerals {
    inner: SoftBackend<TestRng>,
    scalars: VecDeque<[u8; 48]>,
}

impl DelegateBackend for FixedEphemerals {
    type Inner = SoftBackend<TestRng>;
    type Ephemeral = <SoftBackend<TestRng> as CryptoBackend>::Ephemeral;

    fn inner(&mut self) -> &mut SoftBackend<TestRng> {
        &mut self.inner
    }

    fn ephemeral_generate(&mut self) -> CryptoResult<(Self::Ephemeral, PublicKey)> {
        let scalar = self.scalars.pop_front().expect("one fixed scalar per run");
        self.inner.ephemeral_import(&Secret::from_array(scalar))
    }

    fn ecdh_agree(
        &mut self,
        ephemeral: Self::Ephemeral,
        peer: &PublicKey,
    ) -> CryptoResult<SharedSecret> {
        self.inner.ecdh_agree(ephemeral, peer)
    }
}

fn fixed_backend(identity: u8, ephemeral: u8, seed: u64) -> (FixedEphemerals, PublicKey) {
    let mut inner = SoftBackend::new(TestRng::from_seed(seed));
    let public = inner
        .identity_import(SLOT, &Secret::from_array(scalar(identity)))
        .unwrap();
    (
        FixedEphemerals {
            inner,
            scalars: VecDeque::from([scalar(ephemeral)]),
        },
        public,
    )
}

/// Every value of the run, as (name, hex) pairs in the order of PROTOCOL.md §11.
fn run_vectors() -> Vec<(&'static str, String)> {
    let (mut device_backend, device_public) = fixed_backend(DEVICE_IDENTITY, DEVICE_EPHEMERAL, 1);
    let (mut server_backend, server_public) = fixed_backend(SERVER_IDENTITY, SERVER_EPHEMERAL, 2);
    let config = DeviceConfig::new(DEV_EUI, JOIN_EUI, LorawanVersion::V1_0, SLOT, server_public);
    let persistent = DevicePersistent {
        last_session: Some(4),
        consecutive_failures: 0,
    };
    let status = KeyStoreStatus {
        active_generation: 0,
        staged: false,
    };
    let mut device = DeviceSession::new(&mut device_backend, config, persistent, status).unwrap();
    let mut server =
        ServerEndpoint::new(&mut server_backend, ServerConfig::new(SLOT, server_public));
    let record = DeviceRecord {
        dev_eui: DEV_EUI,
        join_eui: JOIN_EUI,
        lorawan: LorawanVersion::V1_0,
        identity: device_public,
    };

    let now = Instant::from_millis(0);
    device.start(&mut device_backend, now).unwrap();
    let mut frames = Vec::new();
    let mut new_key = None;
    for _ in 0..3 {
        let mut up = [0u8; 51];
        let t = device
            .poll_transmit(&mut device_backend, now, 51, &mut up)
            .unwrap()
            .unwrap();
        frames.push(hex::encode(&up[..t.len]));
        let outcome = server
            .handle_uplink(
                &mut server_backend,
                now,
                &DEV_EUI,
                Some(&record),
                &up[..t.len],
            )
            .unwrap();
        assert_eq!(outcome.accepted, if frames.len() == 5 { 2 } else { 1 });
        let mut down = [0u8; 51];
        let t = server
            .poll_transmit(&DEV_EUI, 51, &mut down)
            .unwrap()
            .unwrap();
        frames.push(hex::encode(&down[..t.len]));
        device
            .handle_downlink(&mut device_backend, now, &down[..t.len])
            .unwrap();
        while let Some(event) = device.poll_event() {
            if let DeviceEvent::StageNewKey(keys) = event {
                new_key = Some(keys);
            }
        }
    }
    let new_key = new_key.expect("the run staged a key");

    // The same values, recomputed step by step from the public values and the fixed scalars.
    let mut b = SoftBackend::new(TestRng::from_seed(3));
    let (eph_d, eph_d_pub) = b
        .ephemeral_import(&Secret::from_array(scalar(DEVICE_EPHEMERAL)))
        .unwrap();
    let (_, eph_s_pub) = b
        .ephemeral_import(&Secret::from_array(scalar(SERVER_EPHEMERAL)))
        .unwrap();
    let z = b.ecdh_agree(eph_d, &eph_s_pub).unwrap();
    let z_hex = hex::encode(z.expose_secret());
    let device_key_id = keys::key_id(&mut b, &device_public);
    let server_key_id = keys::key_id(&mut b, &server_public);
    let transcript = Transcript {
        lorawan: LorawanVersion::V1_0,
        dev_eui: &DEV_EUI,
        join_eui: &JOIN_EUI,
        server_key_id: &server_key_id,
        device_key_id: &device_key_id,
        session: 5,
        device_ephemeral: &eph_d_pub,
        server_ephemeral: &eph_s_pub,
    };
    let th = transcript.hash(&mut b);
    let prk = b.hkdf_extract(&th, z.expose_secret()).unwrap();
    let session_keys = keys::derive_session_keys(&mut b, z, &th, LorawanVersion::V1_0).unwrap();
    assert!(
        session_keys.root == new_key,
        "the device staged the key the schedule derives"
    );
    let sig_d = sign(&mut device_backend.inner, Role::Device, &th, &session_keys);
    let sig_s = sign(&mut server_backend.inner, Role::Server, &th, &session_keys);

    vec![
        (
            "device identity private key",
            hex::encode(scalar(DEVICE_IDENTITY)),
        ),
        (
            "device identity public key",
            hex::encode(device_public.as_bytes()),
        ),
        (
            "server signing private key",
            hex::encode(scalar(SERVER_IDENTITY)),
        ),
        (
            "server signing public key",
            hex::encode(server_public.as_bytes()),
        ),
        (
            "device ephemeral private key",
            hex::encode(scalar(DEVICE_EPHEMERAL)),
        ),
        ("EPH_D", hex::encode(eph_d_pub.as_bytes())),
        (
            "server ephemeral private key",
            hex::encode(scalar(SERVER_EPHEMERAL)),
        ),
        ("EPH_S", hex::encode(eph_s_pub.as_bytes())),
        ("DEVICE_KEY_ID", hex::encode(device_key_id)),
        ("SERVER_KEY_ID", hex::encode(server_key_id)),
        ("Z", z_hex),
        ("TH", hex::encode(th)),
        ("PRK", hex::encode(prk.expose_secret())),
        (
            "AppKey",
            hex::encode(session_keys.root.app_key.expose_secret()),
        ),
        (
            "C_D",
            hex::encode(session_keys.device_confirm.expose_secret()),
        ),
        (
            "C_S",
            hex::encode(session_keys.server_confirm.expose_secret()),
        ),
        ("SIG_D", hex::encode(sig_d.as_bytes())),
        ("SIG_S", hex::encode(sig_s.as_bytes())),
        ("U1 PubKeyReq", frames[0].clone()),
        ("D1 PubKeyAns P0", frames[1].clone()),
        ("U2 SigVerifyReq C=0", frames[2].clone()),
        ("D2 PubKeyAns P1", frames[3].clone()),
        ("U3 SigVerifyReq C=1 + KeyChangeReq", frames[4].clone()),
        ("D3 SigVerifyAns + PubKeyAns P2", frames[5].clone()),
    ]
}

fn sign(
    b: &mut SoftBackend<TestRng>,
    role: Role,
    th: &[u8; SHA384_LEN],
    k: &keys::SessionKeys,
) -> Signature {
    let digest = keys::signed_digest(b, role, th, k);
    b.identity_sign_digest(SLOT, &digest).unwrap()
}

fn markdown(vectors: &[(&str, String)]) -> String {
    let mut out = String::from("| Value | Hex |\n|---|---|\n");
    for (name, value) in vectors {
        writeln!(out, "| {name} | `{value}` |").unwrap();
    }
    out
}

#[test]
fn implementation_reproduces_the_spec_vectors() {
    let vectors = run_vectors();
    let table = markdown(&vectors);
    if std::env::var_os("LORAPKI_PRINT_VECTORS").is_some() {
        println!("{table}");
    }
    let spec = include_str!("../PROTOCOL.md");
    for line in table.lines().skip(2) {
        assert!(
            spec.contains(line),
            "PROTOCOL.md §11 lacks or differs on: {line}"
        );
    }
    // The frames are those of the §9.1 schedule.
    let frame = |name: &str| {
        vectors
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert!(frame("U1 PubKeyReq").starts_with("0115"));
    assert!(frame("U3 SigVerifyReq C=1 + KeyChangeReq").ends_with("05"));
    assert!(frame("D3 SigVerifyAns + PubKeyAns P2").starts_with("0414"));
    assert_eq!(frame("U2 SigVerifyReq C=0")[4..], frame("SIG_D")[..96]);
}

/// The independent oracle: OpenSSL recomputes Z, TH, the HKDF outputs and verifies both
/// signatures.
#[test]
fn openssl_agrees_with_the_vectors() {
    if Command::new("openssl").arg("version").output().is_err() {
        println!("SKIPPED: openssl binary not found (CI installs it)");
        return;
    }
    let v = run_vectors();
    let get = |name: &str| hex::decode(&v.iter().find(|(n, _)| *n == name).unwrap().1).unwrap();
    let dir = std::env::temp_dir().join(format!("lorapki-vectors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut b = SoftBackend::new(TestRng::from_seed(9));
    let uncompressed = |b: &mut SoftBackend<TestRng>, name: &str| {
        let key = b.public_key_from_sec1(&get(name)).unwrap();
        b.public_key_uncompressed(&key).unwrap()
    };
    let write = |file: &str, bytes: &[u8]| {
        let path = dir.join(file);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    // SEC1 ECPrivateKey for P-384 (RFC 5915): version 1, the scalar, the curve OID.
    let ec_private_key = |scalar: &[u8]| {
        let mut der = vec![0x30, 0x3e, 0x02, 0x01, 0x01, 0x04, 0x30];
        der.extend_from_slice(scalar);
        der.extend_from_slice(&[0xa0, 0x07, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]);
        der
    };

    // Z = ECDH(device ephemeral private, EPH_S).
    let eph_d_key = write(
        "eph_d.der",
        &ec_private_key(&get("device ephemeral private key")),
    );
    let eph_s_pub = write(
        "eph_s_pub.der",
        &der::spki_p384_der(&uncompressed(&mut b, "EPH_S")),
    );
    let z = openssl(&[
        "pkeyutl",
        "-derive",
        "-keyform",
        "DER",
        "-inkey",
        eph_d_key.to_str().unwrap(),
        "-peerform",
        "DER",
        "-peerkey",
        eph_s_pub.to_str().unwrap(),
    ]);
    assert_eq!(z, get("Z"), "ECDH secret");

    // TH = SHA-384 of the 144-byte transcript of §5.3.
    let mut transcript = b"lorapki-v1".to_vec();
    transcript.extend_from_slice(&[0x01, 0x01, 0x10]);
    transcript.extend_from_slice(&DEV_EUI);
    transcript.extend_from_slice(&JOIN_EUI);
    transcript.extend_from_slice(&get("SERVER_KEY_ID"));
    transcript.extend_from_slice(&get("DEVICE_KEY_ID"));
    transcript.push(5);
    transcript.extend_from_slice(&get("EPH_D"));
    transcript.extend_from_slice(&get("EPH_S"));
    assert_eq!(transcript.len(), 144);
    let transcript_file = write("transcript.bin", &transcript);
    let th = openssl(&[
        "dgst",
        "-sha384",
        "-binary",
        transcript_file.to_str().unwrap(),
    ]);
    assert_eq!(th, get("TH"), "transcript hash");

    // HKDF-SHA384 (§5.4).
    let hkdf = |info: &str, len: usize| {
        let out = openssl(&[
            "kdf",
            "-keylen",
            &len.to_string(),
            "-kdfopt",
            "digest:SHA384",
            "-kdfopt",
            &format!("hexkey:{}", hex::encode(get("Z"))),
            "-kdfopt",
            &format!("hexsalt:{}", hex::encode(get("TH"))),
            "-kdfopt",
            &format!("info:{info}"),
            "HKDF",
        ]);
        hex::decode(String::from_utf8(out).unwrap().trim().replace(':', "")).unwrap()
    };
    assert_eq!(hkdf("lorapki-v1 app key", 16), get("AppKey"));
    assert_eq!(hkdf("lorapki-v1 device confirm", 32), get("C_D"));
    assert_eq!(hkdf("lorapki-v1 server confirm", 32), get("C_S"));

    // Both signatures (§5.5) verify under the identity keys.
    for (label, confirm, signature, public) in [
        (
            "lorapki-v1 device signature",
            "C_D",
            "SIG_D",
            "device identity public key",
        ),
        (
            "lorapki-v1 server signature",
            "C_S",
            "SIG_S",
            "server signing public key",
        ),
    ] {
        let mut message = label.as_bytes().to_vec();
        message.extend_from_slice(&get("TH"));
        message.extend_from_slice(&get(confirm));
        let message = write("message.bin", &message);
        let sig: [u8; 96] = get(signature).try_into().unwrap();
        let sig = write("sig.der", &der::p1363_to_der_signature(&sig));
        let public_der = der::spki_p384_der(&uncompressed(&mut b, public));
        let public = write("public.der", &public_der);
        let out = openssl(&[
            "dgst",
            "-sha384",
            "-keyform",
            "DER",
            "-verify",
            public.to_str().unwrap(),
            "-signature",
            sig.to_str().unwrap(),
            message.to_str().unwrap(),
        ]);
        assert_eq!(
            String::from_utf8_lossy(&out).trim(),
            "Verified OK",
            "{label}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
