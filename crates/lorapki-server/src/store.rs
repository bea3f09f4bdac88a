//! The store: one schema (`migrations/`), two backends through sqlx's `Any` driver — embedded
//! SQLite (the default, zero set-up) and PostgreSQL (several server instances sharing state).
//!
//! Every change that belongs together (a session snapshot and the key events it produced, a join
//! and its nonces) is one transaction guarded by per-row version numbers, so that two instances
//! working on the same device never both win: the loser gets [`Error::Conflict`] and retries from
//! the fresh state. Root keys and snapshots are sealed under the storage KEK before they reach
//! the database.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Once;

use lorapki_crypto::PublicKey;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyPool, Row};

use crate::error::{Error, ImportError, Result};
use crate::eui::Eui64;
use crate::identity::KeyId;
use crate::kek::{StorageKek, open_root_keys, open_snapshot, seal_root_keys};
use crate::lorawan::MacVersion;
use crate::registry::NewDevice;

const MIGRATION_1: &str = include_str!("../migrations/0001_init.sql");
const MIGRATION_2: &str = include_str!("../migrations/0002_kek_check.sql");

/// The `meta` row holding the storage KEK's check value.
const KEK_CHECK: &str = "kek_check";

#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<
        Box<
            dyn Future<Output = std::result::Result<Vec<Migration>, sqlx::error::BoxDynError>>
                + Send
                + 's,
        >,
    > {
        Box::pin(async {
            Ok(vec![
                Migration::new(
                    1,
                    Cow::Borrowed("init"),
                    MigrationType::Simple,
                    Cow::Borrowed(MIGRATION_1),
                    false,
                ),
                Migration::new(
                    2,
                    Cow::Borrowed("kek check"),
                    MigrationType::Simple,
                    Cow::Borrowed(MIGRATION_2),
                    false,
                ),
            ])
        })
    }
}

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The key state of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Only the factory keys.
    Factory,
    /// New keys staged beside the active ones (the join server accepts both).
    PendingNew,
    /// New keys active, the previous ones retired.
    ActiveNew,
}

impl KeyState {
    /// The stored text.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Factory => "factory",
            Self::PendingNew => "pending-new",
            Self::ActiveNew => "active-new",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "factory" => Self::Factory,
            "pending-new" => Self::PendingNew,
            "active-new" => Self::ActiveNew,
            _ => return Err(Error::Store(format!("unknown key state {s:?}"))),
        })
    }
}

/// A registry row (root keys still sealed).
#[derive(Debug, Clone)]
pub struct DeviceRow {
    /// DevEUI.
    pub dev_eui: Eui64,
    /// JoinEUI.
    pub join_eui: Eui64,
    /// MAC version.
    pub mac_version: MacVersion,
    /// Identity public key.
    pub identity: PublicKey,
    /// raw | certificate.
    pub identity_source: String,
    /// The pinned server key, if not the primary.
    pub server_key_id: Option<KeyId>,
    /// Key state.
    pub key_state: KeyState,
    /// Activations so far.
    pub generation: i64,
    /// Sealed active root keys.
    pub active_keys: Vec<u8>,
    /// Sealed staged root keys.
    pub staged_keys: Option<Vec<u8>>,
    /// Highest DevNonce seen, -1 if none.
    pub dev_nonce_last: i64,
    /// Used DevNonces (bitmap) for LoRaWAN ≤ 1.0.3.
    pub dev_nonces_used: Option<Vec<u8>>,
    /// Last JoinNonce issued.
    pub join_nonce: i64,
    /// Row version.
    pub version: i64,
}

/// A stored session snapshot (sealed) with its row version.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// Row version.
    pub version: i64,
    /// Sealed snapshot.
    pub sealed: Vec<u8>,
}

/// A session write, guarded by the version it was read at (`None`: there was no row).
#[derive(Debug)]
pub struct SessionWrite {
    /// The version read; the write fails with [`Error::Conflict`] if it changed.
    pub expected_version: Option<i64>,
    /// The new sealed snapshot.
    pub sealed: Vec<u8>,
    /// Whether a run is pending.
    pub pending: bool,
    /// When the idle timer next needs this device (ms since the UNIX epoch).
    pub deadline_ms: Option<i64>,
}

