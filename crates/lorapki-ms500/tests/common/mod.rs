//! Shared set-up of the integration tests: emulated devices, known keys, checks.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aes::Aes128;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use cmac::{Cmac, Mac};
use hex_literal::hex;
use lorapki_crypto::{
    AesKey, KeyImport, KeySlot, RootKeyKind, RootKeySlot, RootKeyStore, RootKeys, Secret,
};
use lorapki_ms500::Ms500Backend;
use lorapki_ms500::emulated::{
    EmulatedBackend, EmulatedParts, emulated_config, emulated_parts, power_cycle,
};

pub const FACTORY_APP_KEY: [u8; 16] = hex!("2b7e151628aed2a6abf7158809cf4f3c");
pub const FACTORY_NWK_KEY: [u8; 16] = [0x55; 16];
pub const NEW_APP_KEY: [u8; 16] = [0xa1; 16];
pub const NEW_NWK_KEY: [u8; 16] = [0xb2; 16];
pub const SLOT: KeySlot = KeySlot(0);
/// The identity slot's PKA slot in the default slot map.
pub const SLOT_PKA: u8 = 0;
/// The PKA slots of ephemeral keys in the default slot map.
pub const EPHEMERAL_PKA: [u8; 2] = [2, 3];
/// A fixed identity scalar: the P-384 private key of RFC 6979 §A.2.6.
pub const IDENTITY_SCALAR: [u8; 48] = hex!(
    "6b9d3dad2e1b8c1c05b19875b6659f4de23c3b667bf297ba9aa47740787137d8"
    "96d5724e4c70a825f872c9ea60d2edf5"
);

pub fn open(parts: EmulatedParts) -> EmulatedBackend {
    Ms500Backend::open(parts, emulated_config()).expect("open")
}

/// Power loss: the backend's RAM is gone; the parts are reset and the backend reopened.
pub fn reboot(device: EmulatedBackend) -> EmulatedBackend {
    let mut parts = device.into_parts();
    power_cycle(&mut parts);
    open(parts)
}

pub fn keys(app: [u8; 16], nwk: Option<[u8; 16]>) -> RootKeys {
    RootKeys {
        app_key: AesKey::from_array(app),
        nwk_key: nwk.map(AesKey::from_array),
    }
}

/// A device with factory keys and the fixed identity, powered off: the parts to open.
pub fn provisioned_parts(seed: u64, pka_retains_keys: bool) -> EmulatedParts {
    let mut device = open(emulated_parts(seed, pka_retains_keys));
    device
        .provision_factory(keys(FACTORY_APP_KEY, Some(FACTORY_NWK_KEY)))
        .unwrap();
    device
        .identity_import(SLOT, &Secret::from_array(IDENTITY_SCALAR))
        .unwrap();
    let mut parts = device.into_parts();
    power_cycle(&mut parts);
    parts
}

pub fn cmac(key: &[u8; 16], message: &[&[u8]]) -> [u8; 16] {
    let mut mac = <Cmac<Aes128> as KeyInit>::new(key.into());
    for part in message {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

pub fn aes_block(key: &[u8; 16], block: &[u8; 16]) -> [u8; 16] {
    let mut out = *block;
    Aes128::new(key.into()).encrypt_block((&mut out).into());
    out
}

/// Which of `candidates` the device's key in `slot`/`kind` is (by its CMAC), if any.
pub fn which_key(
    device: &mut EmulatedBackend,
    slot: RootKeySlot,
    kind: RootKeyKind,
    candidates: &[[u8; 16]],
) -> Option<usize> {
    let tag = device.root_cmac(slot, kind, &[b"which key"]).ok()?;
    candidates
        .iter()
        .position(|key| cmac(key, &[b"which key"]) == tag)
}
