//! The device registry's input side: device records from CSV or JSON files, validated completely
//! before anything is stored (line-numbered errors; the store imports all or nothing).
//!
//! A record names the device (DevEUI, JoinEUI, LoRaWAN version), its factory root keys (AppKey,
//! and NwkKey for 1.1) and its identity public key, given either raw (SEC1 hex, or a PEM
//! `PUBLIC KEY`) or as an X.509 certificate that must be issued by one of the configured
//! manufacturer CAs (checked here, at import).
//!
//! Beyond the syntax, a careful registry refuses records that are well-formed but wrong (each
//! [`Check`] can be relaxed to a warning with an [`ImportPolicy`]):
//!
//! * a certificate whose subject does not name the DevEUI it is imported for
//!   ([`Check::CertificateSubject`]; the rule is at [`names_dev_eui`]);
//! * one identity key for two devices, in the file or against the registered devices
//!   ([`Check::SharedIdentityKey`]; [`check_registered_identities`] does the latter);
//! * an all-zero AppKey or NwkKey ([`Check::ZeroKey`]).
//!
//! The DevEUIs `0000000000000000` and `ffffffffffffffff` are always refused: they are no
//! device's EUI-64.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
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

/// A check at import that an operator may relax from refusing the import to a warning
/// (`lorapki-server devices import --allow <name>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Check {
    /// A certificate's subject names the DevEUI it is imported for ([`names_dev_eui`]).
    CertificateSubject,
    /// No two devices share an identity key (in the file and against the registry).
    SharedIdentityKey,
    /// Neither the AppKey nor the NwkKey is all zero.
    ZeroKey,
}

impl Check {
    /// Every check.
    pub const ALL: [Self; 3] = [
        Self::CertificateSubject,
        Self::SharedIdentityKey,
        Self::ZeroKey,
    ];

    /// The name an operator gives (`--allow <name>`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::CertificateSubject => "certificate-subject",
            Self::SharedIdentityKey => "shared-identity-key",
            Self::ZeroKey => "zero-key",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Check {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s.trim())
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown import check {:?} (certificate-subject, shared-identity-key or \
                     zero-key)",
                    truncate(s, 40)
                ))
            })
    }
}

/// Which [`Check`]s only warn. The default refuses on every one.
#[derive(Clone, Debug, Default)]
pub struct ImportPolicy {
    allowed: HashSet<Check>,
}

impl ImportPolicy {
    /// This policy with `check` relaxed to a warning.
    #[must_use]
    pub fn allowing(mut self, check: Check) -> Self {
        self.allowed.insert(check);
        self
    }

    /// Whether `check` only warns.
    #[must_use]
    pub fn allows(&self, check: Check) -> bool {
        self.allowed.contains(&check)
    }

    /// A failed check: the error refusing the import, or `Ok` with the warning to show when the
    /// policy allows it.
    fn finding(&self, check: Check, message: &str) -> Result<String> {
        if self.allows(check) {
            Ok(format!("{message} (imported: --allow {check})"))
        } else {
            Err(Error::Malformed(format!(
                "{message} (--allow {check} imports it with a warning)"
            )))
        }
    }
}

/// Validated records with the warnings of the checks the policy relaxed.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The devices with the lines their records start on.
    pub devices: Vec<(usize, NewDevice)>,
    /// What the relaxed checks found, by line.
    pub warnings: Vec<ImportError>,
}

impl Parsed {
    /// The identity keys of the parsed devices (to look up who else holds them).
    #[must_use]
    pub fn identities(&self) -> Vec<PublicKey> {
        self.devices.iter().map(|(_, d)| d.identity).collect()
    }
}

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

    /// The import field it was given in.
    #[must_use]
    pub const fn field(self) -> &'static str {
        match self {
            Self::Raw => "identity_key",
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
        self.verify_certificate(&parse_certificate(text)?, now)
    }

    fn verify_certificate(&self, cert: &Certificate, now: SystemTime) -> Result<PublicKey> {
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
        for (what, c) in [("certificate", cert), ("CA", ca)] {
            let validity = c.tbs_certificate().validity();
            if now < validity.not_before.to_system_time() {
                return Err(Error::Certificate(format!("{what} not yet valid")));
            }
            if now > validity.not_after.to_system_time() {
                return Err(Error::Certificate(format!("{what} expired")));
            }
        }
        let key = p384_key(cert)?;
        compress(&key)
    }
}

