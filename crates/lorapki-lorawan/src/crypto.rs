//! [`MacCrypto`]: the `lorawan` crate's crypto factory on the `aes` 0.9 / `cmac` 0.8 crates.
//!
//! `lorawan-device` 0.12 and `lorawan` 0.9 bring their own factory (`default-crypto`) on `aes` 0.8
//! and `cmac` 0.7, while the rest of a lorapki firmware (the software backend and key store) runs
//! on `aes` 0.9 and `cmac` 0.8. With the default factory a firmware links two AES and two CMAC
//! implementations; with this one it links one of each (the README measures the difference).

use aes::Aes128;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use cmac::Cmac;
use generic_array::GenericArray;
use generic_array::typenum::U16;
use lorawan::keys::{AES128, CryptoFactory, Decrypter, Encrypter, Mac};
use zeroize::Zeroize;

/// The `lorawan` crate's [`CryptoFactory`] on `aes` 0.9 and `cmac` 0.8, the versions the rest of
/// the workspace uses.
///
/// Stateless, as `lorawan-device` requires (`C: CryptoFactory + Default`). Expanded key schedules
/// are zeroized when dropped (the `zeroize` features of `aes` and `cmac`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MacCrypto;

/// AES-128 with one key, both directions (the MAC only encrypts; the JoinAccept relay of this crate
/// also decrypts).
pub struct MacCipher(Aes128);

/// AES-CMAC with one key.
pub struct MacCmac(Cmac<Aes128>);

impl core::fmt::Debug for MacCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MacCipher(REDACTED)")
    }
}

impl core::fmt::Debug for MacCmac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MacCmac(REDACTED)")
    }
}

impl CryptoFactory for MacCrypto {
    type E = MacCipher;
    type D = MacCipher;
    type M = MacCmac;

    fn new_enc(&self, key: &AES128) -> MacCipher {
        MacCipher(Aes128::new((&key.0).into()))
    }

    fn new_dec(&self, key: &AES128) -> MacCipher {
        MacCipher(Aes128::new((&key.0).into()))
    }

    fn new_mac(&self, key: &AES128) -> MacCmac {
        MacCmac(<Cmac<Aes128> as KeyInit>::new((&key.0).into()))
    }
}

/// Runs `f` over the 16 bytes of a `lorawan` block, through a local copy that is zeroized after.
fn with_block(block: &mut GenericArray<u8, U16>, f: impl FnOnce(&mut [u8; 16])) {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(block.as_slice());
    f(&mut bytes);
    block.as_mut_slice().copy_from_slice(&bytes);
    bytes.zeroize();
}

impl Encrypter for MacCipher {
    fn encrypt_block(&self, block: &mut GenericArray<u8, U16>) {
        with_block(block, |b| self.0.encrypt_block(b.into()));
    }
}

impl Decrypter for MacCipher {
    fn decrypt_block(&self, block: &mut GenericArray<u8, U16>) {
        with_block(block, |b| self.0.decrypt_block(b.into()));
    }
}

impl Mac for MacCmac {
    fn input(&mut self, data: &[u8]) {
        cmac::Mac::update(&mut self.0, data);
    }

    fn reset(&mut self) {
        cmac::Mac::reset(&mut self.0);
    }

    fn result(self) -> GenericArray<u8, U16> {
        let tag = cmac::Mac::finalize(self.0).into_bytes();
        let mut out = GenericArray::default();
        out.as_mut_slice().copy_from_slice(tag.as_slice());
        out
    }
}

#[cfg(test)]
mod tests {
    use lorawan::default_crypto::DefaultFactory;

    use super::*;

    // RFC 4493 §4: K, and the CMAC of the 16-byte example M.
    const RFC4493_KEY: [u8; 16] = [
        0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f,
        0x3c,
    ];
    const RFC4493_M16: [u8; 16] = [
        0x6b, 0xc1, 0xbe, 0xe2, 0x2e, 0x40, 0x9f, 0x96, 0xe9, 0x3d, 0x7e, 0x11, 0x73, 0x93, 0x17,
        0x2a,
    ];
    const RFC4493_T16: [u8; 16] = [
        0x07, 0x0a, 0x16, 0xb4, 0x6b, 0x4d, 0x41, 0x44, 0xf7, 0x9b, 0xdd, 0x9d, 0xd0, 0x4a, 0x28,
        0x7c,
    ];
    // FIPS 197 appendix C.1 (AES-128).
    const FIPS197_KEY: [u8; 16] = [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f,
    ];
    const FIPS197_PLAIN: [u8; 16] = [
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff,
    ];
    const FIPS197_CIPHER: [u8; 16] = [
        0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30, 0xd8, 0xcd, 0xb7, 0x80, 0x70, 0xb4, 0xc5,
        0x5a,
    ];

    #[test]
    fn aes_matches_fips197_both_ways() {
        let key = AES128(FIPS197_KEY);
        let mut block = GenericArray::clone_from_slice(&FIPS197_PLAIN);
        MacCrypto.new_enc(&key).encrypt_block(&mut block);
        assert_eq!(block.as_slice(), FIPS197_CIPHER);
        MacCrypto.new_dec(&key).decrypt_block(&mut block);
        assert_eq!(block.as_slice(), FIPS197_PLAIN);
    }

    #[test]
    fn cmac_matches_rfc4493_and_resets() {
        let key = AES128(RFC4493_KEY);
        let mut mac = MacCrypto.new_mac(&key);
        mac.input(b"something else");
        mac.reset();
        mac.input(&RFC4493_M16[..5]);
        mac.input(&RFC4493_M16[5..]);
        assert_eq!(mac.result().as_slice(), RFC4493_T16);
    }

    #[test]
    fn agrees_with_the_default_factory() {
        for seed in 0u8..16 {
            let key = AES128([seed.wrapping_mul(37); 16]);
            let data: [u8; 16] = core::array::from_fn(|i| (i as u8) ^ seed);
            let mut ours = GenericArray::clone_from_slice(&data);
            let mut theirs = ours;
            MacCrypto.new_enc(&key).encrypt_block(&mut ours);
            DefaultFactory.new_enc(&key).encrypt_block(&mut theirs);
            assert_eq!(ours, theirs);
            MacCrypto.new_dec(&key).decrypt_block(&mut ours);
            DefaultFactory.new_dec(&key).decrypt_block(&mut theirs);
            assert_eq!(ours, theirs);
            let mut a = MacCrypto.new_mac(&key);
            let mut b = DefaultFactory.new_mac(&key);
            a.input(&data[..usize::from(seed)]);
            b.input(&data[..usize::from(seed)]);
            assert_eq!(a.result(), b.result());
        }
    }
}
