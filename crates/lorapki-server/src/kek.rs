//! Key-encryption keys: at-rest sealing of root keys and session snapshots (AES-256-GCM), and the
//! RFC 3394 key envelopes of the LoRaWAN Backend Interfaces (AES key wrap).

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use aes_kw::{KwAes128, KwAes192, KwAes256};
use lorapki_crypto::AesKey;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::eui::Eui64;

const SEALED_FORMAT: u8 = 1;
const NONCE_LEN: usize = 12;
/// The owner of the check value, and the label it seals.
const CHECK_AAD: &[u8] = b"lorapki kek check v1";
const CHECK_LABEL: &[u8] = b"lorapki storage KEK check value";

/// The at-rest key-encryption key: AES-256-GCM with a random 96-bit nonce per sealed value and
/// the owner (DevEUI and purpose) as associated data, so that a sealed value copied to another
/// row does not open. `Debug` is redacted; the key is zeroized on drop. It also carries where it
/// came from (a file path, `LORAPKI_KEK`, …), never the key, for the error that names it when a
/// database was sealed under another key.
pub struct StorageKek {
    cipher: Aes256Gcm,
    origin: Option<String>,
}

impl fmt::Debug for StorageKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StorageKek(REDACTED)")
    }
}

impl StorageKek {
    /// From 32 raw bytes.
    #[must_use]
    pub fn from_bytes(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(&(*key).into()),
            origin: None,
        }
    }

    /// The same key, noting where it came from (`"LORAPKI_KEK"`, a file path, …) for error
    /// messages. Never pass the key itself.
    #[must_use]
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Where the key came from, if noted.
    #[must_use]
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The database's check value: a fixed label sealed under this key (its own owner, so no
    /// other sealed value passes for it).
    ///
    /// # Errors
    ///
    /// [`Error::Key`] if the system RNG fails.
    pub fn seal_check(&self) -> Result<Vec<u8>> {
        self.seal(CHECK_AAD, CHECK_LABEL)
    }

    /// Whether `sealed` is a check value made by [`seal_check`](Self::seal_check) under this key.
    #[must_use]
    pub fn opens_check(&self, sealed: &[u8]) -> bool {
        self.open(CHECK_AAD, sealed)
            .is_ok_and(|label| bool::from(label.as_slice().ct_eq(CHECK_LABEL)))
    }

    /// The error for a database sealed under another key, naming where this one came from.
    #[must_use]
    pub fn mismatch(&self) -> Error {
        Error::KekMismatch {
            origin: self.origin.clone(),
        }
    }

    /// From 64 hex digits (surrounding whitespace ignored), as in the config file or the
    /// `LORAPKI_KEK` environment variable.
    ///
    /// # Errors
    ///
    /// [`Error::Key`] if it is not 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self> {
        let mut key = Zeroizing::new([0u8; 32]);
        let text = text.trim();
        if text.len() != 64 || hex::decode_to_slice(text, &mut key[..]).is_err() {
            return Err(Error::Key(
                "the key-encryption key must be 64 hex digits (32 bytes)".into(),
            ));
        }
        Ok(Self::from_bytes(&key))
    }

    /// A fresh random key as 64 hex digits (for `keygen`).
    ///
    /// # Errors
    ///
    /// [`Error::Key`] if the system RNG fails.
    pub fn generate_hex() -> Result<Zeroizing<String>> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut key[..]).map_err(|e| Error::Key(format!("system RNG: {e}")))?;
        Ok(Zeroizing::new(hex::encode(&key[..])))
    }

    /// Encrypts `plaintext` bound to `aad`: `0x01 ‖ nonce (12) ‖ ciphertext ‖ tag (16)`.
    ///
    /// # Errors
    ///
    /// [`Error::Key`] if the system RNG fails.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| Error::Key(format!("system RNG: {e}")))?;
        let ct = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| Error::Key("sealing failed".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(SEALED_FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts a value made by [`seal`](Self::seal) with the same `aad`.
    ///
    /// # Errors
    ///
    /// [`Error::Key`] if it does not open (wrong key-encryption key, tampered, or another owner).
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let (format, rest) = sealed
            .split_first()
            .ok_or_else(|| Error::Key("empty sealed value".into()))?;
        if *format != SEALED_FORMAT || rest.len() < NONCE_LEN + 16 {
            return Err(Error::Key("unknown sealed-value format".into()));
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(nonce);
        self.cipher
            .decrypt(&Nonce::from(n), Payload { msg: ct, aad })
            .map(Zeroizing::new)
            .map_err(|_| {
                Error::Key(
                    "a sealed value does not open: wrong key-encryption key or tampered data"
                        .into(),
                )
            })
    }
}

// ----- what the storage KEK seals: root keys and session snapshots, bound to their DevEUI -----

/// The root keys of a device, opened.
pub struct RootKeys {
    /// AppKey.
    pub app_key: AesKey,
    /// NwkKey (1.1).
    pub nwk_key: Option<AesKey>,
}

impl std::fmt::Debug for RootKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootKeys(REDACTED)")
    }
}

