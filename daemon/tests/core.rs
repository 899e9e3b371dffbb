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

fn core_with(dir: &Path, mut config: Config) -> Core {
    if config.input.logind_seat == Config::default().input.logind_seat {
        // Tests decide who owns the seat; the machine's logind must not.
        config.input.logind_seat = dir.join("no-logind-seat");
    }
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

/// A core with alice enrolled from live typing (6 windows of synthetic typist 1), with
/// `config`'s other settings.
fn core_with_alice_enrolled(dir: &Path, mut config: Config) -> Core {
    config.plugins.get_mut("keystroke").unwrap().enrol_windows = 6;
    let mut core = core_with(dir, config);
    ingest(
        &mut core,
        &root(),
        "alice",
        &synthetic_typist(400, 90.0, 180.0, 1),
    );
    core
}

fn root() -> Peer {
    Peer::root()
}

fn alice_peer() -> Peer {
    Peer::user(1000, "alice")
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
    match ok(
        core,
        &root(),
        RequestBody::Assess {
            user: user.into(),
            tty: None,
        },
    ) {
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
fn a_users_own_batches_are_bounded_and_roots_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_with(dir.path(), Config::default());
    let typing = synthetic_typist(1100, 90.0, 180.0, 1);
    assert!(typing.len() > 2000);
    let (kind, message) = refused(
        &mut core,
        &alice_peer(),
        RequestBody::Ingest {
            user: "alice".into(),
            events: typing.clone(),
        },
    );
    assert_eq!(kind, ErrorKind::BadRequest);
    assert!(message.contains("at most 2000"), "{message}");
    // Nothing of the refused batch was taken; the same events in smaller batches are.
    let (kind, _) = refused(
        &mut core,
        &root(),
        RequestBody::Assess {
            user: "alice".into(),
            tty: None,
        },
    );
    assert_eq!(kind, ErrorKind::UnknownUser);
    ingest(&mut core, &alice_peer(), "alice", &typing[..2000]);
    ingest(&mut core, &root(), "bob", &typing);
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
            tty: None,
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
        RequestBody::Assess {
            user: "bob".into(),
            tty: None,
        },
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
        pid: None,
    };
    let (kind, _) = refused(
        &mut core,
        &ghost,
        RequestBody::Assess {
            user: "alice".into(),
            tty: None,
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
        message.contains("event 7") && message.contains("nothing of this batch was ingested"),
        "{message}"
    );
    // Nothing known about alice: the rejected batch left no trace.
    let (kind, _) = refused(
        &mut core,
        &root(),
        RequestBody::Assess {
            user: "alice".into(),
            tty: None,
        },
    );
    assert_eq!(kind, ErrorKind::UnknownUser);

    let mut backwards = synthetic_typist(60, 90.0, 180.0, 1);
    backwards[9].t_us = 0;
    let mut huge = synthetic_typist(60, 90.0, 180.0, 1);
    huge[3].t_us = u64::MAX;
    for (events, needle) in [
        (backwards, "event 9: time 0 goes back"),
        (huge, "event 3: time 18446744073709551615 is out of range"),
    ] {
        let (kind, message) = refused(
            &mut core,
            &root(),
            RequestBody::Ingest {
                user: "alice".into(),
                events,
            },
        );
        assert_eq!(kind, ErrorKind::BadRequest);
        assert!(message.contains(needle), "{message}");
    }
    let (kind, message) = refused(&mut core, &root(), open("alice", "lo\ngin", None));
    assert_eq!(kind, ErrorKind::BadRequest);
    assert!(message.contains("service"), "{message}");

    for user in ["", "../etc", "a b", "-rf", "x:y"] {
        let (kind, _) = refused(
            &mut core,
            &root(),
            RequestBody::Assess {
                user: user.into(),
                tty: None,
            },
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
            tty: None,
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
        &synthetic_typist(1000, 90.0, 180.0, 2),
    );
    let a = assess(&mut core, "alice");
    assert_eq!(a.state, TrustState::Trusted, "{a:?}");
    assert!(a.evidence_age_ms.is_some_and(|ms| ms < 5_000));

    ingest(
        &mut core,
        &root(),
        "alice",
        // Unmistakably someone else: this tests the pipeline, not the model's margin
        // (measured on real typing by `habitus eval stepup`).
        &synthetic_typist(300, 220.0, 500.0, 3),
    );
    let a = assess(&mut core, "alice");
    assert!(
        matches!(a.state, TrustState::Drift | TrustState::Uncertain),
        "{a:?}"
    );
    // The fusion window still holds the genuine windows; the latest one is negative.
    assert!(a.modalities[0].last_llr.is_some_and(|l| l < 0.0), "{a:?}");
}

/// `session.idle_reset_s` reaches the live sessions: typing that resumes after a longer
/// pause (a locked screen, someone else sitting down) is not vouched for by what was
/// typed before it. The pause here is in the collector's own clock, which the core keeps
/// while it runs on (pauses within a batch stream count like real ones).
#[test]
fn typing_after_a_pause_is_not_vouched_for_by_the_typing_before_it() {
    for idle_reset_s in [Some(2.0), None] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.session.idle_reset_s = idle_reset_s;
        let mut core = core_with_alice_enrolled(dir.path(), config);
        let typing = synthetic_typist(1000, 90.0, 180.0, 2);
        ingest(&mut core, &root(), "alice", &typing);
        assert_eq!(assess(&mut core, "alice").state, TrustState::Trusted);

        // A few keys (less than a window) 3 s after the last ones.
        let resume = typing.last().unwrap().t_us + 3_000_000;
        let mut more = synthetic_typist(10, 90.0, 180.0, 3);
        let first = more[0].t_us;
        for e in &mut more {
            e.t_us = e.t_us - first + resume;
        }
        ingest(&mut core, &root(), "alice", &more);
        let a = assess(&mut core, "alice");
        match idle_reset_s {
            Some(_) => {
                assert_eq!(a.state, TrustState::Uncertain, "{a:?}");
                assert_eq!(a.fused_llr, 0.0);
                assert!(a.trust >= 95.0, "trust is kept: {a:?}");
            }
            None => assert_eq!(a.state, TrustState::Trusted, "{a:?}"),
        }
    }
}

/// A pause is measured on the daemon's own clock too: a collector whose clock runs ahead
/// (a step forward, a replay sent faster than real time) must not stretch what earlier
/// evidence vouches for, and an `assess` asked during a pause is not Trusted however
/// recent the events' own times look.
#[test]
fn a_pause_on_the_daemons_clock_counts_whatever_times_the_events_carry() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.session.idle_reset_s = Some(1.0);
    let mut core = core_with_alice_enrolled(dir.path(), config);
    let mut typing = synthetic_typist(1000, 90.0, 180.0, 2);
    // Halfway through, the collector's clock steps 30 minutes forward.
    for e in &mut typing[1000..] {
        e.t_us += 30 * 60 * 1_000_000;
    }
    ingest(&mut core, &root(), "alice", &typing);
    assert_eq!(assess(&mut core, "alice").state, TrustState::Trusted);
    std::thread::sleep(std::time::Duration::from_millis(1_300));
    let a = assess(&mut core, "alice");
    assert_eq!(a.state, TrustState::Uncertain, "{a:?}");
    assert_eq!(a.fused_llr, 0.0);
}

/// Local typing that follows a root collector's replay is scored, not rejected as going
/// backwards: a replay sent faster than real time keeps its own clock (up to an hour
/// ahead of the daemon's), and device events, on the daemon's clock, are placed after it.
/// The typist decides the verdict, so the events were really scored.
#[test]
fn local_typing_after_a_replay_that_ran_ahead_is_scored() {
    for (typist, expected) in [
        ((90.0, 180.0, 2), TrustState::Trusted),
        ((40.0, 420.0, 7), TrustState::Drift),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.session.idle_reset_s = None;
        let mut core = core_with_alice_enrolled(dir.path(), config);
        // The replay goes on after a 30-minute pause in its own clock, sent at once: the
        // collector's clock now runs half an hour ahead of the daemon's.
        let mut replay = synthetic_typist(400, 90.0, 180.0, 1);
        for e in &mut replay {
            e.t_us += 400 * 300_000 + 30 * 60 * 1_000_000;
        }
        ingest(&mut core, &root(), "alice", &replay);
        ok(&mut core, &root(), open("alice", "login", None));
        let hasher = core.key_hasher();
        let start = core.now_us();
        let (hold, gap, seed) = typist;
        let typing: Vec<Event> = synthetic_typist(1000, hold, gap, seed)
            .iter()
            .map(|w| {
                let kind = match w.kind {
                    habitus_protocol::WireEventKind::KeyDown => EventKind::KEY_DOWN,
                    _ => EventKind::KEY_UP,
                };
                Event::key(kind, start + w.t_us, hasher.key_id(w.code))
            })
            .collect();
        // The device reader hands over a few events at a time.
        for batch in typing.chunks(4) {
            core.device_events(batch);
        }
        let a = assess(&mut core, "alice");
        assert_eq!(a.state, expected, "{a:?}");
        assert!(a.modalities[0].last_llr.is_some(), "{a:?}");
    }
}

/// While the user has a remote logind session open, and for `input.remote_hold_s` after
/// it was last seen, no verdict about their local typing is given, whoever asks: a
/// process started from the SSH session can leave its scope and environment behind
/// (`systemd-run --user`, a tmux server started at the desk) and outlive it (a timer,
/// `at`, cron).
#[test]
fn no_verdict_while_the_user_has_or_just_had_a_remote_session() {
    let dir = tempfile::tempdir().unwrap();
    let sessions = dir.path().join("sessions");
    std::fs::create_dir(&sessions).unwrap();
    let mut config = Config::default();
    config.input.logind_sessions = sessions.clone();
    config.input.remote_hold_s = 2;
    config.session.idle_reset_s = None; // this test waits; pauses are not its subject
    let mut core = core_with_alice_enrolled(dir.path(), config);
    ingest(
        &mut core,
        &root(),
        "alice",
        &synthetic_typist(1000, 90.0, 180.0, 2),
    );
    std::fs::write(sessions.join("3"), "UID=1000\nUSER=alice\nREMOTE=0\n").unwrap();
    assert_eq!(assess(&mut core, "alice").state, TrustState::Trusted);
    let refusal = |core: &mut Core| {
        let (kind, message) = refused(
            core,
            &root(),
            RequestBody::Assess {
                user: "alice".into(),
                tty: None,
            },
        );
        assert_eq!(kind, ErrorKind::RemoteSession, "{message}");
        message
    };

    let ssh = "UID=1000\nUSER=alice\nREMOTE=1\nREMOTE_HOST=203.0.113.9\nSERVICE=sshd\n";
    std::fs::write(sessions.join("9"), ssh).unwrap();
    let message = refusal(&mut core);
    assert!(
        message.contains("remote logind session 9 open"),
        "{message}"
    );

    // The SSH session ends: still no verdict for remote_hold_s, then verdicts resume.
    std::fs::remove_file(sessions.join("9")).unwrap();
    let message = refusal(&mut core);
    assert!(message.contains("had a remote logind session"), "{message}");
    std::thread::sleep(std::time::Duration::from_millis(2_200));
    assert_eq!(assess(&mut core, "alice").state, TrustState::Trusted);

    // A session that comes and goes between two assessments is seen by the periodic
    // look (habitusd makes it every 2 s).
    std::fs::write(sessions.join("10"), ssh).unwrap();
    core.observe_remote_sessions();
    std::fs::remove_file(sessions.join("10")).unwrap();
    let message = refusal(&mut core);
    assert!(message.contains("had a remote logind session"), "{message}");
    // Another user's remote session says nothing about alice.
    std::thread::sleep(std::time::Duration::from_millis(2_200));
    std::fs::write(sessions.join("11"), ssh.replace("alice", "bob")).unwrap();
    assert_eq!(assess(&mut core, "alice").state, TrustState::Trusted);
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
    // Still drifting: the action is edge-triggered, not repeated per window.
    ingest(
        &mut core,
        &root(),
        "alice",
        &synthetic_typist(300, 160.0, 320.0, 4),
    );
    assert_eq!(core.counters.drift_actions, 1);
    let start = std::time::Instant::now();
    while !marker.exists() && start.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "alice\n");
}

