//! Regional parameters: data rates with their maximum application payload N, channels, RX1/RX2
//! parameters, duty-cycle sub-bands and dwell time (LoRaWAN Regional Parameters RP002-1.0.3,
//! cross-checked with RP002-1.0.4; sources in the crate README).

use crate::airtime::LoraModulation;

/// RECEIVE_DELAY1: RX1 opens this long after the end of an uplink (all regions).
pub const RECEIVE_DELAY1_MS: u64 = 1_000;
/// RECEIVE_DELAY2: RX2 opens this long after the end of an uplink.
pub const RECEIVE_DELAY2_MS: u64 = 2_000;
/// JOIN_ACCEPT_DELAY1: RX1 after a JoinRequest.
pub const JOIN_ACCEPT_DELAY1_MS: u64 = 5_000;
/// JOIN_ACCEPT_DELAY2: RX2 after a JoinRequest.
pub const JOIN_ACCEPT_DELAY2_MS: u64 = 6_000;

/// The LoRaWAN overhead of a data frame around its FRMPayload, without FOpts:
/// MHDR (1) + FHDR (7) + FPort (1) + MIC (4).
pub const DATA_FRAME_OVERHEAD: usize = 13;
/// PHY payload length of a JoinRequest.
pub const JOIN_REQUEST_LEN: usize = 23;
/// PHY payload length of a JoinAccept without CFList.
pub const JOIN_ACCEPT_LEN: usize = 17;

/// A regional channel plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Region {
    /// EU863-870.
    Eu868,
    /// US902-928 (sub-band 2, the usual eight channels of a gateway).
    Us915,
    /// AU915-928 (sub-band 2). `dwell_time`: UplinkDwellTime = 1 (400 ms), the default of
    /// RP002-1.0.3 §2.6.2 until a TxParamSetupReq.
    Au915 {
        /// 400 ms dwell time on uplinks.
        dwell_time: bool,
    },
    /// AS923-1. `dwell_time`: UplinkDwellTime = 1 (400 ms, e.g. Japan).
    As923 {
        /// 400 ms dwell time on uplinks (and downlinks).
        dwell_time: bool,
    },
    /// IN865-867.
    In865,
    /// KR920-923.
    Kr920,
}

/// One data rate of a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataRate {
    /// The DR index of the region.
    pub index: u8,
    /// Spreading factor.
    pub spreading_factor: u8,
    /// Bandwidth in Hz.
    pub bandwidth_hz: u32,
    /// N: the maximum FRMPayload (application payload) size without FOpts.
    pub max_payload: usize,
}

impl DataRate {
    /// The modulation of a frame at this data rate.
    #[must_use]
    pub fn modulation(&self, uplink: bool) -> LoraModulation {
        LoraModulation::lorawan(self.spreading_factor, self.bandwidth_hz, uplink)
    }

    /// Time on air in µs of a PHY payload of `phy_len` bytes at this data rate.
    #[must_use]
    pub fn time_on_air_us(&self, phy_len: usize, uplink: bool) -> u64 {
        self.modulation(uplink).time_on_air_us(phy_len)
    }

    /// "SF12BW125"-style label.
    #[must_use]
    pub fn label(&self) -> String {
        format!("SF{}BW{}", self.spreading_factor, self.bandwidth_hz / 1000)
    }
}

/// A duty-cycle sub-band: transmissions on any frequency in `low_hz..=high_hz` share one budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubBand {
    /// A name, e.g. "g1".
    pub name: &'static str,
    /// Lowest frequency, Hz.
    pub low_hz: u32,
    /// Highest frequency, Hz.
    pub high_hz: u32,
    /// The duty cycle as 1/divisor: 100 for 1 %, 10 for 10 %, 1000 for 0.1 %.
    pub divisor: u32,
}

impl SubBand {
    /// After a transmission of `toa_us` that started at `start_us`, the band is free again at
    /// `start + toa · divisor` (T_off = ToA · (divisor − 1) after its end).
    #[must_use]
    pub fn free_after(&self, start_us: u64, toa_us: u64) -> u64 {
        start_us + toa_us * u64::from(self.divisor)
    }
}

