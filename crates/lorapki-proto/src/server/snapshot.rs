//! A device's server-side state as bytes, so that any instance can resume any device's run
//! (PROTOCOL.md §5.2: the server keeps no ephemeral private key, so this is all there is).
//!
//! Format (version 2), all integers big-endian:
//!
//! ```text
//! 0x01 | DevEUI (8) | last session (1, 0xff = none) | tokens (1) | refilled_at (8) | staged (1)
//!      | has pending (1) [ pending ]
//! pending: session (1) | DevEUI (8) | JoinEUI (8) | LoRaWAN (1) | identity (49) | EPH_D (49)
//!      | EPH_S (49) | TH (48) | AppKey (16) | has NwkKey (1) [NwkKey (16)] | C_D (32) | C_S (32)
//!      | SIG_S (96) | SIG_D chunk 0 present (1) [48] | chunk 1 present (1) [48]
//!      | key change requested (1) | verdict (1, 0xff = none) | verifications (1) | staged (1)
//!      | outbox: 4 × (kind (1, 0xff = empty) | status (1) | fid (1, 0xff = none) | offset (1))
//!        | next fid (1) | cursor (1) | last_activity (8)
//! ```
//!
//! Version 1 (written before the verification count existed) is still read: it had no
//! verifications byte, and a verdict there counts as one verification. "last session" is the
//! last authenticated run's session number (in version 1: the last run started, which is at
//! least as new, so reading it as authenticated only makes more numbers stale, never fewer).
//!
//! Partial fragments and an Abort still owed to the device are not kept: they are transient
//! output, and the peer's retransmissions recover them. So a refused frame never changes a
//! snapshot.

use alloc::vec::Vec;

use lorapki_crypto::{AesKey, PublicKey, Secret, Signature};
use lorapki_wire::{Code, Reassembler, Session};
use zeroize::Zeroize;

use super::DeviceRecord;
use super::session::{DeviceState, PendingSession, ServerCommand};
use crate::error::Error;
use crate::keys::{LorawanVersion, NewRootKeys, SessionKeys};
use crate::outbox::{Entry, Outbox, QUEUE_LEN, Status};
use crate::time::Instant;

const FORMAT: u8 = 2;
const FORMAT_1: u8 = 1;
const NONE: u8 = 0xff;

/// The serialized state of one device at the server: store it (encrypted: it holds the derived
/// keys of a pending run) and give it to [`ServerSession::from_snapshot`](super::ServerSession::from_snapshot)
/// on any instance. The bytes are zeroized on drop; `Debug` shows only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionSnapshot(Vec<u8>);

impl core::fmt::Debug for SessionSnapshot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SessionSnapshot({} bytes, REDACTED)", self.0.len())
    }
}

impl Drop for SessionSnapshot {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl SessionSnapshot {
    /// The bytes, e.g. to store them.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A snapshot from stored bytes (checked when imported).
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }

    pub(super) fn encode(dev_eui: &[u8; 8], entry: &DeviceState) -> Self {
        let mut w = Vec::with_capacity(700);
        w.push(FORMAT);
        w.extend_from_slice(dev_eui);
        w.push(entry.last_session.map_or(NONE, Session::value));
        w.push(entry.tokens);
        w.extend_from_slice(&entry.refilled_at.as_millis().to_be_bytes());
        w.push(u8::from(entry.staged));
        match &entry.pending {
            None => w.push(0),
            Some(p) => {
                w.push(1);
                encode_pending(&mut w, p);
            }
        }
        Self(w)
    }

    pub(super) fn decode(&self) -> Result<([u8; 8], DeviceState), Error> {
        let mut r = Reader { bytes: &self.0 };
        let format = r.u8()?;
        if format != FORMAT && format != FORMAT_1 {
            return Err(MALFORMED);
        }
        let dev_eui = r.array::<8>()?;
        let last_session = optional_session(r.u8()?)?;
        let tokens = r.u8()?;
        let refilled_at = Instant::from_millis(r.u64()?);
        let staged = r.flag()?;
        let pending = if r.flag()? {
            Some(decode_pending(&mut r, format)?)
        } else {
            None
        };
        if !r.bytes.is_empty() {
            return Err(MALFORMED);
        }
        let mut reassembler = Reassembler::new();
        if let Some(p) = &pending {
            reassembler.bind(p.session);
        }
        Ok((
            dev_eui,
            DeviceState {
                last_session,
                tokens,
                refilled_at,
                staged,
                pending,
                reassembler,
                abort: None,
            },
        ))
    }
}

const MALFORMED: Error = Error::BadSnapshot;

fn encode_pending(w: &mut Vec<u8>, p: &PendingSession) {
    w.push(p.session.value());
    w.extend_from_slice(&p.record.dev_eui);
    w.extend_from_slice(&p.record.join_eui);
    w.push(p.record.lorawan.transcript_byte());
    w.extend_from_slice(p.record.identity.as_bytes());
    w.extend_from_slice(&p.device_ephemeral);
    w.extend_from_slice(&p.server_ephemeral);
    w.extend_from_slice(&p.th);
    w.extend_from_slice(p.keys.root.app_key.expose_secret());
    match &p.keys.root.nwk_key {
        Some(key) => {
            w.push(1);
            w.extend_from_slice(key.expose_secret());
        }
        None => w.push(0),
    }
    w.extend_from_slice(p.keys.device_confirm.expose_secret());
    w.extend_from_slice(p.keys.server_confirm.expose_secret());
    w.extend_from_slice(p.server_signature.as_bytes());
    for chunk in &p.device_signature {
        match chunk {
            Some(bytes) => {
                w.push(1);
                w.extend_from_slice(bytes);
            }
            None => w.push(0),
        }
    }
    w.push(u8::from(p.key_change_requested));
    w.push(p.verdict.map_or(NONE, u8::from));
    w.push(p.verifications);
    w.push(u8::from(p.staged));
    let (entries, next_fid, cursor) = p.outbox.parts();
    for entry in entries {
        match entry {
            Some(e) => {
                let (fid, offset) = e.fragment_state();
                w.extend_from_slice(&[
                    kind_byte(e.kind),
                    status_byte(e.status),
                    fid.unwrap_or(NONE),
                    offset,
                ]);
            }
            None => w.extend_from_slice(&[NONE, 0, NONE, 0]),
        }
    }
    w.extend_from_slice(&[next_fid, cursor]);
    w.extend_from_slice(&p.last_activity.as_millis().to_be_bytes());
}

