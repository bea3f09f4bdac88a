//! [`EmulatedAes`]: a software model of an AES-128 engine with key slots and a device-unique
//! key, on RustCrypto's `aes` and `cmac`.

use aes::Aes128;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use cmac::{Cmac, Mac};
use zeroize::Zeroize;

use super::fault::{CommandTrace, FaultInjector, Injection, admit_start, poll_done};
use crate::engine::{AesCommand, AesEngine, AesKeyRef, Engine, EngineError, Progress};

/// Maximum number of key slots of the model.
pub const MAX_AES_SLOTS: usize = 4;

#[derive(Clone, Copy)]
enum Slot {
    Empty,
    Key([u8; 16]),
    /// A load that did not complete: the first 8 bytes of the new key, the rest zero.
    HalfWritten([u8; 16]),
}

#[derive(Clone, Copy)]
enum Effect {
    None,
    Load(u8, [u8; 16]),
    Clear(u8),
}

#[derive(Clone)]
struct Running {
    remaining_polls: u32,
    outcome: Result<(), EngineError>,
    effect: Effect,
    injection: Option<Injection>,
    output: [u8; 16],
    has_output: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.output.zeroize();
        if let Effect::Load(_, key) = &mut self.effect {
            key.zeroize();
        }
    }
}

/// A software model of an AES-128 engine: volatile key slots (emptied by
/// [`power_cycle`](Self::power_cycle)) and a device-unique key fixed at construction.
#[derive(Clone)]
pub struct EmulatedAes {
    device_unique: [u8; 16],
    slots: [Slot; MAX_AES_SLOTS],
    slot_count: u8,
    running: Option<Running>,
    output: [u8; 16],
    output_ready: bool,
    tampered: bool,
    busy_left: u32,
    /// Polls each command takes before it is done.
    pub latency_polls: u32,
    /// How many times the engine refuses each command as busy before accepting it.
    pub busy_starts: u32,
    /// Fault injection by command index.
    pub injector: FaultInjector,
    /// Names of the commands started.
    pub trace: CommandTrace,
}

impl core::fmt::Debug for EmulatedAes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EmulatedAes")
            .field("slot_count", &self.slot_count)
            .field("tampered", &self.tampered)
            .finish_non_exhaustive()
    }
}

impl Drop for EmulatedAes {
    fn drop(&mut self) {
        self.device_unique.zeroize();
        self.output.zeroize();
        for slot in &mut self.slots {
            *slot = Slot::Empty;
        }
    }
}

fn encrypt(key: &[u8; 16], block: &mut [u8; 16]) {
    let cipher = Aes128::new(key.into());
    cipher.encrypt_block(block.into());
}

impl EmulatedAes {
    /// An engine with `slot_count` (at most [`MAX_AES_SLOTS`]) empty slots and this
    /// device-unique key.
    #[must_use]
    pub fn new(slot_count: u8, device_unique_key: [u8; 16]) -> Self {
        Self {
            device_unique: device_unique_key,
            slots: [Slot::Empty; MAX_AES_SLOTS],
            slot_count: slot_count.min(MAX_AES_SLOTS as u8),
            running: None,
            output: [0; 16],
            output_ready: false,
            tampered: false,
            busy_left: 0,
            latency_polls: 0,
            busy_starts: 0,
            injector: FaultInjector::default(),
            trace: CommandTrace::default(),
        }
    }

    /// A reset: slots emptied, output cleared, tamper latch cleared (the device-unique key stays).
    pub fn power_cycle(&mut self) {
        self.running = None;
        self.output.zeroize();
        self.output_ready = false;
        self.tampered = false;
        self.busy_left = 0;
        self.slots = [Slot::Empty; MAX_AES_SLOTS];
    }

    /// Whether every key slot is empty (no key left behind) and the output register is clear.
    #[must_use]
    pub fn slots_empty_and_clear(&self) -> bool {
        self.running.is_none()
            && !self.output_ready
            && self.output.iter().all(|&b| b == 0)
            && self.slots.iter().all(|slot| matches!(slot, Slot::Empty))
    }

    /// Whether the tamper latch is set.
    #[must_use]
    pub const fn tampered(&self) -> bool {
        self.tampered
    }

