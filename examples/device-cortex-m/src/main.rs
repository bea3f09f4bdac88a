//! The device side of PROTOCOL.md §11 on a Cortex-M, with no heap, in QEMU as a stand-in for the
//! MS500: the fixed identity key in slot 0, the fixed ephemeral key, and for each of the two runs
//! (§11.1, LoRaWAN 1.0.x; §11.3, LoRaWAN 1.1) every uplink compared with U1–U3, D1–D3 fed in, the
//! staged and activated root keys checked against §11; the cost of the device's cryptography, its
//! stack and its static RAM reported over semihosting.
//!
//! See README.md for how to run it and what the numbers mean.
#![no_std]
#![no_main]

mod backend;
mod cycles;
mod stack;
mod vectors;

use core::fmt;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use lorapki_crypto::{
    AesBackend, AesKey, KeyImport, KeySlot, KeyStoreStatus, PublicKey, RootKeyKind, RootKeySlot,
    RootKeyStore, RootKeys, Secret,
};
use lorapki_crypto_soft::{SoftBackend, SoftKeyStore};
use lorapki_proto::{
    DeviceConfig, DeviceEvent, DevicePersistent, DeviceSession, DeviceStatus, Instant,
    LorawanVersion,
};
// Prints the panic message over semihosting and exits QEMU with a failure code.
use panic_semihosting as _;

use crate::backend::{FixedEphemerals, NoEntropy, Profile, Timing};
use crate::cycles::{CycleCounter, Source};
use crate::stack::StackProbe;
use crate::vectors::*;

/// The identity key's slot.
const SLOT: KeySlot = KeySlot(0);
/// The pre-shared AppKey the device left the factory with, the key the exchange replaces. Any
/// value will do: the run only checks that it is no longer the active key at the end.
const FACTORY_APP_KEY: [u8; 16] = [0x2b; 16];
/// The factory NwkKey of the LoRaWAN 1.1 run; any value will do, as for the AppKey.
const FACTORY_NWK_KEY: [u8; 16] = [0x2c; 16];
/// The DevNonce of the JoinRequest under the new key (§7 step 2); any value will do.
const DEV_NONCE: u16 = 1;
/// `cortex_m::asm::delay(n)` runs 2 (n + 1) instructions: the calibration of QEMU's counts.
const CALIBRATION_LOOPS: u32 = 1_000_000;

#[entry]
fn main() -> ! {
    let mut stack = StackProbe::new();
    let Some(mut peripherals) = cortex_m::Peripherals::take() else {
        hprintln!("FAIL: core peripherals already taken");
        debug::exit(debug::EXIT_FAILURE);
        #[allow(clippy::empty_loop)]
        loop {}
    };
    let clock = CycleCounter::start(&mut peripherals.DCB, &mut peripherals.DWT, peripherals.SYST);
    hprintln!("lorapki device-cortex-m on {}", env!("FIRMWARE_BOARD"));
    hprintln!("PROTOCOL.md §11.1 and §11.3: two runs at N = 51, device side, no heap");

    let mut report = Report::default();
    let result = run(&mut report, clock, &mut stack);
    if let Err(Fatal(what)) = result {
        report.fail(what);
    }
    hprintln!("checks: {} passed, {} failed", report.passed, report.failed);
    if report.failed == 0 {
        hprintln!("PASS");
        debug::exit(debug::EXIT_SUCCESS);
    } else {
        hprintln!("FAIL");
        debug::exit(debug::EXIT_FAILURE);
    }
    #[allow(clippy::empty_loop)]
    loop {}
}

