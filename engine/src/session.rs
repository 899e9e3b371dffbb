//! One user session: routes events to plugins by kind, scores full windows, fuses the
//! scores and runs the trust model, producing an [`Assessment`].

use std::sync::Arc;

use habitus_plugin::{Event, EventKind, Score};
use serde::{Deserialize, Serialize};

use crate::fusion::{Fusion, FusionConfig, ModalityEvidence};
use crate::others::discount_for_others;
use crate::plugin::{HostError, PluginInstance, PreparedProfile};
use crate::trust::{TrustConfig, TrustModel};

/// Where a session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// No profile for any modality: nothing can be said.
    Unenrolled,
    /// Profiles exist but no window has been scored yet in this session.
    Learning,
    /// Trust at or above the trusted threshold.
    Trusted,
    /// Between lockout and trusted.
    Uncertain,
    /// Trust fell below the lockout threshold: behaviour has drifted from the profile.
    Drift,
}

/// One modality's part of an assessment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModalityAssessment {
    pub plugin: String,
    pub enrolled: bool,
    pub evidence: ModalityEvidence,
    pub last_score: Option<f64>,
}

/// The verdict on a session at a point in time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    pub state: State,
    pub trust: f64,
    pub fused_llr: f64,
    pub modalities: Vec<ModalityAssessment>,
    /// Microseconds since the last scored window (`None`: never scored).
    pub evidence_age_us: Option<u64>,
    pub events_seen: u64,
    /// Windows scored and fused since the session started (expired ones included).
    pub windows_scored: u64,
    /// Events skipped as malformed (out of time order, non-finite fields).
    pub events_rejected: u64,
    /// Windows whose scoring failed (plugin error or invalid score): never fused.
    pub windows_failed: u64,
    /// Pauses of at least `idle_reset_s` after which the evidence gathered before them
    /// was forgotten.
    pub idle_resets: u64,
}

/// How a session is set up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    pub trust: TrustConfig,
    pub fusion: FusionConfig,
    /// Events per scoring window (per plugin name); plugins not listed use 50. Default:
    /// `keystroke = 100` (50 keystrokes, the sample the Aalto protocol measures).
    pub window_events: std::collections::BTreeMap<String, usize>,
    /// Windows scoring at least this LLR are offered for adaptation
    /// ([`Session::take_adaptation_candidates`]); `None` offers none. Default 3.0
    /// (odds of 20:1 for genuine).
    /// The plugin re-checks with its own gate, and the profile store bounds how many
    /// adaptations a day are applied, so an impostor cannot slowly train a profile.
    pub adapt_min_llr: Option<f64>,
    /// `Trusted` also needs the fused evidence in the fusion window to reach this LLR
    /// (default 4.6 = ln 99).
    /// Trust starts at 100 (Mondal & Bours assume a strongly authenticated login), so
    /// without this bar a session's first few windows could be mildly impostor-like and
    /// still leave it "trusted"; with it, trusted means "the recent behaviour is
    /// positively the user's", which is what skipping a step-up factor needs.
    pub trusted_min_llr: f64,
    /// After this many seconds without any input event, the evidence gathered before the
    /// pause stops vouching: the person at the keyboard now may not be the one who left
    /// (a locked screen, an unattended desk). The fusion window and any partly filled
    /// windows are cleared at the first event after the pause, and an assessment asked
    /// for during the pause is never `Trusted` (the newcomer's keys may not have arrived
    /// yet). Trust itself is kept, so a drift is not forgiven by waiting. `None` never
    /// forgets (the fusion window alone ages evidence). Default 60.
    pub idle_reset_s: Option<f64>,
    /// At most this many *other* enrolled users' profiles are compared with each window
    /// ([`Session::set_others`], [`crate::others`]): a window that looks like one of
    /// them loses that much evidence for the claimed user. Each costs one more score
    /// per window and one more decoded profile in memory per live session. 0 turns the
    /// comparison off. Default 0 (off; see docs/habitusd.md for the trade-off).
    pub other_users: usize,
}

/// The most other users' profiles a session may compare each window with.
pub const MAX_OTHER_USERS: usize = 64;

/// The largest scoring window a configuration may ask for (events per plugin window):
/// about 3 hours of typing or 15 minutes of pointer motion.
pub const MAX_WINDOW_EVENTS: usize = 100_000;

