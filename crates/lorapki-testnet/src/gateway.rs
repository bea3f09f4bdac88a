//! A virtual gateway: netsim's air in front of a real network server, through ChirpStack's
//! gateway MQTT protocol (protobuf `gw.UplinkFrame` on `{prefix}/gateway/{id}/event/up`,
//! `gw.DownlinkFrame` on `.../command/down`, `gw.DownlinkTxAck` on `.../event/ack`).
//!
//! Time. Between an uplink and the end of its receive windows the air runs in real time: that is
//! where the network server's own delays (deduplication, `get_downlink_data_delay`, the join
//! server's answer) decide which window a downlink makes. Whenever no device waits for a window,
//! the virtual clock jumps to the next device's wake-up (duty cycle, back-off, retransmission
//! intervals): the network server never sees those waits, only their results.
//!
//! The gateway behaves as a real one: each `DownlinkFrame` item is tried in order (RX1, then
//! RX2) and the first one it can transmit is sent; an item is `TOO_LATE` when it arrives less
//! than [`GatewayConfig::lead_us`] before its transmission time, `DUTY_CYCLE_OVERFLOW` when the
//! gateway's own duty cycle (EU868: 1 % on RX1's sub-band, 10 % on RX2's) forbids it, and
//! `COLLISION_PACKET` when it overlaps a downlink already scheduled. The `DownlinkTxAck` reports
//! every item's status. Loss in each direction is drawn from the seeded generator.

use std::collections::HashMap;
use std::time::{Duration, Instant as RealInstant};

use chirpstack_api::gw;
use chirpstack_api::prost::Message;
use lorapki_netsim::device::{AirDevice, RadioContext};
use lorapki_netsim::duty::DutyCycle;
use lorapki_netsim::ns::{Downlink, RxWindow, Uplink};
use lorapki_netsim::region::{JOIN_REQUEST_LEN, Region};
use lorapki_netsim::rng::SimRng;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// RECEIVE_DELAY1 / 2 and JOIN_ACCEPT_DELAY1 / 2 (LoRaWAN defaults, and ChirpStack's).
const RX1_DELAY_US: u64 = 1_000_000;
const JOIN_RX1_DELAY_US: u64 = 5_000_000;
const RX2_AFTER_RX1_US: u64 = 1_000_000;

/// One virtual gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The MQTT broker of the network server's gateway backend.
    pub broker_host: String,
    /// Its port.
    pub broker_port: u16,
    /// The region's topic prefix in the network server (ChirpStack: the region's
    /// `[regions.gateway.backend.mqtt] topic_prefix`, e.g. `eu868`).
    pub topic_prefix: String,
    /// The gateway ID (EUI-64), as registered at the network server.
    pub gateway_id: [u8; 8],
    /// The channel plan.
    pub region: Region,
    /// Probability that an uplink is lost on the air.
    pub uplink_loss: f64,
    /// Probability that a downlink is lost on the air.
    pub downlink_loss: f64,
    /// How long before its transmission time the gateway must hold a downlink (µs).
    pub lead_us: u64,
    /// Seed of the loss draws.
    pub seed: u64,
}

impl GatewayConfig {
    /// A loss-free gateway in `region` on the broker at `host:port`.
    #[must_use]
    pub fn new(
        host: &str,
        port: u16,
        topic_prefix: &str,
        gateway_id: [u8; 8],
        region: Region,
    ) -> Self {
        Self {
            broker_host: host.to_owned(),
            broker_port: port,
            topic_prefix: topic_prefix.to_owned(),
            gateway_id,
            region,
            uplink_loss: 0.0,
            downlink_loss: 0.0,
            lead_us: 20_000,
            seed: 1,
        }
    }

    fn id(&self) -> String {
        hex::encode(self.gateway_id)
    }

    fn topic(&self, rest: &str) -> String {
        format!("{}/gateway/{}/{rest}", self.topic_prefix, self.id())
    }
}

/// What the gateway saw, for the report.
#[derive(Clone, Debug, Default)]
pub struct GatewayStats {
    /// Uplinks the devices sent / that reached the network server.
    pub uplinks_sent: u32,
    pub uplinks_delivered: u32,
    /// Downlinks transmitted in RX1 / RX2.
    pub rx1: u32,
    pub rx2: u32,
    /// Downlinks the gateway transmitted but the air lost.
    pub downlinks_lost: u32,
    /// `DownlinkTxAck` item statuses other than OK and IGNORED, by name.
    pub refused: HashMap<&'static str, u32>,
    /// `DownlinkFrame`s for an uplink whose windows were over.
    pub stale_frames: u32,
    /// For each uplink that got a `DownlinkFrame`: real ms from publishing the uplink to
    /// receiving the frame, and whether it was a JoinRequest.
    pub answer_ms: Vec<(f64, bool)>,
}

