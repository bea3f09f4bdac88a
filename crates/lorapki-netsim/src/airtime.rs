//! LoRa time on air, after Semtech AN1200.13 ("LoRa Modem Designer's Guide", §4).
//!
//! ```text
//! Tsym      = 2^SF / BW
//! Tpreamble = (n_preamble + 4.25) · Tsym
//! n_payload = 8 + max(ceil((8·PL − 4·SF + 28 + 16·CRC − 20·IH) / (4·(SF − 2·DE))) · (CR + 4), 0)
//! ToA       = Tpreamble + n_payload · Tsym
//! ```
//!
//! PL is the PHY payload length in bytes, CRC = 1 when the payload CRC is on (LoRaWAN uplinks) and
//! 0 when off (LoRaWAN downlinks), IH = 0 for the explicit header LoRaWAN always uses, DE = 1 when
//! low-data-rate optimisation is on (LoRaWAN: SF11 and SF12 at 125 kHz, i.e. Tsym ≥ 16 ms), and CR
//! = 1 for coding rate 4/5.

/// The LoRa modulation parameters that decide the time on air of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoraModulation {
    /// Spreading factor, 7..=12.
    pub spreading_factor: u8,
    /// Bandwidth in Hz (125 000, 250 000 or 500 000 in LoRaWAN).
    pub bandwidth_hz: u32,
    /// Coding rate as the `CR` of 4/(4 + CR): 1 for 4/5 (LoRaWAN).
    pub coding_rate: u8,
    /// Programmed preamble symbols (8 in LoRaWAN).
    pub preamble_symbols: u16,
    /// Explicit header (always on in LoRaWAN).
    pub explicit_header: bool,
    /// Payload CRC: on for LoRaWAN uplinks, off for downlinks.
    pub crc: bool,
    /// Low-data-rate optimisation (DE).
    pub low_data_rate_optimize: bool,
}

impl LoraModulation {
    /// LoRaWAN's parameters for a frame at `spreading_factor`/`bandwidth_hz`: CR 4/5, 8 preamble
    /// symbols, explicit header, CRC on uplinks only, DE when the symbol lasts 16 ms or more.
    #[must_use]
    pub fn lorawan(spreading_factor: u8, bandwidth_hz: u32, uplink: bool) -> Self {
        let symbol_us = (1u64 << spreading_factor) * 1_000_000 / u64::from(bandwidth_hz.max(1));
        Self {
            spreading_factor,
            bandwidth_hz,
            coding_rate: 1,
            preamble_symbols: 8,
            explicit_header: true,
            crc: uplink,
            low_data_rate_optimize: symbol_us >= 16_000,
        }
    }

    /// The symbol time in milliseconds.
    #[must_use]
    pub fn symbol_ms(&self) -> f64 {
        f64::from(1u32 << self.spreading_factor) * 1000.0 / f64::from(self.bandwidth_hz)
    }

    /// The number of payload symbols for a PHY payload of `phy_len` bytes (header included).
    #[must_use]
    pub fn payload_symbols(&self, phy_len: usize) -> u32 {
        let sf = i64::from(self.spreading_factor);
        let de = i64::from(self.low_data_rate_optimize);
        let ih = i64::from(!self.explicit_header);
        let crc = i64::from(self.crc);
        let numerator = 8 * phy_len as i64 - 4 * sf + 28 + 16 * crc - 20 * ih;
        let denominator = 4 * (sf - 2 * de);
        let blocks = if numerator <= 0 || denominator <= 0 {
            0
        } else {
            (numerator + denominator - 1) / denominator
        };
        8 + (blocks * (i64::from(self.coding_rate) + 4)) as u32
    }

    /// Time on air of a PHY payload of `phy_len` bytes, in milliseconds (exact).
    #[must_use]
    pub fn time_on_air_ms(&self, phy_len: usize) -> f64 {
        let preamble = (f64::from(self.preamble_symbols) + 4.25) * self.symbol_ms();
        preamble + f64::from(self.payload_symbols(phy_len)) * self.symbol_ms()
    }

    /// Time on air in whole microseconds, rounded up (the simulator's clock unit).
    #[must_use]
    pub fn time_on_air_us(&self, phy_len: usize) -> u64 {
        (self.time_on_air_ms(phy_len) * 1000.0).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 0.05
    }

    #[test]
    fn an1200_13_reference_values() {
        // 13 + 51 = 64 PHY bytes at EU868 DR0 (SF12/125 kHz): 2793.5 ms.
        let sf12 = LoraModulation::lorawan(12, 125_000, true);
        assert!(sf12.low_data_rate_optimize);
        assert!(
            close(sf12.time_on_air_ms(64), 2793.472),
            "{}",
            sf12.time_on_air_ms(64)
        );
        // 13 + 11 = 24 PHY bytes at US915 DR0 (SF10/125 kHz): 370.7 ms, under the 400 ms dwell.
        let sf10 = LoraModulation::lorawan(10, 125_000, true);
        assert!(!sf10.low_data_rate_optimize);
        assert!(
            close(sf10.time_on_air_ms(24), 370.688),
            "{}",
            sf10.time_on_air_ms(24)
        );
        // A JoinRequest (23 bytes) at SF12: 1482.8 ms.
        assert!(
            close(sf12.time_on_air_ms(23), 1482.752),
            "{}",
            sf12.time_on_air_ms(23)
        );
        assert_eq!(sf12.time_on_air_us(64), 2_793_472);
    }

    #[test]
    fn downlinks_have_no_crc() {
        let up = LoraModulation::lorawan(12, 125_000, true);
        let down = LoraModulation::lorawan(12, 125_000, false);
        // 62 bytes: 8·62 − 48 + 28 + 16 = 492 → 13 blocks with CRC, 476 → 12 without.
        assert_eq!(up.payload_symbols(62), 8 + 13 * 5);
        assert_eq!(down.payload_symbols(62), 8 + 12 * 5);
        assert!(down.time_on_air_ms(62) < up.time_on_air_ms(62));
        // 64 bytes: 508 and 492 both need 13 blocks.
        assert_eq!(down.payload_symbols(64), up.payload_symbols(64));
        assert_eq!(down.payload_symbols(17), 8 + 3 * 5);
    }

    #[test]
    fn wide_channels_and_low_spreading_factors() {
        // SF7/125 kHz, 13 bytes: 8 + ceil((104 − 28 + 28 + 16)/28)·5 = 8 + 5·5 = 33 symbols.
        let sf7 = LoraModulation::lorawan(7, 125_000, true);
        assert!(!sf7.low_data_rate_optimize);
        assert_eq!(sf7.payload_symbols(13), 33);
        assert!(close(sf7.time_on_air_ms(13), (12.25 + 33.0) * 1.024));
        // SF12/500 kHz (US915 DR8) has a 8.192 ms symbol: no DE.
        assert!(!LoraModulation::lorawan(12, 500_000, false).low_data_rate_optimize);
        // SF11/125 kHz has a 16.384 ms symbol: DE.
        assert!(LoraModulation::lorawan(11, 125_000, true).low_data_rate_optimize);
    }
}
