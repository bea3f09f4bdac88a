//! LoRaWAN join procedure cryptography for the join server: JoinRequest parsing and MIC,
//! JoinAccept construction (MIC and encryption) and session-key derivation, for LoRaWAN 1.0.x and
//! 1.1 (LoRaWAN 1.0.4 §6.2.2–§6.2.5, LoRaWAN 1.1 §6.2.2–§6.2.6). Built on RustCrypto `aes` and
//! `cmac`; every key is a zeroizing [`AesKey`].

use std::fmt;
use std::str::FromStr;

use aes::Aes128;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use cmac::{Cmac, Mac};
use lorapki_crypto::AesKey;
use lorapki_proto::LorawanVersion;
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::eui::Eui64;

/// The LoRaWAN MAC version of a device, as the registry and the Backend Interfaces name it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum MacVersion {
    /// 1.0.0
    V1_0_0,
    /// 1.0.1
    V1_0_1,
    /// 1.0.2
    V1_0_2,
    /// 1.0.3
    V1_0_3,
    /// 1.0.4
    V1_0_4,
    /// 1.1 (1.1.0)
    V1_1,
}

/// How DevNonces are checked (LoRaWAN 1.0.4 §6.2.4, 1.1 §6.2.4).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DevNonceRule {
    /// Random DevNonce (≤ 1.0.3): a value may not be used twice.
    NotReused,
    /// Counter DevNonce (1.0.4, 1.1): strictly increasing.
    Increasing,
}

impl MacVersion {
    /// The LoRaWAN generation the key exchange uses (which root keys are replaced).
    #[must_use]
    pub const fn lorawan(self) -> LorawanVersion {
        match self {
            Self::V1_1 => LorawanVersion::V1_1,
            _ => LorawanVersion::V1_0,
        }
    }

    /// The DevNonce rule of this version.
    #[must_use]
    pub const fn dev_nonce_rule(self) -> DevNonceRule {
        match self {
            Self::V1_0_4 | Self::V1_1 => DevNonceRule::Increasing,
            _ => DevNonceRule::NotReused,
        }
    }

    /// The canonical text ("1.0.3", "1.1").
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V1_0_0 => "1.0.0",
            Self::V1_0_1 => "1.0.1",
            Self::V1_0_2 => "1.0.2",
            Self::V1_0_3 => "1.0.3",
            Self::V1_0_4 => "1.0.4",
            Self::V1_1 => "1.1",
        }
    }
}

impl FromStr for MacVersion {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().trim_start_matches(['v', 'V']);
        Ok(match t {
            "1.0" | "1.0.0" => Self::V1_0_0,
            "1.0.1" => Self::V1_0_1,
            "1.0.2" => Self::V1_0_2,
            "1.0.3" => Self::V1_0_3,
            "1.0.4" => Self::V1_0_4,
            "1.1" | "1.1.0" => Self::V1_1,
            _ => {
                return Err(Error::Malformed(format!(
                    "unknown LoRaWAN version {:?} (1.0.0 .. 1.0.4, 1.1)",
                    crate::eui::truncate(s, 20)
                )));
            }
        })
    }
}

impl fmt::Display for MacVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed JoinRequest PHYPayload (23 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    /// The JoinEUI.
    pub join_eui: Eui64,
    /// The DevEUI.
    pub dev_eui: Eui64,
    /// The DevNonce.
    pub dev_nonce: u16,
    bytes: [u8; 23],
}

/// The JoinRequest MHDR: MType 000, Major 00.
const MHDR_JOIN_REQUEST: u8 = 0x00;
/// The JoinAccept MHDR: MType 001, Major 00.
const MHDR_JOIN_ACCEPT: u8 = 0x20;

impl JoinRequest {
    /// Parses a JoinRequest PHYPayload.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] if it is not 23 bytes with a JoinRequest MHDR.
    pub fn parse(phy: &[u8]) -> Result<Self> {
        let bytes: [u8; 23] = phy
            .try_into()
            .map_err(|_| Error::Malformed(format!("JoinRequest of {} bytes, not 23", phy.len())))?;
        if bytes[0] != MHDR_JOIN_REQUEST {
            return Err(Error::Malformed("not a JoinRequest (MHDR)".into()));
        }
        let mut join_eui = [0u8; 8];
        join_eui.copy_from_slice(&bytes[1..9]);
        let mut dev_eui = [0u8; 8];
        dev_eui.copy_from_slice(&bytes[9..17]);
        Ok(Self {
            join_eui: Eui64::from_le_bytes(join_eui),
            dev_eui: Eui64::from_le_bytes(dev_eui),
            dev_nonce: u16::from_le_bytes([bytes[17], bytes[18]]),
            bytes,
        })
    }

    /// Whether the MIC verifies under `key` (the AppKey of 1.0.x, the NwkKey of 1.1), compared
    /// in constant time.
    #[must_use]
    pub fn mic_verifies(&self, key: &AesKey) -> bool {
        let mic = cmac(key, &[&self.bytes[..19]]);
        bool::from(mic[..4].ct_eq(&self.bytes[19..23]))
    }
}

/// The network-server-chosen fields of a JoinAccept (from the JoinReq).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptParams {
    /// The JoinNonce (24 bits).
    pub join_nonce: u32,
    /// NetID, as printed (most significant byte first).
    pub net_id: [u8; 3],
    /// DevAddr, as printed (most significant byte first).
    pub dev_addr: [u8; 4],
    /// DLSettings.
    pub dl_settings: u8,
    /// RxDelay.
    pub rx_delay: u8,
    /// CFList, if any.
    pub cf_list: Option<[u8; 16]>,
}

