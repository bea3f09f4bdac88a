//! The join server: LoRaWAN Backend Interfaces 1.0/1.1 JoinReq → JoinAns over HTTP JSON.
//!
//! It accepts a JoinRequest under the device's active root key and, while a new key is staged
//! (PROTOCOL.md §7), under the staged one too. A JoinRequest whose MIC verifies under the staged
//! key is the evidence that retires the old key: only the device (and this server) hold the new
//! key, so nobody can forge it. It activates the new key in the same transaction as the join's
//! nonces. A join under the active key changes no key: whoever knows the factory key may send
//! one, so it is no evidence of anything (§10, P2).
//!
//! Session keys go back as KeyEnvelopes: RFC 3394-wrapped under the configured KEK, or plain when
//! none is configured. Answers carry Backend Interfaces result codes (`Success`, `MICFailed`,
//! `UnknownDevEUI`, `MalformedRequest`, `JoinReqFailed`, `Other`).

use std::convert::Infallible;
use std::sync::Arc;

use lorapki_crypto::{AesKey, RootKeySlot};
use lorapki_proto::KeyAcceptance;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::eui::Eui64;
use crate::kek::WrapKek;
use crate::kek::{RootKeys, open_root_keys};
use crate::lorawan::{AcceptParams, DevNonceRule, JoinRequest, MacVersion, SessionKeys};
use crate::server::{Server, now_ms};
use crate::store::{Commit, JoinUpdate};

/// Largest accepted request body.
pub const MAX_BODY: usize = 16 * 1024;
const MAX_JOIN_NONCE: i64 = 0x00ff_ffff;
const DEV_NONCE_BITMAP_LEN: usize = 65536 / 8;

/// Join-server settings.
#[derive(Default)]
pub struct JoinServerSettings {
    /// Bearer token required in `Authorization` (none: no authentication — only behind a
    /// trusted network).
    pub token: Option<Zeroizing<String>>,
    /// KEK for the network session keys (`NwkSKey`, `FNwkSIntKey`, `SNwkSIntKey`, `NwkSEncKey`).
    pub nwk_kek: Option<WrapKek>,
    /// KEK for the `AppSKey`.
    pub app_kek: Option<WrapKek>,
}

impl std::fmt::Debug for JoinServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinServerSettings")
            .field("token", &self.token.as_ref().map(|_| "REDACTED"))
            .field("nwk_kek", &self.nwk_kek)
            .field("app_kek", &self.app_kek)
            .finish()
    }
}

/// The join server.
#[derive(Debug)]
pub struct JoinServer {
    server: Arc<Server>,
    settings: JoinServerSettings,
}

/// A Backend Interfaces result code with its description.
#[derive(Debug)]
struct Refusal {
    code: &'static str,
    description: String,
}

fn refuse(code: &'static str, description: impl Into<String>) -> Refusal {
    Refusal {
        code,
        description: description.into(),
    }
}

fn hex_field(v: &Value, name: &str) -> std::result::Result<Vec<u8>, Refusal> {
    let text = v
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| refuse("MalformedRequest", format!("{name} missing")))?;
    hex::decode(text.trim()).map_err(|_| refuse("MalformedRequest", format!("{name} is not hex")))
}

fn fixed<const N: usize>(v: &Value, name: &str) -> std::result::Result<[u8; N], Refusal> {
    hex_field(v, name)?
        .try_into()
        .map_err(|_| refuse("MalformedRequest", format!("{name} must be {N} bytes")))
}

impl JoinServer {
    /// A join server on `server`'s store.
    #[must_use]
    pub fn new(server: Arc<Server>, settings: JoinServerSettings) -> Self {
        Self { server, settings }
    }

    /// Checks an `Authorization` header value: `Bearer <token>`, the scheme in any case
    /// (RFC 9110 §11.1) and one or more spaces before the token (`1*SP`).
    #[must_use]
    pub fn authorized(&self, header: Option<&str>) -> bool {
        let Some(token) = &self.settings.token else {
            return true;
        };
        let Some((scheme, given)) = header.and_then(|h| h.split_once(' ')) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("Bearer") {
            return false;
        }
        let given = given.trim_start_matches(' ').trim_end();
        bool::from(given.as_bytes().ct_eq(token.as_bytes()))
    }

