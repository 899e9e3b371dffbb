//! Who is on the other end of a socket connection (`SO_PEERCRED`).

use std::ffi::CStr;

/// A connected client, as the kernel vouches for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    /// The account name of `uid`; `None` when it has no passwd entry (such a peer can
    /// only be refused for anything user-specific).
    pub name: Option<String>,
    /// The connecting process (for the remote-session check of `assess`); `None` for the
    /// daemon's own sources.
    pub pid: Option<u32>,
}

impl Peer {
    pub fn from_cred(uid: u32, pid: Option<u32>) -> Peer {
        Peer {
            uid,
            name: user_name(uid),
            pid,
        }
    }

    /// The daemon itself (replay sources, tests): root's rights.
    pub fn root() -> Peer {
        Peer {
            uid: 0,
            name: Some("root".into()),
            pid: None,
        }
    }

    /// A user other than root, as tests build them.
    pub fn user(uid: u32, name: &str) -> Peer {
        Peer {
            uid,
            name: Some(name.into()),
            pid: None,
        }
    }
}

/// Why process `pid` is in a remote session, if it is: an `SSH_CONNECTION`/`SSH_CLIENT`
/// in the environment it was started with, or a systemd-logind session marked
/// `REMOTE=1`. Behaviour measured at the local keyboard says nothing about who types in
/// an SSH session, so `assess` from such a process is refused (`sudo` over SSH while the
/// owner types at the desk must still ask for the strong factor). PAM_RHOST alone does
/// not catch this: sudo and su do not set it.
pub fn remote_session(pid: u32, sessions_dir: &std::path::Path) -> Option<String> {
    if let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) {
        for var in environ.split(|&b| b == 0) {
            for name in [&b"SSH_CONNECTION="[..], b"SSH_CLIENT=", b"SSH_TTY="] {
                if var.starts_with(name) {
                    let n = String::from_utf8_lossy(&name[..name.len() - 1]).into_owned();
                    return Some(format!("process {pid} has {n} set"));
                }
            }
        }
    }
    let session = logind_session_of(pid)?;
    let info = std::fs::read_to_string(sessions_dir.join(&session)).ok()?;
    (logind_field(&info, "REMOTE") == Some("1"))
        .then(|| format!("process {pid} is in remote logind session {session}"))
}

/// The systemd-logind session process `pid` runs in, from its cgroup: `None` when it
/// runs in none (a system service such as a getty before its login or a display
/// manager's worker, the user's systemd manager and the apps it starts, no systemd).
pub fn logind_session_of(pid: u32) -> Option<String> {
    logind_session_checked(pid).ok().flatten()
}

/// [`logind_session_of`], with an unreadable cgroup file an error rather than "none".
pub fn logind_session_checked(pid: u32) -> Result<Option<String>, String> {
    let path = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    Ok(session_of_cgroup(&text))
}

/// The audit login uid of process `pid` (`/proc/PID/loginuid`): the user whose login
/// (pam_loginuid: console, display manager, SSH, and the user's systemd manager) it
/// descends from. Only a privileged process can set it, once, and setuid programs such
/// as sudo keep it. `None` when unset (system services), or unreadable (a kernel without
/// audit).
pub fn login_uid_of(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/loginuid")).ok()?;
    text.trim().parse::<u32>().ok().filter(|&u| u != u32::MAX)
}

/// The real uid of process `pid` (`/proc/PID/status`, first field of `Uid:`): who ran
/// it (sudo switches its own to root before it authenticates; lockers keep the user's).
pub fn real_uid_of(pid: u32) -> Result<u32, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
        .ok_or_else(|| format!("{path} has no Uid line"))
}

/// The logind session of a `/proc/PID/cgroup` text, as systemd itself finds it
/// (`sd_pid_get_session`): the systemd hierarchy's path (the unified `0::` line, else
/// the `name=systemd` one), its `.slice` components skipped, and the first unit left
/// must be `session-ID.scope`. A scope of that name deeper down, e.g. one a user made
/// inside their own delegated `user@UID.service` subtree, is not a session.
pub fn session_of_cgroup(cgroup: &str) -> Option<String> {
    let unified = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| *p != "/");
    let named = || {
        cgroup
            .lines()
            .find_map(|l| l.split_once(":name=systemd:").map(|(_, path)| path))
    };
    let session = match unified.or_else(named) {
        Some(path) => {
            let unit = path
                .split('/')
                .find(|c| !c.is_empty() && !c.ends_with(".slice"))?;
            unit.strip_prefix("session-")?.strip_suffix(".scope")?
        }
        // elogind (systemd's logind without systemd) keeps its own hierarchy, named
        // after it, with one cgroup per session: `N:name=elogind:/3`.
        None => cgroup
            .lines()
            .find_map(|l| l.split_once(":name=elogind:/").map(|(_, path)| path))?
            .split('/')
            .next()?,
    };
    // logind's own ids are alphanumeric: anything else is not one of its scopes.
    (!session.is_empty() && session.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| session.to_string())
}

