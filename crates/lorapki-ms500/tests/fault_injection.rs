//! Fault injection: an engine fault at every engine command of a rekey.
//!
//! A rekey is the device's side of the key exchange (ephemeral key, validation of the server's
//! key, ECDH, HKDF, signature, verification of the server's signature) followed by the key switch
//! (stage, DevNonce, JoinRequest MIC and JoinAccept decryption under the staged key, activation,
//! MIC under the new key). For every command the PKA, the AES engine, the TRNG or the flash
//! performs during it, and for every kind of fault, the rekey runs again from the same start with
//! that one command failing. After each failure the test checks that
//!
//! * the error is the one the fault maps to, and every operand buffer of the backend is zero;
//! * the engines hold no half-written key and no output (after one clean-up operation when the
//!   engine stayed busy);
//! * the device still works: its identity key is intact, its active root key is the old or the
//!   new one consistently with the store's generation, and the rekey then completes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use common::*;
use lorapki_crypto::{
    CryptoBackend, Error, KeySlot, PublicKey, RootKeyKind, RootKeySlot, RootKeyStore, SHA384_LEN,
    Sha384Hasher, Signature,
};
use lorapki_crypto_soft::{SoftBackend, TestRng};
use lorapki_ms500::EngineError;
use lorapki_ms500::emulated::{EmulatedBackend, EmulatedParts, Injection};

const KINDS: [Injection; 5] = [
    Injection::Fail(EngineError::Fault),
    Injection::Fail(EngineError::Timeout),
    Injection::Fail(EngineError::Tamper),
    Injection::Hang,
    Injection::Busy,
];

fn expected_error(kind: Injection) -> Error {
    match kind {
        Injection::Fail(EngineError::Fault) => Error::Fault,
        Injection::Fail(EngineError::Timeout) | Injection::Hang => Error::Timeout,
        Injection::Fail(EngineError::Tamper) => Error::Tamper,
        Injection::Busy => Error::Busy,
        Injection::Fail(other) => panic!("not a fault kind: {other:?}"),
    }
}

/// The server's half of the exchange, computed once per device ephemeral key (the device's
/// DRBG is seeded from the same emulated TRNG in every run, so runs repeat it).
struct Server {
    backend: SoftBackend<TestRng>,
    public: PublicKey,
    answers: HashMap<[u8; 49], (PublicKey, Signature, [u8; 16])>,
}

fn transcript<B: CryptoBackend>(
    backend: &mut B,
    device: &PublicKey,
    server: &PublicKey,
) -> [u8; 48] {
    let mut hasher = backend.sha384();
    hasher.update(b"lorapki-ms500 fault injection");
    hasher.update(device.as_bytes());
    hasher.update(server.as_bytes());
    hasher.finalize()
}

fn role_digest<B: CryptoBackend>(backend: &mut B, role: &[u8], th: &[u8; 48]) -> [u8; SHA384_LEN] {
    let mut hasher = backend.sha384();
    hasher.update(role);
    hasher.update(th);
    hasher.finalize()
}

fn derive_key<B: CryptoBackend>(
    backend: &mut B,
    th: &[u8; 48],
    z: &[u8],
) -> Result<[u8; 16], Error> {
    let prk = backend.hkdf_extract(th, z)?;
    let mut key = [0u8; 16];
    backend.hkdf_expand(&prk, &[b"app key"], &mut key)?;
    Ok(key)
}

impl Server {
    fn new() -> Self {
        let mut backend = SoftBackend::new(TestRng::from_seed(77));
        let public = backend.identity_generate(KeySlot(0)).unwrap();
        Self {
            backend,
            public,
            answers: HashMap::new(),
        }
    }

    /// The server's ephemeral key and signature for this device ephemeral key, and the new
    /// AppKey the server derives.
    fn answer(&mut self, device_ephemeral: &PublicKey) -> (PublicKey, Signature, [u8; 16]) {
        if let Some(answer) = self.answers.get(device_ephemeral.as_bytes()) {
            return *answer;
        }
        let b = &mut self.backend;
        let (ephemeral, ephemeral_public) = b.ephemeral_generate().unwrap();
        let z = b.ecdh_agree(ephemeral, device_ephemeral).unwrap();
        let th = transcript(b, device_ephemeral, &ephemeral_public);
        let key = derive_key(b, &th, z.expose_secret()).unwrap();
        let digest = role_digest(b, b"server", &th);
        let signature = b.identity_sign_digest(KeySlot(0), &digest).unwrap();
        let answer = (ephemeral_public, signature, key);
        self.answers.insert(*device_ephemeral.as_bytes(), answer);
        answer
    }
}

