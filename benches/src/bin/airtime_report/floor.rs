//! The causal floor: the least any schedule of the lorapki wire format can cost one rekey at a
//! region/DR, found by an exhaustive shortest-path search over frame contents.
//!
//! The model (the report's text repeats it):
//!
//! * each side sends one byte stream of commands, in a fixed order: the device PubKeyReq (51),
//!   SigVerifyReq C=0 (50), C=1 (50) and KeyChangeReq (1) placed anywhere in that order (every
//!   placement is searched); the server PubKeyAns P0 (51), P1 (51), P2 (49), SigVerifyAns (2);
//! * a frame of capacity N carries any stretch of its stream; a command it carries whole costs
//!   its length, every other piece of a command is a Fragment (3-byte header + its bytes, §4),
//!   and KeyChangeReq and SigVerifyAns are never fragmented; pieces are packed perfectly (any
//!   number per frame, no byte wasted), which relaxes §3's rule that a Fragment ends its frame;
//! * causality: the server sends nothing before it holds the whole PubKeyReq (P0 is its key, P1
//!   and P2 are SIG_S over a transcript containing EPH_D); the device sends no byte of SIG_D
//!   before it holds all of P0; the server sends the last 8 bytes of SIG_S (the end of P2), and
//!   SigVerifyAns (the result of verifying SIG_D), only once it holds the whole SIG_D and the
//!   KeyChangeReq;
//! * downlinks travel only in the RX1 window of an uplink, at most one per uplink, and may answer
//!   the uplink whose window they use (same-window model); an uplink with nothing to say is an
//!   empty data frame (no FPort) that only opens a window;
//! * the device rejoins (one JoinRequest, one JoinAccept) once it holds P1, P2 and SigVerifyAns.
//!
//! Each round is one uplink and, optionally, the downlink in its window. The search is Dijkstra
//! over (device stream position, server stream position) with lexicographic costs; it is run for
//! the fewest uplinks, the least device air time and the fewest downlinks first, so that each
//! column of the floor row is a minimum over all schedules. Among equal schedules it prefers the
//! fewest downlink bytes, then the one that sends earliest.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use lorapki_netsim::region::{
    DATA_FRAME_OVERHEAD, DataRate, JOIN_ACCEPT_DELAY1_MS, JOIN_ACCEPT_LEN, JOIN_REQUEST_LEN,
    RECEIVE_DELAY1_MS, Region,
};
use lorapki_netsim::world::RekeyCost;

/// The header of a Fragment: CID, FHDR, OFFSET (§3.9).
const FRAGMENT_HEADER: usize = 3;
/// An uplink that only opens a receive window: MHDR, FHDR and MIC, no FPort, no FRMPayload.
const EMPTY_UPLINK: usize = DATA_FRAME_OVERHEAD - 1;
/// The end of SIG_S that the server withholds until it holds SIG_D and the KeyChangeReq.
const SIG_S_WITHHELD: usize = 8;

/// One command of a stream: its length and whether §4 lets it travel in Fragments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Item {
    len: usize,
    fragmentable: bool,
}

const PUB_KEY_REQ: Item = Item {
    len: 51,
    fragmentable: true,
};
const SIG_VERIFY_REQ: Item = Item {
    len: 50,
    fragmentable: true,
};
const KEY_CHANGE_REQ: Item = Item {
    len: 1,
    fragmentable: false,
};
const PUB_KEY_ANS_LONG: Item = Item {
    len: 51,
    fragmentable: true,
};
const PUB_KEY_ANS_PART_2: Item = Item {
    len: 49,
    fragmentable: true,
};
const SIG_VERIFY_ANS: Item = Item {
    len: 2,
    fragmentable: false,
};

/// A stream of commands, as byte positions `0..total`.
struct Stream {
    items: Vec<(usize, Item)>,
    total: usize,
}

impl Stream {
    fn new(items: &[Item]) -> Self {
        let mut start = 0;
        let items = items
            .iter()
            .map(|item| {
                let at = start;
                start += item.len;
                (at, *item)
            })
            .collect();
        Self {
            items,
            total: start,
        }
    }

    /// Where `item` starts in the stream (its first occurrence).
    fn start_of(&self, item: Item) -> usize {
        self.items
            .iter()
            .find(|(_, i)| *i == item)
            .map_or(self.total, |(at, _)| *at)
    }

