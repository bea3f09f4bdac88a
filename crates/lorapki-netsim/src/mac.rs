//! Real LoRaWAN 1.0.x PHY payloads, built and checked with the `lorawan` crate: JoinRequest,
//! JoinAccept (encrypted, MIC), session-key derivation, and data frames (FRMPayload encryption,
//! MIC, FCnt).
//!
//! On the device side the root key never leaves its [`RootKeyStore`]: [`StoreFactory`] gives the
//! `lorawan` crate a MAC and a block cipher that compute inside the store (as a secure element
//! would), so a JoinRequest MIC, a JoinAccept decryption and the session-key derivation all run
//! under the key in a given [`RootKeySlot`].
//!
//! Multi-byte fields are written in LoRaWAN's little-endian order; EUIs are taken most
//! significant byte first (as `lorapki-proto` holds them) and reversed on the air.

use std::cell::{Cell, RefCell};

use generic_array::GenericArray;
use generic_array::typenum::U16;
use lorapki_crypto::{RootKeyKind, RootKeySlot, RootKeyStore};
use lorawan::creator::{DataPayloadCreator, JoinAcceptCreator, JoinRequestCreator};
use lorawan::default_crypto::DefaultFactory;
use lorawan::keys::{AES128, AppKey, CryptoFactory, Decrypter, Encrypter, Mac, NewSKey};
use lorawan::parser::{
    DataHeader, DecryptedJoinAcceptPayload, DevNonce, EncryptedDataPayload,
    EncryptedJoinAcceptPayload, FCtrl, FRMPayload, JoinRequestPayload, MHDR, MType,
};

use crate::region::{JOIN_ACCEPT_LEN, JOIN_REQUEST_LEN};

/// The keys and counters of one LoRaWAN 1.0.x session (ABP-like state after a join).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionKeys {
    /// The device address the JoinAccept assigned.
    pub dev_addr: u32,
    /// NwkSKey.
    pub nwk_skey: [u8; 16],
    /// AppSKey.
    pub app_skey: [u8; 16],
}

/// A `lorawan` crypto factory whose MAC and cipher run inside a root-key store, under `slot`'s
/// AppKey; the key the `lorawan` crate passes in is ignored.
pub struct StoreFactory<'a, S> {
    store: &'a RefCell<S>,
    slot: RootKeySlot,
    fault: &'a Cell<bool>,
}

impl<'a, S: RootKeyStore> StoreFactory<'a, S> {
    /// A factory over `store`'s AppKey in `slot`; a store error sets `fault` (and the result is
    /// then garbage, so a MIC check fails).
    pub fn new(store: &'a RefCell<S>, slot: RootKeySlot, fault: &'a Cell<bool>) -> Self {
        Self { store, slot, fault }
    }
}

/// The MAC of a [`StoreFactory`]: buffers its input, computes the CMAC in the store.
pub struct StoreMac<'a, S> {
    factory: StoreFactory<'a, S>,
    input: Vec<u8>,
}

/// The block cipher of a [`StoreFactory`].
pub struct StoreCipher<'a, S> {
    factory: StoreFactory<'a, S>,
}

impl<S> Clone for StoreFactory<'_, S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store,
            slot: self.slot,
            fault: self.fault,
        }
    }
}

impl<'a, S: RootKeyStore> CryptoFactory for StoreFactory<'a, S> {
    type E = StoreCipher<'a, S>;
    type D = StoreCipher<'a, S>;
    type M = StoreMac<'a, S>;

    fn new_enc(&self, _key: &AES128) -> Self::E {
        StoreCipher {
            factory: self.clone(),
        }
    }

    fn new_dec(&self, _key: &AES128) -> Self::D {
        StoreCipher {
            factory: self.clone(),
        }
    }

    fn new_mac(&self, _key: &AES128) -> Self::M {
        StoreMac {
            factory: self.clone(),
            input: Vec::new(),
        }
    }
}

