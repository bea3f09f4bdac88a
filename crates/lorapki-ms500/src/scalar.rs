//! P-384 scalar range checks and key-pair candidate selection, in constant time.
//!
//! The engine checks scalars too; the backend checks them first so that its behaviour does not
//! depend on how strict a particular engine is.

use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::engine::P384_LEN;

/// The order `n` of the P-384 group (SP 800-186 §3.2.1.4).
pub(crate) const P384_ORDER: [u8; P384_LEN] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf,
    0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
];

/// `a < b` for 48-byte big-endian integers, in constant time (the borrow of `a - b`).
fn less_than(a: &[u8; P384_LEN], b: &[u8; P384_LEN]) -> Choice {
    let mut borrow = 0u16;
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        let difference = u16::from(*x)
            .wrapping_sub(u16::from(*y))
            .wrapping_sub(borrow);
        borrow = (difference >> 8) & 1;
    }
    Choice::from(borrow as u8)
}

fn is_zero(a: &[u8; P384_LEN]) -> Choice {
    a[..].ct_eq(&[0u8; P384_LEN][..])
}

/// `0 < value < n`: a valid private scalar, or a valid ECDSA `r` or `s`.
pub(crate) fn in_range(value: &[u8; P384_LEN]) -> bool {
    (!is_zero(value) & less_than(value, &P384_ORDER)).into()
}

/// FIPS 186-5 Appendix A.2.2 (ECDSA key pair generation by rejection sampling), steps 4–6:
/// turns the candidate `c` (384 random bits) in place into `d = c + 1` when `c ≤ n − 2`, and
/// returns whether it did. On `false` the caller draws a new candidate (probability about
/// 2^-190 for P-384).
pub(crate) fn candidate_to_private(candidate: &mut [u8; P384_LEN]) -> bool {
    // c ≤ n − 2  ⇔  c + 1 < n, and c + 1 does not overflow 384 bits (c = 2^384 − 1 > n − 2).
    let mut incremented = *candidate;
    let mut carry = 1u16;
    for byte in incremented.iter_mut().rev() {
        let sum = u16::from(*byte) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    let no_overflow = Choice::from((carry as u8) ^ 1);
    let accept = no_overflow & less_than(&incremented, &P384_ORDER);
    for (out, new) in candidate.iter_mut().zip(incremented.iter()) {
        *out = u8::conditional_select(out, new, accept);
    }
    zeroize::Zeroize::zeroize(&mut incremented);
    accept.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order_minus(k: u8) -> [u8; P384_LEN] {
        let mut value = P384_ORDER;
        let last = value[P384_LEN - 1];
        value[P384_LEN - 1] = last - k;
        value
    }

    #[test]
    fn range_boundaries() {
        let mut one = [0u8; P384_LEN];
        one[P384_LEN - 1] = 1;
        assert!(in_range(&one));
        assert!(in_range(&order_minus(1)));
        assert!(!in_range(&[0; P384_LEN]));
        assert!(!in_range(&P384_ORDER));
        assert!(!in_range(&[0xff; P384_LEN]));
    }

    #[test]
    fn candidates() {
        // c = 0 → d = 1.
        let mut c = [0u8; P384_LEN];
        assert!(candidate_to_private(&mut c));
        let mut one = [0u8; P384_LEN];
        one[P384_LEN - 1] = 1;
        assert_eq!(c, one);
        // c = n − 2 → d = n − 1 (the largest).
        let mut c = order_minus(2);
        assert!(candidate_to_private(&mut c));
        assert_eq!(c, order_minus(1));
        // c = n − 1 and c = 2^384 − 1 are rejected and left alone.
        for rejected in [order_minus(1), [0xff; P384_LEN]] {
            let mut c = rejected;
            assert!(!candidate_to_private(&mut c));
            assert_eq!(c, rejected);
        }
        // A carry through many bytes: c = 0x00..00ff..ff.
        let mut c = [0u8; P384_LEN];
        c[40..].fill(0xff);
        assert!(candidate_to_private(&mut c));
        let mut expected = [0u8; P384_LEN];
        expected[39] = 1;
        assert_eq!(c, expected);
    }
}
