//! Whether a verdict is asked by someone in front of seat0.
//!
//! habitusd measures behaviour at seat0's input devices, for the user whose session is
//! active there. A verdict says "the person at seat0's keyboard and mouse is alice"; it
//! says nothing about a login on another virtual console or a serial line, at a second
//! seat, or in a session that is not in front. Without this check, someone who knows
//! alice's password could switch to `tty3` and log in as alice there (alice's evidence
//! is still fresh for a while), or have a second seat's greeter ask, and skip the
//! step-up.
//!
//! The PAM module sends the asking terminal (`PAM_TTY`) with every `assess`, and
//! habitusd knows the asking process (`SO_PEERCRED`): its logind session (from its
//! cgroup), its controlling terminal, and its real and audit login uids. The rules:
//!
//! 1. A `PAM_TTY` that is neither a virtual console (`ttyN`), a local X display (`:N`)
//!    nor a pseudo-terminal (`pts/N`) — serial lines, `/dev/console`, a forwarded X
//!    display (`host:10.0`), names such as `ssh` or `cron` — gets no verdict.
//! 2. A process that cannot be seen (pid 0 from another pid namespace, gone, `/proc`
//!    unreadable) gets no verdict.
//! 3. A caller whose controlling terminal is a virtual console gets a verdict only if
//!    that console is the one in front (the kernel's active VT). `login` and `sudo` on a
//!    console have it as their controlling terminal; a display manager's worker has
//!    none, and its `PAM_TTY` (GDM names `/dev/tty1` even for an unlock on tty2) is a
//!    label, not a place.
//! 4. With systemd-logind (its seat0 record readable):
//!    * seat0's active session must be the assessed user's (`ACTIVE_UID`, compared by
//!      uid). Whoever switched to another console or to the greeter is in front now.
//!    * A caller inside a logind session must be in seat0's active one (`sudo` in a
//!      session in the background or at another seat).
//!    * A caller in no session and on no console must be the user's own process: its
//!      real uid (lockers) or its audit login uid (sudo, whose real uid is root by the
//!      time it authenticates; apps of the user's systemd manager) is the user's. The
//!      user must also have no session at another seat. A root-run service in no
//!      session (a display manager's worker, an RDP server) is placed nowhere.
//! 5. Without logind, a `PAM_TTY` naming a virtual console must name the one in front.
//!
//! Not covered: a pid reused between the connection and the check (the PAM caller
//! waits for the answer, so only a client that hangs up can lose its pid, and the answer
//! is then read by no one); systemd's cgroup-root shifting for a daemon in a container.

use std::path::Path;

use crate::peer::{logind_field, user_uid};

/// The files the check reads (paths from `[input]`, so tests can point them elsewhere).
#[derive(Clone, Copy, Debug)]
pub struct SeatFiles<'a> {
    /// logind's record of seat0 (`ACTIVE=`, `ACTIVE_UID=`). Unreadable: no logind.
    pub seat: &'a Path,
    /// logind's session records (`UID=`, `SEAT=`).
    pub sessions: &'a Path,
    /// The kernel's active virtual console (`/sys/class/tty/tty0/active`: `tty1`).
    pub active_vt: &'a Path,
}

/// The asking terminal (`PAM_TTY`), as far as the check needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Terminal {
    /// No terminal named (polkit agents, many screen lockers).
    Unnamed,
    /// A pseudo-terminal (`/dev/pts/N`): a terminal window, or an SSH login (which the
    /// remote-session checks catch).
    Pseudo,
    /// Virtual console N (`/dev/ttyN` or `ttyN`, N ≥ 1).
    Console(u32),
    /// A local X display (`:0`, `:1.0`), as display managers and X lockers set it.
    Display,
    /// Anything else.
    Other,
}

impl Terminal {
    /// Reads `PAM_TTY` as the PAM module sent it (`None` or empty: no terminal).
    pub fn parse(tty: Option<&str>) -> Terminal {
        let Some(tty) = tty.filter(|t| !t.is_empty()) else {
            return Terminal::Unnamed;
        };
        let name = tty.strip_prefix("/dev/").unwrap_or(tty);
        let number = |digits: &str| -> Option<u32> {
            let ok = !digits.is_empty()
                && digits.len() <= 9
                && digits.bytes().all(|b| b.is_ascii_digit());
            ok.then(|| digits.parse().ok()).flatten()
        };
        if name.strip_prefix("pts/").and_then(number).is_some() {
            return Terminal::Pseudo;
        }
        // tty0 is "whichever console is current", not a console of its own.
        if let Some(n) = name.strip_prefix("tty").and_then(number) {
            return if n >= 1 {
                Terminal::Console(n)
            } else {
                Terminal::Other
            };
        }
        if let Some(display) = tty.strip_prefix(':') {
            let (n, screen) = display.split_once('.').unwrap_or((display, "0"));
            if number(n).is_some() && number(screen).is_some() {
                return Terminal::Display;
            }
        }
        Terminal::Other
    }
}

