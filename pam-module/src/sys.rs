//! The few pieces of libpam this module needs, declared by hand (no bindgen, no extra
//! crates: the module must stay small), plus safe wrappers around them.
//!
//! Values and layouts follow Linux-PAM's `<security/_pam_types.h>`; they are part of the
//! stable PAM ABI shared by every module on the system.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

/// Opaque `pam_handle_t`.
#[repr(C)]
pub struct PamHandle {
    _private: [u8; 0],
}

pub const PAM_SUCCESS: c_int = 0;
pub const PAM_IGNORE: c_int = 25;

/// Flag bit: the application asked modules not to emit messages.
pub const PAM_SILENT: c_int = 0x8000;

/// Item types for `pam_get_item`.
pub const PAM_SERVICE: c_int = 1;
pub const PAM_USER: c_int = 2;
pub const PAM_TTY: c_int = 3;
pub const PAM_RHOST: c_int = 4;
pub const PAM_CONV: c_int = 5;

/// Message style: informational text, no answer expected.
pub const PAM_TEXT_INFO: c_int = 4;

#[repr(C)]
pub struct PamMessage {
    pub msg_style: c_int,
    pub msg: *const c_char,
}

#[repr(C)]
pub struct PamResponse {
    pub resp: *mut c_char,
    pub resp_retcode: c_int,
}

pub type ConvFn = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int;

#[repr(C)]
pub struct PamConv {
    pub conv: Option<ConvFn>,
    pub appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
extern "C" {
    pub fn pam_get_user(
        pamh: *mut PamHandle,
        user: *mut *const c_char,
        prompt: *const c_char,
    ) -> c_int;
    pub fn pam_get_item(
        pamh: *const PamHandle,
        item_type: c_int,
        item: *mut *const c_void,
    ) -> c_int;
    /// Logs to syslog with facility `LOG_AUTHPRIV`, prefixed with the module and service.
    pub fn pam_syslog(pamh: *const PamHandle, priority: c_int, fmt: *const c_char, ...);
}

/// A string item (`PAM_SERVICE`, `PAM_USER`, `PAM_TTY`, `PAM_RHOST`) as raw bytes;
/// `None` when unset or on error.
///
/// # Safety
/// `pamh` must be the live handle PAM passed to the current `pam_sm_*` call.
pub unsafe fn get_string_item(pamh: *mut PamHandle, item_type: c_int) -> Option<Vec<u8>> {
    let mut item: *const c_void = std::ptr::null();
    if pam_get_item(pamh, item_type, &mut item) != PAM_SUCCESS || item.is_null() {
        return None;
    }
    Some(CStr::from_ptr(item.cast::<c_char>()).to_bytes().to_vec())
}

/// The user being authenticated, asking the application for it if it is not known yet.
///
/// # Safety
/// `pamh` must be the live handle PAM passed to the current `pam_sm_*` call.
pub unsafe fn get_user(pamh: *mut PamHandle) -> Option<Vec<u8>> {
    let mut user: *const c_char = std::ptr::null();
    if pam_get_user(pamh, &mut user, std::ptr::null()) != PAM_SUCCESS || user.is_null() {
        return None;
    }
    Some(CStr::from_ptr(user).to_bytes().to_vec())
}

/// Logs one line through `pam_syslog`. The text is passed as a `%s` argument, never as
/// the format, and interior NULs are dropped.
///
/// # Safety
/// `pamh` must be the live handle PAM passed to the current `pam_sm_*` call.
pub unsafe fn syslog(pamh: *mut PamHandle, priority: c_int, text: &str) {
    let text = CString::new(text.replace('\0', "")).unwrap_or_default();
    pam_syslog(pamh, priority, c"%s".as_ptr(), text.as_ptr());
}

/// Shows one `PAM_TEXT_INFO` line through the application's conversation function.
/// Returns whether the application accepted it. Failures are harmless: the message is a
/// courtesy, never part of the decision.
///
/// # Safety
/// `pamh` must be the live handle PAM passed to the current `pam_sm_*` call.
pub unsafe fn text_info(pamh: *mut PamHandle, text: &str) -> bool {
    let mut item: *const c_void = std::ptr::null();
    if pam_get_item(pamh, PAM_CONV, &mut item) != PAM_SUCCESS || item.is_null() {
        return false;
    }
    let conv = &*item.cast::<PamConv>();
    let Some(conv_fn) = conv.conv else {
        return false;
    };
    let Ok(text) = CString::new(text) else {
        return false;
    };
    let message = PamMessage {
        msg_style: PAM_TEXT_INFO,
        msg: text.as_ptr(),
    };
    // One message: Linux-PAM's array of pointers and Solaris' pointer to an array have
    // the same layout, so this is portable across conversation implementations.
    let mut messages: [*const PamMessage; 1] = [&message];
    let mut response: *mut PamResponse = std::ptr::null_mut();
    let rc = conv_fn(1, messages.as_mut_ptr(), &mut response, conv.appdata_ptr);
    if !response.is_null() {
        // The application owns nothing it handed back: free what it allocated.
        let resp = (*response).resp;
        if !resp.is_null() {
            libc::free(resp.cast());
        }
        libc::free(response.cast());
    }
    rc == PAM_SUCCESS
}
