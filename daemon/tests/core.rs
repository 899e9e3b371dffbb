//! habitusd's core driven directly (no socket): authorisation, live enrolment,
//! bounded adaptation, session binding, drift actions and input validation. Uses the
//! real keystroke plugin and a real (temporary) encrypted store; synthetic typists, so
//! no data set is needed.

mod common;

use std::path::Path;
use std::sync::Arc;

use habitus::config::{Config, DriftAction};
use habitus::core::{Core, ModalityPlugin};
use habitus::peer::Peer;
use habitus::replay::synthetic_typist;
use habitus_engine::{PluginLibrary, ProfileStore, Secrets};
use habitus_plugin::{Event, EventKind};
use habitus_protocol::{ErrorKind, RequestBody, ResponseBody, TrustState, WireEvent};

fn core_with(dir: &Path, config: Config) -> Core {
    let secrets = Secrets::load_or_create(&dir.join("secrets.key")).unwrap();
    let store = ProfileStore::open(&dir.join("profiles.sqlite"), &secrets).unwrap();
    let library = PluginLibrary::load(&common::built().join("libhabitus_keystroke.so")).unwrap();
    let pc = &config.plugins["keystroke"];
    let plugins = vec![ModalityPlugin {
        name: "keystroke".into(),
        instance: Arc::new(library.instantiate(&pc.settings).unwrap()),
        window_events: config.session.window_events["keystroke"],
        enrol_windows: pc.enrol_windows,
    }];
    Core::new(config, plugins, store, secrets.key_hasher())
}

fn root() -> Peer {
    Peer::root()
}

fn alice_peer() -> Peer {
    Peer {
        uid: 1000,
        name: Some("alice".into()),
    }
}

fn ok(core: &mut Core, peer: &Peer, body: RequestBody) -> ResponseBody {
    let r = core.handle(peer, body.clone());
    if let ResponseBody::Error { kind, message } = &r.body {
        panic!("{body:?} refused: {kind:?} {message}");
    }
    r.body
}

fn refused(core: &mut Core, peer: &Peer, body: RequestBody) -> (ErrorKind, String) {
    match core.handle(peer, body.clone()).body {
        ResponseBody::Error { kind, message } => (kind, message),
        other => panic!("{body:?} was accepted: {other:?}"),
    }
}

fn assess(core: &mut Core, user: &str) -> habitus_protocol::AssessmentReply {
    match ok(core, &root(), RequestBody::Assess { user: user.into() }) {
        ResponseBody::Assessment(a) => a,
        other => panic!("{other:?}"),
    }
}

fn ingest(core: &mut Core, peer: &Peer, user: &str, events: &[WireEvent]) {
    for batch in events.chunks(100) {
        ok(
            core,
            peer,
            RequestBody::Ingest {
                user: user.into(),
                events: batch.to_vec(),
            },
        );
    }
}

fn open(user: &str, service: &str, rhost: Option<&str>) -> RequestBody {
    RequestBody::SessionOpen {
        user: user.into(),
        service: service.into(),
        tty: Some("tty1".into()),
        rhost: rhost.map(str::to_string),
    }
}

#[test]
fn a_user_is_confined_to_their_own_session() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_with(dir.path(), Config::default());
    let alice = alice_peer();
    let typing = synthetic_typist(60, 90.0, 180.0, 1);

    // Her own: feed, assess, status, export.
    ingest(&mut core, &alice, "alice", &typing);
    ok(
        &mut core,
        &alice,
        RequestBody::Assess {
            user: "alice".into(),
        },
    );
    ok(
        &mut core,
        &alice,
        RequestBody::Status {
            user: Some("alice".into()),
        },
    );
    ok(
        &mut core,
        &alice,
        RequestBody::Export {
            user: "alice".into(),
        },
    );

    // Anyone else's, and everything root's, refused.
    for body in [
        RequestBody::Assess { user: "bob".into() },
        RequestBody::Ingest {
            user: "bob".into(),
            events: typing.clone(),
        },
        RequestBody::Export { user: "bob".into() },
        RequestBody::Status {
            user: Some("bob".into()),
        },
        RequestBody::Status { user: None },
        open("alice", "login", None),
        RequestBody::SessionClose {
            user: "alice".into(),
            service: "login".into(),
            tty: None,
        },
        RequestBody::Enroll {
            user: "alice".into(),
            events: typing.clone(),
        },
        RequestBody::Forget {
            user: "alice".into(),
        },
    ] {
        let (kind, message) = refused(&mut core, &alice, body);
        assert_eq!(kind, ErrorKind::PermissionDenied, "{message}");
        assert!(message.contains("uid 1000"), "{message}");
    }

    // A uid without a passwd entry can do nothing user-specific.
    let ghost = Peer {
        uid: 4242,
        name: None,
    };
    let (kind, _) = refused(
        &mut core,
        &ghost,
        RequestBody::Assess {
            user: "alice".into(),
        },
    );
    assert_eq!(kind, ErrorKind::PermissionDenied);
}