const OID_COMMON_NAME: &str = "2.5.4.3";
const OID_SERIAL_NUMBER: &str = "2.5.4.5";

/// The names in a certificate that may name its device: the subject's CN and serialNumber
/// attributes, and the subjectAltName's DNS names, URIs, e-mail addresses and directory names'
/// CN and serialNumber attributes, as (label, text). String values are read as they are
/// (PrintableString, UTF8String, IA5String); a subjectAltName that does not decode is ignored.
fn device_names(cert: &Certificate) -> Vec<(&'static str, String)> {
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;

    fn attributes(name: &x509_cert::name::Name, out: &mut Vec<(&'static str, String)>) {
        for atav in name.iter() {
            let label = match atav.oid.to_string().as_str() {
                OID_COMMON_NAME => "CN",
                OID_SERIAL_NUMBER => "serialNumber",
                _ => continue,
            };
            out.push((
                label,
                String::from_utf8_lossy(atav.value.value()).into_owned(),
            ));
        }
    }

    let tbs = cert.tbs_certificate();
    let mut out = Vec::new();
    attributes(tbs.subject(), &mut out);
    if let Ok(Some((_, SubjectAltName(names)))) = tbs.get_extension::<SubjectAltName>() {
        for name in &names {
            match name {
                GeneralName::DnsName(t) => out.push(("DNS", t.to_string())),
                GeneralName::UniformResourceIdentifier(t) => out.push(("URI", t.to_string())),
                GeneralName::Rfc822Name(t) => out.push(("email", t.to_string())),
                GeneralName::DirectoryName(n) => attributes(n, &mut out),
                _ => {}
            }
        }
    }
    out
}

/// Whether `text` names `dev_eui`: it holds the DevEUI's 16 hex digits in any case, contiguous
/// (`70b3d57e00000001`) or with `-` or `:` between the bytes (`70-B3-D5-7E-00-00-00-01`), and
/// not as part of a longer run of hex digits (`170b3d57e00000001` does not name
/// `70b3d57e00000001`).
#[must_use]
pub fn text_names_dev_eui(text: &str, dev_eui: Eui64) -> bool {
    let bytes: Vec<String> = dev_eui.0.iter().map(|b| format!("{b:02x}")).collect();
    let text = text.to_ascii_lowercase();
    [bytes.concat(), bytes.join("-"), bytes.join(":")]
        .iter()
        .any(|form| {
            text.match_indices(form.as_str()).any(|(i, m)| {
                let before = text.get(..i).and_then(|t| t.chars().next_back());
                let after = text.get(i + m.len()..).and_then(|t| t.chars().next());
                !before.is_some_and(|c| c.is_ascii_hexdigit())
                    && !after.is_some_and(|c| c.is_ascii_hexdigit())
            })
        })
}

/// The registry's rule that a device certificate names its device: the subject's CN or
/// serialNumber attribute, or one of the subjectAltName's DNS names, URIs (e.g. RFC 9039's
/// `urn:dev:mac:70b3d57e00000001`), e-mail addresses or directory names (their CN or
/// serialNumber), names the DevEUI as [`text_names_dev_eui`] says.
///
/// # Errors
///
/// [`Error::Certificate`] if `text` is not a certificate.
pub fn names_dev_eui(text: &str, dev_eui: Eui64) -> Result<bool> {
    let cert = parse_certificate(text)?;
    Ok(subject_names_dev_eui(&cert, dev_eui))
}

fn subject_names_dev_eui(cert: &Certificate, dev_eui: Eui64) -> bool {
    device_names(cert)
        .iter()
        .any(|(_, text)| text_names_dev_eui(text, dev_eui))
}

/// `certificate: …` for the message of a certificate that does not name `dev_eui`.
fn subject_mismatch(cert: &Certificate, dev_eui: Eui64) -> String {
    let names = device_names(cert);
    let found = if names.is_empty() {
        "it has no CN, serialNumber or subjectAltName".to_owned()
    } else {
        let list: Vec<String> = names
            .iter()
            .take(4)
            .map(|(label, text)| format!("{label}={}", excerpt(text)))
            .collect();
        format!("it names {}", list.join(", "))
    };
    format!(
        "certificate: the subject does not name DevEUI {dev_eui} ({found}; its CN, serialNumber \
         or a subjectAltName must hold the DevEUI's 16 hex digits)"
    )
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
/// [`Error::Malformed`] if it is neither, has the wrong length for a SEC1 P-384 point, or is
/// not a valid P-384 point; the message starts with the field, `identity_key: `.
pub fn parse_public_key(text: &str) -> Result<PublicKey> {
    let t = text.trim();
    let key = if t.starts_with("-----BEGIN") {
        p384::PublicKey::from_public_key_pem(t).map_err(|_| {
            Error::Malformed("identity_key: the PEM public key is not a P-384 key".into())
        })?
    } else {
        let bytes = hex::decode(t.strip_prefix("0x").unwrap_or(t)).map_err(|_| {
            Error::Malformed("identity_key: neither SEC1 hex nor a PEM public key".into())
        })?;
        if bytes.len() != 49 && bytes.len() != 97 {
            return Err(Error::Malformed(format!(
                "identity_key: {} bytes; a P-384 public key is 49 (compressed) or 97 \
                 (uncompressed) bytes",
                bytes.len()
            )));
        }
        p384::PublicKey::from_sec1_bytes(&bytes)
            .map_err(|_| Error::Malformed("identity_key: not a valid P-384 point".into()))?
    };
    compress(&key)
}

/// A factory root key: 32 hex digits; all zero is a [`Check::ZeroKey`] finding.
fn parse_aes_key(
    name: &str,
    text: &str,
    policy: &ImportPolicy,
    warnings: &mut Vec<String>,
) -> Result<AesKey> {
    let mut key = [0u8; 16];
    let t = text.trim();
    if t.len() != 32 || hex::decode_to_slice(t, &mut key).is_err() {
        return Err(Error::Malformed(format!("{name} must be 32 hex digits")));
    }
    if key == [0; 16] {
        warnings.push(policy.finding(
            Check::ZeroKey,
            &format!("{name}: all zero (a factory key must be secret)"),
        )?);
    }
    let out = AesKey::from_array(key);
    zeroize::Zeroize::zeroize(&mut key);
    Ok(out)
}

/// An EUI-64 field; `name` is named in the error.
fn parse_eui(name: &str, text: &str) -> Result<Eui64> {
    text.parse()
        .map_err(|e| Error::Malformed(format!("{name}: {}", plain(&e))))
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

impl Record {
    /// The device, with the warnings of the checks `policy` relaxed.
    fn validate(
        self,
        anchors: &TrustAnchors,
        now: SystemTime,
        policy: &ImportPolicy,
    ) -> Result<(NewDevice, Vec<String>)> {
        let mut warnings = Vec::new();
        let dev_eui = parse_eui("dev_eui", &self.dev_eui)?;
        if dev_eui.0 == [0; 8] || dev_eui.0 == [0xff; 8] {
            return Err(Error::Malformed(format!(
                "dev_eui: {dev_eui} is reserved (the all-zero and all-ones EUI-64s name no device)"
            )));
        }
        let join_eui = parse_eui("join_eui", &self.join_eui)?;
        let mac_version: MacVersion = self
            .lorawan_version
            .parse()
            .map_err(|e| Error::Malformed(format!("lorawan_version: {}", plain(&e))))?;
        let app_key = parse_aes_key("app_key", &self.app_key, policy, &mut warnings)?;
        let nwk_key = match (mac_version, non_empty(self.nwk_key)) {
            (MacVersion::V1_1, Some(k)) => {
                Some(parse_aes_key("nwk_key", &k, policy, &mut warnings)?)
            }
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
                            "certificate: given, but no manufacturer CA is configured \
                             (server.ca_file)"
                                .into(),
                        ));
                    }
                    let field = |e: Error| match e {
                        Error::Certificate(m) => Error::Certificate(format!("certificate: {m}")),
                        other => other,
                    };
                    let cert = parse_certificate(&c).map_err(field)?;
                    let key = anchors.verify_certificate(&cert, now).map_err(field)?;
                    if !subject_names_dev_eui(&cert, dev_eui) {
                        warnings.push(policy.finding(
                            Check::CertificateSubject,
                            &subject_mismatch(&cert, dev_eui),
                        )?);
                    }
                    (key, IdentitySource::Certificate)
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
        let device = NewDevice {
            dev_eui,
            join_eui,
            mac_version,
            app_key,
            nwk_key,
            identity,
            identity_source,
            server_key_id,
        };
        Ok((device, warnings))
    }
}

/// Collects per-record results into devices or line-numbered errors; a DevEUI twice is an
/// error, an identity key twice a [`Check::SharedIdentityKey`] finding.
struct Collector<'p> {
    policy: &'p ImportPolicy,
    parsed: Parsed,
    errors: Vec<ImportError>,
    seen: HashSet<Eui64>,
    identities: HashMap<PublicKey, (Eui64, usize)>,
}

