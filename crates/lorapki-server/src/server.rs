//! The server core: owns the crypto backends and applies every input to the store
//! transactionally, running each device's sans-IO [`ServerSession`].
//!
//! The store is the only state: for each input the device's [`SessionSnapshot`] is loaded into
//! a [`ServerSession`], the input applied, the events turned into key operations, and the
//! new snapshot and the key operations committed together (guarded by row versions). Only then is
//! the downlink released. So any instance can serve any frame of any device, a crash between two
//! steps loses nothing that was acknowledged, and memory holds no per-device state between
//! inputs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};

use getrandom::SysRng;
use lorapki_crypto::{KeySlot, RootKeySlot};
use lorapki_crypto_soft::SoftBackend;
use lorapki_proto::{
    DeviceRecord, Duration, FailReason, Instant, RateLimit, ServerConfig, ServerContext,
    ServerEvent, ServerSession, SessionSnapshot, unknown_device_abort,
};
use lorapki_wire::{CommandRepr, Reason};
use tracing::{debug, info};
use zeroize::Zeroizing;

use crate::error::{EngineFailure, Error, Result};
use crate::eui::Eui64;
use crate::identity::{KeyId, ServerKey};
use crate::kek::{StorageKek, open_snapshot, seal_root_keys, seal_snapshot};
use crate::logthrottle::REFUSALS;
use crate::metrics::Metrics;
use crate::store::{Commit, DeviceRow, KeyOp, SessionRow, SessionWrite, Store};

type Backend = SoftBackend<SysRng>;

/// Tunables of the server core.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Maximum FPort-1 downlink payload N (11..=242; 51 fits every EU868 data rate).
    pub max_downlink_payload: usize,
    /// A pending run with no frame for this long expires.
    pub idle_timeout: StdDuration,
    /// Runs a device may start back to back.
    pub runs_burst: u8,
    /// One more run per this interval.
    pub runs_refill: StdDuration,
    /// FPort-1 uplinks a device may send per minute before frames are dropped unprocessed.
    pub uplinks_per_minute: u32,
    /// Burst of the uplink limit.
    pub uplink_burst: u32,
    /// Parallel crypto engines (default: the number of cores).
    pub engines: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_downlink_payload: 51,
            idle_timeout: StdDuration::from_secs(3600),
            runs_burst: 3,
            runs_refill: StdDuration::from_secs(3600),
            uplinks_per_minute: 60,
            uplink_burst: 20,
            engines: std::thread::available_parallelism().map_or(2, usize::from),
        }
    }
}

/// Milliseconds since the UNIX epoch: the clock of every instance.
#[must_use]
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn instant(ms: i64) -> Instant {
    Instant::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn duration(d: StdDuration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A crypto backend with the server keys installed, and one session context per key. Holds no
/// device state between inputs: every input runs on a [`ServerSession`] made from the device's
/// stored snapshot. Each device's work is bounded by its own session (one pending run, its run
/// budget, its lease: PROTOCOL.md §6.4, §8), so no bound spans devices.
struct Engine {
    backend: Backend,
    contexts: Vec<ServerContext>,
}

impl Engine {
    fn new(keys: &[ServerKey], options: &ServerOptions) -> Result<Self> {
        let mut backend = SoftBackend::new(SysRng);
        let mut contexts = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let slot = KeySlot(u8::try_from(i).map_err(|_| Error::Key("too many keys".into()))?);
            key.install(&mut backend, slot)?;
            let mut config = ServerConfig::new(slot, key.public());
            config.idle_timeout = duration(options.idle_timeout);
            config.rate_limit = RateLimit {
                burst: options.runs_burst,
                refill: duration(options.runs_refill),
            };
            contexts.push(ServerContext::new(&mut backend, config));
        }
        Ok(Self { backend, contexts })
    }
}

/// What one input did to one device, before it is committed.
struct Output {
    events: Vec<ServerEvent>,
    downlink: Option<Vec<u8>>,
    snapshot: Option<Zeroizing<Vec<u8>>>,
    pending: bool,
    deadline_ms: Option<i64>,
    key_work_nanos: Option<u64>,
    error: Option<lorapki_proto::Error>,
}

enum Input {
    Uplink {
        record: DeviceRecord,
        payload: Vec<u8>,
    },
    Confirmed(RootKeySlot),
    Timeout,
}

/// Per-device uplink limiter (before any database or crypto work).
struct Ingress {
    buckets: HashMap<Eui64, (f64, i64)>,
}

const MAX_INGRESS_ENTRIES: usize = 200_000;

/// The server core. Cheap to share (`Arc`); every method may be called concurrently.
pub struct Server {
    store: Store,
    kek: Arc<StorageKek>,
    key_ids: Vec<KeyId>,
    engines: Vec<Arc<Mutex<Engine>>>,
    shards: Vec<tokio::sync::Mutex<()>>,
    options: ServerOptions,
    metrics: Arc<Metrics>,
    ingress: Mutex<Ingress>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("store", &self.store.backend())
            .field("engines", &self.engines.len())
            .finish_non_exhaustive()
    }
}

