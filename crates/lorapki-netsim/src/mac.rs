//! Real LoRaWAN 1.0.x PHY payloads: the join frames and session keys of `lorapki-join` (the
//! workspace's one implementation of the join procedure), and data frames (FRMPayload
//! encryption, MIC, FCnt) with the `lorawan` crate.
//!
//! On the device side the root key never leaves its [`RootKeyStore`]: a JoinRequest MIC, a
//! JoinAccept decryption and the session-key derivation all run inside the store
//! ([`lorapki_join::StoreKey`]), under the key in a given [`RootKeySlot`], as a secure element
//! would.
//!
//! Multi-byte fields are written in LoRaWAN's little-endian order; EUIs are taken most
//! significant byte first (as `lorapki-proto` holds them) and reversed on the air.

use lorapki_crypto::{AesKey, RootKeyKind, RootKeySlot, RootKeyStore};
use lorapki_join::{JoinAccept, JoinRequest, StoreKey};
use lorawan::creator::DataPayloadCreator;
use lorawan::default_crypto::DefaultFactory;
use lorawan::keys::{AES128, NewSKey};
use lorawan::parser::{DataHeader, EncryptedDataPayload, FCtrl, FRMPayload, MHDR, MType};
use zeroize::Zeroize;

use crate::region::{JOIN_ACCEPT_LEN, JOIN_REQUEST_LEN};

/// The keys and counters of one LoRaWAN 1.0.x session (ABP-like state after a join). The keys
/// are zeroized on drop and redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// The device address the JoinAccept assigned.
    pub dev_addr: u32,
    /// NwkSKey.
    pub nwk_skey: [u8; 16],
    /// AppSKey.
    pub app_skey: [u8; 16],
}

impl core::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("dev_addr", &format_args!("{:08x}", self.dev_addr))
            .finish_non_exhaustive()
    }
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.nwk_skey.zeroize();
        self.app_skey.zeroize();
    }
}

impl SessionKeys {
    fn from_join(dev_addr: u32, keys: &lorapki_join::SessionKeys10) -> Self {
        Self {
            dev_addr,
            nwk_skey: *keys.nwk_s_key.expose_secret(),
            app_skey: *keys.app_s_key.expose_secret(),
        }
    }
}

/// A JoinRequest from `dev_eui` (MSB first) under the AppKey in `slot` of `store`.
///
/// # Errors
///
/// The store cannot compute under that key (e.g. nothing is staged).
pub fn device_join_request<S: RootKeyStore>(
    store: &mut S,
    slot: RootKeySlot,
    join_eui: &[u8; 8],
    dev_eui: &[u8; 8],
    dev_nonce: u16,
) -> lorapki_crypto::Result<[u8; JOIN_REQUEST_LEN]> {
    let request = JoinRequest {
        join_eui: *join_eui,
        dev_eui: *dev_eui,
        dev_nonce,
    };
    request.build(StoreKey::new(store, slot, RootKeyKind::AppKey))
}

/// Decrypts and verifies a JoinAccept under the AppKey in `slot` and derives the session keys for
/// the JoinRequest that carried `dev_nonce`; `Ok(None)` if it is no JoinAccept that verifies
/// under that key.
///
/// # Errors
///
/// The store cannot compute under that key.
pub fn device_open_join_accept<S: RootKeyStore>(
    store: &mut S,
    slot: RootKeySlot,
    phy: &[u8],
    dev_nonce: u16,
) -> lorapki_crypto::Result<Option<SessionKeys>> {
    let mut key = StoreKey::new(store, slot, RootKeyKind::AppKey);
    let Some(accept) = JoinAccept::open_1_0(&mut key, phy)? else {
        return Ok(None);
    };
    let keys = accept.session_keys_1_0(&mut key, dev_nonce)?;
    Ok(Some(SessionKeys::from_join(accept.dev_addr, &keys)))
}

/// The fields of a JoinRequest: JoinEUI and DevEUI (MSB first) and DevNonce.
pub type JoinRequestFields = JoinRequest;

/// Parses a JoinRequest (no MIC check); `None` for any other frame.
#[must_use]
pub fn parse_join_request(phy: &[u8]) -> Option<JoinRequestFields> {
    JoinRequest::parse(phy).ok()
}

/// Whether a JoinRequest's MIC verifies under `app_key`.
#[must_use]
pub fn join_request_mic_ok(phy: &[u8], app_key: &[u8; 16]) -> bool {
    let Ok(verifies) = lorapki_join::join_request_mic_verifies(phy, &AesKey::from_array(*app_key));
    verifies
}

/// What a join server puts in a JoinAccept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinAcceptFields {
    /// AppNonce / JoinNonce (24 bits).
    pub app_nonce: u32,
    /// NetID (24 bits).
    pub net_id: u32,
    /// The assigned DevAddr.
    pub dev_addr: u32,
}

