//! # pam_habitus.so
//!
//! A thin PAM client of habitusd: behaviour as a **step-up skip**, never as a gate.
//!
//! `pam_sm_authenticate` asks habitusd, in one socket round trip under a hard deadline,
//! for its live verdict on `PAM_USER` and returns
//!
//! - `PAM_SUCCESS` only for a fresh, positive `Trusted` verdict about exactly that user;
//! - `PAM_IGNORE` for everything else (bad options, remote session, daemon down, timeout,
//!   garbage, another user, Learning/Uncertain/Drift/Unenrolled, stale evidence, a panic).
//!
//! It never returns `PAM_AUTH_ERR`: the strong factor that follows in the stack decides.
//! The session hooks tell habitusd which user a local session belongs to, and never block
//! or fail a login. See `docs/pam_habitus.md` for the manual page.
//!
//! Only the `pam_sm_*` functions are exported from the `cdylib`; the modules below are
//! public for the tests and for readers.

pub mod client;
pub mod decision;
pub mod options;
pub mod sys;

use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{SystemTime, UNIX_EPOCH};

use habitus_protocol::{Request, RequestBody, ResponseBody};

use crate::decision::{IgnoreReason, Verdict};
use crate::options::Options;
use crate::sys::{PamHandle, PAM_IGNORE, PAM_RHOST, PAM_SERVICE, PAM_SUCCESS, PAM_TTY, PAM_USER};

/// The module arguments as byte strings.
///
/// # Safety
/// `argv` must point to `argc` NUL-terminated strings (or be null), as PAM guarantees.
unsafe fn module_args<'a>(argc: c_int, argv: *const *const c_char) -> Vec<&'a [u8]> {
    if argv.is_null() || argc <= 0 {
        return Vec::new();
    }
    (0..argc as usize)
        .map(|i| *argv.add(i))
        .filter(|p| !p.is_null())
        .map(|p| CStr::from_ptr(p).to_bytes())
        .collect()
}

/// Runs an entry point's body; a panic becomes `PAM_IGNORE` (the stack asks for the
/// strong factor) instead of unwinding into C, which would be undefined behaviour.
fn guarded(pamh: *mut PamHandle, body: impl FnOnce() -> c_int) -> c_int {
    quiet_panics();
    contain_panic(pamh, body)
}

fn contain_panic(pamh: *mut PamHandle, body: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(rc) => rc,
        Err(_) => {
            // SAFETY: pamh is the handle of the current call (or null, which pam_syslog
            // tolerates).
            unsafe { sys::syslog(pamh, libc::LOG_ERR, &IgnoreReason::Panic.describe()) };
            PAM_IGNORE
        }
    }
}

/// Replaces the default panic hook, which writes to stderr (the terminal of whoever runs
/// `sudo`), by one that writes to syslog. The hook belongs to this library's own copy of
/// std (a cdylib links std statically), so the host program is not affected.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let text = format!("pam_habitus: panic: {info}");
            let text = std::ffi::CString::new(text.replace('\0', "")).unwrap_or_default();
            // SAFETY: constant format, one C-string argument.
            unsafe {
                libc::syslog(
                    libc::LOG_AUTHPRIV | libc::LOG_ERR,
                    c"%s".as_ptr(),
                    text.as_ptr(),
                )
            };
        }));
    });
}

/// What one call knows: the handle, the options and whether it may talk to the user.
struct Call {
    pamh: *mut PamHandle,
    options: Options,
    may_talk: bool,
}

impl Call {
    fn log(&self, priority: c_int, text: &str) {
        // SAFETY: pamh is the handle of the current call.
        unsafe { sys::syslog(self.pamh, priority, text) };
    }

    fn debug(&self, text: impl FnOnce() -> String) {
        if self.options.debug {
            self.log(libc::LOG_DEBUG, &text());
        }
    }

    fn item(&self, item_type: c_int) -> Option<Vec<u8>> {
        // SAFETY: pamh is the handle of the current call.
        unsafe { sys::get_string_item(self.pamh, item_type) }
    }

    /// Logs the reason for standing aside and, unless silenced, tells the user.
    fn ignore(&self, reason: &IgnoreReason) -> c_int {
        let priority = if reason.is_fault() {
            libc::LOG_ERR
        } else {
            libc::LOG_INFO
        };
        self.log(priority, &format!("ignoring: {}", reason.describe()));
        if self.may_talk {
            if let Some(message) = reason.user_message() {
                // SAFETY: pamh is the handle of the current call.
                let shown = unsafe { sys::text_info(self.pamh, message) };
                self.debug(|| format!("told the user: {message} (delivered: {shown})"));
            }
        }
        PAM_IGNORE
    }
}

