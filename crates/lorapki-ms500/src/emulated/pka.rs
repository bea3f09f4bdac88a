//! [`EmulatedPka`]: a software model of a P-384 public-key accelerator with key slots, on
//! RustCrypto's `p384`.

use elliptic_curve::PrimeField;
use elliptic_curve::sec1::ToSec1Point;
use elliptic_curve::{NonZeroScalar, ProjectivePoint};
use p384::NistP384;
use zeroize::Zeroize;

use super::fault::{CommandTrace, FaultInjector, Injection, admit_start, poll_done};
use crate::engine::{
    Engine, EngineError, P384_LEN, P384_POINT_LEN, PkaCommand, PkaEngine, Progress,
};

/// Maximum number of key slots of the model.
pub const MAX_PKA_SLOTS: usize = 8;

#[derive(Clone)]
enum Slot {
    Empty,
    Key(NonZeroScalar<NistP384>),
    /// A load that did not complete: the first half of the new scalar, the rest zero. Usable
    /// (that is the danger of a half-written key), and flagged for tests.
    HalfWritten(NonZeroScalar<NistP384>),
}

impl Slot {
    fn key(&self) -> Result<&NonZeroScalar<NistP384>, EngineError> {
        match self {
            Self::Empty => Err(EngineError::SlotEmpty),
            Self::Key(key) | Self::HalfWritten(key) => Ok(key),
        }
    }
}

#[derive(Clone)]
enum Effect {
    None,
    Load(u8, NonZeroScalar<NistP384>, Option<NonZeroScalar<NistP384>>),
    Erase(u8),
}

#[derive(Clone)]
struct Running {
    remaining_polls: u32,
    outcome: Result<(), EngineError>,
    effect: Effect,
    injection: Option<Injection>,
    output: [u8; P384_POINT_LEN],
    output_len: usize,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.output.zeroize();
    }
}

/// A software model of a PKA with P-384 key slots.
///
/// Results are computed with `p384` when a command starts and become visible after
/// [`latency_polls`](Self::latency_polls) polls. Signatures are deterministic (RFC 6979 with
/// SHA-384), so the RFC's known answers apply. With [`retains_keys`](Self::new) `false` the slots
/// are volatile: [`power_cycle`](Self::power_cycle) empties them.
#[derive(Clone)]
pub struct EmulatedPka {
    slots: [Slot; MAX_PKA_SLOTS],
    slot_count: u8,
    retains: bool,
    running: Option<Running>,
    output: [u8; P384_POINT_LEN],
    output_ready: usize,
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

impl core::fmt::Debug for EmulatedPka {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EmulatedPka")
            .field("slot_count", &self.slot_count)
            .field("retains", &self.retains)
            .field("tampered", &self.tampered)
            .finish_non_exhaustive()
    }
}

fn point_bytes(point: &p384::AffinePoint, out: &mut [u8; P384_POINT_LEN]) {
    let encoded = point.to_sec1_point(false);
    out.copy_from_slice(&encoded.as_bytes()[1..]);
}

fn parse_point(x_y: &[u8; P384_POINT_LEN]) -> Result<p384::PublicKey, EngineError> {
    let mut sec1 = [0u8; 1 + P384_POINT_LEN];
    sec1[0] = 0x04;
    sec1[1..].copy_from_slice(x_y);
    p384::PublicKey::from_sec1_bytes(&sec1).map_err(|_| EngineError::InvalidPoint)
}

fn parse_scalar(bytes: &[u8; P384_LEN]) -> Result<NonZeroScalar<NistP384>, EngineError> {
    NonZeroScalar::try_from(&bytes[..]).map_err(|_| EngineError::InvalidScalar)
}

/// The first 24 bytes of `scalar`, the rest zero: what a load cut in the middle leaves behind.
fn half_written(scalar: &[u8; P384_LEN]) -> Option<NonZeroScalar<NistP384>> {
    let mut half = [0u8; P384_LEN];
    half[..P384_LEN / 2].copy_from_slice(&scalar[..P384_LEN / 2]);
    let key = NonZeroScalar::try_from(&half[..]).ok();
    half.zeroize();
    key
}

