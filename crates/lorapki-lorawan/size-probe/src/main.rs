//! A Cortex-M image that links the whole device side: the `lorawan-device` MAC behind the
//! lorapki-lorawan adapter, the exchange's `DeviceSession`, the software backend and key store.
//! It exists to be measured, not run: its radio does nothing and its generator is a counter.
//!
//! ```text
//! cargo build --release                          # MacCrypto: one AES, one CMAC
//! cargo build --release --features default-crypto # the MAC on lorawan's aes 0.8 / cmac 0.7
//! arm-none-eabi-size target/thumbv7em-none-eabihf/release/lorapki-lorawan-size-probe
//! ```
//!
//! Every input goes through `black_box`, so that nothing is folded away.
#![no_std]
#![no_main]

use core::convert::Infallible;
use core::hint::black_box;

use cortex_m_rt::entry;
use lorapki_crypto::{AesKey, CryptoBackend, KeySlot, RootKeyStore, RootKeys};
use lorapki_crypto_soft::{SoftBackend, SoftKeyStore};
use lorapki_lorawan::lorawan_device::Timings;
use lorapki_lorawan::lorawan_device::nb_device::radio::{Event, PhyRxTx, Response, RxQuality};
use lorapki_lorawan::lorawan_device::region::{Configuration, Region};
use lorapki_lorawan::{Config, LorapkiDevice, PersistError, PersistentState};
use lorapki_proto::{DeviceConfig, Instant, LorawanVersion};
use rand_core::{TryCryptoRng, TryRng};

#[cfg(not(feature = "default-crypto"))]
type MacCrypto = lorapki_lorawan::MacCrypto;
#[cfg(feature = "default-crypto")]
type MacCrypto = lorapki_lorawan::lorawan_device::default_crypto::DefaultFactory;

/// A counter posing as a generator: for measuring code size only, never for keys.
struct Counter(u64);

impl TryRng for Counter {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.try_next_u64().map(|v| v as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.0 = black_box(self.0.wrapping_add(0x9e37_79b9_7f4a_7c15));
        Ok(self.0)
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dest.chunks_mut(8) {
            let v = self.try_next_u64()?.to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}

impl TryCryptoRng for Counter {}

/// A radio that completes everything at once and "receives" whatever `black_box` says.
struct Radio {
    packet: [u8; 64],
    len: usize,
}

#[derive(Debug)]
struct Interrupt;

impl PhyRxTx for Radio {
    type PhyEvent = Interrupt;
    type PhyError = ();
    type PhyResponse = ();

    const MAX_RADIO_POWER: u8 = 14;

    fn get_mut_radio(&mut self) -> &mut Self {
        self
    }

    fn get_received_packet(&mut self) -> &mut [u8] {
        self.len = black_box(self.len) % self.packet.len();
        &mut self.packet[..self.len]
    }

    fn handle_event(&mut self, event: Event<'_, Self>) -> Result<Response<Self>, ()> {
        match event {
            Event::TxRequest(_, frame) => {
                black_box(frame);
                Ok(Response::TxDone(black_box(0)))
            }
            Event::RxRequest(config) => {
                black_box(config);
                Ok(Response::Rxing)
            }
            Event::CancelRx => Ok(Response::Idle),
            Event::Phy(_) => Ok(Response::RxDone(RxQuality::new(-90, 7))),
        }
    }
}

impl Timings for Radio {
    fn get_rx_window_offset_ms(&self) -> i32 {
        0
    }
    fn get_rx_window_duration_ms(&self) -> u32 {
        500
    }
}

#[entry]
fn main() -> ! {
    let mut backend = SoftBackend::new(Counter(black_box(1)));
    let server = backend.identity_generate(KeySlot(1));
    let mut store = SoftKeyStore::new();
    let _ = store.provision_factory(RootKeys {
        app_key: AesKey::from_array(black_box([0x2b; 16])),
        nwk_key: None,
    });
    if let Ok(server) = server {
        let session = DeviceConfig::new(
            black_box([1; 8]),
            black_box([2; 8]),
            LorawanVersion::V1_0,
            KeySlot(0),
            server,
        );
        let _ = backend.identity_generate(KeySlot(0));
        let persist = |state: &PersistentState| -> Result<(), PersistError> {
            black_box(state.to_bytes());
            Ok(())
        };
        let radio = Radio {
            packet: black_box([0; 64]),
            len: 0,
        };
        let device = LorapkiDevice::<_, _, _, _, MacCrypto>::with_crypto(
            Config::new(session),
            Configuration::new(Region::EU868),
            radio,
            backend,
            store,
            persist,
            black_box(PersistentState::default()),
        );
        if let Ok(mut device) = device {
            loop {
                let now = Instant::from_millis(black_box(0));
                let _ = black_box(device.poll(now));
                let _ = black_box(device.handle_timeout(now));
                let _ = black_box(device.handle_radio_event(now, Interrupt));
                let _ = black_box(device.send(black_box(2), black_box(&[0; 8]), false));
                while let Some(event) = device.poll_event() {
                    black_box(event);
                }
                if let Some(downlink) = device.take_downlink() {
                    black_box(downlink.data.len());
                }
            }
        }
    }
    loop {
        black_box(0);
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        black_box(0);
    }
}
