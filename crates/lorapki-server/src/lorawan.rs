//! LoRaWAN join procedure for the join server: JoinRequest parsing and MIC, JoinAccept
//! construction (MIC and encryption) and session-key derivation, for LoRaWAN 1.0.x and 1.1
//! (LoRaWAN 1.0.4 §6.2.2–§6.2.5, LoRaWAN 1.1 §6.2.2–§6.2.6), in the join server's terms (EUIs,
//! Backend Interfaces fields) over `lorapki-join`, which computes them; every key is a zeroizing
//! [`AesKey`].

use std::fmt;
use std::str::FromStr;

use lorapki_crypto::AesKey;
use lorapki_join::{FrameError, JOIN_REQUEST_LEN, JoinAccept, OPT_NEG};
pub use lorapki_join::{SessionKeys10, SessionKeys11};
use lorapki_proto::LorawanVersion;

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
    bytes: [u8; JOIN_REQUEST_LEN],
}

impl JoinRequest {
    /// Parses a JoinRequest PHYPayload.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] if it is not 23 bytes with a JoinRequest MHDR.
    pub fn parse(phy: &[u8]) -> Result<Self> {
        let fields = lorapki_join::JoinRequest::parse(phy).map_err(|e| match e {
            FrameError::Length { len } => Error::Malformed(format!(
                "JoinRequest of {len} bytes, not {JOIN_REQUEST_LEN}"
            )),
            FrameError::Mhdr { .. } => Error::Malformed("not a JoinRequest (MHDR)".into()),
        })?;
        let mut bytes = [0u8; JOIN_REQUEST_LEN];
        bytes.copy_from_slice(phy);
        Ok(Self {
            join_eui: Eui64(fields.join_eui),
            dev_eui: Eui64(fields.dev_eui),
            dev_nonce: fields.dev_nonce,
            bytes,
        })
    }

    /// Whether the MIC verifies under `key` (the AppKey of 1.0.x, the NwkKey of 1.1), compared
    /// in constant time.
    #[must_use]
    pub fn mic_verifies(&self, key: &AesKey) -> bool {
        let Ok(verifies) = lorapki_join::join_request_mic_verifies(&self.bytes, key);
        verifies
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
    fn accept(&self, dl_settings: u8) -> JoinAccept {
        let [a, b, c] = self.net_id;
        JoinAccept {
            join_nonce: self.join_nonce,
            net_id: u32::from_be_bytes([0, a, b, c]),
            dev_addr: u32::from_be_bytes(self.dev_addr),
            dl_settings,
            rx_delay: self.rx_delay,
            cf_list: self.cf_list,
        }
    }
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

/// A JoinAccept for a LoRaWAN 1.0.x device: MIC under the AppKey, encrypted with the AppKey
/// (the AES *decrypt* operation, §6.2.3), plus the session keys.
#[must_use]
pub fn join_accept_1_0(
    app_key: &AesKey,
    req: &JoinRequest,
    params: &AcceptParams,
) -> (Vec<u8>, SessionKeys10) {
    let accept = params.accept(params.dl_settings & !OPT_NEG);
    let phy = accept.seal_1_0(app_key).as_bytes().to_vec();
    let Ok(keys) = accept.session_keys_1_0(app_key, req.dev_nonce);
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
    let accept = params.accept(params.dl_settings | OPT_NEG);
    let (join_eui, dev_eui) = (req.join_eui.0, req.dev_eui.0);
    let phy = accept
        .seal_1_1(nwk_key, &join_eui, &dev_eui, req.dev_nonce)
        .as_bytes()
        .to_vec();
    let Ok(keys) = accept.session_keys_1_1(nwk_key, app_key, &join_eui, req.dev_nonce);
    (phy, keys)
}

/// The MIC of a JoinRequest under `key` (for tests and simulated devices).
#[must_use]
pub fn join_request_mic(key: &AesKey, first_19_bytes: &[u8]) -> [u8; 4] {
    let Ok(mic) = lorapki_join::join_request_mic(key, first_19_bytes);
    mic
}