fn decode_pending(r: &mut Reader<'_>, format: u8) -> Result<PendingSession, Error> {
    let session = session_from(r.u8()?)?;
    let dev_eui = r.array::<8>()?;
    let join_eui = r.array::<8>()?;
    let lorawan = match r.u8()? {
        0x10 => LorawanVersion::V1_0,
        0x11 => LorawanVersion::V1_1,
        _ => return Err(MALFORMED),
    };
    let identity = PublicKey::from_compressed_unchecked(r.array::<49>()?).map_err(|_| MALFORMED)?;
    let device_ephemeral = r.array::<49>()?;
    let server_ephemeral = r.array::<49>()?;
    let th = r.array::<48>()?;
    let app_key = AesKey::from_array(r.array::<16>()?);
    let nwk_key = if r.flag()? {
        Some(AesKey::from_array(r.array::<16>()?))
    } else {
        None
    };
    let device_confirm = Secret::from_array(r.array::<32>()?);
    let server_confirm = Secret::from_array(r.array::<32>()?);
    let server_signature = Signature::from_bytes(r.array::<96>()?);
    let mut device_signature = [None, None];
    for chunk in &mut device_signature {
        if r.flag()? {
            *chunk = Some(r.array::<48>()?);
        }
    }
    let key_change_requested = r.flag()?;
    let verdict = match r.u8()? {
        NONE => None,
        code @ 0..=3 => Some(Code::from(code)),
        _ => return Err(MALFORMED),
    };
    let verifications = if format == FORMAT_1 {
        u8::from(verdict.is_some())
    } else {
        r.u8()?
    };
    let staged = r.flag()?;
    let mut entries = [None; QUEUE_LEN];
    for slot in &mut entries {
        let [kind, status, fid, offset] = r.array::<4>()?;
        if kind == NONE {
            continue;
        }
        let fid = match fid {
            NONE => None,
            0..=3 => Some(fid),
            _ => return Err(MALFORMED),
        };
        *slot = Some(
            Entry::restore(kind_from(kind)?, status_from(status)?, fid, offset).ok_or(MALFORMED)?,
        );
    }
    let [next_fid, cursor] = r.array::<2>()?;
    let outbox = Outbox::restore(entries, next_fid, cursor).ok_or(MALFORMED)?;
    let last_activity = Instant::from_millis(r.u64()?);
    Ok(PendingSession {
        session,
        record: DeviceRecord {
            dev_eui,
            join_eui,
            lorawan,
            identity,
        },
        device_ephemeral,
        server_ephemeral,
        th,
        keys: SessionKeys {
            root: NewRootKeys { app_key, nwk_key },
            device_confirm,
            server_confirm,
        },
        server_signature,
        device_signature,
        key_change_requested,
        verdict,
        verifications,
        staged,
        outbox,
        last_activity,
    })
}

fn kind_byte(kind: ServerCommand) -> u8 {
    match kind {
        ServerCommand::Part0 => 0,
        ServerCommand::Part1 => 1,
        ServerCommand::Part2 => 2,
        ServerCommand::Answer => 3,
    }
}

fn kind_from(byte: u8) -> Result<ServerCommand, Error> {
    Ok(match byte {
        0 => ServerCommand::Part0,
        1 => ServerCommand::Part1,
        2 => ServerCommand::Part2,
        3 => ServerCommand::Answer,
        _ => return Err(MALFORMED),
    })
}

fn status_byte(status: Status) -> u8 {
    match status {
        Status::Unsent => 0,
        Status::Sent => 1,
        Status::Acked => 2,
    }
}

fn status_from(byte: u8) -> Result<Status, Error> {
    Ok(match byte {
        0 => Status::Unsent,
        1 => Status::Sent,
        2 => Status::Acked,
        _ => return Err(MALFORMED),
    })
}

fn session_from(byte: u8) -> Result<Session, Error> {
    Session::new(byte).map_err(|_| MALFORMED)
}

fn optional_session(byte: u8) -> Result<Option<Session>, Error> {
    if byte == NONE {
        Ok(None)
    } else {
        session_from(byte).map(Some)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let (head, rest) = self.bytes.split_at_checked(N).ok_or(MALFORMED)?;
        self.bytes = rest;
        let mut out = [0; N];
        out.copy_from_slice(head);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.array::<8>()?))
    }

    fn flag(&mut self) -> Result<bool, Error> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(MALFORMED),
        }
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for SessionSnapshot {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for SessionSnapshot {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SessionSnapshot;
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str("session snapshot bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(SessionSnapshot(v.to_vec()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut bytes = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                Ok(SessionSnapshot(bytes))
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}