const SHARDS: usize = 1024;
const COMMIT_ATTEMPTS: usize = 8;

fn shard_of(dev_eui: Eui64, n: usize) -> usize {
    // FNV-1a over the DevEUI: stable and cheap; only spreads the lock shards.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in dev_eui.0 {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(h % n.max(1) as u64).unwrap_or(0)
}

/// A short label for a failure reason (metrics and logs).
#[must_use]
pub fn reason_label(reason: &FailReason) -> &'static str {
    match reason {
        FailReason::NoAnswer => "no-answer",
        FailReason::Rejected => "rejected",
        FailReason::Refused => "refused",
        FailReason::Aborted(_) => "aborted",
        FailReason::ServerAuthentication => "server-authentication",
        FailReason::BadEphemeral => "bad-ephemeral",
        FailReason::DeviceAuthentication => "device-authentication",
        FailReason::Expired => "expired",
        FailReason::Superseded => "superseded",
        FailReason::Crypto(_) => "crypto",
        _ => "other",
    }
}

/// How an uplink the protocol did not take is counted: `None` for malformed input (it could not
/// be parsed, came the wrong way, or its ephemeral key is no point), else the reason it was
/// refused — the reason of the Abort it is answered with when there is one.
#[must_use]
pub fn refusal_reason(
    error: &lorapki_proto::Error,
    downlink: Option<&[u8]>,
) -> Option<&'static str> {
    use lorapki_proto::Error as E;
    if matches!(
        error,
        E::Wire(_) | E::Reassembly(_) | E::WrongDirection { .. }
    ) {
        return None;
    }
    if let Some(reason) = downlink.and_then(abort_reason) {
        return match reason {
            Reason::Malformed => None,
            Reason::UnsupportedVersion => Some("unsupported-version"),
            Reason::UnknownDevice => Some("unknown-device"),
            Reason::RateLimited => Some("rate-limited"),
            Reason::StaleSession => Some("stale-session"),
            Reason::AuthenticationFailed => Some("authentication-failed"),
            Reason::ServerError => Some("server-error"),
            _ => Some("other"),
        };
    }
    Some(match error {
        E::StaleSession => "stale-session",
        E::UnknownDevice => "unknown-device",
        E::Crypto(_) => "crypto",
        E::Refused => "policy",
        E::InvalidState => "invalid-state",
        _ => "other",
    })
}

/// The reason of the Abort that `downlink` starts with, if it does.
fn abort_reason(downlink: &[u8]) -> Option<Reason> {
    let command = lorapki_wire::Commands::new(downlink).next()?.ok()?;
    match CommandRepr::parse(&command).ok()? {
        CommandRepr::Abort(abort) => Some(abort.reason),
        _ => None,
    }
}

