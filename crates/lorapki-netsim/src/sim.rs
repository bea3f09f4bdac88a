//! The discrete-event loop: devices on the air, loss on the air, the gateway and the network
//! server, deterministic from one seed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::device::{AirDevice, RadioContext};
use crate::duty::DutyCycle;
use crate::ns::{Application, Downlink, Faults, NetworkServer, Uplink};
use crate::region::{JOIN_ACCEPT_DELAY2_MS, RECEIVE_DELAY2_MS, Region};
use crate::rng::SimRng;

/// Air-side counters of one device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AirStats {
    /// Uplinks transmitted (JoinRequests included).
    pub uplinks: u32,
    /// JoinRequests transmitted.
    pub join_requests: u32,
    /// Uplinks lost on the air.
    pub uplinks_lost: u32,
    /// Downlinks the gateway transmitted to the device (JoinAccepts included).
    pub downlinks: u32,
    /// Downlinks lost on the air.
    pub downlinks_lost: u32,
    /// PHY bytes transmitted by the device.
    pub uplink_phy_bytes: u64,
    /// PHY bytes transmitted by the gateway for the device.
    pub downlink_phy_bytes: u64,
    /// The device's time on air (µs).
    pub device_toa_us: u64,
    /// The gateway's time on air for the device (µs).
    pub gateway_toa_us: u64,
    /// Uplinks the radio had to defer because the device ignored its duty cycle.
    pub deferred: u32,
    /// Uplinks longer than the region's dwell time.
    pub dwell_violations: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Tick,
    Wake(usize),
    UplinkEnd(usize),
    RxDone(usize),
}

#[derive(Default)]
struct Slot {
    duty: DutyCycle,
    stats: AirStats,
    wake_at: Option<u64>,
    busy: bool,
    uplink: Option<Uplink>,
    downlink: Option<Downlink>,
}

/// How the air behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimConfig {
    /// Seed of every random decision of the air (loss) and of the network's faults.
    pub seed: u64,
    /// Loss probabilities per direction (duplication and reordering are the network server's).
    pub faults: Faults,
    /// Gateways; device `i` is heard by gateway `i % gateways` (each has its own duty cycle).
    pub gateways: usize,
    /// Period of the application's timers (µs).
    pub tick_us: u64,
    /// The simulation stops at this time (µs).
    pub end_us: u64,
}

impl SimConfig {
    /// No loss, one gateway, a 60 s tick, 30 days at most.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            faults: Faults::none(),
            gateways: 1,
            tick_us: 60_000_000,
            end_us: 30 * 24 * 3600 * 1_000_000,
        }
    }
}

/// A simulation: devices `D` on the air of one region, a network server in front of `A`.
pub struct Simulation<A, D> {
    config: SimConfig,
    region: Region,
    now_us: u64,
    /// The network side.
    pub ns: NetworkServer<A>,
    devices: Vec<D>,
    slots: Vec<Slot>,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    rng: SimRng,
    events: u64,
    trace: Option<Vec<String>>,
}

impl<A: Application, D: AirDevice> Simulation<A, D> {
    /// A simulation over `ns` (whose region it uses).
    pub fn new(config: SimConfig, ns: NetworkServer<A>) -> Self {
        let region = ns.region();
        let mut sim = Self {
            config,
            region,
            now_us: 0,
            ns,
            devices: Vec::new(),
            slots: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            rng: SimRng::derive(config.seed, 0xa1),
            events: 0,
            trace: None,
        };
        sim.push(config.tick_us, Event::Tick);
        sim
    }

    /// Adds a device; returns its index.
    pub fn add_device(&mut self, device: D) -> usize {
        let index = self.devices.len();
        let wake = device.next_wakeup();
        self.devices.push(device);
        self.slots.push(Slot::default());
        self.set_wake(index, wake);
        index
    }

    /// The devices.
    #[must_use]
    pub fn devices(&self) -> &[D] {
        &self.devices
    }

    /// The air counters of device `index`.
    #[must_use]
    pub fn stats(&self, index: usize) -> &AirStats {
        &self.slots[index].stats
    }

    /// Now (µs).
    #[must_use]
    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    /// Events processed so far.
    #[must_use]
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Records a line per frame from now on (see [`Self::trace`]).
    pub fn enable_trace(&mut self) {
        self.trace = Some(Vec::new());
    }