impl SessionConfig {
    /// Checks the values a configuration file may set (the trust and fusion parts
    /// included). The message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        self.trust.validate()?;
        self.fusion.validate()?;
        let min = self.trusted_min_llr;
        // Above 0, not at it: fused evidence is 0 after a pause (and with every weight 0),
        // so a bar of 0 would let the trust level alone, kept across the pause, make a
        // session Trusted with no new window scored.
        if !min.is_finite() || min <= 0.0 {
            return Err(format!(
                "session.trusted_min_llr = {min}: must be a finite number > 0 (trust alone must not make a session trusted)"
            ));
        }
        if let Some(idle) = self.idle_reset_s {
            // Below a second every pause between two keys would count: never Trusted.
            if !(idle.is_finite() && idle >= 1.0) {
                return Err(format!(
                    "session.idle_reset_s = {idle}: must be at least 1 second (leave it out to never forget)"
                ));
            }
        }
        if self.other_users > MAX_OTHER_USERS {
            return Err(format!(
                "session.other_users = {}: must be within 0..={MAX_OTHER_USERS} (each is one more score per window and one more decoded profile per live session)",
                self.other_users
            ));
        }
        for (name, n) in &self.window_events {
            // Each live session holds one partly filled window per plugin, allocated up
            // front: an absurd size would take the host down on the first event.
            if !(1..=MAX_WINDOW_EVENTS).contains(n) {
                return Err(format!(
                    "session.window_events.{name} = {n}: must be within 1..={MAX_WINDOW_EVENTS}"
                ));
            }
        }
        Ok(())
    }
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            trust: TrustConfig::default(),
            fusion: FusionConfig::default(),
            window_events: [("keystroke".to_string(), 100)].into_iter().collect(),
            adapt_min_llr: Some(3.0),
            // ln 99: the recent behaviour is at least 99 times likelier the user's than
            // someone else's (fixed from the odds, not fitted; see docs/results.md).
            trusted_min_llr: 4.6,
            idle_reset_s: Some(60.0),
            // Off: on the Aalto step-up evaluation it cost far more genuine skips
            // than it saved false ones (docs/results.md); an opt-in for machines whose
            // likely intruders are the other people enrolled on them.
            other_users: 0,
        }
    }
}

/// A window that scored clearly genuine, offered to the host for template adaptation.
#[derive(Clone, Debug)]
pub struct AdaptationCandidate {
    /// Index of the plugin in the order given to [`Session::new`].
    pub slot: usize,
    pub window: Vec<Event>,
    pub score: Score,
}

/// At most this many candidates wait for the host; older ones are dropped (adaptation is
/// bounded per day anyway, so losing some costs nothing).
const MAX_PENDING_CANDIDATES: usize = 8;

struct Slot {
    plugin: Arc<PluginInstance>,
    profile: Option<Vec<u8>>,
    /// The profile as the plugin decoded it, made at the first window it scores and
    /// dropped when the profile changes.
    prepared: Prepared,
    window: Vec<Event>,
    window_events: usize,
    last_score: Option<Score>,
    /// Other enrolled users' profiles for this plugin ([`Session::set_others`]).
    others: Vec<OtherProfile>,
}

/// Another user's profile, compared with every window of the slot.
struct OtherProfile {
    profile: Vec<u8>,
    prepared: Prepared,
}

impl OtherProfile {
    /// The window's LLR under this profile; `None` when it cannot be scored or gives
    /// no evidence (a broken profile of someone else decides nothing).
    fn llr(&mut self, plugin: &PluginInstance, window: &[Event]) -> Option<f64> {
        match self.prepared.score(plugin, &self.profile, window) {
            Ok(s) if s.quality > 0.0 && s.llr.is_finite() => Some(s.llr),
            _ => None,
        }
    }
}

/// A slot's profile, decoded once by its plugin ([`PluginInstance::prepare`]) so that a
/// window's score does not decode or compare the whole profile again.
enum Prepared {
    /// Not prepared yet (no window scored since the profile was set).
    Pending,
    Ready(PreparedProfile),
    /// `prepare` refused the profile: windows go through `score` with its bytes, which
    /// reports the plugin's error window by window as before.
    Refused,
}

impl Prepared {
    /// Scores `window` against `profile`, preparing the profile at the first call.
    fn score(
        &mut self,
        plugin: &PluginInstance,
        profile: &[u8],
        window: &[Event],
    ) -> Result<Score, HostError> {
        if matches!(self, Prepared::Pending) {
            *self = match plugin.prepare(profile) {
                Ok(prepared) => Prepared::Ready(prepared),
                Err(_) => Prepared::Refused,
            };
        }
        match self {
            Prepared::Ready(prepared) => prepared.score(window),
            Prepared::Pending | Prepared::Refused => plugin.score(profile, window),
        }
    }
}

