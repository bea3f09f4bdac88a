//! Counters for the Prometheus text endpoint. No label ever holds a DevEUI or key material.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The server's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    rekeys_started: AtomicU64,
    rekeys_completed: AtomicU64,
    rekeys_failed: Mutex<BTreeMap<String, u64>>,
    join_requests: Mutex<BTreeMap<String, u64>>,
    /// By label set (`outcome="…"` or `outcome="refused",reason="…"`).
    uplinks: Mutex<BTreeMap<String, u64>>,
    pending_sessions: AtomicI64,
    key_work: AtomicU64,
    key_work_nanos: AtomicU64,
    downlinks: Mutex<BTreeMap<String, u64>>,
    mqtt_connections: AtomicU64,
    mqtt_connection_errors: AtomicU64,
    mqtt_dropped: Mutex<BTreeMap<String, u64>>,
}

fn bump(map: &Mutex<BTreeMap<String, u64>>, label: &str) {
    if let Ok(mut m) = map.lock() {
        *m.entry(label.to_owned()).or_default() += 1;
    }
}

impl Metrics {
    /// A run started.
    pub fn rekey_started(&self) {
        self.rekeys_started.fetch_add(1, Ordering::Relaxed);
    }

    /// A rekey completed.
    pub fn rekey_completed(&self) {
        self.rekeys_completed.fetch_add(1, Ordering::Relaxed);
    }

    /// A run failed, by reason.
    pub fn rekey_failed(&self, reason: &str) {
        bump(&self.rekeys_failed, reason);
    }

    /// A JoinReq answered, by Backend Interfaces result code.
    pub fn join_request(&self, result: &str) {
        bump(&self.join_requests, result);
    }

    /// An FPort-1 uplink handled, by outcome (`accepted`, `malformed`, `rate-limited`,
    /// `unknown-device`); refusals go to [`uplink_refused`](Self::uplink_refused).
    pub fn uplink(&self, outcome: &str) {
        bump(&self.uplinks, &format!("outcome=\"{outcome}\""));
    }

    /// An FPort-1 uplink the protocol refused, by reason (`rate-limited`, `stale-session`, …).
    pub fn uplink_refused(&self, reason: &str) {
        bump(
            &self.uplinks,
            &format!("outcome=\"refused\",reason=\"{reason}\""),
        );
    }

    /// A downlink published, by kind (`answer` or `abort`).
    pub fn downlink(&self, kind: &str) {
        bump(&self.downlinks, kind);
    }

