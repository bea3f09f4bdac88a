//! The lorapki device logic on a PC: one device and one server run a complete rekey over a
//! simulated Class A link, and every FPort-1 frame is printed and decoded.
//!
//! ```text
//! cargo run -p lorapki-device-desktop [-- PAYLOADS [same-window|next-uplink]]
//! ```
//!
//! `PAYLOADS` are the maximum application payloads of the data rate: `N` (the same both ways),
//! `UP/DOWN` (e.g. `11/242`), or a data rate's name (see [`DATA_RATES`]: `eu868-dr0` = 51/51, the
//! default; `us915-dr0` = 11/242; `as923-dwell-dr2` = 11/11; …). Keys come from the operating
//! system's RNG; nothing secret is printed (the new AppKey appears only as a fingerprint, compared
//! between the two sides).

use std::process::ExitCode;

use getrandom::SysRng;
use lorapki_crypto::{
    AesKey, CryptoBackend, KeySlot, RootKeyKind, RootKeySlot, RootKeyStore, RootKeys,
};
use lorapki_crypto_soft::{SoftBackend, SoftKeyStore};
use lorapki_proto::{
    DeviceConfig, DeviceEvent, DevicePersistent, DeviceRecord, DeviceSession, Duration, Instant,
    LorawanVersion, ServerConfig, ServerEndpoint, ServerEvent,
};
use lorapki_wire::{Command, Commands};

/// `println!` that ends the program quietly when standard output is closed early (`| head`)
/// instead of panicking, and with a clear error on any other write failure.
macro_rules! out {
    ($($arg:tt)*) => {
        emit(format_args!($($arg)*))
    };
}

fn emit(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

const DEV_EUI: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0x00, 0x00, 0x01];
const JOIN_EUI: [u8; 8] = [0x70, 0xb3, 0xd5, 0x7e, 0xd0, 0x00, 0x00, 0x00];
const FACTORY_APP_KEY: [u8; 16] = [0x2b; 16];
const SLOT: KeySlot = KeySlot(0);

type Backend = SoftBackend<SysRng>;

/// Named data rates: (name, maximum uplink payload, maximum downlink payload, label), the rows
/// of `benches/airtime.md`.
const DATA_RATES: [(&str, usize, usize, &str); 6] = [
    ("eu868-dr0", 51, 51, "EU868 DR0"),
    ("eu868-dr3", 115, 115, "EU868 DR3"),
    ("eu868-dr5", 222, 222, "EU868 DR5"),
    ("us915-dr0", 11, 242, "US915 DR0"),
    ("us915-dr3", 242, 242, "US915 DR3"),
    ("as923-dwell-dr2", 11, 11, "AS923 DR2 with dwell time"),
];

/// The maximum FPort-1 payloads of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Payloads {
    up: usize,
    down: usize,
    /// The data rate's label, when named.
    label: Option<&'static str>,
}

impl Payloads {
    /// `N`, `UP/DOWN` or a name of [`DATA_RATES`].
    fn parse(arg: &str) -> Result<Self, String> {
        if let Some(&(_, up, down, label)) = DATA_RATES
            .iter()
            .find(|(name, ..)| name.eq_ignore_ascii_case(arg))
        {
            return Ok(Self {
                up,
                down,
                label: Some(label),
            });
        }
        let size = |t: &str| match t.trim().parse::<usize>() {
            Ok(n) if (11..=242).contains(&n) => Ok(n),
            _ => Err(format!("{t:?} is not a payload size in 11..=242")),
        };
        let (up, down) = match arg.split_once('/') {
            Some((up, down)) => (size(up)?, size(down)?),
            None => {
                let n = size(arg)?;
                (n, n)
            }
        };
        let label = DATA_RATES
            .iter()
            .find(|(_, u, d, _)| (*u, *d) == (up, down))
            .map(|(.., label)| *label);
        Ok(Self { up, down, label })
    }
}

impl std::fmt::Display for Payloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "N = {} up / {} down", self.up, self.down)?;
        if let Some(label) = self.label {
            write!(f, " ({label})")?;
        }
        Ok(())
    }
}

