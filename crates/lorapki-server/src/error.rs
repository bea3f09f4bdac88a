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
    /// The database driver failed (connection, query, transaction).
    Database {
        /// What was being done, or which database (its URL without secrets), if known.
        context: Option<String>,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// A schema migration failed.
    Migration {
        /// The database (its URL without secrets).
        database: String,
        /// The migrator's error.
        source: sqlx::migrate::MigrateError,
    },
    /// The database holds something this version cannot use (a row it cannot read, a missing
    /// value it wrote itself): the text names it.
    Store(String),
    /// A crypto engine of the server core failed; the input was not applied.
    Engine(EngineFailure),
    /// Another instance changed the same device first; the operation is retried.
    Conflict,
    /// The device is not registered.
    UnknownDevice,
    /// An input was refused by the protocol state machine.
    Protocol(lorapki_proto::Error),
    /// A file or socket operation failed.
    Io(std::io::Error),
    /// A file or socket operation failed on what `at` names.
    IoAt {
        /// The file, or the setting and its value (`[join_server] bind = 127.0.0.1:8003`).
        at: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The MQTT client failed (its request queue is closed: the event loop ended).
    Mqtt(Box<rumqttc::v5::ClientError>),
    /// ChirpStack's gRPC API answered with an error (feature `chirpstack-grpc`).
    #[cfg(feature = "chirpstack-grpc")]
    Grpc {
        /// The call (`DeviceService.GetKeys`, …).
        call: &'static str,
        /// ChirpStack's status.
        source: Box<tonic::Status>,
    },
    /// A malformed network input (JSON, base64, hex, size).
    Malformed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Import(errors) => {
                let n = errors.len();
                let plural = if n == 1 { "" } else { "s" };
                write!(f, "import refused, nothing imported ({n} error{plural})")?;
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
            Self::Database {
                context: Some(c),
                source,
            } => write!(f, "store: {c}: {source}"),
            Self::Database {
                context: None,
                source,
            } => write!(f, "store: {source}"),
            Self::Migration { database, source } => {
                write!(f, "store: database {database}: migration: {source}")
            }
            Self::Store(m) => write!(f, "store: {m}"),
            Self::Engine(e) => write!(f, "crypto engine: {e}"),
            Self::Conflict => f.write_str("concurrent update of the same device"),
            Self::UnknownDevice => f.write_str("device not registered"),
            Self::Protocol(e) => write!(f, "protocol: {e}"),
            Self::Io(e) => write!(f, "i/o: {e}"),
            Self::IoAt { at, source } => write!(f, "i/o: {at}: {source}"),
            Self::Mqtt(e) => write!(f, "mqtt: {e}"),
            #[cfg(feature = "chirpstack-grpc")]
            Self::Grpc { call, source } => write!(
                f,
                "ChirpStack gRPC {call}: {} ({:?})",
                source.message(),
                source.code()
            ),
            Self::Malformed(m) => write!(f, "malformed input: {m}"),
        }
    }
}

impl Error {
    /// Turns an i/o error into [`Error::IoAt`] naming `at` (a path, or a setting and its value):
    /// `.map_err(Error::io_at(path.display()))`.
    pub fn io_at(at: impl fmt::Display) -> impl FnOnce(std::io::Error) -> Self {
        let at = at.to_string();
        move |source| Self::IoAt { at, source }
    }
}

/// The wrapped error is also in the text (`Display`), so that a one-line report is complete.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) | Self::IoAt { source: e, .. } => Some(e),
            Self::Protocol(e) => Some(e),
            Self::Database { source, .. } => Some(source),
            Self::Migration { source, .. } => Some(source),
            Self::Engine(EngineFailure::Task(e)) => Some(e),
            Self::Mqtt(e) => Some(&**e),
            #[cfg(feature = "chirpstack-grpc")]
            Self::Grpc { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<sqlx::Error> for Error {
    fn from(source: sqlx::Error) -> Self {
        Self::Database {
            context: None,
            source,
        }
    }
}

impl From<rumqttc::v5::ClientError> for Error {
    fn from(e: rumqttc::v5::ClientError) -> Self {
        Self::Mqtt(Box::new(e))
    }
}

impl From<EngineFailure> for Error {
    fn from(e: EngineFailure) -> Self {
        Self::Engine(e)
    }
}

/// How a crypto engine of the server core failed.
#[non_exhaustive]
#[derive(Debug)]
pub enum EngineFailure {
    /// A task panicked while it held the engine; the engine is not used again.
    Poisoned,
    /// The blocking task that ran the crypto panicked or was cancelled.
    Task(tokio::task::JoinError),
    /// The device pinned a server-key index the engine does not hold.
    NoSuchKey(usize),
}

impl fmt::Display for EngineFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Poisoned => f.write_str("poisoned by a panic in an earlier task"),
            Self::Task(e) => write!(f, "task failed: {e}"),
            Self::NoSuchKey(i) => write!(f, "no server key at index {i}"),
        }
    }
}

impl From<lorapki_proto::Error> for Error {
    fn from(e: lorapki_proto::Error) -> Self {
        Self::Protocol(e)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn io_errors_name_what_failed_and_keep_their_source() {
        let e = Error::io_at("[metrics] bind = 127.0.0.1:9100")(std::io::Error::from(
            std::io::ErrorKind::AddrInUse,
        ));
        assert!(
            e.to_string()
                .starts_with("i/o: [metrics] bind = 127.0.0.1:9100: "),
            "{e}"
        );
        let source = e.source().expect("the i/o error is the source");
        let io = source.downcast_ref::<std::io::Error>().unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::AddrInUse);
        assert!(Error::from(std::io::Error::other("x")).source().is_some());
        assert!(
            Error::Protocol(lorapki_proto::Error::StaleSession)
                .source()
                .is_some()
        );
        assert!(Error::Config("x".into()).source().is_none());
        let one = Error::Import(vec![ImportError {
            line: 2,
            message: "dev_eui: bad".into(),
        }]);
        assert_eq!(
            one.to_string(),
            "import refused, nothing imported (1 error)\n  line 2: dev_eui: bad"
        );
        let db = Error::from(sqlx::Error::RowNotFound);
        assert!(db.to_string().starts_with("store: "), "{db}");
        assert!(
            db.source()
                .and_then(|s| s.downcast_ref::<sqlx::Error>())
                .is_some_and(|e| matches!(e, sqlx::Error::RowNotFound))
        );
        let engine = Error::from(EngineFailure::Poisoned);
        assert_eq!(
            engine.to_string(),
            "crypto engine: poisoned by a panic in an earlier task"
        );
        assert!(engine.source().is_none());
    }
}
