//! Wiring for the binary: build everything from a [`Config`] and run until shut down.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::identity::ServerKey;
use crate::joinserver::JoinServer;
use crate::metrics::Metrics;
use crate::registry::TrustAnchors;
use crate::server::Server;
use crate::store::Store;

/// Loads the server keys named by the configuration.
///
/// # Errors
///
/// [`Error::Key`]; [`Error::IoAt`] naming the setting and the file.
pub fn load_keys(config: &Config) -> Result<Vec<ServerKey>> {
    let mut keys =
        vec![ServerKey::load(&config.server.key_file).map_err(in_setting("[server] key_file"))?];
    if let Some(second) = &config.server.second_key_file {
        keys.push(ServerKey::load(second).map_err(in_setting("[server] second_key_file"))?);
    }
    Ok(keys)
}

/// Adds the setting to an i/o error about the file it names: `[server] key_file = PATH: …`.
fn in_setting(setting: &'static str) -> impl FnOnce(Error) -> Error {
    move |e| match e {
        Error::IoAt { at, source } => Error::IoAt {
            at: format!("{setting} = {at}"),
            source,
        },
        other => other,
    }
}

/// The manufacturer CAs named by the configuration.
///
/// # Errors
///
/// [`Error::IoAt`] naming the file / [`Error::Certificate`].
pub fn trust_anchors(config: &Config) -> Result<TrustAnchors> {
    match &config.server.ca_file {
        None => Ok(TrustAnchors::none()),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(Error::io_at(format_args!(
                "[server] ca_file = {}",
                path.display()
            )))?;
            TrustAnchors::from_pem(&text)
        }
    }
}

/// Builds the server core from a configuration, after checking that the storage KEK is the
/// database's ([`Store::check_kek`]).
///
/// # Errors
///
/// Any configuration, key or store error; [`Error::KekMismatch`] for another database's KEK.
pub async fn build(config: &Config, metrics: Arc<Metrics>) -> Result<Arc<Server>> {
    let options = config.options()?;
    let kek = config.storage_kek()?;
    let keys = load_keys(config)?;
    let store = Store::open(&config.database.url).await?;
    if let Err(e) = store.check_kek(&kek).await {
        store.close().await;
        return Err(e);
    }
    Ok(Arc::new(Server::new(store, kek, &keys, options, metrics)?))
}

/// A bound listen address and the setting it came from.
struct Listener {
    listener: TcpListener,
    addr: SocketAddr,
    /// `[metrics] bind = 127.0.0.1:9100`, for errors.
    name: String,
}

/// Binds the address of `setting` (`[metrics] bind`); errors name both.
async fn bind(setting: &str, addr: SocketAddr) -> Result<Listener> {
    let name = format!("{setting} = {addr}");
    let listener = TcpListener::bind(addr).await.map_err(Error::io_at(&name))?;
    Ok(Listener {
        listener,
        addr,
        name,
    })
}

/// Serves `router` over TLS on `listener` until `shutdown`; errors name the listener's setting.
async fn listen_tls(
    listener: Listener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let tls_listener = crate::tls::TlsListener::new(listener.listener, tls);
    axum::serve(tls_listener, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .map_err(Error::io_at(listener.name))
}

/// Serves `router` on `listener` until `shutdown`; errors name the listener's setting.
async fn listen(
    listener: Listener,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    use axum::serve::ListenerExt as _;
    // Answers are small and latency-bound: no Nagle delay on accepted connections.
    let tcp = listener.listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY not set on an accepted connection");
        }
    });
    axum::serve(tcp, router)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .map_err(Error::io_at(listener.name))
}

/// The metrics routes: `GET /metrics` and `GET /health`.
pub fn metrics_router(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(
                |axum::extract::State(m): axum::extract::State<Arc<Metrics>>| async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        m.render(),
                    )
                },
            ),
        )
        .route("/health", axum::routing::get(|| async { "ok" }))
        .with_state(metrics)
}