/// A live session.
pub struct Session {
    slots: Vec<Slot>,
    /// For every event kind byte, the slots that consume it.
    routes: Vec<Vec<usize>>,
    fusion: Fusion,
    trust: TrustModel,
    last_t_us: u64,
    last_scored_us: Option<u64>,
    events_seen: u64,
    windows_scored: u64,
    events_rejected: u64,
    windows_failed: u64,
    last_error: Option<HostError>,
    adapt_min_llr: Option<f64>,
    trusted_min_llr: f64,
    /// [`SessionConfig::idle_reset_s`] in microseconds.
    idle_reset_us: Option<u64>,
    /// Pauses after which earlier evidence was forgotten.
    idle_resets: u64,
    candidates: Vec<AdaptationCandidate>,
    /// [`SessionConfig::other_users`].
    other_users: usize,
}

impl Session {
    /// `plugins`: each plugin with the user's profile for it (if enrolled).
    pub fn new(
        config: &SessionConfig,
        plugins: Vec<(Arc<PluginInstance>, Option<Vec<u8>>)>,
    ) -> Session {
        let mut routes = vec![Vec::new(); 256];
        let mut weights = Vec::new();
        let mut slots = Vec::new();
        for (i, (plugin, profile)) in plugins.into_iter().enumerate() {
            for kind in plugin.descriptor().event_kinds.iter() {
                routes[kind.0 as usize].push(i);
            }
            weights.push(config.fusion.weight(plugin.name()));
            let window_events = config
                .window_events
                .get(plugin.name())
                .copied()
                .unwrap_or(50)
                .max(1);
            slots.push(Slot {
                plugin,
                profile,
                prepared: Prepared::Pending,
                window: Vec::with_capacity(window_events),
                window_events,
                last_score: None,
                others: Vec::new(),
            });
        }
        Session {
            slots,
            routes,
            fusion: Fusion::new(config.fusion.window_s, weights),
            trust: TrustModel::new(config.trust.clone()),
            last_t_us: 0,
            last_scored_us: None,
            events_seen: 0,
            windows_scored: 0,
            events_rejected: 0,
            windows_failed: 0,
            last_error: None,
            adapt_min_llr: config.adapt_min_llr,
            trusted_min_llr: config.trusted_min_llr,
            idle_reset_us: config.idle_reset_s.map(|s| (s * 1e6) as u64),
            idle_resets: 0,
            candidates: Vec::new(),
            other_users: config.other_users,
        }
    }

    /// Sets the profiles of the *other* enrolled users for slot `slot`'s plugin (at most
    /// [`SessionConfig::other_users`]; the rest are left out): from the next window on,
    /// each window's LLR is lowered by the strongest positive LLR it scores for any of
    /// them ([`crate::others::discount_for_others`]). Replaces the earlier set; an empty
    /// set turns the comparison off.
    pub fn set_others(&mut self, slot: usize, mut profiles: Vec<Vec<u8>>) {
        profiles.truncate(self.other_users);
        if let Some(s) = self.slots.get_mut(slot) {
            s.others = profiles
                .into_iter()
                .map(|profile| OtherProfile {
                    profile,
                    prepared: Prepared::Pending,
                })
                .collect();
        }
    }

    /// Starts the running trust at `trust` instead of 100 (see
    /// [`TrustModel::carry_over`]); meant for a session that continues an earlier
    /// assessment, before any event is pushed.
    pub fn carry_over_trust(&mut self, trust: f64) {
        self.trust.carry_over(trust);
    }

    /// The plugin of slot `slot` (see [`AdaptationCandidate::slot`]).
    pub fn plugin(&self, slot: usize) -> Option<&Arc<PluginInstance>> {
        self.slots.get(slot).map(|s| &s.plugin)
    }

    /// The profile of slot `slot`, if enrolled.
    pub fn profile(&self, slot: usize) -> Option<&[u8]> {
        self.slots.get(slot).and_then(|s| s.profile.as_deref())
    }

