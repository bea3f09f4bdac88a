//! A complete rekey in memory (N = 51, same-window schedule): what one run costs the server and
//! the device, and how much of it is the protocol itself rather than the P-384 operations.
//!
//! * `exchange/server_per_rekey` — only the server's calls (`handle_uplink`, `poll_transmit`) of
//!   one run: ephemeral key, ECDH, key schedule, signing, one verification, framing.
//! * `exchange/device_per_rekey` — only the device's calls of the same run.
//! * `exchange/server_bare_crypto` — the server's cryptographic work alone, through the same
//!   backend: generate + agree, four HKDF expansions, the transcript and signed-string hashes,
//!   one signature and one verification. `server_per_rekey / server_bare_crypto` is the
//!   protocol's own overhead.

#![allow(clippy::expect_used, clippy::panic)] // a bench: a failure is a bug to see at once

use std::hint::black_box;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use criterion::{Criterion, criterion_group, criterion_main};
use lorapki_crypto::{CryptoBackend, KeySlot, KeyStoreStatus, PublicKey, Sha384Hasher};
use lorapki_crypto_soft::{SoftBackend, TestRng};
use lorapki_proto::{
    DeviceConfig, DeviceEvent, DevicePersistent, DeviceRecord, DeviceSession, Instant,
    LorawanVersion, ServerConfig, ServerEndpoint,
};

type Backend = SoftBackend<TestRng>;
const DEV_EUI: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0x00, 0x00, 0x01];
const SLOT: KeySlot = KeySlot(0);

struct World {
    device_backend: Backend,
    server_backend: Backend,
    device_public: PublicKey,
    server_public: PublicKey,
}

fn world(seed: u64) -> World {
    let mut device_backend = SoftBackend::new(TestRng::from_seed(seed));
    let mut server_backend = SoftBackend::new(TestRng::from_seed(seed ^ 0x5555));
    let device_public = device_backend
        .identity_generate(SLOT)
        .expect("slot 0 is free");
    let server_public = server_backend
        .identity_generate(SLOT)
        .expect("slot 0 is free");
    World {
        device_backend,
        server_backend,
        device_public,
        server_public,
    }
}

/// Runs one rekey and returns the time spent in (server calls, device calls).
fn rekey(w: &mut World) -> (StdDuration, StdDuration) {
    let (mut server_time, mut device_time) = (StdDuration::ZERO, StdDuration::ZERO);
    let config = DeviceConfig::new(DEV_EUI, [0; 8], LorawanVersion::V1_0, SLOT, w.server_public);
    let status = KeyStoreStatus {
        active_generation: 0,
        staged: false,
    };
    let record = DeviceRecord {
        dev_eui: DEV_EUI,
        join_eui: [0; 8],
        lorawan: LorawanVersion::V1_0,
        identity: w.device_public,
    };
    let now = Instant::from_millis(0);

    let t = StdInstant::now();
    let mut device = DeviceSession::new(
        &mut w.device_backend,
        config,
        DevicePersistent::default(),
        status,
    )
    .expect("identity key present");
    device
        .start(&mut w.device_backend, now)
        .expect("idle device starts");
    device_time += t.elapsed();
    let t = StdInstant::now();
    let mut server = ServerEndpoint::new(
        &mut w.server_backend,
        ServerConfig::new(SLOT, w.server_public),
    );
    server_time += t.elapsed();

    let (mut up, mut down) = ([0u8; 51], [0u8; 51]);
    loop {
        let t = StdInstant::now();
        let sent = device
            .poll_transmit(&mut w.device_backend, now, 51, &mut up)
            .expect("N = 51 is valid");
        let staged = std::iter::from_fn(|| device.poll_event())
            .any(|e| matches!(e, DeviceEvent::StageNewKey(_)));
        device_time += t.elapsed();
        if staged {
            return (server_time, device_time);
        }
        let Some(sent) = sent else {
            panic!("the device stalled")
        };
        let t = StdInstant::now();
        let _ = server.handle_uplink(
            &mut w.server_backend,
            now,
            &DEV_EUI,
            Some(&record),
            &up[..sent.len],
        );
        let answer = server
            .poll_transmit(&DEV_EUI, 51, &mut down)
            .expect("N = 51 is valid");
        while server.poll_event().is_some() {}
        server_time += t.elapsed();
        if let Some(answer) = answer {
            let t = StdInstant::now();
            let _ = device.handle_downlink(&mut w.device_backend, now, &down[..answer.len]);
            let staged = std::iter::from_fn(|| device.poll_event())
                .any(|e| matches!(e, DeviceEvent::StageNewKey(_)));
            device_time += t.elapsed();
            if staged {
                return (server_time, device_time);
            }
        }
    }
}

/// The server's cryptographic work of one run, without the protocol around it.
fn server_bare_crypto(w: &mut World, peer: &PublicKey, signer: &PublicKey) {
    let b = &mut w.server_backend;
    let (ephemeral, _) = b.ephemeral_generate().expect("rng");
    let z = b.ecdh_agree(ephemeral, peer).expect("valid point");
    let mut th = b.sha384();
    th.update(&[0u8; 144]);
    let th = th.finalize();
    let prk = b.hkdf_extract(&th, z.expose_secret()).expect("hkdf");
    let mut okm = [0u8; 32];
    for label in [&b"app key"[..], b"device confirm", b"server confirm"] {
        b.hkdf_expand(&prk, &[label], &mut okm).expect("hkdf");
    }
    let mut digest = [[0u8; 48]; 2];
    for d in &mut digest {
        let mut h = b.sha384();
        h.update(&th);
        h.update(&okm);
        *d = h.finalize();
    }
    let signature = b.identity_sign_digest(SLOT, &digest[0]).expect("slot 0");
    // One verification, as the server does for the device's signature (here its own, under its
    // public key computed once outside the loop).
    b.ecdsa_verify_digest(signer, &digest[0], &signature)
        .expect("own signature");
    black_box(&digest[1]);
}

fn exchange(c: &mut Criterion) {
    let mut group = c.benchmark_group("exchange");
    let mut w = world(1);
    group.bench_function("server_per_rekey", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rekey(&mut w).0).sum())
    });
    group.bench_function("device_per_rekey", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rekey(&mut w).1).sum())
    });
    // The device's ephemeral key, made once: the server receives it, it does not make it.
    let (_, peer) = w.device_backend.ephemeral_generate().expect("rng");
    group.bench_function("server_bare_crypto", |b| {
        let signer = w.server_public;
        b.iter(|| server_bare_crypto(&mut w, &peer, &signer))
    });
    group.finish();
}

criterion_group!(benches, exchange);
criterion_main!(benches);
