//! The server configuration file (TOML). Unknown keys are errors, so that a typo never silently
//! falls back to a default. Secrets may come from the environment instead of the file:
//! `LORAPKI_KEK` (storage KEK), `LORAPKI_JS_TOKEN` (join-server bearer token),
//! `LORAPKI_MQTT_PASSWORD`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::kek::{StorageKek, WrapKek};
use crate::server::ServerOptions;

/// The whole file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    #[serde(default)]
    pub server: ServerSection,
    /// `[database]`.
    #[serde(default)]
    pub database: DatabaseSection,
    /// `[mqtt]`; absent: no MQTT integration.
    pub mqtt: Option<MqttSection>,
    /// `[join_server]`; absent: no join server.
    pub join_server: Option<JoinServerSection>,
    /// `[metrics]`; absent: no metrics endpoint.
    pub metrics: Option<MetricsSection>,
    /// `[chirpstack_grpc]`; absent: no key hand-off to ChirpStack's key store.
    pub chirpstack_grpc: Option<ChirpstackGrpcSection>,
}

/// `[chirpstack_grpc]`: hand new keys to ChirpStack's key store (feature `chirpstack-grpc`).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ChirpstackGrpcSection {
    /// ChirpStack's gRPC API, e.g. `https://chirpstack:8080`. An `http://` URL sends root keys
    /// in clear and is refused unless `insecure_plain_http = true`.
    pub server: String,
    /// CA certificates (PEM) that sign ChirpStack's API certificate (default: the system's).
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// Allow an `http://` URL to a host that is not loopback: root keys cross the network in
    /// clear.
    #[serde(default)]
    pub insecure_plain_http: bool,
    /// API token (prefer `api_token_file` or `LORAPKI_CHIRPSTACK_TOKEN`).
    pub api_token: Option<String>,
    /// File holding the API token.
    pub api_token_file: Option<PathBuf>,
}

/// `[server]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// The primary signing key (PKCS#8 PEM).
    pub key_file: PathBuf,
    /// A second signing key during a server-key rotation (devices that pinned it name its key
    /// id in the registry).
    pub second_key_file: Option<PathBuf>,
    /// Storage KEK, 64 hex digits (prefer `kek_file` or `LORAPKI_KEK`).
    pub kek: Option<String>,
    /// File holding the storage KEK (64 hex digits).
    pub kek_file: Option<PathBuf>,
    /// Manufacturer CA bundle (PEM) for device certificates at import.
    pub ca_file: Option<PathBuf>,
    /// Maximum FPort-1 downlink payload.
    pub max_downlink_payload: usize,
    /// Pending run idle expiry, seconds.
    pub idle_timeout_secs: u64,
    /// Runs per device back to back.
    pub runs_burst: u8,
    /// One more run per this many seconds.
    pub runs_refill_secs: u64,
    /// FPort-1 uplinks per device per minute.
    pub uplinks_per_minute: u32,
    /// Burst of that limit.
    pub uplink_burst: u32,
    /// Crypto engines (0: one per core).
    pub engines: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        let o = ServerOptions::default();
        Self {
            key_file: PathBuf::from("server-key.pem"),
            second_key_file: None,
            kek: None,
            kek_file: None,
            ca_file: None,
            max_downlink_payload: o.max_downlink_payload,
            idle_timeout_secs: o.idle_timeout.as_secs(),
            runs_burst: o.runs_burst,
            runs_refill_secs: o.runs_refill.as_secs(),
            uplinks_per_minute: o.uplinks_per_minute,
            uplink_burst: o.uplink_burst,
            engines: 0,
        }
    }
}

/// `[database]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    /// `sqlite://lorapki.db` (default) or `postgres://user@host/db`.
    pub url: String,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self {
            url: "sqlite://lorapki.db".into(),
        }
    }
}

/// `[mqtt]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// `host:port` of the broker ChirpStack publishes to.
    pub server: String,
    /// Client id; must differ between instances.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Username.
    pub username: Option<String>,
    /// Password (prefer `LORAPKI_MQTT_PASSWORD`).
    pub password: Option<String>,
    /// Shared-subscription group ("" for a plain subscription).
    #[serde(default = "default_group")]
    pub shared_group: String,
    /// Send downlinks confirmed.
    #[serde(default)]
    pub confirmed_downlinks: bool,
    /// ChirpStack's integration topic prefix.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// CA certificates (PEM) that sign the broker's certificate (default: the system's).
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// Connect without TLS to a broker that is not on loopback: uplinks, answers and (with
    /// `[chirpstack_grpc]`) the join and log events that switch keys cross the network
    /// unauthenticated.
    #[serde(default)]
    pub insecure_plain_tcp: bool,
}

