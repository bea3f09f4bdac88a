//! Restarts at every step of a run, and the server's session snapshots.
//!
//! * A server that restarts from its stored snapshot (`export` → bytes → `import` into a new
//!   endpoint) at any step completes the run with the same key. At N = 51 the snapshot is the
//!   whole state, so the run is frame for frame the run without the restart; at N = 11 partial
//!   fragments are not kept (the device's retransmissions recover them).
//! * A device that loses power at any step completes too: with a new session if its run was
//!   lost, or by resuming the rejoin if a staged key survived in its key store.
//! * Snapshot bytes round-trip; arbitrary bytes never panic and are `Error::BadSnapshot` unless
//!   they are a snapshot (property tests with a fixed seed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::cell::Cell;

use common::{Backend, DEV_EUI, Direction, End, NsModel, Pair};
use lorapki_proto::{
    DeviceEvent, DeviceStatus, Error, Instant, ServerConfig, ServerEndpoint, SessionSnapshot,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRunner};

const MODELS: [NsModel; 2] = [NsModel::SameWindow, NsModel::NextUplink];

fn clean_run(seed: u64, model: NsModel, n: usize) -> Pair {
    let mut pair = Pair::new(seed, model, n);
    pair.start();
    assert_eq!(pair.drive(500).unwrap(), End::Completed);
    assert!(pair.same_new_key());
    pair
}

fn runs_started(pair: &Pair) -> Vec<u8> {
    pair.device_events
        .iter()
        .filter_map(|e| match e {
            DeviceEvent::RunStarted { session } => Some(*session),
            _ => None,
        })
        .collect()
}

#[test]
fn a_server_restart_at_any_step_completes_with_the_same_key() {
    let mut restarts = 0;
    for n in [51, 11] {
        for model in MODELS {
            let clean = clean_run(31, model, n);
            for step in 0..clean.stats.steps {
                let mut pair = Pair::new(31, model, n);
                pair.faults.server_restarts = vec![step];
                pair.start();
                let end = pair.drive(500).unwrap();
                assert_eq!(end, End::Completed, "N={n} {model:?} restart at {step}");
                assert!(pair.same_new_key());
                if n == 51 {
                    // Nothing is lost: the very same frames go on air.
                    assert_eq!(pair.air, clean.air, "N={n} {model:?} restart at {step}");
                    assert_eq!(pair.stats, clean.stats);
                } else {
                    // Partial fragments are lost with the server's memory: at most the commands
                    // in flight in each direction are sent again (seven fragments each at N = 11).
                    assert!(
                        pair.stats.uplinks <= clean.stats.uplinks + 14,
                        "N={n} {model:?} restart at {step}: {:?} against {:?}",
                        pair.stats,
                        clean.stats
                    );
                }
                restarts += 1;
            }
        }
    }
    // Every step of every one of the four runs was tried.
    assert!(restarts > 4 * 4, "{restarts}");
}

#[test]
fn a_server_restarting_again_and_again_still_completes() {
    for model in MODELS {
        // At N = 51 the snapshot is everything: restarting before every step changes nothing.
        let clean = clean_run(32, model, 51);
        let mut pair = Pair::new(32, model, 51);
        pair.faults.server_restarts = (0..500).collect();
        pair.start();
        assert_eq!(pair.drive(500).unwrap(), End::Completed, "{model:?}");
        assert_eq!(pair.air, clean.air);
        // At N = 11 a restart loses the fragments of a command in flight; with restarts further
        // apart than a fragmented command takes, the run completes.
        let mut pair = Pair::new(32, model, 11);
        pair.faults.server_restarts = (1..50).map(|k| k * 10).collect();
        pair.start();
        assert_eq!(pair.drive(500).unwrap(), End::Completed, "{model:?}");
        assert!(pair.same_new_key());
    }
}

