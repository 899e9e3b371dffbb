//! # habitus-protocol
//!
//! The messages habitusd exchanges with its clients (`pam_habitus.so`, the `habitus` CLI,
//! user-session collectors) over its unix socket.
//!
//! ## Wire format
//!
//! Every message is one **frame**: a 4-byte big-endian length `n` (at most
//! [`MAX_FRAME_BYTES`]) followed by `n` bytes of UTF-8 JSON. A connection carries any
//! number of request/response pairs, strictly alternating; the client speaks first.
//!
//! Every JSON message is an object `{"version": V, "body": {...}}`, where `body` has a
//! `"type"` tag ([`RequestBody`], [`ResponseBody`]). Unknown fields are errors, not
//! ignored, so a typo or a newer client is noticed instead of half-understood.
//!
//! ## Versioning
//!
//! [`PROTOCOL_VERSION`] is bumped on **any** change to the JSON (a new field, a new
//! variant, a renamed value). A peer that receives another version answers
//! [`ErrorKind::UnsupportedVersion`] naming both versions, and the PAM module treats that
//! like any other failure (ask for the strong factor). The snapshot tests in
//! `tests/snapshots/` pin the exact bytes of every message, so the format cannot change
//! by accident: a change shows up as a failing snapshot, and the version must move with it.
//!
//! This crate is synchronous and tiny on purpose: the PAM module links it, and it must
//! load and answer in microseconds inside `sudo`.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// The version this crate speaks. Bump on any change to the JSON. 2 (2026-12-07): error
/// kind `remote_session`. 3 (2026-12-07): `assess` carries the asking terminal (`tty`),
/// error kind `not_at_seat`, `status` tells a forgotten user (`forgotten`).
pub const PROTOCOL_VERSION: u32 = 3;

/// Largest frame accepted (and sent): 4 MiB, room for an ingest batch of ~20 000 events.
pub const MAX_FRAME_BYTES: u32 = 4 << 20;

/// Where habitusd listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/habitus/habitusd.sock";

/// A request, as sent by a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub version: u32,
    pub body: RequestBody,
}

impl Request {
    /// A request at this crate's [`PROTOCOL_VERSION`].
    pub fn new(body: RequestBody) -> Request {
        Request {
            version: PROTOCOL_VERSION,
            body,
        }
    }
}

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RequestBody {
    /// The live verdict on `user`'s behaviour. Root may ask about anyone; a user only
    /// about themselves.
    Assess {
        user: String,
        /// The terminal the verdict is asked for (`PAM_TTY`: `/dev/pts/3`, `tty2`, `:0`),
        /// `None` when the caller has none. habitusd gives no verdict for a terminal that
        /// is not the one in front of seat0, whose devices it reads.
        tty: Option<String>,
    },
    /// A PAM session was opened (from `session optional pam_habitus.so`): evidence from
    /// this seat/tty is now attributed to `user`. Root only.
    SessionOpen {
        user: String,
        service: String,
        tty: Option<String>,
        /// Set for remote logins; such sessions never bind local input devices.
        rhost: Option<String>,
    },
    /// The PAM session ended. Root only.
    SessionClose {
        user: String,
        service: String,
        tty: Option<String>,
    },
    /// Events from a user-session collector (or a replay) for `user`'s live session.
    /// Key codes are hashed by habitusd on receipt and never stored.
    Ingest {
        user: String,
        events: Vec<WireEvent>,
    },
    /// Enrolment state, trust and per-modality progress; `None`: every user (root only).
    Status { user: Option<String> },
    /// Build `user`'s profiles from these events (a replay of their own behaviour),
    /// replacing any existing profile. Root only.
    Enroll {
        user: String,
        events: Vec<WireEvent>,
    },
    /// Erase everything stored about `user`. Root only.
    Forget { user: String },
    /// Everything stored about `user`, as JSON. Root, or the user themselves.
    Export { user: String },
}

/// One input event on the wire. Times are microseconds on any monotonic clock (only
/// differences matter); `code` is the evdev key code for keys, the button number for
/// buttons, the slot for touch. Fields a kind does not use are omitted.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEvent {
    pub t_us: u64,
    pub kind: WireEventKind,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub code: u32,
    #[serde(default, skip_serializing_if = "is_zero_f32")]
    pub x: f32,
    #[serde(default, skip_serializing_if = "is_zero_f32")]
    pub y: f32,
    #[serde(default, skip_serializing_if = "is_zero_f32")]
    pub pressure: f32,
    #[serde(default, skip_serializing_if = "is_zero_f32")]
    pub area: f32,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_zero_f32(v: &f32) -> bool {
    *v == 0.0
}

impl WireEvent {
    /// A key event.
    pub fn key(kind: WireEventKind, t_us: u64, code: u32) -> WireEvent {
        WireEvent {
            t_us,
            kind,
            code,
            x: 0.0,
            y: 0.0,
            pressure: 0.0,
            area: 0.0,
        }
    }
}