// The ETSI EN 300 220 sub-bands that RP002-1.0.3 §2.2 (EU863-870) refers to.
const EU868_SUB_BANDS: [SubBand; 6] = [
    SubBand {
        name: "g",
        low_hz: 863_000_000,
        high_hz: 864_999_999,
        divisor: 1000,
    },
    SubBand {
        name: "g-865",
        low_hz: 865_000_000,
        high_hz: 867_999_999,
        divisor: 100,
    },
    SubBand {
        name: "g1",
        low_hz: 868_000_000,
        high_hz: 868_600_000,
        divisor: 100,
    },
    SubBand {
        name: "g2",
        low_hz: 868_700_000,
        high_hz: 869_200_000,
        divisor: 1000,
    },
    SubBand {
        name: "g3",
        low_hz: 869_400_000,
        high_hz: 869_650_000,
        divisor: 10,
    },
    SubBand {
        name: "g4",
        low_hz: 869_700_000,
        high_hz: 870_000_000,
        divisor: 100,
    },
];

const fn dr(index: u8, spreading_factor: u8, khz: u32, n: usize) -> Option<DataRate> {
    Some(DataRate {
        index,
        spreading_factor,
        bandwidth_hz: khz * 1000,
        max_payload: n,
    })
}

/// EU868, RP002-1.0.3 §2.2 (data-rate table and maximum payload size table). DR4–DR7 use the
/// repeater-compatible N = 222 (M = 230), the value a device must assume when it cannot know
/// that no repeater is in the path.
const EU868: [Option<DataRate>; 7] = [
    dr(0, 12, 125, 51),
    dr(1, 11, 125, 51),
    dr(2, 10, 125, 51),
    dr(3, 9, 125, 115),
    dr(4, 8, 125, 222),
    dr(5, 7, 125, 222),
    dr(6, 7, 250, 222),
];

/// US915 uplinks DR0–DR4 and downlinks DR8–DR13 (RP002-1.0.3 §2.3): DR0's N = 11
/// keeps a frame under the 400 ms dwell time.
const US915: [Option<DataRate>; 14] = [
    dr(0, 10, 125, 11),
    dr(1, 9, 125, 53),
    dr(2, 8, 125, 125),
    dr(3, 7, 125, 242),
    dr(4, 8, 500, 242),
    None,
    None,
    None,
    dr(8, 12, 500, 53),
    dr(9, 11, 500, 129),
    dr(10, 10, 500, 242),
    dr(11, 9, 500, 242),
    dr(12, 8, 500, 242),
    dr(13, 7, 500, 242),
];

/// AU915 with UplinkDwellTime = 0 (RP002-1.0.3 §2.6).
const AU915: [Option<DataRate>; 14] = [
    dr(0, 12, 125, 51),
    dr(1, 11, 125, 51),
    dr(2, 10, 125, 51),
    dr(3, 9, 125, 115),
    dr(4, 8, 125, 242),
    dr(5, 7, 125, 242),
    dr(6, 8, 500, 242),
    None,
    dr(8, 12, 500, 53),
    dr(9, 11, 500, 129),
    dr(10, 10, 500, 242),
    dr(11, 9, 500, 242),
    dr(12, 8, 500, 242),
    dr(13, 7, 500, 242),
];

/// AU915 uplinks with UplinkDwellTime = 1: DR0 and DR1 are not allowed.
const AU915_DWELL: [Option<DataRate>; 7] = [
    None,
    None,
    dr(2, 10, 125, 11),
    dr(3, 9, 125, 53),
    dr(4, 8, 125, 125),
    dr(5, 7, 125, 242),
    dr(6, 8, 500, 242),
];

/// AS923 with UplinkDwellTime = 0 (RP002-1.0.3 §2.8).
const AS923: [Option<DataRate>; 7] = [
    dr(0, 12, 125, 51),
    dr(1, 11, 125, 51),
    dr(2, 10, 125, 51),
    dr(3, 9, 125, 115),
    dr(4, 8, 125, 242),
    dr(5, 7, 125, 242),
    dr(6, 7, 250, 242),
];