#[test]
fn bad_input_is_refused_whole_and_nothing_is_ingested() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_with(dir.path(), Config::default());
    let mut typing = synthetic_typist(60, 90.0, 180.0, 1);
    typing[7].x = f32::NAN;
    let (kind, message) = refused(
        &mut core,
        &root(),
        RequestBody::Ingest {
            user: "alice".into(),
            events: typing,
        },
    );
    assert_eq!(kind, ErrorKind::BadRequest);
    assert!(
        message.contains("event 7") && message.contains("nothing was ingested"),
        "{message}"
    );
    // Nothing known about alice: the rejected batch left no trace.
    let (kind, _) = refused(
        &mut core,
        &root(),
        RequestBody::Assess {
            user: "alice".into(),
        },
    );
    assert_eq!(kind, ErrorKind::UnknownUser);

    for user in ["", "../etc", "a b", "-rf", "x:y"] {
        let (kind, _) = refused(
            &mut core,
            &root(),
            RequestBody::Assess { user: user.into() },
        );
        assert_eq!(kind, ErrorKind::BadRequest, "{user:?}");
    }
    let (kind, message) = refused(
        &mut core,
        &root(),
        RequestBody::Enroll {
            user: "alice".into(),
            events: synthetic_typist(10, 90.0, 180.0, 1),
        },
    );
    assert_eq!(kind, ErrorKind::BadRequest);
    assert!(message.contains("not one full window"), "{message}");
}

#[test]
fn live_typing_enrols_then_genuine_is_trusted_and_an_impostor_drifts() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.plugins.get_mut("keystroke").unwrap().enrol_windows = 6;
    let mut core = core_with(dir.path(), config);

    // Nothing yet: unknown. After a few keystrokes: learning, with progress.
    let (kind, _) = refused(
        &mut core,
        &root(),
        RequestBody::Assess {
            user: "alice".into(),
        },
    );
    assert_eq!(kind, ErrorKind::UnknownUser);
    let typing = synthetic_typist(400, 90.0, 180.0, 1);
    ingest(&mut core, &root(), "alice", &typing[..220]);
    let a = assess(&mut core, "alice");
    assert_eq!(a.state, TrustState::Learning);
    assert_eq!(
        (a.modalities[0].enrol_windows, a.modalities[0].enrol_needed),
        (2, 6)
    );
    assert!(!a.modalities[0].enrolled);

    // Six windows of 100 events: a profile is built and stored.
    ingest(&mut core, &root(), "alice", &typing[220..]);
    let a = assess(&mut core, "alice");
    assert!(a.modalities[0].enrolled, "{a:?}");
    assert_eq!(a.modalities[0].enrol_windows, 6);

    ingest(
        &mut core,
        &root(),
        "alice",
        &synthetic_typist(300, 90.0, 180.0, 2),
    );
    let a = assess(&mut core, "alice");
    assert_eq!(a.state, TrustState::Trusted, "{a:?}");
    assert!(a.evidence_age_ms.is_some_and(|ms| ms < 5_000));

    ingest(
        &mut core,
        &root(),
        "alice",
        &synthetic_typist(300, 150.0, 300.0, 3),
    );
    let a = assess(&mut core, "alice");
    assert!(
        matches!(a.state, TrustState::Drift | TrustState::Uncertain),
        "{a:?}"
    );
    // The fusion window still holds the genuine windows; the latest one is negative.
    assert!(a.modalities[0].last_llr.is_some_and(|l| l < 0.0), "{a:?}");
}

#[test]
fn adaptation_is_bounded_per_day() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.session.adapt_min_llr = Some(0.5);
    config.adaptation.max_per_day = 2;
    config.plugins.get_mut("keystroke").unwrap().settings =
        "mode = \"free\"\nadapt_min_llr = 0.5".into();
    let mut core = core_with(dir.path(), config);
    ok(
        &mut core,
        &root(),
        RequestBody::Enroll {
            user: "alice".into(),
            events: synthetic_typist(500, 90.0, 180.0, 1),
        },
    );
    ingest(
        &mut core,
        &root(),
        "alice",
        &synthetic_typist(800, 90.0, 180.0, 2),
    );
    assert_eq!(core.counters.adaptations_applied, 2, "{:?}", core.counters);
    assert!(
        core.counters.adaptations_refused_daily_limit > 0,
        "{:?}",
        core.counters
    );
    let export = match ok(
        &mut core,
        &root(),
        RequestBody::Export {
            user: "alice".into(),
        },
    ) {
        ResponseBody::Export { data, .. } => data,
        other => panic!("{other:?}"),
    };
    assert_eq!(export["profiles"][0]["adaptations"], 2, "{export}");
    assert_eq!(export["profiles"][0]["revision"], 3, "{export}");
}

