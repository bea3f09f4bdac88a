//! Random fault schedules (property tests): every frame's fate in both directions (delivered,
//! dropped, duplicated, delayed behind the next one, or followed by a replay of an old frame),
//! lost JoinAccepts, device and server restarts at random steps, both network-server models, and
//! the maximum payload N drawn from the sizes of the regional data rates — fixed for a run or
//! changing per uplink, as adaptive data rate does.
//!
//! Faults are confined to the first frames and steps of a run (a bounded loss rate: after them
//! the link is clean), so every run must end; the harness drives it with a bound and reports a
//! livelock as a failure.
//!
//! Properties, checked on every case (`CASES` cases per property, fixed seed, so that every run
//! of the suite tests the same schedules):
//! * nothing panics;
//! * PROTOCOL.md §7's invariant holds after every step (`drive` checks it): the device holds a key
//!   the join server accepts, and the two sides never activate different keys;
//! * when the device completes, both sides hold the same new key and the server emitted
//!   `ActivateNewKey`;
//! * whenever a run fails, the device keeps a working key (its *active* key is accepted) and has
//!   nothing staged;
//! * with `stop_on_failure = false` the device eventually completes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::cell::Cell;

use common::{End, Fate, NsModel, Pair, world};
use lorapki_crypto::RootKeySlot;
use lorapki_proto::{DeviceEvent, LorawanVersion, ServerEvent};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRunner};

/// Cases per property.
const CASES: u32 = 256;
/// The sizes of N the schedules draw from: US915 DR0, AS923 DR0 with dwell time, EU868 DR0,
/// EU868 DR3, EU868 DR5, the largest.
const SIZES: [usize; 6] = [11, 24, 51, 115, 222, 242];
/// Steps within which a run with a finite fault schedule must complete.
const MAX_STEPS: u32 = 4000;

#[derive(Clone, Debug)]
struct Schedule {
    seed: u64,
    model: NsModel,
    /// One N for the whole run, or the N of each uplink in turn (cycled).
    sizes: Vec<usize>,
    uplinks: Vec<Fate>,
    downlinks: Vec<Fate>,
    join_accept_lost: Vec<bool>,
    device_restarts: Vec<u32>,
    server_restarts: Vec<u32>,
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        6 => Just(Fate::Deliver),
        2 => Just(Fate::Drop),
        1 => Just(Fate::Duplicate),
        1 => Just(Fate::Delay),
        1 => Just(Fate::Replay),
    ]
}

fn schedule() -> impl Strategy<Value = Schedule> {
    let size = proptest::sample::select(SIZES.to_vec());
    let sizes = prop_oneof![
        size.clone().prop_map(|n| vec![n]),
        proptest::collection::vec(size, 2..12),
    ];
    (
        // A few identities, so that the cached P-384 operations are shared between cases.
        0u64..4,
        prop_oneof![Just(NsModel::SameWindow), Just(NsModel::NextUplink)],
        sizes,
        proptest::collection::vec(fate(), 0..40),
        proptest::collection::vec(fate(), 0..40),
        proptest::collection::vec(proptest::bool::weighted(0.4), 0..8),
        proptest::collection::vec(0u32..80, 0..3),
        proptest::collection::vec(0u32..80, 0..3),
    )
        .prop_map(
            |(seed, model, sizes, uplinks, downlinks, join_accept_lost, device, server)| Schedule {
                seed,
                model,
                sizes,
                uplinks,
                downlinks,
                join_accept_lost,
                device_restarts: device,
                server_restarts: server,
            },
        )
}

fn pair(s: &Schedule) -> Pair {
    let sizes = s.sizes.clone();
    let mut pair = Pair::with_world(
        world(s.seed),
        s.seed,
        s.model,
        LorawanVersion::V1_0,
        Box::new(move |i| sizes[i as usize % sizes.len()]),
    );
    pair.faults.uplinks.clone_from(&s.uplinks);
    pair.faults.downlinks.clone_from(&s.downlinks);
    pair.faults.join_accept_lost.clone_from(&s.join_accept_lost);
    pair.faults.device_restarts.clone_from(&s.device_restarts);
    pair.faults.server_restarts.clone_from(&s.server_restarts);
    pair
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(0x6c6f_7261_706b_6901),
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    })
}

