//! Behaviour of the backend that the conformance suite does not cover: bounded waits, tamper,
//! ephemeral handles, the DevNonce counter, configuration checks, what the flash holds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use lorapki_crypto::{
    AesBackend, AesKey, CryptoBackend, Error, KeyImport, RootKeyKind, RootKeySlot, RootKeyStore,
    Secret,
};
use lorapki_ms500::emulated::{
    EmulatedAes, EmulatedBackend, EmulatedParts, EmulatedPka, Injection, emulated_config,
    emulated_parts,
};
use lorapki_ms500::{EngineError, Ms500Backend, StorageLayout, Timeouts};

#[test]
fn a_hanging_engine_times_out_within_its_budget() {
    let mut device = open(provisioned_parts(50, false));
    let timeouts = Timeouts::default();
    let digest = [7u8; 48];
    let parts = device.into_parts();
    let waited_before = parts.delay.elapsed_ns;
    device = open_raw(parts);

    device.pka_mut().injector.inject_next(Injection::Hang);
    assert_eq!(
        device.identity_sign_digest(SLOT, &digest),
        Err(Error::Timeout)
    );
    let parts = device.into_parts();
    let waited = parts.delay.elapsed_ns - waited_before;
    let budget = u64::from(timeouts.pka_us) * 1000;
    assert!(
        waited >= budget && waited <= budget + 2 * u64::from(timeouts.pka_poll_us) * 1000,
        "waited {waited} ns for a budget of {budget} ns"
    );
    // The engine is usable again: the hung command was aborted.
    let mut device = open_raw(parts);
    device.identity_sign_digest(SLOT, &digest).unwrap();
    assert!(device.pka_mut().idle_and_clear());
}

/// `open` without resetting the parts.
fn open_raw(parts: EmulatedParts) -> EmulatedBackend {
    Ms500Backend::open(parts, emulated_config()).unwrap()
}

#[test]
fn a_busy_engine_gives_busy_after_the_busy_budget() {
    let mut device = open(provisioned_parts(51, false));
    device.aes_mut().injector.inject_next(Injection::Busy);
    let key = AesKey::from_array([1; 16]);
    assert_eq!(device.aes128_cmac(&key, &[b"m"]), Err(Error::Busy));
    device.aes_mut().injector.clear();
    assert_eq!(
        device.aes128_cmac(&key, &[b"m"]).unwrap(),
        cmac(&[1; 16], &[b"m"])
    );
    assert!(device.aes_mut().slots_empty_and_clear());
}

#[test]
fn slow_and_busy_engines_still_work() {
    let mut parts = provisioned_parts(52, false);
    parts.pka.latency_polls = 50;
    parts.pka.busy_starts = 5;
    parts.aes.latency_polls = 20;
    parts.aes.busy_starts = 3;
    parts.trng.latency_polls = 4;
    let mut device = open(parts);
    let (ephemeral, _) = device.ephemeral_generate().unwrap();
    let (_, other) = device.ephemeral_generate().unwrap();
    device.ecdh_agree(ephemeral, &other).unwrap();
    device.stage(keys(NEW_APP_KEY, None)).unwrap();
    device.activate().unwrap();
    assert_eq!(
        which_key(
            &mut device,
            RootKeySlot::Active,
            RootKeyKind::AppKey,
            &[NEW_APP_KEY]
        ),
        Some(0)
    );
}

#[test]
fn tamper_locks_the_backend_until_it_is_reopened() {
    let mut device = open(provisioned_parts(53, false));
    device
        .aes_mut()
        .injector
        .inject_next(Injection::Fail(EngineError::Tamper));
    assert_eq!(
        device.root_cmac(RootKeySlot::Active, RootKeyKind::AppKey, &[b"m"]),
        Err(Error::Tamper)
    );
    assert!(device.tampered());
    assert_eq!(device.random_bytes(&mut [0; 4]), Err(Error::Tamper));
    assert_eq!(
        device.identity_sign_digest(SLOT, &[0; 48]),
        Err(Error::Tamper)
    );
    assert_eq!(device.status(), Err(Error::Tamper));
    assert_eq!(device.recover_rng(), Err(Error::Tamper));
    assert!(device.operand_buffers_clear());
    // After a reset the keys are back (the emulated tamper response keeps the device key and
    // the flash; a chip whose response erases them needs re-provisioning, by design).
    let mut device = reboot(device);
    assert!(!device.tampered());
    assert_eq!(
        which_key(
            &mut device,
            RootKeySlot::Active,
            RootKeyKind::AppKey,
            &[FACTORY_APP_KEY]
        ),
        Some(0)
    );
    device.identity_sign_digest(SLOT, &[0; 48]).unwrap();
}

