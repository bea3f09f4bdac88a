//! The test vectors of PROTOCOL.md §11: complete runs with fixed identity keys and fixed
//! ephemeral scalars (LoRaWAN 1.0.x and 1.1 at N = 51, same-window schedule), their
//! intermediates, the Abort frames, the PubKeyReq in Fragments at N = 11 and the schedule at
//! N ≥ 222.
//!
//! Three kinds of checks keep the vectors honest:
//! * the implementation reproduces the values, byte for byte;
//! * PROTOCOL.md §11 contains exactly these values, each in its subsection (run with
//!   `LORAPKI_PRINT_VECTORS=1` to print the tables after a deliberate change);
//! * independent oracles recompute them: the `openssl` command-line tool (ECDH, TH, HKDF
//!   extract and expand, the signed strings' digests, signature verification, the group order),
//!   and two standard-library Python scripts in `tests/oracle/` (ECDSA P-384 with the RFC 6979
//!   nonce, self-checked against RFC 6979 A.2.6; a receiver following §3 and §4 that reassembles
//!   the N = 11 Fragments). Each is skipped with a message where its tool is missing; CI installs
//!   both.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use lorapki_crypto::conformance as der;
use lorapki_crypto::{
    CryptoBackend, DelegateBackend, KeyImport, KeySlot, KeyStoreStatus, PublicKey,
    Result as CryptoResult, SHA384_LEN, Secret, Sha384Hasher, SharedSecret, Signature,
};
use lorapki_crypto_soft::{SoftBackend, TestRng};
use lorapki_proto::keys::{self, LorawanVersion, NewRootKeys, Role, Transcript};
use lorapki_proto::{
    DeviceConfig, DeviceEvent, DevicePersistent, DeviceRecord, DeviceSession, Instant,
    ServerConfig, ServerEndpoint, ServerEvent,
};
use lorapki_wire::{AbortRepr, CommandRepr, Reason, Session};

const DEV_EUI: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0x00, 0x00, 0x01];
const JOIN_EUI: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0x00, 0x00, 0x00];
const SLOT: KeySlot = KeySlot(0);
const SESSION: u8 = 5;

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

fn version_name(lorawan: LorawanVersion) -> &'static str {
    match lorawan {
        LorawanVersion::V1_0 => "LoRaWAN 1.0.x",
        LorawanVersion::V1_1 => "LoRaWAN 1.1",
    }
}

// ----- driving the implementation -----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Up,
    Down,
}

/// One run of the exchange with the fixed keys, in the same-window model: every FPort-1 frame
/// on the air, in order, and the keys both sides staged.
struct Exchange {
    air: Vec<(Dir, Vec<u8>)>,
    device_staged: NewRootKeys,
    server_staged: NewRootKeys,
}

impl Exchange {
    fn frames(&self) -> Vec<String> {
        self.air.iter().map(|(_, f)| hex::encode(f)).collect()
    }
}

/// Runs the exchange at `n_up` / `n_down` from S = 5 until the device has no FPort-1 uplink left
/// (it then rejoins). Every frame passes through `tamper` on its way (an identity function
/// for the vectors themselves).
fn exchange(
    lorawan: LorawanVersion,
    n_up: usize,
    n_down: usize,
    tamper: &dyn Fn(Dir, &mut Vec<u8>),
) -> Exchange {
    let (mut device_backend, device_public) = fixed_backend(DEVICE_IDENTITY, DEVICE_EPHEMERAL, 1);
    let (mut server_backend, server_public) = fixed_backend(SERVER_IDENTITY, SERVER_EPHEMERAL, 2);
    let config = DeviceConfig::new(DEV_EUI, JOIN_EUI, lorawan, SLOT, server_public);
    let persistent = DevicePersistent {
        last_session: Some(SESSION - 1),
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
        lorawan,
        identity: device_public,
    };

    let now = Instant::from_millis(0);
    device.start(&mut device_backend, now).unwrap();
    let mut air = Vec::new();
    let (mut device_staged, mut server_staged) = (None, None);
    loop {
        let mut up = [0u8; 242];
        let Some(t) = device
            .poll_transmit(&mut device_backend, now, n_up, &mut up)
            .unwrap()
        else {
            break;
        };
        let mut up = up[..t.len].to_vec();
        tamper(Dir::Up, &mut up);
        let outcome = server
            .handle_uplink(&mut server_backend, now, &DEV_EUI, Some(&record), &up)
            .unwrap();
        assert!(outcome.accepted >= 1, "the server acted on the uplink");
        air.push((Dir::Up, up));
        while let Some(event) = server.poll_event() {
            if let ServerEvent::StageNewKey { keys, .. } = event {
                server_staged = Some(keys);
            }
        }
        let mut down = [0u8; 242];
        if let Some(t) = server.poll_transmit(&DEV_EUI, n_down, &mut down).unwrap() {
            let mut down = down[..t.len].to_vec();
            tamper(Dir::Down, &mut down);
            device
                .handle_downlink(&mut device_backend, now, &down)
                .unwrap();
            air.push((Dir::Down, down));
        }
        while let Some(event) = device.poll_event() {
            if let DeviceEvent::StageNewKey(keys) = event {
                device_staged = Some(keys);
            }
        }
        assert!(air.len() < 20, "the exchange does not end");
    }
    Exchange {
        air,
        device_staged: device_staged.expect("the device staged a key"),
        server_staged: server_staged.expect("the server staged a key"),
    }
}