type Failure = (&'static str, Error);

/// The device's crypto steps of the exchange; returns the new AppKey.
fn exchange(device: &mut EmulatedBackend, server: &mut Server) -> Result<[u8; 16], Failure> {
    let (ephemeral, ephemeral_public) = device
        .ephemeral_generate()
        .map_err(|e| ("ephemeral_generate", e))?;
    let (server_ephemeral, server_signature, server_key) = server.answer(&ephemeral_public);
    let server_ephemeral = device
        .public_key_from_sec1(server_ephemeral.as_bytes())
        .map_err(|e| ("public_key_from_sec1", e))?;
    let z = device
        .ecdh_agree(ephemeral, &server_ephemeral)
        .map_err(|e| ("ecdh_agree", e))?;
    let th = transcript(device, &ephemeral_public, &server_ephemeral);
    let key = derive_key(device, &th, z.expose_secret()).map_err(|e| ("hkdf", e))?;
    assert_eq!(key, server_key, "both sides derive the same key");
    let digest = role_digest(device, b"device", &th);
    let signature = device
        .identity_sign_digest(SLOT, &digest)
        .map_err(|e| ("identity_sign_digest", e))?;
    assert!(signature != Signature::from_bytes([0; 96]));
    let server_digest = role_digest(device, b"server", &th);
    device
        .ecdsa_verify_digest(&server.public, &server_digest, &server_signature)
        .map_err(|e| ("ecdsa_verify_digest", e))?;
    Ok(key)
}

/// The key switch of PROTOCOL.md §7 on the device's key store.
fn key_switch(device: &mut EmulatedBackend, new_app_key: [u8; 16]) -> Result<(), Failure> {
    device
        .stage(keys(new_app_key, Some(NEW_NWK_KEY)))
        .map_err(|e| ("stage", e))?;
    let dev_nonce = device.next_dev_nonce().map_err(|e| ("next_dev_nonce", e))?;
    let mic = device
        .root_cmac(
            RootKeySlot::Staged,
            RootKeyKind::AppKey,
            &[b"join-request", &dev_nonce.to_le_bytes()],
        )
        .map_err(|e| ("root_cmac staged", e))?;
    assert_eq!(
        mic,
        cmac(&new_app_key, &[b"join-request", &dev_nonce.to_le_bytes()])
    );
    let mut block = [0x42u8; 16];
    device
        .root_encrypt_block(RootKeySlot::Staged, RootKeyKind::AppKey, &mut block)
        .map_err(|e| ("root_encrypt_block staged", e))?;
    assert_eq!(block, aes_block(&new_app_key, &[0x42; 16]));
    device.activate().map_err(|e| ("activate", e))?;
    device
        .root_cmac(RootKeySlot::Active, RootKeyKind::AppKey, &[b"uplink"])
        .map_err(|e| ("root_cmac active", e))?;
    Ok(())
}

fn clear_injections(device: &mut EmulatedBackend) {
    device.pka_mut().injector.clear();
    device.aes_mut().injector.clear();
    device.trng_mut().clear_injection();
    device.flash_mut().power_cycle();
}

/// The checks after a failed operation; returns the device ready for more (rebooted after
/// tamper, injections cleared).
fn after_fault(mut device: EmulatedBackend, kind: Injection, context: &str) -> EmulatedBackend {
    assert!(
        device.operand_buffers_clear(),
        "{context}: operand buffers not zeroized after the error"
    );
    if kind != Injection::Busy && kind != Injection::Fail(EngineError::Tamper) {
        assert!(
            device.pka_mut().idle_and_clear(),
            "{context}: PKA output left"
        );
        assert!(
            !device.pka_mut().has_half_written_key(),
            "{context}: half-written key left in the PKA"
        );
        assert!(
            device.aes_mut().slots_empty_and_clear(),
            "{context}: key or output left in the AES engine"
        );
    }
    if kind == Injection::Fail(EngineError::Tamper) {
        assert!(device.tampered(), "{context}: tamper not latched");
        assert_eq!(device.status(), Err(Error::Tamper), "{context}: locked");
        device = reboot(device);
    } else {
        clear_injections(&mut device);
    }
    device
}

/// The device works: identity intact, a consistent root-key state, no key left in an engine.
/// Returns the generation of the active key.
fn check_usable(device: &mut EmulatedBackend, new_app_key: [u8; 16], context: &str) -> u32 {
    let status = device
        .status()
        .unwrap_or_else(|e| panic!("{context}: status {e}"));
    let active = which_key(
        device,
        RootKeySlot::Active,
        RootKeyKind::AppKey,
        &[FACTORY_APP_KEY, new_app_key],
    );
    match status.active_generation {
        0 => assert_eq!(
            active,
            Some(0),
            "{context}: generation 0 runs the factory key"
        ),
        1 => assert_eq!(active, Some(1), "{context}: generation 1 runs the new key"),
        other => panic!("{context}: generation {other}"),
    }
    if status.staged {
        assert_eq!(
            which_key(
                device,
                RootKeySlot::Staged,
                RootKeyKind::AppKey,
                &[new_app_key]
            ),
            Some(0),
            "{context}: staged key"
        );
    }
    device
        .erase_ephemerals()
        .unwrap_or_else(|e| panic!("{context}: erase_ephemerals {e}"));
    let pka = device.pka_mut();
    assert!(
        pka.slot_holds(SLOT_PKA, &IDENTITY_SCALAR),
        "{context}: identity key lost"
    );
    assert!(!pka.has_half_written_key(), "{context}: half-written key");
    assert!(
        EPHEMERAL_PKA.iter().all(|&slot| !pka.slot_occupied(slot)),
        "{context}: ephemeral key left"
    );
    assert!(pka.idle_and_clear(), "{context}: PKA output left");
    assert!(
        device.aes_mut().slots_empty_and_clear(),
        "{context}: AES slot not cleared"
    );
    assert!(device.operand_buffers_clear(), "{context}: operand buffers");
    assert_eq!(
        device.flash_mut().violations(),
        0,
        "{context}: programmed a non-erased word"
    );
    status.active_generation
}

/// Completes the key switch from whatever consistent state a failure left.
fn finish_key_switch(device: &mut EmulatedBackend, new_app_key: [u8; 16], context: &str) {
    let status = device.status().unwrap();
    if status.active_generation == 0 {
        if !status.staged {
            device
                .stage(keys(new_app_key, Some(NEW_NWK_KEY)))
                .unwrap_or_else(|e| panic!("{context}: stage again {e}"));
        }
        device
            .activate()
            .unwrap_or_else(|e| panic!("{context}: activate again {e}"));
    }
    assert_eq!(check_usable(device, new_app_key, context), 1);
    assert_eq!(
        which_key(
            device,
            RootKeySlot::Active,
            RootKeyKind::NwkKey,
            &[FACTORY_NWK_KEY, NEW_NWK_KEY]
        ),
        Some(1),
        "{context}: new NwkKey active"
    );
}

struct Tally {
    faults: usize,
    /// Faults in a clean-up command that its second attempt absorbed.
    absorbed: usize,
    by_step: std::collections::BTreeMap<&'static str, usize>,
}

impl Tally {
    fn new() -> Self {
        Self {
            faults: 0,
            absorbed: 0,
            by_step: std::collections::BTreeMap::new(),
        }
    }

    fn count(&mut self, step: &'static str) {
        self.faults += 1;
        *self.by_step.entry(step).or_default() += 1;
    }
}

/// PKA commands of the exchange: 9 commands × 5 fault kinds.
#[test]
fn pka_faults_during_the_exchange() {
    let base = provisioned_parts(11, false);
    let mut server = Server::new();

    let mut clean = open(base.clone());
    let first = clean.pka_mut().injector.commands_started();
    let new_app_key = exchange(&mut clean, &mut server).unwrap();
    let commands = clean.pka_mut().injector.commands_started() - first;
    let names: Vec<_> = (first..first + commands)
        .map(|i| clean.pka_mut().trace.name(i).unwrap())
        .collect();
    drop(clean);

    let mut tally = Tally::new();
    for index in 0..commands {
        for kind in KINDS {
            let context = format!("PKA command {index} ({}) {kind:?}", names[index as usize]);
            let mut device = open(base.clone());
            let start = device.pka_mut().injector.commands_started();
            device.pka_mut().injector.inject(start + index, kind);
            let outcome = exchange(&mut device, &mut server);
            assert!(device.pka_mut().injector.fired(), "{context}");
            match outcome {
                Err((step, error)) => {
                    assert_eq!(error, expected_error(kind), "{context} in {step}");
                    tally.count(step);
                }
                Ok(_) => {
                    // Only a clean-up erase may fail without failing the exchange: the backend
                    // tries it a second time.
                    assert_eq!(names[index as usize], "EraseKey", "{context}: must fail");
                    tally.absorbed += 1;
                }
            }
            let mut device = after_fault(device, kind, &context);
            assert_eq!(check_usable(&mut device, new_app_key, &context), 0);
            if kind == Injection::Fail(EngineError::Fault) {
                // The exchange runs again from the start and the key switch completes.
                let key = exchange(&mut device, &mut server)
                    .unwrap_or_else(|f| panic!("{context}: retry {f:?}"));
                key_switch(&mut device, key).unwrap_or_else(|f| panic!("{context}: {f:?}"));
                assert_eq!(check_usable(&mut device, key, &context), 1);
            }
        }
    }
    println!(
        "PKA: {commands} commands {names:?} x {} fault kinds = {} faults: {} failed the \
         exchange cleanly {:?}, {} absorbed by the second clean-up attempt",
        KINDS.len(),
        tally.faults + tally.absorbed,
        tally.faults,
        tally.by_step,
        tally.absorbed
    );
    assert_eq!(
        tally.faults + tally.absorbed,
        commands as usize * KINDS.len()
    );
    assert!(commands >= 9);
}

/// TRNG words of the exchange (the reseed before the ephemeral key): first, middle and last word
/// × 3 fault kinds.
#[test]
fn trng_faults_during_the_exchange() {
    let base = provisioned_parts(12, false);
    let mut server = Server::new();
    let mut clean = open(base.clone());
    let first = clean.trng_mut().words_delivered();
    let new_app_key = exchange(&mut clean, &mut server).unwrap();
    let words = clean.trng_mut().words_delivered() - first;
    drop(clean);
    assert!(
        words >= 40,
        "the ephemeral key reseeds the DRBG ({words} words)"
    );

    let mut faults = 0;
    for index in [0, words / 2, words - 1] {
        for (kind, expected) in [
            (Injection::Fail(EngineError::Fault), Error::Rng),
            (Injection::Hang, Error::Rng),
            (Injection::Fail(EngineError::Tamper), Error::Tamper),
        ] {
            let context = format!("TRNG word {index} {kind:?}");
            let mut device = open(base.clone());
            let start = device.trng_mut().words_delivered();
            device.trng_mut().inject(start + index, kind);
            let (step, error) = exchange(&mut device, &mut server).expect_err(&context);
            assert!(device.trng_mut().fired(), "{context}");
            assert_eq!((step, error), ("ephemeral_generate", expected), "{context}");
            assert!(device.operand_buffers_clear(), "{context}");
            let mut device = if expected == Error::Tamper {
                // The TRNG reported tamper: the backend locks like for any engine.
                assert!(device.tampered());
                reboot(device)
            } else {
                clear_injections(&mut device);
                device
            };
            assert_eq!(check_usable(&mut device, new_app_key, &context), 0);
            let key = exchange(&mut device, &mut server)
                .unwrap_or_else(|f| panic!("{context}: retry {f:?}"));
            key_switch(&mut device, key).unwrap_or_else(|f| panic!("{context}: {f:?}"));
            faults += 1;
        }
    }
    println!("TRNG: {faults} faults over the {words} words of the exchange");
}

/// Runs the key switch from `base` with a fault planned by `plan`, then checks and completes it.
fn key_switch_with_fault(
    base: &EmulatedParts,
    new_app_key: [u8; 16],
    kind: Option<Injection>,
    context: &str,
    plan: impl FnOnce(&mut EmulatedBackend),
) -> Option<&'static str> {
    let mut device = open(base.clone());
    plan(&mut device);
    let outcome = key_switch(&mut device, new_app_key);
    let failed_step = match outcome {
        Ok(()) => None,
        Err((step, error)) => {
            let expected = kind.map_or(Error::Fault, expected_error);
            assert_eq!(error, expected, "{context} in {step}");
            Some(step)
        }
    };
    let mut device = match kind {
        Some(kind) if failed_step.is_some() => after_fault(device, kind, context),
        _ => {
            assert!(device.operand_buffers_clear(), "{context}");
            clear_injections(&mut device);
            device
        }
    };
    check_usable(&mut device, new_app_key, context);
    finish_key_switch(&mut device, new_app_key, context);
    // And after a reset the device comes back to the new key.
    let mut device = reboot(device);
    assert_eq!(check_usable(&mut device, new_app_key, context), 1);
    failed_step
}

