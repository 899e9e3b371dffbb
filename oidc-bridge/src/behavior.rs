//! Behaviour from the browser collector: the wire format posted to `/collect`, its
//! validation, the key-id scheme, and scoring with the same engine and plugins as habitusd.
//!
//! **Key ids (privacy).** The collector never sends characters or key codes. For each key
//! that inserts a character into the password field it sends only the *caret position*
//! the character lands at (0, 1, 2, …) and the keydown/keyup times; modifiers, navigation
//! and editing keys are not sent at all. The server maps position `p` to
//! `KeyHasher::key_id(POSITION_CODE_BASE + p)` (the installation's keyed hash, in a code
//! range no keyboard uses). Because a password is typed the same way at every login,
//! position `p` is the same key every time: ids are stable across logins, so enrolment
//! and fixed-text scoring are meaningful, while the server learns only the password's
//! length and its timing, never which keys were pressed. A keyed hash of `event.code`
//! could not give that: with ~100 possible codes the server could invert any hash whose
//! key it knows, and a per-page random salt (unknown to the server) would make ids differ
//! at every login, which breaks enrolment. The timing itself is the biometric and is sent
//! by design (see docs/oidc.md for the residual risk).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use habitus_engine::{
    AdaptOutcome, KeyHasher, PluginInstance, ProfileStore, Session, SessionConfig, State,
};
use habitus_plugin::{Event, EventKind, RVec};
use serde::{Deserialize, Serialize};

use crate::config::{BehaviorConfig, WindowKind};
use crate::replay::{EntryTimings, RecentEntries};

/// Key codes for password positions live here, far from evdev and DOM key codes.
pub const POSITION_CODE_BASE: u32 = 0x0100_0000;
/// Longest password (positions) the collector may report.
pub const MAX_POSITION: u32 = 256;
/// Events per `/collect` batch, at most.
pub const MAX_BATCH_EVENTS: usize = 512;
/// Events kept per login transaction, at most.
pub const MAX_TX_EVENTS: usize = 4096;
/// Live sessions scored at once (memory bound); the least recently used is dropped first.
pub const MAX_LIVE_SESSIONS: usize = 10_000;
/// Longest page id of a live batch (the collector sends 32 hex digits).
const MAX_PAGE_ID: usize = 64;
/// Pages whose sequence a live session remembers (tabs and relying parties open at once).
const MAX_PAGES_PER_SESSION: usize = 16;
/// Collector times are `performance.now()` milliseconds: at most a day after page load.
const MAX_T_MS: f64 = 86_400_000.0;
/// Pointer coordinates (CSS pixels) beyond this are refused.
const MAX_COORD: f32 = 100_000.0;

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum WireKind {
    /// Key down / key up in the password field (`pos` = caret position).
    #[serde(rename = "kd")]
    KeyDown,
    #[serde(rename = "ku")]
    KeyUp,
    /// Pointer move / button down / button up (`x`, `y`, `button`).
    #[serde(rename = "pm")]
    PointerMove,
    #[serde(rename = "pd")]
    PointerDown,
    #[serde(rename = "pu")]
    PointerUp,
    /// Touch start / move / end (`x`, `y`, `button` = touch identifier).
    #[serde(rename = "td")]
    TouchDown,
    #[serde(rename = "tm")]
    TouchMove,
    #[serde(rename = "tu")]
    TouchUp,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEvent {
    #[serde(rename = "type")]
    pub kind: WireKind,
    /// Milliseconds (`performance.now()`).
    pub t: f64,
    #[serde(default)]
    pub pos: Option<u32>,
    #[serde(default)]
    pub x: Option<f32>,
    #[serde(default)]
    pub y: Option<f32>,
    #[serde(default)]
    pub button: Option<u32>,
}

/// One `/collect` post.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// The login transaction the page belongs to. Absent: the batch belongs to the live
    /// SSO session named by the request's session cookie (relying-party pages after login).
    #[serde(default)]
    pub tx: Option<String>,
    /// 0, 1, 2, … per transaction (or per page of a live session): a batch is accepted
    /// once, in order.
    pub seq: u64,
    /// Live batches: a random id of the page's collector (every page load numbers its
    /// batches from 0 again). Absent: one page per session, as collectors before it sent.
    #[serde(default)]
    pub page: Option<String>,
    pub events: Vec<WireEvent>,
}

