//! Duty-cycle bookkeeping for one transmitter (a device or a gateway): when each sub-band is free.

use crate::region::Region;

/// When each duty-cycle sub-band of one transmitter is free again (µs).
#[derive(Clone, Debug, Default)]
pub struct DutyCycle {
    free_at: Vec<(&'static str, u64)>,
}

impl DutyCycle {
    /// A transmitter that has not sent anything.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The earliest time (µs) a transmission on `frequency_hz` may start; 0 where the region has
    /// no duty cycle on that frequency.
    #[must_use]
    pub fn free_at(&self, region: Region, frequency_hz: u32) -> u64 {
        let Some(band) = region.sub_band(frequency_hz) else {
            return 0;
        };
        self.free_at
            .iter()
            .find(|(name, _)| *name == band.name)
            .map_or(0, |(_, t)| *t)
    }

    /// Records a transmission of `toa_us` starting at `start_us` on `frequency_hz`.
    pub fn record(&mut self, region: Region, frequency_hz: u32, start_us: u64, toa_us: u64) {
        let Some(band) = region.sub_band(frequency_hz) else {
            return;
        };
        let free = band.free_after(start_us, toa_us);
        match self.free_at.iter_mut().find(|(name, _)| *name == band.name) {
            Some((_, t)) => *t = (*t).max(free),
            None => self.free_at.push((band.name, free)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eu868_channels_share_g1_and_rx2_has_its_own_band() {
        let eu = Region::Eu868;
        let mut dc = DutyCycle::new();
        dc.record(eu, 868_100_000, 1_000_000, 2_793_472);
        // 868.3 and 868.5 MHz are in the same sub-band g1: blocked for ToA · 100 from the start.
        assert_eq!(dc.free_at(eu, 868_300_000), 1_000_000 + 279_347_200);
        assert_eq!(dc.free_at(eu, 868_500_000), 1_000_000 + 279_347_200);
        // RX2 (869.525 MHz, g3, 10 %) is untouched.
        assert_eq!(dc.free_at(eu, 869_525_000), 0);
        dc.record(eu, 869_525_000, 0, 1_000_000);
        assert_eq!(dc.free_at(eu, 869_525_000), 10_000_000);
        // No duty cycle in US915.
        dc.record(Region::Us915, 903_900_000, 0, 400_000);
        assert_eq!(dc.free_at(Region::Us915, 903_900_000), 0);
    }
}
