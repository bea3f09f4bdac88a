//! Ready-made scenarios: one lorapki server, its join server and network server, and a fleet of
//! light devices, all derived from one seed; plus the acceptance checks over the outcome.

use lorapki_crypto::{KeyImport, PublicKey, RootKeySlot, Secret};
use lorapki_proto::{DeviceRecord, Duration, LorawanVersion, ServerConfig, ServerEndpoint};

use crate::device::{
    AirDevice, DeviceReport, DeviceSetup, EndDevice, Exchange, IDENTITY_SLOT, Phase,
    device_backend, device_config,
};
use crate::ns::{AnswerModel, Faults, NetworkServer, NsConfig, PkiServer};
use crate::region::Region;
use crate::rng::{Backend, SeededRng, SimRng};
use crate::sim::{AirStats, SimConfig, Simulation};

/// Which device-side strategy runs the exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// `lorapki_proto::DeviceSession`: pipelined and concatenated (PROTOCOL.md §6, §9).
    Pipelined,
    /// The original design's message order, one request per uplink, each waiting for its answer (§9.5).
    Naive,
}

/// A simulated device as the scenarios use it: on the air, and observable.
pub trait SimDevice: AirDevice {
    /// What the device did.
    fn report(&self) -> &DeviceReport;
    /// Where it is.
    fn phase(&self) -> Phase;
    /// AES-CMAC of `message` under its root key in `slot`, if that slot holds one.
    fn key_cmac(&self, slot: RootKeySlot, message: &[u8]) -> Option<[u8; 16]>;
}

impl<X: Exchange> SimDevice for EndDevice<X> {
    fn report(&self) -> &DeviceReport {
        EndDevice::report(self)
    }
    fn phase(&self) -> Phase {
        EndDevice::phase(self)
    }
    fn key_cmac(&self, slot: RootKeySlot, message: &[u8]) -> Option<[u8; 16]> {
        EndDevice::key_cmac(self, slot, message)
    }
}

/// A scenario.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scenario {
    /// The seed everything derives from.
    pub seed: u64,
    /// Region.
    pub region: Region,
    /// Uplink data rate of every device.
    pub data_rate: u8,
    /// The network server's answer model.
    pub model: AnswerModel,
    /// Faults (loss on the air; duplication and reordering in the integration).
    pub faults: Faults,
    /// Device strategy.
    pub strategy: Strategy,
    /// Number of devices.
    pub devices: usize,
    /// Devices power up uniformly over this span (µs).
    pub start_spread_us: u64,
    /// Gateways (each device is heard by one; each has its own duty cycle). `0`: one per device.
    pub gateways: usize,
    /// The device's retransmit interval (PROTOCOL.md §6.3; default 30 s).
    pub retransmit_interval: Duration,
    /// Runs each device may start (the retry budget).
    pub max_runs: u32,
    /// Simulated time limit (µs).
    pub end_us: u64,
}

impl Scenario {
    /// One device, no faults, one gateway.
    #[must_use]
    pub fn single(region: Region, data_rate: u8, model: AnswerModel, strategy: Strategy) -> Self {
        Self {
            seed: 7,
            region,
            data_rate,
            model,
            faults: Faults::none(),
            strategy,
            devices: 1,
            start_spread_us: 0,
            gateways: 1,
            retransmit_interval: Duration::from_secs(30),
            max_runs: 3,
            end_us: 30 * 24 * 3600 * 1_000_000,
        }
    }
}

/// The DevEUI of device `i`.
#[must_use]
pub fn dev_eui(i: usize) -> [u8; 8] {
    let mut eui = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0, 0, 0];
    eui[4..].copy_from_slice(&(0xd000_0000u32 | i as u32).to_be_bytes());
    eui
}

/// A server backend whose signing key is derived from `seed` (the same key in every shard) and
/// whose RNG is its own per `stream`.
///
/// # Errors
///
/// Backend failures.
pub fn server_backend(seed: u64, stream: u64) -> lorapki_crypto::Result<(Backend, PublicKey)> {
    let mut backend = Backend::new(SeededRng::from_seed(
        SimRng::derive(seed, stream).next_u64(),
    ));
    let mut rng = SimRng::derive(seed, 0x5e);
    loop {
        let mut scalar = [0u8; 48];
        for chunk in scalar.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_be_bytes());
        }
        if let Ok(public) = backend.identity_import(IDENTITY_SLOT, &Secret::from_array(scalar)) {
            return Ok((backend, public));
        }
    }
}

