//! Zeroizing secret byte strings.

use core::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Secret bytes: zeroized on drop, redacted in `Debug`, compared in constant time.
///
/// There is deliberately no `Clone`: copying a secret is an explicit [`Secret::clone_secret`].
/// There is no `Serialize`, no `Display` and no `Deref`; reading the bytes is an explicit
/// [`Secret::expose_secret`], which makes every such place easy to audit.
///
/// ```
/// use lorapki_crypto::Secret;
///
/// let a = Secret::<4>::from_array([1, 2, 3, 4]);
/// let b = a.clone_secret();
/// assert_eq!(a, b); // constant-time comparison
/// assert_eq!(format!("{a:?}"), "Secret<4>(REDACTED)");
/// ```
pub struct Secret<const N: usize>([u8; N]);

/// A 16-byte AES-128 key (LoRaWAN AppKey, NwkKey, session keys).
pub type AesKey = Secret<16>;
/// The 48-byte ECDH P-384 shared secret (the x-coordinate of the shared point).
pub type SharedSecret = Secret<48>;
/// The 48-byte pseudo-random key of HKDF-SHA384 (output of extract, input of expand).
pub type Prk = Secret<48>;

impl<const N: usize> Secret<N> {
    /// Takes ownership of the bytes. The caller's copy, if any, is the caller's to zeroize.
    #[must_use]
    pub const fn from_array(bytes: [u8; N]) -> Self {
        Self(bytes)
    }

    /// Copies the bytes out of a slice of exactly `N` bytes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLength`](crate::Error::InvalidLength) if `bytes.len() != N`.
    pub fn from_slice(bytes: &[u8]) -> crate::Result<Self> {
        if bytes.len() != N {
            return Err(crate::Error::InvalidLength);
        }
        let mut secret = Self::new_zeroed();
        secret.0.copy_from_slice(bytes);
        Ok(secret)
    }

    /// All-zero bytes, to be filled through [`Secret::as_mut_bytes`].
    #[must_use]
    pub const fn new_zeroed() -> Self {
        Self([0; N])
    }

    /// The secret bytes.
    #[must_use]
    pub const fn expose_secret(&self) -> &[u8; N] {
        &self.0
    }

    /// The secret bytes, for filling in place (so that no unzeroized copy is left on the stack).
    pub const fn as_mut_bytes(&mut self) -> &mut [u8; N] {
        &mut self.0
    }

    /// An explicit copy of the secret.
    #[must_use]
    pub fn clone_secret(&self) -> Self {
        Self(self.0)
    }
}

impl<const N: usize> Drop for Secret<N> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<const N: usize> ZeroizeOnDrop for Secret<N> {}

impl<const N: usize> fmt::Debug for Secret<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret<{N}>(REDACTED)")
    }
}

#[cfg(feature = "defmt")]
impl<const N: usize> defmt::Format for Secret<N> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "Secret<{=usize}>(REDACTED)", N);
    }
}

impl<const N: usize> ConstantTimeEq for Secret<N> {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.0[..].ct_eq(&other.0[..])
    }
}

impl<const N: usize> PartialEq for Secret<N> {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl<const N: usize> Eq for Secret<N> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_slice_checks_length() {
        assert_eq!(
            Secret::<16>::from_slice(&[7; 15]).err(),
            Some(crate::Error::InvalidLength)
        );
        let key = Secret::<16>::from_slice(&[7; 16]).unwrap();
        assert_eq!(key.expose_secret(), &[7; 16]);
        assert_ne!(key, Secret::from_array([8; 16]));
    }

    #[test]
    fn fill_in_place() {
        let mut secret = Secret::<3>::new_zeroed();
        secret.as_mut_bytes().copy_from_slice(&[1, 2, 3]);
        assert_eq!(secret.expose_secret(), &[1, 2, 3]);
    }
}
