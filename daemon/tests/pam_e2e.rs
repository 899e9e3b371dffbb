//! End to end with real pieces: habitusd on a temporary socket and SQLite store, a user
//! enrolled from the Aalto benchmark, and `pamtester` under cwrap's pam_wrapper running
//! the canonical stack (pam_habitus.so → substack with pam_matrix.so as the strong
//! factor → pam_permit). Needs the packages `.ci/run` installs (pamtester,
//! libpam-wrapper, libpam0g-dev).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{aalto, pam_module, TestDaemon};
use habitus::pamtest::{PamHarness, PamOutcome};
use habitus_protocol::{RequestBody, TrustState};

const ALICE: &str = "1002_keystrokes.txt.gz";
const MALLORY: &str = "1005_keystrokes.txt.gz";
const PASSWORD: &str = "correct horse";

fn harness(daemon: &TestDaemon, options: &str) -> PamHarness {
    let module = pam_module();
    PamHarness::new(
        &daemon.path("pam.d"),
        &module,
        &format!("socket={} {options}", daemon.socket.display()),
        &[("alice", PASSWORD), ("bob", PASSWORD)],
    )
    .expect("pamtester and libpam-wrapper are installed (.ci/run installs them)")
}

/// The strong factor was asked, the right password passes and a wrong one fails.
fn assert_strong_factor(h: &PamHarness, user: &str, case: &str) {
    let wrong = h.authenticate(user, "not the password").unwrap();
    assert!(
        !wrong.success,
        "{case}: a wrong password passed: {}",
        wrong.output
    );
    assert!(
        wrong.prompted(),
        "{case}: no password prompt: {}",
        wrong.output
    );
    let right = h.authenticate(user, PASSWORD).unwrap();
    assert!(
        right.success,
        "{case}: the right password failed: {}",
        right.output
    );
    assert!(right.prompted(), "{case}: {}", right.output);
    println!("{case}: strong factor asked ({:.1} ms)", ms(&right));
}

fn ms(o: &PamOutcome) -> f64 {
    o.elapsed.as_secs_f64() * 1000.0
}

#[test]
fn genuine_behaviour_skips_the_step_up_and_an_impostor_is_asked() {
    let (Some(enrol), Some(genuine), Some(impostor)) = (
        aalto(ALICE, 0..10),
        aalto(ALICE, 10..15),
        aalto(MALLORY, 10..15),
    ) else {
        return;
    };
    let daemon = TestDaemon::start("");
    daemon.enroll("alice", &enrol);
    let h = harness(&daemon, "timeout_ms=300");

    daemon.session("alice", true);
    daemon.ingest("alice", &genuine);
    let a = daemon.assess("alice");
    assert_eq!(a.state, TrustState::Trusted, "{a:?}");
    // Trusted: no prompt at all, so even a wrong "password" on stdin is never read.
    let out = h.authenticate("alice", "not the password").unwrap();
    assert!(out.success, "genuine: {}", out.output);
    assert!(
        !out.prompted(),
        "genuine behaviour was asked for the password: {}",
        out.output
    );
    println!(
        "genuine: authenticated without a prompt in {:.1} ms",
        ms(&out)
    );
    daemon.session("alice", false);

    // A fresh session, someone else at the keyboard.
    daemon.session("alice", true);
    daemon.ingest("alice", &impostor);
    let a = daemon.assess("alice");
    assert!(
        matches!(a.state, TrustState::Uncertain | TrustState::Drift),
        "impostor: {a:?}"
    );
    assert!(a.fused_llr < 0.0, "{a:?}");
    assert_strong_factor(&h, "alice", "impostor");
}

