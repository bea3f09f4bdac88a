//! AES-CCM (NIST SP 800-38C; RFC 3610) over a fallible block-encryption function.
//!
//! The key store encrypts its records with the AES engine's device-unique key, which software
//! cannot read, so CCM here is written against "encrypt this block in place" (the engine's
//! [`AesCommand::EncryptBlock`](crate::engine::AesCommand::EncryptBlock)), which may fail like any
//! engine command. CCM needs only the forward cipher: CBC-MAC for authentication (SP 800-38C
//! §6.1 steps 1–5) and counter mode for encryption (steps 6–8).
//!
//! Supported parameters: nonce of 7 to 13 bytes (`q = 15 − n`), tag of 4, 6, …, 16 bytes, payload
//! shorter than `2^(8q)` bytes, associated data shorter than `2^16 − 2^8` bytes (the two-byte
//! length encoding of SP 800-38C §A.2.2; longer associated data is refused).

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// AES block length.
pub const BLOCK_LEN: usize = 16;
/// Associated data must be shorter than this (SP 800-38C §A.2.2, two-octet encoding).
pub const MAX_AAD_LEN: usize = 0xff00;

/// Why a CCM operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CcmError<E> {
    /// Nonce, tag or length outside the supported parameters.
    InvalidParameters,
    /// The tag did not verify; the payload buffer has been zeroized.
    Authentication,
    /// The block function failed; the payload buffer holds no plaintext of a failed decryption.
    Cipher(E),
}

/// The running CBC-MAC state `X` and how many bytes of the current block are absorbed.
/// Zeroized on drop: it is a function of the plaintext.
struct CbcMac {
    x: [u8; BLOCK_LEN],
    filled: usize,
}

impl CbcMac {
    fn absorb<E>(
        &mut self,
        encrypt: &mut impl FnMut(&mut [u8; BLOCK_LEN]) -> Result<(), E>,
        bytes: &[u8],
    ) -> Result<(), E> {
        for byte in bytes {
            self.x[self.filled] ^= byte;
            self.filled += 1;
            if self.filled == BLOCK_LEN {
                encrypt(&mut self.x)?;
                self.filled = 0;
            }
        }
        Ok(())
    }

    /// Zero-pads the current block, if any bytes are in it, and encrypts it.
    fn pad<E>(
        &mut self,
        encrypt: &mut impl FnMut(&mut [u8; BLOCK_LEN]) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.filled > 0 {
            encrypt(&mut self.x)?;
            self.filled = 0;
        }
        Ok(())
    }
}

impl Drop for CbcMac {
    fn drop(&mut self) {
        self.x.zeroize();
    }
}

struct Params {
    q: usize,
    tag_len: usize,
}

fn check<E>(
    nonce: &[u8],
    aad: &[u8],
    payload_len: usize,
    tag_len: usize,
) -> Result<Params, CcmError<E>> {
    if !(7..=13).contains(&nonce.len())
        || !(4..=16).contains(&tag_len)
        || !tag_len.is_multiple_of(2)
        || aad.len() >= MAX_AAD_LEN
    {
        return Err(CcmError::InvalidParameters);
    }
    let q = 15 - nonce.len();
    // The payload length must fit in q bytes.
    if q < core::mem::size_of::<usize>() && (payload_len >> (8 * q)) != 0 {
        return Err(CcmError::InvalidParameters);
    }
    Ok(Params { q, tag_len })
}

/// Writes `value` big-endian into all of `out`.
fn put_be(out: &mut [u8], mut value: usize) {
    for byte in out.iter_mut().rev() {
        *byte = value as u8;
        value = value.checked_shr(8).unwrap_or(0);
    }
}

/// The counter block `A_i` of SP 800-38C §A.3: flags `q − 1`, the nonce, `i` in q bytes.
fn counter_block(nonce: &[u8], q: usize, index: usize) -> [u8; BLOCK_LEN] {
    let mut block = [0u8; BLOCK_LEN];
    block[0] = (q - 1) as u8;
    block[1..1 + nonce.len()].copy_from_slice(nonce);
    put_be(&mut block[BLOCK_LEN - q..], index);
    block
}

