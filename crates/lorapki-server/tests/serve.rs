//! The binary's `serve`: the metrics endpoint answers in Prometheus text, a bad configuration is a
//! clear error, and SIGTERM shuts it down cleanly (exit status 0).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_lorapki-server");

/// Starts `serve --config server.toml` in `dir` at the default log level with `env` set, and
/// waits until `/health` answers on `metrics`.
fn start_serve(dir: &Path, env: &[(&str, &str)], metrics: u16) -> std::process::Child {
    let child = Command::new(BIN)
        .args(["serve", "--config", "server.toml"])
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .current_dir(dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while get(metrics, "/health").is_none() {
        assert!(started.elapsed() < Duration::from_secs(20), "never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// SIGTERM to a [`start_serve`]d server; its exit status (within 15 s) and its log.
fn stop_serve(mut child: std::process::Child) -> (std::process::ExitStatus, String) {
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
    (exit, log)
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
    std::fs::write(d.join("server.toml"), config_with_ports(js, metrics)).unwrap();
    let child = start_serve(d, &[], metrics);
    let text = get(metrics, "/metrics").expect("the metrics endpoint answers");
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
    let (exit, log) = stop_serve(child);
    assert!(exit.success(), "{exit:?}: {log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(
        !log.contains("\x1b["),
        "colour escapes in a log that is not a terminal: {log:?}"
    );
}

/// Runs the binary in `dir` with `env` set (and no `LORAPKI_KEK` unless `env` sets it) and waits
/// for it.
fn cli(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("LORAPKI_KEK")
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A CSV of devices `70b3d57e0000000{i}` with real identity keys.
fn devices_csv(ids: &[u32]) -> String {
    let mut csv = String::from("dev_eui,join_eui,lorawan_version,app_key,identity_key\n");
    for i in ids {
        let identity = lorapki_server::identity::generate().unwrap().1.public();
        csv.push_str(&format!(
            "70b3d57e{i:08x},70b3d57ed0000000,1.0.3,2b7e151628aed2a6abf7158809cf4f3c,{}\n",
            hex::encode(identity.as_bytes())
        ));
    }
    csv
}

/// Runs `serve` with `config` and `env`; its output if it exits within `secs`, else `None`
/// (and it is killed).
fn serve_until_exit(
    dir: &Path,
    config: &str,
    env: &[(&str, &str)],
    secs: u64,
) -> Option<std::process::Output> {
    let mut child = Command::new(BIN)
        .args(["serve", "--config", config])
        .env_remove("LORAPKI_KEK")
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    println!("serve kept running:\n{}", stderr(&out));
    None
}

const OTHER_KEK: &str = "5555555555555555555555555555555555555555555555555555555555555555";

/// A directory with a server key, a KEK (`kek.hex`), `server.toml` using it, `wrong.toml`
/// using another well-formed KEK (`kek2.hex`), and device 1 imported under the right one.
fn registry_with_one_device() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(d);
    std::fs::write(d.join("kek2.hex"), OTHER_KEK).unwrap();
    let (js, metrics) = (free_port(), free_port());
    let config = |kek_file: &str| {
        format!(
            "[server]\nkey_file = \"k.pem\"\nkek_file = \"{kek_file}\"\n\
             [database]\nurl = \"sqlite://db.sqlite\"\n\
             [join_server]\nbind = \"127.0.0.1:{js}\"\n\
             insecure_no_token = true\ninsecure_plain_session_keys = true\n\
             [metrics]\nbind = \"127.0.0.1:{metrics}\"\n"
        )
    };
    std::fs::write(d.join("server.toml"), config("kek.hex")).unwrap();
    std::fs::write(d.join("wrong.toml"), config("kek2.hex")).unwrap();
    std::fs::write(d.join("one.csv"), devices_csv(&[1])).unwrap();
    let out = cli(d, &["devices", "import", "one.csv"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    dir
}

const KEK_MISMATCH: &str = "the storage KEK does not match the one this database was sealed with";

#[test]
fn serve_refuses_a_wrong_kek() {
    let dir = registry_with_one_device();
    let d = dir.path();
    let out = serve_until_exit(d, "wrong.toml", &[], 20).expect("serve started with a wrong KEK");
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(KEK_MISMATCH) && err.contains("kek2.hex"),
        "{err}"
    );
    assert!(!err.contains("listening"), "nothing listens: {err}");
    let out = serve_until_exit(d, "server.toml", &[("LORAPKI_KEK", OTHER_KEK)], 20)
        .expect("serve started with a wrong LORAPKI_KEK");
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(KEK_MISMATCH) && err.contains("LORAPKI_KEK"),
        "{err}"
    );
    assert!(!err.contains(OTHER_KEK), "the KEK is never printed: {err}");
}

#[test]
fn devices_import_refuses_a_wrong_kek() {
    let dir = registry_with_one_device();
    let d = dir.path();
    std::fs::write(d.join("two.csv"), devices_csv(&[2])).unwrap();
    let out = cli(
        d,
        &["devices", "import", "two.csv", "--config", "wrong.toml"],
        &[],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(KEK_MISMATCH) && err.contains("kek2.hex"),
        "{err}"
    );
    let out = cli(
        d,
        &["devices", "import", "two.csv"],
        &[("LORAPKI_KEK", OTHER_KEK)],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(KEK_MISMATCH) && err.contains("LORAPKI_KEK"),
        "{err}"
    );
    let list = cli(d, &["devices", "list"], &[]);
    assert!(list.status.success(), "{}", stderr(&list));
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("70b3d57e00000001"), "{list}");
    assert!(
        !list.contains("70b3d57e00000002"),
        "nothing imported: {list}"
    );
}

/// The fenced code blocks of language `lang` in a Markdown text, in order.
fn fenced(markdown: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut current, fence) {
            (None, Some(info)) if info.trim() == lang => current = Some(String::new()),
            (None, Some(_)) => current = Some(String::from("\0")),
            (Some(block), Some(_)) => {
                if !block.starts_with('\0') {
                    blocks.push(std::mem::take(block));
                }
                current = None;
            }
            (Some(block), None) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// `server.toml` of this directory with every listen address and the MQTT broker moved to free
/// loopback ports (nothing listens on the broker's); also returns the metrics port.
fn example_config_on_free_ports() -> (String, u16) {
    let text = include_str!("../server.toml");
    let (mut section, mut metrics, mut out) = (String::new(), None, String::new());
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = trimmed.to_owned();
        }
        if trimmed.starts_with("bind = ") {
            let port = free_port();
            if section == "[metrics]" {
                metrics = Some(port);
            }
            out.push_str(&format!("bind = \"127.0.0.1:{port}\"\n"));
        } else if section == "[mqtt]" && trimmed.starts_with("server = ") {
            out.push_str(&format!("server = \"127.0.0.1:{}\"\n", free_port()));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    (
        out,
        metrics.expect("the example server.toml has a [metrics] bind"),
    )
}

/// SETUP.md's set-up, run verbatim in an empty directory: its `sh` block command by command
/// (`serve` until `/health` answers), with `server.toml` copied from here (free ports, as the
/// README tells to adjust) and `devices.csv` from its `csv` block.
#[test]
fn readme_set_up_works_verbatim_in_an_empty_directory() {
    let readme = include_str!("../SETUP.md");
    let steps = fenced(readme, "sh");
    let steps = steps.first().expect("the README has a sh block");
    let csv = fenced(readme, "csv");
    let csv = csv.first().expect("the README shows a devices.csv");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (config, metrics) = example_config_on_free_ports();
    std::fs::write(d.join("server.toml"), config).unwrap();
    std::fs::write(d.join("devices.csv"), csv).unwrap();
    let mut ran = Vec::new();
    for line in steps.lines() {
        let command = line.split('#').next().unwrap().trim();
        if command.is_empty() {
            continue;
        }
        let args: Vec<&str> = command
            .strip_prefix("lorapki-server ")
            .unwrap_or_else(|| panic!("README step {command:?} is not a lorapki-server command"))
            .split_whitespace()
            .collect();
        ran.push(args[..2.min(args.len())].join(" "));
        if args[0] != "serve" {
            let out = cli(d, &args, &[]);
            assert!(out.status.success(), "{command}: {}", stderr(&out));
            continue;
        }
        let mut child = Command::new(BIN)
            .args(&args)
            .env_remove("LORAPKI_KEK")
            .current_dir(d)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let health = loop {
            if let Some(t) = get(metrics, "/health") {
                break t;
            }
            if let Some(status) = child.try_wait().unwrap() {
                let mut log = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut log)
                    .unwrap();
                panic!("{command} exited ({status}): {log}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{command}: /health never answered"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            health.starts_with("HTTP/1.1 200") && health.ends_with("ok"),
            "{health}"
        );
    }
    let mut expected = [
        "keygen",
        "kekgen",
        "secretgen",
        "secretgen",
        "devices import",
        "serve",
    ]
    .into_iter();
    let mut next = expected.next();
    for step in &ran {
        if next.is_some_and(|e| step.starts_with(e)) {
            next = expected.next();
        }
    }
    assert!(next.is_none(), "the README's steps {ran:?} miss {next:?}");
    assert!(
        ran.last().is_some_and(|s| s.starts_with("serve")),
        "{ran:?}"
    );
}

#[test]
fn keygen_and_kekgen_never_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = cli(d, &["keygen"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pem = std::fs::read(d.join("server-key.pem")).unwrap();
    let out = cli(d, &["keygen"], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "server-key.pem already exists; not overwritten (remove it or choose another --key)"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(d.join("server-key.pem")).unwrap(), pem);
    // The KEK alone.
    let out = cli(d, &["kekgen"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let kek = std::fs::read_to_string(d.join("storage-kek.hex")).unwrap();
    assert!(lorapki_server::StorageKek::from_hex(&kek).is_ok(), "{kek}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(kek.trim()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("storage-kek.hex"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let exists =
        "storage-kek.hex already exists; not overwritten (remove it or choose another --kek)";
    let out = cli(d, &["kekgen"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(exists), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(d.join("storage-kek.hex")).unwrap(),
        kek
    );
    // keygen with both: refused before anything is written.
    let out = cli(
        d,
        &["keygen", "--key", "new.pem", "--kek", "storage-kek.hex"],
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains(exists), "{}", stderr(&out));
    assert!(!d.join("new.pem").exists(), "no key written");
}

/// A configuration with `k.pem`, `kek.hex` and the given listen ports.
fn config_with_ports(js: u16, metrics: u16) -> String {
    format!(
        "[server]\nkey_file = \"k.pem\"\nkek_file = \"kek.hex\"\n\
         [database]\nurl = \"sqlite://db.sqlite\"\n\
         [join_server]\nbind = \"127.0.0.1:{js}\"\n\
             insecure_no_token = true\ninsecure_plain_session_keys = true\n\
         [metrics]\nbind = \"127.0.0.1:{metrics}\"\n"
    )
}

#[test]
fn listen_address_in_use_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(d);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    for (section, js, metrics) in [
        ("join_server", port, free_port()),
        ("metrics", free_port(), port),
    ] {
        std::fs::write(d.join("server.toml"), config_with_ports(js, metrics)).unwrap();
        let out = serve_until_exit(d, "server.toml", &[], 20)
            .unwrap_or_else(|| panic!("serve kept running with [{section}] bind in use"));
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains(&format!("[{section}] bind = 127.0.0.1:{port}: "))
                && err.contains("in use"),
            "{section}: {err}"
        );
    }
}

#[test]
fn missing_files_are_io_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(d);
    std::fs::write(
        d.join("server.toml"),
        config_with_ports(free_port(), free_port()),
    )
    .unwrap();
    let config = config_with_ports(free_port(), free_port());
    std::fs::write(
        d.join("no-kek.toml"),
        config.replace("kek.hex", "gone-kek.hex"),
    )
    .unwrap();
    std::fs::write(d.join("no-key.toml"), config.replace("k.pem", "gone.pem")).unwrap();
    std::fs::write(
        d.join("no-db.toml"),
        config.replace("sqlite://db.sqlite", "sqlite://no-such-dir/db.sqlite"),
    )
    .unwrap();
    // The database is named too (a store error: it need not be a file).
    let out = cli(d, &["devices", "list", "--config", "no-db.toml"], &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("database sqlite://no-such-dir/db.sqlite: "),
        "{err}"
    );
    for (args, needle) in [
        (&["devices", "import", "missing.csv"][..], "missing.csv"),
        (&["devices", "list", "--config", "nope.toml"], "nope.toml"),
        (&["serve", "--config", "nope.toml"], "nope.toml"),
        (
            &["serve", "--config", "no-kek.toml"],
            "[server] kek_file = gone-kek.hex",
        ),
        (
            &["serve", "--config", "no-key.toml"],
            "[server] key_file = gone.pem",
        ),
    ] {
        let out = cli(d, args, &[]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains(&format!("i/o: {needle}: ")) && !err.contains("configuration"),
            "{args:?}: {err}"
        );
    }
}

/// Posts `body` to the join server at `port` with an optional bearer token; the status line.
fn post_join(port: u16, token: Option<&str>, body: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines().next().unwrap_or_default().to_owned()
}

/// Refused JoinReqs reach the log at the default level (no `RUST_LOG`), once per reason per
/// interval however many arrive, with the count of the lines held back.
#[test]
fn refusals_are_logged_at_the_default_level_and_throttled() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(d);
    let (metrics, js) = (free_port(), free_port());
    std::fs::write(d.join("server.toml"), config_with_ports(js, metrics)).unwrap();
    let child = start_serve(d, &[("LORAPKI_JS_TOKEN", "s3cret")], metrics);
    let join_req = r#"{"ProtocolVersion":"1.0","SenderID":"000000","ReceiverID":"70b3d57ed0000000","TransactionID":1,"MessageType":"JoinReq","MACVersion":"1.0.3","PHYPayload":"00","DevEUI":"70b3d57e00000001","DevAddr":"01020304","DLSettings":"00","RxDelay":1}"#;
    for _ in 0..20 {
        let status = post_join(js, None, join_req);
        assert!(status.contains(" 401 "), "{status}");
    }
    for _ in 0..5 {
        let status = post_join(js, Some("s3cret"), join_req);
        assert!(status.starts_with("HTTP/1.1 "), "{status}");
    }
    let (exit, log) = stop_serve(child);
    assert!(exit.success(), "{log}");
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("JoinReq refused"))
        .collect();
    let unauthorized: Vec<&&str> = refused
        .iter()
        .filter(|l| l.contains("Unauthorized"))
        .collect();
    assert_eq!(unauthorized.len(), 1, "one line for 20 refusals: {log}");
    assert!(unauthorized[0].contains("WARN"), "{log}");
    // The authorized requests carry a one-byte PHYPayload: malformed, logged once as well.
    let malformed: Vec<&&str> = refused
        .iter()
        .filter(|l| l.contains("MalformedRequest"))
        .collect();
    assert_eq!(malformed.len(), 1, "{log}");
    assert!(malformed[0].contains("INFO"), "{log}");
}

/// A broker that cannot be reached is named in the log by its setting and address.
#[test]
fn unreachable_broker_is_named_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keygen(d);
    let (metrics, js, broker) = (free_port(), free_port(), free_port());
    let config = format!(
        "{}[mqtt]\nserver = \"127.0.0.1:{broker}\"\nclient_id = \"t\"\n",
        config_with_ports(js, metrics)
    );
    std::fs::write(d.join("server.toml"), config).unwrap();
    let child = start_serve(d, &[], metrics);
    // The integration tries at once and then once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let (_, log) = stop_serve(child);
    let line = log
        .lines()
        .find(|l| l.contains("MQTT connection error"))
        .unwrap_or_else(|| panic!("no connection error logged: {log}"));
    assert!(
        line.contains(&format!("[mqtt] server = 127.0.0.1:{broker}")),
        "{line}"
    );
}
