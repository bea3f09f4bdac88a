//! LoRaWAN 1.0.x join frames computed inside a [`RootKeyStore`] (TS001-1.0.4 §6.2.4–§6.2.6).
//!
//! The root key never leaves the store: the JoinRequest MIC is a [`RootKeyStore::root_cmac`], the
//! JoinAccept is decrypted block by block with [`RootKeyStore::root_encrypt_block`] (LoRaWAN
//! decrypts a JoinAccept with an AES *encrypt*), and so are the session keys derived.
//!
//! Multi-byte fields are little-endian on the air; EUIs are held most significant byte first (as
//! `lorapki-proto` holds them) and reversed into the frame.

use lorapki_crypto::{AesKey, Result, RootKeyKind, RootKeySlot, RootKeyStore};
use lorawan::keys::{AES128, CryptoFactory, Decrypter, Mac};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// Length of a JoinRequest PHY payload.
pub(crate) const JOIN_REQUEST_LEN: usize = 23;
/// The longest JoinAccept PHY payload (with a CFList).
pub(crate) const JOIN_ACCEPT_MAX_LEN: usize = 33;
/// MHDR of a JoinRequest (MType 000, Major 00).
const MHDR_JOIN_REQUEST: u8 = 0x00;
/// MHDR of a JoinAccept (MType 001, Major 00).
const MHDR_JOIN_ACCEPT: u8 = 0x20;
/// The largest 24-bit JoinNonce.
pub(crate) const JOIN_NONCE_MAX: u32 = 0x00ff_ffff;

/// Whether a PHY payload is a LoRaWAN R1 JoinRequest (by MHDR and length).
pub(crate) fn is_join_request(phy: &[u8]) -> bool {
    phy.len() == JOIN_REQUEST_LEN && phy[0] == MHDR_JOIN_REQUEST
}

/// A JoinRequest under the AppKey in `slot` (§6.2.5).
pub(crate) fn join_request<S: RootKeyStore>(
    store: &mut S,
    slot: RootKeySlot,
    join_eui: &[u8; 8],
    dev_eui: &[u8; 8],
    dev_nonce: u16,
) -> Result<[u8; JOIN_REQUEST_LEN]> {
    let mut frame = [0u8; JOIN_REQUEST_LEN];
    frame[0] = MHDR_JOIN_REQUEST;
    for (i, byte) in join_eui.iter().rev().enumerate() {
        frame[1 + i] = *byte;
    }
    for (i, byte) in dev_eui.iter().rev().enumerate() {
        frame[9 + i] = *byte;
    }
    frame[17..19].copy_from_slice(&dev_nonce.to_le_bytes());
    let mic = store.root_cmac(slot, RootKeyKind::AppKey, &[&frame[..19]])?;
    frame[19..].copy_from_slice(&mic[..4]);
    Ok(frame)
}

/// A JoinAccept that verified under a root key, and the session it creates.
pub(crate) struct AcceptedJoin {
    /// MHDR of the frame.
    pub(crate) mhdr: u8,
    /// JoinNonce (AppNonce) ‖ NetID ‖ DevAddr ‖ DLSettings ‖ RxDelay ‖ [CFList], decrypted.
    pub(crate) fields: [u8; JOIN_ACCEPT_MAX_LEN - 5],
    /// How many bytes of `fields` are used: 12, or 28 with a CFList.
    pub(crate) fields_len: usize,
    /// The JoinNonce, a 24-bit counter in LoRaWAN 1.0.4.
    pub(crate) join_nonce: u32,
    /// The DevAddr, in the frame's (little-endian) byte order.
    pub(crate) dev_addr: [u8; 4],
    /// NwkSKey.
    pub(crate) nwk_skey: AesKey,
    /// AppSKey.
    pub(crate) app_skey: AesKey,
}

impl Drop for AcceptedJoin {
    fn drop(&mut self) {
        self.fields.zeroize();
    }
}

