//! pam_habitus.so under real libpam: cwrap's pam_wrapper, pamtester, a scripted fake
//! habitusd, pam_matrix as the strong factor, the canonical stack of DESIGN §5:
//!
//! ```text
//! auth [success=1 default=ignore] /abs/libpam_habitus.so socket=... timeout_ms=300
//! auth substack /abs/<service>-stepup          # pam_matrix
//! auth required /abs/pam_permit.so
//! ```
//!
//! Run with `--nocapture` to see how long every pamtester call took.

mod common;

use std::time::Duration;

use common::*;
use habitus_protocol::{RequestBody, TrustState};

/// Asserts the fault-safe outcome: the stack falls through to the strong factor, which
/// accepts the right password and refuses a wrong one. Returns the right-password run.
fn assert_strong_factor_decides(pam: &PamDir, service: &str, items: &[&str]) -> Run {
    let right = pamtester(pam, service, &["authenticate"], items, RIGHT_PASSWORD);
    assert!(right.success, "right password must succeed: {right:#?}");
    assert!(
        right.prompted(),
        "the strong factor must have asked: {right:#?}"
    );
    let wrong = pamtester(pam, service, &["authenticate"], items, WRONG_PASSWORD);
    assert!(!wrong.success, "wrong password must fail: {wrong:#?}");
    assert!(wrong.prompted(), "{wrong:#?}");
    right
}

/// A fault case: daemon behaving as `behaviour`; the strong factor must decide and the
/// user must be told `expected_message`.
fn fault_case(name: &str, behaviour: Behaviour, expected_message: &str) {
    if !pam_tests_can_run() {
        return;
    }
    let daemon = FakeDaemon::start(behaviour);
    let pam = PamDir::new(name);
    pam.write_canonical(name, &habitus_args(&daemon.socket, ""));
    let right = assert_strong_factor_decides(&pam, name, &[]);
    assert_eq!(
        right.habitus_messages(),
        vec![expected_message],
        "{right:#?}"
    );
    // The daemon was asked, about the right user, once per attempt.
    let asked = daemon.requests();
    assert_eq!(asked.len(), 2, "{asked:?}");
    for request in asked {
        assert_eq!(
            request,
            RequestBody::Assess {
                user: USER.into(),
                tty: None
            }
        );
    }
}

const UNAVAILABLE: &str = "Habitus: behaviour check unavailable; please use your second factor.";

#[test]
fn trusted_verdict_skips_the_strong_factor() {
    if !pam_tests_can_run() {
        return;
    }
    let daemon = FakeDaemon::start(Behaviour::Trusted);
    let pam = PamDir::new("trusted");
    pam.write_canonical("trusted", &habitus_args(&daemon.socket, ""));
    // The wrong password is on stdin, but nobody reads it.
    let run = pamtester(&pam, "trusted", &["authenticate"], &[], WRONG_PASSWORD);
    assert!(run.success, "{run:#?}");
    assert!(!run.prompted(), "the strong factor must not run: {run:#?}");
    assert!(
        run.habitus_messages().is_empty(),
        "no message on success: {run:#?}"
    );
    assert!(run.stderr.contains("step-up skipped"), "{run:#?}");
    assert_eq!(
        daemon.requests(),
        vec![RequestBody::Assess {
            user: USER.into(),
            tty: None
        }]
    );
}

/// The module forwards `PAM_TTY` exactly (habitusd decides whether that terminal is in
/// front of seat0), and sends none when PAM has none or an empty one.
#[test]
fn the_asking_terminal_is_sent_with_the_question() {
    if !pam_tests_can_run() {
        return;
    }
    let daemon = FakeDaemon::start(Behaviour::Trusted);
    let pam = PamDir::new("tty");
    pam.write_canonical("tty", &habitus_args(&daemon.socket, ""));
    for items in [&["tty=/dev/tty3"][..], &["tty=:1"], &["tty="]] {
        let run = pamtester(&pam, "tty", &["authenticate"], items, WRONG_PASSWORD);
        assert!(run.success, "{items:?}: {run:#?}");
    }
    assert_eq!(
        daemon.requests(),
        ["/dev/tty3", ":1"]
            .into_iter()
            .map(|tty| Some(tty.to_string()))
            .chain([None])
            .map(|tty| RequestBody::Assess {
                user: USER.into(),
                tty
            })
            .collect::<Vec<_>>()
    );
}

