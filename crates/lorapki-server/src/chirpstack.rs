//! ChirpStack v4 MQTT integration: uplink events in, downlink commands out.
//!
//! Subscribes (as a shared subscription, so that several instances share the load) to
//! `application/+/device/+/event/up`, feeds FPort-1 payloads to the [`Server`], and publishes the
//! answers to `application/{applicationId}/device/{devEui}/command/down`. No event on the broker changes a
//! root key here: the join server confirms a new key only by a JoinRequest under it (PROTOCOL.md
//! §7). Only the hand-off to ChirpStack's own key store ([`crate::keyhandoff`]) reads the
//! devices' `log` and `join` events, which the broker's ACL must let only ChirpStack publish.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, RetainForwardRule, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde::Deserialize;
use tokio::sync::{Semaphore, watch};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::eui::Eui64;
use crate::logthrottle::REFUSALS;
use crate::metrics::Metrics;
use crate::server::{Server, downlink_kind};

/// Largest event (MQTT payload) processed; a larger one is dropped and counted as `oversize`.
/// A ChirpStack uplink event is a few KiB even with many gateways in `rxInfo`.
pub const MAX_EVENT: usize = 64 * 1024;

/// Largest MQTT packet the client reads, announced to the broker as the MQTT 5 Maximum Packet
/// Size of the CONNECT.
///
/// Why MQTT 5 and why two bounds: an MQTT 3.1.1 client cannot tell the broker its limit, so a
/// packet over its read limit can only be refused by closing the connection — and any client
/// allowed to publish on the uplink topic could then keep the server offline (a *retained*
/// oversize message does it at every reconnect: mosquitto 2.0 offers retained messages to
/// `$share` subscriptions too). Under MQTT 5 the broker must not send a packet larger than the
/// announced size: it discards it for this client (MQTT 5 §3.1.2.11.4; mosquitto 2.0 does), and
/// the connection stays up. Messages between [`MAX_EVENT`] and this bound are read and counted
/// (`lorapki_mqtt_dropped_total{reason="oversize"}`); larger ones never reach the server (the
/// broker drops them). The subscription also asks for no retained messages (Retain Handling 2),
/// and any message still marked retained is dropped and counted: a retained uplink event is a
/// stale copy, not a live uplink.
pub const MAX_PACKET: u32 = 256 * 1024;
/// Uplinks processed at once per instance.
const IN_FLIGHT: usize = 512;

/// MQTT settings.
#[derive(Clone)]
pub struct MqttSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id (unique per instance).
    pub client_id: String,
    /// Credentials.
    pub username: Option<String>,
    /// Credentials.
    pub password: Option<String>,
    /// Shared-subscription group; `None` subscribes plainly (one instance only).
    pub shared_group: Option<String>,
    /// Send downlinks as confirmed.
    pub confirmed: bool,
    /// Topic prefix of ChirpStack's integration (`application`).
    pub topic_prefix: String,
    /// TLS to the broker (`None`: plain TCP).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "REDACTED"))
            .field("shared_group", &self.shared_group)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl MqttSettings {
    /// Settings for a broker at `host:port` with the defaults.
    #[must_use]
    pub fn new(host: &str, port: u16, client_id: &str) -> Self {
        Self {
            host: host.to_owned(),
            port,
            client_id: client_id.to_owned(),
            username: None,
            password: None,
            shared_group: Some("lorapki".into()),
            confirmed: false,
            topic_prefix: "application".into(),
            tls: None,
        }
    }

    /// The uplink subscription filter.
    #[must_use]
    pub fn uplink_filter(&self) -> String {
        let plain = format!("{}/+/device/+/event/up", self.topic_prefix);
        match &self.shared_group {
            Some(g) => format!("$share/{g}/{plain}"),
            None => plain,
        }
    }
}

