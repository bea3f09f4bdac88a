//! The device registry's input side: device records from CSV or JSON files, validated completely
//! before anything is stored (line-numbered errors; the store imports all or nothing).
//!
//! A record names the device (DevEUI, JoinEUI, LoRaWAN version), its factory root keys (AppKey,
//! and NwkKey for 1.1) and its identity public key, given either raw (SEC1 hex, or a PEM
//! `PUBLIC KEY`) or as an X.509 certificate that must be issued by one of the configured
//! manufacturer CAs (checked here, at import).

use std::collections::HashSet;
use std::fmt;
use std::time::SystemTime;

use lorapki_crypto::{AesKey, PublicKey};
use p384::ecdsa::signature::hazmat::PrehashVerifier;
use p384::elliptic_curve::sec1::ToSec1Point;
use p384::pkcs8::DecodePublicKey;
use serde::Deserialize;
use sha2::Digest;
use x509_cert::Certificate;
use x509_cert::der::{self, Decode, Encode};

use crate::error::{Error, ImportError, Result};
use crate::eui::{Eui64, truncate};
use crate::lorawan::MacVersion;

/// Files larger than this are refused before parsing.
pub const MAX_IMPORT_BYTES: usize = 64 * 1024 * 1024;
/// At most this many errors are reported.
const MAX_REPORTED_ERRORS: usize = 100;

/// How the identity key of a device was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentitySource {
    /// A raw public key (SEC1 or PEM).
    Raw,
    /// An X.509 certificate that chains to a manufacturer CA.
    Certificate,
}

impl IdentitySource {
    /// The text stored in the registry.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Certificate => "certificate",
        }
    }
}

/// A validated device record, ready to be stored.
pub struct NewDevice {
    /// DevEUI.
    pub dev_eui: Eui64,
    /// JoinEUI.
    pub join_eui: Eui64,
    /// LoRaWAN MAC version.
    pub mac_version: MacVersion,
    /// Factory AppKey.
    pub app_key: AesKey,
    /// Factory NwkKey (LoRaWAN 1.1 only).
    pub nwk_key: Option<AesKey>,
    /// The device's identity public key (validated point, compressed).
    pub identity: PublicKey,
    /// How it was given.
    pub identity_source: IdentitySource,
    /// The server key the device pinned (its key id), if not the primary one.
    pub server_key_id: Option<[u8; 8]>,
}

impl fmt::Debug for NewDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewDevice")
            .field("dev_eui", &self.dev_eui)
            .field("join_eui", &self.join_eui)
            .field("mac_version", &self.mac_version)
            .field("identity_source", &self.identity_source)
            .finish_non_exhaustive()
    }
}

/// A record as it appears in a file (both formats use these field names).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    dev_eui: String,
    join_eui: String,
    #[serde(alias = "mac_version")]
    lorawan_version: String,
    app_key: String,
    #[serde(default)]
    nwk_key: Option<String>,
    #[serde(default)]
    identity_key: Option<String>,
    #[serde(default)]
    certificate: Option<String>,
    #[serde(default)]
    server_key_id: Option<String>,
}

/// The manufacturer CAs that device certificates must chain to (P-384 keys; ECDSA with SHA-256
/// or SHA-384). A device certificate must be issued directly by one of them.
#[derive(Default)]
pub struct TrustAnchors {
    cas: Vec<Certificate>,
}

impl fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustAnchors({} CAs)", self.cas.len())
    }
}

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_SECP384R1: &str = "1.3.132.0.34";
const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";