/// The device's first uplinks at N = 11: its PubKeyReq in Fragments, until it waits for an
/// answer.
fn pub_key_req_at_n11() -> Vec<String> {
    let (mut backend, _) = fixed_backend(DEVICE_IDENTITY, DEVICE_EPHEMERAL, 1);
    let server_public = fixed_backend(SERVER_IDENTITY, SERVER_EPHEMERAL, 2).1;
    let config = DeviceConfig::new(DEV_EUI, JOIN_EUI, LorawanVersion::V1_0, SLOT, server_public);
    let persistent = DevicePersistent {
        last_session: Some(SESSION - 1),
        consecutive_failures: 0,
    };
    let status = KeyStoreStatus {
        active_generation: 0,
        staged: false,
    };
    let mut device = DeviceSession::new(&mut backend, config, persistent, status).unwrap();
    let now = Instant::from_millis(0);
    device.start(&mut backend, now).unwrap();
    let mut frames = Vec::new();
    let mut buf = [0u8; 11];
    while let Some(t) = device
        .poll_transmit(&mut backend, now, 11, &mut buf)
        .unwrap()
    {
        frames.push(hex::encode(&buf[..t.len]));
        assert!(frames.len() <= 20, "the PubKeyReq does not end");
    }
    frames
}

// ----- the values of a run -----

/// Every value of one N = 51 run, by name.
struct Run {
    lorawan: LorawanVersion,
    values: Vec<(&'static str, String)>,
}

impl Run {
    fn get(&self, name: &str) -> &str {
        &self
            .values
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no value {name}"))
            .1
    }

    fn bytes(&self, name: &str) -> Vec<u8> {
        hex::decode(self.get(name)).unwrap()
    }
}

/// The runs, computed once per test process.
fn run(lorawan: LorawanVersion) -> &'static Run {
    static V1_0: OnceLock<Run> = OnceLock::new();
    static V1_1: OnceLock<Run> = OnceLock::new();
    match lorawan {
        LorawanVersion::V1_0 => V1_0.get_or_init(|| compute_run(lorawan)),
        LorawanVersion::V1_1 => V1_1.get_or_init(|| compute_run(lorawan)),
    }
}

const DEVICE_SIGNATURE_LABEL: &str = "lorapki-v1 device signature";
const SERVER_SIGNATURE_LABEL: &str = "lorapki-v1 server signature";

fn compute_run(lorawan: LorawanVersion) -> Run {
    let ex = exchange(lorawan, 51, 51, &|_, _| {});
    assert!(
        ex.device_staged == ex.server_staged,
        "both sides staged the same key"
    );
    let frames = ex.frames();
    assert_eq!(
        frames.len(),
        6,
        "the §9.1 schedule: three uplinks, three downlinks"
    );
    let (_, device_public) = fixed_backend(DEVICE_IDENTITY, DEVICE_EPHEMERAL, 1);
    let (_, server_public) = fixed_backend(SERVER_IDENTITY, SERVER_EPHEMERAL, 2);

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
        lorawan,
        dev_eui: &DEV_EUI,
        join_eui: &JOIN_EUI,
        server_key_id: &server_key_id,
        device_key_id: &device_key_id,
        session: SESSION,
        device_ephemeral: &eph_d_pub,
        server_ephemeral: &eph_s_pub,
    };
    let th = transcript.hash(&mut b);
    // The 144 bytes of §5.3, laid out field by field; their hash must be the one the
    // implementation streams.
    let mut th_input = keys::TRANSCRIPT_LABEL.to_vec();
    th_input.extend_from_slice(&[keys::SUITE, keys::VERSION, lorawan.transcript_byte()]);
    th_input.extend_from_slice(&DEV_EUI);
    th_input.extend_from_slice(&JOIN_EUI);
    th_input.extend_from_slice(&server_key_id);
    th_input.extend_from_slice(&device_key_id);
    th_input.push(SESSION);
    th_input.extend_from_slice(eph_d_pub.as_bytes());
    th_input.extend_from_slice(eph_s_pub.as_bytes());
    assert_eq!(th_input.len(), 144);
    assert_eq!(sha384(&mut b, &th_input), th, "TH = SHA-384(TH input)");

    let prk = b.hkdf_extract(&th, z.expose_secret()).unwrap();
    let session_keys = keys::derive_session_keys(&mut b, z, &th, lorawan).unwrap();
    assert!(
        session_keys.root == ex.device_staged,
        "the device staged the key the schedule derives"
    );
    assert_eq!(
        session_keys.root.nwk_key.is_some(),
        lorawan == LorawanVersion::V1_1,
        "a NwkKey exactly for LoRaWAN 1.1"
    );

    // The signed strings of §5.5 and their digests, and the signatures computed from them.
    let signed = |label: &str, confirm: &[u8]| [label.as_bytes(), &th, confirm].concat();
    let device_signed = signed(
        DEVICE_SIGNATURE_LABEL,
        session_keys.device_confirm.expose_secret(),
    );
    let server_signed = signed(
        SERVER_SIGNATURE_LABEL,
        session_keys.server_confirm.expose_secret(),
    );
    let device_digest = keys::signed_digest(&mut b, Role::Device, &th, &session_keys);
    let server_digest = keys::signed_digest(&mut b, Role::Server, &th, &session_keys);
    assert_eq!(sha384(&mut b, &device_signed), device_digest);
    assert_eq!(sha384(&mut b, &server_signed), server_digest);
    let sig_d = sign(DEVICE_IDENTITY, &device_digest);
    let sig_s = sign(SERVER_IDENTITY, &server_digest);
    // The signatures on the air are these: SIG_D in U2 and U3, SIG_S in D2 and D3.
    let air = |i: usize| &ex.air[i].1;
    assert_eq!([&air(2)[2..50], &air(4)[2..50]].concat(), sig_d.as_bytes());
    assert_eq!([&air(3)[2..51], &air(5)[4..51]].concat(), sig_s.as_bytes());

    let mut values = vec![
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
        ("TH input", hex::encode(&th_input)),
        ("TH", hex::encode(th)),
        ("PRK", hex::encode(prk.expose_secret())),
        (
            "AppKey",
            hex::encode(session_keys.root.app_key.expose_secret()),
        ),
    ];
    if let Some(nwk_key) = &session_keys.root.nwk_key {
        values.push(("NwkKey", hex::encode(nwk_key.expose_secret())));
    }
    values.extend([
        (
            "C_D",
            hex::encode(session_keys.device_confirm.expose_secret()),
        ),
        (
            "C_S",
            hex::encode(session_keys.server_confirm.expose_secret()),
        ),
        ("device signed string", hex::encode(&device_signed)),
        (
            "SHA-384 of the device signed string",
            hex::encode(device_digest),
        ),
        ("server signed string", hex::encode(&server_signed)),
        (
            "SHA-384 of the server signed string",
            hex::encode(server_digest),
        ),
        ("SIG_D", hex::encode(sig_d.as_bytes())),
        ("SIG_S", hex::encode(sig_s.as_bytes())),
        ("U1 PubKeyReq", frames[0].clone()),
        ("D1 PubKeyAns P0", frames[1].clone()),
        ("U2 SigVerifyReq C=0", frames[2].clone()),
        ("D2 PubKeyAns P1", frames[3].clone()),
        ("U3 SigVerifyReq C=1 + KeyChangeReq", frames[4].clone()),
        ("D3 SigVerifyAns + PubKeyAns P2", frames[5].clone()),
    ]);
    Run { lorawan, values }
}

