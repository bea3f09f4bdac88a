//! The JoinAccept (TS001-1.0.4 §6.2.5, LoRaWAN 1.1 §6.2.3): MHDR ‖ JoinNonce ‖ NetID ‖ DevAddr ‖
//! DLSettings ‖ RxDelay ‖ [CFList] ‖ MIC, all but the MHDR encrypted. The join server encrypts with
//! the AES *decryption*, so that the device decrypts with the encryption its key store offers.

use lorapki_crypto::AesKey;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::keys::{SessionKeys10, SessionKeys11, js_int_key};
use crate::ops::{KeyOps, cmac, decrypt_block};
use crate::{JOIN_ACCEPT_LEN, JOIN_ACCEPT_MAX_LEN, MHDR_JOIN_ACCEPT, reversed};

/// The OptNeg bit of DLSettings: set by a LoRaWAN 1.1 join server (LoRaWAN 1.1 §6.2.3).
pub const OPT_NEG: u8 = 0x80;

/// JoinReqType in the LoRaWAN 1.1 JoinAccept MIC: the answer to a JoinRequest.
const JOIN_REQ_TYPE_JOIN_REQUEST: u8 = 0xff;

/// The fields of a JoinAccept (nothing secret).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JoinAccept {
    /// The JoinNonce (AppNonce in LoRaWAN 1.0.x), 24 bits.
    pub join_nonce: u32,
    /// The NetID (Home_NetID), 24 bits.
    pub net_id: u32,
    /// The DevAddr.
    pub dev_addr: u32,
    /// DLSettings (OptNeg in bit 7).
    pub dl_settings: u8,
    /// RxDelay.
    pub rx_delay: u8,
    /// The CFList, if any.
    pub cf_list: Option<[u8; 16]>,
}

/// An encrypted JoinAccept PHY payload (17 bytes, or 33 with a CFList).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinAcceptFrame {
    bytes: [u8; JOIN_ACCEPT_MAX_LEN],
    len: usize,
}

impl JoinAcceptFrame {
    /// The PHY payload.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The plain body of a JoinAccept: its fields and, once computed, its MIC.
struct Plain {
    bytes: [u8; JOIN_ACCEPT_MAX_LEN - 1],
    /// Length of the fields (12, or 28 with a CFList); the MIC follows them.
    fields: usize,
}

impl Drop for Plain {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl Plain {
    fn fields(&self) -> &[u8] {
        &self.bytes[..self.fields]
    }

    /// The fields and the MIC: the part that is encrypted.
    fn body_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[..self.fields + 4]
    }
}

impl JoinAccept {
    fn plain(&self, dl_settings: u8) -> Plain {
        let mut bytes = [0u8; JOIN_ACCEPT_MAX_LEN - 1];
        bytes[..3].copy_from_slice(&self.join_nonce.to_le_bytes()[..3]);
        bytes[3..6].copy_from_slice(&self.net_id.to_le_bytes()[..3]);
        bytes[6..10].copy_from_slice(&self.dev_addr.to_le_bytes());
        bytes[10] = dl_settings;
        bytes[11] = self.rx_delay;
        let fields = match &self.cf_list {
            Some(cf_list) => {
                bytes[12..28].copy_from_slice(cf_list);
                28
            }
            None => 12,
        };
        Plain { bytes, fields }
    }

    fn from_fields(fields: &[u8]) -> Self {
        let cf_list = fields
            .get(12..28)
            .and_then(|c| <[u8; 16]>::try_from(c).ok());
        Self {
            join_nonce: u32::from_le_bytes([fields[0], fields[1], fields[2], 0]),
            net_id: u32::from_le_bytes([fields[3], fields[4], fields[5], 0]),
            dev_addr: u32::from_le_bytes([fields[6], fields[7], fields[8], fields[9]]),
            dl_settings: fields[10],
            rx_delay: fields[11],
            cf_list,
        }
    }

    /// The frame with `plain`'s MIC in place, encrypted under `key` (the AES decryption).
    fn seal(mut plain: Plain, mic: &[u8; 16], key: &AesKey) -> JoinAcceptFrame {
        let fields = plain.fields;
        plain.bytes[fields..fields + 4].copy_from_slice(&mic[..4]);
        for chunk in plain.body_mut().chunks_exact_mut(16) {
            let mut block = [0u8; 16];
            block.copy_from_slice(chunk);
            decrypt_block(key, &mut block);
            chunk.copy_from_slice(&block);
            block.zeroize();
        }
        let mut bytes = [0u8; JOIN_ACCEPT_MAX_LEN];
        bytes[0] = MHDR_JOIN_ACCEPT;
        bytes[1..fields + 5].copy_from_slice(plain.body_mut());
        JoinAcceptFrame {
            bytes,
            len: fields + 5,
        }
    }

    /// The JoinAccept of a LoRaWAN 1.0.x join server (or a 1.1 device without OptNeg): MIC under
    /// the AppKey (NwkKey) over MHDR and the fields, encrypted under the same key. DLSettings go
    /// as they are (a 1.0.x join server clears [`OPT_NEG`]).
    #[must_use]
    pub fn seal_1_0(&self, key: &AesKey) -> JoinAcceptFrame {
        let plain = self.plain(self.dl_settings);
        let mic = cmac(key, &[&[MHDR_JOIN_ACCEPT], plain.fields()]);
        Self::seal(plain, &mic, key)
    }