/// Process `pid`'s controlling terminal, from `/proc/PID/stat`: `Ok(Some(n))` for virtual
/// console `n`, `Ok(None)` for none or another kind (a pseudo-terminal, a serial line),
/// `Err` when it cannot be read.
pub fn controlling_console(pid: u32) -> Result<Option<u32>, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    console_of_stat(&stat).ok_or_else(|| format!("/proc/{pid}/stat has no tty field"))
}

/// [`controlling_console`] of a `/proc/PID/stat` text. The command name may hold spaces
/// and parentheses, so fields are counted after the last `)`: state, ppid, pgrp,
/// session, tty_nr.
pub fn console_of_stat(stat: &str) -> Option<Option<u32>> {
    let (_, rest) = stat.rsplit_once(')')?;
    let tty_nr: u64 = rest.split_whitespace().nth(4)?.parse().ok()?;
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    // Major 4, minors 1–63 are the virtual consoles (64 and up are serial lines).
    Some((major == 4 && (1..=63).contains(&minor)).then_some(minor as u32))
}

/// The value of `KEY=value` in one of logind's state files (`/run/systemd/seats/*`,
/// `/run/systemd/sessions/*`).
pub fn logind_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        l.trim()
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
    })
}

/// The users with a systemd-logind session marked `REMOTE=1` in `sessions_dir` (open,
/// or still closing: its processes may still run), each with one such session's id;
/// sorted by session id. A directory that cannot be read means logind is not running:
/// nothing to report.
///
/// habitusd gives no verdict about such a user (nor for `input.remote_hold_s` after):
/// the per-process check ([`remote_session`]) cannot follow every way out of an SSH
/// session. `env -u SSH_CONNECTION … systemd-run --user sudo …` runs sudo under the
/// user's systemd manager, in no session scope and with a clean environment; a tmux
/// server started at the desk runs what a remote client types in the local session's
/// scope; and neither logind nor the kernel records which session such a process was
/// started from.
pub fn remote_session_users(sessions_dir: &std::path::Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(sessions_dir) else {
        return Vec::new();
    };
    // logind's own names are alphanumeric; its temporary files (`.#…`) are skipped.
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric()))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|session| {
            let info = std::fs::read_to_string(sessions_dir.join(&session)).ok()?;
            let user = logind_field(&info, "USER").filter(|u| !u.is_empty())?;
            (logind_field(&info, "REMOTE") == Some("1")).then(|| (user.to_string(), session))
        })
        .collect()
}

/// The uid of account `name` (`getpwnam_r`, thread-safe), `None` if it has no passwd
/// entry.
pub fn user_uid(name: &str) -> Option<u32> {
    let c_name = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: a zeroed passwd is a valid out-parameter (plain integers and pointers).
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live, correctly sized storage owned by this frame.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(pwd.pw_uid)
}