impl TrustAnchors {
    /// No CA: certificates are refused, raw keys accepted.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// Loads one or more PEM certificates (a CA bundle).
    ///
    /// # Errors
    ///
    /// [`Error::Certificate`] if the text holds no certificate or one is not a P-384 key.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let cas = Certificate::load_pem_chain(pem.as_bytes())
            .map_err(|e| Error::Certificate(format!("CA bundle: {e}")))?;
        if cas.is_empty() {
            return Err(Error::Certificate("CA bundle holds no certificate".into()));
        }
        for ca in &cas {
            p384_key(ca).map_err(|e| Error::Certificate(format!("CA: {e}")))?;
        }
        Ok(Self { cas })
    }

    /// How many CAs are configured.
    #[must_use]
    pub fn len(&self) -> usize {
        self.cas.len()
    }

    /// Whether none is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.cas.is_empty()
    }

    /// Verifies a device certificate (PEM, or DER as base64 or hex) at time `now` and returns its
    /// P-384 public key.
    ///
    /// # Errors
    ///
    /// [`Error::Certificate`] with the reason.
    pub fn verify(&self, text: &str, now: SystemTime) -> Result<PublicKey> {
        let cert = parse_certificate(text)?;
        let tbs = cert.tbs_certificate();
        let ca = self
            .cas
            .iter()
            .find(|ca| ca.tbs_certificate().subject() == tbs.issuer())
            .ok_or_else(|| {
                Error::Certificate("not issued by a configured manufacturer CA".into())
            })?;
        let ca_key = p384::ecdsa::VerifyingKey::from(&p384_key(ca)?);
        let tbs_der = tbs
            .to_der()
            .map_err(|e| Error::Certificate(format!("encoding: {e}")))?;
        let sig_bytes = cert
            .signature()
            .as_bytes()
            .ok_or_else(|| Error::Certificate("signature bit string".into()))?;
        let signature = p384::ecdsa::Signature::from_der(sig_bytes)
            .map_err(|_| Error::Certificate("signature is not a DER ECDSA signature".into()))?;
        let algorithm = cert.signature_algorithm().oid.to_string();
        let verified = match algorithm.as_str() {
            OID_ECDSA_SHA384 => ca_key.verify_prehash(&sha2::Sha384::digest(&tbs_der), &signature),
            OID_ECDSA_SHA256 => ca_key.verify_prehash(&sha2::Sha256::digest(&tbs_der), &signature),
            other => {
                return Err(Error::Certificate(format!(
                    "signature algorithm {other} (ECDSA with SHA-256 or SHA-384 expected)"
                )));
            }
        };
        verified
            .map_err(|_| Error::Certificate("signature does not verify under the CA".into()))?;
        for (what, c) in [("certificate", &cert), ("CA", ca)] {
            let validity = c.tbs_certificate().validity();
            if now < validity.not_before.to_system_time() {
                return Err(Error::Certificate(format!("{what} not yet valid")));
            }
            if now > validity.not_after.to_system_time() {
                return Err(Error::Certificate(format!("{what} expired")));
            }
        }
        let key = p384_key(&cert)?;
        compress(&key)
    }
}

fn parse_certificate(text: &str) -> Result<Certificate> {
    let t = text.trim();
    if t.starts_with("-----BEGIN") {
        use x509_cert::der::DecodePem;
        return Certificate::from_pem(t.as_bytes())
            .map_err(|e| Error::Certificate(format!("PEM: {e}")));
    }
    let der = if t.len().is_multiple_of(2) && t.chars().all(|c| c.is_ascii_hexdigit()) {
        hex::decode(t).map_err(|_| Error::Certificate("hex".into()))?
    } else {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(t)
            .map_err(|_| Error::Certificate("neither PEM, hex nor base64 DER".into()))?
    };
    Certificate::from_der(&der).map_err(|e| Error::Certificate(format!("DER: {e}")))
}

fn p384_key(cert: &Certificate) -> Result<p384::PublicKey> {
    let spki = cert.tbs_certificate().subject_public_key_info();
    if spki.algorithm.oid.to_string() != OID_EC_PUBLIC_KEY {
        return Err(Error::Certificate("key is not an EC key".into()));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
        .map(|oid| oid.to_string());
    if curve.as_deref() != Some(OID_SECP384R1) {
        return Err(Error::Certificate("key is not on P-384".into()));
    }
    let bytes = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| Error::Certificate("key bit string".into()))?;
    p384::PublicKey::from_sec1_bytes(bytes)
        .map_err(|_| Error::Certificate("key is not a valid P-384 point".into()))
}

fn compress(key: &p384::PublicKey) -> Result<PublicKey> {
    let point = key.to_sec1_point(true);
    let out: [u8; 49] = point
        .as_bytes()
        .try_into()
        .map_err(|_| Error::Malformed("point encoding".into()))?;
    PublicKey::from_compressed_unchecked(out).map_err(|_| Error::Malformed("point encoding".into()))
}

