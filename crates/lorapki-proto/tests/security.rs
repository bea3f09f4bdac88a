//! The security properties of PROTOCOL.md §10 against the attacker of its threat model: one who
//! knows the factory AppKey, and so reads every FPort-1 frame and can inject any frame in both
//! directions. The tests play that attacker: they take frames off the air, rewrite or forge them
//! with `lorapki_wire`'s reprs, and feed them to `handle_downlink` / `handle_uplink`.
//!
//! "Key work" is counted by the test backend (`KeyWork`): ephemeral key generation, ECDH,
//! signing and verification. The attacker's tools (radio, frame builders, the forging server, the
//! harness of several devices against one server) are in `common/attacker.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::attacker::{
    N, Node, Server, Tweak, abort_owed, against_forger, assert_device_refused, commands, downlink,
    exchange, feed, frame, pub_key_req, renumber, round, server_staged, sig_verify_reqs, snapshot,
    staged_keys, to_server, uplink,
};
use common::{Backend, DEV_EUI, End, FACTORY_APP_KEY, JOIN_EUI, NsModel, Pair, SLOT, World};
use lorapki_crypto::CryptoBackend;
use lorapki_proto::keys::{self, LorawanVersion, Transcript};
use lorapki_proto::{
    Duration, Error, FailReason, Instant, ServerConfig, ServerEndpoint, ServerEvent,
};
use lorapki_wire::{
    AbortRepr, Code, CommandRepr, KeyChangeReqRepr, Part, PubKeyAnsRepr, PubKeyReqRepr, Reason,
    Session, SigVerifyAnsRepr, SigVerifyReqRepr,
};

// ----- (a) a rogue server -----

#[test]
fn a_rogue_server_cannot_make_the_device_stage_a_key() {
    // The rogue runs the real server code with its own signing key, and everything else right:
    // the device's registry record, and the pinned key's id in the transcript (it configures the
    // pinned public key as its own), so that the device's signature verifies at the rogue.
    let mut pair = Pair::new(11, NsModel::SameWindow, N);
    let mut rogue = common::backend(0x0bad);
    let _ = rogue.identity_generate(SLOT).unwrap();
    let pinned = pair.server_config.signing_public_key;
    pair.server = ServerEndpoint::new(&mut rogue, ServerConfig::new(SLOT, pinned));
    pair.server_backend = rogue;
    pair.start();
    // The device never stages; its run ends by the 8-uplink rule (a forged SIG_S ends nothing).
    let end = pair.drive(100).unwrap();
    assert_eq!(end, End::Failed(FailReason::NoAnswer));
    assert_device_refused(&mut pair, FailReason::ServerAuthentication);
    // The rogue did believe the device (so the failure is the server's signature alone).
    assert_eq!(server_staged(&pair.server_events), 1);

    // The same with the attacker's own implementation of the key schedule.
    let mut pair = Pair::new(12, NsModel::SameWindow, N);
    let mut rogue = common::backend(0x0bad);
    let rogue_public = rogue.identity_generate(SLOT).unwrap();
    against_forger(&mut pair, &mut rogue, &rogue_public, Tweak::None);
    assert_device_refused(&mut pair, FailReason::ServerAuthentication);
}

// ----- (f) transcript binding of the server's signature -----

#[test]
fn a_server_signature_over_another_transcript_is_rejected() {
    // The forger holds the real signing key; only one transcript field is wrong. The control
    // (nothing wrong) must be accepted, which shows the forger computes what the server does.
    for tweak in [
        Tweak::None,
        Tweak::DevEui,
        Tweak::JoinEui,
        Tweak::Lorawan,
        Tweak::Session,
        Tweak::ServerKeyId,
        Tweak::DeviceKeyId,
    ] {
        let mut pair = Pair::new(13, NsModel::SameWindow, N);
        let signer_public = pair.server_config.signing_public_key;
        let mut signer = std::mem::replace(&mut pair.server_backend, common::backend(0));
        against_forger(&mut pair, &mut signer, &signer_public, tweak);
        if tweak == Tweak::None {
            assert_eq!(staged_keys(&pair.device_events).len(), 1, "{tweak:?}");
            assert_eq!(pair.device.status(), lorapki_proto::DeviceStatus::Rejoining);
        } else {
            assert_device_refused(&mut pair, FailReason::ServerAuthentication);
        }
    }
}

#[test]
fn a_correct_server_signature_of_another_session_is_rejected() {
    for swap_all in [true, false] {
        // Session A: the server's three answers; the third never reaches the device.
        let mut pair = Pair::new(14, NsModel::SameWindow, N);
        pair.start();
        let (up_a, d1) = round(&mut pair);
        let (_, d2) = round(&mut pair);
        let up3 = uplink(&mut pair);
        let _ = to_server(&mut pair, &up3).unwrap();
        let d3 = downlink(&mut pair).unwrap();
        let old = [d1.unwrap(), d2.unwrap(), d3];
        // The device loses power and starts session B (after A's lease at the server).
        pair.restart_device();
        pair.now = pair.now.saturating_add(pair.server_config.run_lease);
        let up_b = uplink(&mut pair);
        let b = pub_key_req(&up_b).session;
        assert_ne!(b, pub_key_req(&up_a).session);
        let forged: Vec<Vec<u8>> = if swap_all {
            // A's whole answer, EPH_S included.
            old.iter().map(|d| renumber(d, b)).collect()
        } else {
            // B's real EPH_S from the server, then A's signature.
            let _ = to_server(&mut pair, &up_b).unwrap();
            let p0 = downlink(&mut pair).unwrap();
            vec![p0, renumber(&old[1], b), renumber(&old[2], b)]
        };
        feed(&mut pair, &forged);
        assert_device_refused(&mut pair, FailReason::ServerAuthentication);
    }
}

