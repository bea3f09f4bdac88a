//! Hand-off of new root keys to ChirpStack's own key store (`DeviceService` over gRPC), for
//! deployments where ChirpStack is the join server (feature `chirpstack-grpc`).
//!
//! ChirpStack keeps one root key per device, so writing the new key when it is staged would
//! strand a device that has not staged it yet. Instead ChirpStack is switched only when the
//! device shows which key it uses: a JoinRequest that fails ChirpStack's MIC check is reported
//! as an `UPLINK_MIC` log event, and while a new key is staged that means the device uses the
//! *other* key — so the key ChirpStack holds is swapped (old ↔ new) and the device's next
//! JoinRequest under the same key joins. The device alternates between its staged and active
//! key (PROTOCOL.md §7), so it meets the key ChirpStack holds. A successful join (the `join`
//! event) while ChirpStack holds the new key activates it here too (the old one is retired); a
//! join under the old key changes nothing (anyone who knows the factory key can make one).
//!
//! Each step reads ChirpStack's key and acts on it under the device's lock, so that a MIC
//! failure (which anyone can provoke on the air) never swaps the key between the moment a join
//! is attributed to the new key and the moment the new key is activated. Once a device has no
//! staged key, a MIC failure puts its active key back into ChirpStack if ChirpStack holds
//! another one, so ChirpStack and the registry always converge on the key the device holds.
//!
//! The `log` and `join` events come from the broker: in this mode its ACL is part of what is
//! trusted (only ChirpStack may publish `application/+/device/+/event/#`; see the README), and
//! the connection to it is TLS by default. With this server as the join server instead, no
//! broker event changes a key.
//!
//! Which key ChirpStack holds is always read back from ChirpStack (`GetKeys`) rather than
//! remembered, so a crash between two steps cannot make this side wrong. For LoRaWAN 1.0.x
//! devices ChirpStack stores the AppKey in `nwk_key`.

use std::sync::Arc;

/// The ChirpStack API definitions and the gRPC library this module is built on (for tests and
/// callers that build a `DeviceService` themselves).
pub use {chirpstack_api, tonic};

use chirpstack_api::api::device_service_client::DeviceServiceClient;
use chirpstack_api::api::{DeviceKeys, GetDeviceKeysRequest, UpdateDeviceKeysRequest};
use lorapki_crypto::{AesKey, RootKeySlot};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::eui::Eui64;
use crate::kek::{RootKeys, open_root_keys};
use crate::lorawan::MacVersion;
use crate::server::Server;
use crate::store::DeviceRow;

/// What a MIC-failure report led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MicOutcome {
    /// No key is staged for the device, or ChirpStack holds a key this server does not know:
    /// nothing was changed.
    Ignored,
    /// ChirpStack now holds this key of the device.
    Switched(RootKeySlot),
}

/// The hand-off client.
pub struct KeyHandoff {
    server: Arc<Server>,
    channel: Channel,
    token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for KeyHandoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyHandoff")
            .field("token", &self.token.as_ref().map(|_| "REDACTED"))
            .finish_non_exhaustive()
    }
}

fn grpc(call: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    move |source| Error::Grpc {
        call,
        source: Box::new(source),
    }
}

