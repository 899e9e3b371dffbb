//! habitusd's state and request handling, with no I/O of its own: the socket server,
//! evdev readers and replay sources feed it, and tests drive it directly.
//!
//! Per user it holds one live [`Session`] (engine fusion + trust), the windows being
//! collected for enrolment while the user is still learning, and the bindings announced
//! by `session optional pam_habitus.so`. Profiles live in the encrypted [`ProfileStore`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use habitus_engine::{
    AdaptOutcome, HostError, KeyHasher, PluginInstance, ProfileStore, Session, State, StoreError,
};
use habitus_plugin::{Event, EventKind, RVec};
use habitus_protocol::{
    valid_user_name, AssessmentReply, ErrorKind, ModalityStatus, RequestBody, Response,
    ResponseBody, TrustState, UserStatus, WireEvent, WireEventKind,
};

use crate::config::{Config, DriftAction};
use crate::peer::{remote_session, remote_session_users, user_name, Peer};
use crate::seat::{not_at_seat, Asker, SeatFiles};

/// A loaded modality plugin and how habitusd uses it.
pub struct ModalityPlugin {
    pub name: String,
    pub instance: Arc<PluginInstance>,
    /// Events per window (scoring and enrolment).
    pub window_events: usize,
    /// Windows collected live before enrolling.
    pub enrol_windows: u32,
}

impl ModalityPlugin {
    fn consumes(&self, kind: EventKind) -> bool {
        self.instance.descriptor().event_kinds.contains(&kind)
    }
}

/// Windows being collected for a user who has no profile yet for one plugin.
#[derive(Default)]
struct Learner {
    window: Vec<Event>,
    windows: Vec<RVec<Event>>,
}

/// A PAM session announced by `pam_habitus.so`.
#[derive(Clone, Debug, PartialEq)]
struct Binding {
    user: String,
    service: String,
    tty: Option<String>,
    remote: bool,
}

impl Binding {
    fn label(&self) -> String {
        match &self.tty {
            Some(tty) => format!("{}:{tty}", self.service),
            None => self.service.clone(),
        }
    }
}

struct LiveUser {
    session: Session,
    /// Added to a collector's timestamps to put them on the daemon's clock.
    time_offset: Option<i64>,
    /// Added to local device events (already on the daemon's clock) while a collector's
    /// mapped clock has run ahead of ours: they go after what was fed, keeping their own
    /// spacing, instead of being rejected as going backwards. Zero once real time has
    /// caught up.
    device_offset: u64,
    last_t_us: u64,
    /// One per plugin (same order); only used while that plugin has no profile.
    learners: Vec<Learner>,
    /// When the last window was scored, by the daemon's clock. Evidence age is measured
    /// from arrival, not from the collector's timestamps: a replay sent faster than real
    /// time must not look fresh for longer than it is.
    last_evidence: Option<u64>,
    /// When input for this user last arrived, by the daemon's clock: a pause of
    /// `session.idle_reset_s` between arrivals (or before an `assess`) ends what earlier
    /// evidence vouched for, whatever times the events carry (a collector's clock may
    /// run ahead of ours).
    last_input_us: Option<u64>,
    /// Enrolment windows behind each plugin's profile (0: not enrolled).
    enrolled_windows: Vec<u32>,
    last_state: State,
    /// A non-root collector fed this session. Its events are scored (they can only
    /// lower trust usefully), but they never enrol, never adapt and never make the
    /// session `Trusted`: a user could otherwise type (or script) their own way past
    /// the step-up.
    self_reported: bool,
}

/// Where events came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// Local devices, root's collectors, configured replays.
    Trusted,
    /// A collector running as the user themselves.
    SelfReported,
}

/// Timestamps above 2^53 µs (285 years) are refused: they cannot be real, and staying
/// below keeps every offset computation far from overflow.
const MAX_T_US: u64 = 1 << 53;
/// Events a non-root caller may send in one `Ingest` (`habitus ingest` sends 20 at a
/// time; a few seconds of pointer motion is a few hundred).
const MAX_SELF_REPORTED_EVENTS: usize = 2000;

/// Counters for `status` and logs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub device_events_unbound: u64,
    pub adaptations_applied: u64,
    pub adaptations_refused_daily_limit: u64,
    /// Drift actions started (once per entry into `Drift`).
    pub drift_actions: u64,
}

/// What habitusd knows, and the rules for changing it.
pub struct Core {
    config: Config,
    plugins: Vec<ModalityPlugin>,
    store: ProfileStore,
    hasher: KeyHasher,
    users: BTreeMap<String, LiveUser>,
    /// Enrolment windows of users whose session closed before enough were collected:
    /// the count continues at their next session (memory only).
    stash: BTreeMap<String, Vec<Learner>>,
    /// Whether a user was erased with `forget` (never learned from again until an
    /// explicit enrol): the store's mark, which survives restarts, cached per user.
    forgotten: BTreeMap<String, bool>,
    bindings: Vec<Binding>,
    /// When each user was last seen with a remote logind session, by the daemon's clock
    /// ([`Core::observe_remote_sessions`]).
    remote_seen: BTreeMap<String, u64>,
    clock: DaemonClock,
    pub counters: Counters,
}

/// How a request failed: the reply's kind and message.
struct Refusal(ErrorKind, String);

