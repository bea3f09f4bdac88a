//! The JoinRequest (TS001-1.0.4 §6.2.4, LoRaWAN 1.1 §6.2.2): MHDR ‖ JoinEUI ‖ DevEUI ‖ DevNonce ‖
//! MIC, the MIC under the AppKey (1.0.x) or the NwkKey (1.1).

use subtle::ConstantTimeEq;

use crate::ops::KeyOps;
use crate::{FrameError, JOIN_REQUEST_LEN, MHDR_JOIN_REQUEST, reversed};

/// The fields of a JoinRequest; EUIs most significant byte first (they go little-endian on the
/// air).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JoinRequest {
    /// The JoinEUI (AppEUI in LoRaWAN 1.0.x).
    pub join_eui: [u8; 8],
    /// The DevEUI.
    pub dev_eui: [u8; 8],
    /// The DevNonce.
    pub dev_nonce: u16,
}

impl JoinRequest {
    /// Parses a JoinRequest PHY payload (the MIC is not checked: see
    /// [`join_request_mic_verifies`]).
    ///
    /// # Errors
    ///
    /// The frame is not 23 bytes, or not a LoRaWAN R1 JoinRequest.
    pub fn parse(phy: &[u8]) -> Result<Self, FrameError> {
        let frame: &[u8; JOIN_REQUEST_LEN] = phy
            .try_into()
            .map_err(|_| FrameError::Length { len: phy.len() })?;
        if frame[0] != MHDR_JOIN_REQUEST {
            return Err(FrameError::Mhdr { mhdr: frame[0] });
        }
        let mut join_eui = [0u8; 8];
        join_eui.copy_from_slice(&frame[1..9]);
        let mut dev_eui = [0u8; 8];
        dev_eui.copy_from_slice(&frame[9..17]);
        Ok(Self {
            join_eui: reversed(&join_eui),
            dev_eui: reversed(&dev_eui),
            dev_nonce: u16::from_le_bytes([frame[17], frame[18]]),
        })
    }

    /// The PHY payload, its MIC under `key`.
    ///
    /// # Errors
    ///
    /// The key cannot be used.
    pub fn build<K: KeyOps>(&self, mut key: K) -> Result<[u8; JOIN_REQUEST_LEN], K::Error> {
        let mut frame = [0u8; JOIN_REQUEST_LEN];
        frame[0] = MHDR_JOIN_REQUEST;
        frame[1..9].copy_from_slice(&reversed(&self.join_eui));
        frame[9..17].copy_from_slice(&reversed(&self.dev_eui));
        frame[17..19].copy_from_slice(&self.dev_nonce.to_le_bytes());
        let mic = key.cmac(&[&frame[..19]])?;
        frame[19..].copy_from_slice(&mic[..4]);
        Ok(frame)
    }
}

/// The MIC of a JoinRequest whose first 19 bytes (MHDR to DevNonce) are `head`.
///
/// # Errors
///
/// The key cannot be used.
pub fn join_request_mic<K: KeyOps>(mut key: K, head: &[u8]) -> Result<[u8; 4], K::Error> {
    let full = key.cmac(&[head])?;
    Ok([full[0], full[1], full[2], full[3]])
}

/// Whether `phy` is a JoinRequest whose MIC verifies under `key` (compared in constant time);
/// `false` for any other frame.
///
/// # Errors
///
/// The key cannot be used.
pub fn join_request_mic_verifies<K: KeyOps>(phy: &[u8], key: K) -> Result<bool, K::Error> {
    if JoinRequest::parse(phy).is_err() {
        return Ok(false);
    }
    let (head, mic) = phy.split_at(JOIN_REQUEST_LEN - 4);
    let expected = join_request_mic(key, head)?;
    Ok(bool::from(expected[..].ct_eq(mic)))
}