#[test]
fn a_device_restart_at_any_step_completes() {
    let mut resumed = 0;
    let mut restarted = 0;
    for n in [51, 11] {
        for model in MODELS {
            let clean = clean_run(33, model, n);
            for step in 0..clean.stats.steps {
                let mut pair = Pair::new(33, model, n);
                pair.start();
                for _ in 0..step {
                    pair.step();
                }
                assert!(pair.end.is_none(), "the run ends at its last step");
                let staged = pair.key_store_status().staged;
                let status = pair.device.status();
                pair.restart_device();
                let end = pair.drive(500).unwrap();
                let context = format!("N={n} {model:?} restart before step {step} ({status:?})");
                assert_eq!(end, End::Completed, "{context}");
                assert!(pair.same_new_key(), "{context}");
                let runs = runs_started(&pair);
                if staged {
                    // The staged key survived: the rejoin resumes, no new run.
                    assert_eq!(pair.device.status(), DeviceStatus::Idle);
                    assert_eq!(runs.len(), 1, "{context}");
                    resumed += 1;
                } else {
                    // The run was lost: a new one, with the next session number.
                    assert!(matches!(status, DeviceStatus::Running { .. }), "{context}");
                    assert_eq!(runs.len(), 2, "{context}");
                    assert_eq!((runs[0] + 1) & 63, runs[1], "{context}");
                    restarted += 1;
                }
            }
        }
    }
    assert!(resumed >= 4 && restarted >= 4, "{resumed} {restarted}");
}

/// The snapshots of a device's server state before every step of a run.
fn snapshots(model: NsModel, n: usize) -> (Vec<Vec<u8>>, Pair) {
    let mut pair = Pair::new(34, model, n);
    pair.start();
    let mut all = Vec::new();
    while pair.end.is_none() {
        if let Some(s) = pair.server.export(&DEV_EUI) {
            all.push(s.as_bytes().to_vec());
        }
        pair.step();
        pair.check_invariants().unwrap();
        assert!(pair.stats.steps < 500);
    }
    if let Some(s) = pair.server.export(&DEV_EUI) {
        all.push(s.as_bytes().to_vec());
    }
    (all, pair)
}

fn fresh_endpoint(pair: &mut Pair) -> ServerEndpoint {
    ServerEndpoint::new(&mut pair.server_backend, pair.server_config.clone())
}

#[test]
fn snapshot_bytes_round_trip_at_every_step() {
    for n in [51, 11] {
        for model in MODELS {
            let (all, mut pair) = snapshots(model, n);
            let distinct: std::collections::BTreeSet<_> = all.iter().collect();
            // The state moved through several snapshots, pending and not.
            assert!(distinct.len() >= 4, "N={n} {model:?}: {}", distinct.len());
            for bytes in &all {
                let mut endpoint = fresh_endpoint(&mut pair);
                let snapshot = SessionSnapshot::from_bytes(bytes);
                assert_eq!(endpoint.import(&snapshot), Ok(DEV_EUI));
                let again = endpoint.export(&DEV_EUI).unwrap();
                assert_eq!(again.as_bytes(), &bytes[..]);
                assert_eq!(again, snapshot);
            }
        }
    }
}

// ----- arbitrary snapshot bytes -----

const CASES: u32 = 512;

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(0x736e_6170_7368_6f74),
        failure_persistence: None,
        ..Config::default()
    })
}

/// Imports `bytes` into a fresh endpoint; if they are accepted, exercises the endpoint with the
/// uplinks of a real run and checks that its export is a fixed point of import/export.
fn import_and_use(
    backend: &mut Backend,
    config: &ServerConfig,
    record: &lorapki_proto::DeviceRecord,
    uplinks: &[Vec<u8>],
    bytes: &[u8],
) -> Result<bool, TestCaseError> {
    let mut endpoint = ServerEndpoint::new(backend, config.clone());
    let result = endpoint.import(&SessionSnapshot::from_bytes(bytes));
    let dev_eui = match result {
        Err(e) => {
            prop_assert_eq!(e, Error::BadSnapshot);
            prop_assert!(
                endpoint.export(&DEV_EUI).is_none(),
                "a refused import adds nothing"
            );
            return Ok(false);
        }
        Ok(dev_eui) => dev_eui,
    };
    let exported = endpoint.export(&dev_eui).unwrap();
    let mut copy = ServerEndpoint::new(backend, config.clone());
    prop_assert_eq!(copy.import(&exported), Ok(dev_eui));
    prop_assert_eq!(copy.export(&dev_eui).unwrap(), exported);
    // Whatever the snapshot said, the endpoint serves the device without panicking.
    let record = lorapki_proto::DeviceRecord { dev_eui, ..*record };
    let mut buf = [0u8; 242];
    let mut now = Instant::from_millis(2_000_000);
    for uplink in uplinks {
        let _ = endpoint.handle_uplink(backend, now, &dev_eui, Some(&record), uplink);
        for n in [11, 51, 242] {
            let _ = endpoint.poll_transmit(&dev_eui, n, &mut buf).unwrap();
        }
        while endpoint.poll_event().is_some() {}
        now = now.saturating_add(lorapki_proto::Duration::from_secs(3600));
        endpoint.handle_timeout(now);
    }
    Ok(true)
}

