//! Log lines about refused input, at most one per kind and reason per interval: a flood of bad
//! input must show in the log without flooding it. The line that is written carries the number
//! of lines suppressed since the previous one (`suppressed = K`); the metrics count every one.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One line per key per interval.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    slots: Mutex<BTreeMap<(&'static str, &'static str), Slot>>,
}

#[derive(Debug)]
struct Slot {
    last: Instant,
    suppressed: u64,
}

impl LogThrottle {
    /// A throttle that lets one line per key through per `interval`.
    #[must_use]
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            slots: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether a line about `reason` (of input of `kind`) may be written now: `Some(k)` with the
    /// number of lines suppressed for that key since the last one written, or `None` (the line
    /// is suppressed and counted).
    pub fn admit(&self, kind: &'static str, reason: &'static str) -> Option<u64> {
        self.admit_at(kind, reason, Instant::now())
    }

    /// [`admit`](Self::admit) at `now`.
    pub fn admit_at(&self, kind: &'static str, reason: &'static str, now: Instant) -> Option<u64> {
        let Ok(mut slots) = self.slots.lock() else {
            return Some(0);
        };
        match slots.get_mut(&(kind, reason)) {
            Some(slot) if now.saturating_duration_since(slot.last) < self.interval => {
                slot.suppressed += 1;
                None
            }
            Some(slot) => {
                slot.last = now;
                Some(std::mem::take(&mut slot.suppressed))
            }
            None => {
                slots.insert(
                    (kind, reason),
                    Slot {
                        last: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

/// The throttle of the server's log lines about refused input: one per kind and reason every
/// 10 seconds. The keys are static strings of the code, so the table stays small.
pub static REFUSALS: LogThrottle = LogThrottle::new(Duration::from_secs(10));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_interval_with_the_suppressed_count() {
        let t = LogThrottle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.admit_at("uplink", "malformed", t0), Some(0));
        for i in 1..=5 {
            assert_eq!(
                t.admit_at("uplink", "malformed", t0 + Duration::from_secs(i)),
                None
            );
        }
        // Another reason, or another kind with the same reason, has its own budget.
        assert_eq!(t.admit_at("uplink", "rate-limited", t0), Some(0));
        assert_eq!(t.admit_at("join", "malformed", t0), Some(0));
        // The next line after the interval says how many were left out, then the count restarts.
        assert_eq!(
            t.admit_at("uplink", "malformed", t0 + Duration::from_secs(10)),
            Some(5)
        );
        assert_eq!(
            t.admit_at("uplink", "malformed", t0 + Duration::from_secs(11)),
            None
        );
        assert_eq!(
            t.admit_at("uplink", "malformed", t0 + Duration::from_secs(25)),
            Some(1)
        );
        assert_eq!(
            t.admit_at("uplink", "malformed", t0 + Duration::from_secs(40)),
            Some(0)
        );
    }
}