impl<S: RootKeyStore> Encrypter for StoreCipher<'_, S> {
    fn encrypt_block(&self, block: &mut GenericArray<u8, U16>) {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(block);
        let f = &self.factory;
        if f.store
            .borrow_mut()
            .root_encrypt_block(f.slot, RootKeyKind::AppKey, &mut bytes)
            .is_err()
        {
            f.fault.set(true);
        }
        block.copy_from_slice(&bytes);
    }
}

impl<S: RootKeyStore> Decrypter for StoreCipher<'_, S> {
    /// A device never runs the AES decryption (LoRaWAN encrypts JoinAccepts with AES *decrypt* on
    /// the server side only); the key store offers none, so this marks a fault.
    fn decrypt_block(&self, block: &mut GenericArray<u8, U16>) {
        self.factory.fault.set(true);
        block.iter_mut().for_each(|b| *b = 0);
    }
}

impl<S: RootKeyStore> Mac for StoreMac<'_, S> {
    fn input(&mut self, data: &[u8]) {
        self.input.extend_from_slice(data);
    }

    fn reset(&mut self) {
        self.input.clear();
    }

    fn result(self) -> GenericArray<u8, U16> {
        let f = &self.factory;
        let tag = f
            .store
            .borrow_mut()
            .root_cmac(f.slot, RootKeyKind::AppKey, &[&self.input])
            .unwrap_or_else(|_| {
                f.fault.set(true);
                [0; 16]
            });
        GenericArray::clone_from_slice(&tag)
    }
}

fn reversed(eui: &[u8; 8]) -> [u8; 8] {
    let mut out = *eui;
    out.reverse();
    out
}

/// A JoinRequest from `dev_eui` (MSB first) under the AppKey in `slot` of `store`.
pub fn device_join_request<S: RootKeyStore>(
    store: &RefCell<S>,
    slot: RootKeySlot,
    join_eui: &[u8; 8],
    dev_eui: &[u8; 8],
    dev_nonce: u16,
) -> Option<[u8; JOIN_REQUEST_LEN]> {
    let fault = Cell::new(false);
    let factory = StoreFactory::new(store, slot, &fault);
    let mut creator = JoinRequestCreator::with_options([0u8; JOIN_REQUEST_LEN], factory).ok()?;
    creator
        .set_app_eui(&reversed(join_eui))
        .set_dev_eui(&reversed(dev_eui))
        .set_dev_nonce(&dev_nonce.to_le_bytes());
    let mut out = [0u8; JOIN_REQUEST_LEN];
    out.copy_from_slice(creator.build(&AppKey::from([0; 16])));
    (!fault.get()).then_some(out)
}

/// Decrypts and verifies a JoinAccept under the AppKey in `slot` and derives the session keys for
/// the JoinRequest that carried `dev_nonce`; `None` if the MIC does not verify under that key.
pub fn device_open_join_accept<S: RootKeyStore>(
    store: &RefCell<S>,
    slot: RootKeySlot,
    phy: &[u8],
    dev_nonce: u16,
) -> Option<SessionKeys> {
    let fault = Cell::new(false);
    let factory = StoreFactory::new(store, slot, &fault);
    let encrypted = EncryptedJoinAcceptPayload::new_with_factory(phy.to_vec(), factory).ok()?;
    let dummy = AppKey::from([0; 16]);
    let decrypted = encrypted.decrypt(&dummy);
    if !decrypted.validate_mic(&dummy) || fault.get() {
        return None;
    }
    let nonce = DevNonce::from(dev_nonce.to_le_bytes());
    let nwk = decrypted.derive_newskey(&nonce, &dummy);
    let app = decrypted.derive_appskey(&nonce, &dummy);
    let dev_addr = u32::from_le_bytes(decrypted.dev_addr().as_ref().try_into().ok()?);
    (!fault.get()).then(|| SessionKeys {
        dev_addr,
        nwk_skey: nwk.inner().0,
        app_skey: app.inner().0,
    })
}

/// The fields of a JoinRequest: JoinEUI and DevEUI (MSB first) and DevNonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinRequestFields {
    /// JoinEUI (AppEUI), MSB first.
    pub join_eui: [u8; 8],
    /// DevEUI, MSB first.
    pub dev_eui: [u8; 8],
    /// DevNonce.
    pub dev_nonce: u16,
}