impl EmulatedPka {
    /// A PKA with `slot_count` (at most [`MAX_PKA_SLOTS`]) empty slots; `retains_keys` says
    /// whether slots survive [`power_cycle`](Self::power_cycle).
    #[must_use]
    pub fn new(slot_count: u8, retains_keys: bool) -> Self {
        Self {
            slots: [const { Slot::Empty }; MAX_PKA_SLOTS],
            slot_count: slot_count.min(MAX_PKA_SLOTS as u8),
            retains: retains_keys,
            running: None,
            output: [0; P384_POINT_LEN],
            output_ready: 0,
            tampered: false,
            busy_left: 0,
            latency_polls: 0,
            busy_starts: 0,
            injector: FaultInjector::default(),
            trace: CommandTrace::default(),
        }
    }

    /// A reset: the running command and the output register are lost, the tamper latch is
    /// cleared, and volatile slots are emptied.
    pub fn power_cycle(&mut self) {
        self.running = None;
        self.output.zeroize();
        self.output_ready = 0;
        self.tampered = false;
        self.busy_left = 0;
        if !self.retains {
            self.slots = [const { Slot::Empty }; MAX_PKA_SLOTS];
        }
    }

    /// Whether a slot holds a half-written key (a load that failed and was not cleaned up).
    #[must_use]
    pub fn has_half_written_key(&self) -> bool {
        self.slots
            .iter()
            .any(|slot| matches!(slot, Slot::HalfWritten(_)))
    }

    /// Whether `slot` holds a key whose scalar is `scalar` (for tests: identity survived).
    #[must_use]
    pub fn slot_holds(&self, slot: u8, scalar: &[u8; P384_LEN]) -> bool {
        match self.slots.get(usize::from(slot)) {
            Some(Slot::Key(key)) => key.to_repr().as_slice() == scalar,
            _ => false,
        }
    }

    /// Whether `slot` holds any key.
    #[must_use]
    pub fn slot_occupied(&self, slot: u8) -> bool {
        !matches!(self.slots.get(usize::from(slot)), Some(Slot::Empty) | None)
    }

    /// Whether the output register is clear and no command is running: nothing secret left
    /// behind by the last command.
    #[must_use]
    pub fn idle_and_clear(&self) -> bool {
        self.running.is_none() && self.output_ready == 0 && self.output.iter().all(|&b| b == 0)
    }

    /// Whether the tamper latch is set.
    #[must_use]
    pub const fn tampered(&self) -> bool {
        self.tampered
    }

    fn slot(&self, slot: u8) -> Result<&Slot, EngineError> {
        if slot >= self.slot_count {
            return Err(EngineError::NoSuchSlot);
        }
        Ok(&self.slots[usize::from(slot)])
    }

    /// Computes a command: (outcome, effect, output, output length).
    fn compute(
        &self,
        command: &PkaCommand<'_>,
        output: &mut [u8; P384_POINT_LEN],
    ) -> Result<Effect, EngineError> {
        match *command {
            PkaCommand::LoadKey { slot, scalar } => {
                self.slot(slot)?;
                Ok(Effect::Load(
                    slot,
                    parse_scalar(scalar)?,
                    half_written(scalar),
                ))
            }
            PkaCommand::EraseKey { slot } => {
                self.slot(slot)?;
                Ok(Effect::Erase(slot))
            }
            PkaCommand::PublicKey { slot } => {
                let key = self.slot(slot)?.key()?;
                let point = (ProjectivePoint::<NistP384>::GENERATOR * key.as_ref()).to_affine();
                point_bytes(&point, output);
                Ok(Effect::None)
            }
            PkaCommand::Ecdh { slot, peer } => {
                let key = *self.slot(slot)?.key()?;
                let peer = parse_point(peer)?;
                let shared = elliptic_curve::ecdh::diffie_hellman(key, peer.as_affine());
                output[..P384_LEN].copy_from_slice(shared.raw_secret_bytes());
                Ok(Effect::None)
            }
            PkaCommand::Sign { slot, digest } => {
                let key = self.slot(slot)?.key()?;
                let (signature, _) = ecdsa::hazmat::sign_prehashed_rfc6979::<NistP384, sha2::Sha384>(
                    key,
                    digest,
                    &[],
                );
                output.copy_from_slice(&signature.to_bytes());
                Ok(Effect::None)
            }
            PkaCommand::Verify {
                public,
                digest,
                signature,
            } => {
                let public = parse_point(public)?;
                let signature = p384::ecdsa::Signature::from_slice(signature)
                    .map_err(|_| EngineError::InvalidSignature)?;
                ecdsa::hazmat::verify_prehashed::<NistP384>(
                    &ProjectivePoint::<NistP384>::from(*public.as_affine()),
                    digest,
                    &signature,
                )
                .map_err(|_| EngineError::InvalidSignature)?;
                Ok(Effect::None)
            }
            PkaCommand::Decompress { x, y_is_odd } => {
                let mut sec1 = [0u8; 1 + P384_LEN];
                sec1[0] = if y_is_odd { 0x03 } else { 0x02 };
                sec1[1..].copy_from_slice(x);
                let point = p384::PublicKey::from_sec1_bytes(&sec1)
                    .map_err(|_| EngineError::InvalidPoint)?;
                point_bytes(point.as_affine(), output);
                Ok(Effect::None)
            }
            PkaCommand::CheckPoint { point } => {
                parse_point(point)?;
                Ok(Effect::None)
            }
        }
    }
}