/// Who asks for a verdict, as habitusd sees them. Every fact about the process is
/// `Err` when it could not be read (the process is gone, pid 0 from another pid
/// namespace, a hardened `/proc`): a caller that cannot be seen gets no verdict.
#[derive(Clone, Debug)]
pub struct Asker<'a> {
    /// The user the verdict is about.
    pub user: &'a str,
    /// `PAM_TTY`, as the module sent it.
    pub tty: Option<&'a str>,
    /// The asking process's logind session, `None` if it is in none.
    pub session: Result<Option<String>, String>,
    /// The asking process's controlling terminal: `Some(n)` virtual console `n`, `None`
    /// none or another kind.
    pub console: Result<Option<u32>, String>,
    /// The asking process's real uid.
    pub real_uid: Result<u32, String>,
    /// The asking process's audit login uid, `None` if unset or unknown (sudo keeps the
    /// invoking user's, though it runs as root).
    pub login_uid: Option<u32>,
}

impl<'a> Asker<'a> {
    /// The process `pid` asking about `user` for terminal `tty`.
    pub fn process(pid: u32, user: &'a str, tty: Option<&'a str>) -> Asker<'a> {
        if pid == 0 {
            let unseen = "pid 0: the process is in another pid namespace".to_string();
            return Asker {
                user,
                tty,
                session: Err(unseen.clone()),
                console: Err(unseen.clone()),
                real_uid: Err(unseen),
                login_uid: None,
            };
        }
        Asker {
            user,
            tty,
            session: crate::peer::logind_session_checked(pid),
            console: crate::peer::controlling_console(pid),
            real_uid: crate::peer::real_uid_of(pid),
            login_uid: crate::peer::login_uid_of(pid),
        }
    }
}

/// Why no verdict may be given to `asker`; `None` when, as far as can be told, they are
/// in front of seat0.
pub fn not_at_seat(asker: &Asker, files: SeatFiles) -> Option<String> {
    let terminal = Terminal::parse(asker.tty);
    if terminal == Terminal::Other {
        return Some(format!(
            "asked for terminal {}, which is not a local console, display or terminal window",
            shown(asker.tty.unwrap_or_default())
        ));
    }
    let front = || active_vt(files.active_vt);
    let console = match &asker.console {
        Ok(console) => *console,
        Err(why) => return Some(format!("the asking process cannot be seen ({why})")),
    };
    if let Some(n) = console {
        if let Some(why) = console_in_front(n, "the asking process's terminal", front()) {
            return Some(why);
        }
    }
    let Ok(seat) = std::fs::read_to_string(files.seat) else {
        // No logind: only the kernel's console tells where the asker is.
        return match terminal {
            Terminal::Console(n) => console_in_front(n, "PAM_TTY", front()),
            _ => None,
        };
    };
    let Some(uid) = user_uid(asker.user) else {
        return Some(format!("{} has no account on this machine", asker.user));
    };
    let active = logind_field(&seat, "ACTIVE").filter(|s| !s.is_empty());
    let active_uid = logind_field(&seat, "ACTIVE_UID").and_then(|u| u.trim().parse::<u32>().ok());
    if active.is_none() || active_uid != Some(uid) {
        let why = match active_uid.filter(|&u| u != uid) {
            Some(other) => format!("seat0's active session is uid {other}'s, not {}'s", asker.user),
            None => format!(
                "no session of {} is active on seat0 (a console or greeter without one is in front)",
                asker.user
            ),
        };
        return Some(why);
    }
    let session = match &asker.session {
        Ok(session) => session.as_deref(),
        Err(why) => return Some(format!("the asking process cannot be seen ({why})")),
    };
    if let Some(session) = session {
        if active != Some(session) {
            return Some(format!(
                "the asking process is in logind session {session}, which is not seat0's active session ({})",
                active.unwrap_or("none")
            ));
        }
        return None;
    }
    if console.is_some() {
        return None;
    }
    // In no session and on no console: the process must be the user's, run by them
    // (lockers) or descending from their login (sudo, whose real uid is root by now;
    // apps of the user's systemd manager), and the user must be at no other seat,
    // where it could be running instead.
    let real_uid = match &asker.real_uid {
        Ok(u) => *u,
        Err(why) => return Some(format!("the asking process cannot be seen ({why})")),
    };
    if real_uid != uid && asker.login_uid != Some(uid) {
        return Some(format!(
            "the asking process (real uid {real_uid}, login uid {}) is in no logind session and on no console, and is not {}'s: nothing places it at seat0",
            asker.login_uid.map_or("unset".to_string(), |u| u.to_string()),
            asker.user
        ));
    }
    session_at_other_seat(files.sessions, uid).map(|(session, seat)| {
        format!(
            "the asking process is in no logind session, and {} also has session {session} at {seat}",
            asker.user
        )
    })
}