    /// The FRMPayload bytes of a frame that carries stream bytes `from..to`, or `None` when no
    /// frame can (a piece of a command that may not be fragmented).
    fn frame_bytes(&self, from: usize, to: usize) -> Option<usize> {
        let mut bytes = 0;
        for &(start, item) in &self.items {
            let end = start + item.len;
            let (a, b) = (from.max(start), to.min(end));
            if a >= b {
                continue;
            }
            if a == start && b == end {
                bytes += item.len;
            } else if item.fragmentable {
                bytes += FRAGMENT_HEADER + (b - a);
            } else {
                return None;
            }
        }
        Some(bytes)
    }
}

/// What a search minimises first, second and third.
#[derive(Clone, Copy, Debug)]
enum Objective {
    Uplinks,
    AirTime,
    Downlinks,
}

/// The running cost of a partial schedule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cost {
    uplinks: u32,
    device_toa_us: u64,
    downlinks: u32,
    uplink_phy_bytes: u64,
    downlink_phy_bytes: u64,
    fport1_bytes_up: u32,
    fport1_bytes_down: u32,
    wall_us: u64,
    /// The stream bytes not yet sent, summed over the rounds: the last tie-break, which prefers
    /// sending early.
    outstanding: u64,
}

/// A search's order on costs: its three objectives, then the fewest downlink bytes, then the
/// earliest sending.
type Key = (u64, u64, u64, u64, u64);

impl Cost {
    fn key(&self, objective: Objective) -> Key {
        let (u, t, d) = (
            u64::from(self.uplinks),
            self.device_toa_us,
            u64::from(self.downlinks),
        );
        let (b, o) = (self.downlink_phy_bytes, self.outstanding);
        match objective {
            Objective::Uplinks => (u, t, d, b, o),
            Objective::AirTime => (t, u, d, b, o),
            Objective::Downlinks => (d, u, t, b, o),
        }
    }
}

/// The region/DR as the search sees it.
struct Link {
    up: DataRate,
    down: DataRate,
    /// The uplink sub-band's duty cycle as 1/divisor (1: none).
    divisor: u64,
}

impl Link {
    fn new(region: Region, data_rate: u8) -> Option<Self> {
        Some(Self {
            up: region.uplink_data_rate(data_rate)?,
            down: region.downlink_data_rate(region.rx1_data_rate(data_rate))?,
            divisor: region
                .sub_band(region.uplink_channels()[0])
                .map_or(1, |b| u64::from(b.divisor)),
        })
    }
}

/// One schedule the search found: its cost and its rounds as (uplink FRMPayload bytes, downlink
/// FRMPayload bytes if any), the rejoin excluded.
#[derive(Clone, Debug)]
struct Schedule {
    cost: Cost,
    rounds: Vec<(usize, Option<usize>)>,
}

/// How a state was reached: the previous (device, server) positions and the round's uplink and
/// downlink FRMPayload bytes.
type Step = (usize, usize, usize, Option<usize>);