    /// The MQTT client connected (CONNACK received).
    pub fn mqtt_connected(&self) {
        self.mqtt_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// The MQTT connection failed or was lost.
    pub fn mqtt_connection_error(&self) {
        self.mqtt_connection_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// An MQTT message dropped before it became an uplink, by reason (`oversize`, `retained`,
    /// `malformed`, `topic-mismatch`).
    pub fn mqtt_dropped(&self, reason: &str) {
        bump(&self.mqtt_dropped, reason);
    }

    /// Expensive key work done (ECDH + signature, or a verification) and how long it took.
    pub fn key_work(&self, nanos: u64) {
        self.key_work.fetch_add(1, Ordering::Relaxed);
        self.key_work_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Sets the pending-session gauge.
    pub fn set_pending_sessions(&self, n: i64) {
        self.pending_sessions.store(n, Ordering::Relaxed);
    }

    /// Completed rekeys so far.
    #[must_use]
    pub fn completed(&self) -> u64 {
        self.rekeys_completed.load(Ordering::Relaxed)
    }

    /// Started runs so far.
    #[must_use]
    pub fn started(&self) -> u64 {
        self.rekeys_started.load(Ordering::Relaxed)
    }

    /// Failed runs by reason.
    #[must_use]
    pub fn failed(&self) -> BTreeMap<String, u64> {
        self.rekeys_failed
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// JoinReqs by result.
    #[must_use]
    pub fn join_requests(&self) -> BTreeMap<String, u64> {
        self.join_requests
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Seconds of key work so far (CPU time inside the crypto backend's expensive operations).
    #[must_use]
    pub fn key_work_seconds(&self) -> f64 {
        self.key_work_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// The Prometheus text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            &mut out,
            "lorapki_rekeys_started_total",
            "Key-exchange runs started.",
            self.rekeys_started.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "lorapki_rekeys_completed_total",
            "Rekeys completed (new key active, old key retired).",
            self.rekeys_completed.load(Ordering::Relaxed),
        );
        let labelled = |out: &mut String,
                        name: &str,
                        help: &str,
                        label: &str,
                        map: &Mutex<BTreeMap<String, u64>>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            if let Ok(m) = map.lock() {
                for (k, v) in m.iter() {
                    let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {v}");
                }
            }
        };
        labelled(
            &mut out,
            "lorapki_rekeys_failed_total",
            "Key-exchange runs that ended without a new key, by reason.",
            "reason",
            &self.rekeys_failed,
        );
        labelled(
            &mut out,
            "lorapki_join_requests_total",
            "JoinReq messages answered by the join server, by result code.",
            "result",
            &self.join_requests,
        );
        let _ = writeln!(
            out,
            "# HELP lorapki_uplinks_total FPort-1 uplinks, by outcome (and reason of a refusal).\n\
             # TYPE lorapki_uplinks_total counter"
        );
        if let Ok(m) = self.uplinks.lock() {
            for (labels, v) in m.iter() {
                let _ = writeln!(out, "lorapki_uplinks_total{{{labels}}} {v}");
            }
        }
        labelled(
            &mut out,
            "lorapki_downlinks_total",
            "FPort-1 downlinks published, by kind (answer or abort).",
            "kind",
            &self.downlinks,
        );
        counter(
            &mut out,
            "lorapki_mqtt_connections_total",
            "MQTT connections established (more than one means reconnects).",
            self.mqtt_connections.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "lorapki_mqtt_connection_errors_total",
            "MQTT connection failures and losses.",
            self.mqtt_connection_errors.load(Ordering::Relaxed),
        );
        labelled(
            &mut out,
            "lorapki_mqtt_dropped_total",
            "MQTT messages dropped before they became uplinks, by reason.",
            "reason",
            &self.mqtt_dropped,
        );
        counter(
            &mut out,
            "lorapki_key_work_total",
            "Expensive key operations (ECDH and signing, or a signature verification).",
            self.key_work.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP lorapki_key_work_seconds_total Time spent in expensive key operations.\n\
             # TYPE lorapki_key_work_seconds_total counter\nlorapki_key_work_seconds_total {}",
            self.key_work_seconds()
        );
        let _ = writeln!(
            out,
            "# HELP lorapki_sessions_pending Key-exchange runs pending over all devices.\n\
             # TYPE lorapki_sessions_pending gauge\nlorapki_sessions_pending {}",
            self.pending_sessions.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.rekey_started();
        m.rekey_failed("expired");
        m.join_request("MICFailed");
        m.set_pending_sessions(3);
        m.uplink("accepted");
        m.uplink_refused("rate-limited");
        m.uplink_refused("rate-limited");
        m.downlink("abort");
        m.mqtt_dropped("oversize");
        let text = m.render();
        assert!(text.contains("lorapki_uplinks_total{outcome=\"accepted\"} 1\n"));
        assert!(
            text.contains("lorapki_uplinks_total{outcome=\"refused\",reason=\"rate-limited\"} 2\n")
        );
        assert!(text.contains("lorapki_downlinks_total{kind=\"abort\"} 1\n"));
        assert!(text.contains("lorapki_mqtt_dropped_total{reason=\"oversize\"} 1\n"));
        assert!(text.contains("lorapki_mqtt_connections_total 0\n"));
        assert!(text.contains("lorapki_rekeys_started_total 1"));
        assert!(text.contains("lorapki_rekeys_failed_total{reason=\"expired\"} 1"));
        assert!(text.contains("lorapki_join_requests_total{result=\"MICFailed\"} 1"));
        assert!(text.contains("lorapki_sessions_pending 3"));
    }
}