/// Parses a raw identity public key: SEC1 hex (compressed or uncompressed) or a PEM
/// `PUBLIC KEY` (SubjectPublicKeyInfo). The point is validated.
///
/// # Errors
///
/// [`Error::Malformed`] if it is neither or not a valid P-384 point.
pub fn parse_public_key(text: &str) -> Result<PublicKey> {
    let t = text.trim();
    let key = if t.starts_with("-----BEGIN") {
        p384::PublicKey::from_public_key_pem(t)
            .map_err(|_| Error::Malformed("PEM public key is not a P-384 key".into()))?
    } else {
        let bytes = hex::decode(t.strip_prefix("0x").unwrap_or(t))
            .map_err(|_| Error::Malformed("identity key is neither SEC1 hex nor PEM".into()))?;
        p384::PublicKey::from_sec1_bytes(&bytes)
            .map_err(|_| Error::Malformed("identity key is not a valid P-384 point".into()))?
    };
    compress(&key)
}

fn parse_aes_key(name: &str, text: &str) -> Result<AesKey> {
    let mut key = [0u8; 16];
    let t = text.trim();
    if t.len() != 32 || hex::decode_to_slice(t, &mut key).is_err() {
        return Err(Error::Malformed(format!("{name} must be 32 hex digits")));
    }
    let out = AesKey::from_array(key);
    zeroize::Zeroize::zeroize(&mut key);
    Ok(out)
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

impl Record {
    fn validate(self, anchors: &TrustAnchors, now: SystemTime) -> Result<NewDevice> {
        let dev_eui: Eui64 = self.dev_eui.parse()?;
        let join_eui: Eui64 = self.join_eui.parse()?;
        let mac_version: MacVersion = self.lorawan_version.parse()?;
        let app_key = parse_aes_key("app_key", &self.app_key)?;
        let nwk_key = match (mac_version, non_empty(self.nwk_key)) {
            (MacVersion::V1_1, Some(k)) => Some(parse_aes_key("nwk_key", &k)?),
            (MacVersion::V1_1, None) => {
                return Err(Error::Malformed(
                    "a LoRaWAN 1.1 device needs nwk_key".into(),
                ));
            }
            (_, Some(_)) => {
                return Err(Error::Malformed(
                    "nwk_key is only for LoRaWAN 1.1 devices".into(),
                ));
            }
            (_, None) => None,
        };
        let (identity, identity_source) =
            match (non_empty(self.identity_key), non_empty(self.certificate)) {
                (Some(k), None) => (parse_public_key(&k)?, IdentitySource::Raw),
                (None, Some(c)) => {
                    if anchors.is_empty() {
                        return Err(Error::Certificate(
                            "a certificate was given but no manufacturer CA is configured".into(),
                        ));
                    }
                    (anchors.verify(&c, now)?, IdentitySource::Certificate)
                }
                (Some(_), Some(_)) => {
                    return Err(Error::Malformed(
                        "give identity_key or certificate, not both".into(),
                    ));
                }
                (None, None) => {
                    return Err(Error::Malformed(
                        "identity_key or certificate is required".into(),
                    ));
                }
            };
        let server_key_id = match non_empty(self.server_key_id) {
            None => None,
            Some(t) => {
                let mut id = [0u8; 8];
                hex::decode_to_slice(t.trim(), &mut id)
                    .map_err(|_| Error::Malformed("server_key_id must be 16 hex digits".into()))?;
                Some(id)
            }
        };
        Ok(NewDevice {
            dev_eui,
            join_eui,
            mac_version,
            app_key,
            nwk_key,
            identity,
            identity_source,
            server_key_id,
        })
    }
}

/// Collects per-record results into devices or line-numbered errors; duplicates are errors.
struct Collector {
    devices: Vec<(usize, NewDevice)>,
    errors: Vec<ImportError>,
    seen: HashSet<Eui64>,
}

impl Collector {
    fn new() -> Self {
        Self {
            devices: Vec::new(),
            errors: Vec::new(),
            seen: HashSet::new(),
        }
    }

    fn error(&mut self, line: usize, message: String) {
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(ImportError { line, message });
        }
    }

    fn push(&mut self, line: usize, result: Result<NewDevice>) {
        match result {
            Ok(device) => {
                if !self.seen.insert(device.dev_eui) {
                    self.error(
                        line,
                        format!("DevEUI {} appears twice in the file", device.dev_eui),
                    );
                } else {
                    self.devices.push((line, device));
                }
            }
            Err(e) => self.error(line, plain(&e)),
        }
    }

    fn finish(self) -> Result<Vec<(usize, NewDevice)>> {
        if self.errors.is_empty() {
            Ok(self.devices)
        } else {
            Err(Error::Import(self.errors))
        }
    }
}

fn plain(e: &Error) -> String {
    match e {
        Error::Malformed(m) | Error::Certificate(m) => m.clone(),
        other => other.to_string(),
    }
}

