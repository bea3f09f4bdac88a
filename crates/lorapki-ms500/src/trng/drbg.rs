//! HMAC_DRBG with SHA-256, as specified in NIST SP 800-90A Rev. 1 §10.1.2.
//!
//! Security strength 256 bits (Table 2), above the 192 bits that P-384 keys need. Every input
//! (seed material, additional input) is given in parts that the algorithm concatenates, so that
//! no secret is copied into a temporary buffer.

use core::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

/// Output length of the hash: `outlen` = 256 bits.
const OUTLEN: usize = 32;
/// `reseed_interval` of this implementation: far below the 2^48 of SP 800-90A Table 2, so that
/// fresh entropy enters at least every this many requests.
pub const RESEED_INTERVAL: u64 = 1024;
/// `max_number_of_bits_per_request` of SP 800-90A Table 2 (2^19 bits), in bytes.
pub const MAX_REQUEST_BYTES: usize = 1 << 16;

/// Why a generate request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DrbgError {
    /// `reseed_counter` passed [`RESEED_INTERVAL`]: reseed first (SP 800-90A §10.1.2.5 step 1).
    ReseedRequired,
    /// More than [`MAX_REQUEST_BYTES`] requested at once.
    RequestTooLong,
}

/// The working state `(V, Key, reseed_counter)` of HMAC_DRBG (SP 800-90A §10.1.2.1).
/// Zeroized on drop; `Debug` is redacted.
pub struct HmacDrbg {
    v: [u8; OUTLEN],
    key: [u8; OUTLEN],
    reseed_counter: u64,
}

fn hmac(key: &[u8; OUTLEN], parts: &[&[u8]], out: &mut [u8; OUTLEN]) {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail here.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        unreachable!("HMAC takes a key of any length")
    };
    for part in parts {
        mac.update(part);
    }
    out.copy_from_slice(&mac.finalize().into_bytes());
}

impl HmacDrbg {
    /// HMAC_DRBG_Update (SP 800-90A §10.1.2.2) with `provided_data` given in parts.
    fn update(&mut self, provided_data: &[&[u8]]) {
        let provided = provided_data.iter().any(|part| !part.is_empty());
        let mut next_key = [0u8; OUTLEN];
        for round in [0x00u8, 0x01] {
            if round == 0x01 && !provided {
                break;
            }
            // Key = HMAC(Key, V ‖ round ‖ provided_data); V = HMAC(Key, V).
            let mut mac_parts: [&[u8]; 8] = [&[]; 8];
            mac_parts[0] = &self.v;
            mac_parts[1] = core::slice::from_ref(&round);
            for (slot, part) in mac_parts[2..].iter_mut().zip(provided_data) {
                *slot = part;
            }
            debug_assert!(provided_data.len() <= 6);
            hmac(&self.key, &mac_parts, &mut next_key);
            self.key = next_key;
            let v = self.v;
            hmac(&self.key, &[&v], &mut self.v);
        }
        next_key.zeroize();
    }

    /// HMAC_DRBG_Instantiate_algorithm (SP 800-90A §10.1.2.3):
    /// `seed_material = entropy_input ‖ nonce ‖ personalization_string`.
    ///
    /// The caller supplies `entropy_input` with at least 256 bits of entropy and a `nonce` with at
    /// least 128 bits (SP 800-90A §8.6.7).
    #[must_use]
    pub fn instantiate(entropy_input: &[u8], nonce: &[u8], personalization: &[u8]) -> Self {
        let mut drbg = Self {
            v: [0x01; OUTLEN],
            key: [0x00; OUTLEN],
            reseed_counter: 1,
        };
        drbg.update(&[entropy_input, nonce, personalization]);
        drbg
    }

    /// HMAC_DRBG_Reseed_algorithm (SP 800-90A §10.1.2.4):
    /// `seed_material = entropy_input ‖ additional_input`.
    pub fn reseed(&mut self, entropy_input: &[u8], additional_input: &[u8]) {
        self.update(&[entropy_input, additional_input]);
        self.reseed_counter = 1;
    }

    /// Whether the next generate request needs a reseed first.
    #[must_use]
    pub const fn reseed_required(&self) -> bool {
        self.reseed_counter > RESEED_INTERVAL
    }

    /// HMAC_DRBG_Generate_algorithm (SP 800-90A §10.1.2.5): fills `out`.
    ///
    /// # Errors
    ///
    /// [`DrbgError::ReseedRequired`] or [`DrbgError::RequestTooLong`]; `out` is then untouched.
    pub fn generate(&mut self, out: &mut [u8], additional_input: &[u8]) -> Result<(), DrbgError> {
        if out.len() > MAX_REQUEST_BYTES {
            return Err(DrbgError::RequestTooLong);
        }
        if self.reseed_required() {
            return Err(DrbgError::ReseedRequired);
        }
        if !additional_input.is_empty() {
            self.update(&[additional_input]);
        }
        for chunk in out.chunks_mut(OUTLEN) {
            let v = self.v;
            hmac(&self.key, &[&v], &mut self.v);
            chunk.copy_from_slice(&self.v[..chunk.len()]);
        }
        self.update(&[additional_input]);
        self.reseed_counter += 1;
        Ok(())
    }