/// Builds the simulation of `scenario` for the devices `indices`.
///
/// # Errors
///
/// Crypto or key-store failures while setting up.
pub fn build(
    scenario: &Scenario,
    indices: impl IntoIterator<Item = usize>,
    stream: u64,
) -> Result<Simulation<PkiServer, Box<dyn SimDevice>>, lorapki_proto::Error> {
    let (mut backend, server_public) = server_backend(scenario.seed, stream)?;
    let endpoint = ServerEndpoint::new(
        &mut backend,
        ServerConfig::new(IDENTITY_SLOT, server_public),
    );
    let mut pki = PkiServer::new(endpoint, backend);
    let mut ns_config = NsConfig::new(scenario.model);
    ns_config.faults = scenario.faults;
    ns_config.seed = SimRng::derive(scenario.seed, 0xc0 + stream).next_u64();
    let indices: Vec<usize> = indices.into_iter().collect();
    let gateways = if scenario.gateways == 0 {
        indices.len().max(1)
    } else {
        scenario.gateways
    };
    let mut devices: Vec<Box<dyn SimDevice>> = Vec::with_capacity(indices.len());
    let mut placement = SimRng::derive(scenario.seed, 0x57a7);
    let mut starts = Vec::new();
    for _ in 0..=indices.iter().max().copied().unwrap_or(0) {
        starts.push(placement.below(scenario.start_spread_us.max(1)));
    }
    let mut factory = Vec::new();
    for &i in &indices {
        let seed = SimRng::derive(scenario.seed, 1_000 + i as u64).next_u64();
        let mut setup = DeviceSetup::new(dev_eui(i), scenario.region, scenario.data_rate, seed);
        setup.start_us = starts[i];
        setup.max_runs = scenario.max_runs;
        let mut key_rng = SimRng::derive(seed, 0x6b);
        for chunk in setup.factory_key.chunks_mut(8) {
            chunk.copy_from_slice(&key_rng.next_u64().to_be_bytes());
        }
        let (device_backend, identity) = device_backend(seed, IDENTITY_SLOT)?;
        let mut config = device_config(&setup, server_public);
        config.retransmit_interval = scenario.retransmit_interval;
        pki.register(DeviceRecord {
            dev_eui: setup.dev_eui,
            join_eui: setup.join_eui,
            lorawan: LorawanVersion::V1_0,
            identity,
        });
        factory.push((setup.dev_eui, setup.join_eui, setup.factory_key));
        let device: Box<dyn SimDevice> = match scenario.strategy {
            Strategy::Pipelined => Box::new(EndDevice::pipelined(setup, device_backend, config)?),
            Strategy::Naive => Box::new(EndDevice::naive(setup, device_backend, config)?),
        };
        devices.push(device);
    }
    let mut ns = NetworkServer::new(scenario.region, ns_config, pki, gateways);
    for (dev_eui, join_eui, key) in factory {
        ns.join_server
            .provision(dev_eui, join_eui, lorapki_crypto::AesKey::from_array(key));
    }
    let mut sim_config = SimConfig::new(SimRng::derive(scenario.seed, 0xa0 + stream).next_u64());
    sim_config.faults = scenario.faults;
    sim_config.gateways = gateways;
    sim_config.end_us = scenario.end_us;
    let mut sim = Simulation::new(sim_config, ns);
    for device in devices {
        sim.add_device(device);
    }
    Ok(sim)
}

/// The outcome of one device, checked against the join server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceOutcome {
    /// The device's report.
    pub report: DeviceReport,
    /// Its air counters.
    pub air: AirStats,
    /// The device completed the rekey (JoinAccept under the new key).
    pub device_completed: bool,
    /// The server side completed too: the join server's active key is the device's active key,
    /// nothing is staged, and it is not the factory key.
    pub agreed: bool,
    /// The device holds a key (active or staged) that the join server accepts.
    pub holds_accepted_key: bool,
    /// Where the device ended.
    pub phase: Phase,
}

/// Checks every device of `sim` against its join server.
pub fn outcomes(sim: &Simulation<PkiServer, Box<dyn SimDevice>>) -> Vec<DeviceOutcome> {
    let probe = b"lorapki-netsim key probe";
    let js = &sim.ns.join_server;
    sim.devices()
        .iter()
        .enumerate()
        .map(|(i, device)| {
            let eui = device.dev_eui();
            let js_active = js.key_cmac(&eui, RootKeySlot::Active, probe);
            let js_staged = js.key_cmac(&eui, RootKeySlot::Staged, probe);
            let dev_active = device.key_cmac(RootKeySlot::Active, probe);
            let dev_staged = device.key_cmac(RootKeySlot::Staged, probe);
            let accepted = |k: Option<[u8; 16]>| k.is_some() && (k == js_active || k == js_staged);
            let completed = device.report().completed_us.is_some();
            let key_changed = device.report().completed_us.is_some();
            DeviceOutcome {
                report: device.report().clone(),
                air: sim.stats(i).clone(),
                device_completed: completed,
                agreed: key_changed
                    && dev_active.is_some()
                    && dev_active == js_active
                    && js_staged.is_none(),
                holds_accepted_key: accepted(dev_active) || accepted(dev_staged),
                phase: device.phase(),
            }
        })
        .collect()
}