#[test]
fn verdict_about_another_user_is_ignored() {
    fault_case("otheruser", Behaviour::OtherUser, UNAVAILABLE);
}

#[test]
fn learning_is_ignored() {
    fault_case(
        "learning",
        Behaviour::State(TrustState::Learning),
        "Habitus: still learning your behaviour; please use your second factor.",
    );
}

#[test]
fn drift_is_ignored() {
    fault_case(
        "drift",
        Behaviour::State(TrustState::Drift),
        "Habitus: your behaviour has drifted from your profile; please use your second factor.",
    );
}

#[test]
fn uncertain_and_unenrolled_are_ignored() {
    fault_case(
        "uncertain",
        Behaviour::State(TrustState::Uncertain),
        "Habitus: your behaviour does not match your profile clearly enough; please use your second factor.",
    );
    fault_case(
        "unenrolled",
        Behaviour::State(TrustState::Unenrolled),
        "Habitus: no behaviour profile for you yet; please use your second factor.",
    );
}

#[test]
fn stale_evidence_is_ignored() {
    fault_case(
        "staleevidence",
        Behaviour::StaleEvidence,
        "Habitus: no recent activity to judge your behaviour by; please use your second factor.",
    );
}

#[test]
fn stale_verdict_is_ignored() {
    fault_case("staleverdict", Behaviour::StaleVerdict, UNAVAILABLE);
}

#[test]
fn error_reply_is_ignored() {
    fault_case("errorreply", Behaviour::Error, UNAVAILABLE);
}

#[test]
fn garbage_bytes_are_ignored() {
    fault_case("garbage", Behaviour::GarbageBytes, UNAVAILABLE);
}

#[test]
fn framed_garbage_is_ignored() {
    fault_case("garbagejson", Behaviour::GarbageJson, UNAVAILABLE);
}

#[test]
fn protocol_version_2_is_ignored() {
    fault_case("other-version", Behaviour::OtherVersion, UNAVAILABLE);
}

#[test]
fn silent_daemon_is_ignored_within_the_deadline() {
    if !pam_tests_can_run() {
        return;
    }
    let daemon = FakeDaemon::start(Behaviour::NeverAnswer);
    let pam = PamDir::new("silent");
    pam.write_canonical("silent", &habitus_args(&daemon.socket, ""));
    let right = assert_strong_factor_decides(&pam, "silent", &[]);
    assert_eq!(right.habitus_messages(), vec![UNAVAILABLE]);
    assert!(
        right.stderr.contains("no answer before the deadline"),
        "{right:#?}"
    );
    // The deadline is 300 ms; the whole pamtester run (process start, pam_wrapper
    // set-up, the wait, pam_matrix) must stay well under a loose bound.
    println!(
        "silent daemon: pamtester took {:.1} ms with timeout_ms={TIMEOUT_MS}",
        right.took.as_secs_f64() * 1000.0
    );
    assert!(
        right.took >= Duration::from_millis(TIMEOUT_MS),
        "{:?}",
        right.took
    );
    assert!(right.took < Duration::from_secs(5), "{:?}", right.took);
}

/// The host must survive a daemon that hangs up: no SIGPIPE death of sudo, just the
/// strong factor.
#[test]
fn daemon_hanging_up_is_ignored() {
    if !pam_tests_can_run() {
        return;
    }
    let daemon = FakeDaemon::start(Behaviour::HangUp);
    let pam = PamDir::new("hangup");
    pam.write_canonical("hangup", &habitus_args(&daemon.socket, ""));
    for _ in 0..3 {
        let right = assert_strong_factor_decides(&pam, "hangup", &[]);
        assert_eq!(right.habitus_messages(), vec![UNAVAILABLE]);
    }
}

#[test]
fn absent_daemon_is_ignored() {
    if !pam_tests_can_run() {
        return;
    }
    let (_dir, socket) = absent_socket();
    let pam = PamDir::new("absent");
    pam.write_canonical("absent", &habitus_args(&socket, ""));
    let right = assert_strong_factor_decides(&pam, "absent", &[]);
    assert_eq!(right.habitus_messages(), vec![UNAVAILABLE]);
}