    #[cfg(test)]
    fn state(&self) -> (&[u8; OUTLEN], &[u8; OUTLEN]) {
        (&self.v, &self.key)
    }
}

impl Drop for HmacDrbg {
    fn drop(&mut self) {
        self.v.zeroize();
        self.key.zeroize();
    }
}

impl fmt::Debug for HmacDrbg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacDrbg")
            .field("reseed_counter", &self.reseed_counter)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    //! Known answers from the NIST CAVP DRBG test vectors (drbgtestvectors.zip, SP 800-90A),
    //! file `HMAC_DRBG.rsp`, section `[SHA-256]`, `[ReturnedBitsLen = 1024]`. A CAVP case
    //! instantiates, optionally reseeds, generates 1024 bits twice and gives the second output.

    use hex_literal::hex;

    use super::*;

    struct Case {
        entropy: &'static [u8],
        nonce: &'static [u8],
        personalization: &'static [u8],
        reseed: Option<(&'static [u8], &'static [u8])>,
        additional: [&'static [u8]; 2],
        returned: [u8; 128],
    }

    fn run(case: &Case) -> [u8; 128] {
        let mut drbg = HmacDrbg::instantiate(case.entropy, case.nonce, case.personalization);
        if let Some((entropy, additional)) = case.reseed {
            drbg.reseed(entropy, additional);
        }
        let mut out = [0u8; 128];
        drbg.generate(&mut out, case.additional[0]).unwrap();
        drbg.generate(&mut out, case.additional[1]).unwrap();
        out
    }

    const CASES: [Case; 5] = [
        // drbgvectors_no_reseed, [PredictionResistance = False], [EntropyInputLen = 256],
        // [NonceLen = 128], [PersonalizationStringLen = 0], [AdditionalInputLen = 0], COUNT = 0.
        Case {
            entropy: &hex!("ca851911349384bffe89de1cbdc46e6831e44d34a4fb935ee285dd14b71a7488"),
            nonce: &hex!("659ba96c601dc69fc902940805ec0ca8"),
            personalization: &[],
            reseed: None,
            additional: [&[], &[]],
            returned: hex!(
                "e528e9abf2dece54d47c7e75e5fe302149f817ea9fb4bee6f4199697d04d5b89"
                "d54fbb978a15b5c443c9ec21036d2460b6f73ebad0dc2aba6e624abf07745bc1"
                "07694bb7547bb0995f70de25d6b29e2d3011bb19d27676c07162c8b5ccde0668"
                "961df86803482cb37ed6d5c0bb8d50cf1f50d476aa0458bdaba806f48be9dcb8"
            ),
        },
        // Same section, COUNT = 1.
        Case {
            entropy: &hex!("79737479ba4e7642a221fcfd1b820b134e9e3540a35bb48ffae29c20f5418ea3"),
            nonce: &hex!("3593259c092bef4129bc2c6c9e19f343"),
            personalization: &[],
            reseed: None,
            additional: [&[], &[]],
            returned: hex!(
                "cf5ad5984f9e43917aa9087380dac46e410ddc8a7731859c84e9d0f31bd43655"
                "b924159413e2293b17610f211e09f770f172b8fb693a35b85d3b9e5e63b1dc25"
                "2ac0e115002e9bedfb4b5b6fd43f33b8e0eafb2d072e1a6fee1f159df9b51e6c"
                "8da737e60d5032dd30544ec51558c6f080bdbdab1de8a939e961e06b5f1aca37"
            ),
        },
        // drbgvectors_no_reseed, [AdditionalInputLen = 256], COUNT = 0.
        Case {
            entropy: &hex!("d3cc4d1acf3dde0c4bd2290d262337042dc632948223d3a2eaab87da44295fbd"),
            nonce: &hex!("0109b0e729f457328aa18569a9224921"),
            personalization: &[],
            reseed: None,
            additional: [
                &hex!("3c311848183c9a212a26f27f8c6647e40375e466a0857cc39c4e47575d53f1f6"),
                &hex!("fcb9abd19ccfbccef88c9c39bfb3dd7b1c12266c9808992e305bc3cff566e4e4"),
            ],
            returned: hex!(
                "9c7b758b212cd0fcecd5daa489821712e3cdea4467b560ef5ddc24ab47749a1f"
                "1ffdbbb118f4e62fcfca3371b8fbfc5b0646b83e06bfbbab5fac30ea09ea2bc7"
                "6f1ea568c9be0444b2cc90517b20ca825f2d0eccd88e7175538b85d90ab39018"
                "3ca6395535d34473af6b5a5b88f5a59ee7561573337ea819da0dcc3573a22974"
            ),
        },
        // drbgvectors_pr_false, [PersonalizationStringLen = 0], [AdditionalInputLen = 0],
        // COUNT = 0: instantiate, reseed, generate, generate.
        Case {
            entropy: &hex!("06032cd5eed33f39265f49ecb142c511da9aff2af71203bffaf34a9ca5bd9c0d"),
            nonce: &hex!("0e66f71edc43e42a45ad3c6fc6cdc4df"),
            personalization: &[],
            reseed: Some((
                &hex!("01920a4e669ed3a85ae8a33b35a74ad7fb2a6bb4cf395ce00334a9c9a5a5d552"),
                &[],
            )),
            additional: [&[], &[]],
            returned: hex!(
                "76fc79fe9b50beccc991a11b5635783a83536add03c157fb30645e611c2898bb"
                "2b1bc215000209208cd506cb28da2a51bdb03826aaf2bd2335d576d519160842"
                "e7158ad0949d1a9ec3e66ea1b1a064b005de914eac2e9d4f2d72a8616a802254"
                "22918250ff66a41bd2f864a6a38cc5b6499dc43f7f2bd09e1e0f8f5885935124"
            ),
        },
        // drbgvectors_pr_false, [PersonalizationStringLen = 256], [AdditionalInputLen = 256],
        // COUNT = 0: every input present.
        Case {
            entropy: &hex!("93161b2dc08cb0fd50171141c865a841ca935cfdd2b5907d6ff8ab0348c4ceb0"),
            nonce: &hex!("5cb9f6e5912b90c3349a50ab881b35a1"),
            personalization: &hex!(
                "0dceb4a36326c4df1685df43fddeecb5d0c76f00eb44826694f27e610290f6e1"
            ),
            reseed: Some((
                &hex!("d8e9be44b5f293482548d4787762ebfb03c73c40e45385e8b98907cd66f493dd"),
                &hex!("105a8f85d6959f3e043ef508cfea21d52123f03b7aea8034c4eec761eaba1fee"),
            )),
            additional: [
                &hex!("bf781f7e489d9b4b5aa5ee6d1796468af672a8d25f311edf3c4b4dbf433d703f"),
                &hex!("c81d6bcf1e5bf37e39dda1735c6f193df115b1a854a12e7cafe060afe4589335"),
            ],
            returned: hex!(
                "4306628124d0100fade7eaaf5edf227d50771f9e5f2e1e983800eef9a39fde0b"
                "0c280e63c8728d836b5b93ea794a32c1c04cfc54bd5300e3febb5fe2e1023ede"
                "d8d7cd180279a598f76823e8d5a7dffcc93a09deec5d1f80838e938fba4de9f4"
                "7e94b99382ae55f116df9c3b3ddf7e50516e203645852a415796f03a86418107"
            ),
        },
    ];

    #[test]
    fn cavp_hmac_drbg_sha256() {
        for (index, case) in CASES.iter().enumerate() {
            assert_eq!(run(case), case.returned, "CAVP case {index}");
        }
    }

    #[test]
    fn cavp_intermediate_state() {
        // drbgvectors_pr_false COUNT = 0 prints the working state after each step.
        let case = &CASES[3];
        let mut drbg = HmacDrbg::instantiate(case.entropy, case.nonce, &[]);
        assert_eq!(
            drbg.state(),
            (
                &hex!("81e0d8830ed2d16f9b288a1cb289c5fab3f3c5c28131be7cafedcc7734604d34"),
                &hex!("17dc11c2389f5eeb9d0f6a5148a1ea83ee8a828f4f140ac78272a0da435fa121"),
            ),
            "after INSTANTIATE"
        );
        drbg.reseed(case.reseed.unwrap().0, &[]);
        assert_eq!(
            drbg.state(),
            (
                &hex!("c246fa97570ba2b9d9e5b453fe4632366f146fbd8491146563eb463c9eafe50c"),
                &hex!("ca43e73325de43c41d7e0a7a3163fb04061b09fcee4c7b8884e969e3bdfdff9a"),
            ),
            "after RESEED"
        );
    }

    #[test]
    fn limits() {
        let mut drbg = HmacDrbg::instantiate(&[1; 32], &[2; 16], &[]);
        let mut big = [0u8; MAX_REQUEST_BYTES + 1];
        assert_eq!(drbg.generate(&mut big, &[]), Err(DrbgError::RequestTooLong));
        for _ in 0..RESEED_INTERVAL {
            drbg.generate(&mut [0; 1], &[]).unwrap();
        }
        assert_eq!(
            drbg.generate(&mut [0; 1], &[]),
            Err(DrbgError::ReseedRequired)
        );
        drbg.reseed(&[3; 32], &[]);
        drbg.generate(&mut [0; 1], &[]).unwrap();
    }
}