/// The fields of a ChirpStack v4 uplink event that matter here (JSON, camelCase).
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct UplinkEvent {
    /// The device.
    pub device_info: DeviceInfo,
    /// DevAddr of the session (hex).
    #[serde(default)]
    pub dev_addr: Option<String>,
    /// FPort (absent for MAC-only frames).
    #[serde(default)]
    pub f_port: Option<u32>,
    /// FRMPayload, base64.
    #[serde(default)]
    pub data: Option<String>,
}

/// `deviceInfo` of an event.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    /// Application id (UUID).
    pub application_id: String,
    /// DevEUI, hex.
    pub dev_eui: String,
}

/// A validated uplink.
#[derive(Debug, PartialEq, Eq)]
pub struct Uplink {
    /// The application (topic-safe).
    pub application_id: String,
    /// The device.
    pub dev_eui: Eui64,
    /// DevAddr, lowercase hex.
    pub dev_addr: Option<String>,
    /// The FRMPayload when FPort is 1.
    pub fport1: Option<Vec<u8>>,
}

fn topic_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Parses and validates an uplink event.
///
/// # Errors
///
/// [`Error::Malformed`] with the reason; nothing was changed.
pub fn parse_uplink(payload: &[u8]) -> Result<Uplink> {
    let event: UplinkEvent = serde_json::from_slice(payload)
        .map_err(|e| Error::Malformed(format!("uplink event JSON: {e}")))?;
    if !topic_safe(&event.device_info.application_id) {
        return Err(Error::Malformed("applicationId is not a plain id".into()));
    }
    let dev_eui: Eui64 = event.device_info.dev_eui.parse()?;
    let dev_addr = match event.dev_addr {
        Some(a) => {
            let mut b = [0u8; 4];
            hex::decode_to_slice(a.trim(), &mut b)
                .map_err(|_| Error::Malformed("devAddr must be 8 hex digits".into()))?;
            Some(hex::encode(b))
        }
        None => None,
    };
    let fport1 = if event.f_port == Some(u32::from(lorapki_proto::FPORT)) {
        let data = event.data.unwrap_or_default();
        if data.len() > 4 * lorapki_wire::MAX_PAYLOAD {
            return Err(Error::Malformed("data too long".into()));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|_| Error::Malformed("data is not base64".into()))?;
        if bytes.is_empty() || bytes.len() > lorapki_wire::MAX_PAYLOAD {
            return Err(Error::Malformed(format!(
                "FPort-1 payload of {} bytes",
                bytes.len()
            )));
        }
        Some(bytes)
    } else {
        None
    };
    Ok(Uplink {
        application_id: event.device_info.application_id,
        dev_eui,
        dev_addr,
        fport1,
    })
}

/// The fields of a ChirpStack v4 log or join event that matter here.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct DeviceEvent {
    /// The device.
    pub device_info: DeviceInfo,
    /// The log code (`UPLINK_MIC`, …) of a log event.
    #[serde(default)]
    pub code: Option<String>,
}

/// The key hand-off to ChirpStack's key store, when built and configured.
#[cfg(feature = "chirpstack-grpc")]
type Handoff = Option<Arc<crate::keyhandoff::KeyHandoff>>;
#[cfg(not(feature = "chirpstack-grpc"))]
type Handoff = ();

#[cfg(feature = "chirpstack-grpc")]
async fn handle_device_event(
    handoff: &Handoff,
    prefix: &str,
    topic: &str,
    payload: &[u8],
) -> Result<()> {
    let Some(handoff) = handoff else {
        return Ok(());
    };
    let event: DeviceEvent = serde_json::from_slice(payload)
        .map_err(|e| Error::Malformed(format!("device event JSON: {e}")))?;
    let dev_eui: Eui64 = event.device_info.dev_eui.parse()?;
    check_topic(prefix, topic, &event.device_info.application_id, dev_eui)?;
    if topic.ends_with("/event/log") && event.code.as_deref() == Some("UPLINK_MIC") {
        handoff.on_mic_failure(dev_eui).await?;
    } else if topic.ends_with("/event/join") {
        handoff.on_join(dev_eui).await?;
    }
    Ok(())
}