impl AcceptParams {
    fn body(&self, dl_settings: u8) -> Vec<u8> {
        let mut b = Vec::with_capacity(28);
        b.extend_from_slice(&self.join_nonce.to_le_bytes()[..3]);
        let mut net_id = self.net_id;
        net_id.reverse();
        b.extend_from_slice(&net_id);
        let mut dev_addr = self.dev_addr;
        dev_addr.reverse();
        b.extend_from_slice(&dev_addr);
        b.push(dl_settings);
        b.push(self.rx_delay);
        if let Some(cf) = &self.cf_list {
            b.extend_from_slice(cf);
        }
        b
    }
}

/// Session keys of a LoRaWAN 1.0.x join.
pub struct SessionKeys10 {
    /// NwkSKey.
    pub nwk_s_key: AesKey,
    /// AppSKey.
    pub app_s_key: AesKey,
}

/// Session keys of a LoRaWAN 1.1 join.
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

/// The session keys of a join, by version.
pub enum SessionKeys {
    /// LoRaWAN 1.0.x.
    V1_0(SessionKeys10),
    /// LoRaWAN 1.1.
    V1_1(SessionKeys11),
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(REDACTED)")
    }
}

/// The OptNeg bit of DLSettings (LoRaWAN 1.1 §6.2.3).
const OPT_NEG: u8 = 0x80;

/// A JoinAccept for a LoRaWAN 1.0.x device: MIC under the AppKey, encrypted with the AppKey
/// (the AES *decrypt* operation, §6.2.3), plus the session keys.
#[must_use]
pub fn join_accept_1_0(
    app_key: &AesKey,
    req: &JoinRequest,
    params: &AcceptParams,
) -> (Vec<u8>, SessionKeys10) {
    let body = params.body(params.dl_settings & !OPT_NEG);
    let mic = cmac(app_key, &[&[MHDR_JOIN_ACCEPT], &body]);
    let phy = encrypt_accept(app_key, &body, &mic);
    let nonce = &body[..6]; // JoinNonce ‖ NetID, little-endian
    let dev_nonce = req.dev_nonce.to_le_bytes();
    let derive = |tag: u8| {
        let mut block = [0u8; 16];
        block[0] = tag;
        block[1..7].copy_from_slice(nonce);
        block[7..9].copy_from_slice(&dev_nonce);
        encrypt_block(app_key, block)
    };
    let keys = SessionKeys10 {
        nwk_s_key: derive(0x01),
        app_s_key: derive(0x02),
    };
    (phy, keys)
}

/// A JoinAccept for a LoRaWAN 1.1 device (OptNeg set): MIC under JSIntKey over JoinReqType,
/// JoinEUI and DevNonce too, encrypted with the NwkKey, plus the four session keys.
#[must_use]
pub fn join_accept_1_1(
    nwk_key: &AesKey,
    app_key: &AesKey,
    req: &JoinRequest,
    params: &AcceptParams,
) -> (Vec<u8>, SessionKeys11) {
    let body = params.body(params.dl_settings | OPT_NEG);
    let js_int_key = {
        let mut block = [0u8; 16];
        block[0] = 0x06;
        block[1..9].copy_from_slice(&req.dev_eui.to_le_bytes());
        encrypt_block(nwk_key, block)
    };
    let join_eui = req.join_eui.to_le_bytes();
    let dev_nonce = req.dev_nonce.to_le_bytes();
    let mic = cmac(
        &js_int_key,
        &[&[0xff], &join_eui, &dev_nonce, &[MHDR_JOIN_ACCEPT], &body],
    );
    let phy = encrypt_accept(nwk_key, &body, &mic);
    let join_nonce = &body[..3];
    let derive = |key: &AesKey, tag: u8| {
        let mut block = [0u8; 16];
        block[0] = tag;
        block[1..4].copy_from_slice(join_nonce);
        block[4..12].copy_from_slice(&join_eui);
        block[12..14].copy_from_slice(&dev_nonce);
        encrypt_block(key, block)
    };
    let keys = SessionKeys11 {
        f_nwk_s_int_key: derive(nwk_key, 0x01),
        app_s_key: derive(app_key, 0x02),
        s_nwk_s_int_key: derive(nwk_key, 0x03),
        nwk_s_enc_key: derive(nwk_key, 0x04),
    };
    (phy, keys)
}

fn encrypt_accept(key: &AesKey, body: &[u8], mic: &[u8; 16]) -> Vec<u8> {
    let mut plain = Vec::with_capacity(body.len() + 4);
    plain.extend_from_slice(body);
    plain.extend_from_slice(&mic[..4]);
    let cipher = Aes128::new(key.expose_secret().into());
    let mut out = Vec::with_capacity(1 + plain.len());
    out.push(MHDR_JOIN_ACCEPT);
    // The body plus MIC is 16 or 32 bytes: whole blocks.
    for chunk in plain.chunks(16) {
        let mut block = [0u8; 16];
        block[..chunk.len()].copy_from_slice(chunk);
        cipher.decrypt_block((&mut block).into());
        out.extend_from_slice(&block[..chunk.len()]);
    }
    out
}

fn encrypt_block(key: &AesKey, mut block: [u8; 16]) -> AesKey {
    let cipher = Aes128::new(key.expose_secret().into());
    cipher.encrypt_block((&mut block).into());
    AesKey::from_array(block)
}

fn cmac(key: &AesKey, parts: &[&[u8]]) -> [u8; 16] {
    let mut mac = <Cmac<Aes128> as KeyInit>::new(key.expose_secret().into());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The MIC of a JoinRequest under `key` (for tests and simulated devices).
#[must_use]
pub fn join_request_mic(key: &AesKey, first_19_bytes: &[u8]) -> [u8; 4] {
    let full = cmac(key, &[first_19_bytes]);
    [full[0], full[1], full[2], full[3]]
}
