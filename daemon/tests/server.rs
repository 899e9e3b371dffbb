//! habitusd's socket server as clients meet it.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;

use habitus_protocol::{decode_response, encode, read_frame, ErrorKind, ResponseBody};

#[test]
fn a_request_in_another_protocol_version_is_logged_once_per_connection() {
    let d = common::TestDaemon::start("");
    // What a pam_habitus.so built before protocol version 2 sends.
    let stale = serde_json::json!({"version": 1, "body": {"type": "status", "user": null}});
    let frame = encode(&stale).unwrap();
    let mut stream = UnixStream::connect(&d.socket).unwrap();
    for _ in 0..3 {
        stream.write_all(&frame).unwrap();
        let reply = decode_response(&read_frame(&mut stream).unwrap()).unwrap();
        match reply.body {
            ResponseBody::Error { kind, .. } => assert_eq!(kind, ErrorKind::UnsupportedVersion),
            other => panic!("{other:?}"),
        }
    }
    drop(stream);
    // The log is written before the reply is sent: it is complete here.
    let log = d.log();
    let expected = format!(
        "the peer speaks protocol version 1, this daemon speaks {}: rebuild/reinstall pam_habitus.so",
        habitus_protocol::PROTOCOL_VERSION
    );
    assert_eq!(log.matches(&expected).count(), 1, "{log}");
    assert!(log.contains("warning: refused a request from uid"), "{log}");
}

#[test]
fn check_config_loads_and_configures_every_plugin_as_start_up_does() {
    let dir = tempfile::tempdir().unwrap();
    let check = |plugins: &str| {
        let config = dir.path().join("habitusd.toml");
        std::fs::write(
            &config,
            format!(
                "version = 1\ndatabase = {:?}\nsecrets = {:?}\nplugin_dir = {:?}\n{plugins}",
                dir.path().join("profiles.sqlite"),
                dir.path().join("secrets.key"),
                common::built()
            ),
        )
        .unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_habitusd"))
            .arg("--config")
            .arg(&config)
            .arg("--check-config")
            .output()
            .unwrap()
    };
    let out = check("[plugins.keystroke]\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "configuration OK\n");
    // Before: "configuration OK" for both, and start-up refused them.
    for (plugins, expected) in [
        ("[plugins.nonexistent]\n", "nonexistent"),
        (
            "[plugins.keystroke]\nsettings = \"no_such_setting = 1\"\n",
            "plugin keystroke: settings refused",
        ),
    ] {
        let out = check(plugins);
        assert_eq!(out.status.code(), Some(2), "{plugins}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{plugins}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    // The check creates no store and no secrets.
    assert!(!dir.path().join("secrets.key").exists());
    assert!(!dir.path().join("profiles.sqlite").exists());
}

/// A second habitusd on the same profile store (another socket) is refused at start-up,
/// naming the store; the first keeps serving.
#[test]
fn a_second_daemon_on_the_same_store_is_refused() {
    let d = common::TestDaemon::start("");
    let text = std::fs::read_to_string(&d.config).unwrap();
    let second = d.path("second.toml");
    std::fs::write(&second, text.replace("habitusd.sock", "second.sock")).unwrap();
    // Spawned and waited for with a deadline: were the lock ever lost, the second daemon
    // would serve on and the test must fail, not hang.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_habitusd"))
        .arg("--config")
        .arg(&second)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the second habitusd kept running on the same store");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("another habitusd is already using") && stderr.contains("profiles.sqlite"),
        "{stderr}"
    );
    assert!(
        !d.path("second.sock").exists(),
        "the second bound its socket"
    );
    let reply = habitus::client::call(
        &d.socket,
        habitus_protocol::RequestBody::Status { user: None },
        std::time::Duration::from_secs(5),
    );
    assert!(reply.is_ok(), "{reply:?}");
}

/// A started frame (here two bytes of its length prefix) must complete within 5 s; only
/// a silent connection may idle for 30 s. Before, a partial prefix held the slot 30 s.
#[test]
fn a_partial_length_prefix_is_dropped_like_a_partial_frame() {
    use std::io::Read;
    let d = common::TestDaemon::start("");
    let mut stream = UnixStream::connect(&d.socket).unwrap();
    stream.write_all(&[0, 0]).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = stream.read(&mut buf).expect("closed within 15 s");
    assert_eq!(n, 0, "closed without a reply");
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(4) && waited < std::time::Duration::from_secs(10),
        "{waited:?}"
    );
}
