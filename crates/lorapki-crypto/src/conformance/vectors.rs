//! Known answers copied from the standards.

use hex_literal::hex;

use super::Report;
use crate::{AesBackend, AesKey, CryptoBackend, KeyImport, KeySlot, PublicKey, Secret, Signature};

/// SHA-384 against the examples of FIPS 180-4 (NIST CSRC "Examples with intermediate values",
/// SHA-384): the one-block message "abc" and the two-block 112-byte message; plus the empty
/// message and one million 'a' (FIPS 180-2 Appendix D.3 / NIST test vectors).
pub fn sha384_fips180<B: CryptoBackend>(backend: &mut B) -> Report {
    let two_block: &[u8] = b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn\
hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    assert_eq!(two_block.len(), 112);
    let million_a = std::vec![b'a'; 1_000_000];
    let cases: [(&str, &[u8], [u8; 48]); 4] = [
        (
            "abc",
            b"abc",
            hex!(
                "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed"
                "8086072ba1e7cc2358baeca134c825a7"
            ),
        ),
        (
            "two-block 112-byte message",
            two_block,
            hex!(
                "09330c33f71147e83d192fc782cd1b4753111b173b3b05d22fa08086e3b0f712"
                "fcc7c71a557e2db966c3e9fa91746039"
            ),
        ),
        (
            "empty message",
            b"",
            hex!(
                "38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da"
                "274edebfe76f65fbd51ad2f14898b95b"
            ),
        ),
        (
            "one million 'a'",
            &million_a,
            hex!(
                "9d0e1809716474cb086e834e310a4a1ced149e9c00f248527972cec5704c2a5b"
                "07b8b3dc38ecc4ebae97ddd87f3d8985"
            ),
        ),
    ];
    let mut report = Report::new("SHA-384 FIPS 180 examples");
    for (name, message, expected) in cases {
        assert_eq!(
            backend.sha384_digest(message),
            expected,
            "SHA-384 of {name}"
        );
        report.pass();
    }
    report
}

/// AES-128 single-block encryption against FIPS 197 Appendix B (the cipher example) and
/// Appendix C.1 (the AES-128 example vector).
pub fn aes128_fips197<B: AesBackend>(backend: &mut B) -> Report {
    let cases = [
        (
            "FIPS 197 Appendix B",
            hex!("2b7e151628aed2a6abf7158809cf4f3c"),
            hex!("3243f6a8885a308d313198a2e0370734"),
            hex!("3925841d02dc09fbdc118597196a0b32"),
        ),
        (
            "FIPS 197 Appendix C.1",
            hex!("000102030405060708090a0b0c0d0e0f"),
            hex!("00112233445566778899aabbccddeeff"),
            hex!("69c4e0d86a7b0430d8cdb78070b4c55a"),
        ),
    ];
    let mut report = Report::new("AES-128 FIPS 197");
    for (name, key, plaintext, ciphertext) in cases {
        let mut block = plaintext;
        backend
            .aes128_encrypt_block(&AesKey::from_array(key), &mut block)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(block, ciphertext, "{name}");
        report.pass();
    }
    report
}

/// The key of RFC 4493 §4.
pub(crate) const RFC4493_KEY: [u8; 16] = hex!("2b7e151628aed2a6abf7158809cf4f3c");

/// The 64-byte message of RFC 4493 §4 Example 4; Examples 1 to 3 are its prefixes of 0, 16 and
/// 40 bytes.
const RFC4493_MESSAGE: [u8; 64] = hex!(
    "6bc1bee22e409f96e93d7e117393172a"
    "ae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52ef"
    "f69f2445df4f9b17ad2b417be66c3710"
);

/// RFC 4493 §4 Examples 1 to 4: (message length, tag).
pub const AES_CMAC_RFC4493_CASES: [(usize, [u8; 16]); 4] = [
    (0, hex!("bb1d6929e95937287fa37d129b756746")),
    (16, hex!("070a16b46b4d4144f79bdd9dd04a287c")),
    (40, hex!("dfa66747de9ae63030ca32611497c827")),
    (64, hex!("51f0bebf7e3b9d92fc49741779363cfe")),
];