    /// Handles one request body (after authorization).
    pub async fn handle(&self, body: &[u8]) -> Value {
        let request: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                log_refusal("MalformedRequest", "body is not a JSON object");
                self.server.metrics().join_request("MalformedRequest");
                return answer(
                    &Value::Null,
                    "JoinAns",
                    &refuse("MalformedRequest", "body is not a JSON object"),
                );
            }
        };
        let message_type = request
            .get("MessageType")
            .and_then(Value::as_str)
            .unwrap_or("");
        if message_type != "JoinReq" {
            log_refusal("MalformedRequest", "only JoinReq is supported");
            self.server.metrics().join_request("MalformedRequest");
            return answer(
                &request,
                answer_type(message_type),
                &refuse("MalformedRequest", "only JoinReq is supported"),
            );
        }
        match self.join(&request).await {
            Ok(ans) => {
                self.server.metrics().join_request("Success");
                ans
            }
            Err(r) => {
                self.server.metrics().join_request(r.code);
                log_refusal(r.code, &r.description);
                answer(&request, "JoinAns", &r)
            }
        }
    }

    async fn join(&self, req: &Value) -> std::result::Result<Value, Refusal> {
        let phy = hex_field(req, "PHYPayload")?;
        let jr = JoinRequest::parse(&phy).map_err(|e| refuse("MalformedRequest", e.to_string()))?;
        let dev_eui_field: [u8; 8] = fixed(req, "DevEUI")?;
        if Eui64(dev_eui_field) != jr.dev_eui {
            return Err(refuse(
                "MalformedRequest",
                "DevEUI differs from the PHYPayload's",
            ));
        }
        let net_id: [u8; 3] = fixed(req, "SenderID")?;
        let dev_addr: [u8; 4] = fixed(req, "DevAddr")?;
        let [dl_settings]: [u8; 1] = fixed(req, "DLSettings")?;
        let rx_delay = req
            .get("RxDelay")
            .and_then(Value::as_u64)
            .and_then(|d| u8::try_from(d).ok())
            .filter(|d| *d <= 15)
            .ok_or_else(|| refuse("MalformedRequest", "RxDelay must be 0..=15"))?;
        let cf_list = match req.get("CFList").and_then(Value::as_str) {
            None | Some("") => None,
            Some(_) => Some(fixed::<16>(req, "CFList")?),
        };
        let params = |join_nonce: u32| AcceptParams {
            join_nonce,
            net_id,
            dev_addr,
            dl_settings,
            rx_delay,
            cf_list,
        };
        let dev_eui = jr.dev_eui;
        let server = &self.server;
        let _guard = server.lock_device(dev_eui).await;
        for _ in 0..8 {
            let now = now_ms();
            let device = server
                .store()
                .device(dev_eui)
                .await
                .map_err(internal)?
                .ok_or_else(|| refuse("UnknownDevEUI", "device not registered"))?;
            if device.join_eui != jr.join_eui {
                return Err(refuse("UnknownDevEUI", "JoinEUI does not match the device"));
            }
            let kek = server.kek();
            let active = open_root_keys(kek, dev_eui, &device.active_keys).map_err(internal)?;
            let staged = device
                .staged_keys
                .as_ref()
                .map(|s| open_root_keys(kek, dev_eui, s))
                .transpose()
                .map_err(internal)?;
            let v11 = device.mac_version == MacVersion::V1_1;
            let mic_key = |k: &RootKeys| -> Option<AesKey> {
                if v11 {
                    k.nwk_key.as_ref().map(AesKey::clone_secret)
                } else {
                    Some(k.app_key.clone_secret())
                }
            };
            let keys_in = |slot: RootKeySlot| match slot {
                RootKeySlot::Active => Some(&active),
                RootKeySlot::Staged => staged.as_ref(),
            };
            let verified = KeyAcceptance::new(staged.is_some()).verify(|slot| {
                let key = keys_in(slot).and_then(mic_key);
                Ok::<_, Infallible>(key.is_some_and(|k| jr.mic_verifies(&k)))
            });
            let Ok(Some(slot)) = verified else {
                return Err(refuse("MICFailed", "MIC does not verify"));
            };
            // DevNonce rules, after the MIC so that forged requests cannot burn nonces.
            let dev_nonce = i64::from(jr.dev_nonce);
            let mut used = None;
            let dev_nonce_last = match device.mac_version.dev_nonce_rule() {
                DevNonceRule::Increasing => {
                    if dev_nonce <= device.dev_nonce_last {
                        return Err(refuse(
                            "JoinReqFailed",
                            "DevNonce not greater than the last one",
                        ));
                    }
                    dev_nonce
                }
                DevNonceRule::NotReused => {
                    let mut bitmap = device
                        .dev_nonces_used
                        .clone()
                        .filter(|b| b.len() == DEV_NONCE_BITMAP_LEN)
                        .unwrap_or_else(|| vec![0; DEV_NONCE_BITMAP_LEN]);
                    let (byte, bit) = (usize::from(jr.dev_nonce / 8), jr.dev_nonce % 8);
                    if bitmap[byte] & (1 << bit) != 0 {
                        return Err(refuse("JoinReqFailed", "DevNonce already used"));
                    }
                    bitmap[byte] |= 1 << bit;
                    used = Some(bitmap);
                    dev_nonce.max(device.dev_nonce_last)
                }
            };
            let join_nonce = device.join_nonce + 1;
            if join_nonce > MAX_JOIN_NONCE {
                return Err(refuse("JoinReqFailed", "JoinNonce exhausted"));
            }
            let keys = match slot {
                RootKeySlot::Active => &active,
                RootKeySlot::Staged => staged.as_ref().unwrap_or(&active),
            };
            let p = params(u32::try_from(join_nonce).unwrap_or(0));
            let (phy_out, session_keys) = if v11 {
                let nwk = keys
                    .nwk_key
                    .as_ref()
                    .ok_or_else(|| refuse("Other", "1.1 device without NwkKey"))?;
                let (phy, k) = crate::lorawan::join_accept_1_1(nwk, &keys.app_key, &jr, &p);
                (phy, SessionKeys::V1_1(k))
            } else {
                let (phy, k) = crate::lorawan::join_accept_1_0(&keys.app_key, &jr, &p);
                (phy, SessionKeys::V1_0(k))
            };
            let mut commit = Commit::new(dev_eui, now);
            commit.device_version = Some(device.version);
            commit.join = Some(JoinUpdate {
                dev_nonce_last,
                dev_nonces_used: used,
                join_nonce,
            });
            let events = server
                .prepare_confirm(&device, slot, now, &mut commit)
                .await
                .map_err(internal)?;
            match server.store().commit(&commit).await {
                Ok(()) => {
                    server.report(dev_eui, &events);
                    info!(%dev_eui, key = ?slot, join_nonce, "JoinReq accepted");
                    return self
                        .join_ans(req, &phy_out, &session_keys)
                        .map_err(internal);
                }
                Err(Error::Conflict) => continue,
                Err(e) => return Err(internal(e)),
            }
        }
        Err(refuse("Other", "concurrent updates; try again"))
    }

    fn join_ans(&self, req: &Value, phy: &[u8], keys: &SessionKeys) -> Result<Value> {
        let mut ans = answer(req, "JoinAns", &refuse("Success", ""));
        let nwk = self.settings.nwk_kek.as_ref();
        let app = self.settings.app_kek.as_ref();
        if let Value::Object(map) = &mut ans {
            map.insert("PHYPayload".into(), Value::String(hex::encode(phy)));
            map.insert("Lifetime".into(), json!(0));
            match keys {
                SessionKeys::V1_0(k) => {
                    map.insert("NwkSKey".into(), envelope(nwk, &k.nwk_s_key)?);
                    map.insert("AppSKey".into(), envelope(app, &k.app_s_key)?);
                }
                SessionKeys::V1_1(k) => {
                    map.insert("FNwkSIntKey".into(), envelope(nwk, &k.f_nwk_s_int_key)?);
                    map.insert("SNwkSIntKey".into(), envelope(nwk, &k.s_nwk_s_int_key)?);
                    map.insert("NwkSEncKey".into(), envelope(nwk, &k.nwk_s_enc_key)?);
                    map.insert("AppSKey".into(), envelope(app, &k.app_s_key)?);
                }
            }
        }
        Ok(ans)
    }
}

