//! TLS for the server's network interfaces, on rustls with the *ring* crypto provider:
//!
//! - the join-server HTTP API served over TLS ([`server_config`], [`TlsListener`] for
//!   [`axum::serve`]), optionally requiring client certificates signed by a configured CA;
//! - TLS clients for the MQTT broker ([`client_config`], [`mqtt_transport`]) and, with the
//!   feature `chirpstack-grpc`, for ChirpStack's gRPC API (`grpc_tls`).
//!
//! Certificates and keys are read from PEM files: certificate files hold one or more
//! `CERTIFICATE` sections (the end-entity certificate first, then its intermediates), key files
//! one private key (`PRIVATE KEY` as PKCS#8, `EC PRIVATE KEY` as SEC1 or `RSA PRIVATE KEY` as
//! PKCS#1; encrypted keys are not supported). Files larger than 16 MiB are refused.
//!
//! Every function takes `what`, the configuration section the paths come from (`[join_server]`),
//! and its errors name the section, the setting and the file:
//!
//! - a file that cannot be read is an [`Error::IoAt`]
//!   (`i/o: [join_server] tls_cert_file = /etc/x.pem: No such file or directory …`);
//! - a file that does not hold what it should, or a certificate and key that do not go together,
//!   is an [`Error::Config`]
//!   (`configuration: [join_server] tls_cert_file = /etc/x.pem: no certificate in the file`).
//!
//! The settings named are, for a server: `tls_cert_file`, `tls_key_file`, `tls_client_ca_file`;
//! for a client: `tls_ca_file`, `tls_cert_file`, `tls_key_file`. No error text carries key
//! material.

use std::fmt;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::logthrottle::REFUSALS;

/// The longest a client may take for its TLS handshake before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most TLS handshakes a [`TlsListener`] runs at once (including finished ones whose
/// connection has not been taken by [`accept`](axum::serve::Listener::accept) yet); further TCP
/// connections wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 256;

/// The largest certificate or key file read.
const MAX_FILE: u64 = 16 << 20;

/// The TLS settings of a server section: its certificate chain, its private key and, to require
/// client certificates, the CA certificates that sign them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// PEM certificate chain, end-entity certificate first (`tls_cert_file`).
    pub cert_file: PathBuf,
    /// PEM private key of that certificate (`tls_key_file`).
    pub key_file: PathBuf,
    /// PEM CA certificates; when set, clients must present a certificate signed by one of them
    /// (`tls_client_ca_file`).
    pub client_ca_file: Option<PathBuf>,
}

impl ServerTls {
    /// The rustls configuration of these settings: see [`server_config`].
    ///
    /// # Errors
    ///
    /// As [`server_config`].
    pub fn config(&self, what: &str) -> Result<Arc<ServerConfig>> {
        server_config(
            &self.cert_file,
            &self.key_file,
            self.client_ca_file.as_deref(),
            what,
        )
    }

    /// A [`TlsListener`] serving these settings on `tcp`.
    ///
    /// # Errors
    ///
    /// As [`server_config`].
    pub fn listener(&self, tcp: TcpListener, what: &str) -> Result<TlsListener> {
        Ok(TlsListener::new(tcp, self.config(what)?))
    }
}