/// The passwd name of `uid` (`getpwuid_r`, thread-safe).
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live, correctly sized storage owned by this frame;
    // on success `result` points to `pwd`, whose strings point into `buf`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buf`, checked non-null above.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) };
    name.to_str().ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ssh_in_the_environment_marks_a_process_remote() {
        let dir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new("sleep")
            .arg("5")
            .env("SSH_CONNECTION", "203.0.113.9 50000 192.0.2.1 22")
            .spawn()
            .unwrap();
        let mut child = child;
        // /proc/PID/environ shows the new environment only once exec has happened.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let reason = super::remote_session(child.id(), dir.path());
        let _ = child.kill();
        let _ = child.wait();
        assert!(reason.is_some_and(|r| r.contains("SSH_CONNECTION")));

        let mut local = std::process::Command::new("sleep")
            .arg("5")
            .env_remove("SSH_CONNECTION")
            .env_remove("SSH_CLIENT")
            .env_remove("SSH_TTY")
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let reason = super::remote_session(local.id(), dir.path());
        let _ = local.kill();
        let _ = local.wait();
        assert_eq!(reason, None);
    }

    #[test]
    fn remote_sessions_are_found_by_user_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = dir.path();
        let write = |name: &str, text: &str| std::fs::write(sessions.join(name), text).unwrap();
        // Local sessions of alice, a remote one of bob, a stray temporary file.
        write(
            "2",
            "UID=1000\nUSER=alice\nACTIVE=1\nSTATE=active\nREMOTE=0\nTYPE=wayland\n",
        );
        write(
            "7",
            "UID=1001\nUSER=bob\nSTATE=online\nREMOTE=1\nREMOTE_HOST=203.0.113.9\n",
        );
        write(".#7abc", "UID=1000\nUSER=alice\nREMOTE=1\n");
        let of = |user: &str, dir: &std::path::Path| {
            super::remote_session_users(dir)
                .into_iter()
                .filter(|(u, _)| u == user)
                .map(|(_, s)| s)
                .collect::<Vec<String>>()
        };
        assert!(of("alice", sessions).is_empty());
        assert_eq!(of("bob", sessions), ["7"]);
        // Prefixes and case do not match: the name is compared whole.
        assert!(of("bo", sessions).is_empty() && of("Bob", sessions).is_empty());
        // alice logs in over SSH; a session that is closing may still run her processes.
        write(
            "12",
            "UID=1000\nUSER=alice\nSTATE=closing\nREMOTE=1\nSERVICE=sshd\n",
        );
        assert_eq!(of("alice", sessions), ["12"]);
        // No logind (no directory): nothing to say.
        assert!(super::remote_session_users(&sessions.join("absent")).is_empty());
    }

    #[test]
    fn sessions_are_read_from_the_cgroup_as_systemd_does() {
        use super::session_of_cgroup as of;
        // cgroup v2, and hybrid with the unified line last.
        assert_eq!(
            of("0::/user.slice/user-1000.slice/session-3.scope\n").as_deref(),
            Some("3")
        );
        assert_eq!(
            of("1:name=systemd:/user.slice/user-1000.slice/session-c2.scope\n0::/user.slice/user-1000.slice/session-c2.scope\n")
                .as_deref(),
            Some("c2")
        );
        // cgroup v1 with name=systemd not last; a unified line of "/" means no v2 path.
        assert_eq!(
            of("9:name=systemd:/user.slice/user-1000.slice/session-7.scope\n4:memory:/x\n0::/\n")
                .as_deref(),
            Some("7")
        );
        // A sub-cgroup of a session scope is still in the session.
        assert_eq!(
            of("0::/user.slice/user-1000.slice/session-3.scope/inner\n").as_deref(),
            Some("3")
        );
        // elogind's own hierarchy.
        assert_eq!(of("1:name=elogind:/3\n2:cpu:/\n").as_deref(), Some("3"));
        assert_eq!(of("1:name=elogind:/\n"), None);
        // Not sessions: the user's manager and what it starts (also a scope the user
        // named like a session inside it), system services, the root, odd ids.
        for text in [
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/session-2.scope\n",
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-1.scope\n",
            "0::/system.slice/getty@tty3.service\n",
            "0::/\n",
            "0::/user.slice/user-1000.slice/session-.scope\n",
            "0::/user.slice/user-1000.slice/session-3-x.scope\n",
            "",
        ] {
            assert_eq!(of(text), None, "{text:?}");
        }
    }

    #[test]
    fn the_controlling_console_is_read_from_stat() {
        use super::console_of_stat as of;
        let stat = |comm: &str, tty_nr: u64| {
            format!("1234 ({comm}) S 1 1234 1234 {tty_nr} 1234 4194560 100 0 0 0 0 0")
        };
        assert_eq!(of(&stat("login", 4 << 8 | 3)), Some(Some(3)));
        assert_eq!(of(&stat("a) (b", 4 << 8 | 1)), Some(Some(1)));
        // tty0 (the current console, not one of its own), serial lines, pseudo-terminals,
        // none.
        assert_eq!(of(&stat("x", 4 << 8)), Some(None));
        assert_eq!(of(&stat("agetty", 4 << 8 | 64)), Some(None));
        assert_eq!(of(&stat("sudo", 136 << 8 | 2)), Some(None));
        assert_eq!(of(&stat("gdm-session-wor", 0)), Some(None));
        assert_eq!(of("1234 (x"), None);
        assert_eq!(of("garbage"), None);
        // This process: readable, whatever its terminal is.
        assert!(super::controlling_console(std::process::id()).is_ok());
    }

    #[test]
    fn root_has_a_name_and_unknown_uids_do_not() {
        assert_eq!(super::user_name(0).as_deref(), Some("root"));
        assert_eq!(super::user_name(4_000_000_000), None);
        assert_eq!(super::user_uid("root"), Some(0));
        assert_eq!(super::user_uid("no-such-user-habitus"), None);
        assert_eq!(super::user_uid("nul\0byte"), None);
    }

    #[test]
    fn the_real_uid_of_a_process_is_read_and_an_absent_one_is_an_error() {
        let me = unsafe { libc::getuid() };
        assert_eq!(super::real_uid_of(std::process::id()), Ok(me));
        assert!(super::real_uid_of(0).is_err());
        // Unset here or not, never u32::MAX ("unset") as a uid.
        assert_ne!(super::login_uid_of(std::process::id()), Some(u32::MAX));
        assert_eq!(super::login_uid_of(0), None);
        assert!(super::logind_session_checked(0).is_err());
        assert!(super::controlling_console(0).is_err());
    }
}
