//! Uplink counts and air budget of one rekey over the simulated network (PROTOCOL.md §9).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lorapki_netsim::ns::AnswerModel::{self, NextUplink, SameWindow};
use lorapki_netsim::region::Region;
use lorapki_netsim::world::{RekeyCost, Scenario, Strategy, build, floor_cost, measure_rekey};

fn cost(region: Region, dr: u8, model: AnswerModel, strategy: Strategy) -> RekeyCost {
    let cost = measure_rekey(&Scenario::single(region, dr, model, strategy)).unwrap();
    assert!(
        cost.completed,
        "{} DR{dr} {model:?} {strategy:?}",
        region.name()
    );
    cost
}

#[test]
fn eu868_dr0_same_window_takes_four_uplinks_including_the_rejoin() {
    let c = cost(Region::Eu868, 0, SameWindow, Strategy::Pipelined);
    assert_eq!(c.uplinks, 4, "{c:?}");
    assert_eq!(c.join_requests, 1);
    assert_eq!(c.fport1_downlinks, 3);
    assert_eq!(c.fport1_bytes_up, 152);
    assert_eq!(c.fport1_bytes_down, 153);
    // 3 × 64-byte frames + a 23-byte JoinRequest at SF12: 3 × 2793.472 + 1482.752 ms.
    assert_eq!(c.uplink_phy_bytes, 3 * 64 + 23 - 1, "{c:?}"); // U2 carries 50 bytes
    assert!(
        (c.device_toa_us as i64 - 9_863_168).abs() < 10,
        "{}",
        c.device_toa_us
    );
    // The 1 % duty cycle dominates: three off-times of ~279 s.
    assert!(
        c.wall_us > 3 * 270_000_000 && c.wall_us < 3 * 300_000_000,
        "{}",
        c.wall_us
    );
    // It meets the floor's uplink count.
    assert_eq!(floor_cost(Region::Eu868, 0).map(|f| f.uplinks), Some(4));
}

#[test]
fn uplink_counts_match_the_specification_where_n_is_the_same_both_ways() {
    // (region, DR, model, uplinks incl. rejoin): PROTOCOL.md §9.1, §9.2 and §9.4 (AS923 with
    // dwell time has N = 11 in both directions, like the spec's N = 11 table).
    let table = [
        (Region::Eu868, 0, SameWindow, 4),
        (Region::Eu868, 0, NextUplink, 6),
        (Region::Eu868, 5, SameWindow, 3),
        (Region::As923 { dwell_time: true }, 2, SameWindow, 28),
        (Region::As923 { dwell_time: true }, 2, NextUplink, 36),
    ];
    for (region, dr, model, uplinks) in table {
        let c = cost(region, dr, model, Strategy::Pipelined);
        assert_eq!(
            c.uplinks,
            uplinks,
            "{} DR{dr} {model:?}: {c:?}",
            region.name()
        );
    }
}

#[test]
fn us915_dr0_downlinks_use_the_wide_rx1_data_rate() {
    // Uplinks at N = 11, but RX1 answers at DR10 (N = 242): the server's 153 bytes fit one
    // downlink, so the device's 21 fragments and the rejoin set the count.
    let c = cost(Region::Us915, 0, SameWindow, Strategy::Pipelined);
    assert_eq!(c.uplinks, 22, "{c:?}");
    assert_eq!(c.join_requests, 1);
}

#[test]
fn the_naive_order_needs_more_uplinks() {
    for (region, dr) in [(Region::Eu868, 0), (Region::Eu868, 3), (Region::Eu868, 5)] {
        for model in AnswerModel::ALL {
            let pipelined = cost(region, dr, model, Strategy::Pipelined);
            let naive = cost(region, dr, model, Strategy::Naive);
            assert!(
                naive.uplinks > pipelined.uplinks,
                "{} DR{dr} {model:?}",
                region.name()
            );
            assert!(naive.wall_us > pipelined.wall_us);
        }
    }
    // EU868 DR0, same window: PubKeyReq, 2 polls for parts 1 and 2, SigVerifyReq ×2, KeyChangeReq,
    // JoinRequest (PROTOCOL.md §9.5: "at least 7").
    assert_eq!(
        cost(Region::Eu868, 0, SameWindow, Strategy::Naive).uplinks,
        7
    );
}

#[test]
fn frames_respect_the_duty_cycle_and_the_dwell_time() {
    for (region, dr) in [
        (Region::Eu868, 0),
        (Region::Us915, 0),
        (Region::As923 { dwell_time: true }, 2),
    ] {
        let mut sim = build(
            &Scenario::single(region, dr, SameWindow, Strategy::Pipelined),
            0..1,
            0,
        )
        .unwrap();
        sim.enable_trace();
        sim.run();
        let air = sim.stats(0);
        assert_eq!(air.deferred, 0, "the device waited for its sub-band");
        assert_eq!(air.dwell_violations, 0);
        assert!(!sim.trace().is_empty());
    }
}
