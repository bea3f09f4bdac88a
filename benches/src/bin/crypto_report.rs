//! Operations per second of the software backend, of the bare RustCrypto crates, and of OpenSSL
//! (`openssl speed`, run in the same process tree), as one table.
//!
//! ```text
//! cargo run -p lorapki-benches --release --bin crypto-report -- [--runs N] [--openssl-seconds S]
//! ```
//!
//! Each figure is the median of `N` samples (default 101); a sample times a batch of operations
//! long enough (about 2 ms) for the clock to resolve it (ECDH agree: one operation, as each needs a
//! fresh key), and ops/s is one over the median time per operation. Samples of our backend and of
//! the bare crates alternate, so that a change of machine load affects both columns alike. OpenSSL's figures are its own (`openssl speed -seconds S ecdhp384 ecdsap384`):
//! its "ecdh" is one derivation (our "ECDH agree"), and it signs with a random nonce where we use
//! RFC 6979.

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use lorapki_benches::crypto::{Bare, Lorapki, Operation, Operations};

/// OpenSSL's P-384 figures, in operations per second.
#[derive(Debug, Default, Clone, Copy)]
struct OpensslSpeed {
    sign: Option<f64>,
    verify: Option<f64>,
    ecdh: Option<f64>,
}

impl OpensslSpeed {
    /// The higher figure of two runs, per operation.
    fn best(self, other: Self) -> Self {
        let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Self {
            sign: max(self.sign, other.sign),
            verify: max(self.verify, other.verify),
            ecdh: max(self.ecdh, other.ecdh),
        }
    }

    fn for_operation(self, operation: Operation) -> Option<f64> {
        match operation {
            Operation::Sign => self.sign,
            Operation::Verify => self.verify,
            Operation::EcdhAgree => self.ecdh,
            _ => None,
        }
    }
}

/// Parses the summary lines of `openssl speed`:
/// ` 384 bits ecdsa (nistp384)   0.0009s   0.0009s   1083.8   1101.0` and
/// ` 384 bits ecdh (nistp384)   0.0008s   1290.0`.
fn parse_openssl_speed(output: &str) -> OpensslSpeed {
    let mut speed = OpensslSpeed::default();
    for line in output.lines() {
        let numbers: Vec<f64> = line
            .split_whitespace()
            .filter(|word| !word.ends_with('s'))
            .filter_map(|word| word.parse().ok())
            .collect();
        if line.contains("ecdsa (nistp384)") {
            if let [.., sign, verify] = numbers[..] {
                speed.sign = Some(sign);
                speed.verify = Some(verify);
            }
        } else if line.contains("ecdh (nistp384)")
            && let [.., derive] = numbers[..]
        {
            speed.ecdh = Some(derive);
        }
    }
    speed
}

fn run_openssl_speed(seconds: u32) -> Result<OpensslSpeed, String> {
    let output = Command::new("openssl")
        .args([
            "speed",
            "-seconds",
            &seconds.to_string(),
            "ecdhp384",
            "ecdsap384",
        ])
        .output()
        .map_err(|error| format!("openssl not run: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "openssl speed failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(parse_openssl_speed(&String::from_utf8_lossy(
        &output.stdout,
    )))
}

/// Seconds per operation, one sample at a time.
type Sampler<'a> = Box<dyn FnMut() -> f64 + 'a>;

/// Samples an operation by timing batches long enough (about 2 ms) for the clock.
fn batched<'a>(mut op: impl FnMut() + 'a) -> Sampler<'a> {
    // Calibrate the batch size once.
    let start = Instant::now();
    let mut calibration = 0u32;
    while start.elapsed() < Duration::from_millis(20) {
        op();
        calibration += 1;
    }
    let per_op = start.elapsed() / calibration;
    let batch = u32::try_from(Duration::from_millis(2).as_nanos() / per_op.as_nanos().max(1))
        .unwrap_or(u32::MAX)
        .max(1);
    Box::new(move || {
        let start = Instant::now();
        for _ in 0..batch {
            op();
        }
        start.elapsed().as_secs_f64() / f64::from(batch)
    })
}

/// Samples an operation whose input must be fresh each time (an ephemeral key is consumed):
/// only `op` is timed, one call per sample.
fn with_setup<'a, I>(mut setup: impl FnMut() -> I + 'a, mut op: impl FnMut(I) + 'a) -> Sampler<'a> {
    Box::new(move || {
        let input = setup();
        let start = Instant::now();
        op(input);
        start.elapsed().as_secs_f64()
    })
}

fn median_rate(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    1.0 / samples[samples.len() / 2]
}

/// Median operations per second of two samplers over `runs` samples each, taken alternately so
/// that a change of machine load affects both alike.
fn interleaved(runs: usize, mut first: Sampler<'_>, mut second: Sampler<'_>) -> (f64, f64) {
    let mut a = Vec::with_capacity(runs);
    let mut b = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        a.push(first());
        b.push(second());
    }
    (median_rate(a), median_rate(b))
}