/// Why console `n` (from `what`) is not the one in front, if it is not.
fn console_in_front(n: u32, what: &str, front: Result<u32, String>) -> Option<String> {
    match front {
        Ok(f) if f == n => None,
        Ok(f) => Some(format!(
            "{what} is tty{n}; the console in front of seat0 is tty{f}"
        )),
        Err(why) => Some(format!(
            "{what} is tty{n}, and which console is in front cannot be told ({why})"
        )),
    }
}

/// The kernel's active virtual console number (`tty1` in the file → 1).
fn active_vt(path: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    match Terminal::parse(Some(text.trim())) {
        Terminal::Console(n) => Ok(n),
        _ => Err(format!(
            "{}: {} is not a virtual console",
            path.display(),
            shown(text.trim())
        )),
    }
}

/// A logind session of `uid` at a seat other than seat0, as `(session, seat)`.
fn session_at_other_seat(sessions: &Path, uid: u32) -> Option<(String, String)> {
    let mut names: Vec<String> = std::fs::read_dir(sessions)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // logind's own names are alphanumeric; its temporary files (`.#…`) are skipped.
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric()))
        .collect();
    names.sort();
    names.into_iter().find_map(|name| {
        let info = std::fs::read_to_string(sessions.join(&name)).ok()?;
        let theirs = logind_field(&info, "UID").and_then(|u| u.trim().parse::<u32>().ok());
        let seat = logind_field(&info, "SEAT").filter(|s| !s.is_empty() && *s != "seat0")?;
        (theirs == Some(uid)).then(|| (name.clone(), shown(seat)))
    })
}

