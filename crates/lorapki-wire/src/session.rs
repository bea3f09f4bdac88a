use core::fmt;

/// A 6-bit session number (0..=63), carried in bits 7..2 of every header byte.
///
/// Session numbers wrap, so they are compared as serial numbers (RFC 1982 with `SERIAL_BITS = 6`),
/// not as integers: [`Session::is_newer_than`]. There is deliberately no `Ord`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Session(u8);

impl Session {
    /// The largest session number.
    pub const MAX: u8 = 63;

    /// The session number `value`, or [`SessionOutOfRange`] above 63 (which converts into
    /// [`Error::SessionOutOfRange`](crate::Error::SessionOutOfRange) with `?`).
    pub const fn new(value: u8) -> Result<Self, SessionOutOfRange> {
        if value <= Self::MAX {
            Ok(Self(value))
        } else {
            Err(SessionOutOfRange { value })
        }
    }

    /// The session in bits 7..2 of a header byte.
    pub(crate) const fn from_header(header: u8) -> Self {
        Self(header >> 2)
    }

    /// The number, 0..=63.
    #[must_use]
    pub const fn value(self) -> u8 {
        self.0
    }

    /// The following session number, wrapping from 63 to 0.
    #[must_use]
    pub const fn next(self) -> Self {
        Self((self.0 + 1) & Self::MAX)
    }

    /// Whether `self` is newer than `other` in 6-bit serial-number arithmetic (RFC 1982):
    /// `(self - other) mod 64` is in `1..=31`.
    ///
    /// At distance 32 neither is newer than the other, and a session is never newer than itself.
    #[must_use]
    pub const fn is_newer_than(self, other: Self) -> bool {
        let distance = self.0.wrapping_sub(other.0) & Self::MAX;
        distance >= 1 && distance <= 31
    }
}

impl TryFrom<u8> for Session {
    type Error = SessionOutOfRange;

    fn try_from(value: u8) -> Result<Self, SessionOutOfRange> {
        Self::new(value)
    }
}

/// A session number above 63 was given to [`Session::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SessionOutOfRange {
    /// The number given.
    pub value: u8,
}

impl fmt::Display for SessionOutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session {} out of range 0..=63", self.value)
    }
}

impl From<Session> for u8 {
    fn from(session: Session) -> u8 {
        session.0
    }
}

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: u8) -> Session {
        Session::new(v).unwrap()
    }

    #[test]
    fn range() {
        assert_eq!(Session::new(63).map(Session::value), Ok(63));
        assert_eq!(Session::new(64), Err(SessionOutOfRange { value: 64 }));
        assert_eq!(
            Session::try_from(255),
            Err(SessionOutOfRange { value: 255 })
        );
        assert_eq!(
            crate::Error::from(SessionOutOfRange { value: 64 }),
            crate::Error::SessionOutOfRange { value: 64 }
        );
    }

    #[test]
    fn next_wraps() {
        assert_eq!(s(0).next(), s(1));
        assert_eq!(s(63).next(), s(0));
    }

    #[test]
    fn serial_comparison() {
        assert!(s(1).is_newer_than(s(0)));
        assert!(s(0).is_newer_than(s(63)));
        assert!(s(31).is_newer_than(s(0)));
        assert!(!s(32).is_newer_than(s(0)));
        assert!(!s(0).is_newer_than(s(32)));
        assert!(!s(0).is_newer_than(s(0)));
        assert!(s(10).is_newer_than(s(43)));
        assert!(!s(43).is_newer_than(s(10)));
    }

    #[test]
    fn newer_is_antisymmetric() {
        for a in 0..=63 {
            for b in 0..=63 {
                let (a, b) = (s(a), s(b));
                assert!(!(a.is_newer_than(b) && b.is_newer_than(a)));
                let distance = a.value().wrapping_sub(b.value()) & 63;
                assert_eq!(a.is_newer_than(b), (1..=31).contains(&distance));
            }
        }
    }
}
