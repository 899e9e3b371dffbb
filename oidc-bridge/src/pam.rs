//! Primary authentication against the system's PAM stack (`[primary] method = "pam"`).
//!
//! One login = `pam_start(service, user)` → `pam_authenticate` → `pam_acct_mgmt` →
//! `pam_end`, on the calling (blocking) thread, with a conversation that can answer exactly
//! one thing: the first hidden prompt, with the password typed on the login page. Anything
//! else a stack might ask (a second hidden prompt such as an OTP, a visible prompt, an
//! unknown message style) fails the conversation, and so the login: the web page has no
//! way to show the question, and failing is the safe answer. Informational and error
//! messages are accepted and dropped.
//!
//! Caveats (also in docs/oidc.md):
//! - `pam_unix` reads `/etc/shadow` only as root; run as another user, it can check nothing
//!   but that user's own password (through `unix_chkpwd`). Run habitus-oidc as root, or use
//!   a stack whose modules do not need it (sssd, LDAP, Kerberos).
//! - Modules may sleep after a failure (`pam_faildelay`, pam_unix's ~2 s): the login request
//!   waits that long, on a blocking thread, which is the point of the delay.
//! - Expired passwords (`PAM_NEW_AUTHTOK_REQD`) are refused: the page cannot change them.
//!
//! The FFI is declared here (a handful of functions from `libpam.so.0`) rather than taken
//! from a bindings crate, as `pam-module` does for the module side.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

const PAM_SUCCESS: c_int = 0;
const PAM_BUF_ERR: c_int = 5;
const PAM_CONV_ERR: c_int = 19;
const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x0001;
const PAM_SILENT: c_int = 0x8000;

const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;

#[repr(C)]
struct PamHandle {
    _private: [u8; 0],
}

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int;

#[repr(C)]
struct PamConv {
    conv: ConvFn,
    appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
extern "C" {
    fn pam_start(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        pamh: *mut *mut PamHandle,
    ) -> c_int;
    fn pam_authenticate(pamh: *mut PamHandle, flags: c_int) -> c_int;
    fn pam_acct_mgmt(pamh: *mut PamHandle, flags: c_int) -> c_int;
    fn pam_end(pamh: *mut PamHandle, status: c_int) -> c_int;
    fn pam_strerror(pamh: *mut PamHandle, errnum: c_int) -> *const c_char;
}

/// Why a PAM login failed. Only for logs: the user sees "wrong user name or password"
/// whatever the reason, so the page does not tell which accounts exist or are locked.
#[derive(Debug, thiserror::Error)]
pub enum PamError {
    #[error("user name or password contains a NUL byte")]
    Nul,
    #[error("empty password")]
    Empty,
    #[error("pam_start({service}) failed: {message}")]
    Start { service: String, message: String },
    #[error("{step}: {message}")]
    Refused { step: &'static str, message: String },
}

/// What the conversation answers, and how often it was asked.
struct Answer {
    password: CString,
    asked: u32,
}

extern "C" fn conversation(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    // A panic must not unwind into libpam.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: libpam passes the appdata pointer given to pam_start (an `Answer` that
        // outlives the handle) and `num_msg` valid message pointers (Linux-PAM layout: an
        // array of pointers).
        unsafe { converse(num_msg, msg, resp, &mut *(appdata as *mut Answer)) }
    }))
    .unwrap_or(PAM_CONV_ERR)
}

/// # Safety
/// As for [`conversation`].
unsafe fn converse(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    answer: &mut Answer,
) -> c_int {
    if num_msg <= 0 || num_msg > 32 || msg.is_null() || resp.is_null() {
        return PAM_CONV_ERR;
    }
    let n = num_msg as usize;
    // The module frees the array and each answer with free(3): allocate with calloc.
    let replies = libc::calloc(n, std::mem::size_of::<PamResponse>()) as *mut PamResponse;
    if replies.is_null() {
        return PAM_BUF_ERR;
    }
    for i in 0..n {
        let m = *msg.add(i);
        let style = if m.is_null() { -1 } else { (*m).msg_style };
        let ok = match style {
            PAM_PROMPT_ECHO_OFF if answer.asked == 0 => {
                answer.asked += 1;
                let copy = libc::strdup(answer.password.as_ptr());
                (*replies.add(i)).resp = copy;
                !copy.is_null()
            }
            PAM_ERROR_MSG | PAM_TEXT_INFO => true,
            // A second hidden prompt, a visible prompt, binary prompts, unknown styles.
            _ => false,
        };
        if !ok {
            free_replies(replies, n);
            return PAM_CONV_ERR;
        }
    }
    *resp = replies;
    PAM_SUCCESS
}

