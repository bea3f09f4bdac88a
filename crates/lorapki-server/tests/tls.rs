//! The TLS module over real TLS: certificates made by the `openssl` CLI at test time, the
//! join-server API served with `TlsListener` (with and without client certificates), a plain-TCP
//! and a silent client that do not disturb it, an MQTT client connecting over TLS, and clear
//! errors for bad files. Without `openssl` on PATH the tests print `SKIPPED` and pass.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use axum::serve::Listener as _;
use lorapki_server::Error;
use lorapki_server::tls::{self, ServerTls, TlsListener};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const WHAT: &str = "[join_server]";
const BODY: &str = "hello over tls";

/// Certificates in a temporary directory: `ca` (the CA), `server` (for `localhost` and
/// 127.0.0.1), `client` (client auth, signed by `ca`), `rogue` (client auth, signed by
/// `other-ca`). Each as `NAME.pem` and `NAME.key`.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// `None` (after printing `SKIPPED`) without `openssl`.
    fn new() -> Option<Self> {
        if Command::new("openssl").arg("version").output().is_err() {
            println!("SKIPPED: openssl not found");
            return None;
        }
        let pki = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.ca("ca", "lorapki test CA");
        pki.ca("other-ca", "some other CA");
        let server = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                      extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n";
        let client = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                      extendedKeyUsage=clientAuth\n";
        pki.leaf("server", "localhost", "ca", 2, server);
        pki.leaf("client", "device-provisioner", "ca", 3, client);
        pki.leaf("rogue", "device-provisioner", "other-ca", 4, client);
        Some(pki)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.path(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ca(&self, name: &str, cn: &str) {
        let (key, pem, subj) = (
            format!("{name}.key"),
            format!("{name}.pem"),
            format!("/CN={cn}"),
        );
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }

    fn leaf(&self, name: &str, cn: &str, ca: &str, serial: u32, ext: &str) {
        let ext_file = format!("{name}.ext");
        self.write(&ext_file, ext);
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subj = format!("/CN={cn}");
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subj,
        ]);
        let (ca_pem, ca_key, serial) =
            (format!("{ca}.pem"), format!("{ca}.key"), serial.to_string());
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-set_serial",
            &serial,
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            &ext_file,
        ]);
    }

    fn server_tls(&self, client_ca: bool) -> ServerTls {
        ServerTls {
            cert_file: self.path("server.pem"),
            key_file: self.path("server.key"),
            client_ca_file: client_ca.then(|| self.path("ca.pem")),
        }
    }

    /// A client trusting `ca`, presenting the certificate `NAME.pem` if given.
    fn client(&self, cert: Option<&str>) -> Arc<rustls::ClientConfig> {
        let files = cert.map(|n| {
            (
                self.path(&format!("{n}.pem")),
                self.path(&format!("{n}.key")),
            )
        });
        tls::client_config(
            Some(&self.path("ca.pem")),
            files.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            "[test]",
        )
        .unwrap()
    }
}