/// A name for a log line: at most 64 characters, escaped.
fn shown(text: &str) -> String {
    let cut: String = text.chars().take(64).collect();
    format!("{cut:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminals_are_told_apart() {
        use Terminal::*;
        for (tty, expected) in [
            (None, Unnamed),
            (Some(""), Unnamed),
            (Some("/dev/pts/3"), Pseudo),
            (Some("pts/12"), Pseudo),
            (Some("/dev/tty2"), Console(2)),
            (Some("tty63"), Console(63)),
            (Some(":0"), Display),
            (Some(":1.0"), Display),
            (Some("/dev/tty0"), Other),
            (Some("/dev/ttyS0"), Other),
            (Some("ttyUSB0"), Other),
            (Some("/dev/console"), Other),
            (Some("localhost:10.0"), Other),
            (Some(":"), Other),
            (Some(":0.x"), Other),
            (Some("ssh"), Other),
            (Some("cron"), Other),
            (Some("/dev/pts/"), Other),
            (Some("/dev/pts/3/../../tty1"), Other),
            (Some("tty99999999999"), Other),
            (Some("tty+1"), Other),
        ] {
            assert_eq!(Terminal::parse(tty), expected, "{tty:?}");
        }
    }

    /// A logind-like layout: seat0 with active session `active` of uid `active_uid`,
    /// session records `(id, contents)`, and the kernel's active VT.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new(active: Option<(&str, u32)>, vt: &str, sessions: &[(&str, &str)]) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("sessions")).unwrap();
            let mut seat =
                "# This is private data. Do not parse.\nIS_SEAT0=1\nCAN_TTY=1\n".to_string();
            if let Some((session, uid)) = active {
                seat.push_str(&format!("ACTIVE={session}\nACTIVE_UID={uid}\n"));
            }
            std::fs::write(dir.path().join("seat0"), seat).unwrap();
            for (id, text) in sessions {
                std::fs::write(dir.path().join("sessions").join(id), text).unwrap();
            }
            std::fs::write(dir.path().join("active"), format!("{vt}\n")).unwrap();
            Fixture { dir }
        }

        fn check(&self, asker: Asker) -> Option<String> {
            let p = self.dir.path();
            let (seat, sessions, active_vt) =
                (p.join("seat0"), p.join("sessions"), p.join("active"));
            not_at_seat(
                &asker,
                SeatFiles {
                    seat: &seat,
                    sessions: &sessions,
                    active_vt: &active_vt,
                },
            )
        }
    }

    /// Root (the one account every machine has) asking for `tty` from a process in
    /// logind session `session`, on console `console`, of real uid `real_uid`.
    fn root_asks<'a>(
        tty: Option<&'a str>,
        session: Option<&str>,
        console: Option<u32>,
        real_uid: u32,
    ) -> Asker<'a> {
        Asker {
            user: "root",
            tty,
            session: Ok(session.map(str::to_string)),
            console: Ok(console),
            real_uid: Ok(real_uid),
            login_uid: None,
        }
    }

    fn refused(why: Option<String>, says: &str) {
        assert!(
            why.as_deref().is_some_and(|w| w.contains(says)),
            "expected a refusal saying {says:?}, got {why:?}"
        );
    }

    #[test]
    fn the_user_in_front_of_seat0_gets_a_verdict() {
        let f = Fixture::new(Some(("2", 0)), "tty2", &[]);
        // sudo in a terminal window of the active session; its screen locker (no tty,
        // or its display); sudo on the console in front.
        assert_eq!(
            f.check(root_asks(Some("/dev/pts/4"), Some("2"), None, 0)),
            None
        );
        assert_eq!(f.check(root_asks(None, Some("2"), None, 0)), None);
        assert_eq!(f.check(root_asks(Some(":0"), Some("2"), None, 0)), None);
        assert_eq!(
            f.check(root_asks(Some("/dev/tty2"), Some("2"), Some(2), 0)),
            None
        );
        // Outside every session, run by the user (sudo from an app of the user's systemd
        // manager, a polkit agent's helper), PAM_TTY a label.
        assert_eq!(f.check(root_asks(Some("/dev/pts/7"), None, None, 0)), None);
        assert_eq!(f.check(root_asks(None, None, None, 0)), None);
        assert_eq!(f.check(root_asks(Some("/dev/tty1"), None, None, 0)), None);
    }

    #[test]
    fn other_consoles_users_sessions_and_services_get_none() {
        let f = Fixture::new(Some(("2", 0)), "tty2", &[]);
        // Someone else's session is in front.
        let f_other = Fixture::new(Some(("2", 4_000_000_000)), "tty2", &[]);
        refused(
            f_other.check(root_asks(Some("/dev/pts/4"), Some("2"), None, 0)),
            "seat0's active session is uid 4000000000's, not root's",
        );
        // A user with no account here.
        let mut ghost = root_asks(None, None, None, 0);
        ghost.user = "no-such-user-habitus";
        refused(f.check(ghost), "has no account on this machine");
        // sudo on tty3's console, which is not in front (its controlling terminal).
        refused(
            f.check(root_asks(Some("/dev/tty3"), Some("5"), Some(3), 0)),
            "the asking process's terminal is tty3; the console in front of seat0 is tty2",
        );
        // sudo in a session in the background, whatever PAM_TTY says.
        refused(
            f.check(root_asks(Some("/dev/pts/1"), Some("5"), None, 0)),
            "logind session 5, which is not seat0's active session (2)",
        );
        // A service in no session, run by someone else (a display manager's worker run
        // by root asking about alice; here uid 1 asking about root): not placed.
        refused(
            f.check(root_asks(Some(":10"), None, None, 1)),
            "(real uid 1, login uid unset) is in no logind session and on no console, and is not root's",
        );
        // sudo run by the user: real uid root by then, login uid the user's.
        let mut sudo = root_asks(Some("/dev/pts/7"), None, None, 1);
        sudo.login_uid = Some(0);
        assert_eq!(f.check(sudo.clone()), None);
        sudo.login_uid = Some(5);
        refused(f.check(sudo), "login uid 5");
        // Serial lines and names that are no terminal.
        for tty in ["/dev/ttyS0", "ssh", "localhost:10.0"] {
            refused(
                f.check(root_asks(Some(tty), Some("2"), None, 0)),
                "not a local console",
            );
        }

        // The attack: alice's evidence is fresh, someone switches to tty3 and logs in
        // as her. tty3 is in front now, and no session is active on seat0.
        let f = Fixture::new(None, "tty3", &[]);
        refused(
            f.check(root_asks(Some("tty3"), None, Some(3), 0)),
            "no session of root is active on seat0",
        );
        // ACTIVE_UID without ACTIVE is no active session either.
        let f = Fixture::new(None, "tty3", &[]);
        std::fs::write(f.dir.path().join("seat0"), "ACTIVE_UID=0\n").unwrap();
        refused(
            f.check(root_asks(None, Some("2"), None, 0)),
            "no session of root is active",
        );
    }

    #[test]
    fn what_cannot_be_seen_gets_nothing() {
        let f = Fixture::new(Some(("2", 0)), "tty2", &[]);
        let gone = || "gone".to_string();
        let mut a = root_asks(None, Some("2"), None, 0);
        a.console = Err(gone());
        refused(f.check(a), "cannot be seen (gone)");
        let mut a = root_asks(None, None, None, 0);
        a.session = Err(gone());
        refused(f.check(a), "cannot be seen");
        let mut a = root_asks(None, None, None, 0);
        a.real_uid = Err(gone());
        refused(f.check(a), "cannot be seen");
        // pid 0 (a peer in another pid namespace) is seen as nothing.
        refused(
            f.check(Asker::process(0, "root", None)),
            "another pid namespace",
        );
        // This very process can be seen (whatever the verdict on it).
        let me = Asker::process(std::process::id(), "root", None);
        assert!(me.console.is_ok() && me.session.is_ok() && me.real_uid.is_ok());
    }

    #[test]
    fn a_user_at_another_seat_is_placed_only_by_session_or_console() {
        let at_seat1 = "UID=0\nUSER=root\nSTATE=active\nSEAT=seat1\nREMOTE=0\n";
        let at_seat0 = "UID=0\nUSER=root\nSTATE=online\nSEAT=seat0\nREMOTE=0\n";
        let f = Fixture::new(
            Some(("2", 0)),
            "tty2",
            &[("2", at_seat0), ("c7", at_seat1), (".#c8", at_seat1)],
        );
        // In seat0's active session, or on its console in front: placed.
        assert_eq!(
            f.check(root_asks(Some("/dev/pts/4"), Some("2"), None, 0)),
            None
        );
        assert_eq!(f.check(root_asks(Some("tty2"), None, Some(2), 0)), None);
        // Anywhere else it could be seat1 (a terminal app of the user's manager there).
        refused(
            f.check(root_asks(Some("/dev/pts/4"), None, None, 0)),
            "root also has session c7 at \"seat1\"",
        );
        // Only sessions at seat0 (and logind's temporary files): nothing elsewhere.
        let f = Fixture::new(
            Some(("2", 0)),
            "tty2",
            &[("2", at_seat0), (".#c8", at_seat1)],
        );
        assert_eq!(f.check(root_asks(None, None, None, 0)), None);
    }

    #[test]
    fn without_logind_the_console_still_counts() {
        let f = Fixture::new(None, "tty1", &[]);
        let missing = f.dir.path().join("absent");
        let active_vt = f.dir.path().join("active");
        let check = |a: Asker, vt: &Path| {
            not_at_seat(
                &a,
                SeatFiles {
                    seat: &missing,
                    sessions: &missing,
                    active_vt: vt,
                },
            )
        };
        // Any user, any real uid: without logind nothing else is known.
        let alice = |tty, console, real_uid| Asker {
            user: "alice",
            tty,
            session: Ok(None),
            console: Ok(console),
            real_uid: Ok(real_uid),
            login_uid: None,
        };
        assert_eq!(check(alice(Some("/dev/pts/4"), None, 0), &active_vt), None);
        assert_eq!(check(alice(Some(":0"), None, 1000), &active_vt), None);
        assert_eq!(check(alice(Some("tty1"), Some(1), 0), &active_vt), None);
        // Without logind, PAM_TTY is all there is to place a console login.
        refused(
            check(alice(Some("tty2"), None, 0), &active_vt),
            "PAM_TTY is tty2; the console in front of seat0 is tty1",
        );
        refused(
            check(alice(Some("/dev/pts/1"), Some(4), 0), &active_vt),
            "terminal is tty4",
        );
        // Which console is in front cannot be read: no console gets a verdict.
        refused(
            check(alice(Some("tty1"), None, 0), &missing),
            "cannot be told",
        );
        refused(check(alice(None, Some(1), 0), &missing), "cannot be told");
        std::fs::write(&active_vt, "ttyS0\n").unwrap();
        refused(
            check(alice(Some("tty1"), None, 0), &active_vt),
            "is not a virtual console",
        );
    }
}