/// A JoinAccept encrypted and MIC'd under `app_key` (no CFList, RX1 offset 0, RX2 DR0, RxDelay 1),
/// and the session keys it creates for the JoinRequest that carried `dev_nonce`; `None` if the
/// fields do not make a JoinAccept without CFList (a JoinNonce or NetID above 24 bits).
#[must_use]
pub fn server_join_accept(
    app_key: &[u8; 16],
    fields: JoinAcceptFields,
    dev_nonce: u16,
) -> Option<([u8; JOIN_ACCEPT_LEN], SessionKeys)> {
    if fields.app_nonce > lorapki_join::JOIN_NONCE_MAX || fields.net_id > 0x00ff_ffff {
        return None;
    }
    let key = AesKey::from_array(*app_key);
    let accept = JoinAccept {
        join_nonce: fields.app_nonce,
        net_id: fields.net_id,
        dev_addr: fields.dev_addr,
        dl_settings: 0,
        rx_delay: 1,
        cf_list: None,
    };
    let phy: [u8; JOIN_ACCEPT_LEN] = accept.seal_1_0(&key).as_bytes().try_into().ok()?;
    let Ok(keys) = accept.session_keys_1_0(&key, dev_nonce);
    Some((phy, SessionKeys::from_join(fields.dev_addr, &keys)))
}

/// What goes into a data frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataFrame<'a> {
    /// Uplink (device → network) or downlink.
    pub uplink: bool,
    /// Confirmed data (the receiver must acknowledge).
    pub confirmed: bool,
    /// The ACK bit (acknowledges the peer's last confirmed frame).
    pub ack: bool,
    /// The full 32-bit frame counter (16 bits go on the air).
    pub fcnt: u32,
    /// FPort; `None` for a frame without FRMPayload.
    pub fport: Option<u8>,
    /// The FRMPayload (plain text).
    pub payload: &'a [u8],
}

/// The MHDR message type of a PHY payload.
#[must_use]
pub fn message_type(phy: &[u8]) -> Option<MType> {
    phy.first().map(|b| MHDR::new(*b).mtype())
}

/// Whether a PHY payload is a JoinRequest.
#[must_use]
pub fn is_join_request(phy: &[u8]) -> bool {
    message_type(phy) == Some(MType::JoinRequest)
}

/// Builds a data frame: FRMPayload encrypted under the AppSKey (FPort ≠ 0), MIC under the NwkSKey.
#[must_use]
pub fn build_data_frame(session: &SessionKeys, frame: &DataFrame<'_>) -> Option<Vec<u8>> {
    let mut creator = DataPayloadCreator::with_options([0u8; 256], DefaultFactory).ok()?;
    let mut fctrl = FCtrl::new(0, frame.uplink);
    if frame.ack {
        fctrl.set_ack();
    }
    creator
        .set_uplink(frame.uplink)
        .set_confirmed(frame.confirmed)
        .set_dev_addr(&session.dev_addr.to_le_bytes())
        .set_fctrl(&fctrl)
        .set_fcnt(frame.fcnt);
    if let Some(port) = frame.fport {
        creator.set_f_port(port);
    }
    let nwk = NewSKey::from(session.nwk_skey);
    let app = lorawan::keys::AppSKey::from(session.app_skey);
    creator
        .build(frame.payload, &[], &nwk, &app)
        .ok()
        .map(<[u8]>::to_vec)
}

/// The DevAddr of a data frame (no check).
#[must_use]
pub fn data_dev_addr(phy: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(phy.get(1..5)?.try_into().ok()?))
}

/// The 16-bit FCnt on the air of a data frame.
#[must_use]
pub fn data_fcnt16(phy: &[u8]) -> Option<u16> {
    Some(u16::from_le_bytes(phy.get(6..8)?.try_into().ok()?))
}

/// A decoded data frame (owned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedFrame {
    /// Uplink or downlink.
    pub uplink: bool,
    /// Confirmed data.
    pub confirmed: bool,
    /// ACK bit.
    pub ack: bool,
    /// The full frame counter the MIC verified with.
    pub fcnt: u32,
    /// FPort, if any.
    pub fport: Option<u8>,
    /// The decrypted FRMPayload.
    pub payload: Vec<u8>,
}