#[cfg(not(feature = "chirpstack-grpc"))]
async fn handle_device_event(_: &Handoff, _: &str, _: &str, _: &[u8]) -> Result<()> {
    Ok(())
}

/// The downlink command for ChirpStack: topic and JSON body.
#[must_use]
pub fn downlink_command(
    prefix: &str,
    application_id: &str,
    dev_eui: Eui64,
    data: &[u8],
    confirmed: bool,
) -> (String, Vec<u8>) {
    let topic = format!("{prefix}/{application_id}/device/{dev_eui}/command/down");
    let body = serde_json::json!({
        "devEui": dev_eui.to_string(),
        "confirmed": confirmed,
        "fPort": lorapki_proto::FPORT,
        "data": base64::engine::general_purpose::STANDARD.encode(data),
    });
    (topic, body.to_string().into_bytes())
}

/// The application id and DevEUI (as written) that a topic
/// `{prefix}/{applicationId}/device/{devEui}/event/{kind}` names.
fn topic_device<'a>(prefix: &str, topic: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let mut parts = rest.split('/');
    let application_id = parts.next()?;
    let device = parts.next()?;
    let dev_eui = parts.next()?;
    (device == "device" && parts.next() == Some("event")).then_some((application_id, dev_eui))
}

/// Checks that the topic names the device and application of the event's `deviceInfo`: an event
/// on another device's topic is not that device's (a publisher may only be allowed some topics).
fn check_topic(prefix: &str, topic: &str, application_id: &str, dev_eui: Eui64) -> Result<()> {
    let agrees = topic_device(prefix, topic).is_some_and(|(app, eui)| {
        app == application_id && eui.parse::<Eui64>().is_ok_and(|e| e == dev_eui)
    });
    if agrees {
        Ok(())
    } else {
        Err(Error::Malformed(format!(
            "topic does not name application {application_id} and device {dev_eui} of the event"
        )))
    }
}

/// Why a message did not become an uplink.
enum Failure {
    /// Dropped, by reason (the `reason` label of `lorapki_mqtt_dropped_total`), with details.
    Dropped(&'static str, String),
    /// The uplink failed (store, broker).
    Error(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::Malformed(m) => Self::Dropped("malformed", m),
            other => Self::Error(other),
        }
    }
}

/// Counts and logs (throttled) a message dropped before it became an uplink.
fn dropped(metrics: &Metrics, reason: &'static str, topic: &str, detail: &str) {
    metrics.mqtt_dropped(reason);
    if let Some(suppressed) = REFUSALS.admit("mqtt", reason) {
        info!(topic, reason, detail, suppressed, "MQTT message dropped");
    }
}

async fn handle_publish(
    server: &Server,
    client: &AsyncClient,
    settings: &MqttSettings,
    handoff: &Handoff,
    topic: &str,
    payload: &[u8],
) -> std::result::Result<(), Failure> {
    if !topic.ends_with("/event/up") {
        return Ok(handle_device_event(handoff, &settings.topic_prefix, topic, payload).await?);
    }
    let uplink = parse_uplink(payload)?;
    check_topic(
        &settings.topic_prefix,
        topic,
        &uplink.application_id,
        uplink.dev_eui,
    )
    .map_err(|e| Failure::Dropped("topic-mismatch", e.to_string()))?;
    let Some(frame) = uplink.fport1 else {
        return Ok(());
    };
    if let Some(answer) = server.handle_uplink(uplink.dev_eui, &frame).await? {
        let (topic, body) = downlink_command(
            &settings.topic_prefix,
            &uplink.application_id,
            uplink.dev_eui,
            &answer,
            settings.confirmed,
        );
        client
            .publish(topic, QoS::AtLeastOnce, false, body)
            .await
            .map_err(Error::from)?;
        server.metrics().downlink(downlink_kind(&answer));
    }
    Ok(())
}