/// Decrypts and verifies a JoinAccept under the AppKey in `slot`, and derives the session keys
/// for `dev_nonce` (§6.2.6, §6.2.6.1 for LoRaWAN 1.0.x).
///
/// `Ok(None)` for anything that is not a JoinAccept that verifies under that key (another frame,
/// a bad MIC): such a frame is simply not for this join.
pub(crate) fn open_join_accept<S: RootKeyStore>(
    store: &mut S,
    slot: RootKeySlot,
    phy: &[u8],
    dev_nonce: u16,
) -> Result<Option<AcceptedJoin>> {
    let len = phy.len();
    if (len != 17 && len != JOIN_ACCEPT_MAX_LEN) || phy[0] != MHDR_JOIN_ACCEPT {
        return Ok(None);
    }
    let mhdr = phy[0];
    let mut plain = [0u8; JOIN_ACCEPT_MAX_LEN - 1];
    let body = &mut plain[..len - 1];
    body.copy_from_slice(&phy[1..]);
    for block in body.chunks_exact_mut(16) {
        let mut b = [0u8; 16];
        b.copy_from_slice(block);
        store.root_encrypt_block(slot, RootKeyKind::AppKey, &mut b)?;
        block.copy_from_slice(&b);
        b.zeroize();
    }
    let fields_len = len - 5;
    let mic = store.root_cmac(slot, RootKeyKind::AppKey, &[&[mhdr], &body[..fields_len]])?;
    let verified: bool = mic[..4].ct_eq(&body[fields_len..]).into();
    if !verified {
        plain.zeroize();
        return Ok(None);
    }
    let mut fields = [0u8; JOIN_ACCEPT_MAX_LEN - 5];
    fields[..fields_len].copy_from_slice(&plain[..fields_len]);
    plain.zeroize();
    let join_nonce = u32::from_le_bytes([fields[0], fields[1], fields[2], 0]);
    let mut dev_addr = [0u8; 4];
    dev_addr.copy_from_slice(&fields[6..10]);
    // NwkSKey = aes128_encrypt(AppKey, 0x01 | AppNonce | NetID | DevNonce | pad16), AppSKey with
    // 0x02 (§6.2.6.1, LoRaWAN 1.0.x).
    let derive = |store: &mut S, prefix: u8| -> Result<AesKey> {
        let mut key = AesKey::new_zeroed();
        let block = key.as_mut_bytes();
        block[0] = prefix;
        block[1..7].copy_from_slice(&fields[..6]);
        block[7..9].copy_from_slice(&dev_nonce.to_le_bytes());
        store.root_encrypt_block(slot, RootKeyKind::AppKey, block)?;
        Ok(key)
    };
    let nwk_skey = derive(store, 0x01)?;
    let app_skey = derive(store, 0x02)?;
    Ok(Some(AcceptedJoin {
        mhdr,
        fields,
        fields_len,
        join_nonce,
        dev_addr,
        nwk_skey,
        app_skey,
    }))
}

/// The JoinAccept `accepted` encrypted and MIC'd again under `key`, as a join server would have
/// sent it under that key: the MAC, which holds `key` as its "AppKey", then accepts it.
///
/// Writes the PHY payload into `out` and returns its length.
pub(crate) fn seal_join_accept<C: CryptoFactory>(
    factory: &C,
    key: &AesKey,
    accepted: &AcceptedJoin,
    out: &mut [u8; JOIN_ACCEPT_MAX_LEN],
) -> usize {
    let aes_key = AES128(*key.expose_secret());
    let fields = &accepted.fields[..accepted.fields_len];
    let mut mac = factory.new_mac(&aes_key);
    mac.input(&[accepted.mhdr]);
    mac.input(fields);
    let tag = mac.result();
    let len = accepted.fields_len + 5;
    out[0] = accepted.mhdr;
    out[1..1 + accepted.fields_len].copy_from_slice(fields);
    out[1 + accepted.fields_len..len].copy_from_slice(&tag[..4]);
    // The join server "encrypts" with an AES decrypt so that the device decrypts with an encrypt.
    let cipher = factory.new_dec(&aes_key);
    for block in out[1..len].chunks_exact_mut(16) {
        let mut b = generic_array::GenericArray::clone_from_slice(block);
        cipher.decrypt_block(&mut b);
        block.copy_from_slice(b.as_slice());
        b.as_mut_slice().zeroize();
    }
    len
}

#[cfg(test)]
mod tests {
    extern crate std;