/// The search for one placement of the KeyChangeReq: `kcr` is its index among the device's four
/// commands.
fn search(link: &Link, kcr: usize, objective: Objective) -> Option<Schedule> {
    let mut device_items = vec![PUB_KEY_REQ, SIG_VERIFY_REQ, SIG_VERIFY_REQ];
    device_items.insert(kcr, KEY_CHANGE_REQ);
    let device = Stream::new(&device_items);
    let server = Stream::new(&[
        PUB_KEY_ANS_LONG,
        PUB_KEY_ANS_LONG,
        PUB_KEY_ANS_PART_2,
        SIG_VERIFY_ANS,
    ]);
    let pub_key_req_end = device.start_of(PUB_KEY_REQ) + PUB_KEY_REQ.len;
    let sig_d_start = device.start_of(SIG_VERIFY_REQ);
    let eph_s_end = PUB_KEY_ANS_LONG.len;
    // What each side may have sent, given what the other one has.
    let device_limit = |server_pos: usize| {
        if server_pos >= eph_s_end {
            device.total
        } else {
            sig_d_start
        }
    };
    let server_limit = |device_pos: usize| {
        if device_pos < pub_key_req_end {
            0
        } else if device_pos < device.total {
            server.total - SIG_VERIFY_ANS.len - SIG_S_WITHHELD
        } else {
            server.total
        }
    };
    let (n_up, n_down) = (link.up.max_payload, link.down.max_payload);
    let width = server.total + 1;
    let index = |d: usize, s: usize| d * width + s;
    let mut best: Vec<Option<Cost>> = vec![None; (device.total + 1) * width];
    let mut previous: Vec<Option<Step>> = vec![None; best.len()];
    let mut queue = BinaryHeap::new();
    best[index(0, 0)] = Some(Cost::default());
    queue.push(Reverse(((0, 0, 0, 0, 0), 0usize, 0usize)));
    while let Some(Reverse((key, d, s))) = queue.pop() {
        let cost = best[index(d, s)]?;
        if cost.key(objective) != key {
            continue;
        }
        if s == server.total {
            return Some(finish(link, cost, d, s, &previous, index));
        }
        // The downlink in an uplink's window: nothing, the stream up to a command boundary, or
        // as far as the frame reaches; it depends on the uplink only through the server's limit.
        let downlinks_for = |limit: usize| {
            let reach = (s + 1..=limit.min(s + n_down))
                .filter(|&s2| server.frame_bytes(s, s2).is_some_and(|b| b <= n_down))
                .max();
            let mut candidates: Vec<usize> = server
                .items
                .iter()
                .map(|(start, item)| start + item.len)
                .filter(|&end| end > s && reach.is_some_and(|r| end <= r))
                .collect();
            candidates.extend(reach);
            candidates.push(s);
            candidates.sort_unstable();
            candidates.dedup();
            candidates
        };
        let mut downlinks: Vec<(usize, Vec<usize>)> = Vec::new();
        // The uplink: any stretch the device may send (none: an empty uplink).
        for d2 in d..=device_limit(s).min(d + n_up) {
            let up_bytes = if d2 == d {
                0
            } else {
                match device.frame_bytes(d, d2) {
                    Some(b) if b <= n_up => b,
                    _ => continue,
                }
            };
            let up_phy = if d2 == d {
                EMPTY_UPLINK
            } else {
                DATA_FRAME_OVERHEAD + up_bytes
            };
            let up_toa = link.up.time_on_air_us(up_phy, true);
            let limit = server_limit(d2);
            if !downlinks.iter().any(|(l, _)| *l == limit) {
                downlinks.push((limit, downlinks_for(limit)));
            }
            let candidates = downlinks
                .iter()
                .find(|(l, _)| *l == limit)
                .map(|(_, c)| c.clone())
                .unwrap_or_default();
            for s2 in candidates {
                if d2 == d && s2 == s {
                    continue;
                }
                let down_bytes = (s2 > s).then(|| server.frame_bytes(s, s2)).flatten();
                if s2 > s && down_bytes.is_none_or(|b| b > n_down) {
                    continue;
                }
                let down_toa = down_bytes.map_or(0, |b| {
                    link.down.time_on_air_us(DATA_FRAME_OVERHEAD + b, false)
                });
                let answered = down_bytes.map_or(0, |_| RECEIVE_DELAY1_MS * 1000 + down_toa);
                let next = Cost {
                    uplinks: cost.uplinks + 1,
                    device_toa_us: cost.device_toa_us + up_toa,
                    downlinks: cost.downlinks + u32::from(down_bytes.is_some()),
                    uplink_phy_bytes: cost.uplink_phy_bytes + up_phy as u64,
                    downlink_phy_bytes: cost.downlink_phy_bytes
                        + down_bytes.map_or(0, |b| (DATA_FRAME_OVERHEAD + b) as u64),
                    fport1_bytes_up: cost.fport1_bytes_up + up_bytes as u32,
                    fport1_bytes_down: cost.fport1_bytes_down + down_bytes.unwrap_or(0) as u32,
                    wall_us: cost.wall_us + (up_toa + answered).max(up_toa * link.divisor),
                    outstanding: cost.outstanding + (device.total - d2 + server.total - s2) as u64,
                };
                let slot = &mut best[index(d2, s2)];
                if slot.is_none_or(|old| next.key(objective) < old.key(objective)) {
                    *slot = Some(next);
                    previous[index(d2, s2)] = Some((d, s, up_bytes, down_bytes));
                    queue.push(Reverse((next.key(objective), d2, s2)));
                }
            }
        }
    }
    None
}

/// Adds the rejoin to the cost of a completed exchange and reads its rounds back.
fn finish(
    link: &Link,
    mut cost: Cost,
    mut d: usize,
    mut s: usize,
    previous: &[Option<Step>],
    index: impl Fn(usize, usize) -> usize,
) -> Schedule {
    let join_toa = link.up.time_on_air_us(JOIN_REQUEST_LEN, true);
    let accept_toa = link.down.time_on_air_us(JOIN_ACCEPT_LEN, false);
    cost.uplinks += 1;
    cost.downlinks += 1;
    cost.device_toa_us += join_toa;
    cost.uplink_phy_bytes += JOIN_REQUEST_LEN as u64;
    cost.downlink_phy_bytes += JOIN_ACCEPT_LEN as u64;
    cost.wall_us += join_toa + JOIN_ACCEPT_DELAY1_MS * 1000 + accept_toa;
    let mut rounds = Vec::new();
    while let Some((pd, ps, up, down)) = previous[index(d, s)] {
        rounds.push((up, down));
        (d, s) = (pd, ps);
    }
    rounds.reverse();
    Schedule { cost, rounds }
}

