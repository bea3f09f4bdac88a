//! The values of PROTOCOL.md §11 that the device side needs, copied verbatim from its tables
//! §11.1 (LoRaWAN 1.0.x) and §11.3 (LoRaWAN 1.1); the run script checks that every hex string
//! below still appears in PROTOCOL.md.

/// DevEUI of the run, most significant byte first.
pub const DEV_EUI: [u8; 8] = hex("70b3d57ed0000001");
/// JoinEUI of the run, most significant byte first.
pub const JOIN_EUI: [u8; 8] = hex("70b3d57ed0000000");
/// The session number of the previous run: the run of §11 is S = 5.
pub const LAST_SESSION: u8 = 4;
/// The session number the run must start.
pub const SESSION: u8 = 5;
/// The maximum application payload of every uplink of §11.1 and §11.3 (EU868 DR0).
pub const N: usize = 51;

/// Device identity private key.
pub const DEVICE_IDENTITY_PRIVATE: [u8; 48] = hex(
    "1f1111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111",
);
/// Device identity public key.
pub const DEVICE_IDENTITY_PUBLIC: [u8; 49] = hex(
    "02b4bb82496e61a844cce7288f17bb019fa56614aa63981ec7f8ba3607dd990cbd6f6c30d9e001c1adf7036088c6565534",
);
/// Server signing public key: the key the device pins.
pub const SERVER_PUBLIC: [u8; 49] = hex(
    "030024327dbe3554e4b4ea021645db675f6ea2d8a35dddf428b002263b6c3d47d725b5732dc54064c7ffb50230962810d5",
);
/// Device ephemeral private key.
pub const DEVICE_EPHEMERAL_PRIVATE: [u8; 48] = hex(
    "1f3333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333",
);
/// The AppKey the LoRaWAN 1.0.x run derives.
pub const APP_KEY: [u8; 16] = hex("cd5d5ebd3e4cf627059c70513563f795");

/// U1 PubKeyReq (the same in both runs: it carries only EPH_D).
pub const U1: [u8; 51] = hex(
    "0115026d4b55493558eb7623455640c2db2bdcacd450eccaaa3e2b4cc949583f299a1965a2539b636eb9b6918980d2c937094b",
);
/// D1 PubKeyAns P0 (the same in both runs: it carries only EPH_S).
pub const D1: [u8; 51] = hex(
    "021402e4b4ea58ce08c539f7964a4ee974311968ab7ad9261dbc61e04f629204cf22422f347a170b251318f94aaf9fc7ce7711",
);
/// U2 SigVerifyReq C=0, LoRaWAN 1.0.x.
pub const U2: [u8; 50] = hex(
    "031428558b643acf5aecbc8af807cf38a379d5ab8daa7bb8c30e9c3aee492f32e5b9c0ca1801a414a066193522412f063fb7",
);
/// D2 PubKeyAns P1, LoRaWAN 1.0.x.
pub const D2: [u8; 51] = hex(
    "0215d30a3768442ed9965f11a5e691e5f711552130f8d9710f66e4b4949f16336b8ca5b4bbe3d9c5bce0f32360842137deb6a1",
);
/// U3 SigVerifyReq C=1 + KeyChangeReq, LoRaWAN 1.0.x.
pub const U3: [u8; 51] = hex(
    "03177d96186fc8d5fe741fb95cebb6f18b0175af609f827ef9002ad78d943ab5e117f1fc57c00b5b05cf0d91284f37c3621605",
);
/// D3 SigVerifyAns + PubKeyAns P2, LoRaWAN 1.0.x.
pub const D3: [u8; 51] = hex(
    "04140216e1d92d0e83da069296df1795d18d1d1dc0639c5d0fefa9bdb0a3fbee05aaebcf93f929ec883e968612d811842abb79",
);

/// The AppKey the LoRaWAN 1.1 run derives (§11.3).
pub const APP_KEY_1_1: [u8; 16] = hex("3c55ca7a2bd5d2123cf0332f3c3eae52");
/// The NwkKey the LoRaWAN 1.1 run derives (§11.3).
pub const NWK_KEY_1_1: [u8; 16] = hex("65739f4aa55dfc3890fbf10242aa5b24");
/// U2 SigVerifyReq C=0, LoRaWAN 1.1.
pub const U2_1_1: [u8; 50] = hex(
    "03143f036f3c77c5f3cabd3cf457e0c072537539dba6f25a49d4e197b5c9b4b858be0034cb053874a86aa2cba96b529c7b44",
);
/// D2 PubKeyAns P1, LoRaWAN 1.1.
pub const D2_1_1: [u8; 51] = hex(
    "021594da32295132f1bdffbe858d2da44e82c9dc9d7b3eaac13b2105f94d0426b54f0b8ad7614312c6da6bd72ab38f944efcc0",
);
/// U3 SigVerifyReq C=1 + KeyChangeReq, LoRaWAN 1.1.
pub const U3_1_1: [u8; 51] = hex(
    "0317cac5a4477b568666c36c1048d20a9276cdc293c8645abf6239f83cca37d9113649e8834a6d97434d29ef77d2ec27f24505",
);
/// D3 SigVerifyAns + PubKeyAns P2, LoRaWAN 1.1.
pub const D3_1_1: [u8; 51] = hex(
    "04140216809bc88976e5fbbbb9f530e71f15c1934893706ff6de9b6f94226cf329c06a5cbb22e6848b6e6d5e983eb907058e0b",
);

/// Decodes a hex literal of exactly `2 * N` digits. Only ever evaluated in `const` items, so a
/// malformed literal is a build error, never a run-time panic.
#[allow(clippy::panic)]
const fn hex<const N: usize>(s: &str) -> [u8; N] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not a lower-case hex digit"),
        }
    }
    let s = s.as_bytes();
    if s.len() != 2 * N {
        panic!("hex literal of the wrong length");
    }
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = (nibble(s[2 * i]) << 4) | nibble(s[2 * i + 1]);
        i += 1;
    }
    out
}