/// Verifies (MIC under the NwkSKey, with the 32-bit FCnt rebuilt from `last_fcnt`) and decrypts
/// a data frame of `session`; `None` on a wrong DevAddr or MIC.
#[must_use]
pub fn open_data_frame(
    session: &SessionKeys,
    phy: &[u8],
    last_fcnt: Option<u32>,
) -> Option<OpenedFrame> {
    if data_dev_addr(phy)? != session.dev_addr {
        return None;
    }
    let fcnt16 = u32::from(data_fcnt16(phy)?);
    let high = last_fcnt.map_or(0, |f| f & 0xffff_0000);
    let mut fcnt = high | fcnt16;
    if let Some(last) = last_fcnt
        && fcnt < last
        && last - fcnt > 0x8000
    {
        fcnt += 0x1_0000;
    }
    let encrypted = EncryptedDataPayload::new(phy.to_vec()).ok()?;
    let nwk = AES128(session.nwk_skey);
    let app = AES128(session.app_skey);
    if !encrypted.validate_mic(&nwk, fcnt) {
        return None;
    }
    let uplink = encrypted.is_uplink();
    let confirmed = encrypted.is_confirmed();
    let fctrl = encrypted.fhdr().fctrl();
    let ack = fctrl.ack();
    let fport = encrypted.f_port();
    let decrypted = encrypted.decrypt(Some(&nwk), Some(&app), fcnt).ok()?;
    let payload = match decrypted.frm_payload() {
        FRMPayload::Data(data) => data.to_vec(),
        FRMPayload::MACCommands(commands) => commands.data().to_vec(),
        FRMPayload::None => Vec::new(),
    };
    Some(OpenedFrame {
        uplink,
        confirmed,
        ack,
        fcnt,
        fport,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lorapki_crypto::{AesKey, RootKeys};
    use lorapki_crypto_soft::SoftKeyStore;

    const KEY: [u8; 16] = [0x2b; 16];
    const DEV: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0, 0, 1];
    const JOIN: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0, 0, 0];

    fn store() -> SoftKeyStore {
        let mut store = SoftKeyStore::new();
        let keys = RootKeys {
            app_key: AesKey::from_array(KEY),
            nwk_key: None,
        };
        assert!(store.provision_factory(keys).is_ok());
        store
    }

    #[test]
    fn join_round_trip_through_the_key_store() {
        let mut store = store();
        let request = device_join_request(&mut store, RootKeySlot::Active, &JOIN, &DEV, 7);
        let Ok(request) = request else {
            unreachable!("the active slot holds a key")
        };
        assert_eq!(request.len(), 23);
        assert!(is_join_request(&request));
        assert!(join_request_mic_ok(&request, &KEY));
        assert!(!join_request_mic_ok(&request, &[0; 16]));
        let fields = parse_join_request(&request);
        assert_eq!(
            fields,
            Some(JoinRequestFields {
                join_eui: JOIN,
                dev_eui: DEV,
                dev_nonce: 7
            })
        );
        // DevEUI goes little-endian on the air.
        assert_eq!(request[9], 1);
        let accept_fields = JoinAcceptFields {
            app_nonce: 1,
            net_id: 0x13,
            dev_addr: 0x2601_0001,
        };
        let Some((accept, server_keys)) = server_join_accept(&KEY, accept_fields, 7) else {
            unreachable!("a JoinAccept always builds")
        };
        let device_keys = device_open_join_accept(&mut store, RootKeySlot::Active, &accept, 7);
        assert_eq!(device_keys.ok().flatten().as_ref(), Some(&server_keys));
        // Another nonce gives other keys; the staged slot (empty) verifies nothing.
        assert_ne!(
            device_open_join_accept(&mut store, RootKeySlot::Active, &accept, 8)
                .ok()
                .flatten(),
            Some(server_keys)
        );
        assert_eq!(
            device_open_join_accept(&mut store, RootKeySlot::Staged, &accept, 7),
            Err(lorapki_crypto::Error::NoStagedKey)
        );
        assert_eq!(
            device_join_request(&mut store, RootKeySlot::Staged, &JOIN, &DEV, 8),
            Err(lorapki_crypto::Error::NoStagedKey)
        );
    }

    #[test]
    fn data_frames_round_trip() {
        let session = SessionKeys {
            dev_addr: 0x2601_0203,
            nwk_skey: [1; 16],
            app_skey: [2; 16],
        };
        let frame = DataFrame {
            uplink: true,
            confirmed: false,
            ack: false,
            fcnt: 0x1_0005,
            fport: Some(1),
            payload: b"hello",
        };
        let Some(phy) = build_data_frame(&session, &frame) else {
            unreachable!("the frame fits")
        };
        assert_eq!(phy.len(), 13 + 5);
        assert_ne!(&phy[9..14], b"hello", "encrypted");
        let opened = open_data_frame(&session, &phy, Some(0x1_0000));
        let Some(opened) = opened else {
            unreachable!("MIC verifies")
        };
        assert_eq!(opened.payload, b"hello");
        assert_eq!(opened.fcnt, 0x1_0005);
        assert_eq!(opened.fport, Some(1));
        // Wrong 32-bit counter, wrong key: no.
        assert_eq!(open_data_frame(&session, &phy, Some(0)), None);
        let other = SessionKeys {
            nwk_skey: [9; 16],
            ..session.clone()
        };
        assert_eq!(open_data_frame(&other, &phy, Some(0x1_0000)), None);
        // An empty downlink with ACK: 12 bytes.
        let ack = DataFrame {
            uplink: false,
            confirmed: false,
            ack: true,
            fcnt: 3,
            fport: None,
            payload: &[],
        };
        let Some(ack_phy) = build_data_frame(&session, &ack) else {
            unreachable!()
        };
        assert_eq!(ack_phy.len(), 12);
        let opened = open_data_frame(&session, &ack_phy, None);
        assert!(opened.is_some_and(|o| o.ack && !o.uplink && o.fport.is_none()));
    }
}
