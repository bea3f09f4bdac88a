//! SP 800-90B health tests on emulated noise: they trip on stuck, biased and periodic sources,
//! not on good ones, and a trip fails the generator closed until recovery.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use lorapki_crypto::{CryptoBackend, Error, RootKeyKind, RootKeySlot, RootKeyStore};
use lorapki_ms500::emulated::{EmulatedBackend, NoiseSource, emulated_parts};
use lorapki_ms500::trng::health::{ClaimedEntropy, HealthFailure, HealthTests, STARTUP_SAMPLES};
use lorapki_ms500::{HealthFailure as Reexported, RngStatus};

/// Feeds `samples` samples of `source` through fresh health tests; the first failure and the
/// sample index it happened at.
fn first_failure(
    claim: ClaimedEntropy,
    mut source: NoiseSource,
    samples: u64,
) -> Option<(u64, HealthFailure)> {
    let mut tests = HealthTests::new(claim.cutoffs());
    let mut index = 0u64;
    while index < samples {
        for sample in source.next_word().to_le_bytes() {
            if let Err(failure) = tests.feed(sample) {
                return Some((index, failure));
            }
            index += 1;
        }
    }
    None
}

fn device_with(source: NoiseSource) -> EmulatedBackend {
    let mut parts = emulated_parts(31, false);
    parts.trng.source = source;
    open(parts)
}

const STUCK: NoiseSource = NoiseSource::StuckAt { word: 0x5a5a_5a5a };
/// One sample value with probability 115/256 ≈ 0.45, against the claim's 2^-2 = 0.25: well
/// above the APT cut-off (190 of 512), rarely a run of 16.
const BIASED: NoiseSource = NoiseSource::Biased {
    state: 3,
    value: 0x00,
    per_256: 115,
};
/// Three distinct words over and over.
const PERIODIC: NoiseSource = NoiseSource::Periodic {
    pattern: [0x9e37_79b9, 0x7f4a_7c15, 0xbf58_476d, 0, 0, 0, 0, 0],
    len: 3,
    position: 0,
};

#[test]
fn bad_sources_trip_the_tests_they_should() {
    let claim = ClaimedEntropy::TwoBits;
    let cutoffs = claim.cutoffs();

    let (at, failure) = first_failure(claim, STUCK, 1 << 20).expect("stuck source");
    assert_eq!(failure, HealthFailure::RepetitionCount);
    assert_eq!(
        at,
        u64::from(cutoffs.rct) - 1,
        "trips at the C-th identical sample"
    );

    let (at, failure) = first_failure(claim, BIASED, 1 << 20).expect("biased source");
    assert_eq!(failure, HealthFailure::AdaptiveProportion);
    // The APT counts the first sample of each window: the first window that starts with the
    // over-represented value fails.
    assert!(at < 4 * 512, "within the first windows ({at})");

    let (at, failure) = first_failure(claim, PERIODIC, 1 << 20).expect("periodic source");
    assert_eq!(failure, HealthFailure::LagRepetition { lag: 12 });
    assert_eq!(
        at,
        12 + u64::from(cutoffs.lag) - 1,
        "one period, then C_LAG matches"
    );

    // A period of one word whose four samples differ: lag 4, which neither RCT nor APT sees.
    let one_word = NoiseSource::Periodic {
        pattern: [0x0403_0201, 0, 0, 0, 0, 0, 0, 0],
        len: 1,
        position: 0,
    };
    let (_, failure) = first_failure(claim, one_word, 1 << 20).expect("one-word period");
    assert_eq!(failure, HealthFailure::LagRepetition { lag: 4 });

    println!("stuck, biased (p = 0.45), periodic (3 and 1 words): RCT, APT, lag test tripped");
}

