//! Who is on the other end of a socket connection (`SO_PEERCRED`).

use std::ffi::CStr;

/// A connected client, as the kernel vouches for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    /// The account name of `uid`; `None` when it has no passwd entry (such a peer can
    /// only be refused for anything user-specific).
    pub name: Option<String>,
}

impl Peer {
    pub fn from_uid(uid: u32) -> Peer {
        Peer {
            uid,
            name: user_name(uid),
        }
    }

    /// The daemon itself (replay sources, tests): root's rights.
    pub fn root() -> Peer {
        Peer {
            uid: 0,
            name: Some("root".into()),
        }
    }
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
    fn root_has_a_name_and_unknown_uids_do_not() {
        assert_eq!(super::user_name(0).as_deref(), Some("root"));
        assert_eq!(super::user_name(4_000_000_000), None);
    }
}
