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
//! cgroup) and its controlling terminal. The rules:
//!
//! 1. A `PAM_TTY` that is neither a virtual console (`ttyN`), a local X display (`:N`)
//!    nor a pseudo-terminal (`pts/N`) — serial lines, `/dev/console`, a forwarded X
//!    display (`host:10.0`), names such as `ssh` or `cron` — gets no verdict.
//! 2. A caller whose controlling terminal is a virtual console gets a verdict only if
//!    that console is the one in front (the kernel's active VT). `login` and `sudo` on a
//!    console have it as their controlling terminal; a display manager's worker has
//!    none, and its `PAM_TTY` (GDM names `/dev/tty1` even for an unlock on tty2) is a
//!    label, not a place.
//! 3. With systemd-logind (its seat0 record readable):
//!    * seat0's active session must be the assessed user's (`ACTIVE_UID`). Whoever
//!      switched to another console or to the greeter is in front now, not alice;
//!    * a caller inside a logind session must be in seat0's active one (`sudo` in a
//!      session in the background, at another seat);
//!    * on a machine with more than one seat, a caller that is neither in seat0's active
//!      session nor on the console in front gets nothing: it could be at any seat
//!      (apps started by the user's systemd manager, a greeter's worker).
//! 4. Without logind, a `PAM_TTY` naming a virtual console must name the one in front.
//!
//! What cannot be told is let through, as before this check: on a single-seat machine,
//! a pseudo-terminal or no terminal asked by a process outside every logind session
//! (GNOME's terminal runs under the user's systemd manager; polkit agents). The
//! remote-session checks ([`crate::peer`]) still apply to them.

use std::path::Path;

use crate::peer::{logind_field, user_name};

/// The files the check reads (paths from `[input]`, so tests can point them elsewhere).
#[derive(Clone, Copy, Debug)]
pub struct SeatFiles<'a> {
    /// logind's record of seat0 (`ACTIVE=`, `ACTIVE_UID=`); the other seats' records
    /// are beside it. Unreadable: no logind.
    pub seat: &'a Path,
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

/// Who asks for a verdict, as habitusd sees them.
#[derive(Clone, Debug)]
pub struct Asker<'a> {
    /// The user the verdict is about.
    pub user: &'a str,
    /// `PAM_TTY`, as the module sent it.
    pub tty: Option<&'a str>,
    /// The asking process's logind session, `None` if it is in none.
    pub session: Option<String>,
    /// The asking process's controlling terminal: `Ok(Some(n))` virtual console `n`,
    /// `Ok(None)` none or another kind, `Err` unknown.
    pub console: Result<Option<u32>, String>,
}

impl<'a> Asker<'a> {
    /// The process `pid` asking about `user` for terminal `tty`.
    pub fn process(pid: u32, user: &'a str, tty: Option<&'a str>) -> Asker<'a> {
        Asker {
            user,
            tty,
            session: crate::peer::logind_session_of(pid),
            console: crate::peer::controlling_console(pid),
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
    let on_console = matches!(asker.console, Ok(Some(_)));
    if let Ok(Some(n)) = asker.console {
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
    let active = logind_field(&seat, "ACTIVE").filter(|s| !s.is_empty());
    let active_user = logind_field(&seat, "ACTIVE_UID")
        .and_then(|uid| uid.trim().parse::<u32>().ok())
        .and_then(user_name);
    if active_user.as_deref() != Some(asker.user) {
        return Some(match active_user {
            Some(other) => format!(
                "seat0's active session is {}'s, not {}'s",
                shown(&other),
                asker.user
            ),
            None => format!(
                "no session of {} is active on seat0 (a console or greeter without one is in front)",
                asker.user
            ),
        });
    }
    if let Some(session) = &asker.session {
        if active != Some(session.as_str()) {
            return Some(format!(
                "the asking process is in logind session {session}, which is not seat0's active session ({})",
                active.unwrap_or("none")
            ));
        }
    }
    let in_active_session = asker.session.is_some();
    if !in_active_session && !on_console {
        if let Some(other) = other_seat(files.seat) {
            return Some(format!(
                "this machine has more than one seat ({other} besides seat0), and the asking process is neither in seat0's active session nor on its console"
            ));
        }
    }
    None
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

/// A seat other than seat0 in logind's seat directory (beside seat0's record), if any.
fn other_seat(seat0: &Path) -> Option<String> {
    let own = seat0.file_name()?;
    let mut others: Vec<String> = std::fs::read_dir(seat0.parent()?)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n != own)
        .map(|n| n.to_string_lossy().into_owned())
        // logind's temporary files (`.#seat1…`) are not seats.
        .filter(|n| !n.starts_with('.'))
        .collect();
    others.sort();
    others.into_iter().next().map(|n| shown(&n))
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

    /// A logind-like seat directory (seat0 with active session `active` of uid
    /// `active_uid`, plus `more_seats`) and the kernel's active VT.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new(active: Option<(&str, u32)>, vt: &str, more_seats: &[&str]) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("seats")).unwrap();
            let mut seat =
                "# This is private data. Do not parse.\nIS_SEAT0=1\nCAN_TTY=1\n".to_string();
            if let Some((session, uid)) = active {
                seat.push_str(&format!("ACTIVE={session}\nACTIVE_UID={uid}\n"));
            }
            std::fs::write(dir.path().join("seats/seat0"), seat).unwrap();
            for s in more_seats {
                std::fs::write(dir.path().join("seats").join(s), "IS_SEAT0=0\n").unwrap();
            }
            std::fs::write(dir.path().join("active"), format!("{vt}\n")).unwrap();
            Fixture { dir }
        }

        fn check(&self, asker: Asker) -> Option<String> {
            let (seat, active_vt) = (
                self.dir.path().join("seats/seat0"),
                self.dir.path().join("active"),
            );
            not_at_seat(
                &asker,
                SeatFiles {
                    seat: &seat,
                    active_vt: &active_vt,
                },
            )
        }
    }

