//! LoRaWAN 1.0.x join frames computed inside a [`RootKeyStore`] (TS001-1.0.4 §6.2.4–§6.2.6), on
//! `lorapki-join`, the workspace's one implementation of the join procedure.
//!
//! The root key never leaves the store: the JoinRequest MIC is a [`RootKeyStore::root_cmac`], the
//! JoinAccept is decrypted block by block with [`RootKeyStore::root_encrypt_block`] (LoRaWAN
//! decrypts a JoinAccept with an AES *encrypt*), and so are the session keys derived
//! ([`StoreKey`]).
//!
//! Multi-byte fields are little-endian on the air; EUIs are held most significant byte first (as
//! `lorapki-proto` holds them) and reversed into the frame.

use lorapki_crypto::{AesKey, Result, RootKeyKind, RootKeySlot, RootKeyStore};
pub(crate) use lorapki_join::{JOIN_ACCEPT_MAX_LEN, JOIN_NONCE_MAX, JOIN_REQUEST_LEN};
use lorapki_join::{JoinAccept, JoinRequest, StoreKey};

/// Whether a PHY payload is a LoRaWAN R1 JoinRequest (by MHDR and length).
pub(crate) fn is_join_request(phy: &[u8]) -> bool {
    JoinRequest::parse(phy).is_ok()
}

/// A JoinRequest under the AppKey in `slot` (§6.2.5).
pub(crate) fn join_request<S: RootKeyStore>(
    store: &mut S,
    slot: RootKeySlot,
    join_eui: &[u8; 8],
    dev_eui: &[u8; 8],
    dev_nonce: u16,
) -> Result<[u8; JOIN_REQUEST_LEN]> {
    let request = JoinRequest {
        join_eui: *join_eui,
        dev_eui: *dev_eui,
        dev_nonce,
    };
    request.build(StoreKey::new(store, slot, RootKeyKind::AppKey))
}

/// A JoinAccept that verified under a root key, and the session it creates.
pub(crate) struct AcceptedJoin {
    /// The decrypted fields (JoinNonce, NetID, DevAddr, DLSettings, RxDelay, CFList).
    pub(crate) accept: JoinAccept,
    /// The JoinNonce, a 24-bit counter in LoRaWAN 1.0.4.
    pub(crate) join_nonce: u32,
    /// The DevAddr, in the frame's (little-endian) byte order.
    pub(crate) dev_addr: [u8; 4],
    /// NwkSKey.
    pub(crate) nwk_skey: AesKey,
    /// AppSKey.
    pub(crate) app_skey: AesKey,
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
    let mut key = StoreKey::new(store, slot, RootKeyKind::AppKey);
    let Some(accept) = JoinAccept::open_1_0(&mut key, phy)? else {
        return Ok(None);
    };
    let keys = accept.session_keys_1_0(&mut key, dev_nonce)?;
    Ok(Some(AcceptedJoin {
        accept,
        join_nonce: accept.join_nonce,
        dev_addr: accept.dev_addr.to_le_bytes(),
        nwk_skey: keys.nwk_s_key,
        app_skey: keys.app_s_key,
    }))
}

/// The JoinAccept `accepted` encrypted and MIC'd again under `key`, as a join server would have
/// sent it under that key: the MAC, which holds `key` as its "AppKey", then accepts it.
///
/// Writes the PHY payload into `out` and returns its length.
pub(crate) fn seal_join_accept(
    key: &AesKey,
    accepted: &AcceptedJoin,
    out: &mut [u8; JOIN_ACCEPT_MAX_LEN],
) -> usize {
    let frame = accepted.accept.seal_1_0(key);
    let bytes = frame.as_bytes();
    out[..bytes.len()].copy_from_slice(bytes);
    bytes.len()
}

#[cfg(test)]
mod tests {
    extern crate std;

    use lorapki_crypto::{RootKeys, Secret};
    use lorapki_crypto_soft::SoftKeyStore;
    use lorawan::creator::{JoinAcceptCreator, JoinRequestCreator};
    use lorawan::keys::{AES128, AppEui, AppKey, DevEui};
    use lorawan::parser::{
        DevNonce, EncryptedJoinAcceptPayload, JoinAcceptPayload, JoinRequestPayload, PhyPayload,
        parse,
    };

    use super::*;

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
            accept: JoinAccept {
                join_nonce: app_nonce,
                net_id: 0x13,
                dev_addr: 0x2602_0304,
                dl_settings: fields[10],
                rx_delay: fields[11],
                cf_list: fields[12..28].try_into().ok(),
            },
            join_nonce: app_nonce,
            dev_addr: [0x04, 0x03, 0x02, 0x26],
            nwk_skey: AesKey::new_zeroed(),
            app_skey: AesKey::new_zeroed(),
        };
        let mut out = [0u8; JOIN_ACCEPT_MAX_LEN];
        let len = seal_join_accept(&AesKey::from_array(key), &accepted, &mut out);
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
            assert_eq!(accepted.accept.cf_list.is_some(), cf_list);
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
            let len = seal_join_accept(&relay, &accepted, &mut out);
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
