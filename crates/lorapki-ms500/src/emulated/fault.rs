//! Fault injection shared by the emulated engines.

use crate::engine::EngineError;

/// What happens to the command chosen by [`FaultInjector::inject`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Injection {
    /// The command starts and runs, then fails with this error: its output is discarded, a key
    /// load leaves the slot half-written, a key erase leaves the key in place. `Tamper` also
    /// latches the engine's tamper state until [`power_cycle`](super::EmulatedPka::power_cycle).
    Fail(EngineError),
    /// The command starts and never completes (the backend's time budget runs out).
    Hang,
    /// The engine refuses to start this and every later command as busy, until the injection
    /// is cleared.
    Busy,
}

/// Chooses one command by its index (counted from 0 over every command the engine accepted)
/// and injects a fault into it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultInjector {
    planned: Option<(u32, Injection)>,
    started: u32,
    fired: bool,
}

impl FaultInjector {
    /// Injects `injection` into the command with index `command`.
    pub fn inject(&mut self, command: u32, injection: Injection) {
        self.planned = Some((command, injection));
        self.fired = false;
    }

    /// Injects `injection` into the next command.
    pub fn inject_next(&mut self, injection: Injection) {
        self.inject(self.started, injection);
    }

    /// Removes the planned injection.
    pub fn clear(&mut self) {
        self.planned = None;
    }

    /// How many commands the engine has accepted.
    #[must_use]
    pub const fn commands_started(&self) -> u32 {
        self.started
    }

    /// Whether the planned injection has fired (the chosen command was reached).
    #[must_use]
    pub const fn fired(&self) -> bool {
        self.fired
    }

    /// Whether an injection is planned and has not happened yet.
    #[must_use]
    pub const fn planned_pending(&self) -> bool {
        self.planned.is_some() && !self.fired
    }

    /// Whether the engine refuses the next start as busy.
    pub(crate) fn refuses_start(&mut self) -> bool {
        let refuse =
            matches!(self.planned, Some((command, Injection::Busy)) if command <= self.started);
        self.fired |= refuse;
        refuse
    }

    /// Counts an accepted command and returns the injection planned for it, if any.
    pub(crate) fn on_start(&mut self) -> Option<Injection> {
        let index = self.started;
        self.started = self.started.saturating_add(1);
        match self.planned {
            Some((command, injection)) if command == index => {
                self.fired = true;
                Some(injection)
            }
            _ => None,
        }
    }
}

/// The admission of a command at `start`, the same for every emulated engine with commands: a
/// latched tamper fails, a running command or an injected refusal is busy, and each command is
/// refused as busy `busy_starts` times (counted in `busy_left`) before it is accepted.
pub(crate) fn admit_start(
    tampered: bool,
    running: bool,
    injector: &mut FaultInjector,
    busy_left: &mut u32,
    busy_starts: u32,
) -> Result<(), EngineError> {
    if tampered {
        return Err(EngineError::Tamper);
    }
    if running || injector.refuses_start() {
        return Err(EngineError::Busy);
    }
    if *busy_left < busy_starts {
        *busy_left += 1;
        return Err(EngineError::Busy);
    }
    *busy_left = 0;
    Ok(())
}

/// One poll of a running command: `false` while it is still running (one of its
/// `remaining_polls` is used up, or an injected hang keeps it running for ever), `true` once it
/// is done.
pub(crate) fn poll_done(injection: Option<Injection>, remaining_polls: &mut u32) -> bool {
    if injection == Some(Injection::Hang) {
        return false;
    }
    if *remaining_polls > 0 {
        *remaining_polls -= 1;
        return false;
    }
    true
}

/// How many command names a [`CommandTrace`] keeps.
pub const TRACE_LEN: usize = 512;

/// The names of the last [`TRACE_LEN`] commands an engine started, for test reports.
#[derive(Debug, Clone)]
pub struct CommandTrace {
    names: [&'static str; TRACE_LEN],
    total: u32,
}

impl Default for CommandTrace {
    fn default() -> Self {
        Self {
            names: [""; TRACE_LEN],
            total: 0,
        }
    }
}

impl CommandTrace {
    pub(crate) fn record(&mut self, name: &'static str) {
        self.names[self.total as usize % TRACE_LEN] = name;
        self.total = self.total.saturating_add(1);
    }

    /// The name of command `index`, if it is among the last [`TRACE_LEN`].
    #[must_use]
    pub fn name(&self, index: u32) -> Option<&'static str> {
        (index < self.total && (self.total - index) as usize <= TRACE_LEN)
            .then(|| self.names[index as usize % TRACE_LEN])
    }
}