#[test]
fn a_users_own_collector_can_never_enrol_them_or_make_them_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.plugins.get_mut("keystroke").unwrap().enrol_windows = 3;
    let mut core = core_with(dir.path(), config);
    let alice = alice_peer();

    // Self-reported typing, plenty of it: no enrolment.
    ingest(
        &mut core,
        &alice,
        "alice",
        &synthetic_typist(600, 90.0, 180.0, 1),
    );
    let a = assess(&mut core, "alice");
    assert_eq!(a.state, TrustState::Unenrolled, "{a:?}");
    assert_eq!(a.modalities[0].enrol_windows, 0);

    // Enrolled by root; genuine typing from her own collector still never reaches
    // Trusted, while the same typing from a root source does. (A long enrolment: this
    // synthetic typist has no per-key habits, so only well-estimated per-key means give
    // the fused evidence a Trusted verdict needs.)
    ok(
        &mut core,
        &root(),
        RequestBody::Enroll {
            user: "alice".into(),
            events: synthetic_typist(1500, 90.0, 180.0, 2),
        },
    );
    ingest(
        &mut core,
        &alice,
        "alice",
        &synthetic_typist(300, 90.0, 180.0, 3),
    );
    let a = assess(&mut core, "alice");
    assert!(a.fused_llr > 4.6, "{a:?}");
    assert_eq!(a.state, TrustState::Uncertain, "{a:?}");

    let mut fresh = core_with(&dir.path().join("other"), Config::default());
    ok(
        &mut fresh,
        &root(),
        RequestBody::Enroll {
            user: "alice".into(),
            events: synthetic_typist(1500, 90.0, 180.0, 2),
        },
    );
    ingest(
        &mut fresh,
        &root(),
        "alice",
        &synthetic_typist(300, 90.0, 180.0, 3),
    );
    assert_eq!(assess(&mut fresh, "alice").state, TrustState::Trusted);
}