/// Validates a batch against what the transaction already holds (`last_t_us`) and converts
/// it. Any problem refuses the whole batch (nothing is stored).
pub fn convert(
    batch: &[WireEvent],
    last_t_us: u64,
    hasher: &KeyHasher,
) -> Result<Vec<Event>, String> {
    if batch.is_empty() {
        return Err("empty batch".into());
    }
    if batch.len() > MAX_BATCH_EVENTS {
        return Err(format!("more than {MAX_BATCH_EVENTS} events in one batch"));
    }
    let mut out = Vec::with_capacity(batch.len());
    let mut previous = last_t_us;
    for (n, w) in batch.iter().enumerate() {
        if !(w.t.is_finite() && (0.0..=MAX_T_MS).contains(&w.t)) {
            return Err(format!("event {n}: time out of range"));
        }
        let t_us = (w.t * 1000.0).round() as u64;
        if t_us < previous {
            return Err(format!("event {n}: time goes back"));
        }
        previous = t_us;
        let is_key = matches!(w.kind, WireKind::KeyDown | WireKind::KeyUp);
        let event = if is_key {
            let Some(pos) = w.pos.filter(|p| *p < MAX_POSITION) else {
                return Err(format!("event {n}: key events need pos < {MAX_POSITION}"));
            };
            if w.x.is_some() || w.y.is_some() || w.button.is_some() {
                return Err(format!("event {n}: key events carry only t and pos"));
            }
            let kind = if w.kind == WireKind::KeyDown {
                EventKind::KEY_DOWN
            } else {
                EventKind::KEY_UP
            };
            Event::key(kind, t_us, hasher.key_id(POSITION_CODE_BASE + pos))
        } else {
            let (Some(x), Some(y)) = (w.x, w.y) else {
                return Err(format!("event {n}: pointer events need x and y"));
            };
            if !(x.is_finite() && y.is_finite() && x.abs() <= MAX_COORD && y.abs() <= MAX_COORD) {
                return Err(format!("event {n}: coordinates out of range"));
            }
            if w.pos.is_some() {
                return Err(format!("event {n}: pointer events carry no pos"));
            }
            let kind = match w.kind {
                WireKind::PointerMove => EventKind::POINTER_MOVE,
                WireKind::PointerDown => EventKind::BUTTON_DOWN,
                WireKind::PointerUp => EventKind::BUTTON_UP,
                WireKind::TouchDown => EventKind::TOUCH_DOWN,
                WireKind::TouchMove => EventKind::TOUCH_MOVE,
                _ => EventKind::TOUCH_UP,
            };
            let mut e = Event::at(kind, t_us, x, y);
            e.pointer = w.button.unwrap_or(0).min(64);
            e
        };
        out.push(event);
    }
    Ok(out)
}

/// The final password entry: for each position, the last complete keystroke typed there
/// (retyping after a correction replaces it), in press order. `None` with fewer than 4.
pub fn password_entry(events: &[Event]) -> Option<Vec<Event>> {
    let mut down: HashMap<u32, u64> = HashMap::new();
    let mut strokes: HashMap<u32, (u64, u64)> = HashMap::new();
    for e in events {
        if e.kind == EventKind::KEY_DOWN {
            down.insert(e.key, e.t_us);
        } else if e.kind == EventKind::KEY_UP {
            if let Some(d) = down.remove(&e.key) {
                strokes.insert(e.key, (d, e.t_us));
            }
        }
    }
    let mut entry: Vec<(u64, u64, u32)> =
        strokes.into_iter().map(|(k, (d, u))| (d, u, k)).collect();
    if entry.len() < 4 {
        return None;
    }
    entry.sort();
    let mut out: Vec<Event> = Vec::with_capacity(entry.len() * 2);
    for (d, u, k) in entry {
        out.push(Event::key(EventKind::KEY_DOWN, d, k));
        out.push(Event::key(EventKind::KEY_UP, u, k));
    }
    out.sort_by_key(|e| (e.t_us, e.kind != EventKind::KEY_UP));
    Some(out)
}