/// The kind of a downlink, for the metrics: `abort` or `answer`.
#[must_use]
pub fn downlink_kind(downlink: &[u8]) -> &'static str {
    if abort_reason(downlink).is_some() {
        "abort"
    } else {
        "answer"
    }
}

impl Server {
    /// A server core over `store`, signing with `keys` (the first is the primary key; a second
    /// one serves devices that pinned it during a server-key rotation).
    ///
    /// # Errors
    ///
    /// [`Error::Key`] if no key is given or a backend refuses one.
    pub fn new(
        store: Store,
        kek: StorageKek,
        keys: &[ServerKey],
        options: ServerOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        if keys.is_empty() || keys.len() > 2 {
            return Err(Error::Key("one or two server keys are needed".into()));
        }
        let n = options.engines.clamp(1, 64);
        let mut engines = Vec::with_capacity(n);
        for _ in 0..n {
            engines.push(Arc::new(Mutex::new(Engine::new(keys, &options)?)));
        }
        Ok(Self {
            store,
            kek: Arc::new(kek),
            key_ids: keys.iter().map(ServerKey::key_id).collect(),
            engines,
            shards: (0..SHARDS).map(|_| tokio::sync::Mutex::new(())).collect(),
            options,
            metrics,
            ingress: Mutex::new(Ingress {
                buckets: HashMap::new(),
            }),
        })
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The storage KEK.
    #[must_use]
    pub fn kek(&self) -> &StorageKek {
        &self.kek
    }

    /// The metrics.
    #[must_use]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The options.
    #[must_use]
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// The key ids of the loaded server keys (primary first).
    #[must_use]
    pub fn key_ids(&self) -> &[KeyId] {
        &self.key_ids
    }

    /// Serializes work on one device within this instance (other instances are kept apart by the
    /// store's row versions).
    pub async fn lock_device(&self, dev_eui: Eui64) -> tokio::sync::MutexGuard<'_, ()> {
        self.shards[shard_of(dev_eui, self.shards.len())]
            .lock()
            .await
    }