/// The event kinds of the plugin ABI, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireEventKind {
    KeyDown,
    KeyUp,
    PointerMove,
    ButtonDown,
    ButtonUp,
    Wheel,
    TouchDown,
    TouchMove,
    TouchUp,
}

/// habitusd's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub version: u32,
    pub body: ResponseBody,
}

impl Response {
    /// A response at this crate's [`PROTOCOL_VERSION`].
    pub fn new(body: ResponseBody) -> Response {
        Response {
            version: PROTOCOL_VERSION,
            body,
        }
    }

    /// An error response.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response::new(ResponseBody::Error {
            kind,
            message: message.into(),
        })
    }
}

/// What habitusd answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseBody {
    Assessment(AssessmentReply),
    /// The request was carried out; `message` says what happened, for humans.
    Done {
        message: String,
    },
    Status {
        users: Vec<UserStatus>,
    },
    /// Everything stored about `user` (profiles decrypted, as the plugins encoded them).
    Export {
        user: String,
        data: serde_json::Value,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
}

/// Where a user's behaviour stands (mirrors the engine's state; this crate does not
/// depend on the engine so the PAM module stays small).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustState {
    /// No profile: nothing can be said.
    Unenrolled,
    /// Enrolled (or enrolling) but not enough evidence yet in this session.
    Learning,
    Trusted,
    Uncertain,
    /// Behaviour has drifted away from the profile.
    Drift,
}

/// The verdict on one user's live behaviour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssessmentReply {
    /// The user this verdict is about; clients must check it is the one they asked for.
    pub user: String,
    pub state: TrustState,
    /// Trust in [0, 100].
    pub trust: f64,
    /// Sum of the weighted per-modality LLRs in the fusion window.
    pub fused_llr: f64,
    /// Milliseconds since the last scored window; `None`: no evidence in this session.
    pub evidence_age_ms: Option<u64>,
    /// Wall-clock time of the verdict (milliseconds since the Unix epoch).
    pub evaluated_at_ms: u64,
    pub modalities: Vec<ModalityStatus>,
}

/// One modality of a user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModalityStatus {
    pub plugin: String,
    pub enrolled: bool,
    /// Enrolment windows collected so far, and how many enrolment needs.
    pub enrol_windows: u32,
    pub enrol_needed: u32,
    /// The last window's calibrated LLR, if any was scored.
    pub last_llr: Option<f64>,
}

/// A user as `status` shows them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserStatus {
    pub user: String,
    /// Live sessions bound to this user (tty or service names).
    pub sessions: Vec<String>,
    /// The user was erased with `forget`: nothing is learned from their behaviour until
    /// an administrator enrols them again (the enrolment counts stay at 0).
    pub forgotten: bool,
    pub assessment: AssessmentReply,
}

/// Why a request failed, so a client can decide what to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The peer speaks another protocol version: upgrade one side.
    UnsupportedVersion,
    /// The message could not be understood (bad JSON, bad field, bad event).
    BadRequest,
    /// The peer's uid may not ask this (see `SO_PEERCRED` rules).
    PermissionDenied,
    /// No such user is known to habitusd.
    UnknownUser,
    /// No verdict: the asking process is in a remote session, or the user asked about
    /// has one open. Behaviour at the local devices says nothing about who is there.
    RemoteSession,
    /// No verdict: the verdict was asked for a terminal other than the one in front of
    /// seat0 (another virtual console, a serial line, another seat's display, a session
    /// in the background), where the behaviour habitusd measures is not happening.
    NotAtSeat,
    /// Something failed inside habitusd (store, plugin); details are in its log.
    Internal,
}

/// Failures reading or decoding a frame.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("frame of {0} bytes is larger than the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(u64),
    #[error("the peer speaks protocol version {found}; this side speaks {PROTOCOL_VERSION}")]
    UnsupportedVersion { found: u64 },
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Checks a frame header and returns the body length.
pub fn frame_len(header: [u8; 4]) -> Result<usize, ProtocolError> {
    let n = u32::from_be_bytes(header);
    if n > MAX_FRAME_BYTES {
        return Err(ProtocolError::TooLarge(n as u64));
    }
    Ok(n as usize)
}

/// Serialises a message into one frame (header included).
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, ProtocolError> {
    let body = serde_json::to_vec(message).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if body.len() as u64 > MAX_FRAME_BYTES as u64 {
        return Err(ProtocolError::TooLarge(body.len() as u64));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Reads one frame body. A clean end of stream before the header is [`ProtocolError::Closed`].
pub fn read_frame(reader: &mut impl Read) -> Result<Vec<u8>, ProtocolError> {
    let mut header = [0u8; 4];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ProtocolError::Closed)
        }
        Err(e) => return Err(e.into()),
    }
    let n = frame_len(header)?;
    let mut body = vec![0u8; n];
    reader.read_exact(&mut body)?;
    Ok(body)
}

