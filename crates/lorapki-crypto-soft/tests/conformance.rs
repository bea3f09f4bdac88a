//! The whole conformance suite of `lorapki-crypto` against the software backend.

use lorapki_crypto::conformance;
use lorapki_crypto_soft::{SoftBackend, SoftKeyStore, TestRng};

#[test]
fn backend_conformance() {
    let mut seed = 0;
    let summary = conformance::run_all(|| {
        seed += 1;
        SoftBackend::new(TestRng::from_seed(seed))
    });
    println!("{summary}");
    summary.assert_complete();
}

#[test]
fn key_store_conformance() {
    let mut backend = SoftBackend::new(TestRng::from_seed(7));
    let summary = conformance::run_key_store(SoftKeyStore::new, &mut backend);
    println!("{summary}");
    summary.assert_all_passed();
}