impl Refusal {
    fn internal(context: &str, e: impl std::fmt::Display) -> Refusal {
        log::error(&format!("{context}: {e}"));
        Refusal(
            ErrorKind::Internal,
            format!("{context} failed (see habitusd's log)"),
        )
    }
}

type Handled = Result<ResponseBody, Refusal>;

impl Core {
    pub fn new(
        config: Config,
        plugins: Vec<ModalityPlugin>,
        store: ProfileStore,
        hasher: KeyHasher,
    ) -> Core {
        Core {
            config,
            plugins,
            store,
            hasher,
            users: BTreeMap::new(),
            stash: BTreeMap::new(),
            forgotten: BTreeMap::new(),
            bindings: Vec::new(),
            remote_seen: BTreeMap::new(),
            clock: DaemonClock::start(),
            counters: Counters::default(),
        }
    }

    /// The daemon's clock (device readers stamp events with it).
    pub fn clock(&self) -> DaemonClock {
        self.clock
    }

    /// The daemon's clock, in microseconds.
    pub fn now_us(&self) -> u64 {
        self.clock.now_us()
    }

    /// Notes which users have a remote logind session now (habitusd calls it every few
    /// seconds, and before every `assess`): a job started from an SSH session can outlive
    /// it (`systemd-run --user --on-active=…`, `at`, cron), so a user stays "remote" for
    /// `input.remote_hold_s` after their last remote session was seen.
    pub fn observe_remote_sessions(&mut self) {
        let users = remote_session_users(&self.config.input.logind_sessions);
        self.note_remote_users(&users);
    }

    /// [`Core::observe_remote_sessions`] with the sessions already read (`(user,
    /// session)` pairs, as [`remote_session_users`] gives them), so that the periodic
    /// look does not read files while holding the core.
    pub fn note_remote_users(&mut self, users: &[(String, String)]) {
        let now = self.now_us();
        for (user, _) in users {
            self.remote_seen.insert(user.clone(), now);
        }
    }

    /// Why no verdict about `user` may be given because of a remote session: one open
    /// now, or one seen within `input.remote_hold_s`.
    fn remote_user(&mut self, user: &str) -> Option<String> {
        let users = remote_session_users(&self.config.input.logind_sessions);
        self.note_remote_users(&users);
        if let Some((_, session)) = users.iter().find(|(u, _)| u == user) {
            return Some(format!("{user} has remote logind session {session} open"));
        }
        let hold_us = self.config.input.remote_hold_s.saturating_mul(1_000_000);
        let ago_us = self.now_us().saturating_sub(*self.remote_seen.get(user)?);
        (ago_us < hold_us).then(|| {
            format!(
                "{user} had a remote logind session {} s ago (input.remote_hold_s = {})",
                ago_us / 1_000_000,
                self.config.input.remote_hold_s
            )
        })
    }

    /// Whether input for `live` has paused for `session.idle_reset_s` by `now`.
    fn input_paused(idle_reset_s: Option<f64>, live: &LiveUser, now: u64) -> bool {
        match (idle_reset_s, live.last_input_us) {
            (Some(idle), Some(t)) => now.saturating_sub(t) >= (idle * 1e6) as u64,
            _ => false,
        }
    }

    /// Handles one request from `peer`. Never panics on input; every refusal is a reply.
    pub fn handle(&mut self, peer: &Peer, request: RequestBody) -> Response {
        let result = self
            .authorise(peer, &request)
            .and_then(|()| self.dispatch(peer, request));
        match result {
            Ok(body) => Response::new(body),
            Err(Refusal(kind, message)) => Response::error(kind, message),
        }
    }

    /// `SO_PEERCRED` rules: root may do anything; a user may assess, feed, inspect and
    /// export only their own session; everything else is root's.
    fn authorise(&self, peer: &Peer, request: &RequestBody) -> Result<(), Refusal> {
        if peer.uid == 0 {
            return Ok(());
        }
        let own = |user: &str, what: &str| {
            if peer.name.as_deref() == Some(user) {
                Ok(())
            } else {
                Err(Refusal(
                    ErrorKind::PermissionDenied,
                    format!("uid {} may not {what} user {user:?}", peer.uid),
                ))
            }
        };
        match request {
            RequestBody::Assess { user, .. } => own(user, "assess"),
            RequestBody::Ingest { user, .. } => own(user, "feed events for"),
            RequestBody::Export { user } => own(user, "export"),
            RequestBody::Status { user: Some(user) } => own(user, "read the status of"),
            RequestBody::Status { user: None } => Err(Refusal(
                ErrorKind::PermissionDenied,
                format!(
                    "uid {}: only root may list every user; ask for your own (habitus status USER)",
                    peer.uid
                ),
            )),
            RequestBody::SessionOpen { .. }
            | RequestBody::SessionClose { .. }
            | RequestBody::Enroll { .. }
            | RequestBody::Forget { .. } => Err(Refusal(
                ErrorKind::PermissionDenied,
                format!("uid {}: only root may do this", peer.uid),
            )),
        }
    }