impl KeyHandoff {
    /// A client for ChirpStack's gRPC API at `url` (e.g. `https://chirpstack:8080`, with `tls`
    /// from [`crate::config::Config::chirpstack_grpc_tls`]) with an API token. Connects lazily.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a bad URL.
    pub fn new(
        server: Arc<Server>,
        url: &str,
        token: Option<Zeroizing<String>>,
        tls: Option<ClientTlsConfig>,
    ) -> Result<Self> {
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| Error::Config(format!("[chirpstack_grpc] server = {url}: {e}")))?;
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| Error::Config(format!("[chirpstack_grpc] server = {url}: {e}")))?;
        }
        let channel = endpoint
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(10))
            .connect_lazy();
        Ok(Self {
            server,
            channel,
            token,
        })
    }

    fn request<T>(&self, message: T) -> Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            let value = format!("Bearer {}", token.as_str())
                .parse()
                .map_err(|_| Error::Config("chirpstack_grpc.api_token is not ASCII".into()))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }

    async fn keys(&self, dev_eui: Eui64) -> Result<DeviceKeys> {
        let mut client = DeviceServiceClient::new(self.channel.clone());
        let response = client
            .get_keys(self.request(GetDeviceKeysRequest {
                dev_eui: dev_eui.to_string(),
            })?)
            .await
            .map_err(grpc("DeviceService.GetKeys"))?;
        response
            .into_inner()
            .device_keys
            .ok_or_else(|| Error::Store("ChirpStack returned no device keys".into()))
    }

    /// Which of the device's keys ChirpStack holds (`None`: neither).
    fn held(
        device: &DeviceRow,
        cs: &DeviceKeys,
        active: &RootKeys,
        staged: &RootKeys,
    ) -> Option<RootKeySlot> {
        let root = |k: &RootKeys| -> Option<String> {
            if device.mac_version == MacVersion::V1_1 {
                k.nwk_key.as_ref().map(|n| hex::encode(n.expose_secret()))
            } else {
                Some(hex::encode(k.app_key.expose_secret()))
            }
        };
        let held = Zeroizing::new(cs.nwk_key.to_ascii_lowercase());
        if root(active).is_some_and(|k| Zeroizing::new(k).as_str() == held.as_str()) {
            Some(RootKeySlot::Active)
        } else if root(staged).is_some_and(|k| Zeroizing::new(k).as_str() == held.as_str()) {
            Some(RootKeySlot::Staged)
        } else {
            None
        }
    }

    /// The device's active keys and, if one is staged, its staged keys.
    fn open(&self, device: &DeviceRow) -> Result<(RootKeys, Option<RootKeys>)> {
        let kek = self.server.kek();
        let active = open_root_keys(kek, device.dev_eui, &device.active_keys)?;
        let staged = match &device.staged_keys {
            Some(staged) => Some(open_root_keys(kek, device.dev_eui, staged)?),
            None => None,
        };
        Ok((active, staged))
    }

    /// Writes `keys` as the device's root key in ChirpStack.
    async fn write(&self, device: &DeviceRow, current: &DeviceKeys, keys: &RootKeys) -> Result<()> {
        let hex_key = |k: &AesKey| hex::encode(k.expose_secret());
        let (nwk_key, app_key) = if device.mac_version == MacVersion::V1_1 {
            let nwk = keys
                .nwk_key
                .as_ref()
                .ok_or_else(|| Error::Key("1.1 device without NwkKey".into()))?;
            (hex_key(nwk), hex_key(&keys.app_key))
        } else {
            (hex_key(&keys.app_key), "0".repeat(32))
        };
        let update = UpdateDeviceKeysRequest {
            device_keys: Some(DeviceKeys {
                dev_eui: device.dev_eui.to_string(),
                nwk_key,
                app_key,
                gen_app_key: current.gen_app_key.clone(),
            }),
        };
        let mut client = DeviceServiceClient::new(self.channel.clone());
        let result = client.update_keys(self.request(update)?).await;
        result.map_err(grpc("DeviceService.UpdateKeys"))?;
        Ok(())
    }

    /// ChirpStack reported a JoinRequest of `dev_eui` whose MIC failed (`UPLINK_MIC`).
    ///
    /// # Errors
    ///
    /// Store or gRPC errors (nothing was changed then, or ChirpStack holds the other key and the
    /// next MIC failure swaps it back: either way the device is not stranded).
    pub async fn on_mic_failure(&self, dev_eui: Eui64) -> Result<MicOutcome> {
        let _guard = self.server.lock_device(dev_eui).await;
        let Some(device) = self.server.store().device(dev_eui).await? else {
            return Ok(MicOutcome::Ignored);
        };
        let (active, staged) = self.open(&device)?;
        let current = self.keys(dev_eui).await?;
        let Some(staged) = staged else {
            // No key is staged: ChirpStack must hold the active one. If it holds another (a swap
            // that raced an activation in an earlier version, or an operator's edit), put the
            // active key back: the device holds it.
            if Self::held(&device, &current, &active, &active) == Some(RootKeySlot::Active) {
                return Ok(MicOutcome::Ignored);
            }
            self.write(&device, &current, &active).await?;
            warn!(%dev_eui, "ChirpStack held another root key than the active one; restored");
            return Ok(MicOutcome::Switched(RootKeySlot::Active));
        };
        let Some(held) = Self::held(&device, &current, &active, &staged) else {
            warn!(%dev_eui, "ChirpStack holds a root key unknown here; not switching");
            return Ok(MicOutcome::Ignored);
        };
        let (target, keys) = match held {
            RootKeySlot::Active => (RootKeySlot::Staged, &staged),
            RootKeySlot::Staged => (RootKeySlot::Active, &active),
        };
        self.write(&device, &current, keys).await?;
        info!(%dev_eui, key = ?target, "ChirpStack's root key switched after a MIC failure");
        Ok(MicOutcome::Switched(target))
    }

    /// The device joined at ChirpStack (the `join` event): confirms the key ChirpStack holds.
    ///
    /// # Errors
    ///
    /// Store or gRPC errors.
    pub async fn on_join(&self, dev_eui: Eui64) -> Result<Option<RootKeySlot>> {
        // One lock over reading ChirpStack's key and acting on it: a MIC failure handled in
        // between would swap the key back, and the registry would activate a key ChirpStack no
        // longer holds.
        let guard = self.server.lock_device(dev_eui).await;
        let Some(device) = self.server.store().device(dev_eui).await? else {
            return Ok(None);
        };
        let (active, Some(staged)) = self.open(&device)? else {
            return Ok(None);
        };
        let current = self.keys(dev_eui).await?;
        let held = Self::held(&device, &current, &active, &staged);
        if held == Some(RootKeySlot::Staged) {
            self.server
                .join_verified(&guard, dev_eui, RootKeySlot::Staged)
                .await?;
        }
        Ok(held)
    }
}
