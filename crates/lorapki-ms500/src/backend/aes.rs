//! `AesBackend` of [`Ms500Backend`], and the one-key-at-a-time use of the AES scratch slot that
//! the root-key store shares.

use lorapki_crypto::{AES_BLOCK_LEN, AesBackend, AesKey, Error, Result};
use zeroize::Zeroize;

use super::{Ms500Backend, Platform};
use crate::engine::{AesCommand, AesKeyRef, EngineError};
use crate::wait::aes_run;

/// What to do with a key once it is in the scratch slot.
pub(super) enum AesOperation<'a> {
    EncryptBlock(&'a mut [u8; AES_BLOCK_LEN]),
    Cmac(&'a [&'a [u8]], &'a mut [u8; AES_BLOCK_LEN]),
}

impl<H: Platform> Ms500Backend<H> {
    /// Loads the key in `scratch.key` into the AES scratch slot, runs `operation`, and clears
    /// the slot whatever happened (a failed load may have left part of a key in it).
    pub(super) fn with_scratch_key(&mut self, operation: AesOperation<'_>) -> Result<()> {
        let slot = self.config.slots.aes_scratch;
        let timeouts = self.config.timeouts;
        let used = aes_run(
            &mut self.aes,
            &mut self.delay,
            &timeouts,
            &AesCommand::LoadKey {
                slot,
                key: &self.scratch.key,
            },
            None,
        )
        .and_then(|()| match operation {
            AesOperation::EncryptBlock(block) => {
                self.scratch.block = *block;
                aes_run(
                    &mut self.aes,
                    &mut self.delay,
                    &timeouts,
                    &AesCommand::EncryptBlock {
                        key: AesKeyRef::Slot(slot),
                        block: &self.scratch.block,
                    },
                    Some(block),
                )
            }
            AesOperation::Cmac(message, tag) => aes_run(
                &mut self.aes,
                &mut self.delay,
                &timeouts,
                &AesCommand::Cmac {
                    key: AesKeyRef::Slot(slot),
                    message,
                },
                Some(tag),
            ),
        });
        self.scratch.key.zeroize();
        // Clean-up is tried twice: a key must not stay in the slot because of one bad command.
        let clear = AesCommand::ClearKey { slot };
        let cleared =
            aes_run(&mut self.aes, &mut self.delay, &timeouts, &clear, None).or_else(|error| {
                match error {
                    EngineError::Tamper => Err(error),
                    _ => aes_run(&mut self.aes, &mut self.delay, &timeouts, &clear, None),
                }
            });
        used.and(cleared).map_err(Error::from)
    }
}

impl<H: Platform> AesBackend for Ms500Backend<H> {
    fn aes128_encrypt_block(
        &mut self,
        key: &AesKey,
        block: &mut [u8; AES_BLOCK_LEN],
    ) -> Result<()> {
        self.guarded(|this| {
            this.scratch.key = *key.expose_secret();
            this.with_scratch_key(AesOperation::EncryptBlock(block))
        })
    }

    fn aes128_cmac(&mut self, key: &AesKey, parts: &[&[u8]]) -> Result<[u8; AES_BLOCK_LEN]> {
        self.guarded(|this| {
            let mut tag = [0u8; AES_BLOCK_LEN];
            this.scratch.key = *key.expose_secret();
            this.with_scratch_key(AesOperation::Cmac(parts, &mut tag))?;
            Ok(tag)
        })
    }
}