/// The namespaced `behavior` claim.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BehaviorClaim {
    /// Trust 0-100 after this login's evidence; `null` when nothing was scored.
    pub trust: Option<f64>,
    /// `unenrolled`, `learning`, `trusted`, `uncertain`, `drift` or `replayed` (the
    /// password entry's timings repeat an earlier login's: a capture sent again).
    pub state: String,
    /// Modalities that contributed evidence.
    pub modalities: Vec<String>,
    /// Unix seconds of the assessment.
    pub evaluated_at: i64,
}

impl BehaviorClaim {
    /// Level of assurance behaviour gives: 2 verified, 1 uncertain, 0 no evidence (or
    /// evidence against: drift never raises assurance).
    pub fn loa(&self) -> u8 {
        match self.state.as_str() {
            "trusted" => 2,
            "uncertain" => 1,
            _ => 0,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct ModalityPlugin {
    name: String,
    instance: Arc<PluginInstance>,
    window: WindowKind,
    enrol_windows: u32,
    window_events: usize,
}

/// Windows collected for enrolment (memory only, like habitusd: raw events are never
/// stored; a restart restarts an unfinished enrolment).
#[derive(Default)]
struct Learner {
    windows: Vec<RVec<Event>>,
    partial: Vec<Event>,
}

/// Why a live batch was refused (nothing was scored).
#[derive(Debug, Clone, PartialEq)]
pub enum LiveError {
    OutOfSequence(u64),
    Invalid(String),
    Busy,
}

/// The running engine session of one live SSO session (memory only).
struct Live {
    session: Session,
    /// Per page (collector instance): its id and the next sequence number expected,
    /// least recently heard from first.
    pages: Vec<(String, u64)>,
    last_t_us: u64,
    touched: i64,
}

pub struct BehaviorEngine {
    live: Mutex<HashMap<String, Live>>,
    plugins: Vec<ModalityPlugin>,
    session_config: SessionConfig,
    hasher: KeyHasher,
    store: Mutex<ProfileStore>,
    learners: Mutex<HashMap<String, Vec<Learner>>>,
    adapt_max_per_day: u32,
    /// Each user's recent password entries that vouched or taught (timings and a digest
    /// of key ids only, in memory), for the replay check.
    recent: Mutex<RecentEntries>,
}

impl BehaviorEngine {
    /// Loads the configured plugins from `dirs` (first directory that has each wins).
    pub fn new(
        config: &BehaviorConfig,
        dirs: &[PathBuf],
        store: ProfileStore,
        hasher: KeyHasher,
    ) -> Result<BehaviorEngine, String> {
        let mut plugins = Vec::new();
        let mut session_config = config.session.clone();
        for (name, p) in &config.plugins {
            let lib = habitus_engine::loader::find_plugin(dirs, name)?;
            let instance = lib
                .instantiate(&p.config)
                .map_err(|e| format!("plugin {name}: {e}"))?;
            let window_events = match p.window {
                // One login = one window: never cut it (a transaction holds at most
                // MAX_TX_EVENTS); `flush` scores it whole.
                WindowKind::Login => MAX_TX_EVENTS + 1,
                WindowKind::Events => session_config
                    .window_events
                    .get(name)
                    .copied()
                    .unwrap_or(50)
                    .max(1),
            };
            session_config
                .window_events
                .insert(name.clone(), window_events);
            plugins.push(ModalityPlugin {
                name: name.clone(),
                instance: Arc::new(instance),
                window: p.window,
                enrol_windows: p.enrol_windows,
                window_events,
            });
        }
        Ok(BehaviorEngine {
            live: Mutex::new(HashMap::new()),
            plugins,
            session_config,
            hasher,
            store: Mutex::new(store),
            learners: Mutex::new(HashMap::new()),
            recent: Mutex::new(RecentEntries::default()),
            adapt_max_per_day: config.adapt_max_per_day,
        })
    }

    pub fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    pub fn plugin_names(&self) -> Vec<String> {
        self.plugins.iter().map(|p| p.name.clone()).collect()
    }

    /// Forgets the live state of a session that ended.
    pub fn forget_live(&self, sid: &str) {
        lock(&self.live).remove(sid);
    }

    /// Scores one batch of a live SSO session `sid` of `user` with the session's running
    /// engine session (trust carries over from batch to batch; with the first live batch
    /// it starts at `login_trust`, the trust the login's assessment ended with, or 100
    /// when the login had no scored behaviour). Key events of a batch form one password entry (a re-typed
    /// password, e.g. on a lock screen); pointer and touch events go to their plugins.
    /// Live evidence is never learned from and never adapts a template: an impostor must
    /// not be able to train the profile. Returns the events accepted and, when at least one
    /// window was scored, the new behaviour claim.
    pub fn collect_live(
        &self,
        sid: &str,
        user: &str,
        batch: &Batch,
        login_trust: Option<f64>,
        now_unix: i64,
    ) -> Result<(usize, Option<BehaviorClaim>), LiveError> {
        // Validate before touching any state: a refused batch changes nothing.
        let events = convert(&batch.events, 0, &self.hasher).map_err(LiveError::Invalid)?;
        let page = batch.page.as_deref().unwrap_or("");
        if page.len() > MAX_PAGE_ID {
            return Err(LiveError::Invalid(format!(
                "page id longer than {MAX_PAGE_ID} bytes"
            )));
        }
        let mut live = lock(&self.live);
        if !live.contains_key(sid) {
            if batch.seq != 0 {
                return Err(LiveError::OutOfSequence(0));
            }
            if live.len() >= MAX_LIVE_SESSIONS {
                let oldest = live
                    .iter()
                    .min_by_key(|(_, l)| l.touched)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => {
                        live.remove(&k);
                    }
                    None => return Err(LiveError::Busy),
                }
            }
            let profiles = match lock(&self.store).profiles(user) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("habitus-oidc: error: reading profiles of {user}: {e}");
                    Vec::new()
                }
            };
            let slots = self
                .plugins
                .iter()
                .map(|p| {
                    let blob = profiles
                        .iter()
                        .find(|s| s.plugin == p.name)
                        .map(|s| s.blob.clone());
                    (p.instance.clone(), blob)
                })
                .collect();
            let mut session = Session::new(&self.session_config, slots);
            if let Some(t) = login_trust {
                session.carry_over_trust(t);
            }
            live.insert(
                sid.to_string(),
                Live {
                    session,
                    pages: Vec::new(),
                    last_t_us: 0,
                    touched: now_unix,
                },
            );
        }
        let l = live.get_mut(sid).ok_or(LiveError::Busy)?;
        // Every page load (and every relying party's page) runs its own collector, which
        // numbers its batches from 0: a 0 starts a new page of the same session. Within a
        // page, batches must follow each other (a lost one would join windows across a gap).
        let expected = l.pages.iter().find(|p| p.0 == page).map_or(0, |p| p.1);
        if batch.seq != expected {
            return Err(LiveError::OutOfSequence(expected));
        }
        l.pages.retain(|p| p.0 != page);
        if l.pages.len() >= MAX_PAGES_PER_SESSION {
            l.pages.remove(0); // the page heard from least recently
        }
        l.pages.push((page.to_string(), batch.seq + 1));
        // Batches are laid end to end below (each page has its own clock), so a pause
        // between them is seen here, on ours: the collector sends soon after input
        // stops, so a gap of `idle_reset_s` between batches is a pause in the input.
        let paused = self
            .session_config
            .idle_reset_s
            .is_some_and(|s| (now_unix - l.touched) as f64 >= s);
        if paused {
            l.session.pause();
        }
        l.touched = now_unix;
        let n = events.len();
        // Each page has its own clock (performance.now()): batches are laid end to end
        // after what the session already holds, one second apart.
        let first = events.first().map(|e| e.t_us).unwrap_or(0);
        let base = if l.last_t_us == 0 {
            0
        } else {
            l.last_t_us + 1_000_000
        };
        let shift = |t: u64| base + (t - first);
        let mut feed: Vec<Event> = events
            .iter()
            .filter(|e| e.kind != EventKind::KEY_DOWN && e.kind != EventKind::KEY_UP)
            .copied()
            .collect();
        if let Some(entry) = password_entry(&events) {
            // An entry repeating one the user's logins vouched with is a capture sent
            // again: it is not scored (the rest of the batch is).
            let repeated = lock(&self.recent).repeated(user, &EntryTimings::of(&entry));
            match repeated {
                Some(difference) => eprintln!(
                    "habitus-oidc: warning: a live batch of {user} repeats a login's password entry timings (mean difference {:.2} ms): not scored",
                    difference / 1000.0
                ),
                None => feed.extend(entry),
            }
        }
        feed.sort_by_key(|e| e.t_us);
        let before = l.session.assess(l.last_t_us + 1).windows_scored;
        for e in &feed {
            let mut e = *e;
            e.t_us = shift(e.t_us);
            l.session.push(e);
        }
        l.session.flush();
        l.last_t_us = feed
            .last()
            .map(|e| shift(e.t_us))
            .unwrap_or(l.last_t_us)
            .max(l.last_t_us);
        let a = l.session.assess(l.last_t_us + 1);
        if let Some(err) = l.session.last_error() {
            eprintln!("habitus-oidc: scoring a live session of {user}: {err}");
        }
        // Live windows are not adaptation material.
        l.session.take_adaptation_candidates();
        if a.windows_scored == before {
            return Ok((n, None));
        }
        let state = match a.state {
            State::Unenrolled => "unenrolled",
            State::Learning => "learning",
            State::Trusted => "trusted",
            State::Uncertain => "uncertain",
            State::Drift => "drift",
        };
        Ok((
            n,
            Some(BehaviorClaim {
                trust: Some((a.trust * 10.0).round() / 10.0),
                state: state.to_string(),
                modalities: a
                    .modalities
                    .iter()
                    .filter(|m| m.last_score.is_some())
                    .map(|m| m.plugin.clone())
                    .collect(),
                evaluated_at: now_unix,
            }),
        ))
    }