#[test]
fn socket_not_owned_by_root_is_not_trusted() {
    if !pam_tests_can_run() {
        return;
    }
    let daemon = FakeDaemon::start(Behaviour::Trusted);
    std::os::unix::fs::chown(&daemon.socket, Some(65534), Some(65534)).expect("chown socket");
    let pam = PamDir::new("chowned");
    pam.write_canonical("chowned", &habitus_args(&daemon.socket, ""));
    let right = assert_strong_factor_decides(&pam, "chowned", &[]);
    assert_eq!(right.habitus_messages(), vec![UNAVAILABLE]);
    assert!(
        right.stderr.contains("socket owned by uid 65534"),
        "{right:#?}"
    );
    assert!(daemon.seen().is_empty(), "the module must not even connect");
}

/// Run as uid 65534 by [`daemon_not_running_as_root_is_not_trusted`]: listens on the
/// socket named in the environment and never answers. Does nothing in a normal run.
#[test]
fn helper_listen_as_unprivileged_user() {
    let Some(socket) = std::env::var_os(PEER_HELPER_ENV) else {
        return;
    };
    let _listener = std::os::unix::net::UnixListener::bind(socket).expect("helper bind");
    std::thread::sleep(Duration::from_secs(30));
}

const PEER_HELPER_ENV: &str = "PAM_HABITUS_TEST_LISTEN_AS_NOBODY";

/// A root-owned socket file with a non-root process behind it (the file was chowned after
/// binding, or swapped under the path): SO_PEERCRED catches what lstat cannot.
#[test]
fn daemon_not_running_as_root_is_not_trusted() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !pam_tests_can_run() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let socket = dir.path().join("habitusd.sock");
    let mut helper = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "helper_listen_as_unprivileged_user",
            "--nocapture",
        ])
        .env(PEER_HELPER_ENV, &socket)
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the unprivileged listener");
    let started = std::time::Instant::now();
    while !socket.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "helper never listened"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::os::unix::fs::chown(&socket, Some(0), Some(0)).expect("chown socket to root");
    let pam = PamDir::new("peeruid");
    pam.write_canonical("peeruid", &habitus_args(&socket, ""));
    let right = assert_strong_factor_decides(&pam, "peeruid", &[]);
    let _ = helper.kill();
    let _ = helper.wait();
    assert_eq!(right.habitus_messages(), vec![UNAVAILABLE]);
    assert!(
        right.stderr.contains("daemon runs as uid 65534"),
        "{right:#?}"
    );
}

#[test]
fn unparsable_option_falls_back_to_the_strong_factor() {
    if !pam_tests_can_run() {
        return;
    }
    let daemon = FakeDaemon::start(Behaviour::Trusted);
    let pam = PamDir::new("badoption");
    // Last wins: timeout_ms=abc comes after the valid timeout_ms=300.
    pam.write_canonical("badoption", &habitus_args(&daemon.socket, "timeout_ms=abc"));
    let right = assert_strong_factor_decides(&pam, "badoption", &[]);
    assert_eq!(right.habitus_messages(), vec![UNAVAILABLE]);
    assert!(right.stderr.contains("timeout_ms=\"abc\""), "{right:#?}");
    assert!(
        daemon.seen().is_empty(),
        "misconfigured: habitusd must not be asked"
    );
}

#[test]
fn unknown_option_falls_back_to_the_strong_factor() {
    if !pam_tests_can_run() {
        return;
    }
    let daemon = FakeDaemon::start(Behaviour::Trusted);
    let pam = PamDir::new("unknownoption");
    pam.write_canonical("unknownoption", &habitus_args(&daemon.socket, "nullok"));
    let right = assert_strong_factor_decides(&pam, "unknownoption", &[]);
    assert!(
        right.stderr.contains("unknown option \"nullok\""),
        "{right:#?}"
    );
    assert!(daemon.seen().is_empty());
}

/// pamtester can set PAM_RHOST (`-I rhost=...`), so the remote-session guard is tested
/// end to end (and as a pure function in `decision::tests`).
#[test]
fn remote_session_falls_back_to_the_strong_factor() {
    if !pam_tests_can_run() {
        return;
    }
    let daemon = FakeDaemon::start(Behaviour::Trusted);
    let pam = PamDir::new("remote");
    pam.write_canonical("remote", &habitus_args(&daemon.socket, ""));
    let right = assert_strong_factor_decides(&pam, "remote", &["rhost=203.0.113.7"]);
    assert_eq!(
        right.habitus_messages(),
        vec!["Habitus: remote session; please use your second factor."]
    );
    assert!(
        daemon.seen().is_empty(),
        "a remote login must not be assessed"
    );
    // An empty PAM_RHOST is a local login.
    let local = pamtester(
        &pam,
        "remote",
        &["authenticate"],
        &["rhost="],
        WRONG_PASSWORD,
    );
    assert!(local.success && !local.prompted(), "{local:#?}");
}