fn sha384(b: &mut SoftBackend<TestRng>, data: &[u8]) -> [u8; SHA384_LEN] {
    let mut hasher = b.sha384();
    hasher.update(data);
    hasher.finalize()
}

fn sign(identity: u8, digest: &[u8; SHA384_LEN]) -> Signature {
    let (mut backend, _) = fixed_backend(identity, 0, 4);
    backend
        .inner
        .identity_sign_digest(SLOT, digest)
        .expect("signing")
}

// ----- PROTOCOL.md -----

const SPEC: &str = include_str!("../PROTOCOL.md");

/// The text of the subsection of §11 whose heading starts with `heading`, up to the next heading.
fn section(heading: &str) -> &'static str {
    let start = SPEC
        .find(&format!("\n{heading}"))
        .unwrap_or_else(|| panic!("PROTOCOL.md has no heading {heading}"));
    let body = &SPEC[start + 1..];
    let end = body[1..].find("\n#").map_or(body.len(), |i| i + 1);
    &body[..end]
}

const RUN_1_0: &str = "### 11.1 ";
const INTERMEDIATES: &str = "### 11.2 ";
const RUN_1_1: &str = "### 11.3 ";
const ABORTS: &str = "### 11.4 ";
const FRAGMENTS: &str = "### 11.5 ";
const SCHEDULE_222: &str = "### 11.6 ";

/// The rows of §11.1 (the complete LoRaWAN 1.0.x run), §11.2 (its intermediates) and §11.3
/// (what the LoRaWAN 1.1 run changes).
const RUN_1_0_ROWS: [&str; 24] = [
    "device identity private key",
    "device identity public key",
    "server signing private key",
    "server signing public key",
    "device ephemeral private key",
    "EPH_D",
    "server ephemeral private key",
    "EPH_S",
    "DEVICE_KEY_ID",
    "SERVER_KEY_ID",
    "Z",
    "TH",
    "PRK",
    "AppKey",
    "C_D",
    "C_S",
    "SIG_D",
    "SIG_S",
    "U1 PubKeyReq",
    "D1 PubKeyAns P0",
    "U2 SigVerifyReq C=0",
    "D2 PubKeyAns P1",
    "U3 SigVerifyReq C=1 + KeyChangeReq",
    "D3 SigVerifyAns + PubKeyAns P2",
];
const INTERMEDIATE_ROWS: [&str; 5] = [
    "TH input",
    "device signed string",
    "SHA-384 of the device signed string",
    "server signed string",
    "SHA-384 of the server signed string",
];
const RUN_1_1_ROWS: [&str; 13] = [
    "TH input",
    "TH",
    "PRK",
    "AppKey",
    "NwkKey",
    "C_D",
    "C_S",
    "SIG_D",
    "SIG_S",
    "U2 SigVerifyReq C=0",
    "D2 PubKeyAns P1",
    "U3 SigVerifyReq C=1 + KeyChangeReq",
    "D3 SigVerifyAns + PubKeyAns P2",
];

fn row(name: &str, value: &str) -> String {
    format!("| {name} | `{value}` |")
}