/// The unmasked tag `T` (SP 800-38C §6.1 steps 1–4), over the plaintext `payload`.
fn cbc_mac<E>(
    encrypt: &mut impl FnMut(&mut [u8; BLOCK_LEN]) -> Result<(), E>,
    nonce: &[u8],
    aad: &[u8],
    payload: &[u8],
    params: &Params,
    tag: &mut [u8; BLOCK_LEN],
) -> Result<(), E> {
    // B0: flags ‖ N ‖ Q (SP 800-38C §A.2.1).
    let mut b0 = [0u8; BLOCK_LEN];
    let adata = u8::from(!aad.is_empty());
    b0[0] = (adata << 6) | ((((params.tag_len - 2) / 2) as u8) << 3) | ((params.q - 1) as u8);
    b0[1..1 + nonce.len()].copy_from_slice(nonce);
    put_be(&mut b0[BLOCK_LEN - params.q..], payload.len());

    let mut mac = CbcMac {
        x: [0; BLOCK_LEN],
        filled: 0,
    };
    mac.absorb(encrypt, &b0)?;
    if !aad.is_empty() {
        // Two-octet length encoding of a (SP 800-38C §A.2.2), then a, zero-padded.
        let mut length = [0u8; 2];
        put_be(&mut length, aad.len());
        mac.absorb(encrypt, &length)?;
        mac.absorb(encrypt, aad)?;
        mac.pad(encrypt)?;
    }
    mac.absorb(encrypt, payload)?;
    mac.pad(encrypt)?;
    tag.copy_from_slice(&mac.x);
    Ok(())
}

/// XORs the key stream `S_1, S_2, …` (SP 800-38C §6.1 steps 6–8) into `payload` in place.
fn ctr_xor<E>(
    encrypt: &mut impl FnMut(&mut [u8; BLOCK_LEN]) -> Result<(), E>,
    nonce: &[u8],
    q: usize,
    payload: &mut [u8],
) -> Result<(), E> {
    let mut stream = [0u8; BLOCK_LEN];
    let mut result = Ok(());
    for (index, chunk) in payload.chunks_mut(BLOCK_LEN).enumerate() {
        stream = counter_block(nonce, q, index + 1);
        if let Err(error) = encrypt(&mut stream) {
            result = Err(error);
            break;
        }
        for (byte, key) in chunk.iter_mut().zip(stream.iter()) {
            *byte ^= key;
        }
    }
    stream.zeroize();
    result
}

/// CCM generation-encryption (SP 800-38C §6.1): encrypts `payload` in place and writes the tag
/// (`tag.len()` bytes) into `tag`.
///
/// # Errors
///
/// [`CcmError::InvalidParameters`] before any block is encrypted; [`CcmError::Cipher`] if the
/// block function fails (the payload is then in an unspecified, partly encrypted state).
pub fn seal<E>(
    encrypt: &mut impl FnMut(&mut [u8; BLOCK_LEN]) -> Result<(), E>,
    nonce: &[u8],
    aad: &[u8],
    payload: &mut [u8],
    tag: &mut [u8],
) -> Result<(), CcmError<E>> {
    let params = check(nonce, aad, payload.len(), tag.len())?;
    let mut t = [0u8; BLOCK_LEN];
    let mut s0 = counter_block(nonce, params.q, 0);
    let result = (|| {
        cbc_mac(encrypt, nonce, aad, payload, &params, &mut t)?;
        encrypt(&mut s0)?;
        ctr_xor(encrypt, nonce, params.q, payload)
    })();
    if result.is_ok() {
        for ((out, t), s) in tag.iter_mut().zip(t.iter()).zip(s0.iter()) {
            *out = t ^ s;
        }
    }
    t.zeroize();
    s0.zeroize();
    result.map_err(CcmError::Cipher)
}

/// CCM decryption-verification (SP 800-38C §6.2): decrypts `payload` in place and checks `tag`.
///
/// # Errors
///
/// [`CcmError::InvalidParameters`]; [`CcmError::Authentication`] if the tag does not verify and
/// [`CcmError::Cipher`] if the block function fails — in both cases `payload` is zeroized, so no
/// unauthenticated plaintext is ever left to the caller.
pub fn open<E>(
    encrypt: &mut impl FnMut(&mut [u8; BLOCK_LEN]) -> Result<(), E>,
    nonce: &[u8],
    aad: &[u8],
    payload: &mut [u8],
    tag: &[u8],
) -> Result<(), CcmError<E>> {
    let params = check(nonce, aad, payload.len(), tag.len())?;
    let mut t = [0u8; BLOCK_LEN];
    let mut s0 = counter_block(nonce, params.q, 0);
    let result = (|| {
        encrypt(&mut s0)?;
        ctr_xor(encrypt, nonce, params.q, payload)?;
        cbc_mac(encrypt, nonce, aad, payload, &params, &mut t)
    })();
    let outcome = match result {
        Ok(()) => {
            for (t, s) in t.iter_mut().zip(s0.iter()) {
                *t ^= s;
            }
            if bool::from(t[..params.tag_len].ct_eq(tag)) {
                Ok(())
            } else {
                Err(CcmError::Authentication)
            }
        }
        Err(error) => Err(CcmError::Cipher(error)),
    };
    if outcome.is_err() {
        payload.zeroize();
    }
    t.zeroize();
    s0.zeroize();
    outcome
}