    /// Scores one login's events for `user` (already password-verified). Nothing is
    /// learned or adapted here: what the login would teach comes back as a
    /// [`LoginLearning`], applied by [`BehaviorEngine::commit_login`] only once the login
    /// has completed. A login abandoned at the step-up, or refused, teaches nothing (else
    /// someone who knows only the password could enrol a user's profile with their own
    /// rhythm through logins that never pass the second factor, and then pass as them).
    pub fn assess_login(
        &self,
        user: &str,
        events: &[Event],
        now_unix: i64,
    ) -> (BehaviorClaim, LoginLearning) {
        let mut claim = BehaviorClaim {
            trust: None,
            state: "unenrolled".into(),
            modalities: Vec::new(),
            evaluated_at: now_unix,
        };
        let mut learning = LoginLearning {
            user: user.to_string(),
            enrol: Vec::new(),
            adapt: Vec::new(),
        };
        let profiles = {
            let store = lock(&self.store);
            match store.profiles(user) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("habitus-oidc: error: reading profiles of {user}: {e}");
                    return (claim, learning);
                }
            }
        };
        let entry = password_entry(events);
        let timings = entry.as_deref().map(EntryTimings::of);
        if let Some(difference) = timings
            .as_ref()
            .and_then(|t| lock(&self.recent).repeated(user, t))
        {
            // Genuine typing never repeats itself to the millisecond: this is a capture
            // of an earlier login sent again. It vouches for nobody and teaches nothing.
            eprintln!(
                "habitus-oidc: warning: the password entry of a login of {user} repeats an earlier one's timings (mean difference {:.2} ms): treated as a replay",
                difference / 1000.0
            );
            claim.state = "replayed".into();
            return (claim, learning);
        }
        let mut slots = Vec::new();
        for p in &self.plugins {
            let blob = profiles
                .iter()
                .find(|s| s.plugin == p.name)
                .map(|s| s.blob.clone());
            slots.push((p.instance.clone(), blob));
        }
        let mut session = Session::new(&self.session_config, slots);
        let mut feed: Vec<Event> = events
            .iter()
            .filter(|e| e.kind != EventKind::KEY_DOWN && e.kind != EventKind::KEY_UP)
            .copied()
            .collect();
        if let Some(entry) = &entry {
            feed.extend_from_slice(entry);
        }
        feed.sort_by_key(|e| e.t_us);
        for e in &feed {
            session.push(*e);
        }
        session.flush();
        let last_t = feed.last().map(|e| e.t_us).unwrap_or(0);
        let a = session.assess(last_t + 1);
        if let Some(err) = session.last_error() {
            eprintln!("habitus-oidc: scoring {user}: {err}");
        }

        // What plugins without a profile would collect from this login.
        let mut collecting = false;
        {
            let learners = lock(&self.learners);
            let mine = learners.get(user);
            for (i, p) in self.plugins.iter().enumerate() {
                if session.profile(i).is_some() {
                    continue;
                }
                let events: Vec<Event> = match p.window {
                    WindowKind::Login => entry.clone().unwrap_or_default(),
                    WindowKind::Events => {
                        let consumes =
                            |e: &&Event| p.instance.descriptor().event_kinds.contains(&e.kind);
                        feed.iter().filter(consumes).copied().collect()
                    }
                };
                let pending = mine
                    .and_then(|m| m.get(i))
                    .is_some_and(|l| !l.windows.is_empty() || !l.partial.is_empty());
                collecting |= pending || !events.is_empty();
                if !events.is_empty() {
                    learning.enrol.push((i, events));
                }
            }
        }

        claim.state = match a.state {
            State::Unenrolled if collecting => "learning",
            State::Unenrolled => "unenrolled",
            State::Learning => "learning",
            State::Trusted => "trusted",
            State::Uncertain => "uncertain",
            State::Drift => "drift",
        }
        .to_string();
        if a.windows_scored > 0 {
            claim.trust = Some((a.trust * 10.0).round() / 10.0);
            claim.modalities = a
                .modalities
                .iter()
                .filter(|m| m.last_score.is_some())
                .map(|m| m.plugin.clone())
                .collect();
        }

        // Adapt only from a trusted login (applied at commit, within the daily bound).
        if a.state == State::Trusted && self.adapt_max_per_day > 0 {
            for c in session.take_adaptation_candidates() {
                let (Some(plugin), Some(profile)) =
                    (session.plugin(c.slot), session.profile(c.slot))
                else {
                    continue;
                };
                match plugin.adapt(profile, &c.window, c.score) {
                    Ok(updated) if updated != profile => {
                        learning.adapt.push((plugin.name().to_string(), updated));
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("habitus-oidc: adapting {user}: {e}"),
                }
            }
        }
        // Remember entries worth replaying: those that vouched or taught.
        if let Some(t) = timings {
            if claim.state == "trusted" || claim.state == "learning" {
                lock(&self.recent).remember(user, t, now_unix);
            }
        }
        (claim, learning)
    }

    /// Applies what a completed login teaches: enrolment windows of plugins still
    /// learning (a profile is built once a plugin has `enrol_windows` of them), and the
    /// adaptations of a trusted login, within the store's daily bound.
    pub fn commit_login(&self, learning: LoginLearning, now_unix: i64) {
        let user = learning.user.as_str();
        // Store first, then learners: never the other way round.
        let mut store = lock(&self.store);
        let mut learners = lock(&self.learners);
        let mine = learners
            .entry(user.to_string())
            .or_insert_with(|| self.plugins.iter().map(|_| Learner::default()).collect());
        // Another login may have completed an enrolment meanwhile.
        let enrolled: Vec<String> = store
            .profiles(user)
            .map(|ps| ps.into_iter().map(|s| s.plugin).collect())
            .unwrap_or_default();
        for (i, events) in learning.enrol {
            let (Some(p), Some(learner)) = (self.plugins.get(i), mine.get_mut(i)) else {
                continue;
            };
            if enrolled.contains(&p.name) {
                continue;
            }
            match p.window {
                WindowKind::Login => learner.windows.push(RVec::from(events)),
                WindowKind::Events => {
                    for e in events {
                        learner.partial.push(e);
                        if learner.partial.len() >= p.window_events {
                            learner
                                .windows
                                .push(RVec::from(std::mem::take(&mut learner.partial)));
                        }
                    }
                }
            }
            if learner.windows.len() as u32 >= p.enrol_windows {
                let population = store.population(&p.name).ok().flatten().unwrap_or_default();
                let windows = std::mem::take(&mut learner.windows);
                match p.instance.enroll(&population, &windows) {
                    Ok(blob) => match store.put_profile(
                        user,
                        &p.name,
                        &blob,
                        windows.len() as u32,
                        now_unix,
                    ) {
                        Ok(()) => eprintln!(
                            "habitus-oidc: enrolled {user}: {} from {} logins' windows",
                            p.name,
                            windows.len()
                        ),
                        Err(e) => eprintln!("habitus-oidc: error: saving profile of {user}: {e}"),
                    },
                    Err(e) => eprintln!("habitus-oidc: enrolling {user} ({}) failed: {e}", p.name),
                }
            }
        }
        drop(learners);
        for (plugin, updated) in learning.adapt {
            match store.adapt_profile(user, &plugin, &updated, now_unix, self.adapt_max_per_day) {
                Ok(
                    AdaptOutcome::Applied
                    | AdaptOutcome::DailyLimitReached
                    | AdaptOutcome::NotEnrolled,
                ) => {}
                Err(e) => eprintln!("habitus-oidc: error: adapting {user}: {e}"),
            }
        }
    }
}