/// Writes one message as a frame.
pub fn write_message<T: Serialize>(
    writer: &mut impl Write,
    message: &T,
) -> Result<(), ProtocolError> {
    writer.write_all(&encode(message)?)?;
    writer.flush()?;
    Ok(())
}

/// Only the version field, read before the rest so that a message from another
/// version gets "unsupported version" rather than a confusing field error.
#[derive(Deserialize)]
struct VersionOnly {
    version: u64,
}

fn decode_versioned<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ProtocolError> {
    let probe: VersionOnly = serde_json::from_slice(body)
        .map_err(|e| ProtocolError::Malformed(format!("no protocol version: {e}")))?;
    if probe.version != PROTOCOL_VERSION as u64 {
        return Err(ProtocolError::UnsupportedVersion {
            found: probe.version,
        });
    }
    serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// Decodes a request body (after [`read_frame`]).
pub fn decode_request(body: &[u8]) -> Result<Request, ProtocolError> {
    decode_versioned(body)
}

/// Decodes a response body (after [`read_frame`]).
pub fn decode_response(body: &[u8]) -> Result<Response, ProtocolError> {
    decode_versioned(body)
}

/// The reply habitusd sends for a request it could not decode.
pub fn error_reply(error: &ProtocolError) -> Response {
    let kind = match error {
        ProtocolError::UnsupportedVersion { .. } => ErrorKind::UnsupportedVersion,
        _ => ErrorKind::BadRequest,
    };
    Response::error(kind, error.to_string())
}

/// A user name as PAM and the socket accept it: 1–256 bytes of printable ASCII other
/// than `/` and `:`, not starting with `-`. Anything else is refused before it reaches
/// the store or a log line.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let req = Request::new(RequestBody::Assess {
            user: "alice".into(),
            tty: Some("/dev/pts/3".into()),
        });
        let frame = encode(&req).unwrap();
        let body = read_frame(&mut &frame[..]).unwrap();
        assert_eq!(decode_request(&body).unwrap(), req);
    }

    #[test]
    fn oversized_header_is_refused_before_allocating() {
        let header = (MAX_FRAME_BYTES + 1).to_be_bytes();
        let mut input = header.to_vec();
        input.extend_from_slice(b"{}");
        assert!(matches!(
            read_frame(&mut &input[..]),
            Err(ProtocolError::TooLarge(_))
        ));
    }

    #[test]
    fn truncated_frames_and_empty_streams_are_errors() {
        assert!(matches!(
            read_frame(&mut &b""[..]),
            Err(ProtocolError::Closed)
        ));
        assert!(matches!(
            read_frame(&mut &[0u8, 0, 0, 9, b'{'][..]),
            Err(ProtocolError::Io(_))
        ));
    }

    #[test]
    fn other_versions_are_named_not_misparsed() {
        // A newer peer (and an older one: version 1 had no `remote_session` error kind).
        for found in [PROTOCOL_VERSION + 1, 1] {
            other_version_is_named(found);
        }
    }

    fn other_version_is_named(found: u32) {
        let body =
            format!(r#"{{"version":{found},"body":{{"type":"assess","user":"a","new_field":1}}}}"#);
        match decode_request(body.as_bytes()) {
            Err(e @ ProtocolError::UnsupportedVersion { .. }) => {
                assert!(e.to_string().contains(&format!("version {found}")), "{e}");
                assert_eq!(
                    error_reply(&e).body,
                    ResponseBody::Error {
                        kind: ErrorKind::UnsupportedVersion,
                        message: e.to_string()
                    }
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_fields_types_and_garbage_are_malformed() {
        let v = PROTOCOL_VERSION;
        for body in [
            format!(r#"{{"version":{v},"body":{{"type":"assess","user":"a","extra":true}}}}"#),
            format!(r#"{{"version":{v},"body":{{"type":"sudo_me","user":"a"}}}}"#),
            format!(r#"{{"version":{v},"body":{{"type":"assess"}}}}"#),
            format!(r#"{{"version":{v}}}"#),
        ]
        .iter()
        .map(|s| s.as_bytes())
        .chain([&b"\xff\xfe garbage"[..], b""])
        {
            assert!(
                matches!(decode_request(body), Err(ProtocolError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn user_names() {
        for ok in ["alice", "bob.smith", "user_1", "a@example.com"] {
            assert!(valid_user_name(ok), "{ok}");
        }
        for bad in ["", "-rf", "a/b", "a b", "a:b", "é", &"x".repeat(257)] {
            assert!(!valid_user_name(bad), "{bad}");
        }
    }
}
