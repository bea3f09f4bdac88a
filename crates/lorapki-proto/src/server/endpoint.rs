//! [`ServerEndpoint`]: every device of one server key, demultiplexed by DevEUI.

use alloc::collections::{BTreeMap, VecDeque};

use lorapki_crypto::{CryptoBackend, RootKeySlot};
use lorapki_wire::{Reason, Session};

use super::session::{ServerSession, emit_abort, undefined_first_command, unknown_device_session};
use super::{
    DeviceRecord, ServerConfig, ServerContext, ServerEvent, SessionSnapshot, UplinkOutcome,
};
use crate::error::Error;
use crate::time::Instant;
use crate::{Transmit, check_payload_size};

/// Aborts owed to devices that are not registered, bounded so that unknown DevEUIs cost no memory
/// beyond this (property 9).
const MAX_UNKNOWN_ABORTS: usize = 64;

/// The server side of the exchange for many devices: a sans-IO endpoint (PROTOCOL.md §5–§8) that
/// holds one [`ServerSession`] per device and applies the pending bound over all of them.
///
/// Methods, in the style of `quinn_proto::Endpoint`:
///
/// * **getters**: [`pending_sessions`](Self::pending_sessions), [`is_staged`](Self::is_staged),
///   [`export`](Self::export);
/// * **inputs** `handle_*`: [`handle_uplink`](Self::handle_uplink) (an FPort-1 FRMPayload and the
///   registry record of its device), [`handle_join_verified`](Self::handle_join_verified)
///   (the first uplink of a session created by a join under a given key),
///   [`handle_timeout`](Self::handle_timeout);
/// * **commands**: [`import`](Self::import), [`forget`](Self::forget);
/// * **outputs** `poll_*`: [`poll_transmit`](Self::poll_transmit) (the downlink for one device,
///   into the caller's buffer), [`poll_event`](Self::poll_event),
///   [`poll_timeout`](Self::poll_timeout).
///
/// **Polling order.** After each input drain [`poll_event`](Self::poll_event) and apply key events
/// to the join server transactionally; when the network server offers a downlink for a device
/// (same window, or queued for after its next uplink) call
/// [`poll_transmit`](Self::poll_transmit); persist [`export`](Self::export) of every device an
/// input touched before acknowledging that input; call [`handle_timeout`](Self::handle_timeout) at
/// [`poll_timeout`](Self::poll_timeout).
pub struct ServerEndpoint {
    context: ServerContext,
    sessions: BTreeMap<[u8; 8], ServerSession>,
    unknown_aborts: VecDeque<([u8; 8], Session)>,
    events: VecDeque<ServerEvent>,
}