/// A change to a device's root keys (PROTOCOL.md §7).
#[derive(Debug)]
pub enum KeyOp {
    /// Stage new keys (sealed) beside the active ones.
    Stage(Vec<u8>),
    /// The staged keys become active; the old ones are retired (erased).
    Activate,
}

/// The join server's per-join changes.
#[derive(Debug)]
pub struct JoinUpdate {
    /// New highest DevNonce.
    pub dev_nonce_last: i64,
    /// New used-DevNonce bitmap (≤ 1.0.3).
    pub dev_nonces_used: Option<Vec<u8>>,
    /// The JoinNonce just issued.
    pub join_nonce: i64,
}

/// Everything one input changes for one device, applied in one transaction.
#[derive(Debug)]
pub struct Commit {
    /// The device.
    pub dev_eui: Eui64,
    /// The devices-row version read (required when `key_ops` or `join`).
    pub device_version: Option<i64>,
    /// The new session snapshot.
    pub session: Option<SessionWrite>,
    /// Key changes, in order.
    pub key_ops: Vec<KeyOp>,
    /// Join-server state.
    pub join: Option<JoinUpdate>,
    /// Now, ms since the UNIX epoch.
    pub now_ms: i64,
}

impl Commit {
    /// A commit for `dev_eui` that changes nothing yet.
    #[must_use]
    pub fn new(dev_eui: Eui64, now_ms: i64) -> Self {
        Self {
            dev_eui,
            device_version: None,
            session: None,
            key_ops: Vec::new(),
            join: None,
            now_ms,
        }
    }

    fn touches_device(&self) -> bool {
        !self.key_ops.is_empty() || self.join.is_some()
    }
}

/// A device as `devices list` shows it (no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSummary {
    /// DevEUI.
    pub dev_eui: Eui64,
    /// JoinEUI.
    pub join_eui: Eui64,
    /// MAC version text.
    pub mac_version: String,
    /// Key state.
    pub key_state: KeyState,
    /// Generation of the active keys.
    pub generation: i64,
    /// raw | certificate.
    pub identity_source: String,
}

/// The database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

static DRIVERS: Once = Once::new();