/// The rustls server configuration for the certificate chain in `cert_file` and its private key
/// in `key_file`, offering ALPN `http/1.1`, TLS 1.3 and 1.2.
///
/// With `client_ca_file`, every client must present a certificate that chains to one of the CA
/// certificates in that file (mutual TLS); without it, no client certificate is asked for.
///
/// # Errors
///
/// [`Error::IoAt`] naming the file if one cannot be read; [`Error::Config`] naming the setting
/// and file if it holds no certificate (no key), is not valid PEM, if a CA certificate is
/// unusable, or if the key does not match the certificate.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
    what: &str,
) -> Result<Arc<ServerConfig>> {
    let cert_at = setting(what, "tls_cert_file", cert_file);
    let key_at = setting(what, "tls_key_file", key_file);
    let (_, certs) = read_certs(cert_file, &cert_at)?;
    let (_, key) = read_key(key_file, &key_at)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("{what}: TLS: {e}")))?;
    let builder = match client_ca_file {
        Some(ca_file) => {
            let ca_at = setting(what, "tls_client_ca_file", ca_file);
            let (_, cas) = read_certs(ca_file, &ca_at)?;
            let roots = root_store(cas, &ca_at)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::Config(format!("{ca_at}: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| key_error(&e, &cert_at, &key_at))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The rustls client configuration trusting the CA certificates in `ca_file` (PEM, one or more)
/// or, without it, the system's root certificates; with `client_cert` (certificate chain file,
/// key file) it presents that certificate when the server asks for one (mutual TLS).
///
/// No ALPN protocol is offered.
///
/// # Errors
///
/// [`Error::IoAt`] naming the file if one cannot be read; [`Error::Config`] naming the setting
/// and file if it holds no certificate (no key), is not valid PEM, if a CA certificate is
/// unusable or the key does not match the certificate, and — without `ca_file` — if the system
/// has no usable root certificates.
pub fn client_config(
    ca_file: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
    what: &str,
) -> Result<Arc<ClientConfig>> {
    let roots = match ca_file {
        Some(ca_file) => {
            let ca_at = setting(what, "tls_ca_file", ca_file);
            let (_, cas) = read_certs(ca_file, &ca_at)?;
            root_store(cas, &ca_at)?
        }
        None => system_roots(what)?,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("{what}: TLS: {e}")))?
        .with_root_certificates(roots);
    let config = match client_cert {
        Some((cert_file, key_file)) => {
            let cert_at = setting(what, "tls_cert_file", cert_file);
            let key_at = setting(what, "tls_key_file", key_file);
            let (_, certs) = read_certs(cert_file, &cert_at)?;
            let (_, key) = read_key(key_file, &key_at)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| key_error(&e, &cert_at, &key_at))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The MQTT transport over TLS with `config` (from [`client_config`]); the broker's host name of
/// the MQTT options is the name its certificate is verified against.
#[must_use]
pub fn mqtt_transport(config: Arc<ClientConfig>) -> rumqttc::Transport {
    rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config))
}

/// The TLS settings of a gRPC channel to ChirpStack: trusting the CA certificates in `ca_file`
/// or, without it, the system's root certificates, verifying the server's certificate against
/// `domain` (a DNS name or an IP address), and with `client_cert` (certificate chain file, key
/// file) presenting that certificate.
///
/// The files are read and checked here, so that a bad setting shows at start-up, not at the
/// first connection.
///
/// # Errors
///
/// As [`client_config`]; also [`Error::Config`] if `domain` is not a DNS name or IP address.
#[cfg(feature = "chirpstack-grpc")]
pub fn grpc_tls(
    ca_file: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
    domain: &str,
    what: &str,
) -> Result<tonic::transport::ClientTlsConfig> {
    use rustls::pki_types::ServerName;
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};

    if ServerName::try_from(domain).is_err() {
        return Err(Error::Config(format!(
            "{what}: TLS server name {domain:?} is not a DNS name or an IP address"
        )));
    }
    let mut tls = ClientTlsConfig::new().domain_name(domain);
    match ca_file {
        Some(ca_file) => {
            let ca_at = setting(what, "tls_ca_file", ca_file);
            let (pem, cas) = read_certs(ca_file, &ca_at)?;
            root_store(cas, &ca_at)?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        None => {
            system_roots(what)?;
            tls = tls.with_native_roots();
        }
    }
    if let Some((cert_file, key_file)) = client_cert {
        let cert_at = setting(what, "tls_cert_file", cert_file);
        let key_at = setting(what, "tls_key_file", key_file);
        let (cert_pem, certs) = read_certs(cert_file, &cert_at)?;
        let (key_pem, key) = read_key(key_file, &key_at)?;
        // The same check as rustls makes when tonic builds its configuration.
        rustls::sign::CertifiedKey::from_der(certs, key, &provider())
            .map_err(|e| key_error(&e, &cert_at, &key_at))?;
        tls = tls.identity(Identity::from_pem(cert_pem, &*key_pem));
    }
    Ok(tls)
}

/// A listener for [`axum::serve`] that accepts TCP connections and hands on those whose TLS
/// handshake succeeded.
///
/// Each handshake runs in its own task with a time limit ([`HANDSHAKE_TIMEOUT`] by default), so a
/// slow or silent client delays no other; at most [`MAX_HANDSHAKES`] run at once. A failed
/// handshake (a plain-TCP client, an untrusted client certificate, a timeout) closes that
/// connection and is logged (throttled); the listener goes on. Accepted sockets have
/// `TCP_NODELAY` set. Dropping the listener aborts the handshakes under way.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
    handshake_timeout: Duration,
    max_handshakes: usize,
}

impl TlsListener {
    /// A listener accepting on `tcp` with the TLS `config` (from [`server_config`]).
    #[must_use]
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        Self {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_handshakes: MAX_HANDSHAKES,
        }
    }

    /// Sets the time limit of a handshake (default [`HANDSHAKE_TIMEOUT`]).
    #[must_use]
    pub fn handshake_timeout(mut self, limit: Duration) -> Self {
        self.handshake_timeout = limit;
        self
    }

    /// Sets the number of handshakes run at once (default [`MAX_HANDSHAKES`]; at least 1).
    #[must_use]
    pub fn max_handshakes(mut self, n: usize) -> Self {
        self.max_handshakes = n.max(1);
        self
    }

    /// Starts the handshake of a new connection in its own task.
    fn start_handshake(&mut self, tcp: TcpStream, peer: SocketAddr) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "TLS: cannot set TCP_NODELAY");
        }
        let acceptor = self.acceptor.clone();
        let limit = self.handshake_timeout;
        self.handshakes.spawn(async move {
            match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => Some((tls, peer)),
                Ok(Err(e)) => {
                    refused(peer, "handshake failed", &e);
                    None
                }
                Err(_) => {
                    refused(
                        peer,
                        "handshake timed out",
                        &format_args!("after {limit:?}"),
                    );
                    None
                }
            }
        });
    }
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.tcp.local_addr().ok())
            .field("handshakes", &self.handshakes.len())
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_handshakes", &self.max_handshakes)
            .finish_non_exhaustive()
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // Both branches are cancel-safe: a connection accepted or a handshake finished is
            // never lost when axum drops this future.
            tokio::select! {
                biased;
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    // `Err`: the task was aborted or panicked; its connection is gone.
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
                accepted = self.tcp.accept(), if self.handshakes.len() < self.max_handshakes => {
                    match accepted {
                        Ok((tcp, peer)) => self.start_handshake(tcp, peer),
                        Err(e) => accept_error(e).await,
                    }
                }
                // Not reached (`max_handshakes` ≥ 1): no busy loop either way.
                else => tokio::task::yield_now().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// As axum's own TCP listener: errors of one connection are ignored, others (out of file
/// descriptors) are logged and accepting pauses for a second.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "TLS listener: accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Logs a refused handshake: one line per reason per interval at `info`, the others at `debug`.
fn refused(peer: SocketAddr, reason: &'static str, error: &dyn fmt::Display) {
    match REFUSALS.admit("tls", reason) {
        Some(suppressed) => {
            tracing::info!(%peer, error = %error, suppressed, "TLS {reason}, connection closed");
        }
        None => tracing::debug!(%peer, error = %error, "TLS {reason}, connection closed"),
    }
}

/// The crypto provider of every configuration: *ring*, whatever the process default is.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `[section] name = path`, the `at` of error messages.
fn setting(what: &str, name: &str, path: &Path) -> String {
    if what.is_empty() {
        format!("{name} = {}", path.display())
    } else {
        format!("{what} {name} = {}", path.display())
    }
}

/// Reads a file of at most [`MAX_FILE`] bytes.
fn read_file(path: &Path, at: &str) -> Result<Zeroizing<Vec<u8>>> {
    let file = std::fs::File::open(path).map_err(Error::io_at(at))?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(Error::io_at(at))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(Error::Config(format!(
            "{at}: larger than {} MiB, not a PEM file",
            MAX_FILE >> 20
        )));
    }
    Ok(bytes)
}

