//! [`KeyOps`]: the two AES operations of the join procedure under one root key, wherever the key
//! lives; for a key held in memory (`&AesKey`) and one inside a key store ([`StoreKey`]).

use core::convert::Infallible;

use aes::Aes128;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use cmac::{Cmac, Mac};
use lorapki_crypto::{AesKey, RootKeyKind, RootKeySlot, RootKeyStore};

/// AES-128 under one key: what the join procedure asks of a root key.
pub trait KeyOps {
    /// Why an operation failed (a key store's error; [`Infallible`] for a key in memory).
    type Error;

    /// AES-CMAC over the concatenation of `parts`.
    ///
    /// # Errors
    ///
    /// The key cannot be used (e.g. an empty key-store slot).
    fn cmac(&mut self, parts: &[&[u8]]) -> Result<[u8; 16], Self::Error>;

    /// Encrypts one block in place (JoinAccept decryption and key derivation use AES *encrypt*).
    ///
    /// # Errors
    ///
    /// As [`KeyOps::cmac`].
    fn encrypt_block(&mut self, block: &mut [u8; 16]) -> Result<(), Self::Error>;
}

/// A key lent out: several operations can run under one [`StoreKey`].
impl<K: KeyOps + ?Sized> KeyOps for &mut K {
    type Error = K::Error;

    fn cmac(&mut self, parts: &[&[u8]]) -> Result<[u8; 16], K::Error> {
        (**self).cmac(parts)
    }

    fn encrypt_block(&mut self, block: &mut [u8; 16]) -> Result<(), K::Error> {
        (**self).encrypt_block(block)
    }
}

impl KeyOps for &AesKey {
    type Error = Infallible;

    fn cmac(&mut self, parts: &[&[u8]]) -> Result<[u8; 16], Infallible> {
        Ok(cmac(self, parts))
    }

    fn encrypt_block(&mut self, block: &mut [u8; 16]) -> Result<(), Infallible> {
        Aes128::new(self.expose_secret().into()).encrypt_block(block.into());
        Ok(())
    }
}

/// A root key inside a [`RootKeyStore`]: the key in `slot` of kind `kind`, used without ever
/// leaving the store.
pub struct StoreKey<'a, S> {
    store: &'a mut S,
    slot: RootKeySlot,
    kind: RootKeyKind,
}

impl<'a, S: RootKeyStore> StoreKey<'a, S> {
    /// The `kind` key of `slot` in `store`.
    pub fn new(store: &'a mut S, slot: RootKeySlot, kind: RootKeyKind) -> Self {
        Self { store, slot, kind }
    }
}

impl<S: RootKeyStore> KeyOps for StoreKey<'_, S> {
    type Error = lorapki_crypto::Error;

    fn cmac(&mut self, parts: &[&[u8]]) -> lorapki_crypto::Result<[u8; 16]> {
        self.store.root_cmac(self.slot, self.kind, parts)
    }

    fn encrypt_block(&mut self, block: &mut [u8; 16]) -> lorapki_crypto::Result<()> {
        self.store.root_encrypt_block(self.slot, self.kind, block)
    }
}

/// AES-CMAC under a key in memory.
pub(crate) fn cmac(key: &AesKey, parts: &[&[u8]]) -> [u8; 16] {
    let mut mac = <Cmac<Aes128> as KeyInit>::new(key.expose_secret().into());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// AES-128 *decryption* of one block: what a join server "encrypts" a JoinAccept with.
pub(crate) fn decrypt_block(key: &AesKey, block: &mut [u8; 16]) {
    Aes128::new(key.expose_secret().into()).decrypt_block(block.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4493 §4: AES-CMAC with the key 2b7e1516 28aed2a6 abf71588 09cf4f3c.
    #[test]
    fn cmac_matches_rfc_4493() {
        let key = AesKey::from_array(hex_literal::hex!("2b7e151628aed2a6abf7158809cf4f3c"));
        let m = hex_literal::hex!(
            "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51 30c81c46a35ce411"
        );
        let Ok(empty) = (&key).cmac(&[]);
        assert_eq!(empty, hex_literal::hex!("bb1d6929e95937287fa37d129b756746"));
        let Ok(sixteen) = (&key).cmac(&[&m[..16]]);
        assert_eq!(
            sixteen,
            hex_literal::hex!("070a16b46b4d4144f79bdd9dd04a287c")
        );
        // Split anywhere, the same tag.
        let Ok(forty) = (&key).cmac(&[&m[..7], &m[7..40]]);
        assert_eq!(forty, hex_literal::hex!("dfa66747de9ae63030ca32611497c827"));
    }

    /// FIPS-197 Appendix C.1: AES-128 of 00112233…eeff under 00010203…0e0f, and back.
    #[test]
    fn aes_matches_fips_197() {
        let key = AesKey::from_array(hex_literal::hex!("000102030405060708090a0b0c0d0e0f"));
        let mut block = hex_literal::hex!("00112233445566778899aabbccddeeff");
        let Ok(()) = (&key).encrypt_block(&mut block);
        assert_eq!(block, hex_literal::hex!("69c4e0d86a7b0430d8cdb78070b4c55a"));
        decrypt_block(&key, &mut block);
        assert_eq!(block, hex_literal::hex!("00112233445566778899aabbccddeeff"));
    }
}
