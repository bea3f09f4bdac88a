//! The transcript hash, the key schedule and the signed strings (PROTOCOL.md §5.3–§5.5).
//!
//! Every function here is a pure computation through the crypto backend; both roles call the same
//! code, so the device and the server cannot disagree on a byte of the transcript.

use lorapki_crypto::{
    AesKey, CryptoBackend, PublicKey, Result, SHA384_LEN, Secret, Sha384Hasher, SharedSecret,
};

/// The label that starts the transcript (§5.3).
pub const TRANSCRIPT_LABEL: &[u8] = b"lorapki-v1";
/// The cipher suite of version 1: ECDH P-384, ECDSA P-384/SHA-384, HKDF-SHA384.
pub const SUITE: u8 = 0x01;
/// The protocol version carried in PubKeyReq and bound into the transcript.
pub const VERSION: u8 = 0x01;

const INFO_APP_KEY: &[u8] = b"lorapki-v1 app key";
const INFO_NWK_KEY: &[u8] = b"lorapki-v1 nwk key";
const INFO_DEVICE_CONFIRM: &[u8] = b"lorapki-v1 device confirm";
const INFO_SERVER_CONFIRM: &[u8] = b"lorapki-v1 server confirm";
const SIGNATURE_LABEL_DEVICE: &[u8] = b"lorapki-v1 device signature";
const SIGNATURE_LABEL_SERVER: &[u8] = b"lorapki-v1 server signature";

/// Length of a key id (§2).
pub const KEY_ID_LEN: usize = 8;
/// Length of a key-confirmation value `C_D` / `C_S` (§5.4).
pub const CONFIRM_LEN: usize = 32;

/// A key id: the first 8 bytes of SHA-384 over the SEC1 compressed public key (§2).
pub type KeyId = [u8; KEY_ID_LEN];

/// The LoRaWAN version of a device, which decides which root keys are replaced (§5.4).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LorawanVersion {
    /// LoRaWAN 1.0.x: one root key, the AppKey.
    V1_0,
    /// LoRaWAN 1.1: AppKey and NwkKey.
    V1_1,
}

impl LorawanVersion {
    /// The transcript byte (§5.3).
    #[must_use]
    pub const fn transcript_byte(self) -> u8 {
        match self {
            Self::V1_0 => 0x10,
            Self::V1_1 => 0x11,
        }
    }
}

/// The role of a signer; it selects the signed label, so a signature of one role never verifies
/// as one of the other (no reflection, PROTOCOL.md §10 property 3).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Role {
    /// The end-device.
    Device,
    /// The lorapki server.
    Server,
}

/// The public values the transcript hash binds (§5.3).
#[derive(Clone, Copy, Debug)]
pub struct Transcript<'a> {
    /// LoRaWAN version of the device.
    pub lorawan: LorawanVersion,
    /// DevEUI, most significant byte first.
    pub dev_eui: &'a [u8; 8],
    /// JoinEUI, most significant byte first.
    pub join_eui: &'a [u8; 8],
    /// Key id of the server's signing key.
    pub server_key_id: &'a KeyId,
    /// Key id of the device's identity key.
    pub device_key_id: &'a KeyId,
    /// The session number (0..=63).
    pub session: u8,
    /// The device's ephemeral public key.
    pub device_ephemeral: &'a PublicKey,
    /// The server's ephemeral public key.
    pub server_ephemeral: &'a PublicKey,
}

/// The key id of a public key (§2).
pub fn key_id<B: CryptoBackend>(backend: &mut B, public: &PublicKey) -> KeyId {
    let mut hasher = backend.sha384();
    hasher.update(public.as_bytes());
    let digest = hasher.finalize();
    let mut id = [0; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    id
}

impl Transcript<'_> {
    /// `TH`, the transcript hash (§5.3).
    pub fn hash<B: CryptoBackend>(&self, backend: &mut B) -> [u8; SHA384_LEN] {
        let mut hasher = backend.sha384();
        hasher.update(TRANSCRIPT_LABEL);
        hasher.update(&[SUITE, VERSION, self.lorawan.transcript_byte()]);
        hasher.update(self.dev_eui);
        hasher.update(self.join_eui);
        hasher.update(self.server_key_id);
        hasher.update(self.device_key_id);
        hasher.update(&[self.session]);
        hasher.update(self.device_ephemeral.as_bytes());
        hasher.update(self.server_ephemeral.as_bytes());
        hasher.finalize()
    }
}