fn usage() -> String {
    let names: Vec<&str> = DATA_RATES.iter().map(|(name, ..)| *name).collect();
    format!(
        "usage: device-desktop [N | UP/DOWN | {}] [same-window|next-uplink]\n\
         (payload sizes in 11..=242; default eu868-dr0 = 51/51, same-window)",
        names.join(" | ")
    )
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let payloads = match args
        .next()
        .as_deref()
        .map_or(Payloads::parse("eu868-dr0"), Payloads::parse)
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let same_window = match args.next().as_deref() {
        None | Some("same-window") => true,
        Some("next-uplink") => false,
        Some(other) => {
            eprintln!(
                "unknown network-server model {other:?}: same-window or next-uplink\n{}",
                usage()
            );
            return ExitCode::from(2);
        }
    };
    if args.next().is_some() {
        eprintln!("{}", usage());
        return ExitCode::from(2);
    }
    match run(payloads, same_window) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(payloads: Payloads, same_window: bool) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let mut device_backend: Backend = SoftBackend::new(SysRng);
    let mut server_backend: Backend = SoftBackend::new(SysRng);
    // Manufacture: the device's identity key is generated inside its backend; the server's public
    // key is pinned in the device; the device's public key is registered at the server.
    let device_public = device_backend
        .identity_generate(SLOT)
        .map_err(|e| err(&e))?;
    let server_public = server_backend
        .identity_generate(SLOT)
        .map_err(|e| err(&e))?;
    let mut store = SoftKeyStore::new();
    store
        .provision_factory(RootKeys {
            app_key: AesKey::from_array(FACTORY_APP_KEY),
            nwk_key: None,
        })
        .map_err(|e| err(&e))?;

    let mut config =
        DeviceConfig::new(DEV_EUI, JOIN_EUI, LorawanVersion::V1_0, SLOT, server_public);
    config.retransmit_interval = Duration::from_secs(10);
    let status = store.status().map_err(|e| err(&e))?;
    let mut device = DeviceSession::new(
        &mut device_backend,
        config,
        DevicePersistent::default(),
        status,
    )
    .map_err(|e| err(&e))?;
    let mut server =
        ServerEndpoint::new(&mut server_backend, ServerConfig::new(SLOT, server_public));
    let record = DeviceRecord {
        dev_eui: DEV_EUI,
        join_eui: JOIN_EUI,
        lorawan: LorawanVersion::V1_0,
        identity: device_public,
    };
    let mut join_server_staged: Option<AesKey> = None;

    out!(
        "lorapki: rekey of DevEUI {} at {payloads}, {} model",
        hex(&DEV_EUI),
        if same_window {
            "same-window"
        } else {
            "next-uplink"
        }
    );
    let mut now = Instant::from_millis(0);
    device
        .start(&mut device_backend, now)
        .map_err(|e| err(&e))?;
    let (mut uplinks, mut downlinks) = (0u32, 0u32);
    let mut queued: Option<Vec<u8>> = None;
    for _ in 0..200 {
        while let Some(event) = server.poll_event() {
            if let ServerEvent::StageNewKey { keys, .. } = &event {
                join_server_staged = Some(keys.app_key.clone_secret());
            }
            out!("  server: {}", server_event(&event));
        }
        while let Some(event) = device.poll_event() {
            out!("  device: {event:?}");
            if let DeviceEvent::RunStarted { session } = &event {
                out!(
                    "          (S = {session}: the run's 6-bit session number; a device that never \
                     ran draws its first at random, each later run takes the next, mod 64; the \
                     server accepts any S for a device's first run — PROTOCOL.md §5.1, §8)"
                );
            }
            match event {
                DeviceEvent::StageNewKey(keys) => {
                    store.stage(keys.to_root_keys()).map_err(|e| err(&e))?
                }
                DeviceEvent::ActivateNewKey => store.activate().map_err(|e| err(&e))?,
                DeviceEvent::Completed => {
                    return finish(
                        &mut store,
                        &mut server_backend,
                        join_server_staged,
                        uplinks,
                        downlinks,
                    );
                }
                DeviceEvent::Failed(reason) => return Err(format!("rekey failed: {reason}")),
                _ => {}
            }
        }
        if let Some(slot) = device.join_key() {
            uplinks += 1;
            // The join server accepts the staged key (a real one checks the JoinRequest MIC).
            let accepted = slot == RootKeySlot::Staged && join_server_staged.is_some();
            out!(
                "U{uplinks:<2} JoinRequest under the {slot:?} key -> {}",
                if accepted { "JoinAccept" } else { "no answer" }
            );
            device
                .handle_join_result(&mut device_backend, now, slot, accepted)
                .map_err(|e| err(&e))?;
            if accepted {
                server.handle_join_verified(&DEV_EUI, slot);
            }
            continue;
        }
        let mut buf = [0u8; 242];
        let Some(t) = device
            .poll_transmit(&mut device_backend, now, payloads.up, &mut buf)
            .map_err(|e| err(&e))?
        else {
            now = device
                .poll_timeout()
                .unwrap_or(now)
                .max(now.saturating_add(Duration::from_secs(1)));
            continue;
        };
        uplinks += 1;
        let uplink = &buf[..t.len];
        out!("U{uplinks:<2} {:>3} B  {}", uplink.len(), describe(uplink));
        if !same_window && let Some(answer) = queued.take() {
            downlinks += 1;
            deliver(&mut device, &mut device_backend, now, &answer, downlinks)?;
        }
        let _ = server.handle_uplink(&mut server_backend, now, &DEV_EUI, Some(&record), uplink);
        let mut down = [0u8; 242];
        if let Some(t) = server
            .poll_transmit(&DEV_EUI, payloads.down, &mut down)
            .map_err(|e| err(&e))?
        {
            if same_window {
                downlinks += 1;
                deliver(
                    &mut device,
                    &mut device_backend,
                    now,
                    &down[..t.len],
                    downlinks,
                )?;
            } else {
                queued = Some(down[..t.len].to_vec());
            }
        }
        now = now.saturating_add(Duration::from_secs(3));
    }
    Err("no completion after 200 steps".into())
}