/// AS923 with UplinkDwellTime = 1: DR0 and DR1 not allowed, DR2 N = 11, DR3 N = 53.
const AS923_DWELL: [Option<DataRate>; 7] = [
    None,
    None,
    dr(2, 10, 125, 11),
    dr(3, 9, 125, 53),
    dr(4, 8, 125, 125),
    dr(5, 7, 125, 242),
    dr(6, 7, 250, 242),
];

/// IN865 and KR920 (RP002-1.0.3 §2.10 and §2.9): the EU868 shape with N = 242 on DR4/DR5.
const IN865_KR920: [Option<DataRate>; 6] = [
    dr(0, 12, 125, 51),
    dr(1, 11, 125, 51),
    dr(2, 10, 125, 51),
    dr(3, 9, 125, 115),
    dr(4, 8, 125, 242),
    dr(5, 7, 125, 242),
];

const EU868_CHANNELS: [u32; 3] = [868_100_000, 868_300_000, 868_500_000];
const US915_CHANNELS: [u32; 8] = [
    903_900_000,
    904_100_000,
    904_300_000,
    904_500_000,
    904_700_000,
    904_900_000,
    905_100_000,
    905_300_000,
];
const AU915_CHANNELS: [u32; 8] = [
    916_800_000,
    917_000_000,
    917_200_000,
    917_400_000,
    917_600_000,
    917_800_000,
    918_000_000,
    918_200_000,
];
const AS923_CHANNELS: [u32; 2] = [923_200_000, 923_400_000];
const IN865_CHANNELS: [u32; 3] = [865_062_500, 865_402_500, 865_985_000];
const KR920_CHANNELS: [u32; 3] = [922_100_000, 922_300_000, 922_500_000];

fn lookup(table: &[Option<DataRate>], index: u8) -> Option<DataRate> {
    table.get(usize::from(index)).copied().flatten()
}

impl Region {
    /// Every region the simulator knows, dwell variants included.
    pub const ALL: [Region; 8] = [
        Region::Eu868,
        Region::Us915,
        Region::Au915 { dwell_time: false },
        Region::Au915 { dwell_time: true },
        Region::As923 { dwell_time: false },
        Region::As923 { dwell_time: true },
        Region::In865,
        Region::Kr920,
    ];

