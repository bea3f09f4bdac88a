//! A tiny private logging shim: lines go to `defmt` when the `defmt` feature is on and vanish
//! otherwise, so that the rest of the crate logs without `cfg`s.

/// A warning (health-test failure, tamper, an interrupted key-store commit).
macro_rules! log_warn {
    ($($arg:tt)*) => {
        #[cfg(feature = "defmt")]
        defmt::warn!($($arg)*);
    };
}

pub(crate) use log_warn as warn;
