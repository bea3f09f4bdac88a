//! AES-128 and AES-CMAC on RustCrypto, shared by the backend and the key store.

use aes::Aes128;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use cmac::{Cmac, Mac};
use lorapki_crypto::{AES_BLOCK_LEN, AesKey};

/// AES-128 encryption of one block in place (FIPS 197). The expanded key schedule is zeroized when
/// the cipher is dropped (`aes/zeroize`).
pub(crate) fn encrypt_block(key: &AesKey, block: &mut [u8; AES_BLOCK_LEN]) {
    let cipher = Aes128::new(key.expose_secret().into());
    cipher.encrypt_block(block.into());
}

/// AES-CMAC (RFC 4493) over the concatenation of `parts`.
pub(crate) fn cmac(key: &AesKey, parts: &[&[u8]]) -> [u8; AES_BLOCK_LEN] {
    let mut mac = <Cmac<Aes128> as KeyInit>::new(key.expose_secret().into());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}