    /// A short name, e.g. "EU868" or "AS923 (dwell)".
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Region::Eu868 => "EU868",
            Region::Us915 => "US915",
            Region::Au915 { dwell_time: false } => "AU915",
            Region::Au915 { dwell_time: true } => "AU915 (dwell)",
            Region::As923 { dwell_time: false } => "AS923",
            Region::As923 { dwell_time: true } => "AS923 (dwell)",
            Region::In865 => "IN865",
            Region::Kr920 => "KR920",
        }
    }

    /// An uplink data rate; `None` when the region does not define it (or dwell time forbids it).
    #[must_use]
    pub fn uplink_data_rate(&self, index: u8) -> Option<DataRate> {
        match self {
            Region::Eu868 => lookup(&EU868, index),
            Region::Us915 => lookup(&US915[..5], index),
            Region::Au915 { dwell_time: false } => lookup(&AU915[..7], index),
            Region::Au915 { dwell_time: true } => lookup(&AU915_DWELL, index),
            Region::As923 { dwell_time: false } => lookup(&AS923, index),
            Region::As923 { dwell_time: true } => lookup(&AS923_DWELL, index),
            Region::In865 | Region::Kr920 => lookup(&IN865_KR920, index),
        }
    }

    /// A downlink data rate (US915/AU915: DR8–DR13; elsewhere the uplink table).
    #[must_use]
    pub fn downlink_data_rate(&self, index: u8) -> Option<DataRate> {
        match self {
            Region::Us915 => lookup(&US915[8..], index.checked_sub(8)?),
            Region::Au915 { .. } => lookup(&AU915[8..], index.checked_sub(8)?),
            _ => self.uplink_data_rate(index),
        }
    }

    /// The RX1 data rate for an uplink at `uplink_dr`, RX1DROffset = 0.
    #[must_use]
    pub fn rx1_data_rate(&self, uplink_dr: u8) -> u8 {
        match self {
            Region::Us915 => 10 + uplink_dr.min(3),
            Region::Au915 { .. } => 8 + uplink_dr.min(5),
            _ => uplink_dr,
        }
    }

    /// The default RX2 frequency (Hz) and data rate.
    #[must_use]
    pub fn rx2(&self) -> (u32, u8) {
        match self {
            Region::Eu868 => (869_525_000, 0),
            Region::Us915 | Region::Au915 { .. } => (923_300_000, 8),
            Region::As923 { .. } => (923_200_000, 2),
            Region::In865 => (866_550_000, 2),
            Region::Kr920 => (921_900_000, 0),
        }
    }

    /// The uplink channels a device picks from (the default channels; for US915/AU915 the
    /// eight channels of sub-band 2).
    #[must_use]
    pub fn uplink_channels(&self) -> &'static [u32] {
        match self {
            Region::Eu868 => &EU868_CHANNELS,
            Region::Us915 => &US915_CHANNELS,
            Region::Au915 { .. } => &AU915_CHANNELS,
            Region::As923 { .. } => &AS923_CHANNELS,
            Region::In865 => &IN865_CHANNELS,
            Region::Kr920 => &KR920_CHANNELS,
        }
    }

    /// The RX1 frequency for an uplink on `uplink_hz`.
    #[must_use]
    pub fn rx1_frequency(&self, uplink_hz: u32) -> u32 {
        // Uplink channels 0..=63 are 125 kHz, 200 kHz apart; 64..=71 are 500 kHz, 1.6 MHz
        // apart; the RX1 channel is the uplink channel modulo 8 (RP002-1.0.4, US902-928 and
        // AU915-928 "Receive windows"). The two grids never share a frequency.
        let fixed = |first_125khz: u32, first_500khz: u32| {
            let offset_500 = uplink_hz.wrapping_sub(first_500khz);
            let channel = if uplink_hz >= first_500khz
                && offset_500.is_multiple_of(1_600_000)
                && offset_500 / 1_600_000 < 8
            {
                64 + offset_500 / 1_600_000
            } else {
                uplink_hz.saturating_sub(first_125khz) / 200_000
            };
            923_300_000 + 600_000 * (channel % 8)
        };
        match self {
            Region::Us915 => fixed(902_300_000, 903_000_000),
            Region::Au915 { .. } => fixed(915_200_000, 915_900_000),
            _ => uplink_hz,
        }
    }

    /// The duty-cycle sub-band of a frequency; `None` where the region imposes no duty cycle
    /// (US915, AU915: dwell time instead; AS923, IN865, KR920: see the README).
    #[must_use]
    pub fn sub_band(&self, frequency_hz: u32) -> Option<SubBand> {
        match self {
            Region::Eu868 => EU868_SUB_BANDS
                .iter()
                .find(|b| (b.low_hz..=b.high_hz).contains(&frequency_hz))
                .copied(),
            _ => None,
        }
    }

    /// The maximum time on air of one uplink, if the region limits it (400 ms dwell time).
    #[must_use]
    pub fn max_dwell_ms(&self) -> Option<u64> {
        match self {
            Region::Us915
            | Region::Au915 { dwell_time: true }
            | Region::As923 { dwell_time: true } => Some(400),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rx1_channel_is_the_uplink_channel_modulo_8() {
        let us = Region::Us915;
        assert_eq!(us.rx1_frequency(902_300_000), 923_300_000); // channel 0
        assert_eq!(us.rx1_frequency(903_700_000), 923_300_000 + 7 * 600_000); // channel 7
        assert_eq!(us.rx1_frequency(903_900_000), 923_300_000); // channel 8
        assert_eq!(us.rx1_frequency(903_000_000), 923_300_000); // channel 64, 500 kHz
        assert_eq!(us.rx1_frequency(904_600_000), 923_900_000); // channel 65
        assert_eq!(us.rx1_frequency(914_200_000), 927_500_000); // channel 71
        let au = Region::Au915 { dwell_time: true };
        assert_eq!(au.rx1_frequency(915_200_000), 923_300_000); // channel 0
        assert_eq!(au.rx1_frequency(915_900_000), 923_300_000); // channel 64
        assert_eq!(au.rx1_frequency(917_500_000), 923_900_000); // channel 65
    }

    #[test]
    fn payload_tables() {
        let n = |r: Region, dr: u8| r.uplink_data_rate(dr).map(|d| d.max_payload);
        assert_eq!(n(Region::Eu868, 0), Some(51));
        assert_eq!(n(Region::Eu868, 2), Some(51));
        assert_eq!(n(Region::Eu868, 3), Some(115));
        assert_eq!(n(Region::Eu868, 5), Some(222));
        assert_eq!(n(Region::Eu868, 7), None);
        assert_eq!(n(Region::Us915, 0), Some(11));
        assert_eq!(n(Region::Us915, 1), Some(53));
        assert_eq!(n(Region::Us915, 2), Some(125));
        assert_eq!(n(Region::Us915, 3), Some(242));
        assert_eq!(n(Region::Us915, 4), Some(242));
        assert_eq!(n(Region::Us915, 8), None, "DR8 is downlink-only");
        assert_eq!(n(Region::As923 { dwell_time: true }, 1), None);
        assert_eq!(n(Region::As923 { dwell_time: true }, 2), Some(11));
        assert_eq!(n(Region::As923 { dwell_time: true }, 3), Some(53));
        assert_eq!(n(Region::As923 { dwell_time: false }, 2), Some(51));
        assert_eq!(n(Region::Au915 { dwell_time: true }, 2), Some(11));
        assert_eq!(n(Region::In865, 5), Some(242));
        assert_eq!(n(Region::Kr920, 0), Some(51));
    }

    #[test]
    fn rx1_mapping_and_downlink_payloads() {
        let us = Region::Us915;
        assert_eq!(us.rx1_data_rate(0), 10);
        assert_eq!(us.downlink_data_rate(10).map(|d| d.max_payload), Some(242));
        assert_eq!(us.downlink_data_rate(8).map(|d| d.max_payload), Some(53));
        assert_eq!(us.rx1_frequency(903_900_000), 923_300_000);
        assert_eq!(us.rx1_frequency(904_100_000), 923_900_000);
        assert_eq!(Region::Eu868.rx1_data_rate(3), 3);
        assert_eq!(Region::Eu868.rx1_frequency(868_300_000), 868_300_000);
        assert_eq!(Region::Au915 { dwell_time: false }.rx1_data_rate(6), 13);
    }

    #[test]
    fn every_region_is_consistent() {
        for region in Region::ALL {
            let (rx2_hz, rx2_dr) = region.rx2();
            assert!(
                region.downlink_data_rate(rx2_dr).is_some(),
                "{}",
                region.name()
            );
            assert!(rx2_hz > 800_000_000);
            for dr in 0..8 {
                if let Some(rate) = region.uplink_data_rate(dr) {
                    assert!((11..=242).contains(&rate.max_payload));
                    let rx1 = region.rx1_data_rate(dr);
                    assert!(
                        region.downlink_data_rate(rx1).is_some(),
                        "{} DR{dr}",
                        region.name()
                    );
                    // The dwell time is what sizes N: the largest frame fits in 400 ms.
                    if let Some(dwell) = region.max_dwell_ms() {
                        let toa = rate
                            .modulation(true)
                            .time_on_air_ms(DATA_FRAME_OVERHEAD + rate.max_payload);
                        assert!(toa <= dwell as f64, "{} DR{dr}: {toa} ms", region.name());
                    }
                }
            }
        }
    }

    #[test]
    fn eu868_sub_bands() {
        let eu = Region::Eu868;
        for f in [868_100_000, 868_300_000, 868_500_000] {
            assert_eq!(eu.sub_band(f).map(|b| b.name), Some("g1"));
        }
        let g3 = eu.sub_band(869_525_000).map(|b| (b.name, b.divisor));
        assert_eq!(g3, Some(("g3", 10)));
        assert_eq!(Region::Us915.sub_band(903_900_000), None);
        // 1 %: a 2793.472 ms frame keeps the band busy for 279.3472 s from its start.
        let g1 = eu.sub_band(868_100_000).map(|b| b.free_after(0, 2_793_472));
        assert_eq!(g1, Some(279_347_200));
    }
}