/// Runs the integration until `shutdown` becomes true: connects (and reconnects) to the broker,
/// subscribes, and serves uplinks with bounded concurrency.
///
/// # Errors
///
/// Only for invalid settings; connection failures are retried.
pub async fn run(
    server: Arc<Server>,
    settings: MqttSettings,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    #[cfg(feature = "chirpstack-grpc")]
    let handoff: Handoff = None;
    #[cfg(not(feature = "chirpstack-grpc"))]
    let handoff: Handoff = ();
    run_inner(server, settings, handoff, shutdown).await
}

/// [`run`], and also hands new keys to ChirpStack's key store: subscribes to the devices' log
/// and join events as well (see [`crate::keyhandoff`]).
///
/// # Errors
///
/// As [`run`].
#[cfg(feature = "chirpstack-grpc")]
pub async fn run_with_handoff(
    server: Arc<Server>,
    settings: MqttSettings,
    handoff: Arc<crate::keyhandoff::KeyHandoff>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    run_inner(server, settings, Some(handoff), shutdown).await
}

async fn run_inner(
    server: Arc<Server>,
    settings: MqttSettings,
    handoff: Handoff,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    // Named in the connection logs as the setting it comes from.
    let broker = format!("[mqtt] server = {}:{}", settings.host, settings.port);
    let mut options = MqttOptions::new(&settings.client_id, &settings.host, settings.port);
    options.set_keep_alive(Duration::from_secs(30));
    // MQTT 5: the broker discards what is larger for this client (see MAX_PACKET).
    options.set_max_packet_size(Some(MAX_PACKET));
    options.set_clean_start(true);
    let mut network = rumqttc::NetworkOptions::new();
    // Answers go out at once instead of waiting for the previous segment's ACK (Nagle).
    network.set_tcp_nodelay(true);
    options.set_network_options(network);
    if let Some(tls) = &settings.tls {
        options.set_transport(crate::tls::mqtt_transport(Arc::clone(tls)));
    }
    if let (Some(u), Some(p)) = (&settings.username, &settings.password) {
        options.set_credentials(u, p);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    #[cfg_attr(not(feature = "chirpstack-grpc"), allow(unused_mut))]
    let mut filters = vec![settings.uplink_filter()];
    #[cfg(feature = "chirpstack-grpc")]
    if handoff.is_some() {
        let up = settings.uplink_filter();
        let base = up.trim_end_matches("/event/up");
        filters.push(format!("{base}/event/log"));
        filters.push(format!("{base}/event/join"));
    }
    let handoff = Arc::new(handoff);
    let limit = Arc::new(Semaphore::new(IN_FLIGHT));
    let settings = Arc::new(settings);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => break,
            event = eventloop.poll() => event,
        };
        while tasks.try_join_next().is_some() {}
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                server.metrics().mqtt_connected();
                for filter in &filters {
                    info!(broker = %broker, filter = %filter, "MQTT connected; subscribing");
                    let mut f = Filter::new(filter.clone(), QoS::AtLeastOnce);
                    // Retained events are stale copies, not live uplinks.
                    f.retain_forward_rule = RetainForwardRule::Never;
                    client.subscribe_many([f]).await?;
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                {
                    warn!(codes = ?ack.return_codes, "MQTT subscription refused by the broker");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let Ok(topic) = std::str::from_utf8(&publish.topic) else {
                    dropped(server.metrics(), "malformed", "?", "topic is not UTF-8");
                    continue;
                };
                if publish.payload.len() > MAX_EVENT {
                    let detail = format!("{} bytes", publish.payload.len());
                    dropped(server.metrics(), "oversize", topic, &detail);
                    continue;
                }
                if publish.retain {
                    dropped(server.metrics(), "retained", topic, "a retained copy");
                    continue;
                }
                let topic = topic.to_owned();
                let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                    break;
                };
                let server = Arc::clone(&server);
                let client = client.clone();
                let settings = Arc::clone(&settings);
                let handoff = Arc::clone(&handoff);
                tasks.spawn(async move {
                    match handle_publish(
                        &server,
                        &client,
                        &settings,
                        &handoff,
                        &topic,
                        &publish.payload,
                    )
                    .await
                    {
                        Ok(()) => {}
                        Err(Failure::Dropped(reason, detail)) => {
                            dropped(server.metrics(), reason, &topic, &detail);
                        }
                        Err(Failure::Error(e)) => warn!(topic, error = %e, "uplink failed"),
                    }
                    drop(permit);
                });
            }
            Ok(_) => {}
            Err(e) => {
                server.metrics().mqtt_connection_error();
                warn!(broker = %broker, error = %e, "MQTT connection error; reconnecting");
                tokio::select! {
                    _ = shutdown.changed() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    // Let the uplinks in progress finish and their answers go out.
    while tasks.join_next().await.is_some() {}
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(ev) = eventloop.poll().await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chirpstack_uplink() {
        let json = br#"{"deduplicationId":"x","deviceInfo":{"tenantId":"t","applicationId":"0b5d-11","devEui":"70b3d57ed0000001","tags":{}},"devAddr":"01020304","fCnt":3,"fPort":1,"data":"AQID","rxInfo":[]}"#;
        let u = parse_uplink(json).unwrap();
        assert_eq!(u.dev_eui.to_string(), "70b3d57ed0000001");
        assert_eq!(u.fport1, Some(vec![1, 2, 3]));
        assert_eq!(u.dev_addr.as_deref(), Some("01020304"));
        let bad = br#"{"deviceInfo":{"applicationId":"a/b","devEui":"70b3d57ed0000001"},"fPort":1,"data":"AQID"}"#;
        assert!(parse_uplink(bad).is_err());
        let other_port = br#"{"deviceInfo":{"applicationId":"a","devEui":"70b3d57ed0000001"},"fPort":2,"data":"AQID"}"#;
        assert_eq!(parse_uplink(other_port).unwrap().fport1, None);
    }

    #[test]
    fn parses_log_and_join_events() {
        let log = br#"{"time":"t","deviceInfo":{"applicationId":"a","devEui":"70b3d57ed0000001"},"level":"ERROR","code":"UPLINK_MIC","description":"MIC of join-request is invalid","context":{}}"#;
        let e: DeviceEvent = serde_json::from_slice(log).unwrap();
        assert_eq!(e.code.as_deref(), Some("UPLINK_MIC"));
        let join = br#"{"deviceInfo":{"applicationId":"a","devEui":"70b3d57ed0000001"},"devAddr":"01020304"}"#;
        let e: DeviceEvent = serde_json::from_slice(join).unwrap();
        assert_eq!(e.code, None);
        assert_eq!(e.device_info.dev_eui, "70b3d57ed0000001");
    }

    #[test]
    fn topic_must_name_the_events_application_and_device() {
        let eui: Eui64 = "70b3d57ed0000001".parse().unwrap();
        for good in [
            "application/app1/device/70b3d57ed0000001/event/up",
            "application/app1/device/70B3D57ED0000001/event/up",
            "application/app1/device/70b3d57ed0000001/event/log",
        ] {
            assert!(
                check_topic("application", good, "app1", eui).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "application/app1/device/x/event/up",
            "application/app1/device/70b3d57ed0000002/event/up",
            "application/app2/device/70b3d57ed0000001/event/up",
            "other/app1/device/70b3d57ed0000001/event/up",
            "applicationx/app1/device/70b3d57ed0000001/event/up",
            "application/app1/gateway/70b3d57ed0000001/event/up",
            "application/app1/device/70b3d57ed0000001",
            "",
        ] {
            let e = check_topic("application", bad, "app1", eui).unwrap_err();
            assert!(e.to_string().contains("70b3d57ed0000001"), "{bad}: {e}");
        }
    }

    #[test]
    fn builds_downlink_command() {
        let (topic, body) = downlink_command("application", "app1", Eui64([1; 8]), &[4, 20], false);
        assert_eq!(
            topic,
            "application/app1/device/0101010101010101/command/down"
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["fPort"], 1);
        assert_eq!(v["data"], "BBQ=");
        assert_eq!(v["devEui"], "0101010101010101");
    }
}