/// Serves `GET /hello` with `listener`; returns its address.
async fn serve(listener: TlsListener) -> SocketAddr {
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/hello", get(|| async { BODY }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// `GET /hello` over TLS, written by hand; the whole answer (until the server closes).
async fn https_get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<String> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let exchange = async {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
        tls.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        match tls.read_to_end(&mut answer).await {
            Ok(_) => {}
            // A complete answer without close_notify is still an answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
            Err(e) => return Err(e),
        }
        Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
}

fn assert_ok_answer(answer: &std::io::Result<String>) {
    let answer = answer.as_ref().expect("the request succeeds");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with(BODY), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_to_a_client_trusting_the_ca() {
    let Some(pki) = Pki::new() else { return };
    let listener = pki.server_tls(false).listener(bind().await, WHAT).unwrap();
    let addr = serve(listener).await;
    let client = pki.client(None);
    // The certificate is checked against the DNS name and against the IP address.
    assert_ok_answer(&https_get(addr, client.clone(), "localhost").await);
    assert_ok_answer(&https_get(addr, client.clone(), "127.0.0.1").await);
    // A name the certificate is not for is refused by the client.
    let wrong = https_get(addr, client, "example.com").await;
    assert!(wrong.is_err(), "{wrong:?}");
    // A client that does not trust the CA refuses the server.
    let untrusting = tls::client_config(Some(&pki.path("other-ca.pem")), None, "[test]").unwrap();
    let refused = https_get(addr, untrusting, "localhost").await;
    assert!(refused.is_err(), "{refused:?}");
    // ALPN: the server offers http/1.1.
    let config =
        tls::server_config(&pki.path("server.pem"), &pki.path("server.key"), None, WHAT).unwrap();
    assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requires_a_client_certificate_signed_by_the_client_ca() {
    let Some(pki) = Pki::new() else { return };
    let listener = pki.server_tls(true).listener(bind().await, WHAT).unwrap();
    let addr = serve(listener).await;

    let anonymous = https_get(addr, pki.client(None), "localhost").await;
    assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");
    let rogue = https_get(addr, pki.client(Some("rogue")), "localhost").await;
    assert!(rogue.is_err(), "certificate of another CA: {rogue:?}");
    assert_ok_answer(&https_get(addr, pki.client(Some("client")), "localhost").await);
    // Refusals do not stop the listener.
    assert!(
        https_get(addr, pki.client(None), "localhost")
            .await
            .is_err()
    );
    assert_ok_answer(&https_get(addr, pki.client(Some("client")), "localhost").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_and_silent_clients_get_no_answer_and_block_nobody() {
    let Some(pki) = Pki::new() else { return };
    let listener = pki
        .server_tls(false)
        .listener(bind().await, WHAT)
        .unwrap()
        .handshake_timeout(Duration::from_secs(2));
    let addr = serve(listener).await;
    let client = pki.client(None);

    // A silent client holds its connection open without a handshake.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let opened = Instant::now();

    // A plain HTTP request gets no HTTP answer: the connection is closed (after a TLS alert).
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer))
        .await
        .expect("the server closes the plain connection");
    assert!(read.is_ok() || answer.is_empty(), "{read:?}");
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    assert!(!String::from_utf8_lossy(&answer).contains(BODY));

    // Meanwhile TLS clients are served, while the silent client still waits.
    assert_ok_answer(&https_get(addr, client.clone(), "localhost").await);
    assert_ok_answer(&https_get(addr, client.clone(), "localhost").await);
    assert!(opened.elapsed() < Duration::from_secs(2));

    // The silent client is dropped once its handshake time is up.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(6), silent.read_to_end(&mut rest))
        .await
        .expect("the silent connection is closed after the handshake timeout");
    assert!(closed.is_ok() || rest.is_empty(), "{closed:?}");
    assert!(opened.elapsed() >= Duration::from_millis(1500));
    assert!(rest.is_empty(), "{rest:?}");

    assert_ok_answer(&https_get(addr, client, "localhost").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_at_once_are_all_served() {
    let Some(pki) = Pki::new() else { return };
    let listener = pki
        .server_tls(true)
        .listener(bind().await, WHAT)
        .unwrap()
        .max_handshakes(4);
    let addr = serve(listener).await;
    let client = pki.client(Some("client"));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let client = client.clone();
        tasks.spawn(async move { https_get(addr, client, "localhost").await });
    }
    let mut served = 0;
    while let Some(answer) = tasks.join_next().await {
        assert_ok_answer(&answer.unwrap());
        served += 1;
    }
    assert_eq!(served, 16);
}

/// An MQTT v5 client over mutual TLS with `mqtt_transport` reaches a (minimal) broker: the
/// broker reads the CONNECT packet and answers CONNACK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_client_connects_over_mutual_tls() {
    let Some(pki) = Pki::new() else { return };
    let broker_config = tls::server_config(
        &pki.path("server.pem"),
        &pki.path("server.key"),
        Some(&pki.path("ca.pem")),
        "[test broker]",
    )
    .unwrap();
    let tcp = bind().await;
    let port = tcp.local_addr().unwrap().port();
    let broker = tokio::spawn(async move {
        let (socket, _) = tcp.accept().await.unwrap();
        let mut tls = TlsAcceptor::from(broker_config)
            .accept(socket)
            .await
            .unwrap();
        let client_certs = tls.get_ref().1.peer_certificates().map(<[_]>::len);
        let mut connect = [0u8; 2];
        tls.read_exact(&mut connect).await.unwrap();
        let mut rest = vec![0u8; usize::from(connect[1])];
        tls.read_exact(&mut rest).await.unwrap();
        // CONNACK: no session, success, no properties.
        tls.write_all(&[0x20, 0x03, 0x00, 0x00, 0x00])
            .await
            .unwrap();
        tls.flush().await.unwrap();
        let mut more = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_secs(2), tls.read(&mut more)).await;
        (connect[0], client_certs)
    });

    let mut options = rumqttc::v5::MqttOptions::new("lorapki-tls-test", "localhost", port);
    options.set_transport(tls::mqtt_transport(pki.client(Some("client"))));
    let (_client, mut events) = rumqttc::v5::AsyncClient::new(options, 10);
    let event = tokio::time::timeout(Duration::from_secs(10), events.poll())
        .await
        .expect("the client connects in time")
        .expect("the connection succeeds");
    assert!(
        matches!(
            event,
            rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(_))
        ),
        "{event:?}"
    );
    let (packet_type, client_certs) = broker.await.unwrap();
    assert_eq!(packet_type, 0x10, "the first packet is CONNECT");
    assert_eq!(
        client_certs,
        Some(1),
        "the client presented its certificate"
    );
}

fn message(e: &Error) -> String {
    e.to_string()
}

#[test]
fn bad_files_give_errors_naming_the_setting_and_file() {
    let Some(pki) = Pki::new() else { return };
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let missing = pki.path("missing.pem");

    // A file that is not there: an i/o error naming the setting and the file.
    let e = tls::server_config(&missing, &key, None, WHAT).unwrap_err();
    assert!(matches!(e, Error::IoAt { .. }), "{e:?}");
    let expected = format!("i/o: [join_server] tls_cert_file = {}: ", missing.display());
    assert!(message(&e).starts_with(&expected), "{e}");
    let e = tls::server_config(&cert, &missing, None, WHAT).unwrap_err();
    assert!(
        message(&e).contains(&format!("tls_key_file = {}", missing.display())),
        "{e}"
    );
    let e = tls::server_config(&cert, &key, Some(&missing), WHAT).unwrap_err();
    assert!(
        message(&e).contains(&format!("tls_client_ca_file = {}", missing.display())),
        "{e}"
    );

    // No certificate in the certificate file (a key, an empty file).
    let e = tls::server_config(&key, &key, None, WHAT).unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    assert_eq!(
        message(&e),
        format!(
            "configuration: [join_server] tls_cert_file = {}: no certificate in the file",
            key.display()
        )
    );
    let key_text = std::fs::read_to_string(&key).unwrap();
    let key_line = key_text.lines().nth(1).unwrap();
    assert!(
        !message(&e).contains(key_line),
        "no key material in errors: {e}"
    );
    let empty = pki.write("empty.pem", "");
    let e = tls::server_config(&empty, &key, None, WHAT).unwrap_err();
    let expected = format!(
        "tls_cert_file = {}: no certificate in the file",
        empty.display()
    );
    assert!(message(&e).ends_with(&expected), "{e}");

    // No key in the key file.
    let e = tls::server_config(&cert, &cert, None, WHAT).unwrap_err();
    let expected = format!(
        "[join_server] tls_key_file = {}: no private key in the file",
        cert.display()
    );
    assert!(message(&e).contains(&expected), "{e}");

    // Broken PEM.
    let broken = pki.write(
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    );
    let e = tls::server_config(&broken, &key, None, WHAT).unwrap_err();
    let expected = format!("tls_cert_file = {}: not a valid PEM file", broken.display());
    assert!(message(&e).contains(&expected), "{e}");
    let unterminated = pki.write(
        "unterminated.key",
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEA\n",
    );
    let e = tls::server_config(&cert, &unterminated, None, WHAT).unwrap_err();
    let expected = format!(
        "tls_key_file = {}: not a valid PEM file",
        unterminated.display()
    );
    assert!(message(&e).contains(&expected), "{e}");
    assert!(!message(&e).contains("MIGHAgEA"), "{e}");

    // A key that is not the certificate's.
    let other_key = pki.path("client.key");
    let e = tls::server_config(&cert, &other_key, None, WHAT).unwrap_err();
    let expected = format!(
        "[join_server] tls_key_file = {}: the private key does not belong to the certificate of \
         [join_server] tls_cert_file = {}",
        other_key.display(),
        cert.display()
    );
    assert!(message(&e).contains(&expected), "{e}");

    // A client CA file without certificates.
    let e = tls::server_config(&cert, &key, Some(&key), WHAT).unwrap_err();
    let expected = format!(
        "tls_client_ca_file = {}: no certificate in the file",
        key.display()
    );
    assert!(message(&e).contains(&expected), "{e}");

    // The client side names its own settings.
    let e = tls::client_config(Some(&missing), None, "[mqtt]").unwrap_err();
    let expected = format!("i/o: [mqtt] tls_ca_file = {}: ", missing.display());
    assert!(message(&e).starts_with(&expected), "{e}");
    let e = tls::client_config(Some(&ca), Some((&pki.path("client.pem"), &cert)), "[mqtt]")
        .unwrap_err();
    let expected = format!(
        "[mqtt] tls_key_file = {}: no private key in the file",
        cert.display()
    );
    assert!(message(&e).contains(&expected), "{e}");
    let e =
        tls::client_config(Some(&ca), Some((&pki.path("client.pem"), &key)), "[mqtt]").unwrap_err();
    assert!(
        message(&e).contains("does not belong to the certificate"),
        "{e}"
    );

    // The good files are accepted, with and without client certificates.
    tls::server_config(&cert, &key, None, WHAT).unwrap();
    tls::server_config(&cert, &key, Some(&ca), WHAT).unwrap();
    tls::client_config(Some(&ca), None, "[mqtt]").unwrap();
    tls::client_config(
        Some(&ca),
        Some((&pki.path("client.pem"), &pki.path("client.key"))),
        "[mqtt]",
    )
    .unwrap();
    assert!(matches!(
        tls::mqtt_transport(pki.client(None)),
        rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(_))
    ));
}

#[cfg(feature = "chirpstack-grpc")]
#[test]
fn grpc_tls_checks_its_files_and_domain() {
    let Some(pki) = Pki::new() else { return };
    let what = "[chirpstack_grpc]";
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    tls::grpc_tls(Some(&ca), Some((&cert, &key)), "localhost", what).unwrap();
    tls::grpc_tls(Some(&ca), None, "127.0.0.1", what).unwrap();
    let e = tls::grpc_tls(Some(&ca), None, "not a name", what).unwrap_err();
    assert!(
        e.to_string().contains("[chirpstack_grpc]: TLS server name"),
        "{e}"
    );
    let e = tls::grpc_tls(Some(&key), None, "localhost", what).unwrap_err();
    let expected = format!(
        "[chirpstack_grpc] tls_ca_file = {}: no certificate",
        key.display()
    );
    assert!(e.to_string().contains(&expected), "{e}");
    let e = tls::grpc_tls(
        Some(&ca),
        Some((&cert, &pki.path("server.key"))),
        "localhost",
        what,
    )
    .unwrap_err();
    assert!(e.to_string().contains("does not belong"), "{e}");
}