/// The best schedule for `objective` over every placement of the KeyChangeReq.
fn best_schedule(link: &Link, objective: Objective) -> Option<Schedule> {
    (0..4)
        .filter_map(|kcr| search(link, kcr, objective))
        .min_by_key(|schedule| schedule.cost.key(objective))
}

impl Schedule {
    /// The rounds as `up→down` FRMPayload bytes (`0`: an empty uplink, `–`: no downlink), runs of
    /// equal rounds as `×k`, then the rejoin.
    fn describe(&self) -> String {
        let mut parts: Vec<(String, usize)> = Vec::new();
        for (up, down) in &self.rounds {
            let round = format!("{up}→{}", down.map_or("–".to_owned(), |d| d.to_string()));
            match parts.last_mut() {
                Some((last, count)) if *last == round => *count += 1,
                _ => parts.push((round, 1)),
            }
        }
        let mut out: Vec<String> = parts
            .into_iter()
            .map(|(round, count)| {
                if count == 1 {
                    round
                } else {
                    format!("{round} ×{count}")
                }
            })
            .collect();
        out.push("JoinRequest→JoinAccept".to_owned());
        out.join(", ")
    }
}

/// The causal floor of one rekey at `region`/`data_rate`: the cost of the schedule with the
/// fewest uplinks (then the least device air time, then the fewest downlinks), and that schedule
/// described; its device air time and downlink count are also the least of any schedule
/// (checked: `None` otherwise, and the report refuses to print a floor that is not one).
#[must_use]
pub fn causal_floor(region: Region, data_rate: u8) -> Option<(RekeyCost, String)> {
    let link = Link::new(region, data_rate)?;
    let floor = best_schedule(&link, Objective::Uplinks)?;
    let least_air = best_schedule(&link, Objective::AirTime)?;
    let fewest_downlinks = best_schedule(&link, Objective::Downlinks)?;
    if least_air.cost.device_toa_us < floor.cost.device_toa_us
        || fewest_downlinks.cost.downlinks < floor.cost.downlinks
    {
        return None;
    }
    let c = floor.cost;
    let cost = RekeyCost {
        completed: true,
        uplinks: c.uplinks,
        join_requests: 1,
        downlinks: c.downlinks,
        fport1_downlinks: c.downlinks - 1,
        uplink_phy_bytes: c.uplink_phy_bytes,
        downlink_phy_bytes: c.downlink_phy_bytes,
        fport1_bytes_up: c.fport1_bytes_up,
        fport1_bytes_down: c.fport1_bytes_down,
        device_toa_us: c.device_toa_us,
        wall_us: c.wall_us,
    };
    Some((cost, floor.describe()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn floor(region: Region, dr: u8) -> Schedule {
        best_schedule(&Link::new(region, dr).unwrap(), Objective::Uplinks).unwrap()
    }

    #[test]
    fn a_fragmented_command_pays_a_header_per_piece() {
        let s = Stream::new(&[PUB_KEY_REQ, KEY_CHANGE_REQ, SIG_VERIFY_REQ]);
        assert_eq!(s.frame_bytes(0, 51), Some(51), "whole");
        assert_eq!(s.frame_bytes(0, 52), Some(52), "two whole commands");
        assert_eq!(s.frame_bytes(0, 8), Some(11), "the first piece at N = 11");
        assert_eq!(
            s.frame_bytes(48, 60),
            Some(3 + 3 + 1 + 3 + 8),
            "tail, whole, head"
        );
        let t = Stream::new(&[SIG_VERIFY_ANS]);
        assert_eq!(
            t.frame_bytes(0, 1),
            None,
            "SigVerifyAns is never fragmented"
        );
    }

    /// EU868 DR0 (N = 51 both ways): U1 PubKeyReq → P0; U2 C=0 + KeyChangeReq → P1;
    /// U3 C=1 → P2 + SigVerifyAns; the JoinRequest: four uplinks, the §9.1 schedule, and
    /// 9863.2 ms of device air time.
    #[test]
    fn eu868_dr0_is_the_pipelined_schedule() {
        let f = floor(Region::Eu868, 0);
        assert_eq!(f.cost.uplinks, 4);
        assert_eq!(f.cost.downlinks, 4);
        assert_eq!(
            f.rounds.iter().map(|r| r.1).collect::<Vec<_>>(),
            [Some(51), Some(51), Some(51)]
        );
        assert_eq!(f.rounds.iter().map(|r| r.0).sum::<usize>(), 152);
        assert_eq!(
            f.describe(),
            "51→51 ×2, 50→51, JoinRequest→JoinAccept",
            "KeyChangeReq rides with one SigVerifyReq"
        );
        assert_eq!(f.cost.uplink_phy_bytes, 214);
        assert!((f.cost.device_toa_us as i64 - 9_863_168).abs() < 10);
    }

    /// US915 DR0 (11 up, 242 down): 7 uplinks for the PubKeyReq (at most 8 of its bytes per
    /// frame), P0 in the seventh's window; 13 uplinks for SIG_D (100 bytes, at most 8 per frame);
    /// the rest of PubKeyAns and SigVerifyAns in the last one's window; the JoinRequest: 21.
    #[test]
    fn us915_dr0_takes_21_uplinks() {
        let f = floor(Region::Us915, 0);
        assert_eq!(f.cost.uplinks, 21);
        assert_eq!(f.cost.downlinks, 3);
        let answered: Vec<usize> = (0..f.rounds.len())
            .filter(|&i| f.rounds[i].1.is_some())
            .collect();
        assert_eq!(
            answered,
            [6, 19],
            "the 7th and the 20th uplink are answered"
        );
        assert!(f.rounds.iter().all(|r| r.0 > 0), "no empty uplink");
    }

    /// AS923 with dwell time (11 both ways): the PubKeyReq in 7 uplinks; P0 in 7 downlinks (the
    /// first in the seventh uplink's window, six more in windows of uplinks that carry at most the
    /// KeyChangeReq); SIG_D in 13 uplinks while P1 and P2 stream down; after SIG_D the end of P2
    /// (3 + 8 bytes) and SigVerifyAns (2) need two downlinks, so one more empty uplink; the
    /// JoinRequest: 28.
    #[test]
    fn as923_dwell_dr2_takes_28_uplinks() {
        let f = floor(Region::As923 { dwell_time: true }, 2);
        assert_eq!(f.cost.uplinks, 28);
        assert_eq!(f.rounds.len(), 27);
        assert!(
            f.rounds[..6].iter().all(|r| r.1.is_none()),
            "nothing before the PubKeyReq"
        );
        assert!(
            f.rounds[6].1.is_some(),
            "P0 starts in the seventh uplink's window"
        );
        assert!(f.rounds[7..13].iter().all(|r| r.0 <= 1 && r.1.is_some()));
        assert_eq!(f.rounds[26].0, 0, "an empty uplink for the last downlink");
        assert_eq!(
            f.cost.downlinks, 21,
            "20 FPort-1 downlinks and the JoinAccept"
        );
    }

    /// Where N ≥ 222 the floor is the §11.6 schedule: three uplinks.
    #[test]
    fn n222_takes_three_uplinks() {
        for (region, dr) in [(Region::Eu868, 5), (Region::Us915, 3)] {
            assert_eq!(floor(region, dr).cost.uplinks, 3, "{}", region.name());
        }
    }

    /// The schedule with the fewest uplinks also has the least device air time and the fewest
    /// downlinks of any schedule, so the floor row is a minimum in each of its columns; searching
    /// for the least air time first never finds fewer uplinks.
    #[test]
    fn the_floor_is_least_in_uplinks_air_time_and_downlinks() {
        for (region, dr) in [
            (Region::Eu868, 0),
            (Region::Eu868, 3),
            (Region::Us915, 0),
            (Region::As923 { dwell_time: true }, 2),
        ] {
            let link = Link::new(region, dr).unwrap();
            let by_uplinks = best_schedule(&link, Objective::Uplinks).unwrap();
            let by_air = best_schedule(&link, Objective::AirTime).unwrap();
            assert!(by_air.cost.device_toa_us <= by_uplinks.cost.device_toa_us);
            assert!(by_air.cost.uplinks >= by_uplinks.cost.uplinks);
            assert!(
                causal_floor(region, dr).is_some(),
                "{} DR{dr}",
                region.name()
            );
        }
    }
}
