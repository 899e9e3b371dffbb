//! Local input through the evdev path of a real habitusd: a device node that appears
//! after start (hot-plug) is read and its events are credited to the user of the open
//! local session (the hashing of key codes is tested in `evdev.rs`'s unit tests).

mod common;

use std::time::{Duration, Instant};

use common::TestDaemon;
use habitus::evdev::RawEvent;
use habitus_protocol::TrustState;

fn record(
    time_us: i64,
    type_: u16,
    code: u16,
    value: i32,
) -> [u8; habitus::evdev::INPUT_EVENT_SIZE] {
    RawEvent {
        time_us,
        type_,
        code,
        value,
    }
    .to_bytes()
}

#[test]
fn a_hot_plugged_keyboard_feeds_the_session_owner() {
    let devices = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(&format!(
        "[plugins.keystroke]\nenrol_windows = 20\n[input]\nevdev = true\nevdev_dir = {:?}\nlogind_seat = \"/nonexistent/seat0\"\n",
        devices.path()
    ));
    daemon.session("alice", true);

    // 120 key presses and releases, each followed by a SYN_REPORT, auto-repeats between.
    let mut bytes = Vec::new();
    // Kernel timestamps: a typist pressing every 180 ms and holding 90 ms.
    for i in 0..120u16 {
        let code = 16 + i % 20;
        let t = 1_000_000 + i as i64 * 180_000;
        bytes.extend(record(t, 1, code, 1));
        bytes.extend(record(t, 0, 0, 0));
        bytes.extend(record(t + 40_000, 1, code, 2)); // auto-repeat: skipped
        bytes.extend(record(t + 40_000, 0, 0, 0));
        bytes.extend(record(t + 90_000, 1, code, 0));
        bytes.extend(record(t + 90_000, 0, 0, 0));
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