    fn dispatch(&mut self, peer: &Peer, request: RequestBody) -> Handled {
        let user = match &request {
            RequestBody::Assess { user, .. }
            | RequestBody::SessionOpen { user, .. }
            | RequestBody::SessionClose { user, .. }
            | RequestBody::Ingest { user, .. }
            | RequestBody::Status { user: Some(user) }
            | RequestBody::Enroll { user, .. }
            | RequestBody::Forget { user }
            | RequestBody::Export { user } => Some(user.clone()),
            RequestBody::Status { user: None } => None,
        };
        if let Some(user) = &user {
            if !valid_user_name(user) {
                return Err(Refusal(
                    ErrorKind::BadRequest,
                    "not a valid user name".to_string(),
                ));
            }
        }
        match request {
            RequestBody::Assess { user, tty } => {
                if let Some(t) = &tty {
                    if t.is_empty() || t.len() > 64 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(Refusal(
                            ErrorKind::BadRequest,
                            "tty must be 1-64 printable ASCII characters".to_string(),
                        ));
                    }
                }
                let from_remote_process = peer
                    .pid
                    .and_then(|pid| remote_session(pid, &self.config.input.logind_sessions));
                if let Some(reason) = from_remote_process.or_else(|| self.remote_user(&user)) {
                    return Err(Refusal(
                        ErrorKind::RemoteSession,
                        format!("assessment refused: {reason}; local behaviour says nothing about a remote session"),
                    ));
                }
                // Over the socket only: the daemon's own callers (evaluations, tests)
                // have no process and no terminal.
                if let Some(pid) = peer.pid {
                    let input = &self.config.input;
                    let files = SeatFiles {
                        seat: &input.logind_seat,
                        sessions: &input.logind_sessions,
                        active_vt: &input.active_vt,
                    };
                    let asker = Asker::process(pid, &user, tty.as_deref());
                    if let Some(reason) = not_at_seat(&asker, files) {
                        return Err(Refusal(
                            ErrorKind::NotAtSeat,
                            format!("assessment refused: {reason}; the behaviour habitusd measures is seat0's"),
                        ));
                    }
                }
                self.assess(&user).map(ResponseBody::Assessment)
            }
            RequestBody::SessionOpen {
                user,
                service,
                tty,
                rhost,
            } => self.session_open(user, service, tty, rhost),
            RequestBody::SessionClose { user, service, tty } => {
                self.session_close(&user, &service, tty.as_deref())
            }
            RequestBody::Ingest { user, events } => {
                let source = if peer.uid == 0 {
                    Source::Trusted
                } else {
                    Source::SelfReported
                };
                if source == Source::SelfReported && events.len() > MAX_SELF_REPORTED_EVENTS {
                    // The core is shared by every user's verdicts: one user's huge batch
                    // must not hold it past pam_habitus's deadline for the others.
                    return Err(Refusal(
                        ErrorKind::BadRequest,
                        format!(
                            "{} events in one ingest: at most {MAX_SELF_REPORTED_EVENTS} per request; send smaller batches",
                            events.len()
                        ),
                    ));
                }
                self.ingest(&user, &events, source)
            }
            RequestBody::Status { user } => self.status(user.as_deref()),
            RequestBody::Enroll { user, events } => self.enroll(&user, &events),
            RequestBody::Forget { user } => self.forget(&user),
            RequestBody::Export { user } => self.export(&user),
        }
    }

    /// The live user, created from the store on first use. `None`: nothing is known
    /// about the user (no profile, no session, no evidence).
    fn live(&mut self, user: &str, create: bool) -> Result<Option<&mut LiveUser>, Refusal> {
        if !self.users.contains_key(user) {
            let stored = self
                .store
                .profiles(user)
                .map_err(|e| Refusal::internal("reading the profile store", e))?;
            if stored.is_empty() && !create {
                return Ok(None);
            }
            let mut enrolled_windows = vec![0; self.plugins.len()];
            let mut slots = Vec::new();
            for (i, p) in self.plugins.iter().enumerate() {
                let profile = stored.iter().find(|s| s.plugin == p.name);
                if let Some(s) = profile {
                    enrolled_windows[i] = s.windows.max(1);
                }
                slots.push((p.instance.clone(), profile.map(|s| s.blob.clone())));
            }
            let mut session = Session::new(&self.config.session, slots);
            // Someone else's unreadable profile must not keep this user from a verdict:
            // the comparison is then off, as `refresh_others` does.
            let others = self.others_of(user).unwrap_or_else(|e| {
                log::error(&format!(
                    "reading other users' profiles for {user} failed, comparison with them off: {e}"
                ));
                Vec::new()
            });
            for (i, profiles) in others.into_iter().enumerate() {
                session.set_others(i, profiles);
            }
            self.users.insert(
                user.to_string(),
                LiveUser {
                    session,
                    time_offset: None,
                    device_offset: 0,
                    last_t_us: 0,
                    last_evidence: None,
                    last_input_us: None,
                    learners: self.stash.remove(user).unwrap_or_else(|| {
                        self.plugins.iter().map(|_| Learner::default()).collect()
                    }),
                    enrolled_windows,
                    last_state: State::Learning,
                    self_reported: false,
                },
            );
        }
        Ok(self.users.get_mut(user))
    }

    /// Per plugin, the profiles of the users enrolled besides `user` (most recently
    /// updated first, at most `session.other_users`): a window of `user`'s that looks
    /// like one of them loses that evidence (engine `others`).
    fn others_of(&self, user: &str) -> Result<Vec<Vec<Vec<u8>>>, StoreError> {
        let limit = self.config.session.other_users;
        self.plugins
            .iter()
            .map(|p| {
                if limit == 0 {
                    return Ok(Vec::new());
                }
                Ok(self
                    .store
                    .others_profiles(&p.name, user, limit)?
                    .into_iter()
                    .map(|s| s.blob)
                    .collect())
            })
            .collect()
    }

    /// Gives every live session the current set of other users' profiles: after an
    /// enrolment (someone new to tell apart) and after `forget` (a forgotten user's
    /// profile leaves every session; a plugin's small cache of decoded profiles may keep
    /// a copy until newer ones push it out, as for the user's own profile). When the
    /// store cannot be read the comparison is switched off until the next refresh,
    /// never left holding a forgotten profile.
    fn refresh_others(&mut self) {
        let users: Vec<String> = self.users.keys().cloned().collect();
        for user in users {
            let others = match self.others_of(&user) {
                Ok(o) => o,
                Err(e) => {
                    log::error(&format!(
                        "reading other users' profiles for {user} failed, comparison with them off: {e}"
                    ));
                    vec![Vec::new(); self.plugins.len()]
                }
            };
            if let Some(live) = self.users.get_mut(&user) {
                for (i, profiles) in others.into_iter().enumerate() {
                    live.session.set_others(i, profiles);
                }
            }
        }
    }

    fn assess(&mut self, user: &str) -> Result<AssessmentReply, Refusal> {
        let now = self.now_us();
        let idle_reset_s = self.config.session.idle_reset_s;
        let plugins: Vec<(String, u32)> = self
            .plugins
            .iter()
            .map(|p| (p.name.clone(), p.enrol_windows))
            .collect();
        let Some(live) = self.live(user, false)? else {
            return Err(Refusal(
                ErrorKind::UnknownUser,
                format!("no profile and no session for {user:?}"),
            ));
        };
        // Asked during a pause in the input: whoever answers may not be who typed before
        // (their own keys may not even have arrived yet).
        if Self::input_paused(idle_reset_s, live, now) {
            live.session.pause();
        }
        let a = live.session.assess(now);
        let self_reported = live.self_reported;
        let collecting = live
            .learners
            .iter()
            .any(|l| !l.windows.is_empty() || !l.window.is_empty());
        let state = match a.state {
            State::Unenrolled if collecting => TrustState::Learning,
            State::Unenrolled => TrustState::Unenrolled,
            State::Learning => TrustState::Learning,
            State::Trusted if self_reported => TrustState::Uncertain,
            State::Trusted => TrustState::Trusted,
            State::Uncertain => TrustState::Uncertain,
            State::Drift => TrustState::Drift,
        };
        let modalities = plugins
            .iter()
            .enumerate()
            .map(|(i, (name, needed))| {
                let m = a.modalities.get(i);
                let enrolled = m.is_some_and(|m| m.enrolled);
                ModalityStatus {
                    plugin: name.clone(),
                    enrolled,
                    enrol_windows: if enrolled {
                        live.enrolled_windows[i]
                    } else {
                        live.learners[i].windows.len() as u32
                    },
                    enrol_needed: *needed,
                    last_llr: m.and_then(|m| m.last_score),
                }
            })
            .collect();
        Ok(AssessmentReply {
            user: user.to_string(),
            state,
            trust: a.trust,
            fused_llr: a.fused_llr,
            // The older of arrival age and event age: neither a fast replay nor a late
            // batch may look fresher than it is.
            evidence_age_ms: live.last_evidence.map(|t| {
                let arrival = now.saturating_sub(t) / 1000;
                arrival.max(a.evidence_age_us.unwrap_or(0) / 1000)
            }),
            evaluated_at_ms: unix_ms(),
            modalities,
        })
    }

    fn session_open(
        &mut self,
        user: String,
        service: String,
        tty: Option<String>,
        rhost: Option<String>,
    ) -> Handled {
        for (what, value) in [("service", Some(&service)), ("tty", tty.as_ref())] {
            if let Some(v) = value {
                if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(Refusal(
                        ErrorKind::BadRequest,
                        format!("{what} must be 1-64 printable ASCII characters"),
                    ));
                }
            }
        }
        if self.config.input.ignore_session_services.contains(&service) {
            return Ok(done(format!(
                "{service} sessions do not change who owns the local input (input.ignore_session_services)"
            )));
        }
        let remote = rhost.as_deref().is_some_and(|h| !h.is_empty());
        let binding = Binding {
            user: user.clone(),
            service,
            tty,
            remote,
        };
        log::info(&format!(
            "session opened: {user} on {}{}",
            binding.label(),
            if remote {
                " (remote: no local input bound)"
            } else {
                ""
            }
        ));
        self.bindings.retain(|b| b != &binding);
        self.bindings.push(binding);
        self.live(&user, true)?;
        Ok(done(format!("session of {user} registered")))
    }

    fn session_close(&mut self, user: &str, service: &str, tty: Option<&str>) -> Handled {
        let before = self.bindings.len();
        self.bindings
            .retain(|b| !(b.user == user && b.service == service && b.tty.as_deref() == tty));
        let removed = before - self.bindings.len();
        // The live evidence belongs to the login session: when the user's last session
        // ends, the next login starts from a fresh trust level.
        if removed > 0 && !self.bindings.iter().any(|b| b.user == user) {
            if let Some(live) = self.users.remove(user) {
                if live.learners.iter().any(|l| !l.windows.is_empty()) {
                    self.stash.insert(user.to_string(), live.learners);
                }
            }
        }
        log::info(&format!("session closed: {user} ({removed} binding(s))"));
        Ok(done(format!("{removed} session(s) of {user} closed")))
    }

    /// The user whose session currently owns the local input devices: logind's active
    /// user of seat0 when logind runs (it follows fast user switching, which makes no
    /// PAM call), else the most recently opened local PAM session.
    fn device_owner(&self) -> Option<String> {
        if let Ok(seat) = std::fs::read_to_string(&self.config.input.logind_seat) {
            return seat
                .lines()
                .find_map(|l| l.strip_prefix("ACTIVE_UID="))
                .and_then(|uid| uid.trim().parse::<u32>().ok())
                .and_then(user_name);
        }
        self.bindings
            .iter()
            .rev()
            .find(|b| !b.remote)
            .map(|b| b.user.clone())
    }

    /// Events read from local input devices (already on the daemon's clock, key codes
    /// already hashed at the source).
    pub fn device_events(&mut self, events: &[Event]) {
        match self.device_owner() {
            Some(user) => {
                let shifted = match self.live(&user, true) {
                    Ok(Some(live)) => Self::after_what_was_fed(live, events),
                    Ok(None) => return,
                    Err(Refusal(_, m)) => {
                        log::error(&format!("device events for {user}: {m}"));
                        return;
                    }
                };
                if let Err(Refusal(_, m)) = self.feed(&user, &shifted, Source::Trusted) {
                    log::error(&format!("device events for {user}: {m}"));
                }
            }
            None => self.counters.device_events_unbound += events.len() as u64,
        }
    }

    /// Device events placed after what `live` was already fed. A root collector's batches
    /// keep their own clock while it runs ahead of ours (up to an hour: a replay sent
    /// faster than real time keeps its pauses), and the typing that follows on the local
    /// keyboard would otherwise be rejected as going backwards until real time caught up.
    /// The shift keeps the events' spacing, which is all the plugins read; evidence age
    /// and pauses are measured on arrival. (The fusion window counts in event time, so
    /// with `idle_reset_s` off, evidence may count up to the shift longer: documented.)
    fn after_what_was_fed<'a>(
        live: &mut LiveUser,
        events: &'a [Event],
    ) -> std::borrow::Cow<'a, [Event]> {
        let Some(first) = events.first().map(|e| e.t_us) else {
            return events.into();
        };
        if first > live.last_t_us {
            live.device_offset = 0;
        } else if first.saturating_add(live.device_offset) <= live.last_t_us {
            live.device_offset = live.last_t_us + 1000 - first;
        }
        let offset = live.device_offset;
        if offset == 0 {
            // The usual case: the events' own times, no copy.
            return events.into();
        }
        events
            .iter()
            .map(|e| Event {
                t_us: e.t_us.saturating_add(offset),
                ..*e
            })
            .collect()
    }

    /// The hasher device readers use to turn key codes into key ids at the source.
    pub fn key_hasher(&self) -> KeyHasher {
        self.hasher.clone()
    }

    fn ingest(&mut self, user: &str, wire: &[WireEvent], source: Source) -> Handled {
        let mut events = self.convert(wire)?;
        if events.is_empty() {
            return Ok(done("0 events".to_string()));
        }
        let now = self.now_us() as i64;
        let Some(live) = self.live(user, true)? else {
            return Err(Refusal(ErrorKind::Internal, "no live session".into()));
        };
        // Put the collector's clock onto ours: keep the offset while its clock runs on
        // without going back (a replay sent faster than real time runs ahead of ours:
        // its pauses are kept, up to an hour ahead); otherwise re-anchor so the batch
        // ends now, or, if that would overlap what was already fed, so that it starts
        // 1 ms after it. Order within the batch is kept either way.
        let first = events[0].t_us as i64;
        let last = events[events.len() - 1].t_us as i64;
        let last_fed = live.last_t_us as i64;
        let consistent = live
            .time_offset
            .is_some_and(|off| first + off > last_fed && last + off <= now + 3_600_000_000);
        if !consistent {
            live.time_offset = Some((now - last).max(last_fed + 1000 - first));
        }
        let offset = live.time_offset.unwrap_or(0);
        for e in &mut events {
            e.t_us = (e.t_us as i64 + offset).max(1) as u64;
        }
        let before = live.session.assess(now as u64);
        self.feed(user, &events, source)?;
        let mut rejected = 0;
        if let Some(live) = self.users.get_mut(user) {
            let after = live.session.assess(now as u64);
            rejected = after.events_rejected - before.events_rejected;
            if after.windows_failed > before.windows_failed {
                log::error(&format!(
                    "{} window(s) of {user} could not be scored: {}",
                    after.windows_failed - before.windows_failed,
                    live.session
                        .last_error()
                        .map(|e| e.to_string())
                        .unwrap_or_default()
                ));
            }
        }
        Ok(done(format!(
            "{} events accepted, {rejected} rejected",
            events.len() as u64 - rejected
        )))
    }

    /// Feeds events (on the daemon's clock) to a user's live session and learners, then
    /// enrols any plugin whose learner has enough windows and applies adaptations.
    fn feed(&mut self, user: &str, events: &[Event], source: Source) -> Result<(), Refusal> {
        let now = self.now_us();
        self.live(user, true)?;
        // Only trusted sources teach the profile, and never for a user who asked to be
        // forgotten.
        let may_learn = source == Source::Trusted && !self.is_forgotten(user);
        let plugins = &self.plugins;
        let Some(live) = self.users.get_mut(user) else {
            return Ok(());
        };
        if source == Source::SelfReported {
            live.self_reported = true;
        }
        if Self::input_paused(self.config.session.idle_reset_s, live, now) {
            live.session.pause();
        }
        live.last_input_us = Some(now);
        let scored_before = live.session.assess(now).windows_scored;
        let mut ready = Vec::new();
        for e in events {
            live.session.push(*e);
            if e.t_us >= live.last_t_us {
                live.last_t_us = e.t_us;
            }
            for (i, p) in plugins.iter().enumerate() {
                if !may_learn || live.enrolled_windows[i] > 0 || !p.consumes(e.kind) {
                    continue;
                }
                let learner = &mut live.learners[i];
                learner.window.push(*e);
                if learner.window.len() >= p.window_events {
                    learner
                        .windows
                        .push(RVec::from(std::mem::take(&mut learner.window)));
                    if learner.windows.len() as u32 >= p.enrol_windows && !ready.contains(&i) {
                        ready.push(i);
                    }
                }
            }
        }
        if live.session.assess(now).windows_scored > scored_before {
            live.last_evidence = Some(now);
        }
        for i in ready {
            self.enrol_from_learner(user, i)?;
        }
        self.adapt(user);
        self.drift_check(user, now);
        Ok(())
    }

    fn enrol_from_learner(&mut self, user: &str, i: usize) -> Result<(), Refusal> {
        let Some(live) = self.users.get_mut(user) else {
            return Ok(());
        };
        let windows = std::mem::take(&mut live.learners[i].windows);
        let n = windows.len() as u32;
        let name = self.plugins[i].name.clone();
        match self.build_profile(i, &windows) {
            Ok(blob) => {
                if let Err(e) = self.store.put_profile(user, &name, &blob, n, unix_s()) {
                    // Keep the collected windows: the next window retries the enrolment.
                    if let Some(live) = self.users.get_mut(user) {
                        live.learners[i].windows = windows;
                    }
                    return Err(Refusal::internal("saving a profile", e));
                }
                if let Some(live) = self.users.get_mut(user) {
                    live.session.set_profile(i, blob);
                    live.enrolled_windows[i] = n;
                }
                log::info(&format!("enrolled {user}: {name} from {n} live windows"));
                self.refresh_others();
            }
            Err(e) => log::error(&format!("enrolling {user} ({name}) failed: {e}")),
        }
        Ok(())
    }

    fn build_profile(&self, i: usize, windows: &[RVec<Event>]) -> Result<Vec<u8>, HostError> {
        let p = &self.plugins[i];
        let population = match self.store.population(&p.name) {
            Ok(pop) => pop.unwrap_or_default(),
            Err(e) => {
                log::error(&format!(
                    "population for {}: {e}; enrolling without",
                    p.name
                ));
                Vec::new()
            }
        };
        p.instance.enroll(&population, windows)
    }

    /// Applies the session's clearly genuine windows to the templates, within the daily
    /// bound the store enforces. Failures are logged and never stop scoring.
    fn adapt(&mut self, user: &str) {
        let max_per_day = self.config.adaptation.max_per_day;
        let Some(live) = self.users.get_mut(user) else {
            return;
        };
        let candidates = live.session.take_adaptation_candidates();
        // Adapt only a session that is Trusted on trusted evidence: windows that score
        // well inside an Uncertain or drifting session may be an impostor's lucky ones.
        let now = self.clock.now_us();
        if max_per_day == 0
            || live.self_reported
            || live.session.assess(now).state != State::Trusted
        {
            return;
        }
        for c in candidates {
            let (Some(plugin), Some(profile)) = (
                live.session.plugin(c.slot).cloned(),
                live.session.profile(c.slot).map(<[u8]>::to_vec),
            ) else {
                continue;
            };
            let updated = match plugin.adapt(&profile, &c.window, c.score) {
                Ok(updated) if updated != profile => updated,
                Ok(_) => continue, // the plugin's own gate said no
                Err(e) => {
                    log::error(&format!("adapting {user}: {e}"));
                    continue;
                }
            };
            match self
                .store
                .adapt_profile(user, plugin.name(), &updated, unix_s(), max_per_day)
            {
                Ok(AdaptOutcome::Applied) => {
                    live.session.set_profile(c.slot, updated);
                    self.counters.adaptations_applied += 1;
                }
                Ok(AdaptOutcome::DailyLimitReached) => {
                    self.counters.adaptations_refused_daily_limit += 1;
                }
                Ok(AdaptOutcome::NotEnrolled) => {}
                Err(e) => log::error(&format!("storing an adaptation of {user}: {e}")),
            }
        }
    }

    /// Runs the configured drift action when a user's state enters `Drift`.
    fn drift_check(&mut self, user: &str, now: u64) {
        let Some(live) = self.users.get_mut(user) else {
            return;
        };
        let state = live.session.assess(now).state;
        let entered = state == State::Drift && live.last_state != State::Drift;
        live.last_state = state;
        if !entered {
            return;
        }
        self.counters.drift_actions += 1;
        match self.config.drift.action {
            DriftAction::None => {}
            DriftAction::Log => log::warn(&format!("behaviour of {user} has drifted")),
            DriftAction::Command => {
                log::warn(&format!(
                    "behaviour of {user} has drifted; running {:?}",
                    self.config.drift.command
                ));
                run_drift_command(&self.config.drift.command, user);
            }
        }
    }

    /// Wire events to plugin events: kinds mapped, key codes turned into keyed-hash key
    /// ids right here, so no code leaves this function.
    fn convert(&self, wire: &[WireEvent]) -> Result<Vec<Event>, Refusal> {
        let mut out = Vec::with_capacity(wire.len());
        let mut previous = 0;
        for (n, w) in wire.iter().enumerate() {
            if w.t_us > MAX_T_US || w.t_us < previous {
                return Err(Refusal(
                    ErrorKind::BadRequest,
                    format!(
                        "event {n}: time {} {}; nothing of this batch was ingested",
                        w.t_us,
                        if w.t_us > MAX_T_US {
                            "is out of range"
                        } else {
                            "goes back"
                        }
                    ),
                ));
            }
            previous = w.t_us;
            let kind = match w.kind {
                WireEventKind::KeyDown => EventKind::KEY_DOWN,
                WireEventKind::KeyUp => EventKind::KEY_UP,
                WireEventKind::PointerMove => EventKind::POINTER_MOVE,
                WireEventKind::ButtonDown => EventKind::BUTTON_DOWN,
                WireEventKind::ButtonUp => EventKind::BUTTON_UP,
                WireEventKind::Wheel => EventKind::WHEEL,
                WireEventKind::TouchDown => EventKind::TOUCH_DOWN,
                WireEventKind::TouchMove => EventKind::TOUCH_MOVE,
                WireEventKind::TouchUp => EventKind::TOUCH_UP,
            };
            let is_key = matches!(w.kind, WireEventKind::KeyDown | WireEventKind::KeyUp);
            let e = Event {
                t_us: w.t_us,
                kind,
                key: if is_key {
                    self.hasher.key_id(w.code)
                } else {
                    0
                },
                x: w.x,
                y: w.y,
                pressure: w.pressure,
                area: w.area,
                pointer: if is_key { 0 } else { w.code },
            };
            if !e.is_finite() {
                return Err(Refusal(
                    ErrorKind::BadRequest,
                    format!("event {n}: non-finite coordinate; nothing of this batch was ingested"),
                ));
            }
            out.push(e);
        }
        Ok(out)
    }

    fn status(&mut self, user: Option<&str>) -> Handled {
        let names: Vec<String> = match user {
            Some(u) => vec![u.to_string()],
            None => {
                let mut all = self
                    .store
                    .users()
                    .map_err(|e| Refusal::internal("listing users", e))?;
                all.extend(self.users.keys().cloned());
                all.sort();
                all.dedup();
                all
            }
        };
        let mut users = Vec::new();
        for name in names {
            let assessment = self.assess(&name)?;
            let sessions = self
                .bindings
                .iter()
                .filter(|b| b.user == name)
                .map(Binding::label)
                .collect();
            let forgotten = self.is_forgotten(&name);
            users.push(UserStatus {
                user: name,
                sessions,
                forgotten,
                assessment,
            });
        }
        Ok(ResponseBody::Status { users })
    }

    fn enroll(&mut self, user: &str, wire: &[WireEvent]) -> Handled {
        let events = self.convert(wire)?;
        let mut summary = Vec::new();
        let mut built = Vec::new();
        for (i, p) in self.plugins.iter().enumerate() {
            let mine: Vec<Event> = events
                .iter()
                .filter(|e| p.consumes(e.kind))
                .copied()
                .collect();
            let windows: Vec<RVec<Event>> = mine
                .chunks(p.window_events)
                .filter(|w| w.len() == p.window_events)
                .map(|w| RVec::from(w.to_vec()))
                .collect();
            if windows.is_empty() {
                continue;
            }
            let blob = self
                .build_profile(i, &windows)
                .map_err(|e| Refusal(ErrorKind::BadRequest, format!("enrolment refused: {e}")))?;
            built.push((i, p.name.clone(), blob, windows.len() as u32));
        }
        if built.is_empty() {
            return Err(Refusal(
                ErrorKind::BadRequest,
                "not one full window for any plugin: record more behaviour".into(),
            ));
        }
        // All plugins' profiles in one transaction: none is replaced unless all are.
        let rows: Vec<(&str, &[u8], u32)> = built
            .iter()
            .map(|(_, name, blob, n)| (name.as_str(), blob.as_slice(), *n))
            .collect();
        self.store
            .put_profiles(user, &rows, unix_s())
            .map_err(|e| Refusal::internal("saving a profile", e))?;
        for (_, name, _, n) in &built {
            summary.push(format!("{name} from {n} windows"));
        }
        // The live session (if any) continues with the new templates.
        if let Some(live) = self.users.get_mut(user) {
            for (i, _, blob, n) in built {
                live.session.set_profile(i, blob);
                live.enrolled_windows[i] = n;
                live.learners[i] = Learner::default();
            }
        }
        if let Err(e) = self.store.clear_forgotten(user) {
            // The profile is saved; only the mark stays (so live input still does not
            // teach): say so rather than fail the enrolment.
            log::warn(&format!(
                "enrolled {user}, but clearing the forgotten mark failed: {e}"
            ));
        } else {
            self.forgotten.insert(user.to_string(), false);
        }
        log::info(&format!("enrolled {user}: {}", summary.join(", ")));
        self.refresh_others();
        Ok(done(format!("enrolled {user}: {}", summary.join(", "))))
    }

    /// Whether `user` asked to be forgotten (store mark, cached). A store that cannot
    /// answer counts as "forgotten": learning is what a failure must not allow.
    fn is_forgotten(&mut self, user: &str) -> bool {
        if let Some(&f) = self.forgotten.get(user) {
            return f;
        }
        match self.store.is_forgotten(user) {
            Ok(f) => {
                self.forgotten.insert(user.to_string(), f);
                f
            }
            Err(e) => {
                log::warn(&format!("reading the forgotten mark of {user}: {e}"));
                true
            }
        }
    }

    fn forget(&mut self, user: &str) -> Handled {
        let rows = self
            .store
            .forget(user)
            .map_err(|e| Refusal::internal("erasing a user", e))?;
        let live = self.users.remove(user).is_some();
        self.stash.remove(user);
        self.forgotten.insert(user.to_string(), true);
        self.refresh_others();
        log::info(&format!("forgot {user}"));
        Ok(done(format!(
            "erased {user}: {rows} stored record(s){}",
            if live {
                " and the live session's evidence"
            } else {
                ""
            }
        )))
    }

    fn export(&mut self, user: &str) -> Handled {
        let mut data = self
            .store
            .export(user)
            .map_err(|e| Refusal::internal("exporting a user", e))?;
        let live = self.assess(user).ok();
        if let serde_json::Value::Object(map) = &mut data {
            map.insert(
                "live_session".into(),
                serde_json::to_value(&live).unwrap_or(serde_json::Value::Null),
            );
            map.insert(
                "sessions".into(),
                self.bindings
                    .iter()
                    .filter(|b| b.user == user)
                    .map(|b| serde_json::Value::String(b.label()))
                    .collect(),
            );
            map.insert(
                "note".into(),
                "raw events are never stored; profiles hold timing statistics keyed by hashed key ids"
                    .into(),
            );
        }
        Ok(ResponseBody::Export {
            user: user.to_string(),
            data,
        })
    }
}