impl Store {
    /// Opens (creating if needed) the database at `url` — `sqlite://PATH` (created if missing),
    /// `sqlite::memory:` or `postgres://…` — and runs the migrations.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] naming the database (without credentials) if it cannot be opened or
    /// migrated.
    pub async fn open(url: &str) -> Result<Self> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let (backend, url) = if url.starts_with("sqlite:") {
            let url = if url.contains(":memory:") || url.contains("mode=") {
                url.to_owned()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(Error::Config(
                "database url must start with sqlite: or postgres:".into(),
            ));
        };
        let options = AnyPoolOptions::new().acquire_timeout(std::time::Duration::from_secs(30));
        let pool = match backend {
            // One connection: SQLite has one writer, and a single connection keeps writers from
            // failing with SQLITE_BUSY when a read transaction upgrades.
            Backend::Sqlite => {
                options
                    .max_connections(1)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // WAL + NORMAL: a commit survives a process crash; after a power
                            // loss the last commits may be lost but the file stays consistent,
                            // and the two-phase switch is safe either way (a lost stage is a
                            // roll-back, a lost activation keeps both keys accepted).
                            sqlx::query("PRAGMA journal_mode = WAL")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA synchronous = NORMAL")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA busy_timeout = 10000")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await
            }
            Backend::Postgres => options.max_connections(16).connect(&url).await,
        }
        .map_err(|source| Error::Database {
            context: Some(format!("database {}", display_url(&url))),
            source,
        })?;
        let migration = |source| Error::Migration {
            database: display_url(&url),
            source,
        };
        let migrator = Migrator::new(Embedded).await.map_err(migration)?;
        migrator.run(&pool).await.map_err(migration)?;
        Ok(Self { pool, backend })
    }

    /// Which backend this is.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Checks that `kek` is the storage KEK this database is sealed under; at its first use on
    /// a database, writes the database's check value under it. Run it before anything seals or
    /// opens with `kek` (`serve` does; [`import_devices`](Self::import_devices) checks itself).
    ///
    /// # Errors
    ///
    /// [`Error::KekMismatch`] (nothing written), or [`Error::Store`].
    pub async fn check_kek(&self, kek: &StorageKek) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        check_kek_in(&mut tx, kek).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Imports devices, all or nothing: if any DevEUI is already registered, nothing is stored
    /// and the error names each such line. `kek` must be the database's (see
    /// [`check_kek`](Self::check_kek), which runs in the same transaction).
    ///
    /// # Errors
    ///
    /// [`Error::Import`], [`Error::KekMismatch`] or [`Error::Store`].
    pub async fn import_devices(
        &self,
        devices: &[(usize, NewDevice)],
        kek: &StorageKek,
        now_ms: i64,
    ) -> Result<usize> {
        let mut tx = self.pool.begin().await?;
        check_kek_in(&mut tx, kek).await?;
        let mut errors = Vec::new();
        for (line, d) in devices {
            let exists = sqlx::query("SELECT 1 FROM devices WHERE dev_eui = $1")
                .bind(d.dev_eui.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_some() {
                if errors.len() < 100 {
                    errors.push(ImportError {
                        line: *line,
                        message: format!("DevEUI {} is already registered", d.dev_eui),
                    });
                }
                continue;
            }
            let sealed = seal_root_keys(kek, d.dev_eui, &d.app_key, d.nwk_key.as_ref())?;
            sqlx::query(
                "INSERT INTO devices (dev_eui, join_eui, mac_version, identity, identity_source, \
                 server_key_id, key_state, generation, active_keys, staged_keys, dev_nonce_last, \
                 dev_nonces_used, join_nonce, version, created_ms, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'factory', 0, $7, NULL, -1, NULL, 0, 0, $8, $8)",
            )
            .bind(d.dev_eui.to_string())
            .bind(d.join_eui.to_string())
            .bind(d.mac_version.as_str())
            .bind(d.identity.as_bytes().to_vec())
            .bind(d.identity_source.as_str())
            .bind(d.server_key_id.map(hex::encode))
            .bind(sealed)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        if !errors.is_empty() {
            tx.rollback().await?;
            return Err(Error::Import(errors));
        }
        tx.commit().await?;
        Ok(devices.len())
    }

    /// One device's registry row.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn device(&self, dev_eui: Eui64) -> Result<Option<DeviceRow>> {
        let row = sqlx::query(
            "SELECT dev_eui, join_eui, mac_version, identity, identity_source, server_key_id, \
             key_state, generation, active_keys, staged_keys, dev_nonce_last, dev_nonces_used, \
             join_nonce, version FROM devices WHERE dev_eui = $1",
        )
        .bind(dev_eui.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| device_from_row(&r)).transpose()
    }

    /// All devices, ordered by DevEUI.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn list_devices(&self) -> Result<Vec<DeviceSummary>> {
        let rows = sqlx::query(
            "SELECT dev_eui, join_eui, mac_version, key_state, generation, identity_source \
             FROM devices ORDER BY dev_eui",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeviceSummary {
                    dev_eui: eui(r, "dev_eui")?,
                    join_eui: eui(r, "join_eui")?,
                    mac_version: r.try_get("mac_version")?,
                    key_state: KeyState::parse(&r.try_get::<String, _>("key_state")?)?,
                    generation: r.try_get("generation")?,
                    identity_source: r.try_get("identity_source")?,
                })
            })
            .collect()
    }

    /// The key history of a device: (generation, event) in order.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn key_history(&self, dev_eui: Eui64) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query(
            "SELECT generation, event FROM key_history WHERE dev_eui = $1 ORDER BY at_ms, generation",
        )
        .bind(dev_eui.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("generation")?, r.try_get("event")?)))
            .collect()
    }

    /// The session row of a device.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn session(&self, dev_eui: Eui64) -> Result<Option<SessionRow>> {
        let row = sqlx::query("SELECT version, snapshot FROM sessions WHERE dev_eui = $1")
            .bind(dev_eui.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(SessionRow {
                version: r.try_get("version")?,
                sealed: r.try_get("snapshot")?,
            })
        })
        .transpose()
    }

    /// Devices whose idle timer is due at `now_ms`.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn due_sessions(&self, now_ms: i64, limit: i64) -> Result<Vec<Eui64>> {
        let rows = sqlx::query(
            "SELECT dev_eui FROM sessions WHERE deadline_ms IS NOT NULL AND deadline_ms <= $1 \
             ORDER BY deadline_ms LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| eui(r, "dev_eui")).collect()
    }

    /// Runs pending over all devices.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn pending_sessions(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE pending = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Devices per key state.
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn key_state_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT key_state, COUNT(*) AS n FROM devices GROUP BY key_state ORDER BY key_state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("key_state")?, r.try_get("n")?)))
            .collect()
    }

    /// Applies a [`Commit`] in one transaction.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] if a row changed since it was read (nothing is applied then), or
    /// [`Error::Store`].
    pub async fn commit(&self, commit: &Commit) -> Result<()> {
        if commit.touches_device() && commit.device_version.is_none() {
            return Err(Error::Store("device change without a version".into()));
        }
        let dev = commit.dev_eui.to_string();
        let now = commit.now_ms;
        let mut tx = self.pool.begin().await?;
        if let Some(session) = &commit.session {
            write_session(&mut tx, &dev, now, session).await?;
        }
        // Every devices-row write is guarded by the version the previous one left.
        let mut version = commit.device_version.unwrap_or(0);
        for op in &commit.key_ops {
            apply_key_op(&mut tx, &dev, now, version, op).await?;
            version += 1;
        }
        if let Some(join) = &commit.join {
            write_join(&mut tx, &dev, now, version, join).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The session row of a [`Commit`]: an update guarded by the version read, or the first insert.
async fn write_session(
    conn: &mut sqlx::AnyConnection,
    dev: &str,
    now: i64,
    s: &SessionWrite,
) -> Result<()> {
    let affected = match s.expected_version {
        Some(v) => sqlx::query(
            "UPDATE sessions SET snapshot = $1, version = version + 1, pending = $2, \
             deadline_ms = $3, updated_ms = $4 WHERE dev_eui = $5 AND version = $6",
        )
        .bind(s.sealed.clone())
        .bind(i64::from(s.pending))
        .bind(s.deadline_ms)
        .bind(now)
        .bind(dev)
        .bind(v)
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        None => sqlx::query(
            "INSERT INTO sessions (dev_eui, snapshot, version, pending, deadline_ms, \
             updated_ms) VALUES ($1, $2, 0, $3, $4, $5) ON CONFLICT (dev_eui) DO NOTHING",
        )
        .bind(dev)
        .bind(s.sealed.clone())
        .bind(i64::from(s.pending))
        .bind(s.deadline_ms)
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected(),
    };
    one_row(affected)
}

/// One key change of a [`Commit`] on the devices row at `version`, and its `key_history` rows.
async fn apply_key_op(
    conn: &mut sqlx::AnyConnection,
    dev: &str,
    now: i64,
    version: i64,
    op: &KeyOp,
) -> Result<()> {
    let affected = match op {
        KeyOp::Stage(sealed) => sqlx::query(
            "UPDATE devices SET staged_keys = $1, key_state = 'pending-new', \
             version = version + 1, updated_ms = $2 WHERE dev_eui = $3 AND version = $4",
        )
        .bind(sealed.clone())
        .bind(now)
        .bind(dev)
        .bind(version)
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        KeyOp::Activate => {
            update_device(
                conn,
                "UPDATE devices SET active_keys = staged_keys, staged_keys = NULL, \
                 generation = generation + 1, key_state = 'active-new', \
                 version = version + 1, updated_ms = $1 \
                 WHERE dev_eui = $2 AND version = $3 AND staged_keys IS NOT NULL",
                now,
                dev,
                version,
            )
            .await?
        }
    };
    one_row(affected)?;
    let events: &[(&str, i64)] = match op {
        KeyOp::Stage(_) => &[("staged", 1)],
        KeyOp::Activate => &[("retired", -1), ("activated", 0)],
    };
    for (event, offset) in events {
        sqlx::query(
            "INSERT INTO key_history (dev_eui, generation, event, at_ms) \
             SELECT dev_eui, generation + $1, $2, $3 FROM devices WHERE dev_eui = $4",
        )
        .bind(*offset)
        .bind(*event)
        .bind(now)
        .bind(dev)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The join server's changes of a [`Commit`] on the devices row at `version`.
async fn write_join(
    conn: &mut sqlx::AnyConnection,
    dev: &str,
    now: i64,
    version: i64,
    j: &JoinUpdate,
) -> Result<()> {
    let affected = sqlx::query(
        "UPDATE devices SET dev_nonce_last = $1, dev_nonces_used = $2, join_nonce = $3, \
         version = version + 1, updated_ms = $4 WHERE dev_eui = $5 AND version = $6",
    )
    .bind(j.dev_nonce_last)
    .bind(j.dev_nonces_used.clone())
    .bind(j.join_nonce)
    .bind(now)
    .bind(dev)
    .bind(version)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    one_row(affected)
}

/// The database's KEK check value, if it has one.
async fn kek_check_value(conn: &mut sqlx::AnyConnection) -> Result<Option<Vec<u8>>> {
    let row = sqlx::query("SELECT value FROM meta WHERE name = $1")
        .bind(KEK_CHECK)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| r.try_get("value")).transpose()?)
}

/// [`Store::check_kek`] inside the caller's transaction.
async fn check_kek_in(conn: &mut sqlx::AnyConnection, kek: &StorageKek) -> Result<()> {
    if let Some(check) = kek_check_value(conn).await? {
        return if kek.opens_check(&check) {
            Ok(())
        } else {
            Err(kek.mismatch())
        };
    }
    // No check value: an empty database, or one written before the check value existed
    // (schema version 1), which may already hold sealed rows. Those rows were sealed under the
    // database's KEK, so before `kek` is pinned, one of them must open under it: the root keys
    // of the oldest device, else (no device) a session snapshot. A database that the earlier
    // version sealed under two KEKs keeps the KEK of its oldest device.
    let device = sqlx::query(
        "SELECT dev_eui, active_keys FROM devices ORDER BY created_ms, dev_eui LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = device {
        let sealed: Vec<u8> = row.try_get("active_keys")?;
        if open_root_keys(kek, eui(&row, "dev_eui")?, &sealed).is_err() {
            return Err(kek.mismatch());
        }
    } else if let Some(row) =
        sqlx::query("SELECT dev_eui, snapshot FROM sessions ORDER BY updated_ms, dev_eui LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?
    {
        let sealed: Vec<u8> = row.try_get("snapshot")?;
        if open_snapshot(kek, eui(&row, "dev_eui")?, &sealed).is_err() {
            return Err(kek.mismatch());
        }
    }
    let written =
        sqlx::query("INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(KEK_CHECK)
            .bind(kek.seal_check()?)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    if written == 0 {
        // Another instance pinned its KEK meanwhile: it must be this one too.
        let check = kek_check_value(conn)
            .await?
            .ok_or_else(|| Error::Store("the KEK check value vanished".into()))?;
        if !kek.opens_check(&check) {
            return Err(kek.mismatch());
        }
    }
    Ok(())
}

/// A database URL for messages: without its password and query (which may carry one).
fn display_url(url: &str) -> String {
    let url = url.split('?').next().unwrap_or(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Checks that a versioned write changed its one row: none means the row changed (or is gone)
/// since it was read, [`Error::Conflict`].
fn one_row(affected: u64) -> Result<()> {
    if affected != 1 {
        return Err(Error::Conflict);
    }
    Ok(())
}

/// Runs `sql`, a write of a device row whose parameters are `$1` the time, `$2` the device and
/// `$3` the version read; returns the rows it changed.
async fn update_device(
    conn: &mut sqlx::AnyConnection,
    sql: &'static str,
    now: i64,
    dev: &str,
    version: i64,
) -> Result<u64> {
    Ok(sqlx::query(sql)
        .bind(now)
        .bind(dev)
        .bind(version)
        .execute(conn)
        .await?
        .rows_affected())
}

fn eui(r: &AnyRow, column: &str) -> Result<Eui64> {
    let text: String = r.try_get(column)?;
    Eui64::from_str(&text).map_err(|_| Error::Store(format!("bad {column} in the database")))
}

fn device_from_row(r: &AnyRow) -> Result<DeviceRow> {
    let identity: Vec<u8> = r.try_get("identity")?;
    let identity: [u8; 49] = identity
        .try_into()
        .map_err(|_| Error::Store("bad identity key in the database".into()))?;
    let identity = PublicKey::from_compressed_unchecked(identity)
        .map_err(|_| Error::Store("bad identity key in the database".into()))?;
    let server_key_id = match r.try_get::<Option<String>, _>("server_key_id")? {
        None => None,
        Some(t) => {
            let mut id = [0u8; 8];
            hex::decode_to_slice(&t, &mut id)
                .map_err(|_| Error::Store("bad server key id in the database".into()))?;
            Some(id)
        }
    };
    Ok(DeviceRow {
        dev_eui: eui(r, "dev_eui")?,
        join_eui: eui(r, "join_eui")?,
        mac_version: MacVersion::from_str(&r.try_get::<String, _>("mac_version")?)?,
        identity,
        identity_source: r.try_get("identity_source")?,
        server_key_id,
        key_state: KeyState::parse(&r.try_get::<String, _>("key_state")?)?,
        generation: r.try_get("generation")?,
        active_keys: r.try_get("active_keys")?,
        staged_keys: r.try_get("staged_keys")?,
        dev_nonce_last: r.try_get("dev_nonce_last")?,
        dev_nonces_used: r.try_get("dev_nonces_used")?,
        join_nonce: r.try_get("join_nonce")?,
        version: r.try_get("version")?,
    })
}

impl Store {
    /// The registered devices whose identity key is one of `identities`, as (DevEUI, key): the
    /// registry's one-identity-key-per-device check at import
    /// ([`crate::registry::check_registered_identities`] takes what this returns).
    ///
    /// # Errors
    ///
    /// [`Error::Store`].
    pub async fn devices_with_identities(
        &self,
        identities: &[PublicKey],
    ) -> Result<Vec<(Eui64, PublicKey)>> {
        if identities.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: std::collections::HashSet<&[u8]> =
            identities.iter().map(|k| k.as_bytes().as_slice()).collect();
        let rows = sqlx::query("SELECT dev_eui, identity FROM devices ORDER BY dev_eui")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::new();
        for r in &rows {
            let identity: Vec<u8> = r.try_get("identity")?;
            if !wanted.contains(identity.as_slice()) {
                continue;
            }
            let key = <[u8; 49]>::try_from(identity)
                .ok()
                .and_then(|b| PublicKey::from_compressed_unchecked(b).ok())
                .ok_or_else(|| Error::Store("bad identity key in the database".into()))?;
            out.push((eui(r, "dev_eui")?, key));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_shown_without_secrets() {
        for (url, shown) in [
            (
                "sqlite:///var/lib/lorapki.db",
                "sqlite:///var/lib/lorapki.db",
            ),
            ("sqlite://lorapki.db?mode=rwc", "sqlite://lorapki.db"),
            (
                "postgres://lorapki:s3cret@db.example:5432/lorapki?sslmode=require",
                "postgres://lorapki@db.example:5432/lorapki",
            ),
            ("postgres://u:p@w@host/db", "postgres://u@host/db"),
            ("postgres://host/db?password=s3cret", "postgres://host/db"),
        ] {
            assert_eq!(display_url(url), shown);
        }
    }

    #[tokio::test]
    async fn an_unopenable_database_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/missing-dir/x.db", dir.path().display());
        let e = Store::open(&url).await.unwrap_err().to_string();
        assert!(e.contains("missing-dir/x.db"), "{e}");
    }
}