// ----- (b) a passive attacker who saw every frame -----

#[test]
fn a_passive_attacker_learns_neither_the_new_key_nor_the_confirmation_values() {
    let mut pair = Pair::new(19, NsModel::SameWindow, N);
    pair.start();
    // The server's state while the new key is staged holds everything the run derived.
    let mut held = None;
    for _ in 0..10 {
        pair.step();
        if pair.server.is_staged(&DEV_EUI) && held.is_none() {
            held = snapshot(&pair);
        }
    }
    assert_eq!(pair.end, Some(End::Completed));
    let fields = common::snapshot_fields(&held.unwrap());
    let app_key = *staged_keys(&pair.device_events)[0].app_key.expose_secret();
    assert_eq!(fields.app_key, Some(app_key));
    let c_d = fields.device_confirm.unwrap();
    let c_s = fields.server_confirm.unwrap();

    // Nothing secret travels: no 8-byte window of the AppKey, C_D or C_S in any frame.
    assert!(!pair.air.is_empty());
    for secret in [&app_key[..], &c_d[..], &c_s[..]] {
        for window in secret.windows(8) {
            for (direction, frame) in &pair.air {
                assert!(
                    !frame.windows(8).any(|w| w == window),
                    "{direction:?} frame carries secret bytes"
                );
            }
        }
    }

    // What the attacker can compute: TH, from public values only.
    let (up, down) = (&pair.air[0].1, &pair.air[1].1);
    let req = pub_key_req(up);
    let eph_s = match commands(down)[..] {
        [
            CommandRepr::PubKeyAns(PubKeyAnsRepr {
                part: Part::EphemeralKey(k),
                ..
            }),
        ] => k,
        ref other => panic!("{other:?}"),
    };
    let mut attacker = common::backend(0xa77ac);
    let eph_d = attacker.public_key_from_sec1(&req.ephemeral).unwrap();
    let eph_s = attacker.public_key_from_sec1(&eph_s).unwrap();
    let server_key_id = keys::key_id(&mut attacker, &pair.server_config.signing_public_key);
    let device_key_id = keys::key_id(&mut attacker, &pair.record.identity);
    let th = Transcript {
        lorawan: LorawanVersion::V1_0,
        dev_eui: &DEV_EUI,
        join_eui: &JOIN_EUI,
        server_key_id: &server_key_id,
        device_key_id: &device_key_id,
        session: req.session.value(),
        device_ephemeral: &eph_d,
        server_ephemeral: &eph_s,
    }
    .hash(&mut attacker);
    assert_eq!(Some(th), fields.transcript_hash);

    // Every secret the attacker can guess gives another key: without an ephemeral private key,
    // the key schedule over the public transcript yields nothing of the new key.
    let mut guesses: Vec<[u8; 48]> = vec![[0; 48], th];
    let mut x = [0u8; 48];
    x.copy_from_slice(eph_d.x());
    guesses.push(x);
    x.copy_from_slice(eph_s.x());
    guesses.push(x);
    let mut factory = [0u8; 48];
    factory[32..].copy_from_slice(&FACTORY_APP_KEY);
    guesses.push(factory);
    // ECDH with a scalar derived from the factory key, against either ephemeral key.
    let mut scalar = [0u8; 48];
    scalar[..].copy_from_slice(&attacker.sha384_digest(&FACTORY_APP_KEY));
    scalar[0] &= 0x7f;
    for peer in [&eph_d, &eph_s] {
        let (e, _) = lorapki_crypto::KeyImport::ephemeral_import(
            &mut attacker,
            &lorapki_crypto::Secret::from_array(scalar),
        )
        .unwrap();
        guesses.push(*attacker.ecdh_agree(e, peer).unwrap().expose_secret());
    }
    for guess in guesses {
        let keys = keys::derive_session_keys(
            &mut attacker,
            lorapki_crypto::Secret::from_array(guess),
            &th,
            LorawanVersion::V1_0,
        )
        .unwrap();
        assert_ne!(*keys.root.app_key.expose_secret(), app_key);
        assert_ne!(*keys.device_confirm.expose_secret(), c_d);
        assert_ne!(*keys.server_confirm.expose_secret(), c_s);
    }
}

#[test]
fn the_new_key_depends_on_both_ephemeral_secrets() {
    use lorapki_crypto::{KeyImport, Secret};
    let mut b = common::backend(0xec);
    let scalar = |byte: u8| {
        let mut s = [byte; 48];
        s[0] = 0x1f;
        Secret::from_array(s)
    };
    let app_key = |b: &mut Backend, mine: u8, theirs: u8| {
        let (_, their_public) = b.ephemeral_import(&scalar(theirs)).unwrap();
        let (e, _) = b.ephemeral_import(&scalar(mine)).unwrap();
        let z = b.ecdh_agree(e, &their_public).unwrap();
        // The transcript is public and the same in every case.
        let keys = keys::derive_session_keys(b, z, &[7; 48], LorawanVersion::V1_1).unwrap();
        (
            *keys.root.app_key.expose_secret(),
            *keys.root.nwk_key.unwrap().expose_secret(),
        )
    };
    let agreed = app_key(&mut b, 0x33, 0x44);
    // Both sides compute it, each from its own secret and the other's public key.
    assert_eq!(agreed, app_key(&mut b, 0x44, 0x33));
    // Change either secret and the keys change.
    assert_ne!(agreed.0, app_key(&mut b, 0x35, 0x44).0);
    assert_ne!(agreed.0, app_key(&mut b, 0x33, 0x45).0);
    assert_ne!(agreed.1, app_key(&mut b, 0x35, 0x44).1);
    assert_ne!(agreed.1, app_key(&mut b, 0x33, 0x45).1);
    assert_ne!(
        agreed.0, agreed.1,
        "AppKey and NwkKey are independent outputs"
    );
}

