//! Whether a verdict is asked for the console in front of seat0.
//!
//! habitusd measures behaviour at seat0's input devices, for the user whose session is
//! active there. A verdict says "the person at seat0's keyboard and mouse is alice"; it
//! says nothing about a login on another virtual console, a serial line, a second seat,
//! or a session in the background. Without this check, someone who knows alice's
//! password could switch to `tty3`, log in as alice there (or have a second seat's
//! greeter ask), and skip the step-up because alice herself is typing at seat 0.
//!
//! The PAM module sends the asking terminal (`PAM_TTY`) with every `assess`, and
//! habitusd knows the asking process (`SO_PEERCRED`). The rules, in order:
//!
//! 1. A terminal that is neither a virtual console (`ttyN`), a local X display (`:N`),
//!    nor a pseudo-terminal (`pts/N`) — serial lines, `/dev/console`, a forwarded X
//!    display (`host:10`), names such as `ssh` or `cron` — gets no verdict.
//! 2. A caller inside a systemd-logind session (its cgroup is `session-ID.scope`) gets a
//!    verdict only when that session is seat0's active one. This covers `sudo` typed in
//!    a session on another VT, on another seat, or in one that is not in front.
//! 3. A virtual console must be the one in front (the kernel's active VT). This covers
//!    `login` on another VT, which runs before its session exists.
//! 4. An X display that logind gives to a session must be the active session's display.
//!    This covers a second seat's greeter.
//!
//! What cannot be told is let through, as before this check. That covers a
//! pseudo-terminal or no terminal, asked by a process outside every session: apps
//! started by the user's systemd manager (GNOME's terminal) run there, and so does a
//! polkit agent. The remote-session checks ([`crate::peer`]) still apply to them.

use std::path::Path;

use crate::peer::logind_field;

/// The files the check reads (paths from `[input]`, so tests can point them elsewhere).
#[derive(Clone, Copy, Debug)]
pub struct SeatFiles<'a> {
    /// logind's record of seat0 (`ACTIVE=` is the active session). Unreadable: no logind.
    pub seat: &'a Path,
    /// logind's session records (`DISPLAY=`, `SEAT=`).
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
    /// A local X display (`:0`, `:1.0`), as display managers set it.
    Display(String),
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
                return Terminal::Display(format!(":{n}"));
            }
        }
        Terminal::Other
    }
}

/// Why no verdict may be given for terminal `tty` asked by a process in logind session
/// `caller_session`; `None` when, as far as can be told, the asker is in front of seat0.
pub fn not_at_seat(
    tty: Option<&str>,
    caller_session: Option<&str>,
    files: SeatFiles,
) -> Option<String> {
    let terminal = Terminal::parse(tty);
    let shown = || shown(tty.unwrap_or_default());
    if terminal == Terminal::Other {
        return Some(format!(
            "asked for terminal {}, which is not a local console, display or terminal window",
            shown()
        ));
    }
    // `None`: no logind. `Some(None)`: logind, but no session is active on seat0 (a
    // getty or a greeter without a session is in front).
    let seat = std::fs::read_to_string(files.seat).ok();
    let active = seat.as_deref().map(|info| {
        logind_field(info, "ACTIVE")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    });
    if let (Some(active), Some(caller)) = (&active, caller_session) {
        if active.as_deref() != Some(caller) {
            return Some(format!(
                "the asking process is in logind session {caller}, which is not seat0's active session ({})",
                active.as_deref().unwrap_or("none")
            ));
        }
    }
    match terminal {
        Terminal::Console(n) => match active_vt(files.active_vt) {
            Ok(front) if front == n => None,
            Ok(front) => Some(format!(
                "asked for tty{n}; the console in front of seat0 is tty{front}"
            )),
            Err(why) => Some(format!(
                "asked for tty{n}, and which console is in front cannot be told ({}: {why})",
                files.active_vt.display()
            )),
        },
        Terminal::Display(display) => {
            let active = active.flatten();
            let owner = display_owner(files.sessions, &display, active.as_deref())?;
            (active.as_deref() != Some(owner.as_str())).then(|| {
                format!(
                    "asked for display {display}, which is logind session {owner}'s, not seat0's active session ({})",
                    active.as_deref().unwrap_or("none")
                )
            })
        }
        Terminal::Unnamed | Terminal::Pseudo | Terminal::Other => None,
    }
}