fn start_call(pamh: *mut PamHandle, flags: c_int, args: &[&[u8]]) -> (Call, Vec<String>) {
    let parsed = options::parse(args.iter().copied());
    let silent = flags & sys::PAM_SILENT != 0;
    let call = Call {
        pamh,
        may_talk: !silent && !parsed.options.quiet,
        options: parsed.options,
    };
    let errors = parsed.errors.iter().map(ToString::to_string).collect();
    (call, errors)
}

/// The checks shared by every entry point: options, service, and (for authentication)
/// the remote-session guard.
fn preflight(
    call: &Call,
    option_errors: &[String],
    refuse_remote: bool,
) -> Result<Vec<u8>, IgnoreReason> {
    if !option_errors.is_empty() {
        return Err(IgnoreReason::BadOptions(option_errors.join("; ")));
    }
    call.debug(|| format!("options: {:?}", call.options));
    let service = call.item(PAM_SERVICE).unwrap_or_default();
    let rhost = if refuse_remote {
        call.item(PAM_RHOST)
    } else {
        None
    };
    decision::context_guard(&call.options, &service, rhost.as_deref())?;
    Ok(service)
}

/// A user name habitusd will accept, or why not.
fn checked_user(raw: Option<Vec<u8>>) -> Result<String, IgnoreReason> {
    let raw = raw.ok_or_else(|| IgnoreReason::NoUser("PAM has no user".into()))?;
    match String::from_utf8(raw) {
        Ok(user) if habitus_protocol::valid_user_name(&user) => Ok(user),
        _ => Err(IgnoreReason::NoUser("not a valid user name".into())),
    }
}

fn now_ms() -> Result<u64, IgnoreReason> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().min(u64::MAX as u128) as u64)
        .map_err(|_| IgnoreReason::Unavailable("system clock before 1970".into()))
}

fn assess(call: &Call, option_errors: &[String]) -> Result<String, IgnoreReason> {
    preflight(call, option_errors, true)?;
    // SAFETY: pamh is the handle of the current call.
    let user = checked_user(unsafe { sys::get_user(call.pamh) })?;
    // SAFETY: getuid has no preconditions.
    let caller = unsafe { libc::getuid() };
    decision::caller_guard(caller, uid_of(&user), &user)?;
    call.debug(|| format!("asking habitusd at {:?} about {user}", call.options.socket));
    // The verdict is for the terminal asking: habitusd refuses one that is not in front
    // of the seat it measures (a login on another virtual console, another seat).
    let tty = call
        .item(PAM_TTY)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    let request = Request::new(RequestBody::Assess {
        user: user.clone(),
        tty,
    });
    let started = std::time::Instant::now();
    let response = client::round_trip(&call.options.socket, &request, call.options.timeout)
        .map_err(|e| IgnoreReason::Unavailable(e.to_string()))?;
    call.debug(|| format!("answer after {:?}: {response:?}", started.elapsed()));
    match decision::decide(&response, &call.options, &user, now_ms()?) {
        Verdict::Success => Ok(user),
        Verdict::Ignore(reason) => Err(reason),
    }
}

/// The uid of account `name` (`getpwnam_r`), `None` if it has no passwd entry.
fn uid_of(name: &str) -> Option<u32> {
    let c_name = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: a zeroed passwd is a valid out-parameter; all pointers refer to storage
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
    (rc == 0 && !result.is_null()).then_some(pwd.pw_uid)
}

fn authenticate(pamh: *mut PamHandle, flags: c_int, args: &[&[u8]]) -> c_int {
    let (call, option_errors) = start_call(pamh, flags, args);
    match assess(&call, &option_errors) {
        Ok(user) => {
            call.log(
                libc::LOG_INFO,
                &format!("trusted behaviour verdict for {user}: step-up skipped"),
            );
            PAM_SUCCESS
        }
        Err(reason) => call.ignore(&reason),
    }
}