impl<'p> Collector<'p> {
    fn new(policy: &'p ImportPolicy) -> Self {
        Self {
            policy,
            parsed: Parsed::default(),
            errors: Vec::new(),
            seen: HashSet::new(),
            identities: HashMap::new(),
        }
    }

    fn error(&mut self, line: usize, message: String) {
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(ImportError { line, message });
        }
    }

    fn push(&mut self, line: usize, result: Result<(NewDevice, Vec<String>)>) {
        let (device, mut warnings) = match result {
            Ok(ok) => ok,
            Err(e) => return self.error(line, plain(&e)),
        };
        if !self.seen.insert(device.dev_eui) {
            return self.error(
                line,
                format!("DevEUI {} appears twice in the file", device.dev_eui),
            );
        }
        if let Some((other, other_line)) = self.identities.get(&device.identity) {
            let message = format!(
                "{}: the same key as DevEUI {other} on line {other_line} (one identity key per \
                 device)",
                device.identity_source.field()
            );
            match self.policy.finding(Check::SharedIdentityKey, &message) {
                Ok(warning) => warnings.push(warning),
                Err(e) => return self.error(line, plain(&e)),
            }
        } else {
            self.identities
                .insert(device.identity, (device.dev_eui, line));
        }
        for message in warnings {
            self.parsed.warnings.push(ImportError { line, message });
        }
        self.parsed.devices.push((line, device));
    }

    fn finish(self) -> Result<Parsed> {
        if self.errors.is_empty() {
            Ok(self.parsed)
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
/// `server_key_id`; every [`Check`] refuses.
///
/// # Errors
///
/// [`Error::Import`] listing every bad line (nothing is returned then).
pub fn parse_csv(
    text: &str,
    anchors: &TrustAnchors,
    now: SystemTime,
) -> Result<Vec<(usize, NewDevice)>> {
    parse_csv_with(text, anchors, now, &ImportPolicy::default()).map(|p| p.devices)
}

/// [`parse_csv`] under `policy`.
///
/// # Errors
///
/// As [`parse_csv`].
pub fn parse_csv_with(
    text: &str,
    anchors: &TrustAnchors,
    now: SystemTime,
    policy: &ImportPolicy,
) -> Result<Parsed> {
    check_size(text)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let mut out = Collector::new(policy);
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
                    .and_then(|r| r.validate(anchors, now, policy));
                out.push(line, parsed);
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                out.error(line, csv_message(&e));
            }
        }
    }
    if out.parsed.devices.is_empty() && out.errors.is_empty() {
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
    parse_json_with(text, anchors, now, &ImportPolicy::default()).map(|p| p.devices)
}