// ----- (c) cross-device replay -----

#[test]
fn another_devices_signature_is_rejected_and_stages_nothing() {
    let mut server = Server::new(200, |_| {});
    let mut a = Node::new(201, [0xa0; 8], server.public);
    let mut b = Node::new(202, [0xb0; 8], server.public);
    let mut now = Instant::from_millis(1_000_000);
    a.device.start(&mut a.backend, now).unwrap();
    let ups = exchange(&mut a, &mut server, &mut now, 3);
    assert_eq!(
        server.staged_for(&a.record.dev_eui),
        1,
        "A's run is genuine"
    );
    let stolen: Vec<SigVerifyReqRepr> = ups.iter().flat_map(|u| sig_verify_reqs(u)).collect();
    assert_eq!(stolen.len(), 2);

    // B starts a run and receives the server's EPH_S; the attacker answers for B with A's
    // signature chunks, renumbered to B's session, and a KeyChangeReq.
    b.device.start(&mut b.backend, now).unwrap();
    let up = b.uplink(now).unwrap();
    let s_b = pub_key_req(&up).session;
    let _ = server.uplink(now, &b.record.clone(), &up).unwrap();
    let p0 = server.downlink(&b.record.dev_eui).unwrap();
    b.downlink(now, &p0);
    let work = server.backend.work;
    let forged = stolen
        .iter()
        .map(|c| SigVerifyReqRepr { session: s_b, ..*c });
    let mut last = None;
    for (i, chunk) in forged.enumerate() {
        let mut cmds = vec![CommandRepr::SigVerifyReq(chunk)];
        if i == 1 {
            cmds.push(CommandRepr::KeyChangeReq(KeyChangeReqRepr));
        }
        last = Some(server.uplink(now, &b.record.clone(), &frame(&cmds)));
    }
    // One verification, which fails: B's key and B's transcript.
    assert!(last.unwrap().unwrap().key_work);
    assert_eq!(server.backend.work.verify, work.verify + 1);
    // The run is not ended by one failed verification (the chunks are unauthenticated, §8).
    assert!(!server.events.contains(&ServerEvent::Failed {
        dev_eui: b.record.dev_eui,
        reason: FailReason::DeviceAuthentication
    }));
    assert_eq!(server.staged_for(&b.record.dev_eui), 0);
    assert!(!server.endpoint.is_staged(&b.record.dev_eui));
    let answer = server.downlink(&b.record.dev_eui).unwrap();
    assert!(
        commands(&answer).contains(&CommandRepr::SigVerifyAns(SigVerifyAnsRepr {
            session: s_b,
            code: Code::Rejected
        }))
    );
    // B's own chunks, arriving after, replace the forged ones (the latest copy stands, §8): the
    // forgery did not poison B's run, which stages B's own key.
    b.downlink(now, &answer);
    assert!(staged_keys(&b.events).is_empty(), "a Rejected ends nothing");
    for _ in 0..6 {
        now = now.saturating_add(Duration::from_secs(31));
        let _ = exchange(&mut b, &mut server, &mut now, 1);
    }
    assert_eq!(server.staged_for(&b.record.dev_eui), 1);
    assert_eq!(staged_keys(&b.events).len(), 1);
    assert!(server.backend.work.verify <= work.verify + 3);
}

// ----- (d) old sessions and replays -----

#[test]
fn frames_of_an_old_session_cause_no_work_and_no_change() {
    let mut pair = Pair::new(15, NsModel::SameWindow, N);
    pair.start();
    let (u1, _) = round(&mut pair);
    let (u2, _) = round(&mut pair);
    // The third uplink (SigVerifyReq C=1 ‖ KeyChangeReq) is held by the attacker.
    let u3 = uplink(&mut pair);
    assert_eq!(
        commands(&u3).last(),
        Some(&CommandRepr::KeyChangeReq(KeyChangeReqRepr))
    );
    let s0 = pub_key_req(&u1).session;
    // The device restarts: session S1, whose EPH_S it receives once the lease of S0 ran out.
    pair.restart_device();
    pair.now = pair.now.saturating_add(pair.server_config.run_lease);
    let (v1, _) = round(&mut pair);
    let s1 = pub_key_req(&v1).session;
    assert!(s1.is_newer_than(s0));

    let before = snapshot(&pair);
    let work = pair.server_backend.work;
    for old in [&u1, &u2, &u3] {
        // Stale (S0 never authenticated, so it is not below S_last) or refused by S1's lease.
        let result = to_server(&mut pair, old);
        assert!(
            matches!(result, Err(Error::StaleSession | Error::Refused)),
            "{result:?} {:?}",
            commands(old)
        );
        assert_eq!(pair.server_backend.work, work, "no key work");
        assert_eq!(
            snapshot(&pair),
            before,
            "no state change: {:?}",
            commands(old)
        );
    }
    // The old PubKeyReq is answered with an Abort of its own session (S1 holds the lease, §8),
    // which the device drops.
    assert_eq!(
        abort_owed(&mut pair),
        Some(AbortRepr {
            session: s0,
            reason: Reason::RateLimited
        })
    );

    // The current session number with another EPH_D: refused, the pending run holds its lease.
    let mut other = common::backend(0xe);
    let (_, other_eph) = other.ephemeral_generate().unwrap();
    let forged = frame(&[CommandRepr::PubKeyReq(PubKeyReqRepr {
        ephemeral: *other_eph.as_bytes(),
        ..pub_key_req(&v1)
    })]);
    assert_eq!(to_server(&mut pair, &forged), Err(Error::Refused));
    assert_eq!(pair.server_backend.work, work);
    assert_eq!(snapshot(&pair), before);
    assert_eq!(
        abort_owed(&mut pair),
        Some(AbortRepr {
            session: s1,
            reason: Reason::RateLimited
        })
    );
}

