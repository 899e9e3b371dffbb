//! The decision, as a pure function of the daemon's answer, the options, the user PAM is
//! authenticating and the module's clock. Kept free of I/O so every case can be tested.
//!
//! The rule: `Success` only for a fresh, positive `Trusted` verdict about exactly the
//! user being authenticated; `Ignore` (ask for the strong factor) for everything else.
//! There is no "deny": behaviour can skip a step-up, never lock anybody out.

use habitus_protocol::{
    AssessmentReply, ErrorKind, Response, ResponseBody, TrustState, PROTOCOL_VERSION,
};

use crate::options::Options;

/// How far the daemon's clock may run ahead of the module's before a verdict is
/// suspicious (it would otherwise stay "fresh" for longer than `max_age_s`).
pub const MAX_CLOCK_SKEW_MS: u64 = 5_000;

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Skip the step-up: behaviour vouches for the user.
    Success,
    /// Let the rest of the stack decide (it asks for the strong factor).
    Ignore(IgnoreReason),
}

/// Why the module stood aside. The variants group into what the user is told
/// ([`IgnoreReason::user_message`]); the log keeps the details.
#[derive(Clone, Debug, PartialEq)]
pub enum IgnoreReason {
    /// The module line has an option it does not accept.
    BadOptions(String),
    /// `services=` does not list this service.
    ServiceNotCovered(String),
    /// The login comes from another host (`PAM_RHOST` is set), or habitusd found the
    /// caller or the user in a remote session (its reason).
    RemoteSession(String),
    /// habitusd found the asking terminal elsewhere than in front of the seat it
    /// measures (another virtual console, another seat, a session in the background).
    NotAtSeat(String),
    /// A non-root program authenticates someone other than the user running it
    /// (`su bob` run by alice): the keyboard's verdict is about bob's session, not about
    /// the person asking.
    CallerIsAnotherUser {
        caller_uid: u32,
        user: String,
    },
    /// PAM could not say who is authenticating, or the name is not one habitusd accepts.
    NoUser(String),
    /// habitusd could not be asked or did not answer usably.
    Unavailable(String),
    /// habitusd answered an error.
    DaemonError {
        kind: ErrorKind,
        message: String,
    },
    /// habitusd answered something other than an assessment.
    UnexpectedAnswer(String),
    /// The answer speaks of another user than the one asked about.
    OtherUser {
        expected: String,
        got: String,
    },
    /// A trust value that is not a number in [0, 100].
    MalformedTrust(f64),
    Unenrolled,
    Learning,
    Uncertain,
    Drift,
    /// Trusted state, but below `min_trust`.
    TrustTooLow {
        trust: f64,
        min_trust: f64,
    },
    /// No evidence at all in this session.
    NoEvidence,
    /// The last scored window is older than `max_age_s`.
    StaleEvidence {
        age_ms: u64,
        max_age_ms: u64,
    },
    /// The verdict itself is older than `max_age_s`.
    StaleVerdict {
        age_ms: u64,
        max_age_ms: u64,
    },
    /// The verdict claims a time too far in the module's future.
    FutureVerdict {
        ahead_ms: u64,
    },
    /// The module panicked (a bug): never trust what it was doing.
    Panic,
}

