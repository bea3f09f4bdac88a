//! EUI-64 values (DevEUI, JoinEUI) as printed: most significant byte first, 16 hex digits.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// An EUI-64, most significant byte first (the order in which it is printed).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Eui64(pub [u8; 8]);

impl Eui64 {
    /// The bytes, most significant first.
    #[must_use]
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0
    }

    /// The bytes in the little-endian order of the LoRaWAN join frames.
    #[must_use]
    pub fn to_le_bytes(self) -> [u8; 8] {
        let mut b = self.0;
        b.reverse();
        b
    }

    /// From the little-endian bytes of a join frame.
    #[must_use]
    pub fn from_le_bytes(mut b: [u8; 8]) -> Self {
        b.reverse();
        Self(b)
    }
}

impl FromStr for Eui64 {
    type Err = Error;

    /// 16 hex digits, optionally separated by `-` or `:` (e.g. `70-B3-D5-7E-D0-00-00-01`).
    fn from_str(s: &str) -> Result<Self, Error> {
        let digits: String = s
            .trim()
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect();
        let mut out = [0u8; 8];
        if digits.len() != 16 || hex::decode_to_slice(&digits, &mut out).is_err() {
            return Err(Error::Malformed(format!(
                "EUI-64 must be 16 hex digits, got {:?}",
                truncate(s, 40)
            )));
        }
        Ok(Self(out))
    }
}

impl fmt::Display for Eui64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Eui64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// At most `max` characters of untrusted text, for error messages.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let e: Eui64 = "70-B3-D5-7E-D0-00-00-01".parse().unwrap();
        assert_eq!(e.to_string(), "70b3d57ed0000001");
        assert_eq!(e.to_le_bytes()[0], 0x01);
        assert_eq!(Eui64::from_le_bytes(e.to_le_bytes()), e);
        assert!("70b3".parse::<Eui64>().is_err());
        assert!("zzb3d57ed0000001".parse::<Eui64>().is_err());
    }
}