/// [`parse_json`] under `policy`.
///
/// # Errors
///
/// As [`parse_json`].
pub fn parse_json_with(
    text: &str,
    anchors: &TrustAnchors,
    now: SystemTime,
    policy: &ImportPolicy,
) -> Result<Parsed> {
    use serde_json::value::RawValue;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapped<'a> {
        #[serde(borrow)]
        devices: Vec<&'a RawValue>,
    }

    check_size(text)?;
    let mut out = Collector::new(policy);
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
            .and_then(|r| r.validate(anchors, now, policy));
        out.push(line, parsed);
    }
    if out.parsed.devices.is_empty() && out.errors.is_empty() {
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
    parse_file_with(name, text, anchors, now, &ImportPolicy::default()).map(|p| p.devices)
}

/// [`parse_file`] under `policy`.
///
/// # Errors
///
/// As [`parse_csv`] / [`parse_json`].
pub fn parse_file_with(
    name: &str,
    text: &str,
    anchors: &TrustAnchors,
    now: SystemTime,
    policy: &ImportPolicy,
) -> Result<Parsed> {
    if name.to_ascii_lowercase().ends_with(".json") {
        parse_json_with(text, anchors, now, policy)
    } else {
        parse_csv_with(text, anchors, now, policy)
    }
}