/// The false-positive rate, measured: good sources over 2^20 samples (1 Mi) each.
///
/// By construction (SP 800-90B §4.4) each test fails a source that has exactly the claimed
/// min-entropy with probability at most α = 2^-30 per sample (RCT, lag test) or per 512-sample
/// window (APT): about 2α + α/512 ≈ 2^-29 per sample for the three together, i.e. one false
/// alarm per ~5·10^8 samples. A source with more entropy than claimed does far better; these
/// runs show none.
#[test]
fn good_sources_do_not_trip() {
    const SAMPLES: u64 = 1 << 20;
    for claim in [
        ClaimedEntropy::OneBit,
        ClaimedEntropy::TwoBits,
        ClaimedEntropy::FourBits,
    ] {
        for seed in [1u64, 2] {
            assert_eq!(
                first_failure(claim, NoiseSource::uniform(seed), SAMPLES),
                None,
                "uniform source, {claim:?}, seed {seed}"
            );
        }
    }
    // Min-entropy −log2(1/2 + 1/512) ≈ 0.994 bits per sample, just under the 1-bit claim:
    // still no false alarm in 1 Mi samples.
    assert_eq!(
        first_failure(
            ClaimedEntropy::OneBit,
            NoiseSource::Borderline { state: 5 },
            SAMPLES
        ),
        None
    );
    println!(
        "false positives: 0 in {} samples each of uniform sources (3 claims x 2 seeds) and a \
         source at the 1-bit claim",
        SAMPLES
    );
}

#[test]
fn a_bad_source_at_start_up_fails_closed_and_keeps_root_keys_usable() {
    for (source, expected) in [
        (STUCK, HealthFailure::RepetitionCount),
        (BIASED, HealthFailure::AdaptiveProportion),
        (PERIODIC, HealthFailure::LagRepetition { lag: 12 }),
    ] {
        let mut device = device_with(source);
        assert_eq!(device.rng_status(), RngStatus::Failed(expected));
        assert!(device.trng_samples_tested() <= u64::from(STARTUP_SAMPLES));
        assert_eq!(device.random_bytes(&mut [0; 8]), Err(Error::Rng));
        assert_eq!(device.ephemeral_generate().err(), Some(Error::Rng));
        assert_eq!(device.identity_generate(SLOT), Err(Error::Rng));
        // Writing the key store needs a fresh nonce: refused too, with nothing written.
        assert_eq!(
            device.provision_factory(keys(FACTORY_APP_KEY, None)),
            Err(Error::Rng)
        );
        assert_eq!(device.recover_rng(), Err(Error::Rng), "still bad");
        assert!(device.operand_buffers_clear());
        let _: Reexported = expected;
    }
}

#[test]
fn a_source_that_goes_bad_later_latches_until_recovery() {
    let mut device = device_with(NoiseSource::uniform(8));
    assert_eq!(device.rng_status(), RngStatus::Healthy);
    // Start-up test plus the two conditioned blocks of the DRBG instantiation.
    let claim = ClaimedEntropy::default().cutoffs();
    assert_eq!(
        device.trng_samples_tested(),
        u64::from(STARTUP_SAMPLES) + 2 * u64::from(claim.samples_per_block)
    );
    device
        .provision_factory(keys(FACTORY_APP_KEY, None))
        .unwrap();
    device.ephemeral_generate().unwrap();

    device.trng_mut().source = STUCK;
    // A private key reseeds the DRBG first (prediction resistance): the stuck source is seen.
    assert_eq!(device.ephemeral_generate().err(), Some(Error::Rng));
    assert_eq!(
        device.rng_status(),
        RngStatus::Failed(HealthFailure::RepetitionCount)
    );
    // Latched: even requests that would not reseed are refused now.
    assert_eq!(device.random_bytes(&mut [0; 4]), Err(Error::Rng));
    // The root keys are not affected.
    assert!(
        device
            .root_cmac(RootKeySlot::Active, RootKeyKind::AppKey, &[b"m"])
            .is_ok()
    );

    // Healthy noise again: still refused until the start-up test has run again.
    device.trng_mut().source = NoiseSource::uniform(9);
    assert_eq!(device.random_bytes(&mut [0; 4]), Err(Error::Rng));
    device.recover_rng().unwrap();
    assert_eq!(device.rng_status(), RngStatus::Healthy);
    device.random_bytes(&mut [0; 4]).unwrap();
    device.ephemeral_generate().unwrap();
}

#[test]
fn outputs_are_conditioned_not_raw() {
    // A stuck-at-zero source is refused; a uniform one is used only through SHA-256 and the
    // DRBG, so no TRNG word appears in the output.
    let mut device = device_with(NoiseSource::uniform(12));
    let mut raw = NoiseSource::uniform(12);
    let words: Vec<u32> = (0..2048).map(|_| raw.next_word()).collect();
    let mut out = [0u8; 4096];
    device.random_bytes(&mut out).unwrap();
    for window in out.chunks(4) {
        let value = u32::from_le_bytes(window.try_into().unwrap());
        assert!(!words.contains(&value), "a raw TRNG word in the output");
    }
}