fn root_aad(dev_eui: Eui64) -> Vec<u8> {
    let mut aad = b"lorapki root keys v1 ".to_vec();
    aad.extend_from_slice(&dev_eui.0);
    aad
}

fn session_aad(dev_eui: Eui64) -> Vec<u8> {
    let mut aad = b"lorapki session v1 ".to_vec();
    aad.extend_from_slice(&dev_eui.0);
    aad
}

/// Seals root keys for `dev_eui`.
///
/// # Errors
///
/// [`Error::Key`] if the RNG fails.
pub fn seal_root_keys(
    kek: &StorageKek,
    dev_eui: Eui64,
    app_key: &AesKey,
    nwk_key: Option<&AesKey>,
) -> Result<Vec<u8>> {
    let mut plain = Zeroizing::new(Vec::with_capacity(32));
    plain.extend_from_slice(app_key.expose_secret());
    if let Some(k) = nwk_key {
        plain.extend_from_slice(k.expose_secret());
    }
    kek.seal(&root_aad(dev_eui), &plain)
}

/// Opens sealed root keys of `dev_eui`.
///
/// # Errors
///
/// [`Error::Key`] if they do not open.
pub fn open_root_keys(kek: &StorageKek, dev_eui: Eui64, sealed: &[u8]) -> Result<RootKeys> {
    let plain = kek.open(&root_aad(dev_eui), sealed)?;
    let key = |b: &[u8]| AesKey::from_slice(b).map_err(|_| Error::Key("root key length".into()));
    match plain.len() {
        16 => Ok(RootKeys {
            app_key: key(&plain[..16])?,
            nwk_key: None,
        }),
        32 => Ok(RootKeys {
            app_key: key(&plain[..16])?,
            nwk_key: Some(key(&plain[16..])?),
        }),
        _ => Err(Error::Key("sealed root keys of a wrong length".into())),
    }
}

/// Seals a session snapshot for `dev_eui`.
///
/// # Errors
///
/// [`Error::Key`] if the RNG fails.
pub fn seal_snapshot(kek: &StorageKek, dev_eui: Eui64, snapshot: &[u8]) -> Result<Vec<u8>> {
    kek.seal(&session_aad(dev_eui), snapshot)
}

/// Opens a sealed session snapshot of `dev_eui`.
///
/// # Errors
///
/// [`Error::Key`] if it does not open.
pub fn open_snapshot(
    kek: &StorageKek,
    dev_eui: Eui64,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    kek.open(&session_aad(dev_eui), sealed)
}

// ----- Backend Interfaces key envelopes -----

/// A Backend Interfaces key-encryption key (RFC 3394 AES key wrap) with its label.
pub struct WrapKek {
    label: String,
    key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for WrapKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WrapKek({:?}, REDACTED)", self.label)
    }
}

impl WrapKek {
    /// A KEK of 16, 24 or 32 bytes given as hex.
    ///
    /// # Errors
    ///
    /// [`Error::Key`] for another length or bad hex.
    pub fn from_hex(label: &str, text: &str) -> Result<Self> {
        let key = Zeroizing::new(
            hex::decode(text.trim()).map_err(|_| Error::Key(format!("KEK {label:?}: not hex")))?,
        );
        if ![16, 24, 32].contains(&key.len()) {
            return Err(Error::Key(format!(
                "KEK {label:?}: must be 16, 24 or 32 bytes"
            )));
        }
        Ok(Self {
            label: label.to_owned(),
            key,
        })
    }

    /// The label sent in the envelope.
    #[must_use]
    pub fn label(&self) -> &str {
        &self.label
    }

    /// RFC 3394 wrap of `plaintext` (a multiple of 8 bytes, at least 16).
    ///
    /// # Errors
    ///
    /// [`Error::Key`] if the input length is not allowed.
    pub fn wrap(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut out = vec![0u8; plaintext.len() + 8];
        let bad = |_| Error::Key("key wrap: bad input length".into());
        match self.key.len() {
            16 => kw128(&self.key)?
                .wrap_key(plaintext, &mut out)
                .map_err(bad)?,
            24 => kw192(&self.key)?
                .wrap_key(plaintext, &mut out)
                .map_err(bad)?,
            _ => kw256(&self.key)?
                .wrap_key(plaintext, &mut out)
                .map_err(bad)?,
        };
        Ok(out)
    }

