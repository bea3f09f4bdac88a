//! The acceptance run: a fleet under 10 % loss each way, 2 % duplication and 2 % reordering.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use lorapki_netsim::ns::{AnswerModel, Faults};
use lorapki_netsim::region::Region;
use lorapki_netsim::world::{FleetSummary, Scenario, Strategy, run_fleet};

/// The fault mix of the acceptance criterion.
fn faults() -> Faults {
    Faults::symmetric(0.10, 0.02, 0.02)
}

fn scenario(
    devices: usize,
    region: Region,
    data_rate: u8,
    model: AnswerModel,
    seed: u64,
) -> Scenario {
    let mut s = Scenario::single(region, data_rate, model, Strategy::Pipelined);
    s.seed = seed;
    s.devices = devices;
    s.faults = faults();
    // Power-up spread over an hour; one gateway per device (a network dense enough that the
    // gateways' duty cycle is not what is measured here).
    s.start_spread_us = 3600 * 1_000_000;
    s.gateways = 0;
    s
}

fn check(summary: &FleetSummary, min_percent: f64) {
    println!("{summary:?}");
    println!(
        "finished {:.3} % ({} of {}), device-side completed {}, without an accepted key {}, disagreements {}",
        summary.finished_percent(),
        summary.finished,
        summary.devices,
        summary.device_completed,
        summary.without_accepted_key,
        summary.disagreements
    );
    assert_eq!(
        summary.without_accepted_key, 0,
        "a device ended without an accepted key"
    );
    assert_eq!(
        summary.disagreements, 0,
        "device and join server disagree on a key"
    );
    assert_eq!(summary.device_errors, 0, "a device recorded a fault");
    assert!(summary.finished_percent() >= min_percent, "{summary:?}");
}

/// The mix of the fleet: every region/DR of the airtime report and both answer models.
fn mix() -> Vec<(Region, u8, AnswerModel)> {
    let mut mix = Vec::new();
    for (region, dr) in [
        (Region::Eu868, 0),
        (Region::Eu868, 3),
        (Region::Eu868, 5),
        (Region::Us915, 0),
        (Region::Us915, 3),
        (Region::As923 { dwell_time: true }, 2),
    ] {
        for model in AnswerModel::ALL {
            mix.push((region, dr, model));
        }
    }
    mix
}

fn run_mix(total: usize, seed: u64, shards: usize) -> FleetSummary {
    let mix = mix();
    let per = total.div_ceil(mix.len());
    let mut summary = FleetSummary::default();
    for (k, (region, dr, model)) in mix.into_iter().enumerate() {
        let started = Instant::now();
        let s = scenario(per, region, dr, model, seed.wrapping_add(k as u64));
        let part = run_fleet(&s, shards).unwrap();
        println!(
            "{} DR{dr} {}: {}/{} finished, runs {}, failed runs {}, slowest {:.0} s, {:.1} s wall",
            region.name(),
            model.name(),
            part.finished,
            part.devices,
            part.runs,
            part.failed_runs,
            part.slowest_us as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
        merge(&mut summary, &part);
    }
    summary
}

fn merge(total: &mut FleetSummary, part: &FleetSummary) {
    total.devices += part.devices;
    total.finished += part.finished;
    total.device_completed += part.device_completed;
    total.server_pending += part.server_pending;
    total.without_accepted_key += part.without_accepted_key;
    total.disagreements += part.disagreements;
    total.gave_up += part.gave_up;
    total.device_errors += part.device_errors;
    total.runs += part.runs;
    total.failed_runs += part.failed_runs;
    for (reason, count) in &part.failure_reasons {
        *total.failure_reasons.entry(reason.clone()).or_default() += count;
    }
    total.uplinks += part.uplinks;
    total.end_us = total.end_us.max(part.end_us);
    total.slowest_us = total.slowest_us.max(part.slowest_us);
}

/// Always on: 48 devices (4 per region/DR/model), every one must finish.
#[test]
fn small_fleet_under_faults_all_finish() {
    let summary = run_mix(48, 11, 2);
    check(&summary, 100.0);
}

/// The acceptance run: 10,000 devices. Run with
/// `cargo test -p lorapki-netsim --release --features server-tables --test fleet -- --ignored`.
#[test]
#[ignore = "10,000 devices: minutes in --release"]
fn ten_thousand_devices_under_faults() {
    let started = Instant::now();
    let summary = run_mix(10_000, 2024, 2);
    println!("wall time {:.1} s", started.elapsed().as_secs_f64());
    check(&summary, 99.9);
}
