//! The simulated join server: the root keys it accepts per device, DevNonce checks, JoinAccepts.

use std::collections::BTreeMap;
use std::convert::Infallible;

use lorapki_crypto::{AesKey, RootKeySlot};
use lorapki_join::KeyOps;
use lorapki_proto::KeyAcceptance;

use crate::mac::{self, JoinAcceptFields, SessionKeys};

/// A root-key change the application asks of the join server (from `ServerEvent`s).
#[derive(Debug)]
pub enum KeyEvent {
    /// Accept `app_key` in addition to the active key.
    Stage {
        /// The device.
        dev_eui: [u8; 8],
        /// The new AppKey.
        app_key: AesKey,
    },
    /// The staged key becomes the active key; the old one is retired.
    Activate {
        /// The device.
        dev_eui: [u8; 8],
    },
}

/// One device at the join server.
struct JsDevice {
    join_eui: [u8; 8],
    active: AesKey,
    staged: Option<AesKey>,
    last_dev_nonce: Option<u16>,
    join_nonce: u32,
}

impl JsDevice {
    /// The key in `slot`, if that slot holds one.
    fn key(&self, slot: RootKeySlot) -> Option<&AesKey> {
        match slot {
            RootKeySlot::Active => Some(&self.active),
            RootKeySlot::Staged => self.staged.as_ref(),
        }
    }
}

/// Why the join server refused a JoinRequest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinRefusal {
    /// Not a JoinRequest, or an unknown DevEUI/JoinEUI.
    Unknown,
    /// The MIC verifies under no key the join server accepts for the device.
    Mic,
    /// The DevNonce does not increase (a replay, or a duplicate from the air).
    DevNonce,
}

/// A JoinRequest the join server accepted.
#[derive(Debug)]
pub struct JoinAnswer {
    /// The device.
    pub dev_eui: [u8; 8],
    /// Which of its keys verified (and encrypts the JoinAccept).
    pub slot: RootKeySlot,
    /// The JoinAccept PHY payload.
    pub accept: Vec<u8>,
    /// The new session's keys.
    pub keys: SessionKeys,
}

/// A LoRaWAN 1.0.x join server whose devices may have a staged root key (PROTOCOL.md §7).
#[derive(Default)]
pub struct JoinServer {
    devices: BTreeMap<[u8; 8], JsDevice>,
}

impl JoinServer {
    /// An empty join server.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a device with its factory AppKey.
    pub fn provision(&mut self, dev_eui: [u8; 8], join_eui: [u8; 8], app_key: AesKey) {
        self.devices.insert(
            dev_eui,
            JsDevice {
                join_eui,
                active: app_key,
                staged: None,
                last_dev_nonce: None,
                join_nonce: 0,
            },
        );
    }

    /// Applies a key event of the application.
    pub fn apply(&mut self, event: KeyEvent) {
        match event {
            KeyEvent::Stage { dev_eui, app_key } => {
                if let Some(d) = self.devices.get_mut(&dev_eui) {
                    d.staged = Some(app_key);
                }
            }
            KeyEvent::Activate { dev_eui } => {
                if let Some(d) = self.devices.get_mut(&dev_eui)
                    && let Some(staged) = d.staged.take()
                {
                    d.active = staged;
                }
            }
        }
    }

    /// Whether a key is staged for the device.
    #[must_use]
    pub fn is_staged(&self, dev_eui: &[u8; 8]) -> bool {
        self.devices
            .get(dev_eui)
            .is_some_and(|d| d.staged.is_some())
    }

    /// AES-CMAC of `message` under the device's key in `slot` (to compare keys with a device's
    /// key store without reading either).
    #[must_use]
    pub fn key_cmac(
        &self,
        dev_eui: &[u8; 8],
        slot: RootKeySlot,
        message: &[u8],
    ) -> Option<[u8; 16]> {
        let mut key = self.devices.get(dev_eui)?.key(slot)?;
        let Ok(tag) = key.cmac(&[message]);
        Some(tag)
    }

    /// Handles a JoinRequest: the MIC under the keys [`KeyAcceptance`] accepts (the active key,
    /// then the staged key); DevNonce must increase (LoRaWAN 1.0.4); the JoinAccept is encrypted
    /// under the key that verified.
    ///
    /// # Errors
    ///
    /// Why the request was refused.
    pub fn handle_join_request(
        &mut self,
        phy: &[u8],
        net_id: u32,
        dev_addr: u32,
    ) -> Result<JoinAnswer, JoinRefusal> {
        let fields = mac::parse_join_request(phy).ok_or(JoinRefusal::Unknown)?;
        let d = self
            .devices
            .get_mut(&fields.dev_eui)
            .filter(|d| d.join_eui == fields.join_eui)
            .ok_or(JoinRefusal::Unknown)?;
        let acceptance = KeyAcceptance::new(d.staged.is_some());
        let verified = acceptance.verify(|slot| {
            Ok::<_, Infallible>(
                d.key(slot)
                    .is_some_and(|k| mac::join_request_mic_ok(phy, k.expose_secret())),
            )
        });
        let Ok(verified) = verified;
        let (slot, key) = match verified.and_then(|slot| Some((slot, d.key(slot)?))) {
            Some((slot, key)) => (slot, *key.expose_secret()),
            None => return Err(JoinRefusal::Mic),
        };
        if d.last_dev_nonce
            .is_some_and(|last| fields.dev_nonce <= last)
        {
            return Err(JoinRefusal::DevNonce);
        }
        d.last_dev_nonce = Some(fields.dev_nonce);
        d.join_nonce += 1;
        let accept_fields = JoinAcceptFields {
            app_nonce: d.join_nonce,
            net_id,
            dev_addr,
        };
        let (accept, keys) = mac::server_join_accept(&key, accept_fields, fields.dev_nonce)
            .ok_or(JoinRefusal::Unknown)?;
        Ok(JoinAnswer {
            dev_eui: fields.dev_eui,
            slot,
            accept: accept.to_vec(),
            keys,
        })
    }
}