/// Asserts that the subsection `heading` holds the row of every `(name, value)`; prints the
/// table with `LORAPKI_PRINT_VECTORS=1`.
fn assert_rows<'a>(heading: &str, rows: impl IntoIterator<Item = (&'a str, &'a str)>) {
    let lines: Vec<String> = rows.into_iter().map(|(n, v)| row(n, v)).collect();
    if std::env::var_os("LORAPKI_PRINT_VECTORS").is_some() {
        println!(
            "{heading}\n| Value | Hex |\n|---|---|\n{}\n",
            lines.join("\n")
        );
    }
    let text = section(heading);
    let missing: Vec<&String> = lines
        .iter()
        .filter(|line| !text.lines().any(|l| l == line.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "PROTOCOL.md {heading}lacks or differs on:\n{}",
        missing
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The hex of row `name` in the subsection `heading`, as the spec writes it.
fn spec_value(heading: &str, name: &str) -> String {
    let prefix = format!("| {name} | `");
    let line = section(heading)
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("PROTOCOL.md {heading}has no row {name}"));
    line[prefix.len()..].trim_end_matches("` |").to_owned()
}

fn spec_bytes(heading: &str, name: &str) -> Vec<u8> {
    hex::decode(spec_value(heading, name)).unwrap()
}

// ----- §11.1 – §11.3: the runs -----

#[test]
fn implementation_reproduces_the_spec_vectors() {
    let v = run(LorawanVersion::V1_0);
    assert_rows(RUN_1_0, RUN_1_0_ROWS.map(|name| (name, v.get(name))));
    // The frames are those of the §9.1 schedule.
    assert!(v.get("U1 PubKeyReq").starts_with("0115"));
    assert!(v.get("U3 SigVerifyReq C=1 + KeyChangeReq").ends_with("05"));
    assert!(v.get("D3 SigVerifyAns + PubKeyAns P2").starts_with("0414"));
    assert_eq!(v.get("U2 SigVerifyReq C=0")[4..], v.get("SIG_D")[..96]);
}

#[test]
fn implementation_reproduces_the_intermediates() {
    let v = run(LorawanVersion::V1_0);
    assert_rows(
        INTERMEDIATES,
        INTERMEDIATE_ROWS.map(|name| (name, v.get(name))),
    );
    // The TH input is §5.3's field list; the signed strings are label ‖ TH ‖ C (§5.5).
    let th_input = v.bytes("TH input");
    assert_eq!(&th_input[..13], b"lorapki-v1\x01\x01\x10");
    assert_eq!(th_input[13..21], DEV_EUI);
    assert_eq!(th_input[21..29], JOIN_EUI);
    assert_eq!(th_input[29..37], v.bytes("SERVER_KEY_ID")[..]);
    assert_eq!(th_input[37..45], v.bytes("DEVICE_KEY_ID")[..]);
    assert_eq!(th_input[45], SESSION);
    assert_eq!(th_input[46..95], v.bytes("EPH_D")[..]);
    assert_eq!(th_input[95..], v.bytes("EPH_S")[..]);
    for (label, confirm, name) in [
        (DEVICE_SIGNATURE_LABEL, "C_D", "device signed string"),
        (SERVER_SIGNATURE_LABEL, "C_S", "server signed string"),
    ] {
        let expected = [label.as_bytes(), &v.bytes("TH"), &v.bytes(confirm)].concat();
        assert_eq!(v.bytes(name), expected, "{name}");
        assert_eq!(expected.len(), 107);
    }
}

#[test]
fn implementation_reproduces_the_lorawan_1_1_vectors() {
    let v10 = run(LorawanVersion::V1_0);
    let v11 = run(LorawanVersion::V1_1);
    assert_eq!(v11.lorawan, LorawanVersion::V1_1);
    assert_rows(RUN_1_1, RUN_1_1_ROWS.map(|name| (name, v11.get(name))));
    // Only the LoRaWAN byte of the transcript differs; the keys and ECDH output are the same, so
    // are the frames that carry only ephemeral keys.
    let (a, b) = (v10.bytes("TH input"), v11.bytes("TH input"));
    let differing: Vec<usize> = (0..144).filter(|&i| a[i] != b[i]).collect();
    assert_eq!(differing, [12]);
    assert_eq!((a[12], b[12]), (0x10, 0x11));
    for same in [
        "EPH_D",
        "EPH_S",
        "Z",
        "DEVICE_KEY_ID",
        "SERVER_KEY_ID",
        "U1 PubKeyReq",
        "D1 PubKeyAns P0",
    ] {
        assert_eq!(v10.get(same), v11.get(same), "{same}");
    }
    for changed in ["TH", "PRK", "AppKey", "C_D", "C_S", "SIG_D", "SIG_S"] {
        assert_ne!(v10.get(changed), v11.get(changed), "{changed}");
    }
    assert_ne!(v11.get("NwkKey"), v11.get("AppKey"));
}

// ----- §11.2: signatures, RFC 6979 and high-S -----

/// `n − s` for a big-endian `s` below the group order `n`.
fn negate(n: &[u8], s: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 48];
    let mut borrow = 0i16;
    for i in (0..48).rev() {
        let mut d = i16::from(n[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    assert_eq!(borrow, 0, "s below n");
    out
}

/// `⌊n/2⌋` of a big-endian `n`.
fn halve(n: &[u8]) -> Vec<u8> {
    let mut carry = 0u8;
    n.iter()
        .map(|&byte| {
            let out = (byte >> 1) | (carry << 7);
            carry = byte & 1;
            out
        })
        .collect()
}

/// The signature `(r, n − s)`: the other one of the pair that verifies.
fn twin(n: &[u8], signature: &[u8]) -> Vec<u8> {
    [&signature[..48], &negate(n, &signature[48..])[..]].concat()
}

/// The four signatures of §11.1 and §11.3: (row name in §11.2's high-S table, run, value name).
fn signatures() -> [(&'static str, &'static Run, &'static str); 4] {
    let (v10, v11) = (run(LorawanVersion::V1_0), run(LorawanVersion::V1_1));
    [
        ("SIG_D, LoRaWAN 1.0.x (11.1)", v10, "SIG_D"),
        ("SIG_S, LoRaWAN 1.0.x (11.1)", v10, "SIG_S"),
        ("SIG_D, LoRaWAN 1.1 (11.3)", v11, "SIG_D"),
        ("SIG_S, LoRaWAN 1.1 (11.3)", v11, "SIG_S"),
    ]
}

/// What §11.2's table says of the signature of row `name` (whose value is `signature`, hex):
/// true for high-S. The row must also name the right s, by its first and last two bytes.
fn spec_says_high_s(name: &str, signature: &str) -> bool {
    let prefix = format!("| {name} | ");
    let line = section(INTERMEDIATES)
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("PROTOCOL.md 11.2 has no row {name}"));
    let s = &signature[96..];
    let abbreviated = format!("(s = `{}…{}`", &s[..4], &s[92..]);
    assert!(
        line.contains(&abbreviated),
        "11.2, {name}: lacks {abbreviated}"
    );
    match &line[prefix.len()..] {
        l if l.starts_with("high-S") => true,
        l if l.starts_with("low-S") => false,
        other => panic!("11.2, {name}: neither high-S nor low-S: {other}"),
    }
}

/// The §11.2 statement of which signatures are high-S, checked against ⌊n/2⌋ with n the group
/// order as OpenSSL prints it.
#[test]
fn high_s_signatures_are_the_ones_the_spec_names() {
    let Some(n) = openssl_group_order() else {
        println!("SKIPPED: openssl binary not found (CI installs it)");
        return;
    };
    assert_eq!(hex::encode(&n), spec_value(INTERMEDIATES, "n"), "n of 11.2");
    let half = halve(&n);
    assert_eq!(hex::encode(&half), spec_value(INTERMEDIATES, "⌊n/2⌋"));
    let mut high = 0;
    for (name, v, sig) in signatures() {
        let s = &v.bytes(sig)[48..];
        let is_high = s > &half[..];
        high += usize::from(is_high);
        assert_eq!(
            spec_says_high_s(name, v.get(sig)),
            is_high,
            "{name}: s = {}",
            hex::encode(s)
        );
    }
    assert!(high > 0, "at least one vector exercises a high-S signature");
}

/// Signatures are not normalised and both forms verify: the backend accepts each signature and
/// its twin `(r, n − s)`, and a run in which both signatures are replaced by their twins completes
/// with the same keys (the device accepts the server's, the server the device's).
#[test]
fn verifiers_accept_both_low_s_and_high_s() {
    let n = spec_bytes(INTERMEDIATES, "n");
    let mut b = SoftBackend::new(TestRng::from_seed(5));
    for (name, v, sig) in signatures() {
        let (digest, public) = match sig {
            "SIG_D" => (
                "SHA-384 of the device signed string",
                "device identity public key",
            ),
            _ => (
                "SHA-384 of the server signed string",
                "server signing public key",
            ),
        };
        let digest: [u8; 48] = v.bytes(digest).try_into().unwrap();
        let public = b.public_key_from_sec1(&v.bytes(public)).unwrap();
        let signature = v.bytes(sig);
        for candidate in [signature.clone(), twin(&n, &signature)] {
            let candidate = Signature::from_bytes(candidate.try_into().unwrap());
            assert!(
                b.ecdsa_verify_digest(&public, &digest, &candidate).is_ok(),
                "{name} or its twin does not verify"
            );
        }
        // A wrong s does not verify: the check above can fail.
        let mut wrong = signature.clone();
        wrong[95] ^= 1;
        let wrong = Signature::from_bytes(wrong.try_into().unwrap());
        assert!(b.ecdsa_verify_digest(&public, &digest, &wrong).is_err());
    }

    // The protocol: the 1.0.x run with SIG_D (low-S) and SIG_S (high-S) swapped for their twins.
    let v = run(LorawanVersion::V1_0);
    let sig_d = twin(&n, &v.bytes("SIG_D"));
    let sig_s = twin(&n, &v.bytes("SIG_S"));
    let replace = |frame: &mut Vec<u8>, name: &str, body: &[u8]| {
        if *frame == v.bytes(name) {
            frame.truncate(frame.len() - body.len());
            frame.extend_from_slice(body);
            true
        } else {
            false
        }
    };
    let tampered = exchange(LorawanVersion::V1_0, 51, 51, &|_, frame| {
        let _ = replace(
            frame,
            "U3 SigVerifyReq C=1 + KeyChangeReq",
            &[&sig_d[48..], &[0x05][..]].concat(),
        ) || replace(frame, "D2 PubKeyAns P1", &sig_s[..49])
            || replace(frame, "D3 SigVerifyAns + PubKeyAns P2", &sig_s[49..]);
    });
    let air = tampered.frames();
    assert_eq!(
        air[4][4..100],
        hex::encode(&sig_d[48..]),
        "SIG_D's twin went out"
    );
    assert_eq!(
        air[5][8..],
        hex::encode(&sig_s[49..]),
        "SIG_S's twin went out"
    );
    assert!(tampered.device_staged == tampered.server_staged);
    assert_eq!(
        hex::encode(tampered.device_staged.app_key.expose_secret()),
        v.get("AppKey")
    );
}

// ----- §11.4: Abort -----

/// Abort(S = 5, reason) for every defined reason, written out by hand.
const ABORT_FRAMES: [(u8, Reason, &str, &str); 8] = [
    (
        0x01,
        Reason::UnsupportedVersion,
        "UnsupportedVersion",
        "071401",
    ),
    (0x02, Reason::UnknownDevice, "UnknownDevice", "071402"),
    (0x03, Reason::RateLimited, "RateLimited", "071403"),
    (0x04, Reason::StaleSession, "StaleSession", "071404"),
    (
        0x05,
        Reason::AuthenticationFailed,
        "AuthenticationFailed",
        "071405",
    ),
    (0x06, Reason::GaveUp, "GaveUp", "071406"),
    (0x07, Reason::ServerError, "ServerError", "071407"),
    (0x08, Reason::Malformed, "Malformed", "071408"),
];

#[test]
fn abort_frames_are_the_spec_table() {
    let golden = include_str!("../../lorapki-wire/tests/golden.rs");
    assert!(
        golden.contains("format!(\"07 14 {byte}\")"),
        "lorapki-wire's golden Aborts are no longer 07 14 REASON"
    );
    let mut rows = Vec::new();
    for (code, reason, name, expected) in ABORT_FRAMES {
        let mut buf = [0u8; 3];
        let len = CommandRepr::Abort(AbortRepr {
            session: Session::new(SESSION).unwrap(),
            reason,
        })
        .emit(&mut buf)
        .unwrap();
        assert_eq!(hex::encode(&buf[..len]), expected, "{name}");
        assert_eq!(u8::from(reason), code);
        assert!(
            golden.contains(&format!("(\"{code:02x}\", Reason::{name}),")),
            "lorapki-wire's golden vectors lack 07 14 {code:02x} = {name}"
        );
        rows.push((format!("Abort(S = 5, 0x{code:02x} {name})"), expected));
    }
    assert_rows(ABORTS, rows.iter().map(|(n, v)| (n.as_str(), *v)));
}

// ----- §11.5: PubKeyReq in Fragments at N = 11 -----

fn fragment_rows(frames: &[String]) -> Vec<(String, String)> {
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| (format!("F{}", i + 1), f.clone()))
        .collect()
}

#[test]
fn pub_key_req_fragments_at_n11_are_the_spec_vectors() {
    let frames = pub_key_req_at_n11();
    assert_eq!(frames.len(), 7, "§4: a PubKeyReq takes 7 frames at N = 11");
    let rows = fragment_rows(&frames);
    assert_rows(
        FRAGMENTS,
        rows.iter().map(|(n, v)| (n.as_str(), v.as_str())),
    );
    // Each frame is one Fragment of FID 0 of session 5 at offset 8 k, 8 bytes of U1 (the last 3).
    let u1 = run(LorawanVersion::V1_0).bytes("U1 PubKeyReq");
    for (k, frame) in frames.iter().enumerate() {
        let frame = hex::decode(frame).unwrap();
        let data = &u1[8 * k..(8 * k + 8).min(51)];
        assert_eq!(
            frame,
            [&[0x08, 0x14, 8 * k as u8][..], data].concat(),
            "F{}",
            k + 1
        );
    }
}

/// Runs the Python reassembler of `tests/oracle/` as a receiver in session 5 on each sequence
/// of `sequences` (hex, one FRMPayload each; a fresh receiver for each sequence): its output
/// lines per sequence, or `None` without `python3`.
fn python_reassemble(sequences: &[Vec<String>]) -> Option<Vec<Vec<String>>> {
    let input: String = sequences
        .iter()
        .map(|frames| frames.join("\n") + "\nreset\n")
        .collect();
    let out = python(&oracle("reassemble.py"), &[&SESSION.to_string()], &input)?;
    let mut groups = vec![Vec::new()];
    for line in out.lines() {
        if line == "reset" {
            groups.push(Vec::new());
        } else {
            groups.last_mut().unwrap().push(line.to_owned());
        }
    }
    assert_eq!(
        groups.pop(),
        Some(Vec::new()),
        "output after the last reset"
    );
    Some(groups)
}

/// §11.5's frames, reassembled by an independent receiver written from §4, are U1 of §11.1.
#[test]
fn python_reassembles_the_n11_fragments() {
    let frames: Vec<String> = (1..=7)
        .map(|k| spec_value(FRAGMENTS, &format!("F{k}")))
        .collect();
    let u1 = format!("command {}", spec_value(RUN_1_0, "U1 PubKeyReq"));
    // The oracle can fail: in reverse order the same command; without F4 nothing; a
    // retransmitted F2 with another byte is refused; a fragment of another session is refused.
    let reversed: Vec<String> = frames.iter().rev().cloned().collect();
    let without_f4: Vec<String> = frames
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, f)| f.clone())
        .collect();
    let mut altered = frames[1].clone();
    altered.replace_range(20..22, "00");
    let with_altered = [&frames[..2], &[altered][..], &frames[2..]].concat();
    let other_session = vec![format!("0818{}", &frames[0][4..])];
    let Some(out) = python_reassemble(&[frames, reversed, without_f4, with_altered, other_session])
    else {
        println!("SKIPPED: python3 not found");
        return;
    };
    assert_eq!(out[0], std::slice::from_ref(&u1), "F1..F7");
    assert_eq!(out[1], std::slice::from_ref(&u1), "F7..F1");
    assert!(out[2].is_empty(), "without F4: {:?}", out[2]);
    assert_eq!(
        out[3],
        ["reject Inconsistent".to_owned(), u1],
        "an altered F2"
    );
    assert_eq!(out[4], ["reject OutOfSession"], "session 6");
}