/// AES-CMAC against RFC 4493 §4 (all four message lengths, and the subkey-generation block
/// `L = AES-128(K, 0^128)` of §4), each message also fed in two parts.
pub fn aes_cmac_rfc4493<B: AesBackend>(backend: &mut B) -> Report {
    let key = AesKey::from_array(RFC4493_KEY);
    let mut report = Report::new("AES-CMAC RFC 4493");

    let mut l = [0u8; 16];
    backend.aes128_encrypt_block(&key, &mut l).unwrap();
    assert_eq!(
        l,
        hex!("7df76b0c1ab899b33e42f047b91b546f"),
        "RFC 4493 §4 subkey L"
    );
    report.pass();

    for (len, tag) in AES_CMAC_RFC4493_CASES {
        let message = &RFC4493_MESSAGE[..len];
        let whole = backend.aes128_cmac(&key, &[message]).unwrap();
        assert_eq!(whole, tag, "RFC 4493 AES-CMAC, {len}-byte message");
        let (head, tail) = message.split_at(len / 3);
        let parts = backend.aes128_cmac(&key, &[head, &[], tail]).unwrap();
        assert_eq!(parts, tag, "RFC 4493 AES-CMAC, {len}-byte message in parts");
        report.pass();
    }
    report
}

/// RFC 6979 Appendix A.2.6: the P-384 private key `x` and public key `(Ux, Uy)`.
const RFC6979_X: [u8; 48] = hex!(
    "6B9D3DAD2E1B8C1C05B19875B6659F4DE23C3B667BF297BA9AA47740787137D8"
    "96D5724E4C70A825F872C9EA60D2EDF5"
);
const RFC6979_UX: [u8; 48] = hex!(
    "EC3A4E415B4E19A4568618029F427FA5DA9A8BC4AE92E02E06AAE5286B300C64"
    "DEF8F0EA9055866064A254515480BC13"
);
const RFC6979_UY: [u8; 48] = hex!(
    "8015D9B72D7D57244EA8EF9AC0C621896708A59367F9DFB9F54CA84B3F1C9DB1"
    "288B231C3AE0D4FE7344FD2533264720"
);

/// RFC 6979 Appendix A.2.6, "With SHA-384": (message, r, s).
const RFC6979_SHA384_CASES: [(&[u8], [u8; 48], [u8; 48]); 2] = [
    (
        b"sample",
        hex!(
            "94EDBB92A5ECB8AAD4736E56C691916B3F88140666CE9FA73D64C4EA95AD133C"
            "81A648152E44ACF96E36DD1E80FABE46"
        ),
        hex!(
            "99EF4AEB15F178CEA1FE40DB2603138F130E740A19624526203B6351D0A3A94F"
            "A329C145786E679E7B82C71A38628AC8"
        ),
    ),
    (
        b"test",
        hex!(
            "8203B63D3C853E8D77227FB377BCF7B7B772E97892A80F36AB775D509D7A5FEB"
            "0542A7F0812998DA8F1DD3CA3CF023DB"
        ),
        hex!(
            "DDD0760448D42D8A43AF45AF836FCE4DE8BE06B485E9B61B827C2F13173923E0"
            "6A739F040649A667BF3B828246BAA5A5"
        ),
    ),
];

/// Deterministic ECDSA P-384/SHA-384 against RFC 6979 Appendix A.2.6: the public key of the
/// imported private key, and the signatures of "sample" and "test" (which must also verify).
/// Erases `slot` before and after.
pub fn ecdsa_rfc6979_p384_sha384<B: KeyImport>(backend: &mut B, slot: KeySlot) -> Report {
    let mut report = Report::new("ECDSA P-384/SHA-384 RFC 6979 A.2.6");
    backend.identity_erase(slot).unwrap();
    let public = backend
        .identity_import(slot, &Secret::from_array(RFC6979_X))
        .expect("import of the RFC 6979 A.2.6 private key");

    let mut uncompressed = [0u8; 97];
    uncompressed[0] = 0x04;
    uncompressed[1..49].copy_from_slice(&RFC6979_UX);
    uncompressed[49..].copy_from_slice(&RFC6979_UY);
    assert_eq!(
        backend.identity_public_key_uncompressed(slot).unwrap(),
        uncompressed,
        "RFC 6979 A.2.6 public key (Ux, Uy)"
    );
    assert_eq!(
        public,
        PublicKey::from_uncompressed_unchecked(&uncompressed).unwrap(),
        "RFC 6979 A.2.6 public key, compressed"
    );
    assert_eq!(backend.identity_public_key(slot).unwrap(), public);
    report.pass();

    for (message, r, s) in RFC6979_SHA384_CASES {
        let name = std::string::String::from_utf8_lossy(message);
        let signature = backend.identity_sign(slot, message).unwrap();
        assert_eq!(
            signature,
            Signature::from_scalars(&r, &s),
            "RFC 6979 A.2.6 SHA-384 signature of {name:?}"
        );
        backend
            .ecdsa_verify(&public, message, &signature)
            .unwrap_or_else(|error| panic!("RFC 6979 signature of {name:?} must verify: {error}"));
        report.pass();
    }
    backend.identity_erase(slot).unwrap();
    report
}
