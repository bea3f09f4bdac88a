//! `lorapki-server`: the lorapki PKI server binary (thin: CLI, configuration, wiring).

use std::path::PathBuf;
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
    /// Create the server's ECDSA P-384 signing key (PKCS#8 PEM, mode 0600) and print its key id.
    Keygen {
        /// Where to write the key (never overwritten).
        #[arg(long, default_value = "server-key.pem")]
        key: PathBuf,
        /// Also create a storage KEK file (64 hex digits, mode 0600).
        #[arg(long)]
        kek: Option<PathBuf>,
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

async fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Keygen { key, kek } => {
            let k = identity::generate_file(&key)?;
            println!("server key written to {} (mode 0600)", key.display());
            println!(
                "public key (SEC1 compressed): {}",
                hex::encode(k.public().as_bytes())
            );
            println!("key id: {}", hex::encode(k.key_id()));
            if let Some(path) = kek {
                let hex = StorageKek::generate_hex()?;
                identity::write_secret_file(&path, hex.as_bytes())?;
                println!("storage KEK written to {} (mode 0600)", path.display());
            }
            Ok(())
        }
        Command::Devices { command, config } => {
            let config = Config::load(&config)?;
            let store = Store::open(&config.database.url).await?;
            let result = match command {
                DevicesCommand::Import { file } => {
                    // The KEK first: a missing or malformed one is reported before the file's
                    // contents, and `import_devices` refuses another database's KEK.
                    let kek = config.storage_kek()?;
                    let text = std::fs::read_to_string(&file).map_err(|e| {
                        Error::Config(format!("cannot read {}: {e}", file.display()))
                    })?;
                    let anchors = app::trust_anchors(&config)?;
                    let name = file.to_string_lossy();
                    let devices = registry::parse_file(&name, &text, &anchors, SystemTime::now())?;
                    let n = store
                        .import_devices(&devices, &kek, server::now_ms())
                        .await?;
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
            };
            store.close().await;
            result
        }
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            app::serve(config, shutdown_signal()).await
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