    /// `user` asking for `tty` from logind session `session` with controlling console
    /// `console`. Tests use root, the one account every machine has.
    fn asker<'a>(
        user: &'a str,
        tty: Option<&'a str>,
        session: Option<&str>,
        console: Option<u32>,
    ) -> Asker<'a> {
        Asker {
            user,
            tty,
            session: session.map(str::to_string),
            console: Ok(console),
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
        // or its display); GDM's unlock worker, whose PAM_TTY names tty1 but which has
        // no terminal; sudo on the console in front.
        assert_eq!(
            f.check(asker("root", Some("/dev/pts/4"), Some("2"), None)),
            None
        );
        assert_eq!(f.check(asker("root", None, Some("2"), None)), None);
        assert_eq!(f.check(asker("root", Some(":0"), Some("2"), None)), None);
        assert_eq!(f.check(asker("root", Some("/dev/tty1"), None, None)), None);
        assert_eq!(
            f.check(asker("root", Some("/dev/tty2"), Some("2"), Some(2))),
            None
        );
        // Outside every session on a single-seat machine (an app of the user's systemd
        // manager, a polkit agent): cannot be told, let through.
        assert_eq!(f.check(asker("root", Some("/dev/pts/7"), None, None)), None);
        assert_eq!(f.check(asker("root", None, None, None)), None);
    }

    #[test]
    fn other_consoles_users_sessions_and_seats_get_none() {
        let f = Fixture::new(Some(("2", 0)), "tty2", &[]);
        // Someone else's session is in front.
        refused(
            f.check(asker("nobody", Some("/dev/pts/4"), Some("2"), None)),
            "seat0's active session is \"root\"'s, not nobody's",
        );
        // sudo on tty3's console, which is not in front (its controlling terminal).
        refused(
            f.check(asker("root", Some("/dev/tty3"), Some("5"), Some(3))),
            "the asking process's terminal is tty3; the console in front of seat0 is tty2",
        );
        // sudo in a session in the background, whatever PAM_TTY says.
        refused(
            f.check(asker("root", Some("/dev/pts/1"), Some("5"), None)),
            "logind session 5, which is not seat0's active session (2)",
        );
        // Serial lines and names that are no terminal.
        for tty in ["/dev/ttyS0", "ssh", "localhost:10.0"] {
            refused(
                f.check(asker("root", Some(tty), Some("2"), None)),
                "not a local console",
            );
        }

        // The attack: alice's evidence is fresh, someone switches to tty3 and logs in
        // as her. tty3 is in front now, and no session is active on seat0.
        let f = Fixture::new(None, "tty3", &[]);
        refused(
            f.check(asker("root", Some("tty3"), None, Some(3))),
            "no session of root is active on seat0",
        );
        // GDM's greeter in front (its own session, uid 120 has no name here).
        let f = Fixture::new(Some(("c1", 4_000_000_000)), "tty1", &[]);
        refused(
            f.check(asker("root", Some("/dev/tty1"), None, None)),
            "no session of root is active on seat0",
        );
    }

    #[test]
    fn with_more_than_one_seat_only_placed_callers_get_a_verdict() {
        let f = Fixture::new(Some(("2", 0)), "tty2", &["seat1", ".#seat1x"]);
        // In seat0's active session, or on its console in front: placed.
        assert_eq!(
            f.check(asker("root", Some("/dev/pts/4"), Some("2"), None)),
            None
        );
        assert_eq!(f.check(asker("root", Some("tty2"), None, Some(2))), None);
        // Anywhere else: could be seat1 (a terminal app of the user's manager there, a
        // greeter's worker setting no PAM_TTY).
        refused(
            f.check(asker("root", Some("/dev/pts/4"), None, None)),
            "more than one seat (\"seat1\" besides seat0)",
        );
        refused(
            f.check(asker("root", None, None, None)),
            "more than one seat",
        );
        // Only logind's temporary file beside seat0: one seat.
        let f = Fixture::new(Some(("2", 0)), "tty2", &[".#seat1x"]);
        assert_eq!(f.check(asker("root", None, None, None)), None);
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
                    active_vt: vt,
                },
            )
        };
        assert_eq!(
            check(asker("alice", Some("/dev/pts/4"), None, None), &active_vt),
            None
        );
        assert_eq!(
            check(asker("alice", Some(":0"), None, None), &active_vt),
            None
        );
        assert_eq!(
            check(asker("alice", Some("tty1"), None, Some(1)), &active_vt),
            None
        );
        // Without logind, PAM_TTY is all there is to place a console login.
        refused(
            check(asker("alice", Some("tty2"), None, None), &active_vt),
            "PAM_TTY is tty2; the console in front of seat0 is tty1",
        );
        refused(
            check(
                asker("alice", Some("/dev/pts/1"), None, Some(4)),
                &active_vt,
            ),
            "terminal is tty4",
        );
        // Which console is in front cannot be read: no console gets a verdict.
        refused(
            check(asker("alice", Some("tty1"), None, None), &missing),
            "cannot be told",
        );
        refused(
            check(asker("alice", None, None, Some(1)), &missing),
            "cannot be told",
        );
        std::fs::write(&active_vt, "ttyS0\n").unwrap();
        refused(
            check(asker("alice", Some("tty1"), None, None), &active_vt),
            "is not a virtual console",
        );
    }
}
