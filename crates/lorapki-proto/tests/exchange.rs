//! End-to-end runs of the exchange over the simulated link, and the uplink-count table of
//! PROTOCOL.md §9.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{End, NsModel, Pair};

fn run(n: usize, model: NsModel) -> Pair {
    let mut pair = Pair::new(7, model, n);
    pair.start();
    let end = pair.drive(500).unwrap();
    assert_eq!(
        end,
        End::Completed,
        "N={n} {model:?}: {:?}",
        pair.device_events
    );
    assert!(pair.same_new_key(), "both sides hold the same new key");
    pair
}

#[test]
fn completes_at_eu868_dr0_same_window_in_four_uplinks() {
    let pair = run(51, NsModel::SameWindow);
    assert_eq!(pair.stats.uplinks, 4, "{:?}", pair.stats);
    assert_eq!(pair.stats.join_requests, 1);
    assert_eq!(pair.stats.downlinks, 3);
    assert_eq!(pair.stats.uplink_bytes, 152);
    assert_eq!(pair.stats.downlink_bytes, 153);
}

#[test]
fn uplink_table() {
    // (N, model, uplinks incl. the rejoin, FPort-1 downlinks): PROTOCOL.md §9.
    let table = [
        (51, NsModel::SameWindow, 4, 3),
        (51, NsModel::NextUplink, 6, 4),
        (222, NsModel::SameWindow, 3, 2),
        (222, NsModel::NextUplink, 5, 3),
        (11, NsModel::SameWindow, 28, 21),
        (11, NsModel::NextUplink, 36, 28),
    ];
    let mut measured = Vec::new();
    for (n, model, _, _) in table {
        let pair = run(n, model);
        measured.push((n, model, pair.stats.uplinks, pair.stats.downlinks));
    }
    for (row, got) in table.iter().zip(&measured) {
        println!(
            "N={:>3} {:?}: {} uplinks, {} downlinks",
            got.0, got.1, got.2, got.3
        );
        assert_eq!((row.2, row.3), (got.2, got.3), "row {row:?}");
    }
}