/// Logs a refused request, throttled: warnings for what may be an attack (a MIC that does not
/// verify, a wrong token), information otherwise.
fn log_refusal(code: &'static str, description: &str) {
    let Some(suppressed) = crate::logthrottle::REFUSALS.admit("join", code) else {
        return;
    };
    if matches!(code, "MICFailed" | "Unauthorized") {
        warn!(code, description, suppressed, "JoinReq refused");
    } else {
        info!(code, description, suppressed, "JoinReq refused");
    }
}

fn internal(e: Error) -> Refusal {
    warn!(error = %e, "join server internal error");
    refuse("Other", "internal error")
}

/// A KeyEnvelope: wrapped under `kek` (RFC 3394) or plain.
fn envelope(kek: Option<&WrapKek>, key: &AesKey) -> Result<Value> {
    Ok(match kek {
        Some(k) => {
            json!({"KEKLabel": k.label(), "AESKey": hex::encode(k.wrap(key.expose_secret())?)})
        }
        None => json!({"KEKLabel": "", "AESKey": hex::encode(key.expose_secret())}),
    })
}

/// The message type that answers a request of type `message_type`.
fn answer_type(message_type: &str) -> &'static str {
    match message_type {
        "JoinReq" => "JoinAns",
        "RejoinReq" => "RejoinAns",
        "AppSKeyReq" => "AppSKeyAns",
        _ => "ErrorNotification",
    }
}

