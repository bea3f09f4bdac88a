//! [`KeyAcceptance`]: which root keys a join server accepts for a device, and what a join under
//! each means (PROTOCOL.md §7). The one statement of the rule: the join servers (the lorapki
//! server's, the simulator's, the test harness's) ask it which keys may verify a JoinRequest, and
//! the state machines ask it what a verified join means.

use lorapki_crypto::RootKeySlot;

/// The two-phase key acceptance rule of PROTOCOL.md §7.
///
/// * **Which keys verify.** A JoinRequest is checked under the device's **active** root key and,
///   while a new key is **staged** (the exchange succeeded, the switch is not yet confirmed),
///   under the staged key too: the active key first, the first key that verifies wins. Without a
///   staged key only the active key is accepted.
/// * **What a verified join means.** Only evidence the attacker of §10 cannot forge moves a key:
///   a JoinRequest whose MIC verifies under the *staged* key (at the join server), or a
///   JoinAccept under it (at the device), confirms it: the staged key becomes the active key and
///   the old one is retired ([`JoinEffect::Confirm`]). A join under the *active* key changes
///   nothing ([`JoinEffect::Unchanged`]): the old key may be the leaked factory key, so a join
///   under it proves nothing about the device, and it never drops the staged key.
///
/// So neither side ever drops the new key once it holds it: the join server keeps accepting it
/// until it is confirmed, and the device keeps it until a JoinAccept under it arrives.
///
/// ```
/// use lorapki_proto::{JoinEffect, KeyAcceptance, RootKeySlot};
///
/// let switching = KeyAcceptance::new(true);
/// assert_eq!(switching.slots(), [RootKeySlot::Active, RootKeySlot::Staged]);
/// assert_eq!(switching.effect(RootKeySlot::Staged), JoinEffect::Confirm);
/// assert_eq!(switching.effect(RootKeySlot::Active), JoinEffect::Unchanged);
///
/// let settled = KeyAcceptance::new(false);
/// assert_eq!(settled.slots(), [RootKeySlot::Active]);
/// assert_eq!(settled.effect(RootKeySlot::Active), JoinEffect::Unchanged);
///
/// // The first slot whose key verifies the MIC.
/// let verified = switching.verify(|slot| Ok::<_, ()>(slot == RootKeySlot::Staged));
/// assert_eq!(verified, Ok(Some(RootKeySlot::Staged)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct KeyAcceptance {
    staged: bool,
}

/// What a verified join under one root key means for the device's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum JoinEffect {
    /// The staged key becomes the active key; the old one is retired. The rekey completed.
    Confirm,
    /// No key changes.
    Unchanged,
}

impl KeyAcceptance {
    /// The rule for a device that has (`staged`) or has not a staged root key.
    #[must_use]
    pub const fn new(staged: bool) -> Self {
        Self { staged }
    }

    /// Whether a key is staged.
    #[must_use]
    pub const fn staged(self) -> bool {
        self.staged
    }

    /// The keys a JoinRequest may verify under, in the order to try them.
    #[must_use]
    pub const fn slots(self) -> &'static [RootKeySlot] {
        if self.staged {
            &[RootKeySlot::Active, RootKeySlot::Staged]
        } else {
            &[RootKeySlot::Active]
        }
    }

    /// The first of [`slots`](Self::slots) for which `verifies` (the MIC check under that slot's
    /// key) says yes; `None` when no accepted key verifies.
    ///
    /// # Errors
    ///
    /// The first error of `verifies` (the keys after it are not tried).
    pub fn verify<E>(
        self,
        mut verifies: impl FnMut(RootKeySlot) -> Result<bool, E>,
    ) -> Result<Option<RootKeySlot>, E> {
        for &slot in self.slots() {
            if verifies(slot)? {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    /// What a verified join under `slot` means.
    #[must_use]
    pub const fn effect(self, slot: RootKeySlot) -> JoinEffect {
        match (self.staged, slot) {
            (true, RootKeySlot::Staged) => JoinEffect::Confirm,
            (false, _) | (true, RootKeySlot::Active) => JoinEffect::Unchanged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_accepted_key_that_verifies_wins() {
        let both = KeyAcceptance::new(true);
        let mut tried = [None; 2];
        let mut n = 0;
        let verified = both.verify(|slot| {
            tried[n] = Some(slot);
            n += 1;
            Ok::<_, ()>(true)
        });
        assert_eq!(verified, Ok(Some(RootKeySlot::Active)));
        assert_eq!(tried, [Some(RootKeySlot::Active), None]);
        // A staged key is never tried when none is staged.
        let active_only = KeyAcceptance::new(false);
        let verified = active_only.verify(|slot| Ok::<_, ()>(slot == RootKeySlot::Staged));
        assert_eq!(verified, Ok(None));
        // An error stops the search.
        assert_eq!(both.verify(|_| Err::<bool, _>(7)), Err(7));
    }
}