/// AES commands of the key switch × 5 fault kinds.
#[test]
fn aes_faults_during_the_key_switch() {
    let base = provisioned_parts(13, false);
    let new_app_key = NEW_APP_KEY;
    let mut clean = open(base.clone());
    let first = clean.aes_mut().injector.commands_started();
    key_switch(&mut clean, new_app_key).unwrap();
    let commands = clean.aes_mut().injector.commands_started() - first;

    let names: Vec<_> = (first..first + commands)
        .map(|i| clean.aes_mut().trace.name(i).unwrap())
        .collect();
    drop(clean);

    let mut tally = Tally::new();
    for index in 0..commands {
        let name = names[index as usize];
        for kind in KINDS {
            let context = format!("AES command {index} ({name}) {kind:?}");
            match key_switch_with_fault(&base, new_app_key, Some(kind), &context, |device| {
                let start = device.aes_mut().injector.commands_started();
                device.aes_mut().injector.inject(start + index, kind);
            }) {
                Some(step) => tally.count(step),
                None => {
                    assert_eq!(name, "ClearKey", "{context}: the key switch must fail");
                    tally.absorbed += 1;
                }
            }
        }
    }
    println!(
        "AES: {commands} commands x {} fault kinds = {} faults: {} failed the key switch \
         cleanly {:?}, {} absorbed by the second clean-up attempt",
        KINDS.len(),
        tally.faults + tally.absorbed,
        tally.faults,
        tally.by_step,
        tally.absorbed
    );
    assert_eq!(
        tally.faults + tally.absorbed,
        commands as usize * KINDS.len()
    );
}