/// The body of a 401: an answer like the others (result `Other`), echoing the request's IDs and
/// transaction when the body is a JSON object. Nothing in the body is acted on.
fn unauthorized_answer(body: &[u8]) -> Value {
    let request = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Null,
    };
    let kind = answer_type(
        request
            .get("MessageType")
            .and_then(Value::as_str)
            .unwrap_or(""),
    );
    answer(
        &request,
        kind,
        &refuse(
            "Other",
            "unauthorized: missing or wrong bearer token (Authorization: Bearer <token>)",
        ),
    )
}

/// The answer skeleton: IDs swapped, the transaction echoed.
fn answer(req: &Value, message_type: &str, result: &Refusal) -> Value {
    let field = |name: &str| req.get(name).cloned().unwrap_or(Value::Null);
    let mut ans = json!({
        "ProtocolVersion": req.get("ProtocolVersion").and_then(Value::as_str).unwrap_or("1.0"),
        "SenderID": field("ReceiverID"),
        "ReceiverID": field("SenderID"),
        "TransactionID": field("TransactionID"),
        "MessageType": message_type,
        "Result": {"ResultCode": result.code},
    });
    if let Value::Object(map) = &mut ans {
        if !result.description.is_empty()
            && let Some(Value::Object(r)) = map.get_mut("Result")
        {
            r.insert(
                "Description".into(),
                Value::String(result.description.clone()),
            );
        }
        if let Some(t) = req.get("SenderToken") {
            map.insert("ReceiverToken".into(), t.clone());
        }
        if let Some(t) = req.get("ReceiverToken") {
            map.insert("SenderToken".into(), t.clone());
        }
    }
    ans
}

/// The HTTP routes: `POST /` (and any path) for Backend Interfaces messages.
pub fn router(js: Arc<JoinServer>) -> axum::Router {
    use axum::extract::{DefaultBodyLimit, State};
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;

    async fn post(
        State(js): State<Arc<JoinServer>>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !js.authorized(auth) {
            log_refusal("Unauthorized", "missing or wrong bearer token");
            js.server.metrics().join_request("Unauthorized");
            // RFC 6750 §3: no error code when no credentials were given.
            let challenge = if auth.is_some() {
                "Bearer error=\"invalid_token\""
            } else {
                "Bearer"
            };
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, challenge)],
                axum::Json(unauthorized_answer(&body)),
            )
                .into_response();
        }
        axum::Json(js.handle(&body).await).into_response()
    }

    axum::Router::new()
        .route("/", axum::routing::post(post))
        .route("/{*path}", axum::routing::post(post))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(js)
}
