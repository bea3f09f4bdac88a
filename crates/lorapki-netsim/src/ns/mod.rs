//! The simulated gateway + network server + join server, and the hook where the lorapki server
//! plugs in ([`Application`]), one file per part:
//!
//! * [`join_server`]: the **join server** checks JoinRequest MICs against the root keys it
//!   accepts for a device (the rule of [`lorapki_proto::KeyAcceptance`]: active, and staged while
//!   a key switch is pending), rejects DevNonces that do not increase, and answers with a
//!   JoinAccept encrypted under the key that verified; the session keys follow LoRaWAN 1.0.x. It
//!   learns keys from the application's [`KeyEvent`]s.
//! * [`network_server`]: the **network server** verifies and decrypts data uplinks (MIC, FCnt),
//!   tells the application which key verified each accepted JoinRequest
//!   ([`Application::handle_join_verified`]), hands FPort-1 payloads to the application, and
//!   schedules at most one downlink per uplink in RX1 (or RX2 when the gateway's duty cycle
//!   forbids RX1), per the [`AnswerModel`].
//! * [`model`]: the answer models and the **faults** between the network server and the
//!   application (the integration): an FPort-1 uplink payload may be delivered twice or held back
//!   behind the next one; a downlink payload may be queued twice or held back behind the next
//!   one. Loss happens on the air (see the `sim` module).
//! * [`air`]: the frames the gateway receives and transmits.
//! * [`pki`]: the lorapki server ([`PkiServer`]) as the network server's [`Application`].

pub mod air;
pub mod join_server;
pub mod model;
pub mod network_server;
pub mod pki;

pub use crate::rng::Backend;
pub use air::{Downlink, RxWindow, Uplink};
pub use join_server::{JoinAnswer, JoinRefusal, JoinServer, KeyEvent};
pub use model::{AnswerModel, Faults, LinkFaults};
pub use network_server::{Application, NetworkServer, NsConfig, NsStats};
pub use pki::{PkiServer, ServerOutcome, generate_identity, server_backend};