impl IgnoreReason {
    /// The one line shown to the user (`PAM_TEXT_INFO`), or `None` when nothing
    /// Habitus-specific happened (the administrator chose not to use it here).
    pub fn user_message(&self) -> Option<&'static str> {
        use IgnoreReason::*;
        Some(match self {
            ServiceNotCovered(_) => return None,
            RemoteSession(_) => "Habitus: remote session; please use your second factor.",
            NotAtSeat(_) => {
                "Habitus: this is not the console in use; please use your second factor."
            }
            CallerIsAnotherUser { .. } => {
                "Habitus: authenticating as another user; please use your second factor."
            }
            Drift | TrustTooLow { .. } => {
                "Habitus: your behaviour has drifted from your profile; please use your second factor."
            }
            Uncertain => {
                "Habitus: your behaviour does not match your profile clearly enough; please use your second factor."
            }
            Learning => "Habitus: still learning your behaviour; please use your second factor.",
            Unenrolled
            | DaemonError {
                kind: ErrorKind::UnknownUser,
                ..
            } => "Habitus: no behaviour profile for you yet; please use your second factor.",
            NoEvidence | StaleEvidence { .. } => {
                "Habitus: no recent activity to judge your behaviour by; please use your second factor."
            }
            BadOptions(_)
            | NoUser(_)
            | Unavailable(_)
            | DaemonError { .. }
            | UnexpectedAnswer(_)
            | OtherUser { .. }
            | MalformedTrust(_)
            | StaleVerdict { .. }
            | FutureVerdict { .. }
            | Panic => "Habitus: behaviour check unavailable; please use your second factor.",
        })
    }

    /// Whether the administrator should look at this (logged as an error rather than as
    /// a routine outcome).
    pub fn is_fault(&self) -> bool {
        use IgnoreReason::*;
        matches!(
            self,
            BadOptions(_)
                | Unavailable(_)
                | DaemonError { .. }
                | UnexpectedAnswer(_)
                | OtherUser { .. }
                | MalformedTrust(_)
                | StaleVerdict { .. }
                | FutureVerdict { .. }
                | Panic
        )
    }

    /// A one-line description for syslog.
    pub fn describe(&self) -> String {
        use IgnoreReason::*;
        match self {
            BadOptions(e) => format!("bad module options: {e}"),
            ServiceNotCovered(s) => format!("service {s:?} not in services="),
            RemoteSession(why) => format!("remote session: {why}"),
            NotAtSeat(why) => format!("not at the seat: {why}"),
            CallerIsAnotherUser { caller_uid, user } => {
                format!("caller uid {caller_uid} is not {user:?}")
            }
            NoUser(why) => format!("no usable user: {why}"),
            Unavailable(why) => format!("habitusd unavailable: {why}"),
            DaemonError { kind, message } => format!("habitusd error {kind:?}: {message}"),
            UnexpectedAnswer(what) => format!("unexpected answer from habitusd: {what}"),
            OtherUser { expected, got } => {
                format!("verdict is about {got:?}, not {expected:?}")
            }
            MalformedTrust(t) => format!("malformed trust value {t}"),
            Unenrolled => "user not enrolled".into(),
            Learning => "still learning".into(),
            Uncertain => "behaviour uncertain".into(),
            Drift => "behaviour drifted".into(),
            TrustTooLow { trust, min_trust } => {
                format!("trust {trust} below min_trust {min_trust}")
            }
            NoEvidence => "no evidence in this session".into(),
            StaleEvidence { age_ms, max_age_ms } => {
                format!("evidence {age_ms} ms old, limit {max_age_ms} ms")
            }
            StaleVerdict { age_ms, max_age_ms } => {
                format!("verdict {age_ms} ms old, limit {max_age_ms} ms")
            }
            FutureVerdict { ahead_ms } => {
                format!("verdict {ahead_ms} ms in the future (clock skew?)")
            }
            Panic => "internal error (panic)".into(),
        }
    }
}

/// Judges habitusd's answer to `Assess { user: expected_user }` at wall-clock time
/// `now_ms` (milliseconds since the Unix epoch).
pub fn decide(response: &Response, options: &Options, expected_user: &str, now_ms: u64) -> Verdict {
    match judge(response, options, expected_user, now_ms) {
        Ok(()) => Verdict::Success,
        Err(reason) => Verdict::Ignore(reason),
    }
}