impl GatewayStats {
    fn refuse(&mut self, status: gw::TxAckStatus) {
        *self.refused.entry(status.as_str_name()).or_default() += 1;
    }
}

/// An uplink whose receive windows are not over yet.
struct InFlight {
    device: usize,
    uplink: Uplink,
    /// Virtual time of the end of the transmission (the MAC's TxDone).
    at_us: u64,
    rx1_delay_us: u64,
    published: Option<RealInstant>,
    /// A `DownlinkFrame` for it arrived (its latency is in the stats).
    answered: bool,
    downlink: Option<Downlink>,
}

impl InFlight {
    fn done_us(&self) -> u64 {
        // After RX2 (and a margin for the MAC's window).
        self.at_us + self.rx1_delay_us + RX2_AFTER_RX1_US + 100_000
    }
}

/// The virtual clock: real time plus the idle time skipped so far.
struct Clock {
    start: RealInstant,
    skipped_us: u64,
}

impl Clock {
    fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap() + self.skipped_us
    }

    fn real_at(&self, virtual_us: u64) -> RealInstant {
        self.start + Duration::from_micros(virtual_us.saturating_sub(self.skipped_us))
    }

    fn skip_to(&mut self, virtual_us: u64) {
        let now = self.now_us();
        if virtual_us > now {
            self.skipped_us += virtual_us - now;
        }
    }
}

/// The air of one virtual gateway and the devices around it.
pub struct Air<D: AirDevice> {
    config: GatewayConfig,
    /// The devices.
    pub devices: Vec<D>,
    duty: Vec<DutyCycle>,
    gateway_duty: DutyCycle,
    /// Downlinks scheduled at the gateway: (start, end) in virtual µs.
    scheduled: Vec<(u64, u64)>,
    in_flight: HashMap<u32, InFlight>,
    busy: Vec<bool>,
    next_token: u32,
    rng: SimRng,
    clock: Clock,
    client: AsyncClient,
    frames: mpsc::UnboundedReceiver<(RealInstant, Vec<u8>)>,
    /// What happened.
    pub stats: GatewayStats,
}

impl<D: AirDevice> Air<D> {
    /// Connects the gateway to the broker and subscribes to its commands.
    ///
    /// # Panics
    ///
    /// If the broker cannot be reached within 10 s.
    pub async fn connect(config: GatewayConfig, devices: Vec<D>) -> Self {
        let mut options = MqttOptions::new(
            format!("vgw-{}", config.id()),
            config.broker_host.clone(),
            config.broker_port,
        );
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(64 * 1024, 64 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        let (tx, frames) = mpsc::unbounded_channel();
        let (ready_tx, mut ready) = mpsc::unbounded_channel();
        let down = config.topic("command/down");
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == down => {
                        if tx.send((RealInstant::now(), p.payload.to_vec())).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        client
            .subscribe(config.topic("command/#"), QoS::AtLeastOnce)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), ready.recv())
            .await
            .expect("the virtual gateway's broker answers")
            .unwrap();
        let n = devices.len();
        Self {
            rng: SimRng::new(config.seed),
            config,
            devices,
            duty: vec![DutyCycle::new(); n],
            gateway_duty: DutyCycle::new(),
            scheduled: Vec::new(),
            in_flight: HashMap::new(),
            busy: vec![false; n],
            next_token: 1,
            clock: Clock {
                start: RealInstant::now(),
                skipped_us: 0,
            },
            client,
            frames,
            stats: GatewayStats::default(),
        }
    }

    /// Virtual time now (µs).
    #[must_use]
    pub fn now_us(&self) -> u64 {
        self.clock.now_us()
    }

    /// Runs until `done` holds for the devices, or `real_limit` of real time has passed, or
    /// no device will ever act again. Returns whether `done` held.
    pub async fn run_until(
        &mut self,
        real_limit: Duration,
        mut done: impl FnMut(&[D]) -> bool,
    ) -> bool {
        let deadline = RealInstant::now() + real_limit;
        loop {
            if done(&self.devices) {
                return true;
            }
            if RealInstant::now() >= deadline {
                return false;
            }
            let now = self.clock.now_us();
            self.finish_windows(now);
            self.poll_devices(now);
            while let Ok((at, frame)) = self.frames.try_recv() {
                self.downlink_frame(at, &frame).await;
            }
            self.publish_uplinks().await;
            // What happens next: a window closes, a device wakes, or a frame arrives.
            let next_done = self.in_flight.values().map(InFlight::done_us).min();
            let next_wake = (0..self.devices.len())
                .filter(|&i| !self.busy[i])
                .filter_map(|i| self.devices[i].next_wakeup())
                .min();
            match (next_done, next_wake) {
                (None, None) => return done(&self.devices),
                (None, Some(wake)) => {
                    // Nobody waits for a window: skip the idle time.
                    self.clock.skip_to(wake);
                }
                (Some(d), w) => {
                    let next = w.map_or(d, |w| w.min(d));
                    let until = self.clock.real_at(next).min(deadline);
                    let sleep = tokio::time::sleep_until(until.into());
                    tokio::select! {
                        () = sleep => {}
                        frame = self.frames.recv() => {
                            if let Some((at, frame)) = frame {
                                self.downlink_frame(at, &frame).await;
                            }
                        }
                    }
                }
            }
        }
    }