/// The new LoRaWAN root keys a run produces.
pub struct NewRootKeys {
    /// The new AppKey.
    pub app_key: AesKey,
    /// The new NwkKey (LoRaWAN 1.1 devices only).
    pub nwk_key: Option<AesKey>,
}

impl NewRootKeys {
    /// A copy, for handing to a key store while keeping the original.
    #[must_use]
    pub fn clone_secret(&self) -> Self {
        Self {
            app_key: self.app_key.clone_secret(),
            nwk_key: self.nwk_key.as_ref().map(Secret::clone_secret),
        }
    }

    /// The keys in the shape of the crypto crate's root-key store.
    #[must_use]
    pub fn to_root_keys(&self) -> lorapki_crypto::RootKeys {
        lorapki_crypto::RootKeys {
            app_key: self.app_key.clone_secret(),
            nwk_key: self.nwk_key.as_ref().map(Secret::clone_secret),
        }
    }
}

impl core::fmt::Debug for NewRootKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("NewRootKeys(REDACTED)")
    }
}

impl PartialEq for NewRootKeys {
    /// Constant time on the key bytes (the `Secret` comparison).
    fn eq(&self, other: &Self) -> bool {
        let app = self.app_key == other.app_key;
        let nwk = match (&self.nwk_key, &other.nwk_key) {
            (Some(a), Some(b)) => a == b,
            (None, None) => true,
            _ => false,
        };
        app & nwk
    }
}

/// Everything the key schedule yields for one run (§5.4). Zeroized on drop.
#[derive(Debug)]
pub struct SessionKeys {
    /// The new root keys.
    pub root: NewRootKeys,
    /// `C_D`, the device's key-confirmation value.
    pub device_confirm: Secret<CONFIRM_LEN>,
    /// `C_S`, the server's key-confirmation value.
    pub server_confirm: Secret<CONFIRM_LEN>,
}

/// Runs the key schedule over the ECDH output `z` and the transcript hash (§5.4).
///
/// `z` is consumed (and so zeroized) here; the PRK is zeroized before returning.
///
/// # Errors
///
/// Only backend failures.
pub fn derive_session_keys<B: CryptoBackend>(
    backend: &mut B,
    z: SharedSecret,
    th: &[u8; SHA384_LEN],
    lorawan: LorawanVersion,
) -> Result<SessionKeys> {
    let prk = backend.hkdf_extract(th, z.expose_secret())?;
    drop(z);
    let mut app_key = AesKey::new_zeroed();
    backend.hkdf_expand(&prk, &[INFO_APP_KEY], app_key.as_mut_bytes())?;
    let nwk_key = match lorawan {
        LorawanVersion::V1_0 => None,
        LorawanVersion::V1_1 => {
            let mut key = AesKey::new_zeroed();
            backend.hkdf_expand(&prk, &[INFO_NWK_KEY], key.as_mut_bytes())?;
            Some(key)
        }
    };
    let mut device_confirm = Secret::new_zeroed();
    backend.hkdf_expand(&prk, &[INFO_DEVICE_CONFIRM], device_confirm.as_mut_bytes())?;
    let mut server_confirm = Secret::new_zeroed();
    backend.hkdf_expand(&prk, &[INFO_SERVER_CONFIRM], server_confirm.as_mut_bytes())?;
    Ok(SessionKeys {
        root: NewRootKeys { app_key, nwk_key },
        device_confirm,
        server_confirm,
    })
}

/// SHA-384 of the string a `role` signs: `label ‖ TH ‖ C` (§5.5).
pub fn signed_digest<B: CryptoBackend>(
    backend: &mut B,
    role: Role,
    th: &[u8; SHA384_LEN],
    keys: &SessionKeys,
) -> [u8; SHA384_LEN] {
    let (label, confirm) = match role {
        Role::Device => (SIGNATURE_LABEL_DEVICE, &keys.device_confirm),
        Role::Server => (SIGNATURE_LABEL_SERVER, &keys.server_confirm),
    };
    let mut hasher = backend.sha384();
    hasher.update(label);
    hasher.update(th);
    hasher.update(confirm.expose_secret());
    hasher.finalize()
}