fn judge(
    response: &Response,
    options: &Options,
    expected_user: &str,
    now_ms: u64,
) -> Result<(), IgnoreReason> {
    if response.version != PROTOCOL_VERSION {
        return Err(IgnoreReason::UnexpectedAnswer(format!(
            "protocol version {}",
            response.version
        )));
    }
    let reply = match &response.body {
        ResponseBody::Assessment(reply) => reply,
        ResponseBody::Error {
            kind: ErrorKind::RemoteSession,
            message,
        } => return Err(IgnoreReason::RemoteSession(printable(message))),
        ResponseBody::Error {
            kind: ErrorKind::NotAtSeat,
            message,
        } => return Err(IgnoreReason::NotAtSeat(printable(message))),
        ResponseBody::Error { kind, message } => {
            return Err(IgnoreReason::DaemonError {
                kind: *kind,
                message: printable(message),
            })
        }
        other => return Err(IgnoreReason::UnexpectedAnswer(body_name(other).into())),
    };
    judge_assessment(reply, options, expected_user, now_ms)
}

fn judge_assessment(
    reply: &AssessmentReply,
    options: &Options,
    expected_user: &str,
    now_ms: u64,
) -> Result<(), IgnoreReason> {
    // Exact bytes: no case folding, trimming or normalisation.
    if reply.user.as_bytes() != expected_user.as_bytes() {
        return Err(IgnoreReason::OtherUser {
            expected: expected_user.into(),
            got: printable(&reply.user),
        });
    }
    match reply.state {
        TrustState::Trusted => {}
        TrustState::Unenrolled => return Err(IgnoreReason::Unenrolled),
        TrustState::Learning => return Err(IgnoreReason::Learning),
        TrustState::Uncertain => return Err(IgnoreReason::Uncertain),
        TrustState::Drift => return Err(IgnoreReason::Drift),
    }
    if !reply.trust.is_finite() || !(0.0..=100.0).contains(&reply.trust) {
        return Err(IgnoreReason::MalformedTrust(reply.trust));
    }
    if reply.trust < options.min_trust {
        return Err(IgnoreReason::TrustTooLow {
            trust: reply.trust,
            min_trust: options.min_trust,
        });
    }
    let max_age_ms = options.max_age_s.saturating_mul(1000);
    match reply.evidence_age_ms {
        None => return Err(IgnoreReason::NoEvidence),
        Some(age_ms) if age_ms > max_age_ms => {
            return Err(IgnoreReason::StaleEvidence { age_ms, max_age_ms })
        }
        Some(_) => {}
    }
    if reply.evaluated_at_ms > now_ms {
        let ahead_ms = reply.evaluated_at_ms - now_ms;
        if ahead_ms > MAX_CLOCK_SKEW_MS {
            return Err(IgnoreReason::FutureVerdict { ahead_ms });
        }
    } else {
        let age_ms = now_ms - reply.evaluated_at_ms;
        if age_ms > max_age_ms {
            return Err(IgnoreReason::StaleVerdict { age_ms, max_age_ms });
        }
    }
    Ok(())
}

/// The guards that apply before habitusd is asked at all: the service must be covered
/// by `services=`, and the login must be local. For a remote login (`PAM_RHOST` set and
/// non-empty) the local keyboard and mouse say nothing about the person on the other end,
/// so even a Trusted verdict for the local session must not skip their step-up.
pub fn context_guard(
    options: &Options,
    service: &[u8],
    rhost: Option<&[u8]>,
) -> Result<(), IgnoreReason> {
    if !options.covers_service(service) {
        return Err(IgnoreReason::ServiceNotCovered(printable(
            &String::from_utf8_lossy(service),
        )));
    }
    match rhost {
        Some(host) if !host.is_empty() => Err(IgnoreReason::RemoteSession(format!(
            "from {}",
            printable(&String::from_utf8_lossy(host))
        ))),
        _ => Ok(()),
    }
}

/// Who may benefit from a verdict: root-run services (login, display managers, which
/// authenticate on behalf of the person at the seat) and a user authenticating as
/// themselves (sudo, screen lockers). A non-root caller authenticating as *another* user
/// (`su bob` by alice, whose real uid stays alice's) is refused, as is a user name that
/// does not resolve to a uid.
pub fn caller_guard(
    caller_uid: u32,
    user_uid: Option<u32>,
    user: &str,
) -> Result<(), IgnoreReason> {
    if caller_uid == 0 || user_uid == Some(caller_uid) {
        return Ok(());
    }
    Err(IgnoreReason::CallerIsAnotherUser {
        caller_uid,
        user: printable(user),
    })
}