/// Flash program/erase steps of the key switch, each failing with an error (power stays on;
/// power cuts are the power-loss test's business).
#[test]
fn flash_faults_during_the_key_switch() {
    let base = provisioned_parts(14, false);
    let new_app_key = NEW_APP_KEY;
    let mut clean = open(base.clone());
    clean.flash_mut().reset_steps();
    key_switch(&mut clean, new_app_key).unwrap();
    let steps = clean.flash_mut().steps();
    drop(clean);

    let mut tally = Tally::new();
    let mut harmless = 0;
    for step in 0..steps {
        let context = format!("flash step {step}");
        match key_switch_with_fault(&base, new_app_key, None, &context, |device| {
            device.flash_mut().fail_at_step(step);
        }) {
            Some(failed) => tally.count(failed),
            // Erasing the previous record after a commit: the commit stands.
            None => harmless += 1,
        }
    }
    println!(
        "flash: {steps} program/erase steps: {} failed the key switch cleanly {:?}, {harmless} \
         (erasing the previous record) did not need to",
        tally.faults, tally.by_step
    );
    assert_eq!(tally.faults + harmless, steps as usize);
    assert!(steps >= 3 * 58);
}

/// The same with a PKA that keeps keys itself (the identity is not in the key store).
#[test]
fn pka_faults_with_a_pka_that_keeps_keys() {
    let base = provisioned_parts(15, true);
    let mut server = Server::new();
    let mut clean = open(base.clone());
    let first = clean.pka_mut().injector.commands_started();
    let new_app_key = exchange(&mut clean, &mut server).unwrap();
    let commands = clean.pka_mut().injector.commands_started() - first;
    drop(clean);
    for index in 0..commands {
        let kind = Injection::Fail(EngineError::Fault);
        let context = format!("PKA (keeps keys) command {index}");
        let mut device = open(base.clone());
        let start = device.pka_mut().injector.commands_started();
        device.pka_mut().injector.inject(start + index, kind);
        if let Err((_, error)) = exchange(&mut device, &mut server) {
            assert_eq!(error, Error::Fault, "{context}");
        }
        let mut device = after_fault(device, kind, &context);
        assert_eq!(check_usable(&mut device, new_app_key, &context), 0);
    }
}
