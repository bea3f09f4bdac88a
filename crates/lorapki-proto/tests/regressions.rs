//! Regression tests for state-machine bugs found by the fault, exploration and security suites,
//! one per fix, each named after the rule it checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{DEV_EUI, End, NsModel, Pair};
use lorapki_proto::{DeviceEvent, FailReason};
use lorapki_wire::{CommandRepr, Commands, Part, PubKeyAnsRepr};

/// PROTOCOL.md §6.3: progress is a Fragment with bytes the device did not hold yet. Fragments of
/// a PubKeyAns part the device already holds bring nothing, so a server that keeps repeating a
/// part (because it never receives the device's acknowledgement) cannot keep the device sending
/// forever: the 8-uplink rule ends the run.
#[test]
fn fragments_of_a_part_the_device_holds_are_not_progress() {
    let n = 11;
    let mut pair = Pair::new(41, NsModel::SameWindow, n);
    pair.start();
    // The device's PubKeyReq reaches the server, fragment by fragment.
    let mut buf = [0u8; 242];
    loop {
        let t = pair
            .device
            .poll_transmit(&mut pair.device_backend, pair.now, n, &mut buf)
            .unwrap()
            .unwrap();
        let _ = pair.server.handle_uplink(
            &mut pair.server_backend,
            pair.now,
            &DEV_EUI,
            Some(&pair.record),
            &buf[..t.len],
        );
        if pair.server.pending_sessions() == 1 {
            break;
        }
    }
    // The server's three parts arrive (in one large downlink, for brevity).
    let t = pair
        .server
        .poll_transmit(&DEV_EUI, 242, &mut buf)
        .unwrap()
        .unwrap();
    let parts = buf[..t.len].to_vec();
    let head = Commands::new(&parts)
        .map(|c| CommandRepr::parse(&c.unwrap()).unwrap())
        .find_map(|c| match c {
            CommandRepr::PubKeyAns(
                a @ PubKeyAnsRepr {
                    part: Part::SignatureHead(_),
                    ..
                },
            ) => Some(a),
            _ => None,
        })
        .unwrap();
    pair.device
        .handle_downlink(&mut pair.device_backend, pair.now, &parts)
        .unwrap();
    pair.drain_events();
    // From now on the device's uplinks are lost, and every downlink repeats part 1 in fragments,
    // as a server does that never hears the acknowledgement (A = 1) of all three parts.
    let mut repeats = Vec::new();
    for fid in 0..4 {
        lorapki_wire::fragment_into_frames(&CommandRepr::PubKeyAns(head), n, fid, |f| {
            repeats.push(f.to_vec());
        })
        .unwrap();
    }
    let mut uplinks = 0;
    while !pair
        .device_events
        .iter()
        .any(|e| matches!(e, DeviceEvent::Failed(_)))
    {
        assert!(
            uplinks < 200,
            "the device never gives up: {:?}",
            pair.device_events
        );
        pair.now = pair.device.poll_timeout().unwrap().max(pair.now);
        let sent = pair
            .device
            .poll_transmit(&mut pair.device_backend, pair.now, n, &mut buf)
            .unwrap();
        pair.drain_events();
        if sent.is_none() {
            continue;
        }
        let repeat = &repeats[uplinks % repeats.len()];
        let _ = pair
            .device
            .handle_downlink(&mut pair.device_backend, pair.now, repeat);
        pair.drain_events();
        uplinks += 1;
    }
    assert!(
        pair.device_events
            .contains(&DeviceEvent::Failed(FailReason::NoAnswer))
    );
    // The device's SigVerifyReqs (7 fragments each) and KeyChangeReq went out once, then at most
    // eight retransmissions without progress, each a command in at most 7 fragments (a
    // retransmission in fragments counts once: the request is not cut short, §6.3).
    assert!(uplinks <= 15 + 8 * 7, "{uplinks} uplinks");
    assert!(pair.join_server_accepts(lorapki_crypto::RootKeySlot::Active));
}

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
    // The device restarts and its new session is pending at the server (after S0's lease).
    pair.restart_device();
    pair.now = pair.now.saturating_add(pair.server_config.run_lease);
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