/// The verdict is seat0's: a login asked for another virtual console (or a serial line)
/// while the owner types at seat0 gets the strong factor, and so does anyone once another
/// user's session is in front; the console in front does not.
#[test]
fn a_login_on_another_console_is_asked_for_the_strong_factor() {
    let (Some(enrol), Some(genuine)) = (aalto(ALICE, 0..10), aalto(ALICE, 10..15)) else {
        return;
    };
    let vt = tempfile::tempdir().unwrap();
    let active_vt = vt.path().join("active");
    std::fs::write(&active_vt, "tty1\n").unwrap();
    // logind's seat record does not exist at first (no logind); it is written below.
    let seat0 = vt.path().join("seats").join("seat0");
    let sessions = vt.path().join("sessions");
    let daemon = TestDaemon::start(&format!(
        "[input]\nevdev = false\nlogind_seat = {seat0:?}\nlogind_sessions = {sessions:?}\nactive_vt = {active_vt:?}\n"
    ));
    daemon.enroll("alice", &enrol);
    let h = harness(&daemon, "timeout_ms=300");
    daemon.session("alice", true);
    daemon.ingest("alice", &genuine);
    assert_eq!(daemon.assess("alice").state, TrustState::Trusted);

    let on = |tty: &str| {
        h.run_with_items(
            "alice",
            &["authenticate"],
            "not the password\n",
            &[("tty", tty)],
        )
        .unwrap()
    };
    for tty in ["/dev/tty1", "tty1", "/dev/pts/3"] {
        let out = on(tty);
        assert!(out.success && !out.prompted(), "{tty}: {}", out.output);
    }
    for tty in ["/dev/tty2", "tty3", "/dev/ttyS0"] {
        let out = on(tty);
        assert!(!out.success && out.prompted(), "{tty}: {}", out.output);
        assert!(
            out.output
                .contains("Habitus: this is not the console in use"),
            "{tty}: {}",
            out.output
        );
    }
    // The same console becomes the one in front (the owner switched to it).
    std::fs::write(&active_vt, "tty2\n").unwrap();
    let out = on("/dev/tty2");
    assert!(
        out.success && !out.prompted(),
        "after the switch: {}",
        out.output
    );
    // Which console is in front cannot be read: no verdict for any console.
    std::fs::remove_file(&active_vt).unwrap();
    let out = on("/dev/tty2");
    assert!(
        !out.success && out.prompted(),
        "unknown console: {}",
        out.output
    );
    // What habitusd answers, and why.
    let refusal = daemon
        .call(RequestBody::Assess {
            user: "alice".into(),
            tty: Some("/dev/tty2".into()),
        })
        .unwrap_err()
        .to_string();
    assert!(
        refusal.contains("NotAtSeat") && refusal.contains("cannot be told"),
        "{refusal}"
    );

    // With logind. Only a real account can be matched with seat0's active user, so
    // root (whose profile is alice's typing) stands in for the user from here on;
    // pamtester runs as root, in no session, on no console (setsid).
    std::fs::write(&active_vt, "tty1\n").unwrap();
    std::fs::create_dir_all(&sessions).unwrap();
    std::fs::create_dir(vt.path().join("seats")).unwrap();
    daemon.enroll("root", &enrol);
    daemon.session("root", true);
    daemon.ingest("root", &genuine);
    let root_on = |tty: &str| {
        h.run_with_items("root", &["authenticate"], "x\n", &[("tty", tty)])
            .unwrap()
    };
    // root's session is the active one: the verdict stands.
    std::fs::write(&seat0, "IS_SEAT0=1\nACTIVE=4\nACTIVE_UID=0\n").unwrap();
    let out = root_on("/dev/pts/3");
    assert!(
        out.success && !out.prompted(),
        "root in front: {}",
        out.output
    );
    // Someone else's session is in front (uid 1, e.g. after a switch of user or
    // console): root's fresh evidence vouches for nobody asking now. alice has no
    // account here, so nothing can place her at seat0 at all.
    std::fs::write(&seat0, "IS_SEAT0=1\nACTIVE=7\nACTIVE_UID=1\n").unwrap();
    let out = root_on("/dev/pts/3");
    assert!(
        !out.success && out.prompted(),
        "uid 1 in front: {}",
        out.output
    );
    for (user, says) in [
        ("root", "seat0's active session is uid 1's, not root's"),
        ("alice", "alice has no account on this machine"),
    ] {
        let refusal = daemon
            .call(RequestBody::Assess {
                user: user.into(),
                tty: None,
            })
            .unwrap_err()
            .to_string();
        assert!(refusal.contains(says), "{refusal}");
    }
    // root in front again, but also logged in at a second seat: a caller in no session
    // could be there.
    std::fs::write(&seat0, "IS_SEAT0=1\nACTIVE=4\nACTIVE_UID=0\n").unwrap();
    std::fs::write(
        sessions.join("c9"),
        "UID=0\nUSER=root\nSEAT=seat1\nSTATE=active\n",
    )
    .unwrap();
    let out = root_on("/dev/pts/3");
    assert!(
        !out.success && out.prompted(),
        "root at seat1 too: {}",
        out.output
    );
    let refusal = daemon
        .call(RequestBody::Assess {
            user: "root".into(),
            tty: None,
        })
        .unwrap_err()
        .to_string();
    assert!(
        refusal.contains("root also has session c9 at \"seat1\""),
        "{refusal}"
    );
}