    /// Replaces the profile of slot `slot` (after enrolment or an accepted adaptation).
    /// Trust and fusion state are kept: this is the same user with a refreshed template.
    pub fn set_profile(&mut self, slot: usize, profile: Vec<u8>) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.profile = Some(profile);
            s.prepared = Prepared::Pending;
        }
    }

    /// Windows that scored at least `adapt_min_llr` since the last call.
    pub fn take_adaptation_candidates(&mut self) -> Vec<AdaptationCandidate> {
        std::mem::take(&mut self.candidates)
    }

    /// Feeds one event. Malformed events (time going backwards, NaN/∞ fields, unknown
    /// kinds) are skipped and counted, never fatal.
    pub fn push(&mut self, event: Event) {
        if event.t_us < self.last_t_us || !event.is_finite() || !event.kind.is_known() {
            self.events_rejected += 1;
            return;
        }
        if self.paused_at(event.t_us) {
            self.pause();
        }
        self.last_t_us = event.t_us;
        self.events_seen += 1;
        let kind: EventKind = event.kind;
        for r in 0..self.routes[kind.0 as usize].len() {
            let i = self.routes[kind.0 as usize][r];
            let slot = &mut self.slots[i];
            if slot.profile.is_none() {
                continue;
            }
            slot.window.push(event);
            if slot.window.len() >= slot.window_events {
                self.score_slot(i);
            }
        }
    }

    /// Whether the input has paused for at least `idle_reset_s` by time `t_us`.
    fn paused_at(&self, t_us: u64) -> bool {
        match self.idle_reset_us {
            Some(idle) => self.events_seen > 0 && t_us.saturating_sub(self.last_t_us) >= idle,
            None => false,
        }
    }

    /// Drops what was gathered before a pause: the fused evidence and the partly
    /// filled windows (their events may be someone else's than the next ones). Trust,
    /// the last scores and the counters stay. The session calls it itself when the
    /// events' own times show a pause of `idle_reset_s`; a host calls it when its clock
    /// shows one that event times cannot (arrival times of batches whose times are the
    /// sender's, a machine that was suspended).
    pub fn pause(&mut self) {
        let had_evidence =
            self.fusion.fused_llr() != 0.0 || self.slots.iter().any(|s| !s.window.is_empty());
        self.fusion.clear();
        for slot in &mut self.slots {
            slot.window.clear();
        }
        if had_evidence {
            self.idle_resets += 1;
        }
    }

    /// Scores whatever partial windows are pending (end of a burst, or before answering).
    pub fn flush(&mut self) {
        for i in 0..self.slots.len() {
            if !self.slots[i].window.is_empty() {
                self.score_slot(i);
            }
        }
    }

    fn score_slot(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let Some(profile) = slot.profile.as_deref() else {
            slot.window.clear();
            return;
        };
        let mut result = slot.prepared.score(&slot.plugin, profile, &slot.window);
        // Before anything reads the score (adaptation included): a window that looks
        // like another enrolled user must neither vouch nor teach.
        if let Ok(score) = &mut result {
            if score.quality > 0.0 && !slot.others.is_empty() {
                let (plugin, window) = (&slot.plugin, &slot.window);
                let others = slot.others.iter_mut().filter_map(|o| o.llr(plugin, window));
                score.llr = discount_for_others(score.llr, others);
            }
        }
        if let (Ok(score), Some(gate)) = (&result, self.adapt_min_llr) {
            // `>=` is false for NaN: a broken score never adapts.
            if score.quality > 0.0 && score.llr >= gate {
                if self.candidates.len() >= MAX_PENDING_CANDIDATES {
                    self.candidates.remove(0);
                }
                self.candidates.push(AdaptationCandidate {
                    slot: i,
                    window: slot.window.clone(),
                    score: *score,
                });
            }
        }
        slot.window.clear();
        match result {
            Ok(score) if score.quality > 0.0 => {
                slot.last_score = Some(score);
                let contribution = self.fusion.add(self.last_t_us, i, score);
                self.trust.update(contribution);
                self.last_scored_us = Some(self.last_t_us);
                self.windows_scored += 1;
            }
            Ok(_) => {} // no usable evidence in this window: no opinion
            Err(e) => {
                self.windows_failed += 1;
                self.last_error = Some(e);
            }
        }
    }

    /// The most recent scoring failure, for logs.
    pub fn last_error(&self) -> Option<&HostError> {
        self.last_error.as_ref()
    }

    /// The assessment at time `now_us` (expires old evidence first).
    pub fn assess(&mut self, now_us: u64) -> Assessment {
        self.fusion.expire(now_us);
        if self.paused_at(now_us) {
            self.pause();
        }
        let enrolled = self.slots.iter().any(|s| s.profile.is_some());
        let trust = self.trust.trust();
        let fused = self.fusion.fused_llr();
        let cfg = self.trust.config();
        let state = if !enrolled {
            State::Unenrolled
        } else if self.last_scored_us.is_none() {
            State::Learning
        } else if trust < cfg.lockout {
            State::Drift
        } else if trust >= cfg.trusted && fused >= self.trusted_min_llr {
            State::Trusted
        } else {
            State::Uncertain
        };
        Assessment {
            state,
            trust,
            fused_llr: self.fusion.fused_llr(),
            modalities: self
                .slots
                .iter()
                .zip(self.fusion.per_modality())
                .map(|(s, e)| ModalityAssessment {
                    plugin: s.plugin.name().to_string(),
                    enrolled: s.profile.is_some(),
                    evidence: *e,
                    last_score: s.last_score.map(|sc| sc.llr),
                })
                .collect(),
            evidence_age_us: self.last_scored_us.map(|t| now_us.saturating_sub(t)),
            events_seen: self.events_seen,
            windows_scored: self.windows_scored,
            events_rejected: self.events_rejected,
            windows_failed: self.windows_failed,
            idle_resets: self.idle_resets,
        }
    }
}