/// Tells habitusd about a session opening or closing. Never talks to the user, never
/// fails the login: `PAM_SUCCESS` when acknowledged, `PAM_IGNORE` otherwise.
fn session(pamh: *mut PamHandle, flags: c_int, args: &[&[u8]], open: bool) -> c_int {
    let (mut call, option_errors) = start_call(pamh, flags, args);
    call.may_talk = false;
    let outcome = (|| {
        let service = preflight(&call, &option_errors, false)?;
        let user = checked_user(call.item(PAM_USER))?;
        let text = |item| {
            call.item(item)
                .filter(|v| !v.is_empty())
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        };
        let service = String::from_utf8_lossy(&service).into_owned();
        let tty = text(PAM_TTY);
        let body = if open {
            RequestBody::SessionOpen {
                user,
                service,
                tty,
                rhost: text(PAM_RHOST),
            }
        } else {
            RequestBody::SessionClose { user, service, tty }
        };
        call.debug(|| format!("sending {body:?}"));
        let response = client::round_trip(
            &call.options.socket,
            &Request::new(body),
            call.options.timeout,
        )
        .map_err(|e| IgnoreReason::Unavailable(e.to_string()))?;
        match response.body {
            ResponseBody::Done { message } => Ok(message),
            ResponseBody::Error { kind, message } => Err(IgnoreReason::DaemonError {
                kind,
                message: decision::printable(&message),
            }),
            other => Err(IgnoreReason::UnexpectedAnswer(format!("{other:?}"))),
        }
    })();
    match outcome {
        Ok(message) => {
            call.debug(|| format!("habitusd: {}", decision::printable(&message)));
            PAM_SUCCESS
        }
        Err(reason) => call.ignore(&reason),
    }
}

/// # Safety
/// Called by libpam with a live handle and `argc` argument strings.
#[no_mangle]
pub unsafe extern "C" fn pam_sm_authenticate(
    pamh: *mut PamHandle,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    guarded(pamh, || authenticate(pamh, flags, &module_args(argc, argv)))
}

/// No credentials to set: behaviour is not a credential.
///
/// # Safety
/// Called by libpam.
#[no_mangle]
pub unsafe extern "C" fn pam_sm_setcred(
    pamh: *mut PamHandle,
    _flags: c_int,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    guarded(pamh, || PAM_IGNORE)
}

/// Account management is left to the rest of the stack.
///
/// # Safety
/// Called by libpam.
#[no_mangle]
pub unsafe extern "C" fn pam_sm_acct_mgmt(
    pamh: *mut PamHandle,
    _flags: c_int,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    guarded(pamh, || PAM_IGNORE)
}

/// There is no token to change.
///
/// # Safety
/// Called by libpam.
#[no_mangle]
pub unsafe extern "C" fn pam_sm_chauthtok(
    pamh: *mut PamHandle,
    _flags: c_int,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    guarded(pamh, || PAM_IGNORE)
}

/// # Safety
/// Called by libpam with a live handle and `argc` argument strings.
#[no_mangle]
pub unsafe extern "C" fn pam_sm_open_session(
    pamh: *mut PamHandle,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    guarded(pamh, || {
        session(pamh, flags, &module_args(argc, argv), true)
    })
}

/// # Safety
/// Called by libpam with a live handle and `argc` argument strings.
#[no_mangle]
pub unsafe extern "C" fn pam_sm_close_session(
    pamh: *mut PamHandle,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    guarded(pamh, || {
        session(pamh, flags, &module_args(argc, argv), false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_pam_ignore() {
        let rc = contain_panic(std::ptr::null_mut(), || panic!("injected fault"));
        assert_eq!(rc, PAM_IGNORE);
        assert_eq!(
            contain_panic(std::ptr::null_mut(), || PAM_SUCCESS),
            PAM_SUCCESS
        );
    }

    #[test]
    fn module_arguments_are_read_as_bytes() {
        let args = [c"socket=/tmp/s".as_ptr(), c"debug".as_ptr()];
        let read = unsafe { module_args(2, args.as_ptr()) };
        assert_eq!(read, vec![&b"socket=/tmp/s"[..], &b"debug"[..]]);
        assert!(unsafe { module_args(0, std::ptr::null()) }.is_empty());
        assert!(unsafe { module_args(3, std::ptr::null()) }.is_empty());
    }

    #[test]
    fn user_names_are_checked_before_asking() {
        assert_eq!(checked_user(Some(b"alice".to_vec())), Ok("alice".into()));
        for bad in [&b""[..], b"-rf", b"a b", b"\xff\xfe", b"a/b"] {
            assert!(
                matches!(
                    checked_user(Some(bad.to_vec())),
                    Err(IgnoreReason::NoUser(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(checked_user(None), Err(IgnoreReason::NoUser(_))));
    }
}