    /// RFC 3394 unwrap (integrity checked).
    ///
    /// # Errors
    ///
    /// [`Error::Key`] if the integrity check fails or the length is wrong.
    pub fn unwrap(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
            return Err(Error::Key("key unwrap: bad input length".into()));
        }
        let mut out = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
        let bad = |_| Error::Key("key unwrap: integrity check failed".into());
        match self.key.len() {
            16 => kw128(&self.key)?
                .unwrap_key(wrapped, &mut out)
                .map_err(bad)?,
            24 => kw192(&self.key)?
                .unwrap_key(wrapped, &mut out)
                .map_err(bad)?,
            _ => kw256(&self.key)?
                .unwrap_key(wrapped, &mut out)
                .map_err(bad)?,
        };
        Ok(out)
    }
}

fn kw128(key: &[u8]) -> Result<KwAes128> {
    KwAes128::new_from_slice(key).map_err(|_| Error::Key("KEK length".into()))
}

fn kw192(key: &[u8]) -> Result<KwAes192> {
    KwAes192::new_from_slice(key).map_err(|_| Error::Key("KEK length".into()))
}

fn kw256(key: &[u8]) -> Result<KwAes256> {
    KwAes256::new_from_slice(key).map_err(|_| Error::Key("KEK length".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    /// RFC 3394 §4.1–§4.6: the published test vectors.
    #[test]
    fn rfc3394_vectors() {
        let cases = [
            (
                "000102030405060708090A0B0C0D0E0F",
                "00112233445566778899AABBCCDDEEFF",
                "1FA68B0A8112B447 AEF34BD8FB5A7B82 9D3E862371D2CFE5",
            ),
            (
                "000102030405060708090A0B0C0D0E0F1011121314151617",
                "00112233445566778899AABBCCDDEEFF",
                "96778B25AE6CA435 F92B5B97C050AED2 468AB8A17AD84E5D",
            ),
            (
                "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
                "00112233445566778899AABBCCDDEEFF",
                "64E8C3F9CE0F5BA2 63E9777905818A2A 93C8191E7D6E8AE7",
            ),
            (
                "000102030405060708090A0B0C0D0E0F1011121314151617",
                "00112233445566778899AABBCCDDEEFF0001020304050607",
                "031D33264E15D332 68F24EC260743EDC E1C6C7DDEE725A93 6BA814915C6762D2",
            ),
            (
                "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
                "00112233445566778899AABBCCDDEEFF0001020304050607",
                "A8F9BC1612C68B3F F6E6F4FBE30E71E4 769C8B80A32CB895 8CD5D17D6B254DA1",
            ),
            (
                "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
                "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
                "28C9F404C4B810F4 CBCCB35CFB87F826 3F5786E2D80ED326 CBC7F0E71A99F43B FB988B9B7A02DD21",
            ),
        ];
        for (kek, key, wrapped) in cases {
            let kek = WrapKek::from_hex("test", kek).unwrap();
            assert_eq!(kek.wrap(&h(key)).unwrap(), h(wrapped));
            assert_eq!(kek.unwrap(&h(wrapped)).unwrap().as_slice(), h(key));
        }
    }

    #[test]
    fn unwrap_detects_tampering() {
        let kek = WrapKek::from_hex("t", "000102030405060708090A0B0C0D0E0F").unwrap();
        let mut w = kek.wrap(&[7u8; 16]).unwrap();
        w[3] ^= 1;
        assert!(kek.unwrap(&w).is_err());
        assert!(kek.unwrap(&w[..20]).is_err());
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let kek = StorageKek::from_hex(&"11".repeat(32)).unwrap();
        let sealed = kek.seal(b"dev-a", b"secret").unwrap();
        assert_eq!(kek.open(b"dev-a", &sealed).unwrap().as_slice(), b"secret");
        assert!(kek.open(b"dev-b", &sealed).is_err());
        let other = StorageKek::from_hex(&"22".repeat(32)).unwrap();
        assert!(other.open(b"dev-a", &sealed).is_err());
        assert!(kek.open(b"dev-a", &[]).is_err());
        assert!(StorageKek::from_hex("abcd").is_err());
        assert_eq!(format!("{kek:?}"), "StorageKek(REDACTED)");
    }

    #[test]
    fn check_value_opens_only_under_its_key() {
        let kek = StorageKek::from_hex(&"11".repeat(32)).unwrap();
        let check = kek.seal_check().unwrap();
        assert!(kek.opens_check(&check));
        let other = StorageKek::from_hex(&"22".repeat(32))
            .unwrap()
            .with_origin("LORAPKI_KEK");
        assert!(!other.opens_check(&check));
        // Another sealed value of the same key is no check value.
        assert!(!kek.opens_check(&kek.seal(b"dev-a", CHECK_LABEL).unwrap()));
        assert!(!kek.opens_check(&[]));
        let e = other.mismatch().to_string();
        assert!(
            e.contains("does not match the one this database was sealed with")
                && e.contains("LORAPKI_KEK"),
            "{e}"
        );
        assert!(!format!("{other:?}").contains("22"));
    }
}
