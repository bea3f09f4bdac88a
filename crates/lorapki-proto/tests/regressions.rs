//! Regression tests for state-machine bugs found by the fault, exploration and security suites,
//! one per fix, each named after the rule it checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{DEV_EUI, End, NsModel, Pair};

/// PROTOCOL.md §3.7 and §8: a KeyChangeReq carries no session of its own and belongs to the
/// session of the commands it travels with, so one that travels with a SigVerifyReq of an old
/// session is stale like it, and changes nothing at the server.
#[test]
fn a_key_change_request_in_a_frame_of_an_old_session_is_stale() {
    let mut pair = Pair::new(42, NsModel::SameWindow, 51);
    pair.start();
    pair.step();
    pair.step();
    // The third uplink (SigVerifyReq C=1 ‖ KeyChangeReq) does not arrive now.
    let mut buf = [0u8; 242];
    let t = pair
        .device
        .poll_transmit(&mut pair.device_backend, pair.now, 51, &mut buf)
        .unwrap()
        .unwrap();
    let old = buf[..t.len].to_vec();
    assert_eq!(old.last(), Some(&lorapki_wire::cid::KEY_CHANGE_REQ));
    // The device restarts and its new session is pending at the server.
    pair.restart_device();
    pair.step();
    let before = pair.server.export(&DEV_EUI).unwrap();
    assert!(!common::snapshot_fields(before.as_bytes()).key_change_requested);
    // The old frame arrives late.
    let result = pair.server.handle_uplink(
        &mut pair.server_backend,
        pair.now,
        &DEV_EUI,
        Some(&pair.record),
        &old,
    );
    assert_eq!(result, Err(lorapki_proto::Error::StaleSession));
    assert_eq!(pair.server.export(&DEV_EUI).unwrap(), before);
    // The new session's own KeyChangeReq still counts: the run completes.
    assert_eq!(pair.drive(100).unwrap(), End::Completed);
    assert!(pair.same_new_key());
}