/// The kernel's active virtual console number (`tty1` in the file → 1).
fn active_vt(path: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    match Terminal::parse(Some(text.trim())) {
        Terminal::Console(n) => Ok(n),
        _ => Err(format!("{} is not a virtual console", shown(text.trim()))),
    }
}

/// The logind session that has X display `display`: the active one of seat0 if several
/// do (a display number is reused once its session ends, while the old record lingers
/// as `closing`), else the first by id. `None` when none has it or logind is absent.
fn display_owner(sessions: &Path, display: &str, active: Option<&str>) -> Option<String> {
    let mut owners: Vec<String> = std::fs::read_dir(sessions)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // logind's own names are alphanumeric; its temporary files (`.#…`) are skipped.
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric()))
        .filter(|n| {
            std::fs::read_to_string(sessions.join(n))
                .is_ok_and(|info| logind_field(&info, "DISPLAY") == Some(display))
        })
        .collect();
    if let Some(active) = active.filter(|a| owners.iter().any(|o| o == a)) {
        return Some(active.to_string());
    }
    owners.sort();
    owners.into_iter().next()
}

/// A terminal name for a log line: at most 64 characters, escaped.
fn shown(tty: &str) -> String {
    let cut: String = tty.chars().take(64).collect();
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
            (Some(":0"), Display(":0".into())),
            (Some(":1.0"), Display(":1".into())),
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

    /// A logind-like layout: seat0 with active session `active`, and sessions given as
    /// (id, contents).
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new(active: Option<&str>, vt: &str, sessions: &[(&str, &str)]) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("sessions")).unwrap();
            let mut seat = "IS_SEAT0=1\nCAN_MULTI_SESSION=1\nCAN_TTY=1\n".to_string();
            if let Some(a) = active {
                seat.push_str(&format!("ACTIVE={a}\nACTIVE_UID=1000\n"));
            }
            std::fs::write(dir.path().join("seat0"), seat).unwrap();
            std::fs::write(dir.path().join("active"), format!("{vt}\n")).unwrap();
            for (id, text) in sessions {
                std::fs::write(dir.path().join("sessions").join(id), text).unwrap();
            }
            Fixture { dir }
        }

        fn files(&self) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
            let p = self.dir.path();
            (p.join("seat0"), p.join("sessions"), p.join("active"))
        }

        fn check(&self, tty: Option<&str>, caller: Option<&str>) -> Option<String> {
            let (seat, sessions, active_vt) = self.files();
            not_at_seat(
                tty,
                caller,
                SeatFiles {
                    seat: &seat,
                    sessions: &sessions,
                    active_vt: &active_vt,
                },
            )
        }
    }

    const ALICE_X: &str = "UID=1000\nUSER=alice\nACTIVE=1\nSTATE=active\nREMOTE=0\nTYPE=x11\nSEAT=seat0\nTTY=tty1\nVTNR=1\nDISPLAY=:0\n";
    const ALICE_TTY3: &str =
        "UID=1000\nUSER=alice\nACTIVE=0\nSTATE=online\nREMOTE=0\nTYPE=tty\nSEAT=seat0\nTTY=tty3\nVTNR=3\n";
    const SEAT1_GREETER: &str =
        "UID=120\nUSER=lightdm\nACTIVE=1\nSTATE=active\nREMOTE=0\nTYPE=x11\nCLASS=greeter\nSEAT=seat1\nDISPLAY=:1\n";

    #[test]
    fn the_console_in_front_of_seat0_gets_a_verdict() {
        let f = Fixture::new(
            Some("2"),
            "tty1",
            &[("2", ALICE_X), ("5", ALICE_TTY3), ("c3", SEAT1_GREETER)],
        );
        // sudo in a terminal window of the active session, its screen locker (no tty,
        // or its display), a console login on the VT in front.
        assert_eq!(f.check(Some("/dev/pts/4"), Some("2")), None);
        assert_eq!(f.check(None, Some("2")), None);
        assert_eq!(f.check(Some(":0"), Some("2")), None);
        assert_eq!(f.check(Some("/dev/tty1"), None), None);
        // Outside every session (an app of the user's systemd manager, a polkit agent):
        // cannot be told, let through.
        assert_eq!(f.check(Some("/dev/pts/7"), None), None);
        assert_eq!(f.check(None, None), None);
        // A display no session claims: the process check is all there is.
        assert_eq!(f.check(Some(":5"), None), None);
    }

    #[test]
    fn other_consoles_seats_and_sessions_get_none() {
        let f = Fixture::new(
            Some("2"),
            "tty1",
            &[("2", ALICE_X), ("5", ALICE_TTY3), ("c3", SEAT1_GREETER)],
        );
        let refused = |tty: Option<&str>, caller: Option<&str>, says: &str| {
            let why = f.check(tty, caller);
            assert!(
                why.as_deref().is_some_and(|w| w.contains(says)),
                "{tty:?} from session {caller:?}: {why:?}"
            );
        };
        // `login` on tty2 (no session yet) while alice works on tty1.
        refused(Some("tty2"), None, "the console in front of seat0 is tty1");
        // sudo in alice's text session on tty3, in the background.
        refused(Some("/dev/tty3"), Some("5"), "logind session 5");
        refused(
            Some("/dev/pts/1"),
            Some("5"),
            "not seat0's active session (2)",
        );
        // The second seat's greeter.
        refused(Some(":1"), None, "display :1, which is logind session c3's");
        refused(Some(":1"), Some("c3"), "logind session c3");
        // Serial lines and names that are no terminal.
        refused(Some("/dev/ttyS0"), None, "not a local console");
        refused(Some("ssh"), Some("2"), "not a local console");
        refused(Some("localhost:10.0"), None, "not a local console");
    }

    #[test]
    fn nothing_active_or_nothing_known_is_refused_where_it_matters() {
        // A getty is in front (no active session): a session's process gets nothing.
        let f = Fixture::new(None, "tty2", &[("2", ALICE_X)]);
        assert!(f
            .check(Some("/dev/pts/4"), Some("2"))
            .is_some_and(|w| w.contains("active session (none)")));
        assert!(f
            .check(Some(":0"), None)
            .is_some_and(|w| w.contains("active session (none)")));
        // The login on that getty's console is in front.
        assert_eq!(f.check(Some("tty2"), None), None);

        // No logind at all: sessions and displays cannot be told, consoles still can.
        let (_, _, active_vt) = f.files();
        let missing = f.dir.path().join("absent");
        let without_logind = |tty: Option<&str>, caller: Option<&str>, vt: &Path| {
            not_at_seat(
                tty,
                caller,
                SeatFiles {
                    seat: &missing,
                    sessions: &missing,
                    active_vt: vt,
                },
            )
        };
        assert_eq!(
            without_logind(Some("/dev/pts/4"), Some("2"), &active_vt),
            None
        );
        assert_eq!(without_logind(Some(":0"), None, &active_vt), None);
        assert_eq!(without_logind(Some("tty2"), None, &active_vt), None);
        assert!(without_logind(Some("tty1"), None, &active_vt).is_some());
        // Which console is in front cannot be read: a console gets nothing.
        let why = without_logind(Some("tty1"), None, &missing).unwrap();
        assert!(why.contains("cannot be told"), "{why}");
        std::fs::write(&active_vt, "ttyS0\n").unwrap();
        let why = without_logind(Some("tty1"), None, &active_vt).unwrap();
        assert!(why.contains("is not a virtual console"), "{why}");
    }

    #[test]
    fn a_reused_display_number_belongs_to_the_active_session() {
        // Session 4 ended on :0 and lingers as closing; session 9 now has :0 and is active.
        let closing = "UID=1001\nUSER=bob\nSTATE=closing\nREMOTE=0\nSEAT=seat0\nDISPLAY=:0\n";
        let f = Fixture::new(Some("9"), "tty1", &[("4", closing), ("9", ALICE_X)]);
        assert_eq!(f.check(Some(":0"), None), None);
        let f = Fixture::new(Some("2"), "tty1", &[("4", closing), ("9", ALICE_X)]);
        assert!(f.check(Some(":0"), None).is_some());
    }
}