// ----- §11.6: the same-window schedule at N ≥ 222 -----

/// (row of §11.6, the §11.1 frames it concatenates).
const SCHEDULE_222_ROWS: [(&str, &[&str]); 4] = [
    ("U1 PubKeyReq", &["U1 PubKeyReq"]),
    (
        "D1 PubKeyAns P0 + PubKeyAns P1",
        &["D1 PubKeyAns P0", "D2 PubKeyAns P1"],
    ),
    (
        "U2 SigVerifyReq C=0 + SigVerifyReq C=1 + KeyChangeReq",
        &["U2 SigVerifyReq C=0", "U3 SigVerifyReq C=1 + KeyChangeReq"],
    ),
    (
        "D2 SigVerifyAns + PubKeyAns P2",
        &["D3 SigVerifyAns + PubKeyAns P2"],
    ),
];

/// §11.6 is §11.1's single-command frames concatenated (the A bits stay 0: at U2 the device does
/// not hold part 2 yet), which needs no implementation to check.
#[test]
fn n222_schedule_is_the_concatenation_of_the_n51_frames() {
    for (row, parts) in SCHEDULE_222_ROWS {
        let mut concatenated: String = parts.iter().map(|p| spec_value(RUN_1_0, p)).collect();
        // At N ≥ 222 the device signs holding parts 0 and 1, so its chunk 0 carries A = 1 too
        // (HDR 0x14 → 0x16); at N = 51 chunk 0 leaves before part 1 arrived.
        if concatenated.starts_with("0314") {
            concatenated.replace_range(0..4, "0316");
        }
        assert_eq!(spec_value(SCHEDULE_222, row), concatenated, "11.6 {row}");
        assert!(concatenated.len() / 2 <= 222);
    }
}