/// The one-identity-key-per-device check against the registered devices, to run before
/// [`Store::import_devices`](crate::Store::import_devices): `registered` are the registered
/// devices holding one of the file's keys ([`Parsed::identities`], looked up with
/// [`Store::devices_with_identities`](crate::Store::devices_with_identities)). A key that already
/// belongs to another registered device refuses the import (every such line is listed), or with
/// [`Check::SharedIdentityKey`] allowed adds a warning to `parsed`. (The registry is read outside
/// the import's transaction: two imports running at the same time are not checked against each
/// other.)
///
/// # Errors
///
/// [`Error::Import`].
pub fn check_registered_identities(
    registered: &[(Eui64, PublicKey)],
    parsed: &mut Parsed,
    policy: &ImportPolicy,
) -> Result<()> {
    let mut owners: HashMap<PublicKey, Vec<Eui64>> = HashMap::new();
    for (dev_eui, key) in registered {
        owners.entry(*key).or_default().push(*dev_eui);
    }
    let mut errors = Vec::new();
    for (line, d) in &parsed.devices {
        // The device itself, already registered, is refused by the import as such.
        let Some(other) = owners
            .get(&d.identity)
            .and_then(|list| list.iter().find(|e| **e != d.dev_eui))
        else {
            continue;
        };
        let message = format!(
            "{}: the key of DevEUI {other}, already registered (one identity key per device)",
            d.identity_source.field()
        );
        match policy.finding(Check::SharedIdentityKey, &message) {
            Ok(message) => parsed.warnings.push(ImportError {
                line: *line,
                message,
            }),
            Err(e) => {
                if errors.len() < MAX_REPORTED_ERRORS {
                    errors.push(ImportError {
                        line: *line,
                        message: plain(&e),
                    });
                }
            }
        }
    }
    if errors.is_empty() {
        parsed.warnings.sort_by_key(|w| w.line);
        Ok(())
    } else {
        Err(Error::Import(errors))
    }
}

/// Shortens untrusted text for messages.
#[must_use]
pub fn excerpt(s: &str) -> String {
    truncate(s, 60)
}