#[test]
fn a_replayed_request_of_the_current_session_causes_no_second_verification() {
    let mut pair = Pair::new(16, NsModel::SameWindow, N);
    pair.start();
    let (u1, _) = round(&mut pair);
    let work = pair.server_backend.work;
    let outcome = to_server(&mut pair, &u1).unwrap();
    assert!(!outcome.key_work);
    assert_eq!(outcome.duplicates, 1);
    assert_eq!(pair.server_backend.work, work);
    let (u2, _) = round(&mut pair);
    let outcome = to_server(&mut pair, &u2).unwrap();
    assert!(!outcome.key_work);
    assert_eq!(outcome.duplicates, 1);
    // The second chunk and the KeyChangeReq: the signature is verified once.
    let u3 = uplink(&mut pair);
    let outcome = to_server(&mut pair, &u3).unwrap();
    assert!(outcome.key_work);
    let work = pair.server_backend.work;
    for replay in [&u1, &u2, &u3, &u3] {
        let outcome = to_server(&mut pair, replay).unwrap();
        assert!(!outcome.key_work, "{:?}", commands(replay));
        assert!(outcome.duplicates >= 1);
        assert_eq!(outcome.accepted, 0);
        assert_eq!(pair.server_backend.work, work);
    }
    assert_eq!(server_staged(&pair.server_events), 1, "staged once");
}

// ----- (e) downgrade -----

#[test]
fn another_protocol_version_is_refused_without_key_work() {
    for version in [0, 2, 3] {
        let mut pair = Pair::new(17, NsModel::SameWindow, N);
        pair.start();
        let genuine = uplink(&mut pair);
        let req = pub_key_req(&genuine);
        let forged = frame(&[CommandRepr::PubKeyReq(PubKeyReqRepr { version, ..req })]);
        let work = pair.server_backend.work;
        assert_eq!(to_server(&mut pair, &forged), Err(Error::Refused));
        assert_eq!(pair.server_backend.work, work, "version {version}");
        assert_eq!(pair.server.pending_sessions(), 0);
        assert_eq!(
            abort_owed(&mut pair),
            Some(AbortRepr {
                session: req.session,
                reason: Reason::UnsupportedVersion
            })
        );
        // The forgery changed nothing for the genuine request: the server runs version 1 only.
        let outcome = to_server(&mut pair, &genuine).unwrap();
        assert!(outcome.key_work);
        assert_eq!(pair.server.pending_sessions(), 1);
    }
}

#[test]
fn a_lorawan_version_mismatch_fails_the_run() {
    // The LoRaWAN version byte is in the transcript: a device and a registry record that disagree
    // derive different transcripts, so neither signature verifies.
    for (device, record) in [
        (LorawanVersion::V1_1, LorawanVersion::V1_0),
        (LorawanVersion::V1_0, LorawanVersion::V1_1),
    ] {
        let mut pair = Pair::with_world(
            common::world(18),
            18,
            NsModel::SameWindow,
            device,
            Box::new(|_| N),
        );
        pair.record.lorawan = record;
        pair.start();
        let end = pair.drive(100).unwrap();
        assert!(matches!(end, End::Failed(FailReason::NoAnswer)), "{end:?}");
        assert!(staged_keys(&pair.device_events).is_empty());
        assert_eq!(server_staged(&pair.server_events), 0);
        assert!(!pair.server.is_staged(&DEV_EUI));
    }
}

// ----- (g) reflection -----

/// A world in which the device's identity key and the server's signing key are the same key:
/// only the role labels of §5.5 then tell a device signature from a server signature.
fn one_key_world(seed: u64) -> World {
    let mut scalar = [0x5a; 48];
    scalar[0] = 0x1f;
    common::fixed_world(scalar, scalar, seed)
}

