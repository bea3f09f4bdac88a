//! The airtime report: for each region/DR of interest and both network-server answer models, the
//! uplinks, downlinks, PHY bytes, device time on air and wall-clock time of one completed rekey
//! under the duty-cycle limits, for the pipelined schedule (`lorapki_proto::DeviceSession`), the
//! message order of the original design done naively (PROTOCOL.md §9.5), simulated with
//! `lorapki-netsim`; and the causal floor, the least any schedule of the wire format can cost,
//! found by a search over frame contents (module `floor`).
//!
//! `cargo run -p lorapki-benches --release --bin airtime-report` prints the table and writes
//! `benches/airtime.md` and `benches/airtime.svg`.

use std::fmt::Write as _;
use std::path::Path;

use lorapki_netsim::ns::AnswerModel;
use lorapki_netsim::region::Region;
use lorapki_netsim::world::{RekeyCost, Scenario, Strategy, measure_rekey};

mod floor;

/// The rows of interest: (region, DR).
const ROWS: [(Region, u8); 6] = [
    (Region::Eu868, 0),
    (Region::Eu868, 3),
    (Region::Eu868, 5),
    (Region::Us915, 0),
    (Region::Us915, 3),
    (Region::As923 { dwell_time: true }, 2),
];

struct Line {
    label: String,
    /// The floor's schedule (floor rows only).
    schedule: Option<String>,
    n_up: usize,
    n_down: usize,
    model: Option<AnswerModel>,
    strategy: &'static str,
    cost: RekeyCost,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut lines = Vec::new();
    for (region, dr) in ROWS {
        let label = format!("{} DR{dr}", region.name());
        let up = region.uplink_data_rate(dr).ok_or("no such data rate")?;
        let down = region
            .downlink_data_rate(region.rx1_data_rate(dr))
            .ok_or("no RX1 data rate")?;
        for model in AnswerModel::ALL {
            for (strategy, name) in [
                (Strategy::Pipelined, "pipelined"),
                (Strategy::Naive, "naive"),
            ] {
                let cost = measure_rekey(&Scenario::single(region, dr, model, strategy))?;
                if !cost.completed {
                    return Err(format!("{label} {} {name}: no completion", model.name()).into());
                }
                lines.push(Line {
                    label: format!("{label} ({})", up.label()),
                    schedule: None,
                    n_up: up.max_payload,
                    n_down: down.max_payload,
                    model: Some(model),
                    strategy: name,
                    cost,
                });
            }
        }
        let (cost, schedule) = floor::causal_floor(region, dr).ok_or("no causal floor")?;
        lines.push(Line {
            label: format!("{label} ({})", up.label()),
            schedule: Some(schedule),
            n_up: up.max_payload,
            n_down: down.max_payload,
            model: None,
            strategy: "floor",
            cost,
        });
    }
    let table = markdown(&lines);
    println!("{table}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::write(dir.join("airtime.md"), &table)?;
    std::fs::write(dir.join("airtime.svg"), svg(&lines))?;
    eprintln!(
        "wrote {} and {}",
        dir.join("airtime.md").display(),
        dir.join("airtime.svg").display()
    );
    Ok(())
}

fn markdown(lines: &[Line]) -> String {
    let mut out = String::new();
    out.push_str(
        "| Region / DR | N up/down | NS model | Strategy | Uplinks (incl. rejoin) | Downlinks | \
         PHY bytes up/down | Device time on air | Wall clock to rekey |\n",
    );
    out.push_str("|---|---|---|---|---:|---:|---:|---:|---:|\n");
    for l in lines {
        let c = &l.cost;
        let _ = writeln!(
            out,
            "| {} | {}/{} | {} | {} | {} | {} | {}/{} | {:.1} ms | {} |",
            l.label,
            l.n_up,
            l.n_down,
            l.model.map_or("any", AnswerModel::name),
            l.strategy,
            c.uplinks,
            c.downlinks,
            c.uplink_phy_bytes,
            c.downlink_phy_bytes,
            c.device_toa_us as f64 / 1000.0,
            wall(c.wall_us),
        );
    }
    out.push('\n');
    out.push_str(
        "Uplinks count every FPort-1 uplink (empty polls of the naive order included) and the \
         JoinRequest(s) of the rejoin; downlinks count every frame the gateway sent (FPort 1, \
         MAC acknowledgements, the JoinAccept). Wall clock: from the start of the first FPort-1 \
         uplink to the end of the JoinAccept under the new key, with the device's and the \
         gateway's duty cycle (EU868: 1 % on g1, 10 % on RX2) and a 30 s retransmit interval. \
         One device, one gateway, no loss.\n",
    );
    out.push('\n');
    out.push_str(
        "The floor is causal: the fewest uplinks of any schedule of this wire format (then the \
         least device air time, then the fewest downlinks; the same schedule also has the least \
         device air time and the fewest downlinks of all), found by an exhaustive search over \
         frame contents. Every command carries its CID and header (PROTOCOL.md §3); a command \
         longer than the room left in a frame travels in Fragments with a 3-byte header each \
         (§4), but the floor packs perfectly: any commands and fragments back to back, no byte \
         wasted, KeyChangeReq placed wherever it helps. Causality: the server sends nothing \
         before it holds the whole PubKeyReq (P0 is its ephemeral key, P1 and P2 carry SIG_S \
         over a transcript that contains EPH_D); the device sends no byte of SIG_D before it \
         holds all of EPH_S (P0); the server sends the last 8 bytes of SIG_S (the end of P2) \
         and SigVerifyAns only once it holds the whole SIG_D and the KeyChangeReq; a downlink \
         travels only in the RX1 window of an uplink, one per uplink, and may answer the uplink \
         that completed the request (same-window); an uplink with nothing to say is an empty \
         data frame (12 bytes: no FPort, no FRMPayload) that opens a window; the rejoin (one JoinRequest, one JoinAccept) comes \
         after the device holds SIG_S and SigVerifyAns. N up/down are the row's (RX1 data rate \
         for the downlinks). Its wall clock assumes every answer in RX1 and the device sending \
         as soon as its own duty cycle allows.\n",
    );
    out.push_str(
        "\nThe floor schedules, one round per uplink as uplink → downlink FRMPayload bytes (0: an \
         empty uplink, –: no downlink in its window; ×k: k such rounds):\n\n",
    );
    for l in lines {
        if let Some(schedule) = &l.schedule {
            let _ = writeln!(out, "* {}: {schedule}", l.label);
        }
    }
    out
}

fn wall(us: u64) -> String {
    let s = us as f64 / 1e6;
    if s >= 120.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.1} s")
    }
}