    /// The JoinAccept of a LoRaWAN 1.1 join server answering the JoinRequest of `join_eui`,
    /// `dev_eui` (most significant byte first) and `dev_nonce`: [`OPT_NEG`] set, MIC under
    /// JSIntKey over JoinReqType ‖ JoinEUI ‖ DevNonce ‖ MHDR ‖ fields, encrypted under the NwkKey.
    #[must_use]
    pub fn seal_1_1(
        &self,
        nwk_key: &AesKey,
        join_eui: &[u8; 8],
        dev_eui: &[u8; 8],
        dev_nonce: u16,
    ) -> JoinAcceptFrame {
        let plain = self.plain(self.dl_settings | OPT_NEG);
        let Ok(js_int_key) = js_int_key(nwk_key, dev_eui);
        let mic = mic_1_1(&js_int_key, join_eui, dev_nonce, plain.fields());
        Self::seal(plain, &mic, nwk_key)
    }

    /// Decrypts `phy` under `key` (block by block with the AES encryption, which a key store
    /// offers): the plain fields and the MIC received, or `None` for a frame that is not a
    /// JoinAccept.
    fn decrypt<K: KeyOps>(key: &mut K, phy: &[u8]) -> Result<Option<Plain>, K::Error> {
        let len = phy.len();
        if (len != JOIN_ACCEPT_LEN && len != JOIN_ACCEPT_MAX_LEN) || phy[0] != MHDR_JOIN_ACCEPT {
            return Ok(None);
        }
        let mut plain = Plain {
            bytes: [0; JOIN_ACCEPT_MAX_LEN - 1],
            fields: len - 5,
        };
        plain.body_mut().copy_from_slice(&phy[1..]);
        for chunk in plain.body_mut().chunks_exact_mut(16) {
            let mut block = [0u8; 16];
            block.copy_from_slice(chunk);
            let done = key.encrypt_block(&mut block);
            chunk.copy_from_slice(&block);
            block.zeroize();
            done?;
        }
        Ok(Some(plain))
    }

    /// Whether `mic` is the MIC at the end of `plain`, compared in constant time.
    fn mic_matches(plain: &Plain, mic: &[u8; 16]) -> bool {
        let received = &plain.bytes[plain.fields..plain.fields + 4];
        bool::from(mic[..4].ct_eq(received))
    }

    /// Decrypts and verifies a LoRaWAN 1.0.x JoinAccept under `key` (the AppKey).
    ///
    /// `Ok(None)` for anything that is not a JoinAccept verifying under that key (another frame,
    /// another key, a bad MIC): such a frame is not for this join.
    ///
    /// # Errors
    ///
    /// The key cannot be used.
    pub fn open_1_0<K: KeyOps>(mut key: K, phy: &[u8]) -> Result<Option<Self>, K::Error> {
        let Some(plain) = Self::decrypt(&mut key, phy)? else {
            return Ok(None);
        };
        let mic = key.cmac(&[&[MHDR_JOIN_ACCEPT], plain.fields()])?;
        Ok(Self::mic_matches(&plain, &mic).then(|| Self::from_fields(plain.fields())))
    }

    /// Decrypts and verifies a LoRaWAN 1.1 JoinAccept (OptNeg set) under `nwk_key`, for the
    /// JoinRequest of `join_eui`, `dev_eui` and `dev_nonce`; `Ok(None)` as for
    /// [`open_1_0`](Self::open_1_0), and for an accept without OptNeg.
    ///
    /// # Errors
    ///
    /// The key cannot be used.
    pub fn open_1_1<K: KeyOps>(
        mut nwk_key: K,
        join_eui: &[u8; 8],
        dev_eui: &[u8; 8],
        dev_nonce: u16,
        phy: &[u8],
    ) -> Result<Option<Self>, K::Error> {
        let Some(plain) = Self::decrypt(&mut nwk_key, phy)? else {
            return Ok(None);
        };
        let js_int_key = js_int_key(&mut nwk_key, dev_eui)?;
        let mic = mic_1_1(&js_int_key, join_eui, dev_nonce, plain.fields());
        let accept = Self::from_fields(plain.fields());
        Ok(
            (Self::mic_matches(&plain, &mic) && accept.dl_settings & OPT_NEG != 0)
                .then_some(accept),
        )
    }

    /// The LoRaWAN 1.0.x session keys of this accept for the JoinRequest that carried
    /// `dev_nonce`, under `app_key`.
    ///
    /// # Errors
    ///
    /// The key cannot be used.
    pub fn session_keys_1_0<K: KeyOps>(
        &self,
        app_key: K,
        dev_nonce: u16,
    ) -> Result<SessionKeys10, K::Error> {
        SessionKeys10::derive(app_key, self.join_nonce, self.net_id, dev_nonce)
    }

    /// The LoRaWAN 1.1 session keys of this accept for the JoinRequest of `join_eui` and
    /// `dev_nonce`.
    ///
    /// # Errors
    ///
    /// A key cannot be used.
    pub fn session_keys_1_1<N: KeyOps, A: KeyOps<Error = N::Error>>(
        &self,
        nwk_key: N,
        app_key: A,
        join_eui: &[u8; 8],
        dev_nonce: u16,
    ) -> Result<SessionKeys11, N::Error> {
        SessionKeys11::derive(nwk_key, app_key, self.join_nonce, join_eui, dev_nonce)
    }
}

/// The LoRaWAN 1.1 JoinAccept MIC: CMAC under JSIntKey of JoinReqType ‖ JoinEUI ‖ DevNonce ‖
/// MHDR ‖ fields.
fn mic_1_1(js_int_key: &AesKey, join_eui: &[u8; 8], dev_nonce: u16, fields: &[u8]) -> [u8; 16] {
    cmac(
        js_int_key,
        &[
            &[JOIN_REQ_TYPE_JOIN_REQUEST],
            &reversed(join_eui),
            &dev_nonce.to_le_bytes(),
            &[MHDR_JOIN_ACCEPT],
            fields,
        ],
    )
}