fn check_size(text: &str) -> Result<()> {
    if text.len() > MAX_IMPORT_BYTES {
        return Err(Error::Import(vec![ImportError {
            line: 1,
            message: format!("file larger than {MAX_IMPORT_BYTES} bytes"),
        }]));
    }
    Ok(())
}

/// Parses and validates a CSV file with a header line naming the fields `dev_eui`, `join_eui`,
/// `lorawan_version`, `app_key`, and optionally `nwk_key`, `identity_key`, `certificate`,
/// `server_key_id`.
///
/// # Errors
///
/// [`Error::Import`] listing every bad line (nothing is returned then).
pub fn parse_csv(
    text: &str,
    anchors: &TrustAnchors,
    now: SystemTime,
) -> Result<Vec<(usize, NewDevice)>> {
    check_size(text)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let mut out = Collector::new();
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            out.error(1, format!("header: {e}"));
            return out.finish();
        }
    };
    for result in reader.records() {
        match result {
            Ok(record) => {
                let line = record.position().map_or(0, |p| p.line() as usize);
                let parsed = record
                    .deserialize::<Record>(Some(&headers))
                    .map_err(|e| Error::Malformed(csv_message(&e)))
                    .and_then(|r| r.validate(anchors, now));
                out.push(line, parsed);
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                out.error(line, csv_message(&e));
            }
        }
    }
    if out.devices.is_empty() && out.errors.is_empty() {
        out.error(1, "no device records".into());
    }
    out.finish()
}

fn csv_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Deserialize { err, .. } => match err.field() {
            Some(field) => format!("field {}: {}", field + 1, err.kind()),
            None => err.kind().to_string(),
        },
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields where the header has {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "not UTF-8".into(),
        _ => e.to_string(),
    }
}

/// Parses and validates a JSON file: an array of device objects, or `{"devices": [...]}`, with
/// the same field names as the CSV format.
///
/// # Errors
///
/// [`Error::Import`] listing every bad record with the line it starts on.
pub fn parse_json(
    text: &str,
    anchors: &TrustAnchors,
    now: SystemTime,
) -> Result<Vec<(usize, NewDevice)>> {
    use serde_json::value::RawValue;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapped<'a> {
        #[serde(borrow)]
        devices: Vec<&'a RawValue>,
    }

    check_size(text)?;
    let mut out = Collector::new();
    let parsed = if text.trim_start().starts_with('{') {
        serde_json::from_str::<Wrapped<'_>>(text).map(|w| w.devices)
    } else {
        serde_json::from_str::<Vec<&RawValue>>(text)
    };
    let items = match parsed {
        Ok(items) => items,
        Err(e) => {
            // Syntax errors carry their position; a wrong shape is reported at its line too.
            let message = if e.is_syntax() || e.is_eof() {
                format!("JSON: {e}")
            } else {
                format!("JSON must be an array of devices or {{\"devices\": [...]}} ({e})")
            };
            out.error(e.line().max(1), message);
            return out.finish();
        }
    };
    let base = text.as_ptr() as usize;
    for raw in items {
        let offset = (raw.get().as_ptr() as usize).saturating_sub(base);
        let line = text
            .get(..offset)
            .map_or(1, |head| head.bytes().filter(|b| *b == b'\n').count() + 1);
        let parsed = serde_json::from_str::<Record>(raw.get())
            .map_err(|e| {
                let msg = e.to_string();
                // Drop serde_json's own position: the line is reported separately.
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
                Error::Malformed(msg)
            })
            .and_then(|r| r.validate(anchors, now));
        out.push(line, parsed);
    }
    if out.devices.is_empty() && out.errors.is_empty() {
        out.error(1, "no device records".into());
    }
    out.finish()
}

/// Parses by file name: `.json` as JSON, anything else as CSV.
///
/// # Errors
///
/// As [`parse_csv`] / [`parse_json`].
pub fn parse_file(
    name: &str,
    text: &str,
    anchors: &TrustAnchors,
    now: SystemTime,
) -> Result<Vec<(usize, NewDevice)>> {
    if name.to_ascii_lowercase().ends_with(".json") {
        parse_json(text, anchors, now)
    } else {
        parse_csv(text, anchors, now)
    }
}

/// Shortens untrusted text for messages.
#[must_use]
pub fn excerpt(s: &str) -> String {
    truncate(s, 60)
}