#[cfg(test)]
mod tests {
    extern crate std;

    use aes::Aes128;
    use aes::cipher::{BlockCipherEncrypt, KeyInit};
    use hex_literal::hex;
    use std::vec::Vec;

    use super::*;

    fn software(key: [u8; 16]) -> impl FnMut(&mut [u8; BLOCK_LEN]) -> Result<(), ()> {
        let cipher = Aes128::new(&key.into());
        move |block| {
            cipher.encrypt_block(block.into());
            Ok(())
        }
    }

    /// (key, nonce, aad, plaintext, ciphertext ‖ tag, tag length)
    type Vector = (
        [u8; 16],
        &'static [u8],
        &'static [u8],
        &'static [u8],
        &'static [u8],
        usize,
    );

    const RFC3610_KEY: [u8; 16] = hex!("C0C1C2C3C4C5C6C7C8C9CACBCCCDCECF");
    const SP800_38C_KEY: [u8; 16] = hex!("404142434445464748494a4b4c4d4e4f");

    const VECTORS: [Vector; 6] = [
        // RFC 3610 §8, Packet Vector #1 (M = 8, L = 2; the first 8 packet octets are the header).
        (
            RFC3610_KEY,
            &hex!("00000003020100A0A1A2A3A4A5"),
            &hex!("0001020304050607"),
            &hex!("08090A0B0C0D0E0F101112131415161718191A1B1C1D1E"),
            &hex!("588C979A61C663D2F066D0C2C0F989806D5F6B61DAC38417E8D12CFDF926E0"),
            8,
        ),
        // RFC 3610 §8, Packet Vector #2.
        (
            RFC3610_KEY,
            &hex!("00000004030201A0A1A2A3A4A5"),
            &hex!("0001020304050607"),
            &hex!("08090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"),
            &hex!("72C91A36E135F8CF291CA894085C87E3CC15C439C9E43A3BA091D56E10400916"),
            8,
        ),
        // RFC 3610 §8, Packet Vector #3.
        (
            RFC3610_KEY,
            &hex!("00000005040302A0A1A2A3A4A5"),
            &hex!("0001020304050607"),
            &hex!("08090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F20"),
            &hex!("51B1E5F44A197D1DA46B0F8E2D282AE871E838BB64DA8596574ADAA76FBD9FB0C5"),
            8,
        ),
        // NIST SP 800-38C Appendix C.1, Example 1 (Tlen = 32, Nlen = 56).
        (
            SP800_38C_KEY,
            &hex!("10111213141516"),
            &hex!("0001020304050607"),
            &hex!("20212223"),
            &hex!("7162015b4dac255d"),
            4,
        ),
        // NIST SP 800-38C Appendix C.2, Example 2 (Tlen = 48, Nlen = 64).
        (
            SP800_38C_KEY,
            &hex!("1011121314151617"),
            &hex!("000102030405060708090a0b0c0d0e0f"),
            &hex!("202122232425262728292a2b2c2d2e2f"),
            &hex!("d2a1f0e051ea5f62081a7792073d593d1fc64fbfaccd"),
            6,
        ),
        // NIST SP 800-38C Appendix C.3, Example 3 (Tlen = 64, Nlen = 96).
        (
            SP800_38C_KEY,
            &hex!("101112131415161718191a1b"),
            &hex!("000102030405060708090a0b0c0d0e0f10111213"),
            &hex!("202122232425262728292a2b2c2d2e2f3031323334353637"),
            &hex!("e3b201a9f5b71a7a9b1ceaeccd97e70b6176aad9a4428aa5484392fbc1b09951"),
            8,
        ),
    ];