/// Parses a JoinRequest (no MIC check).
#[must_use]
pub fn parse_join_request(phy: &[u8]) -> Option<JoinRequestFields> {
    let request = JoinRequestPayload::new(phy).ok()?;
    let mut join_eui: [u8; 8] = request.app_eui().as_ref().try_into().ok()?;
    let mut dev_eui: [u8; 8] = request.dev_eui().as_ref().try_into().ok()?;
    join_eui.reverse();
    dev_eui.reverse();
    let nonce: [u8; 2] = request.dev_nonce().as_ref().try_into().ok()?;
    Some(JoinRequestFields {
        join_eui,
        dev_eui,
        dev_nonce: u16::from_le_bytes(nonce),
    })
}

/// Whether a JoinRequest's MIC verifies under `app_key`.
#[must_use]
pub fn join_request_mic_ok(phy: &[u8], app_key: &[u8; 16]) -> bool {
    JoinRequestPayload::new(phy).is_ok_and(|r| r.validate_mic(&AES128(*app_key)))
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

/// A JoinAccept encrypted and MIC'd under `app_key` (no CFList), and the session keys it creates
/// for the JoinRequest that carried `dev_nonce`.
#[must_use]
pub fn server_join_accept(
    app_key: &[u8; 16],
    fields: JoinAcceptFields,
    dev_nonce: u16,
) -> Option<([u8; JOIN_ACCEPT_LEN], SessionKeys)> {
    let mut creator =
        JoinAcceptCreator::with_options([0u8; JOIN_ACCEPT_LEN], DefaultFactory).ok()?;
    let nonce = fields.app_nonce.to_le_bytes();
    let net_id = fields.net_id.to_le_bytes();
    creator
        .set_app_nonce(&[nonce[0], nonce[1], nonce[2]])
        .set_net_id(&[net_id[0], net_id[1], net_id[2]])
        .set_dev_addr(&fields.dev_addr.to_le_bytes())
        .set_dl_settings(0)
        .set_rx_delay(1);
    let mut phy = [0u8; JOIN_ACCEPT_LEN];
    phy.copy_from_slice(creator.build(&AES128(*app_key)).ok()?);
    // The session keys, derived the way the device will: from the decrypted accept.
    let key = AppKey::from(*app_key);
    let decrypted = DecryptedJoinAcceptPayload::new(phy.to_vec(), &key).ok()?;
    let dev_nonce = DevNonce::from(dev_nonce.to_le_bytes());
    let nwk: NewSKey = decrypted.derive_newskey(&dev_nonce, &key);
    let app = decrypted.derive_appskey(&dev_nonce, &key);
    Some((
        phy,
        SessionKeys {
            dev_addr: fields.dev_addr,
            nwk_skey: nwk.inner().0,
            app_skey: app.inner().0,
        },
    ))
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

    fn store() -> RefCell<SoftKeyStore> {
        let mut store = SoftKeyStore::new();
        let keys = RootKeys {
            app_key: AesKey::from_array(KEY),
            nwk_key: None,
        };
        assert!(store.provision_factory(keys).is_ok());
        RefCell::new(store)
    }

    #[test]
    fn join_round_trip_through_the_key_store() {
        let store = store();
        let request = device_join_request(&store, RootKeySlot::Active, &JOIN, &DEV, 7);
        let Some(request) = request else {
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
        let device_keys = device_open_join_accept(&store, RootKeySlot::Active, &accept, 7);
        assert_eq!(device_keys.as_ref(), Some(&server_keys));
        // Another nonce gives other keys; the staged slot (empty) verifies nothing.
        assert_ne!(
            device_open_join_accept(&store, RootKeySlot::Active, &accept, 8),
            Some(server_keys)
        );
        assert_eq!(
            device_open_join_accept(&store, RootKeySlot::Staged, &accept, 7),
            None
        );
        assert_eq!(
            device_join_request(&store, RootKeySlot::Staged, &JOIN, &DEV, 8),
            None
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
