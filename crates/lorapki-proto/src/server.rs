//! The server role, split as quinn splits `Endpoint` from `Connection`:
//!
//! * [`ServerSession`] — one device's state machine (the run, the replay and stale-session rules,
//!   its run budget, the downlinks it owes), persisted as a [`SessionSnapshot`];
//! * [`ServerEndpoint`] — every device of one server key: demultiplexing by DevEUI, the pending
//!   bound over all devices, the Aborts owed to unregistered devices.
//!
//! A server that keeps its devices' state in a database (as `lorapki-server` does) drives
//! [`ServerSession`]s directly and applies its own pending bound; tests and simulators use the
//! endpoint. Both share one [`ServerContext`] per server key.

use lorapki_crypto::{CryptoBackend, KeySlot, PublicKey};

use crate::error::FailReason;
use crate::keys::{self, KeyId, LorawanVersion, NewRootKeys};
use crate::time::Duration;

mod endpoint;
mod session;
mod snapshot;
pub use endpoint::ServerEndpoint;
pub use session::{ServerSession, unknown_device_abort};
pub use snapshot::SessionSnapshot;

/// A token bucket that bounds how many runs a device may start (PROTOCOL.md §6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Runs a device may start back to back.
    pub burst: u8,
    /// One more run is allowed per this interval.
    pub refill: Duration,
}

/// How the server is set up.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The backend slot holding the server's signing key.
    pub signing_slot: KeySlot,
    /// Its public key (the one the devices pinned).
    pub signing_public_key: PublicKey,
    /// A pending session with no frame for this long is dropped.
    pub idle_timeout: Duration,
    /// Runs per device.
    pub rate_limit: RateLimit,
    /// A pending run that had a frame within this time is not displaced by a PubKeyReq of
    /// another run (PROTOCOL.md §8): a forged PubKeyReq cannot end the device's run. Keep it well
    /// under the device's 8-uplink horizon (8 × its retransmit interval).
    pub run_lease: Duration,
    /// Signature verifications per run (PROTOCOL.md §6.4): a SigVerifyReq chunk with other bytes
    /// replaces the held one and the signature is verified again, at most this many times.
    pub verifications_per_run: u8,
}

impl ServerConfig {
    /// The defaults of PROTOCOL.md §6.4.
    #[must_use]
    pub fn new(signing_slot: KeySlot, signing_public_key: PublicKey) -> Self {
        Self {
            signing_slot,
            signing_public_key,
            idle_timeout: Duration::from_secs(3600),
            rate_limit: RateLimit {
                burst: 3,
                refill: Duration::from_secs(3600),
            },
            run_lease: Duration::from_secs(120),
            verifications_per_run: 8,
        }
    }
}

/// What the server knows of a registered device (from its registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    /// DevEUI, most significant byte first.
    pub dev_eui: [u8; 8],
    /// JoinEUI, most significant byte first.
    pub join_eui: [u8; 8],
    /// LoRaWAN version.
    pub lorawan: LorawanVersion,
    /// The device's identity public key.
    pub identity: PublicKey,
}

/// What the server reports (see [`ServerEndpoint::poll_event`]).
#[derive(Debug, PartialEq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A run started.
    SessionStarted {
        /// The device.
        dev_eui: [u8; 8],
        /// Its session number.
        session: u8,
    },
    /// The device is authenticated and asked for the key change: the join server must accept
    /// these keys *in addition to* the active ones from now on (§7).
    StageNewKey {
        /// The device.
        dev_eui: [u8; 8],
        /// The new root keys.
        keys: NewRootKeys,
    },
    /// A JoinRequest verified under the staged keys (evidence only the device can give): make
    /// them active, retire the old (§7).
    ActivateNewKey {
        /// The device.
        dev_eui: [u8; 8],
    },
    /// The rekey of this device completed.
    Completed {
        /// The device.
        dev_eui: [u8; 8],
    },
    /// A run ended without a new key.
    Failed {
        /// The device.
        dev_eui: [u8; 8],
        /// Why.
        reason: FailReason,
    },
}

/// What an uplink did (for metrics and logs).
#[must_use]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UplinkOutcome {
    /// Commands acted upon.
    pub accepted: u8,
    /// Commands recognised as duplicates and answered from the stored state, without key work.
    pub duplicates: u8,
    /// Whether expensive key work (ECDH + signing, or a signature verification) was done.
    pub key_work: bool,
}

/// What every session of one server key shares: the configuration and the server key id
/// (computed once).
#[derive(Clone, Debug)]
pub struct ServerContext {
    pub(crate) config: ServerConfig,
    pub(crate) server_key_id: KeyId,
}

impl ServerContext {
    /// The context for `config` (hashes the server's public key into its key id).
    pub fn new<B: CryptoBackend>(backend: &mut B, config: ServerConfig) -> Self {
        let server_key_id = keys::key_id(backend, &config.signing_public_key);
        Self {
            config,
            server_key_id,
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }
}
