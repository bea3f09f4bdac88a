//! The server's identity: its ECDSA P-384 signing key (PKCS#8 PEM file), the key id the devices
//! pin with it (PROTOCOL.md §2: `SHA-384(SEC1 compressed public key)[0..8]`), and a second key
//! during a server-key rotation.

use std::fmt;
use std::io::Write;
use std::path::Path;

use lorapki_crypto::{KeyImport, KeySlot, PublicKey, Secret};
use p384::elliptic_curve::sec1::ToSec1Point;
use p384::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use sha2::Digest;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A key id (PROTOCOL.md §2).
pub type KeyId = [u8; 8];

/// A server signing key loaded from its PEM file. The private scalar is zeroized on drop and
/// never printed.
pub struct ServerKey {
    scalar: Secret<48>,
    public: PublicKey,
    key_id: KeyId,
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ServerKey(id {}, private REDACTED)",
            hex::encode(self.key_id)
        )
    }
}

/// The key id of a public key.
#[must_use]
pub fn key_id(public: &PublicKey) -> KeyId {
    let digest = sha2::Sha384::digest(public.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

impl ServerKey {
    /// Parses a PKCS#8 PEM `PRIVATE KEY` holding a P-384 key.
    ///
    /// # Errors
    ///
    /// [`Error::Key`] if it is not one.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let secret = p384::SecretKey::from_pkcs8_pem(pem.trim())
            .map_err(|_| Error::Key("not a PKCS#8 PEM P-384 private key".into()))?;
        Self::from_secret(&secret)
    }

    fn from_secret(secret: &p384::SecretKey) -> Result<Self> {
        let bytes = Zeroizing::new(secret.to_bytes());
        let scalar =
            Secret::<48>::from_slice(&bytes[..]).map_err(|_| Error::Key("scalar length".into()))?;
        let point = secret.public_key().to_sec1_point(true);
        let compressed: [u8; 49] = point
            .as_bytes()
            .try_into()
            .map_err(|_| Error::Key("public key encoding".into()))?;
        let public = PublicKey::from_compressed_unchecked(compressed)
            .map_err(|_| Error::Key("public key encoding".into()))?;
        Ok(Self {
            scalar,
            key_id: key_id(&public),
            public,
        })
    }

    /// Reads the key file.
    ///
    /// # Errors
    ///
    /// [`Error::IoAt`] naming the file, or [`Error::Key`].
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            Zeroizing::new(std::fs::read_to_string(path).map_err(Error::io_at(path.display()))?);
        Self::from_pem(&text)
    }

    /// The public key the devices pin.
    #[must_use]
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// Its key id.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Loads the private key into a backend slot.
    ///
    /// # Errors
    ///
    /// [`Error::Key`] if the backend refuses it.
    pub fn install<B: KeyImport>(&self, backend: &mut B, slot: KeySlot) -> Result<()> {
        let public = backend
            .identity_import(slot, &self.scalar)
            .map_err(|e| Error::Key(format!("backend refused the server key: {e}")))?;
        if public != self.public {
            return Err(Error::Key("backend derived another public key".into()));
        }
        Ok(())
    }
}

/// A fresh P-384 key as PKCS#8 PEM (the private key) and its public half.
///
/// # Errors
///
/// [`Error::Key`] if the system RNG fails.
pub fn generate() -> Result<(Zeroizing<String>, ServerKey)> {
    loop {
        let mut bytes = Zeroizing::new([0u8; 48]);
        getrandom::fill(&mut bytes[..]).map_err(|e| Error::Key(format!("system RNG: {e}")))?;
        // A uniformly random 48-byte string is a valid scalar with overwhelming probability;
        // draw again otherwise.
        if let Ok(secret) = p384::SecretKey::from_slice(&bytes[..]) {
            let pem = secret
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|_| Error::Key("PKCS#8 encoding".into()))?;
            let key = ServerKey::from_secret(&secret)?;
            return Ok((pem, key));
        }
    }
}

/// Creates a new key file at `path` (never overwriting one) with permissions 0600 on Unix, and
/// returns the key.
///
/// # Errors
///
/// [`Error::IoAt`] naming the file if it exists (kind `AlreadyExists`) or cannot be written.
pub fn generate_file(path: &Path) -> Result<ServerKey> {
    let (pem, key) = generate()?;
    write_secret_file(path, pem.as_bytes())?;
    Ok(key)
}

/// Writes a new file readable only by its owner (0600 on Unix; elsewhere the directory's
/// default permissions); fails if it exists.
///
/// # Errors
///
/// [`Error::IoAt`] naming the file (kind `AlreadyExists` if it exists).
pub fn write_secret_file(path: &Path, contents: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(Error::io_at(path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(Error::io_at(path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.pem");
        let key = generate_file(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let loaded = ServerKey::load(&path).unwrap();
        assert_eq!(loaded.public(), key.public());
        assert_eq!(loaded.key_id(), key.key_id());
        assert!(!format!("{loaded:?}").contains(&hex::encode(loaded.scalar.expose_secret())));
        // Never overwrites, and says which file.
        match generate_file(&path) {
            Err(Error::IoAt { at, source }) => {
                assert_eq!(at, path.display().to_string());
                assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        let missing = dir.path().join("missing.pem");
        let e = ServerKey::load(&missing).unwrap_err().to_string();
        assert!(e.contains("missing.pem"), "{e}");
        assert!(
            ServerKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
                .is_err()
        );
    }
}
