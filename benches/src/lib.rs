//! Shared helpers for the lorapki benchmarks and reports.