#[test]
fn every_fault_ends_at_the_strong_factor() {
    let (Some(enrol), Some(genuine)) = (aalto(ALICE, 0..10), aalto(ALICE, 10..15)) else {
        return;
    };
    let mut daemon = TestDaemon::start("");
    daemon.enroll("alice", &enrol);
    let h = harness(&daemon, "timeout_ms=300 max_age_s=2");

    // Unknown user: no profile, no session.
    assert_strong_factor(&h, "bob", "unknown user");

    // Enrolled, session open, no evidence yet: Learning.
    daemon.session("alice", true);
    assert_eq!(daemon.assess("alice").state, TrustState::Learning);
    assert_strong_factor(&h, "alice", "still learning");

    // Trusted, then the evidence ages past max_age_s.
    daemon.ingest("alice", &genuine);
    let fresh = h.authenticate("alice", "").unwrap();
    assert!(
        fresh.success && !fresh.prompted(),
        "fresh: {}",
        fresh.output
    );
    std::thread::sleep(Duration::from_millis(2600));
    assert_strong_factor(&h, "alice", "evidence older than max_age_s");

    // sudo run from an SSH session while the owner types at the desk: refused by
    // habitusd (SSH_CONNECTION in the asking process's environment).
    daemon.ingest("alice", &genuine);
    let ssh = h
        .run_with_env(
            "alice",
            &["authenticate"],
            "not the password\n",
            &[("SSH_CONNECTION", "203.0.113.9 50000 192.0.2.1 22")],
        )
        .unwrap();
    assert!(!ssh.success && ssh.prompted(), "ssh: {}", ssh.output);
    assert!(
        ssh.output.contains("Habitus: remote session"),
        "ssh: {}",
        ssh.output
    );
    let local = h.authenticate("alice", "").unwrap();
    assert!(
        local.success && !local.prompted(),
        "control: {}",
        local.output
    );

    // A module option that does not parse.
    daemon.ingest("alice", &genuine);
    let bad = PamHarness::new(
        &daemon.path("pam.d-bad"),
        &pam_module(),
        &format!("socket={} timeout_ms=abc", daemon.socket.display()),
        &[("alice", PASSWORD)],
    )
    .unwrap();
    assert_strong_factor(&bad, "alice", "unparsable option");

    // The socket is owned by someone other than root: never trust what answers there.
    let fresh = h.authenticate("alice", "").unwrap();
    assert!(fresh.success, "control: {}", fresh.output);
    std::os::unix::fs::chown(&daemon.socket, Some(65534), None).unwrap();
    assert_strong_factor(&h, "alice", "socket owned by uid 65534");
    std::os::unix::fs::chown(&daemon.socket, Some(0), None).unwrap();

    // The daemon is not running.
    daemon.kill9();
    assert_strong_factor(&h, "alice", "daemon not running");
    // Its stale socket file left behind by SIGKILL: restart replaces it.
    assert!(common::is_socket(&daemon.socket));
    daemon.restart();
    assert_eq!(daemon.assess("alice").state, TrustState::Learning);
}