/// A fleet's result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetSummary {
    /// Devices simulated.
    pub devices: usize,
    /// Devices whose rekey completed on both sides with the same key.
    pub finished: usize,
    /// Devices that completed on their side.
    pub device_completed: usize,
    /// Devices that completed on their side but whose server side did not (yet) switch.
    pub server_pending: usize,
    /// Devices holding no key the join server accepts (must be 0).
    pub without_accepted_key: usize,
    /// Completed devices whose active key differs from the join server's (must be 0).
    pub disagreements: usize,
    /// Devices that spent their retry budget.
    pub gave_up: usize,
    /// Faults the devices recorded (failed exchange calls and key-store writes; must be 0).
    pub device_errors: u64,
    /// Runs started, summed.
    pub runs: u64,
    /// Failed runs, summed.
    pub failed_runs: u64,
    /// Failed runs by reason (`Debug` form of the `FailReason`).
    pub failure_reasons: std::collections::BTreeMap<String, u64>,
    /// Uplinks (JoinRequests included), summed.
    pub uplinks: u64,
    /// Simulated end (µs).
    pub end_us: u64,
    /// The slowest completion after the first join (µs).
    pub slowest_us: u64,
}

impl FleetSummary {
    /// Adds a shard's outcomes.
    pub fn add(&mut self, outcomes: &[DeviceOutcome], end_us: u64) {
        for o in outcomes {
            self.devices += 1;
            self.finished += usize::from(o.agreed);
            self.device_completed += usize::from(o.device_completed);
            self.server_pending += usize::from(o.device_completed && !o.agreed);
            self.without_accepted_key += usize::from(!o.holds_accepted_key);
            self.gave_up += usize::from(o.phase == Phase::GaveUp);
            self.device_errors += o.report.errors.len() as u64;
            self.runs += u64::from(o.report.runs);
            self.failed_runs += o.report.failures.len() as u64;
            for reason in &o.report.failures {
                *self
                    .failure_reasons
                    .entry(format!("{reason:?}"))
                    .or_default() += 1;
            }
            self.uplinks += u64::from(o.air.uplinks);
            if let (Some(c), Some(j)) = (o.report.completed_us, o.report.joined_us) {
                self.slowest_us = self.slowest_us.max(c - j);
            }
        }
        self.disagreements = self.server_pending;
        self.end_us = self.end_us.max(end_us);
    }

    /// Finished share in percent.
    #[must_use]
    pub fn finished_percent(&self) -> f64 {
        if self.devices == 0 {
            0.0
        } else {
            100.0 * self.finished as f64 / self.devices as f64
        }
    }
}

/// Runs a fleet scenario split over `shards` threads (each shard: its own server endpoint with
/// the same signing key, its own network server; devices `i ≡ s (mod shards)`).
///
/// # Errors
///
/// Set-up failures.
pub fn run_fleet(scenario: &Scenario, shards: usize) -> Result<FleetSummary, lorapki_proto::Error> {
    let shards = shards.max(1);
    let results: Vec<Result<(Vec<DeviceOutcome>, u64), lorapki_proto::Error>> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..shards)
                .map(|s| {
                    scope.spawn(move || {
                        let indices = (s..scenario.devices).step_by(shards);
                        let mut sim = build(scenario, indices, s as u64)?;
                        let end = sim.run();
                        Ok((outcomes(&sim), end))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Err(lorapki_proto::Error::InvalidState)))
                .collect()
        });
    let mut summary = FleetSummary::default();
    for result in results {
        let (outcomes, end) = result?;
        summary.add(&outcomes, end);
    }
    Ok(summary)
}

/// What one rekey cost on the air, from the first FPort-1 uplink to the JoinAccept under the new
/// key (the first join under the factory key and the later confirmation uplink excluded).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RekeyCost {
    /// Whether the rekey completed.
    pub completed: bool,
    /// Uplinks, the rejoin's JoinRequest(s) included.
    pub uplinks: u32,
    /// JoinRequests among them.
    pub join_requests: u32,
    /// Downlinks the gateway sent (FPort 1, acknowledgements and the JoinAccept).
    pub downlinks: u32,
    /// FPort-1 downlinks among them.
    pub fport1_downlinks: u32,
    /// PHY bytes sent by the device.
    pub uplink_phy_bytes: u64,
    /// PHY bytes sent by the gateway.
    pub downlink_phy_bytes: u64,
    /// FPort-1 FRMPayload bytes sent by the device / by the server.
    pub fport1_bytes_up: u32,
    /// FPort-1 FRMPayload bytes sent by the server.
    pub fport1_bytes_down: u32,
    /// The device's time on air (µs).
    pub device_toa_us: u64,
    /// Wall-clock time (µs) from the start of the first FPort-1 uplink to the end of the
    /// JoinAccept under the new key, under the duty-cycle limits.
    pub wall_us: u64,
}

