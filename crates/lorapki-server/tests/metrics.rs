//! The metrics tell what happened to each input: exact counts read from the Prometheus text.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use lorapki_server::MacVersion;

/// Random bytes on FPort 1 hold no command the protocol can act on: they are malformed input,
/// not an accepted uplink, and leave no state behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_count_as_malformed() {
    let keys = [server_key()];
    let dev = SimDevice::new(5, MacVersion::V1_0_4, keys[0].public());
    let server = server_on(&Db::sqlite(), &keys, options()).await;
    import_devices(&server, std::slice::from_ref(&dev)).await;
    let noise: Vec<u8> = (0u8..40).map(|i| 0xa5 ^ i.wrapping_mul(37)).collect();
    assert!(noise[0] > 0x08, "starts with an undefined CID");
    let down = server.handle_uplink(dev.dev_eui, &noise).await.unwrap();
    assert_eq!(down, None);
    assert_eq!(
        sample(&server, "lorapki_uplinks_total{outcome=\"malformed\"}"),
        1
    );
    assert_eq!(
        sample(&server, "lorapki_uplinks_total{outcome=\"accepted\"}"),
        0
    );
    assert!(server.store().session(dev.dev_eui).await.unwrap().is_none());
}

/// A PubKeyReq of another run while a run holds its lease (PROTOCOL.md §8: a forged PubKeyReq
/// must not displace the device's run) is refused with Abort RateLimited, and counted as a
/// refusal with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_refusals_carry_their_reason() {
    let keys = [server_key()];
    let mut dev = SimDevice::new(6, MacVersion::V1_0_4, keys[0].public());
    // Another device's run sent as device 6's: its own ephemeral key and session number.
    let mut forger = SimDevice::new(7, MacVersion::V1_0_4, keys[0].public());
    let server = server_on(&Db::sqlite(), &keys, options()).await;
    import_devices(&server, std::slice::from_ref(&dev)).await;
    dev.start();
    let first = dev.uplink(51).unwrap();
    let up = first.clone();
    let down = server
        .handle_uplink(dev.dev_eui, &up)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(down[0], 0x02, "PubKeyAns");
    // The forged run meets the lease of the device's run.
    forger.start();
    let up = forger.uplink(51).unwrap();
    assert_ne!(up, first, "a different PubKeyReq");
    let down = server
        .handle_uplink(dev.dev_eui, &up)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((down[0], down[2]), (0x07, 0x03), "Abort(RateLimited)");
    assert_eq!(
        sample(
            &server,
            "lorapki_uplinks_total{outcome=\"refused\",reason=\"rate-limited\"}"
        ),
        1
    );
    assert_eq!(
        sample(&server, "lorapki_uplinks_total{outcome=\"refused\"}"),
        0
    );
    assert_eq!(
        sample(&server, "lorapki_uplinks_total{outcome=\"accepted\"}"),
        1
    );
}