/// Samples `operation` on `ops`, one side of the table.
fn sampler<'a, O: Operations + 'a>(operation: Operation, ops: &'a mut O) -> Sampler<'a> {
    match operation {
        Operation::Keygen => batched(move || {
            black_box(ops.keygen());
        }),
        Operation::EcdhAgree => {
            // Fresh ephemeral keys come from a second instance, so that only the agreement is
            // timed.
            let mut keys = O::default();
            with_setup(
                move || keys.keygen().0,
                move |ephemeral| {
                    black_box(ops.ecdh_agree(ephemeral));
                },
            )
        }
        Operation::EcdhGenerateAgree => batched(move || {
            black_box(ops.ecdh_generate_agree());
        }),
        Operation::Sign => batched(move || {
            black_box(ops.sign());
        }),
        Operation::Verify => batched(move || ops.verify()),
        Operation::Hkdf16 => batched(move || {
            black_box(ops.hkdf16());
        }),
        Operation::Cmac16 => batched(move || {
            black_box(ops.cmac16());
        }),
    }
}

struct Arguments {
    runs: usize,
    openssl_seconds: u32,
}

fn parse_arguments() -> Result<Arguments, String> {
    let mut arguments = Arguments {
        runs: 101,
        openssl_seconds: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--runs" => arguments.runs = value.parse().map_err(|_| "--runs N".to_owned())?,
            "--openssl-seconds" => {
                arguments.openssl_seconds = value
                    .parse()
                    .map_err(|_| "--openssl-seconds S".to_owned())?;
            }
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    Ok(arguments)
}

fn format_rate(rate: Option<f64>) -> String {
    rate.map_or_else(|| "n/a".to_owned(), |rate| format!("{rate:.1}"))
}

fn format_ratio(numerator: f64, denominator: Option<f64>) -> String {
    denominator.map_or_else(|| "n/a".to_owned(), |d| format!("{:.2}", numerator / d))
}

fn main() {
    let arguments = match parse_arguments() {
        Ok(arguments) => arguments,
        Err(error) => {
            eprintln!("{error}\nusage: crypto-report [--runs N] [--openssl-seconds S]");
            std::process::exit(2);
        }
    };
    if cfg!(debug_assertions) {
        eprintln!("note: debug build; run with --release for meaningful figures");
    }

    // OpenSSL runs before and after our measurements; the faster of the two runs counts, so a
    // burst of other work on the machine during one of them does not decide the ratio.
    let openssl_before = run_openssl_speed(arguments.openssl_seconds);

    let mut lorapki = Lorapki::new();
    let mut bare = Bare::new();
    let rows: Vec<(Operation, f64, f64)> = Operation::ALL
        .iter()
        .map(|&operation| {
            let (ours, theirs) = interleaved(
                arguments.runs,
                sampler(operation, &mut lorapki),
                sampler(operation, &mut bare),
            );
            (operation, ours, theirs)
        })
        .collect();

    let openssl_after = run_openssl_speed(arguments.openssl_seconds);
    let openssl = match (openssl_before, openssl_after) {
        (Ok(before), Ok(after)) => before.best(after),
        (Ok(speed), Err(_)) | (Err(_), Ok(speed)) => speed,
        (Err(error), Err(_)) => {
            eprintln!("OpenSSL column empty: {error}");
            OpensslSpeed::default()
        }
    };

    println!(
        "median of {} samples per operation; OpenSSL: best of two runs (before and after) of \
         openssl speed -seconds {} ecdhp384 ecdsap384",
        arguments.runs, arguments.openssl_seconds
    );
    // Other work on the machine skews absolute figures (the ratios less so): say how busy it was.
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!(
            "load average: {}",
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!(
        "| {:<18} | {:>13} | {:>13} | {:>13} | {:>15} | {:>12} |",
        "operation", "lorapki op/s", "bare op/s", "OpenSSL op/s", "lorapki/OpenSSL", "lorapki/bare"
    );
    println!(
        "|{:-<20}|{:->15}|{:->15}|{:->15}|{:->17}|{:->14}|",
        "", "", "", "", "", ""
    );
    for (operation, ours, theirs) in rows {
        let reference = openssl.for_operation(operation);
        println!(
            "| {:<18} | {:>13.1} | {:>13.1} | {:>13} | {:>15} | {:>12.3} |",
            operation.name(),
            ours,
            theirs,
            format_rate(reference),
            format_ratio(ours, reference),
            ours / theirs,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openssl_speed_summary() {
        let output = "                              sign    verify    sign/s verify/s\n \
             384 bits ecdsa (nistp384)   0.0009s   0.0009s   1083.8   1101.0\n\
             \x20                             op      op/s\n \
             384 bits ecdh (nistp384)   0.0008s   1290.0\n";
        let speed = parse_openssl_speed(output);
        assert_eq!(speed.sign, Some(1083.8));
        assert_eq!(speed.verify, Some(1101.0));
        assert_eq!(speed.ecdh, Some(1290.0));
    }
}