/// A daemon-supplied string made safe for one log line: control characters replaced,
/// length bounded.
pub fn printable(s: &str) -> String {
    const LIMIT: usize = 200;
    let mut out: String = s
        .chars()
        .take(LIMIT)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > LIMIT {
        out.push('…');
    }
    out
}

fn body_name(body: &ResponseBody) -> &'static str {
    match body {
        ResponseBody::Assessment(_) => "assessment",
        ResponseBody::Done { .. } => "done",
        ResponseBody::Status { .. } => "status",
        ResponseBody::Export { .. } => "export",
        ResponseBody::Error { .. } => "error",
    }
}

#[cfg(test)]
mod caller_tests {
    use super::*;

    #[test]
    fn only_root_or_the_user_themselves_may_benefit() {
        assert_eq!(caller_guard(0, Some(1000), "alice"), Ok(()));
        assert_eq!(caller_guard(1000, Some(1000), "alice"), Ok(()));
        let refused = caller_guard(1000, Some(1001), "bob").unwrap_err();
        assert!(matches!(
            refused,
            IgnoreReason::CallerIsAnotherUser {
                caller_uid: 1000,
                ..
            }
        ));
        assert!(refused.user_message().unwrap().contains("another user"));
        assert!(caller_guard(1000, None, "ghost").is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use habitus_protocol::ModalityStatus;

    const NOW: u64 = 1_700_000_000_000;

    fn trusted(user: &str) -> AssessmentReply {
        AssessmentReply {
            user: user.into(),
            state: TrustState::Trusted,
            trust: 99.0,
            fused_llr: 4.2,
            evidence_age_ms: Some(2_000),
            evaluated_at_ms: NOW - 100,
            modalities: vec![ModalityStatus {
                plugin: "keystroke".into(),
                enrolled: true,
                enrol_windows: 40,
                enrol_needed: 40,
                last_llr: Some(3.1),
            }],
        }
    }

    fn decide_reply(reply: AssessmentReply) -> Verdict {
        decide(
            &Response::new(ResponseBody::Assessment(reply)),
            &Options::default(),
            "alice",
            NOW,
        )
    }

    fn ignored(verdict: Verdict) -> IgnoreReason {
        match verdict {
            Verdict::Ignore(reason) => reason,
            Verdict::Success => panic!("expected Ignore, got Success"),
        }
    }

    #[test]
    fn fresh_trusted_verdict_for_the_user_succeeds() {
        assert_eq!(decide_reply(trusted("alice")), Verdict::Success);
    }

    #[test]
    fn other_users_never_count() {
        for other in ["bob", "Alice", "alice ", " alice", "alice\0", "alicE", ""] {
            let reason = ignored(decide_reply(trusted(other)));
            assert!(
                matches!(reason, IgnoreReason::OtherUser { .. }),
                "{other:?}: {reason:?}"
            );
            assert!(reason.is_fault());
        }
    }

    #[test]
    fn every_non_trusted_state_is_ignored() {
        for (state, expected) in [
            (TrustState::Unenrolled, IgnoreReason::Unenrolled),
            (TrustState::Learning, IgnoreReason::Learning),
            (TrustState::Uncertain, IgnoreReason::Uncertain),
            (TrustState::Drift, IgnoreReason::Drift),
        ] {
            let mut reply = trusted("alice");
            reply.state = state;
            // Even with perfect trust and fresh evidence.
            reply.trust = 100.0;
            assert_eq!(ignored(decide_reply(reply)), expected);
        }
    }

    #[test]
    fn trust_must_reach_min_trust_and_be_a_number() {
        let mut reply = trusted("alice");
        reply.trust = 95.0;
        assert_eq!(decide_reply(reply.clone()), Verdict::Success);
        reply.trust = 94.99;
        assert!(matches!(
            ignored(decide_reply(reply.clone())),
            IgnoreReason::TrustTooLow { .. }
        ));
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 100.5, -1.0] {
            reply.trust = bad;
            assert!(matches!(
                ignored(decide_reply(reply.clone())),
                IgnoreReason::MalformedTrust(_)
            ));
        }
        let strict = Options {
            min_trust: 99.5,
            ..Options::default()
        };
        let verdict = decide(
            &Response::new(ResponseBody::Assessment(trusted("alice"))),
            &strict,
            "alice",
            NOW,
        );
        assert!(matches!(ignored(verdict), IgnoreReason::TrustTooLow { .. }));
    }

    #[test]
    fn evidence_must_exist_and_be_fresh() {
        let mut reply = trusted("alice");
        reply.evidence_age_ms = None;
        assert_eq!(
            ignored(decide_reply(reply.clone())),
            IgnoreReason::NoEvidence
        );
        reply.evidence_age_ms = Some(120_000);
        assert_eq!(decide_reply(reply.clone()), Verdict::Success);
        reply.evidence_age_ms = Some(120_001);
        assert_eq!(
            ignored(decide_reply(reply.clone())),
            IgnoreReason::StaleEvidence {
                age_ms: 120_001,
                max_age_ms: 120_000
            }
        );
        reply.evidence_age_ms = Some(u64::MAX);
        assert!(matches!(
            ignored(decide_reply(reply)),
            IgnoreReason::StaleEvidence { .. }
        ));
    }

    #[test]
    fn verdict_must_be_recent_and_not_from_the_future() {
        let mut reply = trusted("alice");
        reply.evaluated_at_ms = NOW - 120_000;
        assert_eq!(decide_reply(reply.clone()), Verdict::Success);
        reply.evaluated_at_ms = NOW - 120_001;
        assert!(matches!(
            ignored(decide_reply(reply.clone())),
            IgnoreReason::StaleVerdict { .. }
        ));
        reply.evaluated_at_ms = 0;
        assert!(matches!(
            ignored(decide_reply(reply.clone())),
            IgnoreReason::StaleVerdict { .. }
        ));
        reply.evaluated_at_ms = NOW + 5_000;
        assert_eq!(decide_reply(reply.clone()), Verdict::Success);
        reply.evaluated_at_ms = NOW + 5_001;
        assert_eq!(
            ignored(decide_reply(reply.clone())),
            IgnoreReason::FutureVerdict { ahead_ms: 5_001 }
        );
        reply.evaluated_at_ms = u64::MAX;
        assert!(matches!(
            ignored(decide_reply(reply)),
            IgnoreReason::FutureVerdict { .. }
        ));
    }

    #[test]
    fn max_age_option_moves_both_limits() {
        let short = Options {
            max_age_s: 1,
            ..Options::default()
        };
        let verdict = |reply: AssessmentReply| {
            decide(
                &Response::new(ResponseBody::Assessment(reply)),
                &short,
                "alice",
                NOW,
            )
        };
        let mut reply = trusted("alice");
        reply.evidence_age_ms = Some(1_000);
        assert_eq!(verdict(reply.clone()), Verdict::Success);
        // Evidence 2 s old: stale under max_age_s=1.
        assert!(matches!(
            ignored(verdict(trusted("alice"))),
            IgnoreReason::StaleEvidence { .. }
        ));
        reply.evaluated_at_ms = NOW - 1_001;
        assert!(matches!(
            ignored(verdict(reply)),
            IgnoreReason::StaleVerdict { .. }
        ));
    }

    #[test]
    fn errors_and_other_answers_are_ignored() {
        let options = Options::default();
        let error = Response::error(ErrorKind::UnknownUser, "no such user\nforged log line");
        let reason = ignored(decide(&error, &options, "alice", NOW));
        assert_eq!(
            reason,
            IgnoreReason::DaemonError {
                kind: ErrorKind::UnknownUser,
                message: "no such user?forged log line".into()
            }
        );
        assert_eq!(
            reason.user_message(),
            Some("Habitus: no behaviour profile for you yet; please use your second factor.")
        );
        // habitusd withholds the verdict for a remote session: told as such, and a
        // routine outcome, not a fault for the administrator.
        let remote = Response::error(
            ErrorKind::RemoteSession,
            "assessment refused: alice has remote logind session 9 open",
        );
        let reason = ignored(decide(&remote, &options, "alice", NOW));
        assert_eq!(
            reason,
            IgnoreReason::RemoteSession(
                "assessment refused: alice has remote logind session 9 open".into()
            )
        );
        assert_eq!(
            reason.user_message(),
            Some("Habitus: remote session; please use your second factor.")
        );
        assert!(!reason.is_fault());
        // Likewise for a terminal that is not in front of the seat habitusd measures.
        let elsewhere = Response::error(
            ErrorKind::NotAtSeat,
            "assessment refused: asked for tty2; the console in front of seat0 is tty1",
        );
        let reason = ignored(decide(&elsewhere, &options, "alice", NOW));
        assert_eq!(
            reason,
            IgnoreReason::NotAtSeat(
                "assessment refused: asked for tty2; the console in front of seat0 is tty1".into()
            )
        );
        assert_eq!(
            reason.user_message(),
            Some("Habitus: this is not the console in use; please use your second factor.")
        );
        assert!(!reason.is_fault());
        let done = Response::new(ResponseBody::Done {
            message: "ok".into(),
        });
        assert_eq!(
            ignored(decide(&done, &options, "alice", NOW)),
            IgnoreReason::UnexpectedAnswer("done".into())
        );
        let mut future = Response::new(ResponseBody::Assessment(trusted("alice")));
        future.version = PROTOCOL_VERSION + 1;
        assert!(matches!(
            ignored(decide(&future, &options, "alice", NOW)),
            IgnoreReason::UnexpectedAnswer(_)
        ));
    }

    #[test]
    fn every_reason_but_service_exclusion_tells_the_user() {
        assert_eq!(
            IgnoreReason::Drift.user_message(),
            Some("Habitus: your behaviour has drifted from your profile; please use your second factor.")
        );
        assert_eq!(
            IgnoreReason::Learning.user_message(),
            Some("Habitus: still learning your behaviour; please use your second factor.")
        );
        assert_eq!(
            IgnoreReason::Unavailable("x".into()).user_message(),
            Some("Habitus: behaviour check unavailable; please use your second factor.")
        );
        assert_eq!(
            IgnoreReason::RemoteSession("h".into()).user_message(),
            Some("Habitus: remote session; please use your second factor.")
        );
        assert_eq!(
            IgnoreReason::ServiceNotCovered("su".into()).user_message(),
            None
        );
    }

    #[test]
    fn remote_sessions_and_uncovered_services_are_ignored_before_asking() {
        let all = Options::default();
        assert_eq!(context_guard(&all, b"sudo", None), Ok(()));
        // An empty PAM_RHOST is what some local programs set: still local.
        assert_eq!(context_guard(&all, b"sudo", Some(b"")), Ok(()));
        let reason = context_guard(&all, b"sshd", Some(b"203.0.113.7")).unwrap_err();
        assert_eq!(
            reason,
            IgnoreReason::RemoteSession("from 203.0.113.7".into())
        );
        assert!(!reason.is_fault());
        let sudo_only = Options {
            services: Some(vec!["sudo".into()]),
            ..Options::default()
        };
        assert_eq!(context_guard(&sudo_only, b"sudo", None), Ok(()));
        assert_eq!(
            context_guard(&sudo_only, b"su", None),
            Err(IgnoreReason::ServiceNotCovered("su".into()))
        );
        // The service check comes first: a remote login to an uncovered service is silent.
        assert!(matches!(
            context_guard(&sudo_only, b"sshd", Some(b"host")),
            Err(IgnoreReason::ServiceNotCovered(_))
        ));
    }

    #[test]
    fn printable_strips_control_characters_and_bounds_length() {
        assert_eq!(printable("a\tb\nc"), "a?b?c");
        let long = "x".repeat(500);
        assert_eq!(printable(&long).chars().count(), 201);
    }
}
