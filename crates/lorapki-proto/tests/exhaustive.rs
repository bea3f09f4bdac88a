//! Exhaustive exploration of fault schedules for the small configuration N = 51 (EU868 DR0), in
//! both network-server models: the check behind PROTOCOL.md §7's invariant.
//!
//! At every step of a run the explorer may let everything through, or inject one fault: drop or
//! duplicate the step's uplink, drop or duplicate its downlink, lose the JoinAccept of a
//! JoinRequest, or restart (crash) the device or the server before the step. It explores every
//! schedule with at most `SAME_WINDOW_FAULTS` / `NEXT_UPLINK_FAULTS` faults, breadth first, each
//! until the rekey completes (a clean run takes 4 and 7 steps; with faults, completions were
//! reached at depths up to 19 and 43).
//!
//! The sessions hold ephemeral keys and cannot be cloned, so a node of the search is its fault
//! prefix, and the explorer reaches it by re-executing that prefix from a fresh `Pair` (same seed,
//! so the same keys: the whole harness is deterministic). After each prefix it fingerprints the
//! abstract state — device status, persistent state, deadlines relative to now, key store, the
//! device's run as seen on the air (distinct commands received and frames sent), the server's
//! snapshot with its clocks masked, the network server's queue, and the join server's accepted
//! keys as MAC comparisons — and expands a state only the first time it is reached with that
//! few faults.
//!
//! In every state reached it asserts:
//! * the device holds a key the join server accepts (`check_invariants`);
//! * the two sides never activate different keys (also `check_invariants`);
//! * when the device has completed, both sides hold the same new key and the server emitted
//!   `ActivateNewKey`;
//!
//! and, over the whole bounded exploration, that every schedule completes within `MAX_DEPTH`
//! steps (faults are bounded, so the exchange must finish).
//!
//! The device is configured with one JoinRequest under the staged key before each one under the
//! active key (the default is three), so that the rollback of §7 step 3 lies within the fault
//! bound: one lost JoinAccept is enough to reach it.
//!
//! Measured on the development machine (debug build): same-window with at most 5 faults,
//! 6 648 distinct states from 17 236 replays (about 25 s of CPU); next-uplink with at most 4
//! faults, 3 726 states from 8 458 replays (about 12 s). The two tests run in parallel. The
//! asserted lower bounds sit a little below these counts, so that an explorer that stops
//! exploring fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use common::{End, Fate, NsModel, Pair, snapshot_fields};
use lorapki_crypto::RootKeySlot;
use lorapki_proto::{DeviceEvent, DeviceStatus, ServerEvent};

const SEED: u64 = 51;
const N: usize = 51;
/// Faults per schedule, per model.
const SAME_WINDOW_FAULTS: u8 = 5;
const NEXT_UPLINK_FAULTS: u8 = 4;
/// Steps within which every schedule must complete.
const MAX_DEPTH: usize = 60;

/// What the explorer may do at one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Choice {
    Clean,
    UplinkDrop,
    UplinkDuplicate,
    DownlinkDrop,
    DownlinkDuplicate,
    JoinAcceptLost,
    DeviceRestart,
    ServerRestart,
}

const CHOICES: [Choice; 8] = [
    Choice::Clean,
    Choice::UplinkDrop,
    Choice::UplinkDuplicate,
    Choice::DownlinkDrop,
    Choice::DownlinkDuplicate,
    Choice::JoinAcceptLost,
    Choice::DeviceRestart,
    Choice::ServerRestart,
];

fn new_pair(model: NsModel) -> Pair {
    let mut pair = Pair::new(SEED, model, N);
    pair.reconfigure_device(|c| c.staged_join_attempts = 1);
    pair.stop_on_failure = false;
    pair.start();
    pair
}

/// The result of replaying a prefix.
enum Replay {
    /// The last choice had nothing to act on (e.g. a downlink fault in a step without downlink):
    /// the node is the same as the clean one and is not explored twice.
    Ineffective,
    Reached {
        pair: Box<Pair>,
        /// Whether the device and the server held a staged key just before the last choice.
        staged_before_last: (bool, bool),
    },
}

