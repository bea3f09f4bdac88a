//! The conformance suite of `lorapki-crypto` against the backend on the emulated engines: the
//! same suite the software backend passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lorapki_crypto::conformance;
use lorapki_ms500::Ms500Backend;
use lorapki_ms500::emulated::{EmulatedBackend, emulated_config, emulated_parts};

/// A backend whose engines are slow and sometimes busy, so that every command goes through the
/// bounded poll and busy-retry loops.
fn backend(seed: u64, pka_retains_keys: bool) -> EmulatedBackend {
    let mut parts = emulated_parts(seed, pka_retains_keys);
    parts.pka.latency_polls = 2;
    parts.pka.busy_starts = 1;
    parts.aes.latency_polls = 1;
    parts.aes.busy_starts = 1;
    parts.trng.latency_polls = 1;
    Ms500Backend::open(parts, emulated_config()).expect("open")
}

#[test]
fn backend_conformance() {
    let mut seed = 0;
    let summary = conformance::run_all(|| {
        seed += 1;
        backend(seed, false)
    });
    println!("{summary}");
    summary.assert_complete();
}

#[test]
fn identity_checks_with_a_pka_that_keeps_keys() {
    // The identity paths differ when the PKA itself is the durable store.
    let slot = conformance::Options::default().scratch_slot;
    for report in [
        conformance::identity_slot_lifecycle(&mut backend(101, true), slot),
        conformance::ecdsa_sign_verify(&mut backend(102, true), slot),
        conformance::ecdsa_rfc6979_p384_sha384(&mut backend(103, true), slot),
    ] {
        println!("{report}");
        assert_eq!(report.run, report.passed);
    }
}

#[test]
fn key_store_conformance() {
    let mut seed = 1000;
    let mut by_value = backend(999, false);
    let summary = conformance::run_key_store(
        || {
            seed += 1;
            backend(seed, false)
        },
        &mut by_value,
    );
    println!("{summary}");
    summary.assert_all_passed();
}