    #[test]
    fn known_answers() {
        for (index, (key, nonce, aad, plaintext, expected, tag_len)) in VECTORS.iter().enumerate() {
            let mut block = software(*key);
            let mut payload = plaintext.to_vec();
            let mut tag = std::vec![0u8; *tag_len];
            seal(&mut block, nonce, aad, &mut payload, &mut tag).unwrap();
            let mut sealed = payload.clone();
            sealed.extend_from_slice(&tag);
            assert_eq!(&sealed[..], *expected, "vector {index}: seal");

            open(&mut block, nonce, aad, &mut payload, &tag).unwrap();
            assert_eq!(&payload[..], *plaintext, "vector {index}: open");

            let (ciphertext, tag) = expected.split_at(plaintext.len());
            for flip in [0, ciphertext.len() - 1] {
                let mut tampered = ciphertext.to_vec();
                tampered[flip] ^= 0x80;
                assert_eq!(
                    open(&mut block, nonce, aad, &mut tampered, tag),
                    Err(CcmError::Authentication),
                    "vector {index}: tampered payload"
                );
                assert!(tampered.iter().all(|&b| b == 0), "zeroized on failure");
            }
            let mut wrong_aad = aad.to_vec();
            wrong_aad[0] ^= 1;
            let mut copy = ciphertext.to_vec();
            assert_eq!(
                open(&mut block, nonce, &wrong_aad, &mut copy, tag),
                Err(CcmError::Authentication),
                "vector {index}: tampered associated data"
            );
        }
    }

    #[test]
    fn agrees_with_rustcrypto_ccm() {
        use ccm::aead::array::typenum::{U13, U16};
        use ccm::aead::{AeadInOut, KeyInit as _};
        type Reference = ccm::Ccm<Aes128, U16, U13>;

        let key = [0x5au8; 16];
        let reference = Reference::new(&key.into());
        let mut block = software(key);
        for len in [0usize, 1, 15, 16, 17, 176, 200] {
            let nonce = [len as u8; 13];
            let aad: Vec<u8> = (0..(len % 40) as u8).collect();
            let plaintext: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut ours = plaintext.clone();
            let mut tag = [0u8; 16];
            seal(&mut block, &nonce, &aad, &mut ours, &mut tag).unwrap();
            let mut theirs = plaintext.clone();
            let their_tag = reference
                .encrypt_inout_detached(&nonce.into(), &aad, theirs.as_mut_slice().into())
                .unwrap();
            assert_eq!(ours, theirs, "ciphertext, len {len}");
            assert_eq!(&tag[..], &their_tag[..], "tag, len {len}");
        }
    }

    #[test]
    fn parameters_refused() {
        let mut block = software([0; 16]);
        let mut payload = [0u8; 4];
        let mut tag = [0u8; 16];
        for (nonce_len, tag_len) in [(6, 16), (14, 16), (13, 3), (13, 5), (13, 18), (13, 2)] {
            let nonce = [0u8; 14];
            let tag = &mut tag[..tag_len.min(16)];
            if tag_len > 16 {
                let mut long = [0u8; 18];
                assert_eq!(
                    seal(
                        &mut block,
                        &nonce[..nonce_len],
                        &[],
                        &mut payload,
                        &mut long
                    ),
                    Err(CcmError::InvalidParameters)
                );
                continue;
            }
            assert_eq!(
                seal(&mut block, &nonce[..nonce_len], &[], &mut payload, tag),
                Err(CcmError::InvalidParameters),
                "nonce {nonce_len}, tag {tag_len}"
            );
        }
        // q = 2 allows payloads below 2^16 bytes only.
        let mut big = std::vec![0u8; 1 << 16];
        assert_eq!(
            seal(&mut block, &[0; 13], &[], &mut big, &mut tag),
            Err(CcmError::InvalidParameters)
        );
    }

    #[test]
    fn cipher_failure_leaves_no_plaintext() {
        let key = [9u8; 16];
        let mut good = software(key);
        let mut payload = [0x33u8; 40];
        let mut tag = [0u8; 16];
        seal(&mut good, &[1; 13], b"hdr", &mut payload, &mut tag).unwrap();
        // Fail at every possible block of the decryption.
        for fail_at in 0..8 {
            let mut calls = 0;
            let mut failing = {
                let mut inner = software(key);
                move |block: &mut [u8; 16]| {
                    calls += 1;
                    if calls > fail_at {
                        Err(())
                    } else {
                        inner(block)
                    }
                }
            };
            let mut copy = payload;
            let outcome = open(&mut failing, &[1; 13], b"hdr", &mut copy, &tag);
            if outcome.is_err() {
                assert_eq!(outcome, Err(CcmError::Cipher(())));
                assert_eq!(copy, [0; 40], "fail at block {fail_at}");
            }
        }
    }
}