#[test]
fn devices_follow_the_latest_local_session_but_not_sudo_or_remote_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_with(dir.path(), Config::default());
    let hasher = core.key_hasher();
    let keys = |n: usize| -> Vec<Event> {
        (0..n as u64)
            .flat_map(|i| {
                [
                    Event::key(
                        EventKind::KEY_DOWN,
                        core_now() + i * 200_000,
                        hasher.key_id(30),
                    ),
                    Event::key(
                        EventKind::KEY_UP,
                        core_now() + i * 200_000 + 90_000,
                        hasher.key_id(30),
                    ),
                ]
            })
            .collect()
    };
    // No session: device input belongs to nobody and is only counted.
    core.device_events(&keys(5));
    assert_eq!(core.counters.device_events_unbound, 10);

    ok(&mut core, &root(), open("alice", "login", None));
    ok(&mut core, &root(), open("root", "sudo", None)); // sudo: ignored
    ok(
        &mut core,
        &root(),
        open("mallory", "sshd", Some("203.0.113.9")),
    ); // remote
    core.device_events(&keys(30));
    assert_eq!(core.counters.device_events_unbound, 10);
    let status = match ok(&mut core, &root(), RequestBody::Status { user: None }) {
        ResponseBody::Status { users } => users,
        other => panic!("{other:?}"),
    };
    let alice = status.iter().find(|u| u.user == "alice").unwrap();
    assert_eq!(alice.assessment.modalities[0].enrol_windows, 0);
    assert_eq!(alice.assessment.state, TrustState::Learning, "{alice:?}");
    assert!(status.iter().all(|u| u.user != "root"), "{status:?}");
    let mallory = status.iter().find(|u| u.user == "mallory").unwrap();
    assert_eq!(
        mallory.assessment.state,
        TrustState::Unenrolled,
        "{mallory:?}"
    );

    // Alice's last session closes: her live evidence goes with it.
    ok(
        &mut core,
        &root(),
        RequestBody::SessionClose {
            user: "alice".into(),
            service: "login".into(),
            tty: Some("tty1".into()),
        },
    );
    core.device_events(&keys(5));
    assert_eq!(core.counters.device_events_unbound, 20);
}

/// Device events carry daemon-clock times; any increasing values work for the core.
fn core_now() -> u64 {
    1 << 41
}

#[test]
fn drift_runs_the_configured_command_once() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("drifted");
    let mut config = Config::default();
    config.drift.action = DriftAction::Command;
    config.drift.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("echo \"$HABITUS_USER\" >> {}", marker.display()),
    ];
    let mut core = core_with(dir.path(), config);
    ok(
        &mut core,
        &root(),
        RequestBody::Enroll {
            user: "alice".into(),
            events: synthetic_typist(500, 90.0, 180.0, 1),
        },
    );
    ingest(
        &mut core,
        &root(),
        "alice",
        &synthetic_typist(600, 160.0, 320.0, 3),
    );
    assert_eq!(assess(&mut core, "alice").state, TrustState::Drift);
    let start = std::time::Instant::now();
    while !marker.exists() && start.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "alice\n");
}

#[test]
fn forget_erases_and_export_holds_no_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_with(dir.path(), Config::default());
    ok(
        &mut core,
        &root(),
        RequestBody::Enroll {
            user: "alice".into(),
            events: synthetic_typist(500, 90.0, 180.0, 1),
        },
    );
    let export = match ok(
        &mut core,
        &root(),
        RequestBody::Export {
            user: "alice".into(),
        },
    ) {
        ResponseBody::Export { data, .. } => data.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(export.contains("\"profiles\""), "{export}");
    assert!(
        !export.contains("\"code\"") && !export.contains("\"events\""),
        "{export}"
    );
    match ok(
        &mut core,
        &root(),
        RequestBody::Forget {
            user: "alice".into(),
        },
    ) {
        ResponseBody::Done { message } => assert!(message.contains("erased alice"), "{message}"),
        other => panic!("{other:?}"),
    }
    let (kind, _) = refused(
        &mut core,
        &root(),
        RequestBody::Assess {
            user: "alice".into(),
        },
    );
    assert_eq!(kind, ErrorKind::UnknownUser);
}
