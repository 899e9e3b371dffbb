//! kill -9 habitusd again and again while it enrols and adapts; after every kill the
//! store must open, pass SQLite's integrity check, decrypt every row, and still hold
//! a profile at least as new as every write habitusd acknowledged before the kill.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::TestDaemon;
use habitus::replay::synthetic_typist;
use habitus_engine::{PluginLibrary, ProfileStore, Secrets};
use habitus_protocol::{RequestBody, ResponseBody};

const ROUNDS: u64 = 12;

#[test]
fn the_store_survives_sigkill_during_enrolment_and_adaptation() {
    // Adapt on every mildly genuine window, without a daily bound, so that the kill
    // lands in the middle of store writes as often as possible.
    let mut daemon = TestDaemon::start(
        r#"
[plugins.keystroke]
settings = "mode = \"free\"\nadapt_min_llr = 0.3"
[session]
adapt_min_llr = 0.3
[session.window_events]
keystroke = 100
[adaptation]
max_per_day = 1000000
"#,
    );
    let library = PluginLibrary::load(&common::built().join("libhabitus_keystroke.so")).unwrap();
    let plugin = library.instantiate("mode = \"free\"").unwrap();
    let probe = synthetic_typist(60, 90.0, 180.0, 99);
    let mut last_revision = 0u64;
    let mut kills = 0;
    let mut acknowledged_total = 0;

    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicU64::new(0));
        let socket = daemon.socket.clone();
        let worker = {
            let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
            std::thread::spawn(move || {
                let mut seed = round * 1000;
                while !stop.load(Ordering::SeqCst) {
                    seed += 1;
                    let body = if seed % 3 == 1 {
                        RequestBody::Enroll {
                            user: "alice".into(),
                            events: synthetic_typist(500, 90.0, 180.0, seed),
                        }
                    } else {
                        RequestBody::Ingest {
                            user: "alice".into(),
                            events: synthetic_typist(200, 90.0, 180.0, seed),
                        }
                    };
                    let is_enrol = matches!(body, RequestBody::Enroll { .. });
                    match habitus::client::call(&socket, body, Duration::from_secs(5)) {
                        Ok(ResponseBody::Done { .. }) if is_enrol => {
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(_) => {}
                        Err(_) => break, // killed
                    }
                }
            })
        };
        // Kill after 40..400 ms, a different moment every round.
        std::thread::sleep(Duration::from_millis(40 + (round * 97) % 360));
        daemon.kill9();
        stop.store(true, Ordering::SeqCst);
        worker.join().unwrap();
        kills += 1;
        let acked = acknowledged.load(Ordering::SeqCst);
        acknowledged_total += acked;

        // Open what the kill left behind, as the restarted daemon will.
        let secrets = Secrets::load_or_create(&daemon.path("secrets.key")).unwrap();
        let store = ProfileStore::open(&daemon.path("profiles.sqlite"), &secrets)
            .unwrap_or_else(|e| panic!("round {round}: store does not open: {e}"));
        store
            .check()
            .unwrap_or_else(|e| panic!("round {round}: store corrupt: {e}"));
        if let Some(p) = store.profile("alice", "keystroke").unwrap() {
            assert!(
                p.revision >= last_revision,
                "round {round}: revision went back from {last_revision} to {}",
                p.revision
            );
            if acked > 0 {
                assert!(
                    p.revision > last_revision,
                    "round {round}: {acked} acknowledged enrolments lost"
                );
            }
            last_revision = p.revision;
            // The surviving profile is a whole one the plugin can score with.
            let hasher = secrets.key_hasher();
            let window: Vec<_> = probe
                .iter()
                .map(|w| {
                    let kind = match w.kind {
                        habitus_protocol::WireEventKind::KeyDown => {
                            habitus_plugin::EventKind::KEY_DOWN
                        }
                        _ => habitus_plugin::EventKind::KEY_UP,
                    };
                    habitus_plugin::Event::key(kind, w.t_us, hasher.key_id(w.code))
                })
                .collect();
            plugin
                .score(&p.blob, &window)
                .unwrap_or_else(|e| panic!("round {round}: stored profile unusable: {e}"));
        } else {
            assert_eq!(acked, 0, "round {round}: acknowledged enrolment missing");
        }
        drop(store);
        daemon.restart();
    }
    let a = daemon.assess("alice");
    assert!(a.modalities[0].enrolled, "{a:?}");
    println!(
        "{kills} SIGKILLs during enrolment/adaptation; {acknowledged_total} acknowledged enrolments; final revision {last_revision}; store intact every time"
    );
    assert!(
        last_revision > ROUNDS,
        "too few writes reached the store to mean anything"
    );
}