/// Checks, after a step, what must hold once the device completed or a run failed.
fn check_outcomes(pair: &mut Pair, events_before: usize) -> Result<(), TestCaseError> {
    let failed = pair.device_events[events_before..]
        .iter()
        .any(|e| matches!(e, DeviceEvent::Failed(_)));
    if failed {
        prop_assert!(
            pair.join_server_accepts(RootKeySlot::Active),
            "a failed run left the device's active key unaccepted: {:?}",
            pair.device_events
        );
        prop_assert!(
            !pair.key_store_status().staged,
            "a failed run left a staged key: {:?}",
            pair.device_events
        );
    }
    if pair.end == Some(End::Completed) {
        prop_assert!(pair.same_new_key(), "completed without the same new key");
        prop_assert!(
            pair.server_events
                .iter()
                .any(|e| matches!(e, ServerEvent::ActivateNewKey { .. })),
            "the device completed but the server never activated: {:?}",
            pair.server_events
        );
    }
    Ok(())
}

/// Runs a schedule step by step with the given failure policy; returns the pair at its end.
fn run(s: &Schedule, stop_on_failure: bool) -> Result<Pair, TestCaseError> {
    let mut pair = pair(s);
    pair.stop_on_failure = stop_on_failure;
    pair.start();
    for _ in 0..MAX_STEPS {
        if pair.end.is_some() {
            return Ok(pair);
        }
        let events_before = pair.device_events.len();
        pair.step();
        pair.check_invariants().map_err(TestCaseError::fail)?;
        check_outcomes(&mut pair, events_before)?;
    }
    Err(TestCaseError::fail(format!(
        "livelock: no end after {MAX_STEPS} steps: device {:?}, stats {:?}, events {:?}",
        pair.device.status(),
        pair.stats,
        pair.device_events
    )))
}

#[test]
fn every_fault_schedule_keeps_a_working_key_and_ends() {
    // Counted through cells: the runner takes a `Fn`.
    let ends = [Cell::new(0usize), Cell::new(0usize)];
    let hurt = Cell::new(0usize);
    runner()
        .run(&schedule(), |s| {
            let pair = run(&s, true)?;
            let slot = &ends[usize::from(pair.end != Some(End::Completed))];
            slot.set(slot.get() + 1);
            // A clean run takes 4 uplinks (§9.1): more means the faults hurt.
            hurt.set(hurt.get() + usize::from(pair.stats.uplinks > 4));
            Ok(())
        })
        .unwrap();
    let ends = ends.map(Cell::into_inner);
    println!(
        "{CASES} schedules, stop at the first failure: {ends:?} (completed, failed), {} needed \
         more than the clean 4 uplinks",
        hurt.get()
    );
    // The schedules are meant to hurt, and every one ends.
    assert!(hurt.get() > CASES as usize / 4, "{}", hurt.get());
    assert_eq!(ends[0] + ends[1], CASES as usize);
}

#[test]
fn every_fault_schedule_eventually_completes() {
    let after_failure = Cell::new(0usize);
    runner()
        .run(&schedule(), |s| {
            let pair = run(&s, false)?;
            prop_assert_eq!(pair.end, Some(End::Completed));
            let failed = pair
                .device_events
                .iter()
                .any(|e| matches!(e, DeviceEvent::Failed(_)));
            after_failure.set(after_failure.get() + usize::from(failed));
            Ok(())
        })
        .unwrap();
    println!(
        "{CASES} schedules, retrying after failures: all completed, {} after a failed run",
        after_failure.get()
    );
    // Failed runs are rare now that losing a JoinAccept costs no run (§7); completion is the
    // property, the count is reported.
}