#[test]
fn ephemeral_handles_are_single_use_and_evicted_oldest_first() {
    let mut device = open(emulated_parts(54, false));
    let (first, first_public) = device.ephemeral_generate().unwrap();
    let (second, second_public) = device.ephemeral_generate().unwrap();
    // Both slots are live; a third key evicts the oldest.
    let (third, _) = device.ephemeral_generate().unwrap();
    assert_eq!(
        device.ecdh_agree(first, &second_public).err(),
        Some(Error::SlotEmpty),
        "evicted"
    );
    let z1 = device.ecdh_agree(second, &first_public).unwrap();
    let z2 = device.ecdh_agree(third, &first_public).unwrap();
    assert_ne!(z1, z2);
    // Agreement erased the slots.
    assert!(!device.pka_mut().slot_occupied(EPHEMERAL_PKA[0]));
    assert!(!device.pka_mut().slot_occupied(EPHEMERAL_PKA[1]));
    // A dropped handle leaves its key until the slot is reused or erased explicitly.
    let _unused = device.ephemeral_generate().unwrap();
    assert!(
        EPHEMERAL_PKA
            .iter()
            .any(|&slot| device.pka_mut().slot_occupied(slot))
    );
    device.erase_ephemerals().unwrap();
    assert!(
        EPHEMERAL_PKA
            .iter()
            .all(|&slot| !device.pka_mut().slot_occupied(slot))
    );
    // A handle of another backend is refused.
    let mut other = open(emulated_parts(55, false));
    let (foreign, _) = other.ephemeral_generate().unwrap();
    assert_eq!(
        device.ecdh_agree(foreign, &first_public).err(),
        Some(Error::SlotEmpty)
    );
}

#[test]
fn the_dev_nonce_counter_persists_and_never_repeats() {
    let mut device = open(provisioned_parts(56, false));
    assert_eq!(device.next_dev_nonce(), Ok(0));
    assert_eq!(device.next_dev_nonce(), Ok(1));
    let mut device = reboot(device);
    assert_eq!(device.peek_dev_nonce(), 2);
    device.erase_all().unwrap();
    let mut device = reboot(device);
    assert_eq!(device.status(), Err(Error::SlotEmpty));
    assert_eq!(
        device.next_dev_nonce(),
        Ok(2),
        "erase_all keeps the counter"
    );
    // A failed commit does not hand the value out, and the next call gets it.
    device.flash_mut().fail_at_step(0);
    assert_eq!(device.next_dev_nonce(), Err(Error::Fault));
    device.flash_mut().power_cycle();
    assert_eq!(device.next_dev_nonce(), Ok(3));
}

#[test]
fn identity_keys_are_kept_where_the_pka_cannot() {
    // Volatile PKA: the identity is stored (encrypted) and reloaded at start-up.
    let mut device = open(provisioned_parts(57, false));
    let public = device.identity_public_key(SLOT).unwrap();
    let mut device = reboot(device);
    assert_eq!(device.identity_public_key(SLOT), Ok(public));
    assert!(device.pka_mut().slot_holds(SLOT_PKA, &IDENTITY_SCALAR));

    // Retaining PKA: nothing of the identity in the store; the key survives in the engine.
    let mut device = open(emulated_parts(58, true));
    let public = device
        .identity_import(SLOT, &Secret::from_array(IDENTITY_SCALAR))
        .unwrap();
    let flash_after_identity = *device.flash_mut().contents();
    assert!(
        flash_after_identity.iter().all(|&b| b == 0xff),
        "a retaining PKA needs no key-store record"
    );
    let mut device = reboot(device);
    assert_eq!(device.identity_public_key(SLOT), Ok(public));

    // erase_all keeps identity keys: they are not root keys.
    let mut device = open(provisioned_parts(59, false));
    device.erase_all().unwrap();
    let mut device = reboot(device);
    assert!(device.pka_mut().slot_holds(SLOT_PKA, &IDENTITY_SCALAR));
}