/// Replays `prefix` from a fresh pair, checking the invariants after every step.
fn replay(model: NsModel, prefix: &[Choice]) -> Replay {
    let mut pair = new_pair(model);
    let mut staged_before_last = (false, false);
    for (i, &choice) in prefix.iter().enumerate() {
        if i + 1 == prefix.len() {
            staged_before_last = (
                pair.key_store_status().staged,
                pair.server.is_staged(&common::DEV_EUI),
            );
        }
        let before = pair.next_indices();
        match choice {
            Choice::Clean => {}
            Choice::UplinkDrop => pair.fault_next_uplink(Fate::Drop),
            Choice::UplinkDuplicate => pair.fault_next_uplink(Fate::Duplicate),
            Choice::DownlinkDrop => pair.fault_next_downlink(Fate::Drop),
            Choice::DownlinkDuplicate => pair.fault_next_downlink(Fate::Duplicate),
            Choice::JoinAcceptLost => pair.lose_next_join_accept(),
            Choice::DeviceRestart => pair.restart_device(),
            Choice::ServerRestart => pair.restart_server(),
        }
        pair.step();
        let after = pair.next_indices();
        let applied = match choice {
            Choice::UplinkDrop | Choice::UplinkDuplicate => after.0 > before.0,
            Choice::DownlinkDrop | Choice::DownlinkDuplicate => after.1 > before.1,
            Choice::JoinAcceptLost => after.2 > before.2,
            _ => true,
        };
        if !applied {
            return Replay::Ineffective;
        }
        if let Err(violation) = check(&mut pair) {
            panic!("{model:?}: {violation} after step {i} of {prefix:?}");
        }
    }
    Replay::Reached {
        pair: Box::new(pair),
        staged_before_last,
    }
}

/// The properties every reachable state must have.
fn check(pair: &mut Pair) -> Result<(), String> {
    pair.check_invariants()?;
    if pair.end == Some(End::Completed) {
        if !pair.same_new_key() {
            return Err("completed without both sides holding the same new key".into());
        }
        let activated = pair
            .server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::ActivateNewKey { .. }));
        if !activated {
            return Err("device completed but the server never activated the key".into());
        }
    }
    Ok(())
}

/// The abstract state of a pair (see the module documentation).
fn fingerprint(pair: &mut Pair) -> u64 {
    let now = pair.now.as_millis();
    let relative = |t: Option<lorapki_proto::Instant>| t.map(|t| t.as_millis().saturating_sub(now));
    let mut h = DefaultHasher::new();
    match pair.device.status() {
        DeviceStatus::BackingOff { until } => ("backoff", relative(Some(until))).hash(&mut h),
        other => format!("{other:?}").hash(&mut h),
    }
    let persistent = pair.device.persistent();
    (persistent.last_session, persistent.consecutive_failures).hash(&mut h);
    format!("{:?}", pair.device.join_key()).hash(&mut h);
    relative(pair.device.poll_timeout()).hash(&mut h);
    let store = pair.key_store_status();
    format!("{store:?}").hash(&mut h);
    let mut view = pair.view.clone();
    view.sync(pair.device.status());
    view.hash(&mut h);
    if let Some(snapshot) = pair.server.export(&common::DEV_EUI) {
        let mut bytes = snapshot.as_bytes().to_vec();
        let fields = snapshot_fields(&bytes);
        // Clocks count only through what they decide: tokens due, and idle expiry.
        for at in fields.clocks {
            let stamp = u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
            let elapsed = now.saturating_sub(stamp);
            bytes[at..at + 8].fill(0);
            (elapsed / 3_600_000).hash(&mut h);
        }
        bytes.hash(&mut h);
    }
    relative(pair.server.poll_timeout()).is_some().hash(&mut h);
    for frame in pair.ns_queue() {
        frame.hash(&mut h);
    }
    (
        pair.join_server_accepts(RootKeySlot::Active),
        pair.join_server_accepts(RootKeySlot::Staged),
        pair.join_server.staged.is_some(),
        pair.device_key_is_join_staged(RootKeySlot::Staged),
        pair.join_server_activated(),
        pair.device_activated(),
    )
        .hash(&mut h);
    format!("{:?}", pair.end).hash(&mut h);
    h.finish()
}

/// What the next step of a state can do, so that faults with nothing to act on are not tried
/// (the replay detects them too; this only saves the replay).
#[derive(Clone, Copy, Debug)]
struct NextStep {
    join: bool,
    uplink: bool,
    downlink: bool,
}

impl NextStep {
    fn of(pair: &Pair) -> Self {
        let join = pair.device.join_key().is_some();
        let uplink = !join && pair.device.poll_timeout().is_some_and(|t| t <= pair.now);
        let downlink = uplink
            && match pair.model {
                NsModel::SameWindow => true,
                NsModel::NextUplink => pair.ns_queue().next().is_some(),
            };
        Self {
            join,
            uplink,
            downlink,
        }
    }

