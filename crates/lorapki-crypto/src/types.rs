//! Plain-data key and signature types.

use core::fmt;

use crate::{
    Error, P384_PUBLIC_COMPRESSED_LEN, P384_PUBLIC_UNCOMPRESSED_LEN, P384_SIGNATURE_LEN, Result,
};

/// Length of one P-384 scalar or field element (`r`, `s`, `x`, `y`).
const P384_SCALAR_LEN: usize = 48;

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
}

/// A P-384 public key in SEC1 compressed form (`0x02`/`0x03` ‖ x, 49 bytes), as sent on air.
///
/// This is plain data. A value made by a backend ([`CryptoBackend::public_key_from_sec1`],
/// [`CryptoBackend::ephemeral_generate`], [`CryptoBackend::identity_public_key`]) is a valid point;
/// one made by [`PublicKey::from_compressed_unchecked`] has only had its tag checked, and backends
/// validate it (on the curve, not the identity) in [`CryptoBackend::ecdh_agree`] and
/// [`CryptoBackend::ecdsa_verify_digest`], which fail with [`Error::InvalidPublicKey`] otherwise.
///
/// [`CryptoBackend::public_key_from_sec1`]: crate::CryptoBackend::public_key_from_sec1
/// [`CryptoBackend::ephemeral_generate`]: crate::CryptoBackend::ephemeral_generate
/// [`CryptoBackend::identity_public_key`]: crate::CryptoBackend::identity_public_key
/// [`CryptoBackend::ecdh_agree`]: crate::CryptoBackend::ecdh_agree
/// [`CryptoBackend::ecdsa_verify_digest`]: crate::CryptoBackend::ecdsa_verify_digest
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; P384_PUBLIC_COMPRESSED_LEN]);

impl PublicKey {
    /// Wraps compressed SEC1 bytes without checking that they encode a point of the curve.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPublicKey`] if the first byte is not the compressed tag `0x02` or `0x03`.
    pub const fn from_compressed_unchecked(
        bytes: [u8; P384_PUBLIC_COMPRESSED_LEN],
    ) -> Result<Self> {
        match bytes[0] {
            0x02 | 0x03 => Ok(Self(bytes)),
            _ => Err(Error::InvalidPublicKey),
        }
    }

    /// Compresses an uncompressed SEC1 point (`0x04` ‖ x ‖ y) without checking that it lies on the
    /// curve. Only for keys that come from a trusted source (a backend, a pinned constant):
    /// compression keeps `x` and the parity of `y`, so an off-curve input would silently become a
    /// different, valid point. Untrusted input goes through
    /// [`CryptoBackend::public_key_from_sec1`](crate::CryptoBackend::public_key_from_sec1).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPublicKey`] if the first byte is not the uncompressed tag `0x04`.
    pub fn from_uncompressed_unchecked(bytes: &[u8; P384_PUBLIC_UNCOMPRESSED_LEN]) -> Result<Self> {
        let (tag, rest) = bytes.split_at(1);
        if tag != [0x04] {
            return Err(Error::InvalidPublicKey);
        }
        let (x, y) = rest.split_at(P384_SCALAR_LEN);
        let y_is_odd = y.last().is_some_and(|last| last & 1 == 1);
        let mut compressed = [0u8; P384_PUBLIC_COMPRESSED_LEN];
        compressed[0] = if y_is_odd { 0x03 } else { 0x02 };
        compressed[1..].copy_from_slice(x);
        Ok(Self(compressed))
    }

    /// The compressed SEC1 bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; P384_PUBLIC_COMPRESSED_LEN] {
        &self.0
    }

    /// The big-endian x-coordinate.
    #[must_use]
    pub fn x(&self) -> &[u8] {
        &self.0[1..]
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PublicKey(")?;
        write_hex(f, &self.0)?;
        f.write_str(")")
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for PublicKey {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "PublicKey({=[u8]:02x})", self.0[..]);
    }
}

/// An ECDSA P-384 signature as `r ‖ s`, each a 48-byte big-endian integer (IEEE P1363 form).
///
/// Plain data: no range check happens here. A signature whose `r` or `s` is zero or not below the
/// group order is rejected by [`CryptoBackend::ecdsa_verify_digest`] with the same
/// [`Error::InvalidSignature`] as any other that does not verify.
///
/// [`CryptoBackend::ecdsa_verify_digest`]: crate::CryptoBackend::ecdsa_verify_digest
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; P384_SIGNATURE_LEN]);

