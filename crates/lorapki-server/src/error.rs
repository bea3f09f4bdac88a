//! The one error type of the crate.

use std::fmt;

/// One problem in an import file, with the line it was found on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    /// The line of the record (for CSV, the line its record starts on).
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Everything that can go wrong in the server library. No variant carries key material.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// An import file had errors; nothing was imported. At most the first 100 are listed.
    Import(Vec<ImportError>),
    /// The configuration is invalid.
    Config(String),
    /// A key file, the key-encryption key or a sealed value is unusable.
    Key(String),
    /// The storage KEK is not the one the database was sealed with (its check value, or for a
    /// database without one its oldest sealed row, does not open under it).
    KekMismatch {
        /// Where the KEK came from (`LORAPKI_KEK`, a file, …), if known; never the key.
        origin: Option<String>,
    },
    /// A device certificate did not verify.
    Certificate(String),
    /// The database failed.
    Store(String),
    /// Another instance changed the same device first; the operation is retried.
    Conflict,
    /// The device is not registered.
    UnknownDevice,
    /// An input was refused by the protocol state machine.
    Protocol(lorapki_proto::Error),
    /// A file or socket operation failed.
    Io(std::io::Error),
    /// The MQTT connection failed.
    Mqtt(String),
    /// A malformed network input (JSON, base64, hex, size).
    Malformed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Import(errors) => {
                write!(
                    f,
                    "import refused, nothing imported ({} errors)",
                    errors.len()
                )?;
                for e in errors {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
            Self::Config(m) => write!(f, "configuration: {m}"),
            Self::Key(m) => write!(f, "key: {m}"),
            Self::KekMismatch { origin } => {
                f.write_str(
                    "the storage KEK does not match the one this database was sealed with",
                )?;
                if let Some(origin) = origin {
                    write!(f, " (KEK taken from {origin})")?;
                }
                f.write_str("; nothing was changed")
            }
            Self::Certificate(m) => write!(f, "certificate: {m}"),
            Self::Store(m) => write!(f, "store: {m}"),
            Self::Conflict => f.write_str("concurrent update of the same device"),
            Self::UnknownDevice => f.write_str("device not registered"),
            Self::Protocol(e) => write!(f, "protocol: {e}"),
            Self::Io(e) => write!(f, "i/o: {e}"),
            Self::Mqtt(m) => write!(f, "mqtt: {m}"),
            Self::Malformed(m) => write!(f, "malformed input: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Store(format!("migration: {e}"))
    }
}

impl From<lorapki_proto::Error> for Error {
    fn from(e: lorapki_proto::Error) -> Self {
        Self::Protocol(e)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