#[test]
fn logind_decides_who_owns_the_seat() {
    let dir = tempfile::tempdir().unwrap();
    let seat = dir.path().join("seat0");
    let mut config = Config::default();
    config.input.logind_seat = seat.clone();
    let mut core = core_with(dir.path(), config);
    let hasher = core.key_hasher();
    let keys: Vec<Event> = (0..30u64)
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
        .collect();
    // alice opened the last PAM session, but logind says root's session is active
    // (fast user switching makes no PAM call).
    ok(&mut core, &root(), open("alice", "login", None));
    std::fs::write(&seat, "# logind\nACTIVE=3\nACTIVE_UID=0\n").unwrap();
    core.device_events(&keys);
    let users = match ok(&mut core, &root(), RequestBody::Status { user: None }) {
        ResponseBody::Status { users } => users,
        other => panic!("{other:?}"),
    };
    let root_user = users
        .iter()
        .find(|u| u.user == "root")
        .expect("root got the input");
    assert_eq!(root_user.assessment.state, TrustState::Learning);
    let alice = users.iter().find(|u| u.user == "alice").unwrap();
    assert_eq!(alice.assessment.state, TrustState::Unenrolled, "{alice:?}");
}

#[test]
fn forgotten_users_are_not_learned_again_until_enrolled() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.plugins.get_mut("keystroke").unwrap().enrol_windows = 2;
    let mut core = core_with(dir.path(), config);
    ingest(
        &mut core,
        &root(),
        "alice",
        &synthetic_typist(150, 90.0, 180.0, 1),
    );
    assert!(assess(&mut core, "alice").modalities[0].enrolled);
    ok(
        &mut core,
        &root(),
        RequestBody::Forget {
            user: "alice".into(),
        },
    );
    ingest(
        &mut core,
        &root(),
        "alice",
        &synthetic_typist(300, 90.0, 180.0, 2),
    );
    let a = assess(&mut core, "alice");
    assert_eq!(
        (a.state, a.modalities[0].enrol_windows),
        (TrustState::Unenrolled, 0),
        "{a:?}"
    );
    // status says why the count stays at 0.
    let forgotten = |core: &mut Core| match ok(
        core,
        &root(),
        RequestBody::Status {
            user: Some("alice".into()),
        },
    ) {
        ResponseBody::Status { users } => users[0].forgotten,
        other => panic!("{other:?}"),
    };
    assert!(forgotten(&mut core));
    // The mark is in the store: a restarted daemon does not learn her again either.
    let mut config = Config::default();
    config.plugins.get_mut("keystroke").unwrap().enrol_windows = 2;
    drop(core);
    let mut core = core_with(dir.path(), config);
    ingest(
        &mut core,
        &root(),
        "alice",
        &synthetic_typist(300, 90.0, 180.0, 4),
    );
    let a = assess(&mut core, "alice");
    assert_eq!(
        (a.state, a.modalities[0].enrol_windows),
        (TrustState::Unenrolled, 0),
        "after a restart: {a:?}"
    );
    ok(
        &mut core,
        &root(),
        RequestBody::Enroll {
            user: "alice".into(),
            events: synthetic_typist(300, 90.0, 180.0, 3),
        },
    );
    assert!(assess(&mut core, "alice").modalities[0].enrolled);
    assert!(!forgotten(&mut core));
    // The explicit enrolment ended the stored mark (kept as a keyed tag, not her name).
    drop(core);
    let secrets = Secrets::load_or_create(&dir.path().join("secrets.key")).unwrap();
    let store = ProfileStore::open(&dir.path().join("profiles.sqlite"), &secrets).unwrap();
    assert!(!store.is_forgotten("alice").unwrap());
}