fn default_client_id() -> String {
    format!("lorapki-{}", std::process::id())
}
fn default_group() -> String {
    "lorapki".into()
}
fn default_prefix() -> String {
    "application".into()
}

/// `[join_server]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct JoinServerSection {
    /// Listen address.
    pub bind: SocketAddr,
    /// Bearer token (prefer `token_file` or `LORAPKI_JS_TOKEN`).
    pub token: Option<String>,
    /// File holding the bearer token.
    pub token_file: Option<PathBuf>,
    /// KEK label for the network session keys.
    pub nwk_kek_label: Option<String>,
    /// That KEK, hex (16, 24 or 32 bytes); prefer `nwk_kek_file`.
    pub nwk_kek: Option<String>,
    /// File holding that KEK in hex (`lorapki-server secretgen --out ns-kek.hex`).
    pub nwk_kek_file: Option<PathBuf>,
    /// KEK label for the AppSKey.
    pub app_kek_label: Option<String>,
    /// That KEK, hex; prefer `app_kek_file`.
    pub app_kek: Option<String>,
    /// File holding that KEK in hex.
    pub app_kek_file: Option<PathBuf>,
    /// Server certificate chain (PEM) of the join server's HTTPS listener.
    pub tls_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// CA certificates (PEM): when set, the network server must present a client certificate
    /// they sign.
    pub tls_client_ca_file: Option<PathBuf>,
    /// Serve plain HTTP on an address other than loopback: session keys and JoinAccepts cross
    /// the network in clear.
    #[serde(default)]
    pub insecure_plain_http: bool,
    /// Accept JoinReqs without a bearer token: anyone who reaches the port may ask for joins.
    #[serde(default)]
    pub insecure_no_token: bool,
    /// Hand the network session keys back unwrapped when no `nwk_kek` is set.
    #[serde(default)]
    pub insecure_plain_session_keys: bool,
}