/// Runs `scenario` with one device and measures its rekey.
///
/// # Errors
///
/// Set-up failures.
pub fn measure_rekey(scenario: &Scenario) -> Result<RekeyCost, lorapki_proto::Error> {
    let mut one = *scenario;
    one.devices = 1;
    let mut sim = build(&one, 0..1, 0)?;
    sim.run_until(|s| s.devices()[0].report().joined_us.is_some());
    let before = sim.stats(0).clone();
    let report_before = sim.devices()[0].report().clone();
    sim.run_until(|s| s.devices()[0].report().completed_us.is_some());
    let after = sim.stats(0);
    let report = sim.devices()[0].report();
    let fport1_downlinks = report.fport1_downlinks - report_before.fport1_downlinks;
    Ok(RekeyCost {
        completed: report.completed_us.is_some(),
        uplinks: after.uplinks - before.uplinks,
        join_requests: after.join_requests - before.join_requests,
        downlinks: after.downlinks - before.downlinks,
        fport1_downlinks,
        uplink_phy_bytes: after.uplink_phy_bytes - before.uplink_phy_bytes,
        downlink_phy_bytes: after.downlink_phy_bytes - before.downlink_phy_bytes,
        fport1_bytes_up: report.fport1_bytes_up - report_before.fport1_bytes_up,
        fport1_bytes_down: report.fport1_bytes_down - report_before.fport1_bytes_down,
        device_toa_us: after.device_toa_us - before.device_toa_us,
        wall_us: match (report.completed_us, report.first_fport1_us) {
            (Some(end), Some(start)) => end - start,
            _ => 0,
        },
    })
}

/// The least any rekey of this suite can cost at `region`/`data_rate`: the device sends only its
/// ephemeral key and signature (145 B) in full frames, then one JoinRequest; the server likewise
/// 145 B in full downlinks, then the JoinAccept. The wall clock assumes every uplink's answer
/// fits its RX1 window and the device transmits as soon as its duty cycle allows.
#[must_use]
pub fn floor_cost(region: Region, data_rate: u8) -> Option<RekeyCost> {
    use crate::region::{
        DATA_FRAME_OVERHEAD, JOIN_ACCEPT_DELAY1_MS, JOIN_ACCEPT_LEN, JOIN_REQUEST_LEN,
        RECEIVE_DELAY1_MS,
    };
    const FLOOR_BYTES: usize = 49 + 96;
    let up = region.uplink_data_rate(data_rate)?;
    let down = region.downlink_data_rate(region.rx1_data_rate(data_rate))?;
    let frames = |n: usize| -> Vec<usize> {
        let mut left = FLOOR_BYTES;
        let mut out = Vec::new();
        while left > 0 {
            let take = left.min(n);
            out.push(take + DATA_FRAME_OVERHEAD);
            left -= take;
        }
        out
    };
    let ups = frames(up.max_payload);
    let downs = frames(down.max_payload);
    let divisor = region
        .sub_band(region.uplink_channels()[0])
        .map_or(1, |b| u64::from(b.divisor));
    let mut wall = 0u64;
    let mut toa_total = 0u64;
    for (k, len) in ups.iter().enumerate() {
        let toa = up.time_on_air_us(*len, true);
        toa_total += toa;
        let answer = downs.get(k).map_or(0, |d| down.time_on_air_us(*d, false));
        wall += (toa + RECEIVE_DELAY1_MS * 1000 + answer).max(toa * divisor);
    }
    let join_toa = up.time_on_air_us(JOIN_REQUEST_LEN, true);
    toa_total += join_toa;
    wall += join_toa + JOIN_ACCEPT_DELAY1_MS * 1000 + down.time_on_air_us(JOIN_ACCEPT_LEN, false);
    Some(RekeyCost {
        completed: true,
        uplinks: ups.len() as u32 + 1,
        join_requests: 1,
        downlinks: downs.len() as u32 + 1,
        fport1_downlinks: downs.len() as u32,
        uplink_phy_bytes: (ups.iter().sum::<usize>() + JOIN_REQUEST_LEN) as u64,
        downlink_phy_bytes: (downs.iter().sum::<usize>() + JOIN_ACCEPT_LEN) as u64,
        fport1_bytes_up: FLOOR_BYTES as u32,
        fport1_bytes_down: FLOOR_BYTES as u32,
        device_toa_us: toa_total,
        wall_us: wall,
    })
}