    fn poll_devices(&mut self, now: u64) {
        for i in 0..self.devices.len() {
            if self.busy[i] || self.devices[i].next_wakeup().is_none_or(|w| w > now) {
                continue;
            }
            let ctx = RadioContext::new(now, self.config.region, &self.duty[i]);
            let Some(uplink) = self.devices[i].poll_uplink(&ctx) else {
                continue;
            };
            let rate = self
                .config
                .region
                .uplink_data_rate(uplink.data_rate)
                .expect("the device sent on a data rate of its region");
            let toa = rate.time_on_air_us(uplink.phy.len(), true);
            self.duty[i].record(self.config.region, uplink.frequency_hz, now, toa);
            let join = uplink.phy.len() == JOIN_REQUEST_LEN && uplink.phy[0] >> 5 == 0;
            let token = self.next_token;
            self.next_token = self.next_token.wrapping_add(1).max(1);
            self.busy[i] = true;
            self.stats.uplinks_sent += 1;
            self.in_flight.insert(
                token,
                InFlight {
                    device: i,
                    uplink,
                    at_us: now,
                    rx1_delay_us: if join {
                        JOIN_RX1_DELAY_US
                    } else {
                        RX1_DELAY_US
                    },
                    published: None,
                    answered: false,
                    downlink: None,
                },
            );
        }
    }