    use lorapki_crypto::{RootKeys, Secret};
    use lorapki_crypto_soft::SoftKeyStore;
    use lorawan::creator::{JoinAcceptCreator, JoinRequestCreator};
    use lorawan::default_crypto::DefaultFactory;
    use lorawan::keys::{AppEui, AppKey, DevEui};
    use lorawan::parser::{
        DevNonce, EncryptedJoinAcceptPayload, JoinAcceptPayload, JoinRequestPayload, PhyPayload,
        parse,
    };

    use super::*;
    use crate::crypto::MacCrypto;

    const APP_KEY: [u8; 16] = [0x2b; 16];
    const JOIN_EUI: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0, 0, 0];
    const DEV_EUI: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0, 0, 0x42];

    fn store() -> SoftKeyStore {
        let mut store = SoftKeyStore::new();
        store
            .provision_factory(RootKeys {
                app_key: Secret::from_array(APP_KEY),
                nwk_key: None,
            })
            .unwrap();
        store
    }

    fn reversed(eui: [u8; 8]) -> [u8; 8] {
        let mut r = eui;
        r.reverse();
        r
    }

    #[test]
    fn join_request_matches_the_lorawan_crate() {
        let mut store = store();
        for nonce in [0u16, 1, 0x1234, u16::MAX] {
            let ours =
                join_request(&mut store, RootKeySlot::Active, &JOIN_EUI, &DEV_EUI, nonce).unwrap();
            let mut creator = JoinRequestCreator::new();
            creator
                .set_app_eui(AppEui::from(reversed(JOIN_EUI)))
                .set_dev_eui(DevEui::from(reversed(DEV_EUI)))
                .set_dev_nonce(DevNonce::from(nonce.to_le_bytes()));
            let theirs = creator.build(&AppKey::from(APP_KEY));
            assert_eq!(&ours[..], theirs);
            assert!(is_join_request(&ours));
            let parsed = JoinRequestPayload::new(ours).unwrap();
            assert!(parsed.validate_mic(&AES128(APP_KEY)));
            // On the air DevNonce is little-endian; note that `DevNonce::from(u16)` of the
            // lorawan crate writes it big-endian, which is why this crate never uses it.
            assert_eq!(DevNonce::from(nonce).as_ref(), &nonce.to_be_bytes());
            assert_eq!(parsed.dev_nonce().as_ref(), &nonce.to_le_bytes());
        }
        assert!(matches!(
            join_request(&mut store, RootKeySlot::Staged, &JOIN_EUI, &DEV_EUI, 0),
            Err(lorapki_crypto::Error::NoStagedKey)
        ));
    }

    /// A JoinAccept as a join server sends it under `key`: without a CFList by the lorawan
    /// crate's creator; with one (which that creator cannot build) sealed by hand on the crate's
    /// default (aes 0.8) crypto, and checked by its parser.
    fn server_accept(key: [u8; 16], app_nonce: u32, cf_list: bool) -> std::vec::Vec<u8> {
        let nonce: [u8; 3] = app_nonce.to_le_bytes()[..3].try_into().unwrap();
        if !cf_list {
            let mut creator = JoinAcceptCreator::new();
            creator
                .set_app_nonce(&nonce)
                .set_net_id(&[0x13, 0, 0])
                .set_dev_addr(&[0x04, 0x03, 0x02, 0x26])
                .set_dl_settings(0)
                .set_rx_delay(1);
            return creator.build(&AES128(key)).unwrap()[..17].to_vec();
        }
        let mut fields = [0u8; 28];
        fields[..3].copy_from_slice(&nonce);
        fields[3..6].copy_from_slice(&[0x13, 0, 0]);
        fields[6..10].copy_from_slice(&[0x04, 0x03, 0x02, 0x26]);
        fields[11] = 1;
        // Five EU868 channels 867.1..867.9 MHz (in units of 100 Hz), CFList type 0.
        for (i, f) in [8_671_000u32, 8_673_000, 8_675_000, 8_677_000, 8_679_000]
            .iter()
            .enumerate()
        {
            fields[12 + 3 * i..15 + 3 * i].copy_from_slice(&f.to_le_bytes()[..3]);
        }
        let accepted = AcceptedJoin {
            mhdr: MHDR_JOIN_ACCEPT,
            fields,
            fields_len: 28,
            join_nonce: app_nonce,
            dev_addr: [0x04, 0x03, 0x02, 0x26],
            nwk_skey: AesKey::new_zeroed(),
            app_skey: AesKey::new_zeroed(),
        };
        let mut out = [0u8; JOIN_ACCEPT_MAX_LEN];
        let len = seal_join_accept(
            &DefaultFactory,
            &AesKey::from_array(key),
            &accepted,
            &mut out,
        );
        let mut copy = out;
        let encrypted = EncryptedJoinAcceptPayload::new(&mut copy[..len]).unwrap();
        let decrypted = encrypted.decrypt(&AppKey::from(key));
        assert!(decrypted.validate_mic(&AppKey::from(key)));
        assert!(matches!(
            decrypted.c_f_list(),
            Some(lorawan::parser::CfList::DynamicChannel(_))
        ));
        out[..len].to_vec()
    }

    #[test]
    fn join_accept_opens_derives_and_reseals() {
        let mut store = store();
        for cf_list in [false, true] {
            let phy = server_accept(APP_KEY, 0x0a0b0c, cf_list);
            let accepted = open_join_accept(&mut store, RootKeySlot::Active, &phy, 7)
                .unwrap()
                .unwrap();
            assert_eq!(accepted.join_nonce, 0x0a0b0c);
            assert_eq!(accepted.dev_addr, [0x04, 0x03, 0x02, 0x26]);
            assert_eq!(accepted.fields_len, if cf_list { 28 } else { 12 });
            // The session keys agree with the lorawan crate's derivation under the real key.
            let mut copy = phy.clone();
            let PhyPayload::JoinAccept(JoinAcceptPayload::Encrypted(encrypted)) =
                parse(&mut copy[..]).unwrap()
            else {
                panic!("not a JoinAccept");
            };
            let decrypted = encrypted.decrypt(&AppKey::from(APP_KEY));
            assert!(decrypted.validate_mic(&AppKey::from(APP_KEY)));
            let nonce = DevNonce::from(7u16.to_le_bytes());
            assert_eq!(
                decrypted
                    .derive_newskey(&nonce, &AppKey::from(APP_KEY))
                    .inner()
                    .0,
                *accepted.nwk_skey.expose_secret()
            );
            assert_eq!(
                decrypted
                    .derive_appskey(&nonce, &AppKey::from(APP_KEY))
                    .inner()
                    .0,
                *accepted.app_skey.expose_secret()
            );
            // Resealed under another key, it verifies under that key with the same content.
            let relay = AesKey::from_array([0x5a; 16]);
            let mut out = [0u8; JOIN_ACCEPT_MAX_LEN];
            let len = seal_join_accept(&MacCrypto, &relay, &accepted, &mut out);
            assert_eq!(len, phy.len());
            let encrypted = EncryptedJoinAcceptPayload::new(&mut out[..len]).unwrap();
            let resealed = encrypted.decrypt(&AppKey::from([0x5a; 16]));
            assert!(resealed.validate_mic(&AppKey::from([0x5a; 16])));
            assert_eq!(resealed.dev_addr().as_ref(), &[0x04, 0x03, 0x02, 0x26]);
            assert_eq!(resealed.app_nonce().as_ref(), &[0x0c, 0x0b, 0x0a]);
            assert_eq!(resealed.c_f_list().is_some(), cf_list);
        }
    }

    #[test]
    fn foreign_frames_do_not_open() {
        let mut store = store();
        let other_key = server_accept([0x11; 16], 1, false);
        assert!(
            open_join_accept(&mut store, RootKeySlot::Active, &other_key, 0)
                .unwrap()
                .is_none()
        );
        let mut tampered = server_accept(APP_KEY, 1, false);
        tampered[5] ^= 1;
        assert!(
            open_join_accept(&mut store, RootKeySlot::Active, &tampered, 0)
                .unwrap()
                .is_none()
        );
        for junk in [&[][..], &[0x20; 16][..], &[0x40; 17][..], &[0x20; 34][..]] {
            assert!(
                open_join_accept(&mut store, RootKeySlot::Active, junk, 0)
                    .unwrap()
                    .is_none()
            );
        }
    }
}
