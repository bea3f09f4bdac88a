//! `lorapki-server`: the lorapki PKI server binary (thin: CLI, configuration, wiring).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Parser, Subcommand};
use lorapki_server::config::Config;
use lorapki_server::{Error, StorageKek, Store, app, identity, registry, server};

#[derive(Parser)]
#[command(name = "lorapki-server", version, about = "The lorapki PKI server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the server's ECDSA P-384 signing key (PKCS#8 PEM, mode 0600 on Unix) and print
    /// its key id.
    Keygen {
        /// Where to write the key (never overwritten).
        #[arg(long, default_value = "server-key.pem")]
        key: PathBuf,
        /// Also create a storage KEK file there, as `kekgen` does.
        #[arg(long)]
        kek: Option<PathBuf>,
    },
    /// Create the storage KEK alone: 64 hex digits (mode 0600 on Unix) that seal the root keys
    /// and sessions in the database; `[server] kek_file` names the file.
    Kekgen {
        /// Where to write it (never overwritten).
        #[arg(long, default_value = "storage-kek.hex")]
        kek: PathBuf,
    },
    /// Create a random 256-bit secret, 64 hex digits (mode 0600 on Unix): the join server's
    /// bearer token (`[join_server] token_file`) or the KEK that wraps the network session keys
    /// for the network server (`[join_server] nwk_kek_file`).
    Secretgen {
        /// Where to write it (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// The device registry.
    Devices {
        #[command(subcommand)]
        command: DevicesCommand,
        /// Configuration file.
        #[arg(long, short, default_value = "server.toml", global = true)]
        config: PathBuf,
    },
    /// Run the MQTT integration, the join server and the metrics endpoint.
    Serve {
        /// Configuration file.
        #[arg(long, short, default_value = "server.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum DevicesCommand {
    /// Import devices from a CSV or JSON file: all or nothing.
    Import {
        /// The file (`.json` is read as JSON, anything else as CSV).
        file: PathBuf,
        /// Import with a warning what this check refuses by default (repeatable):
        /// certificate-subject (a certificate that does not name its DevEUI),
        /// shared-identity-key (one identity key for several devices), zero-key (an all-zero
        /// AppKey or NwkKey).
        #[arg(long = "allow", value_name = "CHECK")]
        allow: Vec<registry::Check>,
    },
    /// List the registered devices and their key states.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a terminal: escapes in a log file or journal are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why a command failed: a library error, or the command's own refusal.
enum Failure {
    Lib(Error),
    Refused(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::Lib(e)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lib(e) => e.fmt(f),
            Self::Refused(m) => f.write_str(m),
        }
    }
}

/// How the secret files are protected, for the messages.
const SECRET_MODE: &str = if cfg!(unix) { " (mode 0600)" } else { "" };

/// Refuses to replace `path` (given with the option `flag`); a secret file is never
/// overwritten.
fn refuse_existing(path: &Path, flag: &str) -> Result<(), Failure> {
    if path.symlink_metadata().is_ok() {
        return Err(Failure::Refused(format!(
            "{} already exists; not overwritten (remove it or choose another {flag})",
            path.display()
        )));
    }
    Ok(())
}

/// Writes a new storage KEK file (the caller checked that `path` is free).
fn write_kek(path: &Path) -> Result<(), Failure> {
    write_random_secret(path, "--kek")?;
    println!(
        "storage KEK written to {}{SECRET_MODE}; keep a copy apart from the database",
        path.display()
    );
    Ok(())
}

/// 64 random hex digits into a new file `path` (named `flag` on the command line).
fn write_random_secret(path: &Path, flag: &str) -> Result<(), Failure> {
    refuse_existing(path, flag)?;
    let hex = StorageKek::generate_hex()?;
    match identity::write_secret_file(path, hex.as_bytes()) {
        // Created meanwhile by someone else.
        Err(Error::IoAt { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            refuse_existing(path, flag)
        }
        Err(e) => Err(e.into()),
        Ok(()) => Ok(()),
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Keygen { key, kek } => {
            // Both files are checked before either is written.
            refuse_existing(&key, "--key")?;
            if let Some(path) = &kek {
                refuse_existing(path, "--kek")?;
            }
            let k = match identity::generate_file(&key) {
                Err(Error::IoAt { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    return refuse_existing(&key, "--key");
                }
                other => other?,
            };
            println!("server key written to {}{SECRET_MODE}", key.display());
            println!(
                "public key (SEC1 compressed): {}",
                hex::encode(k.public().as_bytes())
            );
            println!("key id: {}", hex::encode(k.key_id()));
            if let Some(path) = kek {
                write_kek(&path)?;
            }
            Ok(())
        }
        Command::Kekgen { kek } => write_kek(&kek),
        Command::Secretgen { out } => {
            write_random_secret(&out, "--out")?;
            println!("secret written to {}{SECRET_MODE}", out.display());
            Ok(())
        }
        Command::Devices { command, config } => {
            let config = Config::load(&config)?;
            let store = Store::open(&config.database.url).await?;
            // In a block of its own, so that the store is closed on every outcome.
            let result: Result<(), Error> = async {
                match command {
                    DevicesCommand::Import { file, allow } => {
                        // The KEK first: a missing or malformed one is reported before the file's
                        // contents, and `import_devices` refuses another database's KEK.
                        let kek = config.storage_kek()?;
                        let text =
                            std::fs::read_to_string(&file).map_err(Error::io_at(file.display()))?;
                        let anchors = app::trust_anchors(&config)?;
                        let name = file.to_string_lossy();
                        let policy = allow
                            .into_iter()
                            .fold(registry::ImportPolicy::default(), |p, c| p.allowing(c));
                        let mut parsed = registry::parse_file_with(
                            &name,
                            &text,
                            &anchors,
                            SystemTime::now(),
                            &policy,
                        )?;
                        let registered =
                            store.devices_with_identities(&parsed.identities()).await?;
                        registry::check_registered_identities(&registered, &mut parsed, &policy)?;
                        let n = store
                            .import_devices(&parsed.devices, &kek, server::now_ms())
                            .await?;
                        for w in &parsed.warnings {
                            eprintln!("warning: {w}");
                        }
                        println!("imported {n} devices");
                        Ok(())
                    }
                    DevicesCommand::List => {
                        println!(
                            "{:<16}  {:<16}  {:<7}  {:<11}  {:>3}  identity",
                            "dev_eui", "join_eui", "lorawan", "key_state", "gen"
                        );
                        for d in store.list_devices().await? {
                            println!(
                                "{:<16}  {:<16}  {:<7}  {:<11}  {:>3}  {}",
                                d.dev_eui.to_string(),
                                d.join_eui.to_string(),
                                d.mac_version,
                                d.key_state.as_str(),
                                d.generation,
                                d.identity_source
                            );
                        }
                        Ok(())
                    }
                }
            }
            .await;
            store.close().await;
            Ok(result?)
        }
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            Ok(app::serve(config, shutdown_signal()).await?)
        }
    }
}

/// Ctrl-C everywhere; SIGTERM too on Unix.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
