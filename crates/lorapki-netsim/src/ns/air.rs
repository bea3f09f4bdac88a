//! The frames the gateway receives ([`Uplink`]) and transmits ([`Downlink`]).

/// Which receive window a downlink uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxWindow {
    /// RX1.
    Rx1,
    /// RX2.
    Rx2,
}

/// A downlink the gateway transmits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downlink {
    /// The PHY payload.
    pub phy: Vec<u8>,
    /// The window.
    pub window: RxWindow,
    /// Frequency (Hz).
    pub frequency_hz: u32,
    /// Data rate index.
    pub data_rate: u8,
    /// Transmission start (µs).
    pub start_us: u64,
    /// Time on air (µs).
    pub toa_us: u64,
    /// Whether it carries an FPort-1 payload.
    pub fport1: bool,
}

/// An uplink as the gateway receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uplink {
    /// The PHY payload.
    pub phy: Vec<u8>,
    /// Frequency (Hz).
    pub frequency_hz: u32,
    /// Data rate index.
    pub data_rate: u8,
}
