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
    assert_eq!(summary.total_run(), summary.total_passed());
    // The Wycheproof sets must really have run: hundreds of cases, not a handful.
    for (name, at_least) in [
        ("Wycheproof ECDSA P-384/SHA-384 (P1363 r||s)", 280),
        ("Wycheproof ECDSA P-384/SHA-384 (DER)", 504),
        ("Wycheproof ECDH P-384 (SEC1 points)", 790),
        ("Wycheproof ECDH P-384 (SubjectPublicKeyInfo)", 1047),
        ("Wycheproof HKDF-SHA384", 83),
    ] {
        let report = summary.report(name).unwrap();
        assert!(report.run >= at_least, "{report}");
    }
}

#[test]
fn key_store_conformance() {
    let mut backend = SoftBackend::new(TestRng::from_seed(7));
    let summary = conformance::run_key_store(SoftKeyStore::new, &mut backend);
    println!("{summary}");
    assert_eq!(summary.total_run(), summary.total_passed());
}