#[test]
fn open_session_binds_the_user_and_close_session_ends_it() {
    let Some(enrol) = aalto(ALICE, 0..10) else {
        return;
    };
    let daemon = TestDaemon::start("");
    daemon.enroll("alice", &enrol);
    let h = harness(&daemon, "timeout_ms=300");
    let out = h.run("alice", &["open_session"], "").unwrap();
    assert!(out.success, "{}", out.output);
    match daemon.call(habitus_protocol::RequestBody::Status {
        user: Some("alice".into()),
    }) {
        Ok(habitus_protocol::ResponseBody::Status { users }) => {
            assert_eq!(users.len(), 1);
            assert!(
                users[0]
                    .sessions
                    .iter()
                    .any(|s| s.starts_with("habitus-test")),
                "{users:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(daemon
        .log()
        .contains("session opened: alice on habitus-test"));
}

#[test]
fn the_cli_talks_to_the_daemon_and_a_non_root_peer_is_confined_to_itself() {
    let Some(enrol) = aalto(ALICE, 0..10) else {
        return;
    };
    let daemon = TestDaemon::start("");
    let replay = daemon.path("alice.jsonl");
    habitus::replay::write(&replay, "test", &enrol).unwrap();
    std::fs::set_permissions(&replay, std::fs::Permissions::from_mode(0o644)).unwrap();

    let cli = |uid: u32, args: &[&str]| {
        use std::os::unix::process::CommandExt;
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_habitus"))
            .args(args)
            .arg("--socket")
            .arg(&daemon.socket)
            .uid(uid)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };

    let (ok, out) = cli(
        0,
        &["enroll", "alice", "--replay", replay.to_str().unwrap()],
    );
    assert!(
        ok && out.contains("enrolled alice: keystroke from"),
        "{out}"
    );
    // alice is no account here: stored, with a warning that the seat check needs one.
    assert!(
        out.contains("warning: alice has no account on this machine"),
        "{out}"
    );
    let (ok, out) = cli(0, &["status", "alice"]);
    assert!(ok && out.contains("alice: Learning"), "{out}");
    assert!(out.contains("keystroke: enrolled"), "{out}");
    // Enrolling an enrolled user again replaces the profile: only when asked for.
    let (ok, out) = cli(
        0,
        &["enroll", "alice", "--replay", replay.to_str().unwrap()],
    );
    assert!(
        !ok && out.contains("alice already has a profile (keystroke,") && out.contains("--replace"),
        "{out}"
    );
    let (ok, out) = cli(
        0,
        &[
            "enroll",
            "alice",
            "--replace",
            "--replay",
            replay.to_str().unwrap(),
        ],
    );
    assert!(ok && out.contains("enrolled alice"), "{out}");
    let (ok, out) = cli(0, &["export", "alice"]);
    assert!(ok && out.contains("\"profiles\""), "{out}");

    // nobody (uid 65534) may not look at, feed, enrol or erase alice.
    for args in [
        vec!["status", "alice"],
        vec!["status"],
        vec!["export", "alice"],
        vec!["ingest", "alice", "--replay", replay.to_str().unwrap()],
        vec!["enroll", "nobody", "--replay", replay.to_str().unwrap()],
        vec!["forget", "alice"],
    ] {
        let (ok, out) = cli(65534, &args);
        assert!(!ok, "{args:?} was allowed: {out}");
        assert!(out.contains("PermissionDenied"), "{args:?}: {out}");
    }
    // ... but may ask about themselves (nothing known: a different refusal).
    let (ok, out) = cli(65534, &["status", "nobody"]);
    assert!(!ok && out.contains("UnknownUser"), "{out}");
    let (ok, out) = cli(
        65534,
        &["ingest", "nobody", "--replay", replay.to_str().unwrap()],
    );
    assert!(ok, "{out}");
    // ... which is scored but never enrols them: their own collector cannot teach
    // habitusd a profile that would then let them skip their step-up.
    let (ok, out) = cli(0, &["status", "nobody"]);
    assert!(
        ok && out.contains("nobody: Unenrolled") && out.contains("learning 0/20"),
        "{out}"
    );

    // Forget erases: the profile is gone from status and export.
    let (ok, out) = cli(0, &["forget", "alice"]);
    assert!(ok && out.contains("erased alice"), "{out}");
    let (ok, out) = cli(0, &["status", "alice"]);
    assert!(!ok && out.contains("UnknownUser"), "{out}");
}

#[test]
fn the_readme_demo_shows_the_skip_and_the_step_up() {
    let Some(data) = common::dataset("aalto-136m-subset") else {
        return;
    };
    common::built();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_habitus"))
        .args(["demo", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("typing no password: AUTHENTICATED") && text.contains("(no password asked)"),
        "{text}"
    );
    assert!(
        text.contains("typing a wrong password: DENIED")
            && text.contains("typing alice's password: AUTHENTICATED in"),
        "{text}"
    );
    assert!(
        text.contains("genuine behaviour skipped the step-up"),
        "{text}"
    );
}