/// Two horizontal bar panels: uplinks per rekey, and wall-clock minutes, one group per
/// region/DR/model with the pipelined, naive and floor bars.
fn svg(lines: &[Line]) -> String {
    const BAR: f64 = 9.0;
    const GAP: f64 = 8.0;
    const LEFT: f64 = 250.0;
    const PANEL: f64 = 330.0;
    const TOP: f64 = 60.0;
    let colours = [
        ("pipelined", "#1f77b4"),
        ("naive", "#d62728"),
        ("floor", "#7f7f7f"),
    ];
    // Groups: (label, [pipelined, naive, floor]).
    let mut groups: Vec<(String, [Option<&RekeyCost>; 3])> = Vec::new();
    for l in lines.iter().filter(|l| l.model.is_some()) {
        let key = format!("{}, {}", l.label, l.model.map_or("", AnswerModel::name));
        let floor = lines
            .iter()
            .find(|f| f.model.is_none() && f.label == l.label)
            .map(|f| &f.cost);
        let index = groups
            .iter()
            .position(|(k, _)| *k == key)
            .unwrap_or_else(|| {
                groups.push((key, [None, None, floor]));
                groups.len() - 1
            });
        let slot = usize::from(l.strategy != "pipelined");
        groups[index].1[slot] = Some(&l.cost);
    }
    let max_up = lines.iter().map(|l| l.cost.uplinks).max().unwrap_or(1) as f64;
    let max_min = lines
        .iter()
        .map(|l| l.cost.wall_us as f64 / 60e6)
        .fold(1.0, f64::max);
    let height = TOP + groups.len() as f64 * (3.0 * BAR + GAP) + 40.0;
    let width = LEFT + 2.0 * PANEL + 80.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">lorapki rekey on the air: uplinks and wall clock per completed rekey</text>"#
    );
    let panels = [
        (LEFT, "Uplinks (incl. rejoin)", max_up),
        (
            LEFT + PANEL + 40.0,
            "Wall clock (minutes, duty cycle)",
            max_min,
        ),
    ];
    for (x0, title, _) in panels {
        let _ = writeln!(
            s,
            r#"<text x="{x0}" y="{}" font-weight="bold">{title}</text>"#,
            TOP - 22.0
        );
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{}" x2="{x0}" y2="{}" stroke="#333"/>"##,
            TOP - 10.0,
            height - 35.0
        );
    }
    for (k, (name, colour)) in colours.iter().enumerate() {
        let x = 10.0 + k as f64 * 110.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{colour}"/><text x="{}" y="{}">{name}</text>"#,
            height - 22.0,
            x + 16.0,
            height - 12.0
        );
    }
    for (g, (label, costs)) in groups.iter().enumerate() {
        let y0 = TOP + g as f64 * (3.0 * BAR + GAP);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y0 + 1.5 * BAR + 4.0,
            escape(label)
        );
        for (k, cost) in costs.iter().enumerate() {
            let Some(cost) = cost else { continue };
            let y = y0 + k as f64 * BAR;
            let values = [cost.uplinks as f64, cost.wall_us as f64 / 60e6];
            for (p, (x0, _, max)) in panels.iter().enumerate() {
                let w = (values[p] / max * (PANEL - 50.0)).max(1.0);
                let text = if p == 0 {
                    format!("{}", cost.uplinks)
                } else {
                    format!("{:.1}", values[1])
                };
                let _ = writeln!(
                    s,
                    r#"<rect x="{x0}" y="{y}" width="{w:.1}" height="{}" fill="{}"/><text x="{:.1}" y="{}" font-size="9">{text}</text>"#,
                    BAR - 1.0,
                    colours[k].1,
                    x0 + w + 3.0,
                    y + BAR - 2.0
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