/// The daemon's clock starts this far from zero, so that collector history from before
/// the daemon started (up to ~12 days) still maps to positive times.
const CLOCK_BASE_US: u64 = 1 << 40;

/// The daemon's clock, shared with the device readers so every source has one time
/// base: microseconds of `CLOCK_BOOTTIME` since the daemon started, plus
/// [`CLOCK_BASE_US`]. Boot time, not the monotonic clock behind `Instant`: that one
/// stops while the machine is suspended, and a lid closed for hours must count as the
/// pause it is (`session.idle_reset_s`, evidence age).
#[derive(Clone, Copy, Debug)]
pub struct DaemonClock {
    origin_us: u64,
}

impl DaemonClock {
    pub fn start() -> DaemonClock {
        DaemonClock {
            origin_us: boottime_us(),
        }
    }

    pub fn now_us(&self) -> u64 {
        CLOCK_BASE_US + boottime_us().saturating_sub(self.origin_us)
    }
}

/// `CLOCK_BOOTTIME` in microseconds (`CLOCK_MONOTONIC` if the kernel lacks it, which
/// Linux before 2.6.39 did).
fn boottime_us() -> u64 {
    let read = |id| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is valid, writable storage for one timespec.
        let rc = unsafe { libc::clock_gettime(id, &mut ts) };
        (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000)
    };
    read(libc::CLOCK_BOOTTIME)
        .or_else(|| read(libc::CLOCK_MONOTONIC))
        .unwrap_or(0)
}