    async fn publish_uplinks(&mut self) {
        let mut tokens: Vec<u32> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.published.is_none())
            .map(|(t, _)| *t)
            .collect();
        tokens.sort_unstable();
        for token in tokens {
            let lost = self.rng.chance(self.config.uplink_loss);
            let flight = self.in_flight.get_mut(&token).unwrap();
            flight.published = Some(RealInstant::now());
            if lost {
                continue;
            }
            let frame = uplink_frame(&self.config, token, &flight.uplink);
            self.stats.uplinks_delivered += 1;
            self.client
                .publish(
                    self.config.topic("event/up"),
                    QoS::AtMostOnce,
                    false,
                    frame.encode_to_vec(),
                )
                .await
                .unwrap();
        }
    }

    /// The windows of every uplink that are over: the device hears what the gateway sent.
    fn finish_windows(&mut self, now: u64) {
        let mut over: Vec<u32> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.done_us() <= now)
            .map(|(t, _)| *t)
            .collect();
        over.sort_unstable();
        for token in over {
            let flight = self.in_flight.remove(&token).unwrap();
            let done = flight.done_us();
            let heard = flight.downlink.filter(|_| {
                let lost = self.rng.chance(self.config.downlink_loss);
                if lost {
                    self.stats.downlinks_lost += 1;
                }
                !lost
            });
            self.busy[flight.device] = false;
            self.devices[flight.device].handle_rx(done, heard.as_ref());
        }
        self.scheduled.retain(|&(_, end)| end + 10_000_000 > now);
    }

    /// A `DownlinkFrame` from the network server: try its items in order, acknowledge.
    async fn downlink_frame(&mut self, arrived: RealInstant, payload: &[u8]) {
        let Ok(frame) = gw::DownlinkFrame::decode(payload) else {
            return;
        };
        let arrived_us = self.virtual_of(arrived);
        let mut statuses = Vec::with_capacity(frame.items.len());
        let mut sent = false;
        for item in &frame.items {
            if sent {
                statuses.push(gw::TxAckStatus::Ignored);
                continue;
            }
            let status = self.try_item(item, arrived_us);
            if status == gw::TxAckStatus::Ok {
                sent = true;
            } else {
                self.stats.refuse(status);
            }
            statuses.push(status);
        }
        let ack = gw::DownlinkTxAck {
            gateway_id: self.config.id(),
            downlink_id: frame.downlink_id,
            items: statuses
                .into_iter()
                .map(|s| gw::DownlinkTxAckItem { status: s.into() })
                .collect(),
            ..Default::default()
        };
        self.client
            .publish(
                self.config.topic("event/ack"),
                QoS::AtMostOnce,
                false,
                ack.encode_to_vec(),
            )
            .await
            .unwrap();
    }

    fn virtual_of(&self, real: RealInstant) -> u64 {
        u64::try_from(real.saturating_duration_since(self.clock.start).as_micros()).unwrap()
            + self.clock.skipped_us
    }

    fn try_item(&mut self, item: &gw::DownlinkFrameItem, arrived_us: u64) -> gw::TxAckStatus {
        let Some(info) = &item.tx_info else {
            return gw::TxAckStatus::InternalError;
        };
        let Some(token) = info
            .context
            .get(..4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        else {
            return gw::TxAckStatus::InternalError;
        };
        let delay_us = match info.timing.as_ref().and_then(|t| t.parameters.as_ref()) {
            Some(gw::timing::Parameters::Delay(d)) => d.delay.as_ref().map_or(0, |d| {
                u64::try_from(d.seconds).unwrap_or(0) * 1_000_000
                    + u64::try_from(d.nanos).unwrap_or(0) / 1000
            }),
            _ => return gw::TxAckStatus::InternalError,
        };
        let Some(flight) = self.in_flight.get(&token) else {
            self.stats.stale_frames += 1;
            return gw::TxAckStatus::TooLate;
        };
        let Some((sf, bw)) = lora(info.modulation.as_ref()) else {
            return gw::TxAckStatus::TxFreq;
        };
        let region = self.config.region;
        let Some(data_rate) = (0..16).find(|&dr| {
            region
                .downlink_data_rate(dr)
                .is_some_and(|r| u32::from(r.spreading_factor) == sf && r.bandwidth_hz == bw)
        }) else {
            return gw::TxAckStatus::TxFreq;
        };
        let start = flight.at_us + delay_us;
        if !flight.answered {
            let published = flight.published.unwrap_or_else(RealInstant::now);
            let ms = (self.clock.real_at(arrived_us) - published).as_secs_f64() * 1000.0;
            let join = flight.rx1_delay_us == JOIN_RX1_DELAY_US;
            self.stats.answer_ms.push((ms, join));
            self.in_flight.get_mut(&token).unwrap().answered = true;
        }
        let flight = &self.in_flight[&token];
        if arrived_us + self.config.lead_us > start {
            return gw::TxAckStatus::TooLate;
        }
        let rate = region.downlink_data_rate(data_rate).unwrap();
        let toa = rate.time_on_air_us(item.phy_payload.len(), false);
        if self.gateway_duty.free_at(region, info.frequency) > start {
            return gw::TxAckStatus::DutyCycleOverflow;
        }
        if self
            .scheduled
            .iter()
            .any(|&(s, e)| start < e && s < start + toa)
        {
            return gw::TxAckStatus::CollisionPacket;
        }
        self.gateway_duty.record(region, info.frequency, start, toa);
        self.scheduled.push((start, start + toa));
        let window = if delay_us == flight.rx1_delay_us {
            self.stats.rx1 += 1;
            RxWindow::Rx1
        } else {
            self.stats.rx2 += 1;
            RxWindow::Rx2
        };
        let flight = self.in_flight.get_mut(&token).unwrap();
        flight.downlink = Some(Downlink {
            phy: item.phy_payload.clone(),
            window,
            frequency_hz: info.frequency,
            data_rate,
            start_us: start,
            toa_us: toa,
            fport1: false,
        });
        gw::TxAckStatus::Ok
    }
}

fn lora(modulation: Option<&gw::Modulation>) -> Option<(u32, u32)> {
    match modulation?.parameters.as_ref()? {
        gw::modulation::Parameters::Lora(l) => Some((l.spreading_factor, l.bandwidth)),
        _ => None,
    }
}

fn uplink_frame(config: &GatewayConfig, token: u32, uplink: &Uplink) -> gw::UplinkFrame {
    let rate = config
        .region
        .uplink_data_rate(uplink.data_rate)
        .expect("a data rate of the region");
    gw::UplinkFrame {
        phy_payload: uplink.phy.clone(),
        tx_info: Some(gw::UplinkTxInfo {
            frequency: uplink.frequency_hz,
            modulation: Some(gw::Modulation {
                parameters: Some(gw::modulation::Parameters::Lora(gw::LoraModulationInfo {
                    bandwidth: rate.bandwidth_hz,
                    spreading_factor: u32::from(rate.spreading_factor),
                    code_rate: gw::CodeRate::Cr45.into(),
                    polarization_inversion: false,
                    preamble: 8,
                    ..Default::default()
                })),
            }),
        }),
        rx_info: Some(gw::UplinkRxInfo {
            gateway_id: config.id(),
            uplink_id: token,
            rssi: -60,
            snr: 7.0,
            context: token.to_be_bytes().to_vec(),
            crc_status: gw::CrcStatus::CrcOk.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}