#[test]
fn a_reflected_signature_is_rejected_by_both_sides() {
    // Control: with one key on both sides the exchange itself is sound and completes.
    let mut pair = Pair::with_world(
        one_key_world(20),
        20,
        NsModel::SameWindow,
        LorawanVersion::V1_0,
        Box::new(|_| N),
    );
    assert_eq!(pair.record.identity, pair.server_config.signing_public_key);
    pair.start();
    assert_eq!(pair.drive(100).unwrap(), End::Completed);

    // The device's SIG_D presented to it as SIG_S, with the server's real EPH_S.
    let mut pair = Pair::with_world(
        one_key_world(20),
        20,
        NsModel::SameWindow,
        LorawanVersion::V1_0,
        Box::new(|_| N),
    );
    pair.start();
    let (_, p0) = round(&mut pair);
    assert!(p0.is_some());
    let chunks: Vec<SigVerifyReqRepr> = [uplink(&mut pair), uplink(&mut pair)]
        .iter()
        .flat_map(|u| sig_verify_reqs(u))
        .collect();
    let mut sig_d = [0u8; 96];
    sig_d[..48].copy_from_slice(&chunks[0].data);
    sig_d[48..].copy_from_slice(&chunks[1].data);
    let s = chunks[0].session;
    let [head, tail] = Part::signature_parts(&sig_d);
    feed(
        &mut pair,
        &[
            frame(&[CommandRepr::PubKeyAns(PubKeyAnsRepr {
                session: s,
                part: head,
            })]),
            frame(&[
                CommandRepr::SigVerifyAns(SigVerifyAnsRepr {
                    session: s,
                    code: Code::Accepted,
                }),
                CommandRepr::PubKeyAns(PubKeyAnsRepr {
                    session: s,
                    part: tail,
                }),
            ]),
        ],
    );
    assert_device_refused(&mut pair, FailReason::ServerAuthentication);

    // The server's SIG_S presented to it as SIG_D.
    let mut pair = Pair::with_world(
        one_key_world(20),
        20,
        NsModel::SameWindow,
        LorawanVersion::V1_0,
        Box::new(|_| N),
    );
    pair.start();
    let u1 = uplink(&mut pair);
    let _ = to_server(&mut pair, &u1).unwrap();
    // Three downlink opportunities carry what the server sends before SIG_D.
    let parts: Vec<Part> = (0..3)
        .filter_map(|_| downlink(&mut pair))
        .flat_map(|d| {
            commands(&d)
                .into_iter()
                .filter_map(|c| match c {
                    CommandRepr::PubKeyAns(a) => Some(a.part),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .collect();
    // The server holds the end of SIG_S back until SIG_D verified and the keys are staged
    // (§5.5): within its own session SIG_S cannot even be presented as SIG_D.
    assert!(
        !parts.iter().any(|p| matches!(p, Part::SignatureTail(_))),
        "{parts:?}"
    );
    assert_eq!(server_staged(&pair.server_events), 0);
}

// ----- (h) DoS bounds -----

#[test]
fn an_unregistered_device_costs_no_key_work() {
    let mut pair = Pair::new(21, NsModel::SameWindow, N);
    pair.start();
    let up = uplink(&mut pair);
    let s = pub_key_req(&up).session;
    let stranger = [0x99; 8];
    let work = pair.server_backend.work;
    let now = pair.now;
    let record = pair.record;
    // No record, or the record of another device: both are "not registered".
    for record in [None, Some(&record)] {
        let result =
            pair.server
                .handle_uplink(&mut pair.server_backend, now, &stranger, record, &up);
        assert_eq!(result, Err(Error::UnknownDevice));
    }
    assert_eq!(pair.server_backend.work, work);
    assert!(pair.server.export(&stranger).is_none(), "no state kept");
    assert_eq!(pair.server.pending_sessions(), 0);
    let mut buf = [0u8; 242];
    let t = pair
        .server
        .poll_transmit(&stranger, N, &mut buf)
        .unwrap()
        .unwrap();
    assert_eq!(
        commands(&buf[..t.len]),
        [CommandRepr::Abort(AbortRepr {
            session: s,
            reason: Reason::UnknownDevice
        })]
    );
    assert!(
        pair.server
            .poll_transmit(&stranger, N, &mut buf)
            .unwrap()
            .is_none()
    );

    // What unknown devices are owed is bounded: a flood of them keeps a bounded number of
    // Aborts, the oldest first to go.
    for i in 0..1000u32 {
        let mut eui = [0x77; 8];
        eui[4..].copy_from_slice(&i.to_be_bytes());
        let _ = pair
            .server
            .handle_uplink(&mut pair.server_backend, now, &eui, None, &up);
    }
    let owed = (0..1000u32)
        .filter(|i| {
            let mut eui = [0x77; 8];
            eui[4..].copy_from_slice(&i.to_be_bytes());
            pair.server
                .poll_transmit(&eui, N, &mut buf)
                .unwrap()
                .is_some()
        })
        .count();
    assert!(
        owed > 0 && owed <= 64,
        "{owed} Aborts kept for unknown devices"
    );
    assert_eq!(pair.server_backend.work, work);
}

#[test]
fn the_fourth_run_within_the_refill_interval_is_rate_limited() {
    let mut pair = Pair::new(22, NsModel::SameWindow, N);
    pair.start();
    let req = pub_key_req(&uplink(&mut pair));
    let mut attacker = common::backend(0xdd05);
    let mut session = req.session;
    let mut forge = |session: Session| {
        let (_, eph) = attacker.ephemeral_generate().unwrap();
        frame(&[CommandRepr::PubKeyReq(PubKeyReqRepr {
            session,
            version: lorapki_wire::PROTOCOL_VERSION,
            ephemeral: *eph.as_bytes(),
        })])
    };
    for _ in 0..3 {
        let outcome = to_server(&mut pair, &forge(session)).unwrap();
        assert!(outcome.key_work);
        session = session.next();
        // Past the lease of the run before (§8), which would refuse a new run otherwise.
        pair.now = pair
            .now
            .saturating_add(pair.server_config.run_lease)
            .saturating_add(Duration::from_secs(1));
    }
    let work = pair.server_backend.work;
    let before = snapshot(&pair);
    assert_eq!(to_server(&mut pair, &forge(session)), Err(Error::Refused));
    assert_eq!(pair.server_backend.work, work, "no key work over the limit");
    assert_eq!(snapshot(&pair), before);
    assert_eq!(
        abort_owed(&mut pair),
        Some(AbortRepr {
            session,
            reason: Reason::RateLimited
        })
    );
    // One token comes back per refill interval.
    pair.now = pair
        .now
        .saturating_add(pair.server_config.rate_limit.refill);
    assert!(to_server(&mut pair, &forge(session)).unwrap().key_work);
}

/// Finding 3: a leaked factory database lets the attacker forge PubKeyReqs for many devices at
/// once. Each device has one pending run and its own budget, so no other device is refused.
#[test]
fn forged_runs_of_many_devices_never_refuse_another_device() {
    let mut server = Server::new(300, |_| {});
    let now = Instant::from_millis(5_000_000);
    let mut attacker = common::backend(0xdd06);
    for i in 0..64u8 {
        let victim = Node::new(
            400 + u64::from(i),
            [0xc0, i, 0, 0, 0, 0, 0, 1],
            server.public,
        );
        let (_, eph) = attacker.ephemeral_generate().unwrap();
        let forged = frame(&[CommandRepr::PubKeyReq(PubKeyReqRepr {
            session: Session::new(i & 0x3f).unwrap(),
            version: lorapki_wire::PROTOCOL_VERSION,
            ephemeral: *eph.as_bytes(),
        })]);
        assert!(
            server
                .uplink(now, &victim.record, &forged)
                .unwrap()
                .key_work
        );
    }
    assert_eq!(server.endpoint.pending_sessions(), 64);
    let mut b = Node::new(302, [0xb1; 8], server.public);
    b.device.start(&mut b.backend, now).unwrap();
    let up_b = b.uplink(now).unwrap();
    assert!(
        server
            .uplink(now, &b.record.clone(), &up_b)
            .unwrap()
            .key_work,
        "another device's run starts whatever the attacker did to the others"
    );
}

// ----- (i) no secret in Debug output -----

/// `Some(format!("{value:?}"))` if the type implements `Debug`, else `None` (autoref dispatch:
/// the first impl applies only to `Debug` types). The sessions do not implement `Debug` today,
/// so their branch is unused; the test checks their output as soon as they do.
#[allow(dead_code)]
struct Probe<'a, T>(&'a T);

#[allow(dead_code)]
trait ViaDebug {
    fn render(&self) -> Option<String>;
}

impl<T: std::fmt::Debug> ViaDebug for Probe<'_, T> {
    fn render(&self) -> Option<String> {
        Some(format!("{:?} {:#?}", self.0, self.0))
    }
}

trait WithoutDebug {
    fn render(&self) -> Option<String>;
}

impl<T> WithoutDebug for &Probe<'_, T> {
    fn render(&self) -> Option<String> {
        None
    }
}

/// Every way a Debug formatter could print `secret`: hex in both cases, and the decimal list of
/// a byte array.
fn leaks(output: &str, secret: &[u8]) -> bool {
    let lower = hex::encode(secret);
    let upper = lower.to_uppercase();
    let decimal = format!("{secret:?}");
    let inner = decimal.trim_matches(|c| c == '[' || c == ']');
    output.contains(&lower) || output.contains(&upper) || output.contains(inner)
}

#[test]
fn debug_output_contains_no_key() {
    let mut pair = Pair::with_world(
        common::world(23),
        23,
        NsModel::SameWindow,
        LorawanVersion::V1_1,
        Box::new(|_| N),
    );
    pair.start();
    let mut outputs = Vec::new();
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for _ in 0..10 {
        pair.step();
        if pair.server.is_staged(&DEV_EUI) && secrets.is_empty() {
            let snapshot = pair.server.export(&DEV_EUI).unwrap();
            let fields = common::snapshot_fields(snapshot.as_bytes());
            secrets.push(fields.device_confirm.unwrap().to_vec());
            secrets.push(fields.server_confirm.unwrap().to_vec());
            outputs.push(format!("{snapshot:?} {snapshot:#?}"));
            // The sessions themselves, while they hold the run's keys.
            outputs.extend((&Probe(&pair.device)).render());
            outputs.extend((&Probe(&pair.server)).render());
        }
    }
    assert_eq!(pair.end, Some(End::Completed));
    let keys = staged_keys(&pair.device_events);
    let keys = keys[0];
    secrets.push(keys.app_key.expose_secret().to_vec());
    secrets.push(keys.nwk_key.as_ref().unwrap().expose_secret().to_vec());
    for event in &pair.device_events {
        outputs.push(format!("{event:?} {event:#?}"));
    }
    for event in &pair.server_events {
        outputs.push(format!("{event:?} {event:#?}"));
    }
    outputs.push(format!("{keys:?}"));
    // The check itself finds a key that is printed.
    assert!(leaks(
        &format!("{:?}", keys.app_key.expose_secret()),
        &secrets[2]
    ));
    for output in &outputs {
        for secret in &secrets {
            assert!(!leaks(output, secret), "a secret in: {output}");
        }
    }
    assert!(outputs.iter().any(|o| o.contains("StageNewKey")));
}

#[test]
fn a_frame_of_an_undefined_cid_is_malformed_and_changes_nothing() {
    let mut pair = Pair::new(22, NsModel::SameWindow, N);
    let noise = [0xa5, 0x17, 0x42, 0x00, 0xff, 0x13];
    for frame in [&noise[..], &[0x06][..], &[0x00, 0x01, 0x02][..]] {
        assert_eq!(
            to_server(&mut pair, frame),
            Err(Error::Wire(lorapki_wire::Error::UnknownCid {
                cid: frame[0]
            }))
        );
    }
    assert!(pair.server.export(&DEV_EUI).is_none(), "no state kept");
    assert_eq!(downlink(&mut pair), None);
    assert!(pair.server.poll_event().is_none());
}

// ----- (k) the attacker who knows the factory key: joins, forges, jams (PROTOCOL.md §7, §10) -----

use common::adversary::Attack;
use lorapki_crypto::RootKeySlot;
use lorapki_proto::{DeviceEvent, DeviceStatus};

/// A same-window pair at N = 51, driven until the device has staged the new key (it is about to
/// make its first JoinRequest under it).
fn staged_pair(seed: u64) -> Pair {
    let mut pair = Pair::new(seed, NsModel::SameWindow, N);
    pair.reconfigure_device(|c| c.staged_join_attempts = 1);
    pair.start();
    for _ in 0..20 {
        if pair.key_store_status().staged {
            return pair;
        }
        pair.step();
    }
    panic!("no staging: {:?}", pair.device_events);
}

/// Drives to the end; asserts P1–P3 after every step and that the rekey completed with both sides
/// on the same new key, without a failed run.
fn completes(pair: &mut Pair, steps: u32) {
    for _ in 0..steps {
        if pair.end == Some(End::Completed) {
            break;
        }
        pair.step();
        pair.check_properties().unwrap();
    }
    assert_eq!(pair.end, Some(End::Completed), "{:?}", pair.device_events);
    assert!(pair.same_new_key());
    assert!(
        !pair
            .device_events
            .iter()
            .any(|e| matches!(e, DeviceEvent::Failed(_))),
        "{:?}",
        pair.device_events
    );
}

/// Finding 1a: the device activated the new key; the attacker then joins under the factory key
/// and sends an uplink in that session. Under the old rule the server took that as a rollback
/// and dropped the key the device now holds alone.
#[test]
fn a_factory_key_join_after_activation_changes_no_key() {
    let mut pair = staged_pair(60);
    pair.step(); // the JoinRequest under the new key: confirmed, JoinAccept, activated
    assert_eq!(pair.end, Some(End::Completed));
    pair.attack(Attack::JoinAsDevice);
    pair.attack(Attack::PubKeyReq(1));
    pair.check_properties().unwrap();
    assert!(pair.same_new_key());
    assert!(!pair.join_server_accepts_factory_key());
}

/// Finding 1a, before the confirmation: while the key is staged, a join under the factory key
/// (the attacker's) changes nothing, and the device's JoinRequest under the new key still joins.
#[test]
fn a_factory_key_join_while_staged_keeps_the_staged_key() {
    let mut pair = staged_pair(61);
    pair.attack(Attack::JoinAsDevice);
    assert!(pair.device_key_is_join_staged(RootKeySlot::Staged));
    completes(&mut pair, 10);
}

/// Finding 1b: the join server retires the factory key at the JoinRequest under the new key; the
/// attacker jams its JoinAccept, the device falls back to the factory key, and the attacker
/// answers that JoinRequest with a JoinAccept forged under the factory key. Under the old rule
/// the device rolled back and erased the only key the join server still accepted.
#[test]
fn jammed_join_accepts_and_a_forged_factory_join_accept_keep_the_new_key() {
    let mut pair = staged_pair(62);
    pair.lose_next_join_accept();
    pair.step(); // under the new key: confirmed at the join server, JoinAccept lost
    assert!(!pair.join_server_accepts_factory_key());
    assert_eq!(pair.device.join_key(), Some(RootKeySlot::Active));
    assert!(pair.attack(Attack::ForgeJoinAccept));
    pair.step(); // under the factory key: the forged JoinAccept verifies at the device
    pair.check_properties().unwrap();
    assert!(
        pair.key_store_status().staged,
        "the device kept the new key"
    );
    assert_eq!(pair.device.status(), DeviceStatus::Rejoining);
    completes(&mut pair, 10);
}

/// Finding 2: one forged PubKeyReq with S = S_last + 31 made the device's next 31 session
/// numbers stale. Now S_last moves only when SIG_D verifies, and the run in progress holds its
/// lease.
#[test]
fn a_forged_pub_key_req_with_s_plus_31_makes_nothing_stale() {
    let mut pair = Pair::new(63, NsModel::SameWindow, N);
    pair.start();
    pair.attack(Attack::PubKeyReq(31));
    completes(&mut pair, 20);
    // Between runs (no lease held): the forged run takes the free slot, but S_last is the
    // device's, so the device's next run is not stale.
    let mut pair = Pair::new(64, NsModel::SameWindow, N);
    pair.attack(Attack::PubKeyReq(31));
    pair.now = pair
        .now
        .saturating_add(pair.server_config.run_lease)
        .saturating_add(Duration::from_secs(1));
    pair.start();
    completes(&mut pair, 30);
}

/// Finding 2: forged Abort and SigVerifyAns(Rejected) used to end the run (and grow the
/// back-off).
#[test]
fn forged_aborts_and_rejections_end_no_run() {
    let mut pair = Pair::new(65, NsModel::SameWindow, N);
    pair.start();
    pair.step();
    assert!(pair.attack(Attack::Abort));
    assert!(pair.attack(Attack::Rejected));
    assert!(matches!(pair.device.status(), DeviceStatus::Running { .. }));
    completes(&mut pair, 20);
    assert_eq!(pair.device.persistent().consecutive_failures, 0);
    assert!(
        pair.device_events
            .contains(&DeviceEvent::Unauthenticated(FailReason::Rejected))
    );
}

/// Finding 2: a bogus first PubKeyAns part 1 ("the first copy stands") poisoned the run.
#[test]
fn a_forged_first_part_1_does_not_poison_the_run() {
    let mut pair = Pair::new(66, NsModel::SameWindow, N);
    pair.start();
    pair.step(); // P0
    assert!(pair.attack(Attack::Part1));
    completes(&mut pair, 20);
}

/// Finding 2: a bogus first part 0 (the genuine one jammed) costs one restarted run, not a
/// failed one.
#[test]
fn a_forged_first_part_0_costs_one_restart_and_no_failure() {
    let mut pair = Pair::new(67, NsModel::SameWindow, N);
    pair.start();
    pair.fault_next_downlink(common::Fate::Drop);
    pair.step(); // the genuine P0 is jammed
    assert!(pair.attack(Attack::Part0));
    completes(&mut pair, 30);
    assert!(
        pair.device_events
            .iter()
            .any(|e| matches!(e, DeviceEvent::Restarted { .. }))
    );
    assert_eq!(pair.device.persistent().consecutive_failures, 0);
}

/// Finding 2: a bogus first SigVerifyReq chunk ("the first copy stands, verified once")
/// poisoned the server's run.
#[test]
fn a_forged_first_signature_chunk_does_not_poison_the_run() {
    let mut pair = Pair::new(68, NsModel::SameWindow, N);
    pair.start();
    pair.step(); // P0: the device's chunk 0 is next
    assert!(pair.attack(Attack::Chunk0));
    assert!(pair.attack(Attack::Chunk1));
    completes(&mut pair, 20);
}

/// Finding 2: a Fragment of a newer session rebound the server's reassembler and dropped the
/// pending run's fragments (N = 11).
#[test]
fn a_fragment_of_a_newer_session_does_not_disturb_the_pending_run() {
    let clean = {
        let mut pair = Pair::new(69, NsModel::SameWindow, 11);
        pair.start();
        completes(&mut pair, 200);
        pair.stats.uplinks
    };
    let mut pair = Pair::new(69, NsModel::SameWindow, 11);
    pair.start();
    for _ in 0..10 {
        pair.step();
        pair.attack(Attack::FragmentOfNewerSession);
    }
    completes(&mut pair, 200);
    // Each forged uplink takes the downlink of its own window (the device loses it), so at most
    // one uplink more per injection; the pending run's reassembly is never dropped.
    assert!(
        pair.stats.uplinks <= clean + 10,
        "{} vs {clean}",
        pair.stats.uplinks
    );
}

/// Finding 6: "Accepted" is not "staged". A forged SigVerifyAns(Accepted) with forged parts
/// makes the device stage nothing: only a SIG_S that verifies does.
#[test]
fn a_forged_accepted_stages_nothing() {
    let mut pair = Pair::new(70, NsModel::SameWindow, N);
    pair.start();
    pair.step(); // P0
    let s = pair.device_session();
    let forged = frame(&[
        CommandRepr::SigVerifyAns(SigVerifyAnsRepr {
            session: s,
            code: Code::Accepted,
        }),
        CommandRepr::PubKeyAns(PubKeyAnsRepr {
            session: s,
            part: Part::SignatureTail([0x5a; 47]),
        }),
    ]);
    pair.inject_downlink(&forged);
    pair.attack(Attack::Part1);
    assert!(!pair.key_store_status().staged);
    assert!(staged_keys(&pair.device_events).is_empty());
    completes(&mut pair, 20);
}

/// Finding 6: a KeyChangeReq alone (or beside a Fragment) applies to the pending run.
#[test]
fn a_key_change_request_alone_applies_to_the_pending_run() {
    let mut pair = Pair::new(71, NsModel::SameWindow, N);
    pair.start();
    pair.step();
    let result = to_server(
        &mut pair,
        &frame(&[CommandRepr::KeyChangeReq(KeyChangeReqRepr)]),
    );
    assert_eq!(result.map(|o| o.accepted), Ok(1));
    let fields = common::snapshot_fields(&snapshot(&pair).unwrap());
    assert!(fields.key_change_requested);
}

/// Finding 3: forged PubKeyReqs within a run's lease cost no key work at all.
#[test]
fn forged_pub_key_reqs_during_a_run_cost_no_key_work() {
    let mut pair = Pair::new(72, NsModel::SameWindow, N);
    pair.start();
    pair.step();
    let work = pair.server_backend.work;
    for offset in [0, 1, 2, 31] {
        pair.attack(Attack::PubKeyReq(offset));
    }
    assert_eq!(pair.server_backend.work, work);
    completes(&mut pair, 20);
}