    fn key(&self, key: AesKeyRef) -> Result<[u8; 16], EngineError> {
        match key {
            AesKeyRef::DeviceUnique => Ok(self.device_unique),
            AesKeyRef::Slot(slot) => match self.slots.get(usize::from(slot)) {
                _ if slot >= self.slot_count => Err(EngineError::NoSuchSlot),
                Some(Slot::Key(key) | Slot::HalfWritten(key)) => Ok(*key),
                _ => Err(EngineError::SlotEmpty),
            },
        }
    }

    fn compute(
        &self,
        command: &AesCommand<'_>,
        output: &mut [u8; 16],
    ) -> Result<Effect, EngineError> {
        let check_slot = |slot: u8| {
            if slot < self.slot_count {
                Ok(())
            } else {
                Err(EngineError::NoSuchSlot)
            }
        };
        match *command {
            AesCommand::LoadKey { slot, key } => {
                check_slot(slot)?;
                Ok(Effect::Load(slot, *key))
            }
            AesCommand::ClearKey { slot } => {
                check_slot(slot)?;
                Ok(Effect::Clear(slot))
            }
            AesCommand::EncryptBlock { key, block } => {
                let mut key = self.key(key)?;
                *output = *block;
                encrypt(&key, output);
                key.zeroize();
                Ok(Effect::None)
            }
            AesCommand::Cmac { key, message } => {
                let mut key = self.key(key)?;
                let mut mac = <Cmac<Aes128> as KeyInit>::new((&key).into());
                key.zeroize();
                for part in message {
                    mac.update(part);
                }
                output.copy_from_slice(&mac.finalize().into_bytes());
                Ok(Effect::None)
            }
        }
    }
}

impl Engine for EmulatedAes {
    fn poll(&mut self) -> Result<Progress, EngineError> {
        let Some(running) = self.running.as_mut() else {
            return Err(EngineError::Fault);
        };
        if !poll_done(running.injection, &mut running.remaining_polls) {
            return Ok(Progress::Pending);
        }
        let Some(running) = self.running.take() else {
            return Err(EngineError::Fault);
        };
        if let Some(Injection::Fail(error)) = running.injection {
            if let Effect::Load(slot, key) = running.effect {
                let mut half = [0u8; 16];
                half[..8].copy_from_slice(&key[..8]);
                self.slots[usize::from(slot)] = Slot::HalfWritten(half);
            }
            if error == EngineError::Tamper {
                self.tampered = true;
                self.slots = [Slot::Empty; MAX_AES_SLOTS];
            }
            return Err(error);
        }
        running.outcome?;
        match running.effect {
            Effect::None => {}
            Effect::Load(slot, key) => self.slots[usize::from(slot)] = Slot::Key(key),
            Effect::Clear(slot) => self.slots[usize::from(slot)] = Slot::Empty,
        }
        self.output = running.output;
        self.output_ready = running.has_output;
        Ok(Progress::Done)
    }

    fn abort(&mut self) {
        if let Some(running) = self.running.take()
            && let Effect::Load(slot, key) = running.effect
        {
            let mut half = [0u8; 16];
            half[..8].copy_from_slice(&key[..8]);
            self.slots[usize::from(slot)] = Slot::HalfWritten(half);
        }
        self.output.zeroize();
        self.output_ready = false;
    }
}

impl AesEngine for EmulatedAes {
    fn key_slots(&self) -> u8 {
        self.slot_count
    }

    fn start(&mut self, command: &AesCommand<'_>) -> Result<(), EngineError> {
        admit_start(
            self.tampered,
            self.running.is_some(),
            &mut self.injector,
            &mut self.busy_left,
            self.busy_starts,
        )?;
        self.output.zeroize();
        self.output_ready = false;
        let injection = self.injector.on_start();
        self.trace.record(command.name());
        let mut output = [0u8; 16];
        let (outcome, effect) = match self.compute(command, &mut output) {
            Ok(effect) => (Ok(()), effect),
            Err(error) => (Err(error), Effect::None),
        };
        self.running = Some(Running {
            remaining_polls: self.latency_polls,
            outcome,
            effect,
            injection,
            output,
            has_output: command.has_output(),
        });
        output.zeroize();
        Ok(())
    }

    fn read_block(&mut self, out: &mut [u8; 16]) -> Result<(), EngineError> {
        if self.tampered {
            return Err(EngineError::Tamper);
        }
        if !self.output_ready {
            self.abort();
            return Err(EngineError::Fault);
        }
        *out = self.output;
        self.output.zeroize();
        self.output_ready = false;
        Ok(())
    }
}