#[test]
fn arbitrary_snapshot_bytes_never_panic() {
    // Material: the snapshots and uplinks of real runs at N = 51 and N = 11.
    let (mut valid, mut pair) = snapshots(NsModel::SameWindow, 51);
    let (more, pair_11) = snapshots(NsModel::NextUplink, 11);
    valid.extend(more);
    let mut uplinks: Vec<Vec<u8>> = pair
        .air
        .iter()
        .chain(&pair_11.air)
        .filter(|(d, _)| *d == Direction::Up)
        .map(|(_, f)| f.clone())
        .collect();
    uplinks.truncate(12);
    let config = pair.server_config.clone();
    let record = pair.record;
    // The runner takes a `Fn`: the backend is borrowed through a `RefCell`.
    let backend = std::cell::RefCell::new(std::mem::replace(
        &mut pair.server_backend,
        common::backend(0),
    ));

    // Random bytes, mostly starting with the format byte so that decoding goes deep.
    let accepted = Cell::new(0u32);
    let random = proptest::collection::vec(any::<u8>(), 0..400).prop_map(|mut bytes| {
        if let Some(first) = bytes.first_mut()
            && *first < 0xc0
        {
            *first = 1;
        }
        bytes
    });
    runner()
        .run(&random, |bytes| {
            let ok = import_and_use(
                &mut backend.borrow_mut(),
                &config,
                &record,
                &uplinks,
                &bytes,
            )?;
            accepted.set(accepted.get() + u32::from(ok));
            Ok(())
        })
        .unwrap();
    println!("{CASES} random byte strings: {} accepted", accepted.get());

    // Real snapshots, mutated: a byte replaced, a cut, or bytes appended.
    #[derive(Clone, Debug)]
    enum Mutation {
        Set(usize, u8),
        Truncate(usize),
        Append(Vec<u8>),
    }
    let mutation = prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => proptest::collection::vec(any::<u8>(), 1..8).prop_map(Mutation::Append),
    ];
    let strategy = (
        proptest::sample::select(valid),
        proptest::collection::vec(mutation, 1..4),
    );
    let (accepted, refused) = (Cell::new(0u32), Cell::new(0u32));
    runner()
        .run(&strategy, |(mut bytes, mutations)| {
            let original = bytes.clone();
            for m in mutations {
                match m {
                    Mutation::Set(i, v) => {
                        if !bytes.is_empty() {
                            let i = i % bytes.len();
                            bytes[i] = v;
                        }
                    }
                    Mutation::Truncate(len) => bytes.truncate(len % bytes.len().max(1)),
                    Mutation::Append(tail) => bytes.extend(tail),
                }
            }
            let ok = import_and_use(
                &mut backend.borrow_mut(),
                &config,
                &record,
                &uplinks,
                &bytes,
            )?;
            if bytes.len() != original.len() {
                // The layout has no optional tail: a cut or an extension is never a snapshot
                // of the same shape. (A cut inside an optional field may make another shape, so
                // only extensions of the unchanged prefix are certain.)
                if bytes.starts_with(&original) {
                    prop_assert!(!ok, "trailing bytes accepted");
                }
            }
            let counter = if ok { &accepted } else { &refused };
            counter.set(counter.get() + 1);
            Ok(())
        })
        .unwrap();
    println!(
        "{CASES} mutated snapshots: {} accepted, {} refused",
        accepted.get(),
        refused.get()
    );
    // Both outcomes occur, so both paths were exercised.
    assert!(accepted.get() > 0 && refused.get() > 0);
}

#[test]
fn every_cut_of_a_snapshot_is_refused() {
    let (valid, mut pair) = snapshots(NsModel::SameWindow, 51);
    let config = pair.server_config.clone();
    let mut checked = 0;
    for bytes in valid.iter().filter(|b| b.len() > 21) {
        for len in 0..bytes.len() {
            let mut endpoint = ServerEndpoint::new(&mut pair.server_backend, config.clone());
            let result = endpoint.import(&SessionSnapshot::from_bytes(&bytes[..len]));
            assert_eq!(
                result,
                Err(Error::BadSnapshot),
                "cut at {len} of {}",
                bytes.len()
            );
            checked += 1;
        }
    }
    assert!(checked > 300, "{checked}");
}