fn deliver(
    device: &mut DeviceSession<Backend>,
    backend: &mut Backend,
    now: Instant,
    frame: &[u8],
    index: u32,
) -> Result<(), String> {
    out!("D{index:<2} {:>3} B  {}", frame.len(), describe(frame));
    device
        .handle_downlink(backend, now, frame)
        .map_err(|e| e.to_string())
}

fn finish(
    store: &mut SoftKeyStore,
    backend: &mut Backend,
    join_server_key: Option<AesKey>,
    uplinks: u32,
    downlinks: u32,
) -> Result<(), String> {
    let key = join_server_key.ok_or("the join server holds no new key")?;
    let probe: [&[u8]; 1] = [b"lorapki key fingerprint"];
    let device_mac = store
        .root_cmac(RootKeySlot::Active, RootKeyKind::AppKey, &probe)
        .map_err(|e| e.to_string())?;
    let server_mac = lorapki_crypto::AesBackend::aes128_cmac(backend, &key, &probe)
        .map_err(|e| e.to_string())?;
    out!("rekey completed: {uplinks} uplinks (incl. the rejoin), {downlinks} FPort-1 downlinks");
    out!(
        "new AppKey fingerprint: device {}, join server {} ({})",
        hex(&device_mac[..4]),
        hex(&server_mac[..4]),
        if device_mac == server_mac {
            "equal"
        } else {
            "DIFFERENT"
        }
    );
    if device_mac == server_mac {
        Ok(())
    } else {
        Err("the two sides derived different keys".into())
    }
}

/// A server event, the DevEUI in hex as everywhere else.
fn server_event(event: &ServerEvent) -> String {
    match event {
        ServerEvent::SessionStarted { dev_eui, session } => {
            format!(
                "SessionStarted {{ dev_eui: {}, session: {session} }}",
                hex(dev_eui)
            )
        }
        ServerEvent::StageNewKey { dev_eui, keys } => {
            format!(
                "StageNewKey {{ dev_eui: {}, keys: {keys:?} }}",
                hex(dev_eui)
            )
        }
        ServerEvent::ActivateNewKey { dev_eui } => {
            format!("ActivateNewKey {{ dev_eui: {} }}", hex(dev_eui))
        }
        ServerEvent::Completed { dev_eui } => {
            format!("Completed {{ dev_eui: {} }}", hex(dev_eui))
        }
        ServerEvent::Failed { dev_eui, reason } => {
            format!("Failed {{ dev_eui: {}, reason: {reason:?} }}", hex(dev_eui))
        }
        other => format!("{other:?}"),
    }
}

/// A one-line decoding of a FRMPayload, through the codec.
fn describe(payload: &[u8]) -> String {
    let mut parts = Vec::new();
    for command in Commands::new(payload) {
        parts.push(match command {
            Ok(Command::PubKeyReq(c)) => format!("PubKeyReq(S={})", c.session().value()),
            Ok(Command::PubKeyAns(c)) => format!(
                "PubKeyAns(S={}, part {})",
                c.session().value(),
                c.part_index()
            ),
            Ok(Command::SigVerifyReq(c)) => format!(
                "SigVerifyReq(S={}, chunk {})",
                c.session().value(),
                c.chunk()
            ),
            Ok(Command::SigVerifyAns(c)) => {
                format!("SigVerifyAns(S={}, {:?})", c.session().value(), c.code())
            }
            Ok(Command::KeyChangeReq(_)) => "KeyChangeReq".to_string(),
            Ok(Command::Abort(c)) => format!("Abort(S={}, {:?})", c.session().value(), c.reason()),
            Ok(Command::Fragment(c)) => format!(
                "Fragment(S={}, FID {}, offset {}, {} B)",
                c.session().value(),
                c.fid(),
                c.offset(),
                c.data().len()
            ),
            Ok(Command::Unknown { cid, .. }) => format!("unknown CID 0x{cid:02x}"),
            Err(e) => format!("malformed: {e}"),
        });
    }
    parts.join(" + ")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
