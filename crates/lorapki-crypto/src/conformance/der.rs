//! Just enough strict DER (X.690) for the test sets: ECDSA-Sig-Value and P-384
//! SubjectPublicKeyInfo. Strict means distinguished: minimal lengths and integers, no trailing
//! bytes, so that BER-only encodings, which Wycheproof lists as invalid, are refused.

use std::vec::Vec;

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_SEQUENCE: u8 = 0x30;

/// `AlgorithmIdentifier { id-ecPublicKey (1.2.840.10045.2.1), secp384r1 (1.3.132.0.34) }`,
/// RFC 5480 §2.1.1 and §2.1.1.1, as DER.
const P384_ALGORITHM_ID: [u8; 18] = [
    0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04,
    0x00, 0x22,
];

/// Reads one tag-length-value with the expected tag; returns the value and the rest.
fn read_tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len_byte, rest) = rest.split_first()?;
    let (len, rest) = match len_byte {
        0..=0x7f => (usize::from(len_byte), rest),
        0x81 => {
            let (&len, rest) = rest.split_first()?;
            // Distinguished: the short form must be used when it can.
            if len < 0x80 {
                return None;
            }
            (usize::from(len), rest)
        }
        0x82 => {
            let (len, rest) = rest.split_at_checked(2)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            if len < 0x100 {
                return None;
            }
            (len, rest)
        }
        _ => return None,
    };
    rest.split_at_checked(len)
}

/// A DER INTEGER that must be positive, minimally encoded and at most 48 bytes of magnitude.
fn read_scalar(input: &[u8]) -> Option<([u8; 48], &[u8])> {
    let (value, rest) = read_tlv(input, TAG_INTEGER)?;
    match value {
        [] => None,
        [first, ..] if first & 0x80 != 0 => None,
        [0, second, ..] if second & 0x80 == 0 => None,
        _ => Some((super::be_to_48(value)?, rest)),
    }
}

/// Converts a DER `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` (RFC 3279 §2.2.3)
/// into `r ‖ s`; `None` for anything that is not strict DER or whose integers do not fit.
#[must_use]
pub fn der_signature_to_p1363(der: &[u8]) -> Option<[u8; 96]> {
    let (body, rest) = read_tlv(der, TAG_SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let (r, body) = read_scalar(body)?;
    let (s, body) = read_scalar(body)?;
    if !body.is_empty() {
        return None;
    }
    let mut out = [0u8; 96];
    out[..48].copy_from_slice(&r);
    out[48..].copy_from_slice(&s);
    Some(out)
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => out.push(short),
        Ok(long) => out.extend_from_slice(&[0x81, long]),
        Err(_) => {
            let len = u16::try_from(len).expect("DER value longer than 65535 bytes");
            out.push(0x82);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

fn push_unsigned_integer(out: &mut Vec<u8>, magnitude: &[u8]) {
    let first_nonzero = magnitude
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(magnitude.len());
    let mut value = Vec::with_capacity(magnitude.len() + 1);
    match magnitude[first_nonzero..].first() {
        None => value.push(0),
        Some(&top) => {
            if top & 0x80 != 0 {
                value.push(0);
            }
            value.extend_from_slice(&magnitude[first_nonzero..]);
        }
    }
    out.push(TAG_INTEGER);
    push_len(out, value.len());
    out.extend_from_slice(&value);
}

/// Encodes `r ‖ s` as a DER `ECDSA-Sig-Value` (RFC 3279 §2.2.3), e.g. for OpenSSL.
#[must_use]
pub fn p1363_to_der_signature(signature: &[u8; 96]) -> Vec<u8> {
    let mut body = Vec::with_capacity(102);
    push_unsigned_integer(&mut body, &signature[..48]);
    push_unsigned_integer(&mut body, &signature[48..]);
    let mut out = Vec::with_capacity(body.len() + 3);
    out.push(TAG_SEQUENCE);
    push_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// The SEC1 point inside a DER SubjectPublicKeyInfo whose algorithm is exactly
/// id-ecPublicKey with the named curve secp384r1 (RFC 5480 §2); `None` for anything else
/// (explicit curve parameters, another curve, malformed or trailing bytes).
#[must_use]
pub fn spki_p384_point(spki: &[u8]) -> Option<&[u8]> {
    let (body, rest) = read_tlv(spki, TAG_SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let body = body.strip_prefix(&P384_ALGORITHM_ID[..])?;
    let (bits, rest) = read_tlv(body, TAG_BIT_STRING)?;
    if !rest.is_empty() {
        return None;
    }
    // No unused bits: a SEC1 point is a whole number of bytes.
    bits.strip_prefix(&[0u8][..])
}

/// A DER SubjectPublicKeyInfo (RFC 5480 §2) for a P-384 SEC1 point, e.g. for OpenSSL.
#[must_use]
pub fn spki_p384_der(point: &[u8]) -> Vec<u8> {
    let mut bits = Vec::with_capacity(point.len() + 1);
    bits.push(0);
    bits.extend_from_slice(point);
    let mut body = P384_ALGORITHM_ID.to_vec();
    body.push(TAG_BIT_STRING);
    push_len(&mut body, bits.len());
    body.extend_from_slice(&bits);
    let mut out = Vec::with_capacity(body.len() + 3);
    out.push(TAG_SEQUENCE);
    push_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trip_and_strictness() {
        let mut signature = [0u8; 96];
        signature[0] = 0x80; // r needs a leading zero byte in DER
        signature[95] = 0x01; // s is 1
        let der = p1363_to_der_signature(&signature);
        assert_eq!(der[..5], [0x30, 0x36, 0x02, 0x31, 0x00]);
        assert_eq!(der_signature_to_p1363(&der), Some(signature));

        let mut trailing = der.clone();
        trailing.push(0);
        assert_eq!(der_signature_to_p1363(&trailing), None);

        // s = 1 with a superfluous leading zero: BER, not DER.
        let mut padded = der[..der.len() - 3].to_vec();
        padded.extend_from_slice(&[0x02, 0x02, 0x00, 0x01]);
        padded[1] += 1;
        assert_eq!(der_signature_to_p1363(&padded), None);
    }

    #[test]
    fn spki_round_trip() {
        let point = [0x04u8; 97];
        let der = spki_p384_der(&point);
        assert_eq!(der[..4], [0x30, 0x76, 0x30, 0x10]);
        assert_eq!(spki_p384_point(&der), Some(&point[..]));
        assert_eq!(spki_p384_point(&der[..der.len() - 1]), None);
    }
}
