//! The binary's `serve`: the metrics endpoint answers in Prometheus text, a bad configuration is a
//! clear error, and SIGTERM shuts it down cleanly (exit status 0).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_lorapki-server");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn keygen(dir: &Path) {
    let out = Command::new(BIN)
        .args(["keygen", "--key", "k.pem", "--kek", "kek.hex"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "[server]\nkey_fil = 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", "bad.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field") && err.contains("key_fil"),
        "{err}"
    );
    // keygen never overwrites a key.
    keygen(dir.path());
    let again = Command::new(BIN)
        .args(["keygen", "--key", "k.pem"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
}

#[cfg(unix)]
#[test]
fn metrics_and_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(d);
    let (metrics, js) = (free_port(), free_port());
    std::fs::write(
        d.join("server.toml"),
        format!(
            "[server]\nkey_file = \"k.pem\"\nkek_file = \"kek.hex\"\n\
             [database]\nurl = \"sqlite://db.sqlite\"\n\
             [join_server]\nbind = \"127.0.0.1:{js}\"\n\
             [metrics]\nbind = \"127.0.0.1:{metrics}\"\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", "server.toml"])
        .current_dir(d)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let text = loop {
        if let Some(t) = get(metrics, "/metrics") {
            break t;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "metrics endpoint never came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for name in [
        "lorapki_rekeys_started_total 0",
        "lorapki_rekeys_completed_total 0",
        "# TYPE lorapki_rekeys_failed_total counter",
        "lorapki_sessions_pending 0",
        "# TYPE lorapki_join_requests_total counter",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no shutdown after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(exit.success(), "{exit:?}: {log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(
        !log.contains("\x1b["),
        "colour escapes in a log that is not a terminal: {log:?}"
    );
}