/// A step that cannot go on; the reason was printed where it happened.
struct Fatal(&'static str);

/// Turns an error of step `what` into a [`Fatal`], printing the error.
fn step<T, E: fmt::Display>(what: &'static str, result: Result<T, E>) -> Result<T, Fatal> {
    result.map_err(|e| {
        hprintln!("  error in {}: {}", what, e);
        Fatal(what)
    })
}

#[derive(Default)]
struct Report {
    passed: u32,
    failed: u32,
}

impl Report {
    fn check(&mut self, what: &str, ok: bool) -> bool {
        if ok {
            self.passed += 1;
            hprintln!("  ok    {}", what);
        } else {
            self.fail(what);
        }
        ok
    }

    fn fail(&mut self, what: &str) {
        self.failed += 1;
        hprintln!("  FAIL  {}", what);
    }

    /// Compares a frame with its §11 value, printing both on a mismatch.
    fn frame(&mut self, what: &str, got: &[u8], expected: &[u8]) {
        if !self.check(what, got == expected) {
            hprintln!("        got      {}", Hex(got));
            hprintln!("        expected {}", Hex(expected));
        }
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The names of the events one input produced, in order.
#[derive(Default, PartialEq)]
struct Events {
    names: [&'static str; 4],
    len: usize,
}

impl Events {
    fn push(&mut self, name: &'static str) {
        if let Some(slot) = self.names.get_mut(self.len) {
            *slot = name;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[&'static str] {
        &self.names[..self.len]
    }
}

/// Drains the device's events and applies the key events to the store, in the order
/// `DeviceSession` prescribes (key store first), checking the keys against the run's vector.
fn apply_events(
    device: &mut DeviceSession<FixedEphemerals>,
    store: &mut SoftKeyStore,
    report: &mut Report,
    vector: &Vector,
) -> Result<Events, Fatal> {
    let mut events = Events::default();
    while let Some(event) = device.poll_event() {
        match event {
            DeviceEvent::RunStarted { session } => {
                events.push("RunStarted");
                report.check("the run has session number S = 5", session == SESSION);
            }
            DeviceEvent::StageNewKey(keys) => {
                events.push("StageNewKey");
                report.check(
                    "StageNewKey carries the run's AppKey",
                    keys.app_key == AesKey::from_array(vector.app_key),
                );
                report.check(
                    "and its NwkKey (none for LoRaWAN 1.0.x)",
                    keys.nwk_key == vector.nwk_key.map(AesKey::from_array),
                );
                step("staging the new key", store.stage(keys.to_root_keys()))?;
            }
            DeviceEvent::ActivateNewKey => {
                events.push("ActivateNewKey");
                step("activating the new key", store.activate())?;
            }
            DeviceEvent::Completed => events.push("Completed"),
            DeviceEvent::Failed(reason) => {
                events.push("Failed");
                hprintln!("  the run failed: {}", reason);
            }
            _ => events.push("(unknown)"),
        }
    }
    Ok(events)
}

fn expect_events(report: &mut Report, after: &str, events: &Events, expected: &[&str]) {
    if !report.check(after, events.as_slice() == expected) {
        hprintln!("        got {:?}", events.as_slice());
    }
}

/// The JoinRequest of LoRaWAN 1.0.x §6.2.4 (MHDR, JoinEUI, DevEUI, DevNonce; EUIs and DevNonce
/// little-endian on air) without its MIC: what `root_cmac` signs.
fn join_request_body() -> [u8; 19] {
    let mut body = [0u8; 19];
    body[0] = 0x00; // MHDR: JoinRequest, LoRaWAN R1
    for i in 0..8 {
        body[1 + i] = JOIN_EUI[7 - i];
        body[9 + i] = DEV_EUI[7 - i];
    }
    body[17..].copy_from_slice(&DEV_NONCE.to_le_bytes());
    body
}

/// One uplink of §11, the downlink that answers it, and the events that downlink must cause.
struct Turn {
    uplink: (&'static str, &'static [u8]),
    downlink: (&'static str, &'static [u8]),
    events: &'static [&'static str],
}

/// One run of §11: the device's LoRaWAN version, the root keys the run derives, and its frames
/// in the order of §9.1 (same-window model, N = 51).
struct Vector {
    name: &'static str,
    lorawan: LorawanVersion,
    app_key: [u8; 16],
    nwk_key: Option<[u8; 16]>,
    exchange: [Turn; 3],
}

/// The runs of §11.1 and §11.3. U1 and D1 carry only the ephemeral keys, the same in both.
const RUNS: [Vector; 2] = [
    Vector {
        name: "§11.1, LoRaWAN 1.0.x",
        lorawan: LorawanVersion::V1_0,
        app_key: APP_KEY,
        nwk_key: None,
        exchange: exchange(&U2, &D2, &U3, &D3),
    },
    Vector {
        name: "§11.3, LoRaWAN 1.1",
        lorawan: LorawanVersion::V1_1,
        app_key: APP_KEY_1_1,
        nwk_key: Some(NWK_KEY_1_1),
        exchange: exchange(&U2_1_1, &D2_1_1, &U3_1_1, &D3_1_1),
    },
];

/// The three turns of a run whose signature frames are these.
const fn exchange(
    u2: &'static [u8],
    d2: &'static [u8],
    u3: &'static [u8],
    d3: &'static [u8],
) -> [Turn; 3] {
    [
        Turn {
            uplink: ("U1 PubKeyReq", &U1),
            downlink: ("D1 PubKeyAns P0", &D1),
            events: &[],
        },
        Turn {
            uplink: ("U2 SigVerifyReq C=0", u2),
            downlink: ("D2 PubKeyAns P1", d2),
            events: &[],
        },
        Turn {
            uplink: ("U3 SigVerifyReq C=1 + KeyChangeReq", u3),
            downlink: ("D3 SigVerifyAns + PubKeyAns P2", d3),
            events: &["StageNewKey"],
        },
    ]
}

/// Counts and stack of the steps, for the summary.
#[derive(Default)]
struct Costs {
    import: u64,
    session_new: u64,
    start: u64,
    downlink: [u64; 3],
    downlink_stack: [usize; 3],
    join: u64,
}

fn run(report: &mut Report, clock: CycleCounter, stack: &mut StackProbe) -> Result<(), Fatal> {
    hprintln!(
        "boot: stack used by reset and entry: {} bytes",
        stack.mark()
    );

    // Provisioning: the identity key into slot 0 and the pinned server key, once for both runs.
    let mut soft = SoftBackend::new(NoEntropy);
    let identity = Secret::from_array(DEVICE_IDENTITY_PRIVATE);
    let (public, import) = clock.measure(|| soft.identity_import(SLOT, &identity));
    let public = step("identity import", public)?;
    report.check(
        "identity key imported into slot 0; its public key is §11's",
        *public.as_bytes() == DEVICE_IDENTITY_PUBLIC,
    );
    let server_public = step(
        "pinned server key",
        PublicKey::from_compressed_unchecked(SERVER_PUBLIC),
    )?;
    let mut backend =
        FixedEphemerals::new(soft, Secret::from_array(DEVICE_EPHEMERAL_PRIVATE), clock);

    let mut first = None;
    for vector in &RUNS {
        hprintln!("run {}:", vector.name);
        backend.next_run(Secret::from_array(DEVICE_EPHEMERAL_PRIVATE));
        let costs = run_vector(report, clock, stack, &mut backend, server_public, vector)?;
        // The measurements reported are those of the first run; the second repeats its work.
        first.get_or_insert((costs, backend.profile));
    }
    if let Some((mut costs, profile)) = first {
        costs.import = import;
        summary(clock, &costs, &profile, stack);
    }
    Ok(())
}

/// One run of §11 from a factory-provisioned key store to the activated new root keys.
fn run_vector(
    report: &mut Report,
    clock: CycleCounter,
    stack: &mut StackProbe,
    backend: &mut FixedEphemerals,
    server_public: PublicKey,
    vector: &Vector,
) -> Result<Costs, Fatal> {
    let now = Instant::from_millis(0);
    let mut costs = Costs::default();
    let mut store = SoftKeyStore::new();
    step(
        "factory provisioning",
        store.provision_factory(RootKeys {
            app_key: AesKey::from_array(FACTORY_APP_KEY),
            nwk_key: vector.nwk_key.map(|_| AesKey::from_array(FACTORY_NWK_KEY)),
        }),
    )?;
    let factory_mic = step(
        "JoinRequest MIC under the factory key",
        store.root_cmac(
            RootKeySlot::Active,
            RootKeyKind::AppKey,
            &[&join_request_body()],
        ),
    )?;

    // The session: DevEUI, JoinEUI, the run's LoRaWAN version, the pinned server key, last
    // session 4.
    let config = DeviceConfig::new(DEV_EUI, JOIN_EUI, vector.lorawan, SLOT, server_public);
    let persistent = DevicePersistent {
        last_session: Some(LAST_SESSION),
        consecutive_failures: 0,
    };
    let status = step("key store status", store.status())?;
    let (device, counts) =
        clock.measure(|| DeviceSession::new(&mut *backend, config, persistent, status));
    costs.session_new = counts;
    let mut device = step("DeviceSession::new", device)?;
    hprintln!(
        "sizes: DeviceSession {} B, backend {} B, key store {} B (all on the stack)",
        core::mem::size_of::<DeviceSession<FixedEphemerals>>(),
        core::mem::size_of::<FixedEphemerals>(),
        core::mem::size_of::<SoftKeyStore>(),
    );
    hprintln!("provisioning: stack {} bytes", stack.mark());

    let (started, counts) = clock.measure(|| device.start(&mut *backend, now));
    costs.start = counts;
    step("start", started)?;
    let events = apply_events(&mut device, &mut store, report, vector)?;
    expect_events(report, "start: RunStarted", &events, &["RunStarted"]);
    hprintln!("start (ephemeral key): stack {} bytes", stack.mark());

    // The exchange of §9.1: three uplinks, each answered in its RX window.
    for (i, turn) in vector.exchange.iter().enumerate() {
        let mut buf = [0u8; N];
        let transmit = step(
            "poll_transmit",
            device.poll_transmit(&mut *backend, now, N, &mut buf),
        )?;
        let Some(transmit) = transmit else {
            return Err(Fatal("the device has no uplink to send"));
        };
        report.frame(turn.uplink.0, &buf[..transmit.len], turn.uplink.1);
        let (handled, counts) =
            clock.measure(|| handle_downlink(&mut device, backend, now, turn.downlink.1));
        costs.downlink[i] = counts;
        step(turn.downlink.0, handled)?;
        costs.downlink_stack[i] = stack.mark();
        let events = apply_events(&mut device, &mut store, report, vector)?;
        expect_events(report, turn.downlink.0, &events, turn.events);
    }
    let mut buf = [0u8; N];
    let fourth = step(
        "poll_transmit",
        device.poll_transmit(&mut *backend, now, N, &mut buf),
    )?;
    report.check(
        "no fourth FPort-1 uplink (U4 is the JoinRequest)",
        fourth.is_none(),
    );

    // §7: the JoinRequest goes out under the staged key; its JoinAccept verifies.
    report.check(
        "rejoining with the staged key",
        device.status() == DeviceStatus::Rejoining
            && device.join_key() == Some(RootKeySlot::Staged),
    );
    let staged_mic = step(
        "JoinRequest MIC under the staged key",
        store.root_cmac(
            RootKeySlot::Staged,
            RootKeyKind::AppKey,
            &[&join_request_body()],
        ),
    )?;
    let (joined, counts) =
        clock.measure(|| device.handle_join_result(&mut *backend, now, RootKeySlot::Staged, true));
    costs.join = counts;
    step("handle_join_result", joined)?;
    let events = apply_events(&mut device, &mut store, report, vector)?;
    expect_events(
        report,
        "JoinAccept under the staged key: ActivateNewKey, Completed",
        &events,
        &["ActivateNewKey", "Completed"],
    );

    // The store now joins with the run's root keys, and only with them.
    let status = step("key store status", store.status())?;
    report.check(
        "key store: generation 1 active, nothing staged",
        status
            == KeyStoreStatus {
                active_generation: 1,
                staged: false,
            },
    );
    let mut active_mic = [0u8; 16];
    let keys = [
        (RootKeyKind::AppKey, Some(vector.app_key)),
        (RootKeyKind::NwkKey, vector.nwk_key),
    ];
    for (kind, key) in keys {
        let Some(key) = key else { continue };
        let active = step(
            "JoinRequest MIC under the active key",
            store.root_cmac(RootKeySlot::Active, kind, &[&join_request_body()]),
        )?;
        let expected = step(
            "AES-CMAC under the run's key",
            backend
                .inner
                .aes128_cmac(&AesKey::from_array(key), &[&join_request_body()]),
        )?;
        if kind == RootKeyKind::AppKey {
            report.check(
                "the active AppKey is the run's (JoinRequest MIC)",
                active == expected && staged_mic == expected && factory_mic != expected,
            );
            active_mic = active;
        } else {
            report.check(
                "the active NwkKey is the run's (JoinRequest MIC)",
                active == expected,
            );
        }
    }
    hprintln!(
        "        JoinRequest MIC {} (factory key: {})",
        Hex(&active_mic[..4]),
        Hex(&factory_mic[..4])
    );
    report.check(
        "device idle again, session 5 persisted, no failure counted",
        device.status() == DeviceStatus::Idle
            && device.persistent()
                == DevicePersistent {
                    last_session: Some(SESSION),
                    consecutive_failures: 0,
                },
    );
    report.check("no random draw in the whole run", backend.random_draws == 0);
    hprintln!("rejoin and checks: stack {} bytes", stack.mark());
    Ok(costs)
}

/// `DeviceSession::handle_downlink`, kept out of line: with LTO its whole path (key agreement,
/// key schedule, signing, verification) would otherwise be inlined into the caller, whose frame
/// would then hold it for the whole run.
#[inline(never)]
fn handle_downlink(
    device: &mut DeviceSession<FixedEphemerals>,
    backend: &mut FixedEphemerals,
    now: Instant,
    frame: &[u8],
) -> Result<(), lorapki_proto::Error> {
    device.handle_downlink(backend, now, frame)
}

/// Prints the measurements.
fn summary(clock: CycleCounter, costs: &Costs, profile: &Profile, stack: &StackProbe) {
    let (_, ticks) = clock.measure(|| cortex_m::asm::delay(CALIBRATION_LOOPS));
    let instructions = 2 * (u64::from(CALIBRATION_LOOPS) + 1);
    let unit = match clock.source() {
        Source::Dwt => {
            hprintln!("counter: DWT.CYCCNT (core clock cycles)");
            "cycles"
        }
        Source::SysTick => {
            hprintln!("counter: SysTick on the core clock (no DWT cycle counter here, as in QEMU)");
            let tenths = (10 * instructions).checked_div(ticks).unwrap_or(0);
            hprintln!(
                "         calibration: {} instructions = {} ticks; under QEMU -icount shift=0 \
                 a tick is {}.{} instructions",
                instructions,
                ticks,
                tenths / 10,
                tenths % 10
            );
            "ticks"
        }
    };
    let per_tick = |counts: u64| match clock.source() {
        Source::Dwt => counts,
        Source::SysTick => counts.saturating_mul(instructions) / ticks.max(1),
    };
    let row = |what: &str, counts: u64| {
        hprintln!(
            "  {:<44} {:>10} {}  ~{:>11} instructions",
            what,
            counts,
            unit,
            per_tick(counts)
        );
    };
    let timed = |what: &str, t: &Timing| {
        hprintln!(
            "  {:<44} {:>10} {}  ~{:>11} instructions  ({} call{})",
            what,
            t.counts,
            unit,
            per_tick(t.counts),
            t.calls,
            if t.calls == 1 { "" } else { "s" }
        );
    };
    hprintln!("cost of the device's steps in the first run (QEMU counts, not silicon timings):");
    row("identity import (public key = d x G)", costs.import);
    row("DeviceSession::new (key IDs)", costs.session_new);
    row("start (ephemeral key = e x G)", costs.start);
    row(
        "D1: ECDH + key schedule + signing, total",
        costs.downlink[0],
    );
    timed("  EPH_S validation/decompression", &profile.point_decode);
    timed("  ECDH P-384", &profile.ecdh);
    timed("  HKDF-SHA384 (extract + expands)", &profile.hkdf);
    timed("  ECDSA P-384 sign", &profile.sign);
    row("D2: signature part 1 stored", costs.downlink[1]);
    row(
        "D3: server signature verification, total",
        costs.downlink[2],
    );
    timed("  ECDSA P-384 verify", &profile.verify);
    row("handle_join_result", costs.join);
    timed("ephemeral key (fixed scalar x G)", &profile.ephemeral);
    hprintln!(
        "stack: D1 {} B, D2 {} B, D3 {} B; high-water mark of the run {} B (of {} B)",
        costs.downlink_stack[0],
        costs.downlink_stack[1],
        costs.downlink_stack[2],
        stack.deepest(),
        stack.region()
    );
    hprintln!(
        "static RAM (.data + .bss): {} B; heap: none (no allocator is linked)",
        stack::static_ram()
    );
}

/// A fault (a stack overflow caught by MSPLIM among them) ends the run with a failure at once,
/// instead of leaving QEMU spinning until the script's timeout.
// cortex-m-rt requires the HardFault handler to be an `unsafe fn`; its body does nothing unsafe.
#[allow(unsafe_code)]
#[cortex_m_rt::exception]
unsafe fn HardFault(frame: &cortex_m_rt::ExceptionFrame) -> ! {
    hprintln!("FAIL: HardFault at pc {:#010x}", frame.pc());
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}
