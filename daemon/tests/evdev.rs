//! Local input through the evdev path of a real habitusd: a device node that appears
//! after start (hot-plug) is read, its key codes hashed, and its events credited to the
//! user of the open local session.

mod common;

use std::time::{Duration, Instant};

use common::TestDaemon;
use habitus::evdev::RawEvent;
use habitus_protocol::TrustState;

fn record(type_: u16, code: u16, value: i32) -> [u8; habitus::evdev::INPUT_EVENT_SIZE] {
    RawEvent { type_, code, value }.to_bytes()
}

#[test]
fn a_hot_plugged_keyboard_feeds_the_session_owner() {
    let devices = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(&format!(
        "[plugins.keystroke]\nenrol_windows = 20\n[input]\nevdev = true\nevdev_dir = {:?}\n",
        devices.path()
    ));
    daemon.session("alice", true);

    // 120 key presses and releases, each followed by a SYN_REPORT, auto-repeats between.
    let mut bytes = Vec::new();
    for i in 0..120u16 {
        let code = 16 + i % 20;
        bytes.extend(record(1, code, 1));
        bytes.extend(record(0, 0, 0));
        bytes.extend(record(1, code, 2)); // auto-repeat: skipped
        bytes.extend(record(0, 0, 0));
        bytes.extend(record(1, code, 0));
        bytes.extend(record(0, 0, 0));
    }
    // Written under another name and renamed, so the scanner never sees half a file.
    std::fs::write(devices.path().join("tmp"), &bytes).unwrap();
    std::fs::rename(devices.path().join("tmp"), devices.path().join("event7")).unwrap();

    let start = Instant::now();
    loop {
        let a = daemon.assess("alice");
        if a.modalities[0].enrol_windows == 2 {
            assert_eq!(a.state, TrustState::Learning);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "device events never arrived: {a:?}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        daemon.log().contains("reading input device"),
        "{}",
        daemon.log()
    );
}