    /// The frames seen so far, one line each, if tracing is on.
    #[must_use]
    pub fn trace(&self) -> &[String] {
        self.trace.as_deref().unwrap_or(&[])
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = self.trace.as_mut() {
            trace.push(line());
        }
    }

    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, event)));
    }

    fn set_wake(&mut self, index: usize, wake: Option<u64>) {
        let slot = &mut self.slots[index];
        slot.wake_at = wake.map(|w| w.max(self.now_us));
        if let Some(at) = slot.wake_at {
            self.push(at, Event::Wake(index));
        }
    }

    /// Runs until no device has anything left to do, or `end_us`; returns the end time.
    pub fn run(&mut self) -> u64 {
        self.run_until(|_| false)
    }

    /// Runs until `stop` says so after a device event, nothing is left, or `end_us`.
    pub fn run_until(&mut self, mut stop: impl FnMut(&Self) -> bool) -> u64 {
        while let Some(Reverse((at, _, event))) = self.queue.pop() {
            if at > self.config.end_us {
                break;
            }
            self.now_us = at;
            self.events += 1;
            match event {
                Event::Tick => {
                    self.ns.tick(at);
                    // Keep ticking while anything else is scheduled.
                    if !self.queue.is_empty() {
                        self.push(at + self.config.tick_us, Event::Tick);
                    }
                    continue;
                }
                Event::Wake(i) => self.wake(i, at),
                Event::UplinkEnd(i) => self.uplink_end(i, at),
                Event::RxDone(i) => self.rx_done(i, at),
            }
            if stop(self) {
                break;
            }
        }
        self.now_us
    }

    fn wake(&mut self, i: usize, at: u64) {
        let slot = &self.slots[i];
        if slot.busy || slot.wake_at != Some(at) {
            return; // stale
        }
        let ctx = RadioContext::new(at, self.region, &self.slots[i].duty);
        let Some(uplink) = self.devices[i].poll_uplink(&ctx) else {
            let next = self.devices[i].next_wakeup();
            let next = next.map(|n| if n <= at { at + 1_000_000 } else { n });
            self.set_wake(i, next);
            return;
        };
        let slot = &mut self.slots[i];
        let free = slot.duty.free_at(self.region, uplink.frequency_hz);
        let start = at.max(free);
        if free > at {
            slot.stats.deferred += 1;
        }
        let Some(rate) = self.region.uplink_data_rate(uplink.data_rate) else {
            self.set_wake(i, self.devices[i].next_wakeup());
            return;
        };
        let toa = rate.time_on_air_us(uplink.phy.len(), true);
        slot.duty
            .record(self.region, uplink.frequency_hz, start, toa);
        slot.stats.uplinks += 1;
        if crate::mac::is_join_request(&uplink.phy) {
            slot.stats.join_requests += 1;
        }
        slot.stats.uplink_phy_bytes += uplink.phy.len() as u64;
        slot.stats.device_toa_us += toa;
        if self.region.max_dwell_ms().is_some_and(|d| toa > d * 1000) {
            slot.stats.dwell_violations += 1;
        }
        slot.busy = true;
        slot.wake_at = None;
        let len = uplink.phy.len();
        let kind = if crate::mac::is_join_request(&uplink.phy) {
            "JoinRequest"
        } else {
            "data"
        };
        slot.uplink = Some(uplink);
        self.push(start + toa, Event::UplinkEnd(i));
        self.log(|| {
            format!(
                "{:>12.3}s dev {i} UP   {kind} {len} B, {:.1} ms",
                start as f64 / 1e6,
                toa as f64 / 1e3
            )
        });
    }

    fn uplink_end(&mut self, i: usize, at: u64) {
        let Some(uplink) = self.slots[i].uplink.take() else {
            return;
        };
        let join = crate::mac::is_join_request(&uplink.phy);
        let lost = self.rng.chance(self.config.faults.uplink.loss);
        let mut done_at = at
            + 1000
                * if join {
                    JOIN_ACCEPT_DELAY2_MS
                } else {
                    RECEIVE_DELAY2_MS
                };
        // The end of an empty RX2: the preamble detection time-out, a few symbols.
        done_at += 50_000;
        let mut delivered = None;
        if lost {
            self.log(|| format!("{:>12.3}s dev {i} uplink lost", at as f64 / 1e6));
            self.slots[i].stats.uplinks_lost += 1;
        } else if let Some(downlink) =
            self.ns
                .handle_uplink(at, i % self.config.gateways.max(1), &uplink)
        {
            let slot = &mut self.slots[i];
            slot.stats.downlinks += 1;
            slot.stats.downlink_phy_bytes += downlink.phy.len() as u64;
            slot.stats.gateway_toa_us += downlink.toa_us;
            let line = format!(
                "{:>12.3}s dev {i} DOWN {:?} {} B{}",
                downlink.start_us as f64 / 1e6,
                downlink.window,
                downlink.phy.len(),
                if downlink.fport1 { " (FPort 1)" } else { "" }
            );
            if self.rng.chance(self.config.faults.downlink.loss) {
                slot.stats.downlinks_lost += 1;
                self.log(|| format!("{line} lost"));
            } else {
                self.log(|| line);
                done_at = downlink.start_us + downlink.toa_us;
                delivered = Some(downlink);
            }
        }
        self.slots[i].downlink = delivered;
        self.push(done_at, Event::RxDone(i));
    }

    fn rx_done(&mut self, i: usize, at: u64) {
        let downlink = self.slots[i].downlink.take();
        self.slots[i].busy = false;
        self.devices[i].handle_rx(at, downlink.as_ref());
        let next = self.devices[i].next_wakeup();
        self.set_wake(i, next);
    }
}
