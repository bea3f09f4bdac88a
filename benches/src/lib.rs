//! Shared helpers for the lorapki benchmarks and reports.

pub mod crypto;