impl JoinServerSection {
    /// The secure defaults (PROTOCOL.md §10): HTTPS, a bearer token and wrapped network session
    /// keys, each switched off only by its `insecure_*` setting.
    fn check(&self) -> Result<()> {
        pair(
            &self.tls_cert_file,
            &self.tls_key_file,
            "[join_server] tls_cert_file and tls_key_file",
        )?;
        if self.tls_cert_file.is_none()
            && !self.bind.ip().is_loopback()
            && !self.insecure_plain_http
        {
            return Err(Error::Config(format!(
                "[join_server] bind = {}: off loopback it needs tls_cert_file and tls_key_file \
                 (HTTPS: session keys and JoinAccepts cross this connection), or \
                 insecure_plain_http = true",
                self.bind
            )));
        }
        if self.tls_client_ca_file.is_some() && self.tls_cert_file.is_none() {
            return Err(Error::Config(
                "[join_server] tls_client_ca_file needs tls_cert_file and tls_key_file".into(),
            ));
        }
        let token = std::env::var_os("LORAPKI_JS_TOKEN").is_some()
            || self.token_file.is_some()
            || self.token.as_ref().is_some_and(|t| !t.is_empty());
        if !token && !self.insecure_no_token {
            return Err(Error::Config(
                "[join_server] needs a bearer token (LORAPKI_JS_TOKEN, token_file or token; \
                 ChirpStack sends it with authorization_header = \"Bearer …\"), or \
                 insecure_no_token = true"
                    .into(),
            ));
        }
        for (what, label, key, file) in [
            (
                "nwk",
                &self.nwk_kek_label,
                &self.nwk_kek,
                &self.nwk_kek_file,
            ),
            (
                "app",
                &self.app_kek_label,
                &self.app_kek,
                &self.app_kek_file,
            ),
        ] {
            if key.is_some() && file.is_some() {
                return Err(Error::Config(format!(
                    "[join_server] {what}_kek and {what}_kek_file: give one of them"
                )));
            }
            if label.is_some() != (key.is_some() || file.is_some()) {
                return Err(Error::Config(format!(
                    "[join_server] {what}_kek_label and {what}_kek (or {what}_kek_file) go \
                     together"
                )));
            }
        }
        if self.nwk_kek.is_none()
            && self.nwk_kek_file.is_none()
            && !self.insecure_plain_session_keys
        {
            return Err(Error::Config(
                "[join_server] needs nwk_kek_label and nwk_kek_file (or nwk_kek): the network \
                 session keys are RFC 3394-wrapped under it, and ChirpStack's [[keks]] holds the \
                 same KEK; or insecure_plain_session_keys = true"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// The join server's HTTPS settings (`None`: plain HTTP, which [`Config::parse`] allows
    /// only on loopback or with `insecure_plain_http`).
    #[must_use]
    pub fn join_server_tls(&self) -> Option<crate::tls::ServerTls> {
        let js = self.join_server.as_ref()?;
        Some(crate::tls::ServerTls {
            cert_file: js.tls_cert_file.clone()?,
            key_file: js.tls_key_file.clone()?,
            client_ca_file: js.tls_client_ca_file.clone(),
        })
    }
}

/// Whether `host` (a name or an address) is this machine's loopback.
fn loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Both or neither of two settings.
fn pair<A, B>(a: &Option<A>, b: &Option<B>, what: &str) -> Result<()> {
    if a.is_some() == b.is_some() {
        Ok(())
    } else {
        Err(Error::Config(format!("{what} go together")))
    }
}

/// `[metrics]`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Listen address of the Prometheus text endpoint (`GET /metrics`).
    pub bind: SocketAddr,
}

impl Config {
    /// Parses TOML text.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] with the position and reason.
    pub fn parse(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.options()?;
        if let Some(m) = &config.mqtt {
            split_host_port(&m.server)?;
            pair(
                &m.tls_cert_file,
                &m.tls_key_file,
                "[mqtt] tls_cert_file and tls_key_file",
            )?;
            if m.insecure_plain_tcp && (m.tls_ca_file.is_some() || m.tls_cert_file.is_some()) {
                return Err(Error::Config(
                    "[mqtt] insecure_plain_tcp and tls_* settings exclude each other".into(),
                ));
            }
        }
        if let Some(js) = &config.join_server {
            js.check()?;
        }
        if let Some(g) = &config.chirpstack_grpc {
            pair(
                &g.tls_cert_file,
                &g.tls_key_file,
                "[chirpstack_grpc] tls_cert_file and tls_key_file",
            )?;
            let (plain, host) = grpc_url(&g.server)?;
            if plain && !loopback_host(&host) && !g.insecure_plain_http {
                return Err(Error::Config(format!(
                    "[chirpstack_grpc] server = {}: plain HTTP off loopback would send root keys \
                     in clear; use https:// or set insecure_plain_http = true",
                    g.server
                )));
            }
        }
        if config.chirpstack_grpc.is_some() {
            if !cfg!(feature = "chirpstack-grpc") {
                return Err(Error::Config(
                    "[chirpstack_grpc] needs a build with the chirpstack-grpc feature".into(),
                ));
            }
            if config.mqtt.is_none() {
                return Err(Error::Config(
                    "[chirpstack_grpc] needs the [mqtt] integration (log and join events)".into(),
                ));
            }
        }
        Ok(config)
    }

    /// Reads and parses a file.
    ///
    /// # Errors
    ///
    /// [`Error::IoAt`] naming the file if it cannot be read, else as [`parse`](Self::parse).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io_at(path.display()))?;
        Self::parse(&text)
    }

    /// The server-core options.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for out-of-range values.
    pub fn options(&self) -> Result<ServerOptions> {
        let s = &self.server;
        if !(lorapki_wire::MIN_PAYLOAD..=lorapki_wire::MAX_PAYLOAD)
            .contains(&s.max_downlink_payload)
        {
            return Err(Error::Config(
                "server.max_downlink_payload must be 11..=242".into(),
            ));
        }
        if s.runs_burst == 0 || s.uplink_burst == 0 || s.uplinks_per_minute == 0 {
            return Err(Error::Config(
                "server.runs_burst, uplink_burst and uplinks_per_minute must be > 0".into(),
            ));
        }
        let defaults = ServerOptions::default();
        Ok(ServerOptions {
            max_downlink_payload: s.max_downlink_payload,
            idle_timeout: Duration::from_secs(s.idle_timeout_secs.max(1)),
            runs_burst: s.runs_burst,
            runs_refill: Duration::from_secs(s.runs_refill_secs.max(1)),
            uplinks_per_minute: s.uplinks_per_minute,
            uplink_burst: s.uplink_burst,
            engines: if s.engines == 0 {
                defaults.engines
            } else {
                s.engines
            },
        })
    }

    /// The storage KEK: `LORAPKI_KEK`, else `kek_file`, else `kek`; it carries where it came
    /// from, which the errors about it name.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if none is set, [`Error::IoAt`] if `kek_file` cannot be read,
    /// [`Error::Key`] if it is malformed.
    pub fn storage_kek(&self) -> Result<StorageKek> {
        let named = |origin: String, text: &str| match StorageKek::from_hex(text) {
            Ok(kek) => Ok(kek.with_origin(origin)),
            Err(Error::Key(m)) => Err(Error::Key(format!("{origin}: {m}"))),
            Err(e) => Err(e),
        };
        if let Ok(v) = std::env::var("LORAPKI_KEK") {
            return named(
                "the environment variable LORAPKI_KEK".into(),
                &Zeroizing::new(v),
            );
        }
        if let Some(path) = &self.server.kek_file {
            let origin = format!("[server] kek_file = {}", path.display());
            let text =
                Zeroizing::new(std::fs::read_to_string(path).map_err(Error::io_at(&origin))?);
            return named(origin, &text);
        }
        if let Some(k) = &self.server.kek {
            return named("[server] kek in the configuration file".into(), k);
        }
        Err(Error::Config(
            "no storage KEK: set LORAPKI_KEK, server.kek_file or server.kek (64 hex digits; \
             `lorapki-server kekgen --kek storage-kek.hex` writes one)"
                .into(),
        ))
    }

    /// The join-server settings.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] / [`Error::Key`]; [`Error::IoAt`] if `token_file` cannot be read.
    pub fn join_server_settings(
        &self,
    ) -> Result<Option<(SocketAddr, crate::joinserver::JoinServerSettings)>> {
        let Some(js) = &self.join_server else {
            return Ok(None);
        };
        let token = if let Ok(t) = std::env::var("LORAPKI_JS_TOKEN") {
            Some(Zeroizing::new(t))
        } else if let Some(path) = &js.token_file {
            let t = std::fs::read_to_string(path).map_err(Error::io_at(format_args!(
                "[join_server] token_file = {}",
                path.display()
            )))?;
            Some(Zeroizing::new(t.trim().to_owned()))
        } else {
            js.token.clone().map(Zeroizing::new)
        };
        let token = token.filter(|t| !t.is_empty());
        if token.is_none() && !js.insecure_no_token {
            return Err(Error::Config(
                "[join_server] the bearer token is empty (LORAPKI_JS_TOKEN, token_file or \
                 token), and insecure_no_token is not set"
                    .into(),
            ));
        }
        let kek = |label: &Option<String>,
                   key: &Option<String>,
                   file: &Option<PathBuf>,
                   what: &str|
         -> Result<Option<WrapKek>> {
            let Some(label) = label else {
                return Ok(None);
            };
            match (key, file) {
                (Some(k), None) => WrapKek::from_hex(label, k).map(Some),
                (None, Some(path)) => {
                    let origin = format!("[join_server] {what}_kek_file = {}", path.display());
                    let text = Zeroizing::new(
                        std::fs::read_to_string(path).map_err(Error::io_at(&origin))?,
                    );
                    WrapKek::from_hex(label, text.trim())
                        .map(Some)
                        .map_err(|e| Error::Config(format!("{origin}: {e}")))
                }
                _ => Err(Error::Config(format!(
                    "[join_server] {what}_kek_label needs {what}_kek or {what}_kek_file"
                ))),
            }
        };
        Ok(Some((
            js.bind,
            crate::joinserver::JoinServerSettings {
                token,
                nwk_kek: kek(&js.nwk_kek_label, &js.nwk_kek, &js.nwk_kek_file, "nwk")?,
                app_kek: kek(&js.app_kek_label, &js.app_kek, &js.app_kek_file, "app")?,
            },
        )))
    }

    /// The MQTT settings.
    ///
    /// # Errors
    ///
    /// [`Error::Config`].
    pub fn mqtt_settings(&self) -> Result<Option<crate::chirpstack::MqttSettings>> {
        let Some(m) = &self.mqtt else {
            return Ok(None);
        };
        let (host, port) = split_host_port(&m.server)?;
        let mut s = crate::chirpstack::MqttSettings::new(&host, port, &m.client_id);
        s.username = m.username.clone();
        s.password = std::env::var("LORAPKI_MQTT_PASSWORD")
            .ok()
            .or_else(|| m.password.clone());
        s.shared_group = (!m.shared_group.is_empty()).then(|| m.shared_group.clone());
        s.confirmed = m.confirmed_downlinks;
        s.topic_prefix.clone_from(&m.topic_prefix);
        // TLS unless the broker is on loopback (and no TLS setting asks for it) or plain TCP is
        // asked for by name.
        let wants_tls = m.tls_ca_file.is_some() || m.tls_cert_file.is_some();
        if wants_tls || !(m.insecure_plain_tcp || loopback_host(&host)) {
            let client = match (&m.tls_cert_file, &m.tls_key_file) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                _ => None,
            };
            s.tls = Some(crate::tls::client_config(
                m.tls_ca_file.as_deref(),
                client,
                "[mqtt]",
            )?);
        }
        Ok(Some(s))
    }
}

impl Config {
    /// The ChirpStack API token: `LORAPKI_CHIRPSTACK_TOKEN`, else `api_token_file`, else
    /// `api_token`.
    ///
    /// # Errors
    ///
    /// [`Error::IoAt`] if `api_token_file` cannot be read.
    pub fn chirpstack_token(&self) -> Result<Option<Zeroizing<String>>> {
        let Some(g) = &self.chirpstack_grpc else {
            return Ok(None);
        };
        if let Ok(t) = std::env::var("LORAPKI_CHIRPSTACK_TOKEN") {
            return Ok(Some(Zeroizing::new(t)));
        }
        if let Some(path) = &g.api_token_file {
            let t = std::fs::read_to_string(path).map_err(Error::io_at(format_args!(
                "[chirpstack_grpc] api_token_file = {}",
                path.display()
            )))?;
            return Ok(Some(Zeroizing::new(t.trim().to_owned())));
        }
        Ok(g.api_token.clone().map(Zeroizing::new))
    }
}

/// Whether a gRPC URL is plain (`http://`) and its host.
fn grpc_url(url: &str) -> Result<(bool, String)> {
    let url = url.trim();
    let lower = url.to_ascii_lowercase();
    let (plain, rest) = if lower.starts_with("http://") {
        (true, &url[7..])
    } else if lower.starts_with("https://") {
        (false, &url[8..])
    } else {
        return Err(Error::Config(format!(
            "[chirpstack_grpc] server = {url}: needs https:// (or http://)"
        )));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default().to_owned(),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_owned(),
    };
    if host.is_empty() {
        return Err(Error::Config(format!(
            "[chirpstack_grpc] server = {url}: no host"
        )));
    }
    Ok((plain, host))
}

impl Config {
    /// The gRPC channel's TLS settings (`None` for an `http://` URL).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] / [`Error::IoAt`] for bad certificate settings.
    #[cfg(feature = "chirpstack-grpc")]
    pub fn chirpstack_grpc_tls(&self) -> Result<Option<tonic::transport::ClientTlsConfig>> {
        let Some(g) = &self.chirpstack_grpc else {
            return Ok(None);
        };
        let (plain, host) = grpc_url(&g.server)?;
        if plain {
            return Ok(None);
        }
        let client = match (&g.tls_cert_file, &g.tls_key_file) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        crate::tls::grpc_tls(g.tls_ca_file.as_deref(), client, &host, "[chirpstack_grpc]").map(Some)
    }
}

fn split_host_port(server: &str) -> Result<(String, u16)> {
    let s = server
        .trim()
        .trim_start_matches("tcp://")
        .trim_start_matches("mqtt://");
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| Error::Config("mqtt.server must be host:port".into()))?;
    let port = port
        .parse()
        .map_err(|_| Error::Config("mqtt.server port must be a number".into()))?;
    if host.is_empty() {
        return Err(Error::Config("mqtt.server host is empty".into()));
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = include_str!("../server.toml");
        let c = Config::parse(text).unwrap();
        assert!(c.mqtt.is_some());
        assert!(c.join_server.is_some());
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        for (text, needle) in [
            ("[server]\nkey_fil = \"x\"", "unknown field"),
            ("[server]\nmax_downlink_payload = 5", "11..=242"),
            ("[server]\nconfirm_on = \"join\"", "unknown field"),
            ("[mqtt]\nserver = \"nohost\"", "host:port"),
            ("[join_server]\nbind = \"not an address\"", "socket address"),
            ("not toml at all ===", "expected"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    /// The join server's secure defaults: each weakening needs its own `insecure_*` setting,
    /// and the error names the setting that would have to change.
    #[test]
    fn the_join_server_is_secure_unless_told_otherwise() {
        const KEK: &str =
            "nwk_kek_label = \"ns\"\nnwk_kek = \"000102030405060708090a0b0c0d0e0f\"\n";
        const TOKEN: &str = "token = \"t0ken\"\n";
        let js = |rest: &str| format!("[join_server]\nbind = \"127.0.0.1:8003\"\n{rest}");
        let js_on = |bind: &str, rest: &str| format!("[join_server]\nbind = \"{bind}\"\n{rest}");
        if std::env::var_os("LORAPKI_JS_TOKEN").is_none() {
            for (text, needle) in [
                (js(KEK), "insecure_no_token = true"),
                (
                    js(&format!("{KEK}token = \"\"\n")),
                    "insecure_no_token = true",
                ),
            ] {
                let e = Config::parse(&text).unwrap_err().to_string();
                assert!(e.contains(needle), "{text:?}: {e}");
            }
        }
        for (text, needle) in [
            (js(TOKEN), "insecure_plain_session_keys = true"),
            (
                js_on("0.0.0.0:8003", &format!("{TOKEN}{KEK}")),
                "insecure_plain_http = true",
            ),
            (
                js_on("192.0.2.1:8003", &format!("{TOKEN}{KEK}")),
                "[join_server] bind = 192.0.2.1:8003",
            ),
            (
                js(&format!("{TOKEN}{KEK}tls_cert_file = \"c.pem\"\n")),
                "tls_cert_file and tls_key_file",
            ),
            (
                js(&format!("{TOKEN}{KEK}tls_client_ca_file = \"ca.pem\"\n")),
                "tls_client_ca_file needs",
            ),
            (
                js(&format!("{TOKEN}nwk_kek = \"00\"\n")),
                "nwk_kek_label and nwk_kek",
            ),
            (
                js(&format!("{TOKEN}{KEK}nwk_kek_file = \"k.hex\"\n")),
                "give one of them",
            ),
        ] {
            let e = Config::parse(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
        for text in [
            js(&format!("{TOKEN}{KEK}")),
            js("insecure_no_token = true\ninsecure_plain_session_keys = true\n"),
            js_on(
                "0.0.0.0:8003",
                &format!("{TOKEN}{KEK}tls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n"),
            ),
            js_on(
                "0.0.0.0:8003",
                &format!("{TOKEN}{KEK}insecure_plain_http = true\n"),
            ),
        ] {
            assert!(Config::parse(&text).is_ok(), "{text:?}");
        }
    }

    /// Root keys never leave for a network address in clear unless told to.
    #[test]
    fn plain_grpc_and_mqtt_off_loopback_need_their_insecure_setting() {
        let grpc = |server: &str, rest: &str| {
            format!(
                "[mqtt]\nserver = \"127.0.0.1:1883\"\nclient_id = \"c\"\n\
                 [chirpstack_grpc]\nserver = \"{server}\"\n{rest}"
            )
        };
        if cfg!(feature = "chirpstack-grpc") {
            let e = Config::parse(&grpc("http://chirpstack.example:8080", ""))
                .unwrap_err()
                .to_string();
            assert!(e.contains("insecure_plain_http = true"), "{e}");
            for text in [
                grpc("http://127.0.0.1:8080", ""),
                grpc("http://localhost:8080", ""),
                grpc("https://chirpstack.example:8080", ""),
                grpc(
                    "http://chirpstack.example:8080",
                    "insecure_plain_http = true\n",
                ),
            ] {
                assert!(Config::parse(&text).is_ok(), "{text:?}");
            }
        }
        let e = Config::parse(
            "[mqtt]\nserver = \"broker.example:8883\"\nclient_id = \"c\"\n\
             insecure_plain_tcp = true\ntls_ca_file = \"ca.pem\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("exclude each other"), "{e}");
    }
}