impl Engine for EmulatedPka {
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
            // The command ran into a fault: a key load is left half-written.
            if let Effect::Load(slot, _, half) = &running.effect {
                self.slots[usize::from(*slot)] = half.map_or(Slot::Empty, Slot::HalfWritten);
            }
            if error == EngineError::Tamper {
                self.tampered = true;
                if !self.retains {
                    self.slots = [const { Slot::Empty }; MAX_PKA_SLOTS];
                }
            }
            return Err(error);
        }
        running.outcome?;
        match &running.effect {
            Effect::None => {}
            Effect::Load(slot, key, _) => self.slots[usize::from(*slot)] = Slot::Key(*key),
            Effect::Erase(slot) => self.slots[usize::from(*slot)] = Slot::Empty,
        }
        self.output = running.output;
        self.output_ready = running.output_len;
        Ok(Progress::Done)
    }

    fn abort(&mut self) {
        if let Some(running) = self.running.take()
            && let Effect::Load(slot, _, half) = &running.effect
        {
            self.slots[usize::from(*slot)] = half.map_or(Slot::Empty, Slot::HalfWritten);
        }
        self.output.zeroize();
        self.output_ready = 0;
    }
}

impl PkaEngine for EmulatedPka {
    fn key_slots(&self) -> u8 {
        self.slot_count
    }

    fn retains_keys(&self) -> bool {
        self.retains
    }

    fn key_present(&mut self, slot: u8) -> Result<bool, EngineError> {
        if self.tampered {
            return Err(EngineError::Tamper);
        }
        Ok(!matches!(self.slot(slot)?, Slot::Empty))
    }

    fn start(&mut self, command: &PkaCommand<'_>) -> Result<(), EngineError> {
        admit_start(
            self.tampered,
            self.running.is_some(),
            &mut self.injector,
            &mut self.busy_left,
            self.busy_starts,
        )?;
        self.output.zeroize();
        self.output_ready = 0;
        let injection = self.injector.on_start();
        self.trace.record(command.name());
        let mut output = [0u8; P384_POINT_LEN];
        let computed = self.compute(command, &mut output);
        let (outcome, effect) = match computed {
            Ok(effect) => (Ok(()), effect),
            Err(error) => (Err(error), Effect::None),
        };
        let output_len = if outcome.is_ok() {
            command.output_len()
        } else {
            0
        };
        self.running = Some(Running {
            remaining_polls: self.latency_polls,
            outcome,
            effect,
            injection,
            output,
            output_len,
        });
        output.zeroize();
        Ok(())
    }

    fn read_output(&mut self, out: &mut [u8]) -> Result<(), EngineError> {
        if self.tampered {
            return Err(EngineError::Tamper);
        }
        if self.output_ready == 0 || out.len() != self.output_ready {
            self.abort();
            return Err(EngineError::Fault);
        }
        out.copy_from_slice(&self.output[..self.output_ready]);
        self.output.zeroize();
        self.output_ready = 0;
        Ok(())
    }
}