fn done(message: String) -> ResponseBody {
    ResponseBody::Done { message }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn unix_s() -> i64 {
    (unix_ms() / 1000) as i64
}

/// Starts the drift command without waiting for it (a thread reaps it).
fn run_drift_command(command: &[String], user: &str) {
    let Some((program, args)) = command.split_first() else {
        return;
    };
    match std::process::Command::new(program)
        .args(args)
        .env("HABITUS_USER", user)
        .stdin(std::process::Stdio::null())
        .spawn()
    {
        Ok(mut child) => {
            std::thread::spawn(move || {
                let _ = child.wait();
            });
        }
        Err(e) => log::error(&format!("drift command {program:?} could not start: {e}")),
    }
}

/// Logging to stderr, which systemd sends to the journal. One line per event; never
/// event contents.
pub mod log {
    use std::sync::atomic::{AtomicBool, Ordering};

    static QUIET: AtomicBool = AtomicBool::new(false);

    /// Silences info and warning lines (evaluations run thousands of sessions); errors
    /// are always written.
    pub fn set_quiet(quiet: bool) {
        QUIET.store(quiet, Ordering::Relaxed);
    }

    pub fn info(message: &str) {
        if !QUIET.load(Ordering::Relaxed) {
            eprintln!("habitusd: {message}");
        }
    }
    pub fn warn(message: &str) {
        if !QUIET.load(Ordering::Relaxed) {
            eprintln!("habitusd: warning: {message}");
        }
    }
    pub fn error(message: &str) {
        eprintln!("habitusd: error: {message}");
    }
}