/// What one login would teach a user's profiles, held until the login completes (see
/// [`BehaviorEngine::assess_login`]). Timing events only, like everything the
/// transaction holds.
#[derive(Clone, Debug)]
pub struct LoginLearning {
    user: String,
    /// Per plugin still learning (by index): the events this login gives it.
    enrol: Vec<(usize, Vec<Event>)>,
    /// Per enrolled plugin: its profile adapted to this (trusted) login.
    adapt: Vec<(String, Vec<u8>)>,
}

impl LoginLearning {
    /// Whether committing it would add enrolment material (the user is still learning).
    pub fn enrols(&self) -> bool {
        !self.enrol.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kd(t: f64, pos: u32) -> WireEvent {
        WireEvent {
            kind: WireKind::KeyDown,
            t,
            pos: Some(pos),
            x: None,
            y: None,
            button: None,
        }
    }

    #[test]
    fn convert_refuses_bad_batches_whole() {
        let h = KeyHasher::new([7; 16]);
        assert!(convert(&[kd(1.0, 0), kd(2.0, 1)], 0, &h).is_ok());
        assert!(convert(&[], 0, &h).is_err());
        assert!(convert(&[kd(2.0, 0), kd(1.0, 1)], 0, &h)
            .unwrap_err()
            .contains("back"));
        assert!(
            convert(&[kd(1.0, 0)], 5000, &h)
                .unwrap_err()
                .contains("back"),
            "across batches"
        );
        assert!(convert(&[kd(f64::NAN, 0)], 0, &h).is_err());
        assert!(convert(&[kd(1.0, MAX_POSITION)], 0, &h).is_err());
        let mut pm = kd(1.0, 0);
        pm.kind = WireKind::PointerMove;
        assert!(
            convert(&[pm.clone()], 0, &h).is_err(),
            "pointer with pos and no x/y"
        );
        pm.pos = None;
        pm.x = Some(1.0);
        pm.y = Some(f32::INFINITY);
        assert!(convert(&[pm], 0, &h).is_err());
        let big: Vec<WireEvent> = (0..=MAX_BATCH_EVENTS).map(|i| kd(i as f64, 0)).collect();
        assert!(convert(&big, 0, &h).is_err());
    }

    #[test]
    fn position_ids_are_stable_and_not_codes() {
        let h = KeyHasher::new([7; 16]);
        let a = convert(&[kd(1.0, 3)], 0, &h).expect("ok");
        let b = convert(&[kd(9.0, 3)], 0, &h).expect("ok");
        assert_eq!(a[0].key, b[0].key);
        assert_ne!(a[0].key, 3);
    }

    #[test]
    fn password_entry_keeps_the_last_stroke_per_position() {
        let k = |kind, t, key| Event::key(kind, t, key);
        let mut ev = Vec::new();
        for (i, key) in [10u32, 11, 12, 13].iter().enumerate() {
            let t = i as u64 * 200_000;
            ev.push(k(EventKind::KEY_DOWN, t, *key));
            ev.push(k(EventKind::KEY_UP, t + 80_000, *key));
        }
        // Correction: position 13 retyped later.
        ev.push(k(EventKind::KEY_DOWN, 2_000_000, 13));
        ev.push(k(EventKind::KEY_UP, 2_090_000, 13));
        let entry = password_entry(&ev).expect("complete");
        assert_eq!(entry.len(), 8);
        assert_eq!(entry.last().map(|e| e.t_us), Some(2_090_000));
        assert!(password_entry(&ev[..6]).is_none(), "fewer than 4 keys");
    }
}