#[test]
fn enrolment_progress_survives_logout() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.plugins.get_mut("keystroke").unwrap().enrol_windows = 6;
    let mut core = core_with(dir.path(), config);
    let typing = synthetic_typist(320, 90.0, 180.0, 1);
    ok(&mut core, &root(), open("alice", "login", None));
    ingest(&mut core, &root(), "alice", &typing[..300]);
    assert_eq!(assess(&mut core, "alice").modalities[0].enrol_windows, 3);
    ok(
        &mut core,
        &root(),
        RequestBody::SessionClose {
            user: "alice".into(),
            service: "login".into(),
            tty: Some("tty1".into()),
        },
    );
    ok(&mut core, &root(), open("alice", "login", None));
    ingest(&mut core, &root(), "alice", &typing[300..]);
    assert_eq!(assess(&mut core, "alice").modalities[0].enrol_windows, 6);
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
            tty: None,
        },
    );
    assert_eq!(kind, ErrorKind::UnknownUser);
}

/// Someone else enrolled on the machine who types like the live window takes that
/// evidence away from the claimed user (habitusd compares every window with the other
/// users' profiles); someone who types differently changes nothing; once forgotten,
/// nothing of them is compared any more.
#[test]
fn a_look_alike_enrolled_on_the_machine_lowers_the_score_until_forgotten() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut config = Config::default();
    config.session.other_users = 8; // off by default
    let mut alone = core_with(d1.path(), config.clone());
    // The same secrets, so both stores hash keys alike and alice's profiles are equal.
    std::fs::copy(d1.path().join("secrets.key"), d2.path().join("secrets.key")).unwrap();
    let mut shared = core_with(d2.path(), config);
    let enrol = |core: &mut Core, user: &str, events: Vec<WireEvent>| {
        ok(
            core,
            &root(),
            RequestBody::Enroll {
                user: user.into(),
                events,
            },
        );
    };
    for core in [&mut alone, &mut shared] {
        enrol(core, "alice", synthetic_typist(400, 90.0, 180.0, 1));
    }
    enrol(&mut shared, "carol", synthetic_typist(400, 160.0, 320.0, 3));
    // One window (50 keystrokes) of alice's, `offset_s` into her session.
    let last_llr = |core: &mut Core, seed: u64, offset_s: u64| -> f64 {
        let mut live = synthetic_typist(50, 90.0, 180.0, seed);
        for e in &mut live {
            e.t_us += offset_s * 1_000_000;
        }
        ingest(core, &root(), "alice", &live);
        assess(core, "alice").modalities[0].last_llr.unwrap()
    };
    let (a, s) = (last_llr(&mut alone, 7, 0), last_llr(&mut shared, 7, 0));
    assert_eq!(a.to_bits(), s.to_bits(), "carol types differently: {a} {s}");
    // bob is enrolled while alice's session is live.
    enrol(&mut shared, "bob", synthetic_typist(400, 90.0, 180.0, 2));
    let (a, s) = (last_llr(&mut alone, 8, 20), last_llr(&mut shared, 8, 20));
    assert!(a > 0.0 && s < a - 0.5, "bob types like alice: {a} {s}");
    // A restarted daemon loads the others when alice's session is created.
    drop(shared);
    let mut config = Config::default();
    config.session.other_users = 8;
    let mut shared = core_with(d2.path(), config);
    let (a, s) = (last_llr(&mut alone, 10, 30), last_llr(&mut shared, 10, 0));
    assert!(s < a - 0.1, "after a restart: {a} {s}");
    ok(
        &mut shared,
        &root(),
        RequestBody::Forget { user: "bob".into() },
    );
    let (a, s) = (last_llr(&mut alone, 9, 40), last_llr(&mut shared, 9, 40));
    assert_eq!(a.to_bits(), s.to_bits(), "bob was forgotten: {a} {s}");
}