    fn allows(self, choice: Choice) -> bool {
        match choice {
            Choice::UplinkDrop | Choice::UplinkDuplicate => self.uplink,
            Choice::DownlinkDrop | Choice::DownlinkDuplicate => self.downlink,
            Choice::JoinAcceptLost => self.join,
            Choice::Clean | Choice::DeviceRestart | Choice::ServerRestart => true,
        }
    }
}

/// What the exploration reached, beyond its state count: evidence that it covered the
/// interesting paths (asserted, so that a weakened explorer fails).
#[derive(Debug, Default)]
struct Coverage {
    states: usize,
    replays: usize,
    ineffective: usize,
    completed: usize,
    failed_runs: usize,
    rollbacks: usize,
    restarts_with_staged_device: usize,
    restarts_with_staged_server: usize,
    max_depth_to_complete: usize,
}

fn explore(model: NsModel, max_faults: u8) -> Coverage {
    let mut coverage = Coverage::default();
    // Fingerprint → fewest faults with which it was reached.
    let mut seen: HashMap<u64, u8> = HashMap::new();
    let mut frontier: VecDeque<(Vec<Choice>, u8, NextStep)> = VecDeque::new();
    {
        let Replay::Reached { pair: mut root, .. } = replay(model, &[]) else {
            unreachable!()
        };
        seen.insert(fingerprint(&mut root), 0);
        coverage.states += 1;
        frontier.push_back((Vec::new(), 0, NextStep::of(&root)));
    }
    while let Some((prefix, faults, next)) = frontier.pop_front() {
        for choice in CHOICES {
            let fault = u8::from(choice != Choice::Clean);
            if faults + fault > max_faults || !next.allows(choice) {
                continue;
            }
            let mut child = prefix.clone();
            child.push(choice);
            coverage.replays += 1;
            let Replay::Reached {
                mut pair,
                staged_before_last: (device_staged, server_staged),
            } = replay(model, &child)
            else {
                coverage.ineffective += 1;
                continue;
            };
            match choice {
                Choice::DeviceRestart if device_staged => coverage.restarts_with_staged_device += 1,
                Choice::ServerRestart if server_staged => coverage.restarts_with_staged_server += 1,
                _ => {}
            }
            let print = fingerprint(&mut pair);
            if seen.get(&print).is_some_and(|&f| f <= faults + fault) {
                continue;
            }
            seen.insert(print, faults + fault);
            coverage.states += 1;
            if pair.end == Some(End::Completed) {
                coverage.completed += 1;
                coverage.max_depth_to_complete = coverage.max_depth_to_complete.max(child.len());
                coverage.failed_runs += pair
                    .device_events
                    .iter()
                    .filter(|e| matches!(e, DeviceEvent::Failed(_)))
                    .count();
                coverage.rollbacks += pair
                    .device_events
                    .iter()
                    .filter(|e| matches!(e, DeviceEvent::RollBack))
                    .count();
                continue;
            }
            assert!(
                child.len() < MAX_DEPTH,
                "{model:?}: no completion within {MAX_DEPTH} steps for {child:?}: device {:?}, \
                 events {:?}",
                pair.device.status(),
                pair.device_events
            );
            frontier.push_back((child, faults + fault, NextStep::of(&pair)));
        }
    }
    coverage
}

#[test]
fn same_window_every_schedule_within_the_fault_bound() {
    let coverage = explore(NsModel::SameWindow, SAME_WINDOW_FAULTS);
    println!("same-window, N = {N}, at most {SAME_WINDOW_FAULTS} faults: {coverage:?}");
    // 6 648 states when written.
    assert!(coverage.states >= 6_000, "{coverage:?}");
    assert!(coverage.completed > 0 && coverage.failed_runs > 0 && coverage.rollbacks > 0);
    assert!(coverage.restarts_with_staged_device > 0 && coverage.restarts_with_staged_server > 0);
}

#[test]
fn next_uplink_every_schedule_within_the_fault_bound() {
    let coverage = explore(NsModel::NextUplink, NEXT_UPLINK_FAULTS);
    println!("next-uplink, N = {N}, at most {NEXT_UPLINK_FAULTS} faults: {coverage:?}");
    // 3 726 states when written.
    assert!(coverage.states >= 3_400, "{coverage:?}");
    assert!(coverage.completed > 0 && coverage.failed_runs > 0 && coverage.rollbacks > 0);
    assert!(coverage.restarts_with_staged_device > 0 && coverage.restarts_with_staged_server > 0);
}