impl Signature {
    /// Wraps `r ‖ s` bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; P384_SIGNATURE_LEN]) -> Self {
        Self(bytes)
    }

    /// Builds a signature from its two halves.
    #[must_use]
    pub fn from_scalars(r: &[u8; P384_SCALAR_LEN], s: &[u8; P384_SCALAR_LEN]) -> Self {
        let mut bytes = [0u8; P384_SIGNATURE_LEN];
        let (r_out, s_out) = bytes.split_at_mut(P384_SCALAR_LEN);
        r_out.copy_from_slice(r);
        s_out.copy_from_slice(s);
        Self(bytes)
    }

    /// Copies `r ‖ s` out of a slice of exactly 96 bytes (e.g. two reassembled 48-byte chunks).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLength`] if `bytes.len() != 96`.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        <[u8; P384_SIGNATURE_LEN]>::try_from(bytes)
            .map(Self)
            .map_err(|_| Error::InvalidLength)
    }

    /// The `r ‖ s` bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; P384_SIGNATURE_LEN] {
        &self.0
    }

    /// The big-endian `r`.
    #[must_use]
    pub fn r(&self) -> &[u8; P384_SCALAR_LEN] {
        let (halves, _) = self.0.as_chunks::<P384_SCALAR_LEN>();
        &halves[0]
    }

    /// The big-endian `s`.
    #[must_use]
    pub fn s(&self) -> &[u8; P384_SCALAR_LEN] {
        let (halves, _) = self.0.as_chunks::<P384_SCALAR_LEN>();
        &halves[1]
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signature(")?;
        write_hex(f, &self.0)?;
        f.write_str(")")
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Signature {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "Signature({=[u8]:02x})", self.0[..]);
    }
}

/// The number of an identity-key slot inside a backend.
///
/// Identity keys are generated inside the backend and referred to only by slot, so that a hardware
/// backend never has to export a private key. How many slots exist is the backend's business;
/// a slot number it lacks gives [`Error::Unsupported`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct KeySlot(pub u8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_halves() {
        let mut bytes = [0u8; P384_SIGNATURE_LEN];
        bytes[..48].fill(0x11);
        bytes[48..].fill(0x22);
        let signature = Signature::from_bytes(bytes);
        assert_eq!(signature.r(), &[0x11; 48]);
        assert_eq!(signature.s(), &[0x22; 48]);
        assert_eq!(Signature::from_scalars(&[0x11; 48], &[0x22; 48]), signature);
        assert_eq!(
            Signature::from_slice(&bytes[..95]),
            Err(Error::InvalidLength)
        );
        assert_eq!(Signature::from_slice(&bytes), Ok(signature));
    }

    #[test]
    fn compression_keeps_x_and_parity() {
        let mut uncompressed = [0u8; P384_PUBLIC_UNCOMPRESSED_LEN];
        uncompressed[0] = 0x04;
        uncompressed[1..49].fill(0xab);
        uncompressed[96] = 0x01;
        let odd = PublicKey::from_uncompressed_unchecked(&uncompressed).unwrap();
        assert_eq!(odd.as_bytes()[0], 0x03);
        assert_eq!(odd.x(), &[0xab; 48]);
        uncompressed[96] = 0x02;
        let even = PublicKey::from_uncompressed_unchecked(&uncompressed).unwrap();
        assert_eq!(even.as_bytes()[0], 0x02);
        uncompressed[0] = 0x02;
        assert_eq!(
            PublicKey::from_uncompressed_unchecked(&uncompressed),
            Err(Error::InvalidPublicKey)
        );
    }

    #[test]
    fn compressed_tag_checked() {
        let mut bytes = [0x55u8; P384_PUBLIC_COMPRESSED_LEN];
        for tag in [0x00, 0x01, 0x04, 0xff] {
            bytes[0] = tag;
            assert_eq!(
                PublicKey::from_compressed_unchecked(bytes),
                Err(Error::InvalidPublicKey)
            );
        }
        bytes[0] = 0x02;
        assert!(PublicKey::from_compressed_unchecked(bytes).is_ok());
    }
}