impl ServerEndpoint {
    /// An endpoint with no device state.
    pub fn new<B: CryptoBackend>(backend: &mut B, config: ServerConfig) -> Self {
        Self {
            context: ServerContext::new(backend, config),
            sessions: BTreeMap::new(),
            unknown_aborts: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // ----- getters -----

    /// The context its sessions share.
    #[must_use]
    pub fn context(&self) -> &ServerContext {
        &self.context
    }

    /// How many runs are pending.
    #[must_use]
    pub fn pending_sessions(&self) -> usize {
        self.sessions.values().filter(|s| s.is_pending()).count()
    }

    /// Whether new keys are staged for `dev_eui` (the join server then accepts both).
    #[must_use]
    pub fn is_staged(&self, dev_eui: &[u8; 8]) -> bool {
        self.sessions
            .get(dev_eui)
            .is_some_and(ServerSession::is_staged)
    }

    /// The persistable state of one device (None if the endpoint holds nothing for it).
    #[must_use]
    pub fn export(&self, dev_eui: &[u8; 8]) -> Option<SessionSnapshot> {
        self.sessions.get(dev_eui).map(ServerSession::export)
    }

    // ----- commands -----

    /// Loads a device's state exported by any endpoint (e.g. after a restart, or on another
    /// instance), replacing what this endpoint held for it.
    ///
    /// # Errors
    ///
    /// [`Error::BadSnapshot`] if the bytes are not a snapshot.
    pub fn import(&mut self, snapshot: &SessionSnapshot) -> Result<[u8; 8], Error> {
        let session = ServerSession::from_snapshot(snapshot)?;
        let dev_eui = session.dev_eui();
        self.sessions.insert(dev_eui, session);
        Ok(dev_eui)
    }

    /// Drops everything held for a device.
    pub fn forget(&mut self, dev_eui: &[u8; 8]) {
        self.sessions.remove(dev_eui);
    }

    // ----- inputs -----

    /// An FPort-1 FRMPayload from `dev_eui`; `record` is the device's registry entry, `None` if it
    /// is not registered (then no key work is done and only an Abort is owed).
    ///
    /// # Errors
    ///
    /// The first problem met (unknown device, malformed frame, stale session, wrong direction);
    /// commands before it took effect, the bad one changed nothing.
    pub fn handle_uplink<B: CryptoBackend>(
        &mut self,
        backend: &mut B,
        now: Instant,
        dev_eui: &[u8; 8],
        record: Option<&DeviceRecord>,
        payload: &[u8],
    ) -> Result<UplinkOutcome, Error> {
        let Some(record) = record.filter(|r| r.dev_eui == *dev_eui) else {
            self.owe_unknown_abort(dev_eui, payload);
            return Err(Error::UnknownDevice);
        };
        // Checked before a session is made for the device, so that it leaves no state behind.
        if let Some(e) = undefined_first_command(payload) {
            return Err(e);
        }
        let context = &self.context;
        let session = self
            .sessions
            .entry(*dev_eui)
            .or_insert_with(|| ServerSession::new(context, *dev_eui, now));
        let result = session.handle_uplink(backend, context, now, record, payload);
        self.events.extend(session.drain_events());
        result
    }

    /// The join server verified a JoinRequest of `dev_eui` under `key` (§7): under the staged
    /// key this confirms it; under the active key it changes nothing.
    pub fn handle_join_verified(&mut self, dev_eui: &[u8; 8], key: RootKeySlot) {
        if let Some(session) = self.sessions.get_mut(dev_eui) {
            session.handle_join_verified(key);
            self.events.extend(session.drain_events());
        }
    }

    /// Expires idle pending sessions (their staged keys, if any, stay until a join decides).
    pub fn handle_timeout(&mut self, now: Instant) {
        for session in self.sessions.values_mut() {
            session.handle_timeout(&self.context, now);
            self.events.extend(session.drain_events());
        }
    }

    // ----- outputs -----

    /// The downlink for `dev_eui` at a transmit opportunity with maximum payload `n`, written into
    /// `buf`; `None` if the server has nothing for that device.
    ///
    /// # Errors
    ///
    /// [`Error::PayloadSize`] if `n` is outside 11..=242 or `buf` is shorter than `n`.
    pub fn poll_transmit(
        &mut self,
        dev_eui: &[u8; 8],
        n: usize,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, Error> {
        check_payload_size(n, buf.len())?;
        if let Some(index) = self.unknown_aborts.iter().position(|(d, _)| d == dev_eui)
            && let Some((_, session)) = self.unknown_aborts.remove(index)
        {
            return Ok(emit_abort(&mut buf[..n], session, Reason::UnknownDevice));
        }
        match self.sessions.get_mut(dev_eui) {
            Some(session) => session.poll_transmit(n, buf),
            None => Ok(None),
        }
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work (the earliest idle expiry).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(|s| s.poll_timeout(&self.context))
            .min()
    }

    fn owe_unknown_abort(&mut self, dev_eui: &[u8; 8], payload: &[u8]) {
        let Some(session) = unknown_device_session(payload) else {
            return;
        };
        if self.unknown_aborts.iter().any(|(d, _)| d == dev_eui) {
            return;
        }
        if self.unknown_aborts.len() >= MAX_UNKNOWN_ABORTS {
            self.unknown_aborts.pop_front();
        }
        self.unknown_aborts.push_back((*dev_eui, session));
    }
}