#[test]
fn no_key_is_in_the_flash_in_clear_and_records_are_bound_to_the_device() {
    let parts = provisioned_parts(60, false);
    let flash = *parts.flash.contents();
    for secret in [
        &FACTORY_APP_KEY[..],
        &FACTORY_NWK_KEY[..],
        &IDENTITY_SCALAR[..],
    ] {
        assert!(
            !flash
                .windows(8)
                .any(|window| secret.windows(8).any(|s| s == window)),
            "key material in clear in the flash"
        );
    }

    // The same flash image in a device with another device-unique key: nothing verifies.
    let mut foreign = emulated_parts(61, false);
    foreign.flash = parts.flash.clone();
    let mut device = open(foreign);
    assert_eq!(device.status(), Err(Error::SlotEmpty));
    assert!(!device.pka_mut().slot_occupied(SLOT_PKA));

    // A flipped bit in the record (bit rot): it no longer counts, and no garbage key is loaded.
    let mut corrupted = parts.clone();
    let record_area = if flash[0] == 0xff { 1024 } else { 0 };
    corrupted.flash.flip_bits(record_area + 100, 0x04);
    let mut device = open(corrupted);
    assert_eq!(device.status(), Err(Error::SlotEmpty));
    assert!(!device.pka_mut().slot_occupied(SLOT_PKA));
}

#[test]
fn open_checks_the_configuration() {
    // Areas overlap.
    let mut config = emulated_config();
    config.storage = StorageLayout {
        area_a: 0,
        area_b: 0,
    };
    let error = Ms500Backend::open(emulated_parts(62, false), config).unwrap_err();
    assert_eq!(error.error, Error::Unsupported);
    // Not on an erase boundary.
    config.storage = StorageLayout {
        area_a: 4,
        area_b: 1024,
    };
    let error = Ms500Backend::open(error.parts, config).unwrap_err();
    assert_eq!(error.error, Error::Unsupported);
    // Too few PKA slots for two identities and two ephemerals.
    let mut parts = error.parts;
    parts.pka = EmulatedPka::new(3, false);
    let error = Ms500Backend::open(parts, emulated_config()).unwrap_err();
    assert_eq!(error.error, Error::Unsupported);
    // No AES slot.
    let mut parts = error.parts;
    parts.pka = EmulatedPka::new(4, false);
    parts.aes = EmulatedAes::new(0, [0; 16]);
    let error = Ms500Backend::open(parts, emulated_config()).unwrap_err();
    assert_eq!(error.error, Error::Unsupported);
    // Slots as configured work.
    let mut parts = error.parts;
    parts.aes = EmulatedAes::new(1, [0; 16]);
    Ms500Backend::open(parts, emulated_config()).unwrap();
}

#[test]
fn operand_buffers_are_zero_after_every_kind_of_operation() {
    let mut device = open(provisioned_parts(63, false));
    let key = AesKey::from_array([3; 16]);
    let mut block = [0u8; 16];
    let (ephemeral, public) = device.ephemeral_generate().unwrap();
    assert!(device.operand_buffers_clear());
    device.ecdh_agree(ephemeral, &public).unwrap();
    assert!(device.operand_buffers_clear());
    device.identity_sign_digest(SLOT, &[1; 48]).unwrap();
    assert!(device.operand_buffers_clear());
    device.aes128_encrypt_block(&key, &mut block).unwrap();
    device.aes128_cmac(&key, &[b"x"]).unwrap();
    assert!(device.operand_buffers_clear());
    device
        .root_encrypt_block(RootKeySlot::Active, RootKeyKind::NwkKey, &mut block)
        .unwrap();
    device.stage(keys(NEW_APP_KEY, None)).unwrap();
    device.activate().unwrap();
    assert!(device.operand_buffers_clear());
    device
        .ephemeral_import(&Secret::from_array(IDENTITY_SCALAR))
        .unwrap();
    assert!(device.operand_buffers_clear());
    // Errors too.
    assert_eq!(device.identity_generate(SLOT), Err(Error::SlotOccupied));
    assert_eq!(device.roll_back(), Err(Error::NoStagedKey));
    assert!(device.operand_buffers_clear());
    assert!(device.aes_mut().slots_empty_and_clear());
}