/// The file's text and its certificates (at least one).
fn read_certs(path: &Path, at: &str) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>)> {
    let pem = read_file(path, at)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("{at}: not a valid PEM file: {}", pem_error(&e))))?;
    if certs.is_empty() {
        return Err(Error::Config(format!("{at}: no certificate in the file")));
    }
    Ok((pem.to_vec(), certs))
}

/// The file's text and its (first) private key.
fn read_key(path: &Path, at: &str) -> Result<(Zeroizing<Vec<u8>>, PrivateKeyDer<'static>)> {
    let pem = read_file(path, at)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => Error::Config(format!(
            "{at}: no private key in the file (PEM PRIVATE KEY, EC PRIVATE KEY or \
             RSA PRIVATE KEY; encrypted keys are not supported)"
        )),
        e => Error::Config(format!("{at}: not a valid PEM file: {}", pem_error(&e))),
    })?;
    Ok((pem, key))
}

/// What is wrong with a PEM file, without its contents (a key file's bytes never show).
fn pem_error(e: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { .. } => "a section has no END line",
        E::IllegalSectionStart { .. } => "a malformed BEGIN line",
        E::Base64Decode(_) => "a section is not valid base64",
        E::SectionTooLarge => "a section is too large",
        E::NoItemsFound => "nothing of the expected kind in the file",
        _ => "unreadable PEM",
    }
}

/// The trust anchors of the CA certificates `cas` read from `at`; each must be usable.
fn root_store(cas: Vec<CertificateDer<'static>>, at: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for (i, ca) in cas.into_iter().enumerate() {
        roots.add(ca).map_err(|e| {
            Error::Config(format!(
                "{at}: certificate {} of the file is not a usable CA certificate: {e}",
                i + 1
            ))
        })?;
    }
    Ok(roots)
}

/// The system's root certificates (at least one usable).
fn system_roots(what: &str) -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!(error = %e, "{what}: TLS: a system root certificate store is unreadable");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::debug!(
            ignored,
            "{what}: TLS: unusable system root certificates ignored"
        );
    }
    if added == 0 {
        return Err(Error::Config(format!(
            "{what}: no tls_ca_file is set and the system has no usable root certificates; \
             set tls_ca_file to the CA certificates of the server"
        )));
    }
    Ok(roots)
}

/// The error of a certificate chain and key that rustls refused.
fn key_error(e: &rustls::Error, cert_at: &str, key_at: &str) -> Error {
    match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => Error::Config(
            format!("{key_at}: the private key does not belong to the certificate of {cert_at}"),
        ),
        e => Error::Config(format!(
            "{cert_at}, {key_at}: unusable certificate or private key: {e}"
        )),
    }
}