#[test]
fn services_option_limits_where_the_module_acts() {
    if !pam_tests_can_run() {
        return;
    }
    let daemon = FakeDaemon::start(Behaviour::Trusted);
    let pam = PamDir::new("notlisted");
    pam.write_canonical(
        "notlisted",
        &habitus_args(&daemon.socket, "services=sudo,login"),
    );
    let right = assert_strong_factor_decides(&pam, "notlisted", &[]);
    assert!(right.habitus_messages().is_empty(), "{right:#?}");
    assert!(daemon.seen().is_empty());

    let listed = PamDir::new("listed");
    listed.write_canonical(
        "listed",
        &habitus_args(&daemon.socket, "services=sudo,listed"),
    );
    let run = pamtester(&listed, "listed", &["authenticate"], &[], WRONG_PASSWORD);
    assert!(run.success && !run.prompted(), "{run:#?}");
}

#[test]
fn silent_flag_and_quiet_option_suppress_messages() {
    if !pam_tests_can_run() {
        return;
    }
    let daemon = FakeDaemon::start(Behaviour::State(TrustState::Drift));
    let pam = PamDir::new("silentflag");
    pam.write_canonical("silentflag", &habitus_args(&daemon.socket, ""));
    let run = pamtester(
        &pam,
        "silentflag",
        &["authenticate(PAM_SILENT)"],
        &[],
        RIGHT_PASSWORD,
    );
    assert!(run.success, "{run:#?}");
    assert!(run.habitus_messages().is_empty(), "{run:#?}");

    let quiet = PamDir::new("quiet");
    quiet.write_canonical("quiet", &habitus_args(&daemon.socket, "quiet"));
    let run = pamtester(&quiet, "quiet", &["authenticate"], &[], RIGHT_PASSWORD);
    assert!(run.success, "{run:#?}");
    assert!(run.habitus_messages().is_empty(), "{run:#?}");
}

#[test]
fn sessions_are_announced_to_habitusd() {
    if !pam_tests_can_run() {
        return;
    }
    let daemon = FakeDaemon::start(Behaviour::Trusted);
    let pam = PamDir::new("session");
    pam.write_canonical("session", &habitus_args(&daemon.socket, ""));
    let run = pamtester(
        &pam,
        "session",
        &["open_session", "close_session"],
        &["tty=/dev/pts/7"],
        "",
    );
    assert!(run.success, "{run:#?}");
    assert_eq!(
        daemon.requests(),
        vec![
            RequestBody::SessionOpen {
                user: USER.into(),
                service: "session".into(),
                tty: Some("/dev/pts/7".into()),
                rhost: None,
            },
            RequestBody::SessionClose {
                user: USER.into(),
                service: "session".into(),
                tty: Some("/dev/pts/7".into()),
            },
        ]
    );
    let remote = pamtester(
        &pam,
        "session",
        &["open_session"],
        &["rhost=host.example"],
        "",
    );
    assert!(remote.success, "{remote:#?}");
    assert!(matches!(
        daemon.requests().last(),
        Some(RequestBody::SessionOpen { rhost: Some(h), .. }) if h == "host.example"
    ));
}

#[test]
fn sessions_never_fail_when_habitusd_is_down_or_silent() {
    if !pam_tests_can_run() {
        return;
    }
    let (_dir, socket) = absent_socket();
    let pam = PamDir::new("sessiondown");
    pam.write_canonical("sessiondown", &habitus_args(&socket, ""));
    let run = pamtester(
        &pam,
        "sessiondown",
        &["open_session", "close_session"],
        &[],
        "",
    );
    assert!(run.success, "{run:#?}");

    let daemon = FakeDaemon::start(Behaviour::NeverAnswer);
    let pam = PamDir::new("sessionhung");
    pam.write_canonical("sessionhung", &habitus_args(&daemon.socket, ""));
    let run = pamtester(
        &pam,
        "sessionhung",
        &["open_session", "close_session"],
        &[],
        "",
    );
    assert!(run.success, "{run:#?}");
    assert!(run.took < Duration::from_secs(5), "{:?}", run.took);
}