#[test]
fn implementation_reproduces_the_n222_schedule() {
    let ex = exchange(LorawanVersion::V1_0, 222, 222, &|_, _| {});
    let frames = ex.frames();
    let directions: Vec<Dir> = ex.air.iter().map(|(d, _)| *d).collect();
    assert_eq!(directions, [Dir::Up, Dir::Down, Dir::Up, Dir::Down]);
    assert_rows(
        SCHEDULE_222,
        SCHEDULE_222_ROWS
            .iter()
            .zip(&frames)
            .map(|((row, _), frame)| (*row, frame.as_str())),
    );
    assert_eq!(
        hex::encode(ex.device_staged.app_key.expose_secret()),
        run(LorawanVersion::V1_0).get("AppKey")
    );
}

// ----- the oracles -----

fn oracle(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/oracle")
        .join(script)
}

/// Runs `python3 script args` with `input` on standard input; its standard output, or `None`
/// without `python3`. A failing script fails the test.
fn python(script: &Path, args: &[&str], input: &str) -> Option<String> {
    let mut child = match Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(_) => return None,
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// The Python ECDSA oracle (RFC 6979 with HMAC-SHA-384, self-checked against RFC 6979 A.2.6)
/// recomputes the public keys and all four signatures byte for byte from the private scalars and
/// the signed strings, and classifies each s against n/2 as §11.2 says.
#[test]
fn python_recomputes_the_signatures_with_rfc6979() {
    let v10 = run(LorawanVersion::V1_0);
    let mut input = String::new();
    let keys = [
        ("device identity private key", "device identity public key"),
        ("server signing private key", "server signing public key"),
        ("device ephemeral private key", "EPH_D"),
        ("server ephemeral private key", "EPH_S"),
    ];
    for (private, _) in keys {
        writeln!(input, "public {}", v10.get(private)).unwrap();
    }
    for (_, v, sig) in signatures() {
        let (key, string) = match sig {
            "SIG_D" => ("device identity private key", "device signed string"),
            _ => ("server signing private key", "server signed string"),
        };
        writeln!(input, "sign {} {}", v.get(key), v.get(string)).unwrap();
    }
    let Some(out) = python(&oracle("ecdsa_p384.py"), &[], &input) else {
        println!("SKIPPED: python3 not found");
        return;
    };
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8);
    for (line, (_, public)) in lines[..4].iter().zip(keys) {
        assert_eq!(*line, v10.get(public), "{public}");
    }
    for (line, (name, v, sig)) in lines[4..].iter().zip(signatures()) {
        let (signature, half) = line.split_once(' ').unwrap();
        assert_eq!(signature, v.get(sig), "{name}: RFC 6979 signature");
        assert_eq!(half == "high", spec_says_high_s(name, v.get(sig)), "{name}");
    }
}