/// # Safety
/// `replies` is a calloc'ed array of `n` responses whose `resp` are null or strdup'ed.
unsafe fn free_replies(replies: *mut PamResponse, n: usize) {
    for i in 0..n {
        let r = (*replies.add(i)).resp;
        if !r.is_null() {
            // Overwrite the copy of the password before giving the memory back.
            std::ptr::write_bytes(r, 0, libc::strlen(r));
            libc::free(r as *mut c_void);
        }
    }
    libc::free(replies as *mut c_void);
}

/// Checks `user`'s `password` with the PAM `service` (authentication, then account
/// management: expired or locked accounts are refused). Blocking: modules may sleep after
/// a failure.
///
/// `PAM_RHOST` is not set: behind a reverse proxy the peer address is the proxy's, and a
/// module such as pam_faillock would then lock every user out together.
pub fn authenticate(service: &str, user: &str, password: &str) -> Result<(), PamError> {
    if password.is_empty() {
        return Err(PamError::Empty);
    }
    let c_service = CString::new(service).map_err(|_| PamError::Nul)?;
    let c_user = CString::new(user).map_err(|_| PamError::Nul)?;
    let mut answer = Answer {
        password: CString::new(password).map_err(|_| PamError::Nul)?,
        asked: 0,
    };
    let conv = PamConv {
        conv: conversation,
        appdata_ptr: &mut answer as *mut Answer as *mut c_void,
    };
    let mut handle: *mut PamHandle = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the whole transaction (`answer`, `conv`, the
    // CStrings live until the end of this function, after pam_end).
    let result = unsafe {
        let rc = pam_start(c_service.as_ptr(), c_user.as_ptr(), &conv, &mut handle);
        if rc != PAM_SUCCESS || handle.is_null() {
            let message = if handle.is_null() {
                format!("error {rc}")
            } else {
                strerror(handle, rc)
            };
            if !handle.is_null() {
                pam_end(handle, rc);
            }
            return Err(PamError::Start {
                service: service.to_string(),
                message,
            });
        }
        let mut step = "pam_authenticate";
        let mut rc = pam_authenticate(handle, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
        if rc == PAM_SUCCESS {
            // PAM_NEW_AUTHTOK_REQD (expired password) is a refusal too.
            step = "pam_acct_mgmt";
            rc = pam_acct_mgmt(handle, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
        }
        let result = if rc == PAM_SUCCESS {
            Ok(())
        } else {
            Err(PamError::Refused {
                step,
                message: strerror(handle, rc),
            })
        };
        pam_end(handle, rc);
        result
    };
    // The conversation's own copy of the password is freed by the module; wipe ours.
    let mut bytes = std::mem::take(&mut answer.password).into_bytes();
    bytes.iter_mut().for_each(|b| *b = 0);
    result
}

/// # Safety
/// `handle` is a live PAM handle.
unsafe fn strerror(handle: *mut PamHandle, rc: c_int) -> String {
    let s = pam_strerror(handle, rc);
    if s.is_null() {
        format!("error {rc}")
    } else {
        format!("{} ({rc})", CStr::from_ptr(s).to_string_lossy())
    }
}

/// The account `name` resolves to (`getpwnam_r`, NSS: files, LDAP, sssd) as its uid and
/// its own name, `None` if NSS knows no such account. A directory may answer for several
/// spellings of one account (`Bob`, `bob@EXAMPLE` → `bob`).
pub fn account_of(name: &str) -> Option<(u32, String)> {
    let c_name = CString::new(name).ok()?;
    let mut buf = vec![0 as c_char; 16 * 1024];
    // SAFETY: a zeroed passwd is a valid out-parameter; every pointer refers to storage
    // that outlives the call.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buf`, checked non-null above.
    let own = unsafe { CStr::from_ptr(pwd.pw_name) };
    Some((pwd.pw_uid, own.to_string_lossy().into_owned()))
}

/// A PAM service name: a file name in `/etc/pam.d`.
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_resolve_to_their_uid_and_name() {
        assert_eq!(account_of("root"), Some((0, "root".to_string())));
        assert_eq!(account_of("no-such-user-habitus"), None);
        assert_eq!(account_of("nul\0byte"), None);
    }

    #[test]
    fn service_names() {
        assert!(valid_service_name("habitus-oidc"));
        assert!(valid_service_name("login"));
        for bad in ["", "../shadow", "a/b", ".hidden", "sp ace"] {
            assert!(!valid_service_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn refused_before_pam_is_called() {
        assert!(matches!(
            authenticate("habitus-oidc", "alice", ""),
            Err(PamError::Empty)
        ));
        assert!(matches!(
            authenticate("habitus-oidc", "alice", "pass\0word"),
            Err(PamError::Nul)
        ));
        assert!(matches!(
            authenticate("habitus-oidc", "al\0ice", "password"),
            Err(PamError::Nul)
        ));
    }
}
