//! Session keys (TS001-1.0.4 §6.2.5, LoRaWAN 1.1 §6.2.3.1–§6.2.3.2) and the join server's own
//! keys of LoRaWAN 1.1 (§6.1.1.3): each is one AES block encryption under a root key.

use lorapki_crypto::AesKey;

use crate::ops::KeyOps;
use crate::reversed;

/// The session keys of a LoRaWAN 1.0.x join. Zeroized on drop; redacted in `Debug`.
#[derive(Debug)]
pub struct SessionKeys10 {
    /// NwkSKey.
    pub nwk_s_key: AesKey,
    /// AppSKey.
    pub app_s_key: AesKey,
}

/// The session keys of a LoRaWAN 1.1 join (OptNeg set). Zeroized on drop; redacted in `Debug`.
#[derive(Debug)]
pub struct SessionKeys11 {
    /// FNwkSIntKey.
    pub f_nwk_s_int_key: AesKey,
    /// SNwkSIntKey.
    pub s_nwk_s_int_key: AesKey,
    /// NwkSEncKey.
    pub nwk_s_enc_key: AesKey,
    /// AppSKey.
    pub app_s_key: AesKey,
}

/// `aes128_encrypt(key, block)` into a new key, the block built in place.
fn derive<K: KeyOps>(key: &mut K, fill: impl FnOnce(&mut [u8; 16])) -> Result<AesKey, K::Error> {
    let mut out = AesKey::new_zeroed();
    fill(out.as_mut_bytes());
    key.encrypt_block(out.as_mut_bytes())?;
    Ok(out)
}

impl SessionKeys10 {
    /// NwkSKey = aes128_encrypt(AppKey, 0x01 ‖ JoinNonce ‖ NetID ‖ DevNonce ‖ pad16), AppSKey the
    /// same with 0x02; `join_nonce` and `net_id` are 24-bit values.
    ///
    /// # Errors
    ///
    /// The key cannot be used.
    pub fn derive<K: KeyOps>(
        mut app_key: K,
        join_nonce: u32,
        net_id: u32,
        dev_nonce: u16,
    ) -> Result<Self, K::Error> {
        let fill = |prefix: u8| {
            move |block: &mut [u8; 16]| {
                block[0] = prefix;
                block[1..4].copy_from_slice(&join_nonce.to_le_bytes()[..3]);
                block[4..7].copy_from_slice(&net_id.to_le_bytes()[..3]);
                block[7..9].copy_from_slice(&dev_nonce.to_le_bytes());
            }
        };
        Ok(Self {
            nwk_s_key: derive(&mut app_key, fill(0x01))?,
            app_s_key: derive(&mut app_key, fill(0x02))?,
        })
    }
}

impl SessionKeys11 {
    /// The network keys under the NwkKey (FNwkSIntKey 0x01, SNwkSIntKey 0x03, NwkSEncKey 0x04)
    /// and the AppSKey under the AppKey (0x02), each of `prefix ‖ JoinNonce ‖ JoinEUI ‖ DevNonce
    /// ‖ pad16`; `join_eui` most significant byte first.
    ///
    /// # Errors
    ///
    /// A key cannot be used.
    pub fn derive<N: KeyOps, A: KeyOps<Error = N::Error>>(
        mut nwk_key: N,
        mut app_key: A,
        join_nonce: u32,
        join_eui: &[u8; 8],
        dev_nonce: u16,
    ) -> Result<Self, N::Error> {
        let join_eui = reversed(join_eui);
        let fill = |prefix: u8| {
            move |block: &mut [u8; 16]| {
                block[0] = prefix;
                block[1..4].copy_from_slice(&join_nonce.to_le_bytes()[..3]);
                block[4..12].copy_from_slice(&join_eui);
                block[12..14].copy_from_slice(&dev_nonce.to_le_bytes());
            }
        };
        Ok(Self {
            f_nwk_s_int_key: derive(&mut nwk_key, fill(0x01))?,
            app_s_key: derive(&mut app_key, fill(0x02))?,
            s_nwk_s_int_key: derive(&mut nwk_key, fill(0x03))?,
            nwk_s_enc_key: derive(&mut nwk_key, fill(0x04))?,
        })
    }
}

fn js_key<K: KeyOps>(mut nwk_key: K, prefix: u8, dev_eui: &[u8; 8]) -> Result<AesKey, K::Error> {
    let dev_eui = reversed(dev_eui);
    derive(&mut nwk_key, |block| {
        block[0] = prefix;
        block[1..9].copy_from_slice(&dev_eui);
    })
}

/// JSIntKey = aes128_encrypt(NwkKey, 0x06 ‖ DevEUI ‖ pad16) (LoRaWAN 1.1): the key of the
/// JoinAccept MIC.
///
/// # Errors
///
/// The key cannot be used.
pub fn js_int_key<K: KeyOps>(nwk_key: K, dev_eui: &[u8; 8]) -> Result<AesKey, K::Error> {
    js_key(nwk_key, 0x06, dev_eui)
}

/// JSEncKey = aes128_encrypt(NwkKey, 0x05 ‖ DevEUI ‖ pad16) (LoRaWAN 1.1): the key of the
/// JoinAccepts that answer rejoin requests.
///
/// # Errors
///
/// The key cannot be used.
pub fn js_enc_key<K: KeyOps>(nwk_key: K, dev_eui: &[u8; 8]) -> Result<AesKey, K::Error> {
    js_key(nwk_key, 0x05, dev_eui)
}