/// P-384's group order as OpenSSL prints it, or `None` without `openssl`.
fn openssl_group_order() -> Option<Vec<u8>> {
    let out = Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "secp384r1",
            "-param_enc",
            "explicit",
            "-text",
            "-noout",
        ])
        .output()
        .ok()?;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let order = &text[text.find("Order:").unwrap() + 6..text.find("Cofactor:").unwrap()];
    let digits: String = order.chars().filter(char::is_ascii_hexdigit).collect();
    let bytes = hex::decode(digits).unwrap();
    Some(bytes[bytes.len() - 48..].to_vec())
}

/// The independent oracle: OpenSSL recomputes Z, TH, PRK, the HKDF outputs and the signed
/// strings' digests of both runs, and verifies every signature and its twin `(r, n − s)`.
#[test]
fn openssl_agrees_with_the_vectors() {
    if Command::new("openssl").arg("version").output().is_err() {
        println!("SKIPPED: openssl binary not found (CI installs it)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("lorapki-vectors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let n = openssl_group_order().unwrap();
    for lorawan in [LorawanVersion::V1_0, LorawanVersion::V1_1] {
        openssl_checks(run(lorawan), &dir, &n);
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn openssl_checks(v: &Run, dir: &Path, n: &[u8]) {
    let what = version_name(v.lorawan);
    let get = |name: &str| v.bytes(name);
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
    let sha384 = |file: &Path| openssl(&["dgst", "-sha384", "-binary", file.to_str().unwrap()]);
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
    assert_eq!(z, get("Z"), "{what}: ECDH secret");

    // TH = SHA-384 of the 144-byte transcript of §5.3, built here from its fields.
    let mut transcript = b"lorapki-v1".to_vec();
    transcript.extend_from_slice(&[0x01, 0x01, v.lorawan.transcript_byte()]);
    transcript.extend_from_slice(&DEV_EUI);
    transcript.extend_from_slice(&JOIN_EUI);
    transcript.extend_from_slice(&get("SERVER_KEY_ID"));
    transcript.extend_from_slice(&get("DEVICE_KEY_ID"));
    transcript.push(SESSION);
    transcript.extend_from_slice(&get("EPH_D"));
    transcript.extend_from_slice(&get("EPH_S"));
    assert_eq!(transcript, get("TH input"), "{what}: TH input");
    let transcript_file = write("transcript.bin", &transcript);
    assert_eq!(
        sha384(&transcript_file),
        get("TH"),
        "{what}: transcript hash"
    );

    // The key ids: SHA-384 of the SEC1 compressed public keys, first 8 bytes.
    for (id, public) in [
        ("DEVICE_KEY_ID", "device identity public key"),
        ("SERVER_KEY_ID", "server signing public key"),
    ] {
        let file = write("public.bin", &get(public));
        assert_eq!(sha384(&file)[..8], get(id), "{what}: {id}");
    }

    // HKDF-SHA384 (§5.4): the extract alone, then each expand from Z and TH.
    let hkdf = |mode: &str, info: &str, len: usize| {
        let mut args = vec![
            "kdf".to_owned(),
            "-keylen".to_owned(),
            len.to_string(),
            "-kdfopt".to_owned(),
            "digest:SHA384".to_owned(),
            "-kdfopt".to_owned(),
            format!("mode:{mode}"),
            "-kdfopt".to_owned(),
            format!("hexkey:{}", hex::encode(get("Z"))),
            "-kdfopt".to_owned(),
            format!("hexsalt:{}", hex::encode(get("TH"))),
        ];
        if !info.is_empty() {
            args.extend(["-kdfopt".to_owned(), format!("info:{info}")]);
        }
        args.push("HKDF".to_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = openssl(&args);
        hex::decode(String::from_utf8(out).unwrap().trim().replace(':', "")).unwrap()
    };
    assert_eq!(hkdf("EXTRACT_ONLY", "", 48), get("PRK"), "{what}: PRK");
    let mut expands = vec![
        ("lorapki-v1 app key", "AppKey", 16),
        ("lorapki-v1 device confirm", "C_D", 32),
        ("lorapki-v1 server confirm", "C_S", 32),
    ];
    if v.lorawan == LorawanVersion::V1_1 {
        expands.push(("lorapki-v1 nwk key", "NwkKey", 16));
    }
    for (info, name, len) in expands {
        assert_eq!(
            hkdf("EXTRACT_AND_EXPAND", info, len),
            get(name),
            "{what}: {name}"
        );
    }

    // Both signatures (§5.5): the signed strings, their digests, and verification of each
    // signature and of its twin under the identity keys.
    for (label, confirm, string, digest, signature, public) in [
        (
            DEVICE_SIGNATURE_LABEL,
            "C_D",
            "device signed string",
            "SHA-384 of the device signed string",
            "SIG_D",
            "device identity public key",
        ),
        (
            SERVER_SIGNATURE_LABEL,
            "C_S",
            "server signed string",
            "SHA-384 of the server signed string",
            "SIG_S",
            "server signing public key",
        ),
    ] {
        let mut message = label.as_bytes().to_vec();
        message.extend_from_slice(&get("TH"));
        message.extend_from_slice(&get(confirm));
        assert_eq!(message, get(string), "{what}: {string}");
        let message = write("message.bin", &message);
        assert_eq!(sha384(&message), get(digest), "{what}: {digest}");
        let public_der = der::spki_p384_der(&uncompressed(&mut b, public));
        let public = write("public.der", &public_der);
        let sig = get(signature);
        for candidate in [sig.clone(), twin(n, &sig)] {
            let candidate: [u8; 96] = candidate.try_into().unwrap();
            let sig_file = write("sig.der", &der::p1363_to_der_signature(&candidate));
            let out = openssl(&[
                "dgst",
                "-sha384",
                "-keyform",
                "DER",
                "-verify",
                public.to_str().unwrap(),
                "-signature",
                sig_file.to_str().unwrap(),
                message.to_str().unwrap(),
            ]);
            assert_eq!(
                String::from_utf8_lossy(&out).trim(),
                "Verified OK",
                "{what}: {signature}"
            );
        }
    }
}