/// Runs the configured services (MQTT integration, join server, metrics, housekeeping) until
/// `shutdown` completes; then stops accepting input, finishes what is in progress and closes
/// the store.
///
/// # Errors
///
/// Start-up errors (configuration, keys, store, a listen address in use).
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let server = build(&config, Arc::clone(&metrics)).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    // Both listen addresses are bound before anything runs: one in use stops the start-up.
    let listeners = async {
        // Certificates are read before anything binds: a bad file stops the start-up.
        let tls = match config.join_server_tls() {
            Some(t) => Some(t.config("[join_server]")?),
            None => None,
        };
        let js = match config.join_server_settings()? {
            Some((addr, settings)) => {
                Some((bind("[join_server] bind", addr).await?, settings, tls))
            }
            None => None,
        };
        let metrics = match &config.metrics {
            Some(m) => Some(bind("[metrics] bind", m.bind).await?),
            None => None,
        };
        Ok::<_, Error>((js, metrics))
    };
    let (js, metrics_listener) = match listeners.await {
        Ok(listeners) => listeners,
        Err(e) => {
            server.store().close().await;
            return Err(e);
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    if let Some((listener, settings, tls)) = js {
        if settings.token.is_none() {
            warn!("join server without a bearer token (insecure_no_token)");
        }
        if settings.nwk_kek.is_none() {
            warn!("join server hands out unwrapped session keys (insecure_plain_session_keys)");
        }
        let js = Arc::new(JoinServer::new(Arc::clone(&server), settings));
        let router = crate::joinserver::router(js);
        match tls {
            Some(tls) => {
                info!(bind = %listener.addr, "join server listening (HTTPS)");
                tasks.spawn(listen_tls(listener, tls, router, stop_rx.clone()));
            }
            None => {
                warn!(bind = %listener.addr, "join server listening on plain HTTP");
                tasks.spawn(listen(listener, router, stop_rx.clone()));
            }
        }
    }
    if let Some(listener) = metrics_listener {
        info!(bind = %listener.addr, "metrics listening");
        tasks.spawn(listen(
            listener,
            metrics_router(Arc::clone(&metrics)),
            stop_rx.clone(),
        ));
    }
    if let Some(settings) = config.mqtt_settings()? {
        info!(host = %settings.host, port = settings.port, "MQTT integration starting");
        #[cfg(feature = "chirpstack-grpc")]
        if let Some(g) = &config.chirpstack_grpc {
            let handoff = crate::keyhandoff::KeyHandoff::new(
                Arc::clone(&server),
                &g.server,
                config.chirpstack_token()?,
                config.chirpstack_grpc_tls()?,
            )?;
            info!(server = %g.server, "handing new keys to ChirpStack's key store");
            tasks.spawn(crate::chirpstack::run_with_handoff(
                Arc::clone(&server),
                settings.clone(),
                Arc::new(handoff),
                stop_rx.clone(),
            ));
        } else {
            tasks.spawn(crate::chirpstack::run(
                Arc::clone(&server),
                settings.clone(),
                stop_rx.clone(),
            ));
        }
        #[cfg(not(feature = "chirpstack-grpc"))]
        tasks.spawn(crate::chirpstack::run(
            Arc::clone(&server),
            settings,
            stop_rx.clone(),
        ));
    }
    {
        let server = Arc::clone(&server);
        let mut rx = stop_rx.clone();
        tasks.spawn(async move {
            loop {
                if let Err(e) = server.refresh_pending().await {
                    warn!(error = %e, "pending-session count failed");
                }
                if let Err(e) = server.expire_due().await {
                    warn!(error = %e, "session expiry failed");
                }
                tokio::select! {
                    _ = rx.wait_for(|stop| *stop) => break,
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
            Ok(())
        });
    }
    tokio::select! {
        () = shutdown => info!("shutting down"),
        Some(res) = tasks.join_next() => {
            if let Ok(Err(e)) = res {
                let _ = stop_tx.send(true);
                while tasks.join_next().await.is_some() {}
                server.store().close().await;
                return Err(e);
            }
        }
    }
    let _ = stop_tx.send(true);
    while let Some(res) = tasks.join_next().await {
        if let Ok(Err(e)) = res {
            warn!(error = %e, "task ended with an error during shutdown");
        }
    }
    server.store().close().await;
    info!("stopped");
    Ok(())
}