    fn admit(&self, dev_eui: Eui64, now: i64) -> bool {
        let Ok(mut ingress) = self.ingress.lock() else {
            return false;
        };
        let rate = f64::from(self.options.uplinks_per_minute) / 60_000.0;
        let burst = f64::from(self.options.uplink_burst.max(1));
        if ingress.buckets.len() >= MAX_INGRESS_ENTRIES {
            // Forget the devices whose buckets have refilled: they lose nothing.
            ingress
                .buckets
                .retain(|_, (tokens, at)| *tokens + (now - *at) as f64 * rate < burst);
            if ingress.buckets.len() >= MAX_INGRESS_ENTRIES {
                ingress.buckets.clear();
            }
        }
        let (tokens, at) = ingress.buckets.entry(dev_eui).or_insert((burst, now));
        *tokens = (*tokens + (now - *at).max(0) as f64 * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Refreshes the store-wide pending-run count (the metrics gauge).
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn refresh_pending(&self) -> Result<i64> {
        let n = self.store.pending_sessions().await?;
        self.metrics.set_pending_sessions(n);
        Ok(n)
    }

    /// An FPort-1 uplink of `dev_eui`: returns the FRMPayload to send back on FPort 1, if any.
    /// The answer is released only after everything the uplink changed is committed.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] for an impossible payload size; store errors. Protocol errors (bad
    /// frames, stale sessions) are not errors here: they are counted and may owe an Abort.
    pub async fn handle_uplink(&self, dev_eui: Eui64, payload: &[u8]) -> Result<Option<Vec<u8>>> {
        if payload.is_empty() || payload.len() > lorapki_wire::MAX_PAYLOAD {
            self.metrics.uplink("malformed");
            return Err(Error::Malformed(format!(
                "FPort-1 payload of {} bytes",
                payload.len()
            )));
        }
        let now = now_ms();
        if !self.admit(dev_eui, now) {
            self.metrics.uplink("rate-limited");
            if let Some(suppressed) = REFUSALS.admit("uplink", "rate-limited") {
                info!(%dev_eui, suppressed, "uplink dropped by the per-device rate limit");
            }
            return Ok(None);
        }
        let _guard = self.shards[shard_of(dev_eui, self.shards.len())]
            .lock()
            .await;
        for _ in 0..COMMIT_ATTEMPTS {
            let device = self.store.device(dev_eui).await?;
            let Some(device) = device else {
                // Unregistered: no key work, no state, no engine; only an Abort is owed (§8).
                self.metrics.uplink("unknown-device");
                let mut buf = [0u8; lorapki_wire::MAX_PAYLOAD];
                let abort =
                    unknown_device_abort(payload, self.options.max_downlink_payload, &mut buf)?;
                return Ok(abort.map(|t| buf[..t.len].to_vec()));
            };
            let session = self.store.session(dev_eui).await?;
            let record = DeviceRecord {
                dev_eui: dev_eui.0,
                join_eui: device.join_eui.0,
                lorawan: device.mac_version.lorawan(),
                identity: device.identity,
            };
            let key_index = self.key_index(&device)?;
            let out = self
                .run(
                    dev_eui,
                    session.as_ref(),
                    key_index,
                    Input::Uplink {
                        record,
                        payload: payload.to_vec(),
                    },
                    now,
                )
                .await?;
            let mut commit = Commit::new(dev_eui, now);
            self.fill_commit(&mut commit, &device, session.as_ref(), &out)?;
            match self.store.commit(&commit).await {
                Ok(()) => {
                    if let Some(e) = &out.error {
                        let refusal = refusal_reason(e, out.downlink.as_deref());
                        let label = refusal.unwrap_or("malformed");
                        match refusal {
                            Some(reason) => self.metrics.uplink_refused(reason),
                            None => self.metrics.uplink("malformed"),
                        }
                        if let Some(suppressed) = REFUSALS.admit("uplink", label) {
                            info!(%dev_eui, error = %e, reason = label, suppressed,
                                "uplink refused by the protocol");
                        }
                    } else {
                        self.metrics.uplink("accepted");
                    }
                    if let Some(n) = out.key_work_nanos {
                        self.metrics.key_work(n);
                    }
                    self.report(dev_eui, &out.events);
                    return Ok(out.downlink);
                }
                Err(Error::Conflict) => {
                    debug!(%dev_eui, "concurrent update; retrying the uplink");
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict)
    }

    /// A JoinRequest of `dev_eui` verified under `slot` at a join server this server does not
    /// run itself (ChirpStack's, through [`crate::keyhandoff`]): a join under the staged key
    /// activates it and retires the old one (PROTOCOL.md §7); one under the active key changes
    /// nothing. The caller holds the device's lock ([`lock_device`](Self::lock_device)) across
    /// the evidence it read and this call, so that nothing changes the evidence in between.
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn join_verified(
        &self,
        _locked: &tokio::sync::MutexGuard<'_, ()>,
        dev_eui: Eui64,
        slot: RootKeySlot,
    ) -> Result<Vec<ServerEvent>> {
        let now = now_ms();
        for _ in 0..COMMIT_ATTEMPTS {
            let Some(device) = self.store.device(dev_eui).await? else {
                return Err(Error::UnknownDevice);
            };
            let mut commit = Commit::new(dev_eui, now);
            let events = self
                .prepare_confirm(&device, slot, now, &mut commit)
                .await?;
            if commit.session.is_none() && commit.key_ops.is_empty() {
                return Ok(events);
            }
            match self.store.commit(&commit).await {
                Ok(()) => {
                    self.report(dev_eui, &events);
                    return Ok(events);
                }
                Err(Error::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict)
    }

    /// Runs a join verified under `slot` for `device` and puts its effects (session write and key
    /// operations) into `commit`, for a caller that commits them together with its own changes
    /// (the join server). Returns the events to [`report`](Self::report) after the commit.
    ///
    /// # Errors
    ///
    /// Store or snapshot errors.
    pub async fn prepare_confirm(
        &self,
        device: &DeviceRow,
        slot: RootKeySlot,
        now: i64,
        commit: &mut Commit,
    ) -> Result<Vec<ServerEvent>> {
        let session = self.store.session(device.dev_eui).await?;
        if session.is_none() {
            return Ok(Vec::new());
        }
        let key_index = self.key_index(device)?;
        let out = self
            .run(
                device.dev_eui,
                session.as_ref(),
                key_index,
                Input::Confirmed(slot),
                now,
            )
            .await?;
        self.fill_commit(commit, device, session.as_ref(), &out)?;
        Ok(out.events)
    }

    /// Expires idle runs whose deadline has passed (any instance may do it for any device).
    ///
    /// # Errors
    ///
    /// Store errors.
    pub async fn expire_due(&self) -> Result<usize> {
        let now = now_ms();
        let due = self.store.due_sessions(now, 256).await?;
        let mut done = 0;
        for dev_eui in due {
            let _guard = self.shards[shard_of(dev_eui, self.shards.len())]
                .lock()
                .await;
            for _ in 0..COMMIT_ATTEMPTS {
                let Some(device) = self.store.device(dev_eui).await? else {
                    break;
                };
                let session = self.store.session(dev_eui).await?;
                let key_index = self.key_index(&device)?;
                let out = self
                    .run(dev_eui, session.as_ref(), key_index, Input::Timeout, now)
                    .await?;
                let mut commit = Commit::new(dev_eui, now);
                self.fill_commit(&mut commit, &device, session.as_ref(), &out)?;
                match self.store.commit(&commit).await {
                    Ok(()) => {
                        self.report(dev_eui, &out.events);
                        done += 1;
                        break;
                    }
                    Err(Error::Conflict) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(done)
    }

    fn key_index(&self, device: &DeviceRow) -> Result<usize> {
        match device.server_key_id {
            None => Ok(0),
            Some(id) => self.key_ids.iter().position(|k| *k == id).ok_or_else(|| {
                Error::Key(format!(
                    "device {} pinned server key {} which is not loaded",
                    device.dev_eui,
                    hex::encode(id)
                ))
            }),
        }
    }

    /// Turns an [`Output`] into the session write and key operations of `commit`.
    fn fill_commit(
        &self,
        commit: &mut Commit,
        device: &DeviceRow,
        session: Option<&SessionRow>,
        out: &Output,
    ) -> Result<()> {
        if let Some(snapshot) = &out.snapshot {
            commit.session = Some(SessionWrite {
                expected_version: session.map(|s| s.version),
                sealed: seal_snapshot(&self.kek, device.dev_eui, snapshot)?,
                pending: out.pending,
                deadline_ms: out.deadline_ms,
            });
        }
        for event in &out.events {
            let op = match event {
                ServerEvent::StageNewKey { keys, .. } => KeyOp::Stage(seal_root_keys(
                    &self.kek,
                    device.dev_eui,
                    &keys.app_key,
                    keys.nwk_key.as_ref(),
                )?),
                ServerEvent::ActivateNewKey { .. } => KeyOp::Activate,
                _ => continue,
            };
            commit.key_ops.push(op);
        }
        if !commit.key_ops.is_empty() || commit.device_version.is_some() {
            commit.device_version = Some(device.version);
        }
        Ok(())
    }

    /// Metrics and logs for committed events.
    pub fn report(&self, dev_eui: Eui64, events: &[ServerEvent]) {
        for event in events {
            match event {
                ServerEvent::SessionStarted { session, .. } => {
                    self.metrics.rekey_started();
                    info!(%dev_eui, session, "key exchange started");
                }
                ServerEvent::StageNewKey { .. } => {
                    info!(%dev_eui, "device authenticated; new root key staged");
                }
                ServerEvent::ActivateNewKey { .. } => {
                    info!(%dev_eui, "new root key active; old key retired");
                }
                ServerEvent::Completed { .. } => {
                    self.metrics.rekey_completed();
                    info!(%dev_eui, "rekey completed");
                }
                ServerEvent::Failed { reason, .. } => {
                    self.metrics.rekey_failed(reason_label(reason));
                    info!(%dev_eui, reason = %reason, "key exchange failed");
                }
                _ => {}
            }
        }
    }

    /// Imports the device's snapshot into an engine, applies `input`, and exports the result;
    /// the crypto runs on a blocking thread.
    async fn run(
        &self,
        dev_eui: Eui64,
        session: Option<&SessionRow>,
        key_index: usize,
        input: Input,
        now: i64,
    ) -> Result<Output> {
        let snapshot = match session {
            Some(s) => Some(SessionSnapshot::from_bytes(&open_snapshot(
                &self.kek, dev_eui, &s.sealed,
            )?)),
            None => None,
        };
        let engine = Arc::clone(&self.engines[shard_of(dev_eui, self.engines.len())]);
        let n = self.options.max_downlink_payload;
        let task = move || -> Result<Output> {
            let mut guard = engine.lock().map_err(|_| EngineFailure::Poisoned)?;
            let engine = &mut *guard;
            let context = engine
                .contexts
                .get(key_index)
                .ok_or(EngineFailure::NoSuchKey(key_index))?;
            let d = dev_eui.0;
            let now = instant(now);
            let mut session = match &snapshot {
                Some(s) => ServerSession::from_snapshot(s)?,
                None if matches!(input, Input::Uplink { .. }) => {
                    ServerSession::new(context, d, now)
                }
                // A confirmation or a timeout for a device with no state changes nothing.
                None => {
                    return Ok(Output {
                        events: Vec::new(),
                        downlink: None,
                        snapshot: None,
                        pending: false,
                        deadline_ms: None,
                        key_work_nanos: None,
                        error: None,
                    });
                }
            };
            let mut error = None;
            let mut key_work_nanos = None;
            match input {
                Input::Uplink { record, payload } => {
                    let started = std::time::Instant::now();
                    match session.handle_uplink(
                        &mut engine.backend,
                        context,
                        now,
                        &record,
                        &payload,
                    ) {
                        Ok(outcome) => {
                            if outcome.key_work {
                                key_work_nanos =
                                    Some(u64::try_from(started.elapsed().as_nanos()).unwrap_or(0));
                            }
                        }
                        Err(e) => error = Some(e),
                    }
                }
                Input::Confirmed(slot) => session.handle_join_verified(slot),
                Input::Timeout => session.handle_timeout(context, now),
            }
            let mut events = Vec::new();
            while let Some(event) = session.poll_event() {
                events.push(event);
            }
            let mut buf = [0u8; lorapki_wire::MAX_PAYLOAD];
            let downlink = session
                .poll_transmit(n, &mut buf)?
                .map(|t| buf[..t.len].to_vec());
            let pending = session.is_pending();
            let deadline_ms = session
                .poll_timeout(context)
                .map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX));
            let exported = Zeroizing::new(session.export().as_bytes().to_vec());
            // Only a changed state is written back; a device with no stored state that is left
            // as a fresh session (a refused frame) writes nothing.
            let unchanged = match &snapshot {
                Some(before) => exported.as_slice() == before.as_bytes(),
                None => {
                    exported.as_slice() == ServerSession::new(context, d, now).export().as_bytes()
                }
            };
            let snapshot = (!unchanged).then_some(exported);
            Ok(Output {
                events,
                downlink,
                snapshot,
                pending,
                deadline_ms,
                key_work_nanos,
                error,
            })
        };
        tokio::task::spawn_blocking(task)
            .await
            .map_err(EngineFailure::Task)?
    }
}
