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

/// The systemd-logind session process `pid` runs in, from its cgroup
/// (`…/session-ID.scope`): `None` when it runs in none (a system service such as a
/// getty before its login, the user's systemd manager and the apps it starts, no
/// systemd at all).
pub fn logind_session_of(pid: u32) -> Option<String> {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let session = cgroup.split('/').find_map(|part| {
        part.trim()
            .strip_prefix("session-")
            .and_then(|s| s.strip_suffix(".scope"))
            .map(str::to_string)
    })?;
    // logind's own ids are alphanumeric: anything else is not one of its scopes.
    (!session.is_empty() && session.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(session)
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
    fn root_has_a_name_and_unknown_uids_do_not() {
        assert_eq!(super::user_name(0).as_deref(), Some("root"));
        assert_eq!(super::user_name(4_000_000_000), None);
    }
}
