//! The exact JSON of every message, pinned. A failing snapshot means the wire format
//! changed: if that was intended, bump `PROTOCOL_VERSION` and re-run with
//! `UPDATE_SNAPSHOTS=1` to rewrite the files (then review the diff).

use std::path::PathBuf;

use habitus_protocol::*;

fn check(name: &str, json: String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.json"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, format!("{json}\n")).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_SNAPSHOTS=1 creates it)", path.display()));
    assert_eq!(
        expected.trim_end(),
        json,
        "wire format of `{name}` changed; bump PROTOCOL_VERSION if intended"
    );
}

fn request(name: &str, body: RequestBody) {
    let req = Request::new(body);
    let json = serde_json::to_string_pretty(&req).unwrap();
    assert_eq!(
        decode_request(json.as_bytes()).unwrap(),
        req,
        "{name} round trip"
    );
    check(name, json);
}

fn response(name: &str, body: ResponseBody) {
    let resp = Response::new(body);
    let json = serde_json::to_string_pretty(&resp).unwrap();
    assert_eq!(
        decode_response(json.as_bytes()).unwrap(),
        resp,
        "{name} round trip"
    );
    check(name, json);
}

fn events() -> Vec<WireEvent> {
    vec![
        WireEvent::key(WireEventKind::KeyDown, 1_000_000, 30),
        WireEvent::key(WireEventKind::KeyUp, 1_085_000, 30),
        WireEvent {
            t_us: 1_100_000,
            kind: WireEventKind::PointerMove,
            code: 0,
            x: 512.5,
            y: 300.0,
            pressure: 0.0,
            area: 0.0,
        },
        WireEvent {
            t_us: 1_200_000,
            kind: WireEventKind::TouchDown,
            code: 1,
            x: 10.0,
            y: 20.0,
            pressure: 0.5,
            area: 0.25,
        },
    ]
}

fn assessment() -> AssessmentReply {
    AssessmentReply {
        user: "alice".into(),
        state: TrustState::Trusted,
        trust: 97.5,
        fused_llr: 4.25,
        evidence_age_ms: Some(1200),
        evaluated_at_ms: 1_795_000_000_000,
        modalities: vec![ModalityStatus {
            plugin: "keystroke".into(),
            enrolled: true,
            enrol_windows: 10,
            enrol_needed: 10,
            last_llr: Some(1.5),
        }],
    }
}

#[test]
fn requests() {
    request(
        "request_assess",
        RequestBody::Assess {
            user: "alice".into(),
            tty: Some("/dev/pts/3".into()),
        },
    );
    request(
        "request_assess_no_tty",
        RequestBody::Assess {
            user: "alice".into(),
            tty: None,
        },
    );
    request(
        "request_session_open",
        RequestBody::SessionOpen {
            user: "alice".into(),
            service: "login".into(),
            tty: Some("tty2".into()),
            rhost: None,
        },
    );
    request(
        "request_session_close",
        RequestBody::SessionClose {
            user: "alice".into(),
            service: "login".into(),
            tty: Some("tty2".into()),
        },
    );
    request(
        "request_ingest",
        RequestBody::Ingest {
            user: "alice".into(),
            events: events(),
        },
    );
    request("request_status", RequestBody::Status { user: None });
    request(
        "request_enroll",
        RequestBody::Enroll {
            user: "alice".into(),
            events: events()[..2].to_vec(),
        },
    );
    request(
        "request_forget",
        RequestBody::Forget {
            user: "alice".into(),
        },
    );
    request(
        "request_export",
        RequestBody::Export {
            user: "alice".into(),
        },
    );
}

#[test]
fn responses() {
    response(
        "response_assessment",
        ResponseBody::Assessment(assessment()),
    );
    response(
        "response_done",
        ResponseBody::Done {
            message: "enrolled alice: keystroke from 12 windows".into(),
        },
    );
    response(
        "response_status",
        ResponseBody::Status {
            users: vec![UserStatus {
                user: "alice".into(),
                sessions: vec!["login:tty2".into()],
                forgotten: false,
                assessment: assessment(),
            }],
        },
    );
    response(
        "response_export",
        ResponseBody::Export {
            user: "alice".into(),
            data: serde_json::json!({"profiles": []}),
        },
    );
    response(
        "response_error",
        ResponseBody::Error {
            kind: ErrorKind::PermissionDenied,
            message: "uid 1000 may not assess bob".into(),
        },
    );
    response(
        "response_error_remote_session",
        ResponseBody::Error {
            kind: ErrorKind::RemoteSession,
            message: "assessment refused: alice has remote logind session 9 open".into(),
        },
    );
    response(
        "response_error_not_at_seat",
        ResponseBody::Error {
            kind: ErrorKind::NotAtSeat,
            message: "assessment refused: asked for tty2; the console in front of seat0 is tty1"
                .into(),
        },
    );
}
