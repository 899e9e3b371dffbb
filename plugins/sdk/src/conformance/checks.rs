//! The checks on descriptor, settings, behaviour, hostile windows, time and the feature
//! level. (Checks on blobs and adaptation: `blobs.rs`.)

use std::time::{Duration, Instant};

use super::probe::{
    auc, describe, describe_score, format_duration, is_panic, mean, to_windows, Probe, Recorder,
};
use super::*;
use crate::{ErrorKind, Event, EventKind, PluginDescriptor, PluginError, RVec, Score, LLR_LIMIT};

pub(super) fn check_descriptor(
    d: &PluginDescriptor,
    from_instance: Option<&PluginDescriptor>,
) -> Row {
    const NAME: &str = "descriptor";
    if let Err(reason) = d.validate() {
        return Row::new(NAME, Outcome::Fail, reason);
    }
    let mut kinds: Vec<EventKind> = d.event_kinds.iter().copied().collect();
    kinds.sort();
    kinds.dedup();
    if kinds.len() != d.event_kinds.len() {
        return Row::new(NAME, Outcome::Fail, "an event kind is declared twice");
    }
    if let Some(other) = from_instance {
        if other != d {
            return Row::new(
                NAME,
                Outcome::Fail,
                format!(
                    "the constructed plugin describes itself differently ({:?} {}) from the library ({:?} {})",
                    other.name.as_str(),
                    other.version,
                    d.name.as_str(),
                    d.version
                ),
            );
        }
    }
    let summary = format!(
        "{} {}, modality {} ({}), {} event kinds, {} features",
        d.name,
        d.version,
        d.modality,
        d.modality.0,
        d.event_kinds.len(),
        d.feature_names.len()
    );
    let mut names: Vec<&str> = d.feature_names.iter().map(|f| f.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Row::new(
            NAME,
            Outcome::Warn,
            format!("{summary}; a feature name repeats"),
        );
    }
    if d.description.trim().is_empty() {
        return Row::new(NAME, Outcome::Warn, format!("{summary}; no description"));
    }
    Row::new(NAME, Outcome::Pass, summary)
}

pub(super) fn check_config(subject: &dyn Subject, options: &Options, rec: &Recorder) -> Row {
    const NAME: &str = "config";
    let base = options.config.trim();
    let typo = if base.is_empty() {
        "habitus_conformance_unknown_key = 1".to_string()
    } else {
        format!("{base}\nhabitus_conformance_unknown_key = 1")
    };
    let given = if base.is_empty() {
        "defaults".to_string()
    } else {
        format!("{base:?}")
    };
    let mut problems = Vec::new();
    for (what, config) in [
        ("an unknown key", typo.as_str()),
        ("text that is not TOML", "= this is [not toml"),
    ] {
        match rec.note("new(bad config)", subject.instantiate(config)) {
            Ok(_) => problems.push(format!("accepts {what}")),
            Err(e) if e.kind == ErrorKind::PANICKED => {
                return Row::new(
                    NAME,
                    Outcome::Fail,
                    format!("panics on {what}: {}", e.message),
                )
            }
            Err(e) if e.kind != ErrorKind::INVALID_CONFIG => problems.push(format!(
                "refuses {what} as {} (not invalid config)",
                e.kind.name()
            )),
            Err(_) => {}
        }
    }
    if problems.is_empty() {
        Row::new(
            NAME,
            Outcome::Pass,
            format!("constructed from {given}; unknown keys and non-TOML refused"),
        )
    } else {
        Row::new(
            NAME,
            Outcome::Warn,
            format!(
                "constructed from {given}, but {} (a typo would silently fall back to a default)",
                problems.join(", ")
            ),
        )
    }
}

pub(super) fn bounds_row(rec: &Recorder) -> Row {
    let bad = rec.bad_scores.borrow();
    let n = rec.scores.get();
    if bad.is_empty() {
        Row::new(
            "score bounds",
            Outcome::Pass,
            format!(
                "all {n} scores finite, |llr| <= {LLR_LIMIT}, quality in [0, 1], events <= window"
            ),
        )
    } else {
        Row::new(
            "score bounds",
            Outcome::Fail,
            format!(
                "{} of {n} scores break the contract; first: {}",
                bad.len(),
                bad[0]
            ),
        )
    }
}

pub(super) fn panics_row(rec: &Recorder) -> Row {
    let panics = rec.panics.borrow();
    if panics.is_empty() {
        Row::new(
            "panics",
            Outcome::Pass,
            "none (every call returned normally)",
        )
    } else {
        Row::new(
            "panics",
            Outcome::Fail,
            format!(
                "{} calls panicked (contained by the SDK as 'plugin panicked' errors, but each is a bug); first: {}",
                panics.len(),
                panics[0]
            ),
        )
    }
}

pub(super) struct Checks<'a> {
    pub(super) probe: Probe<'a>,
    pub(super) subject: &'a dyn Subject,
    pub(super) options: &'a Options,
    pub(super) synthetic: Synthetic,
    pub(super) me: Habits,
    pub(super) population: Vec<u8>,
    pub(super) rows: Vec<Row>,
    pub(super) timing: Option<Timing>,
}

impl Checks<'_> {
    pub(super) fn push(&mut self, name: &'static str, outcome: Outcome, detail: impl Into<String>) {
        self.rows.push(Row::new(name, outcome, detail));
    }

    pub(super) fn enrol_windows(&self, habits: &Habits) -> Vec<RVec<Event>> {
        to_windows(
            self.synthetic
                .windows(habits, 0, self.synthetic.enrol_windows),
        )
    }

    pub(super) fn genuine(&self, i: u64) -> Vec<Event> {
        self.synthetic.window(&self.me, TRIAL_SEED + i)
    }

    pub(super) fn population_row(&mut self) {
        const NAME: &str = "population";
        let users: Vec<RVec<RVec<Event>>> = (0..POPULATION_PEOPLE)
            .map(|p| {
                RVec::from(to_windows(self.synthetic.windows(
                    &Habits::of(100 + p),
                    0,
                    POPULATION_WINDOWS,
                )))
            })
            .collect();
        let empty = self
            .probe
            .build_population("build_population(no users)", &[]);
        if is_panic(&empty) {
            return self.push(NAME, Outcome::Fail, "panics when given no users");
        }
        match self.probe.build_population("build_population", &users) {
            Ok(blob) if blob.is_empty() => self.push(
                NAME,
                Outcome::Pass,
                "empty blob: the built-in prior is used",
            ),
            Ok(blob) => {
                let detail = format!(
                    "{} bytes from {POPULATION_PEOPLE} simulated people x {POPULATION_WINDOWS} windows; used for enrolment",
                    blob.len()
                );
                self.population = blob;
                self.push(NAME, Outcome::Pass, detail)
            }
            Err(e) if e.kind == ErrorKind::PANICKED => {
                self.push(NAME, Outcome::Fail, format!("panicked: {}", e.message))
            }
            Err(e) if e.kind == ErrorKind::NOT_ENOUGH_DATA || e.kind == ErrorKind::UNSUPPORTED => {
                self.push(
                    NAME,
                    Outcome::Pass,
                    format!("none built ({e}); the built-in prior is used"),
                )
            }
            Err(e) => self.push(
                NAME,
                Outcome::Warn,
                format!("building from {POPULATION_PEOPLE} simulated people failed: {e}"),
            ),
        }
    }

    pub(super) fn enrol_row(&mut self) -> Option<Vec<u8>> {
        const NAME: &str = "enrol";
        let windows = self.enrol_windows(&self.me);
        let empty = self
            .probe
            .enroll("enroll(no windows)", &self.population, &[]);
        let one_empty =
            self.probe
                .enroll("enroll(one empty window)", &self.population, &[RVec::new()]);
        let result = self.probe.enroll("enroll", &self.population, &windows);
        let profile = match result {
            Ok(p) if p.is_empty() => {
                self.push(NAME, Outcome::Fail, "returned an empty profile");
                return None;
            }
            Ok(p) => p,
            Err(e) => {
                let hint = if e.kind == ErrorKind::PANICKED {
                    ""
                } else {
                    " (if the synthetic data does not suit the plugin, pass Options::synthetic)"
                };
                self.push(
                    NAME,
                    Outcome::Fail,
                    format!(
                        "{} windows of {} {} events: {e}{hint}",
                        windows.len(),
                        self.synthetic.window_events,
                        self.synthetic.behaviour.name()
                    ),
                );
                return None;
            }
        };
        let detail = format!(
            "{}-byte profile from {} windows of {} events",
            profile.len(),
            windows.len(),
            self.synthetic.window_events
        );
        if empty.is_ok() || one_empty.is_ok() {
            self.push(
                NAME,
                Outcome::Fail,
                format!("{detail}, but a profile was also built from no evidence (no windows, or one empty window): expected 'not enough data'"),
            );
        } else if is_panic(&empty) || is_panic(&one_empty) {
            self.push(
                NAME,
                Outcome::Fail,
                format!("{detail}, but enrolling nothing panicked"),
            );
        } else {
            self.push(
                NAME,
                Outcome::Pass,
                format!(
                    "{detail}; no windows refused ({})",
                    describe(&empty, |_| String::new())
                ),
            );
        }
        Some(profile)
    }

    /// LLRs of `count` trial windows at `shift`; the errors, if any.
    pub(super) fn trial(&self, profile: &[u8], shift: f64) -> (Vec<f64>, Vec<PluginError>) {
        let habits = self.me.shifted(shift);
        let mut llrs = Vec::new();
        let mut errors = Vec::new();
        for i in 0..self.synthetic.trial_windows as u64 {
            let w = self.synthetic.window(&habits, TRIAL_SEED + i);
            match self.probe.score("score(trial window)", profile, &w) {
                Ok(s) if s.is_valid() => llrs.push(s.llr),
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
        }
        (llrs, errors)
    }

    pub(super) fn monotone_row(&mut self, profile: &[u8]) {
        const NAME: &str = "genuine > shifted";
        let mut means = Vec::new();
        let mut sets = Vec::new();
        for shift in [0.0, SHIFT, LARGE_SHIFT] {
            let (llrs, errors) = self.trial(profile, shift);
            if llrs.len() * 5 < self.synthetic.trial_windows * 4 {
                let first = errors
                    .first()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "invalid scores".into());
                return self.push(
                    NAME,
                    Outcome::Fail,
                    format!(
                        "only {} of {} windows at shift {shift} could be scored; first error: {first}",
                        llrs.len(),
                        self.synthetic.trial_windows
                    ),
                );
            }
            means.push(mean(&llrs));
            sets.push(llrs);
        }
        let (g, s, l) = (means[0], means[1], means[2]);
        let detail = format!(
            "mean LLR {g:.2} genuine, {s:.2} shifted, {l:.2} clearly shifted ({} windows each); AUC genuine vs shifted {:.2}",
            self.synthetic.trial_windows,
            auc(&sets[0], &sets[1])
        );
        if !(g > s && s >= l && g > l) {
            self.push(
                NAME,
                Outcome::Fail,
                format!(
                    "{detail}: scores must fall as behaviour moves away from the enrolled habits"
                ),
            )
        } else if !(g > 0.0 && l < 0.0) {
            self.push(
                NAME,
                Outcome::Warn,
                format!("{detail}: genuine should score above 0 and clearly different behaviour below 0 (calibration)"),
            )
        } else {
            self.push(NAME, Outcome::Pass, detail)
        }
    }

    pub(super) fn deterministic_row(&mut self, profile: &[u8]) {
        const NAME: &str = "deterministic";
        let windows = self.enrol_windows(&self.me);
        let again = self
            .probe
            .enroll("enroll(again)", &self.population, &windows);
        let fresh = match self.probe.rec.note(
            "new(config)",
            self.subject.instantiate(&self.options.config),
        ) {
            Ok(f) => f,
            Err(e) => {
                return self.push(
                    NAME,
                    Outcome::Fail,
                    format!("a second instance cannot be built: {e}"),
                )
            }
        };
        let fresh = Probe {
            inner: fresh.as_ref(),
            rec: self.probe.rec,
        };
        let fresh_profile = fresh.enroll("enroll(fresh instance)", &self.population, &windows);
        let mut differences = Vec::new();
        let same_bytes =
            matches!((&again, &fresh_profile), (Ok(a), Ok(b)) if a == profile && b == profile);
        if again.is_err() || fresh_profile.is_err() {
            differences.push("enrolling the same windows again failed".to_string());
        }
        for i in 0..5 {
            let w = self.genuine(i);
            let mut results = vec![
                self.probe.score("score", profile, &w),
                self.probe.score("score(again)", profile, &w),
                fresh.score("score(fresh instance)", profile, &w),
            ];
            if let Ok(p) = &fresh_profile {
                results.push(self.probe.score("score(profile of fresh instance)", p, &w));
            }
            let first = &results[0];
            for r in &results[1..] {
                if !same_result(first, r) {
                    differences.push(format!(
                        "window {i}: {} then {}",
                        describe_score(first),
                        describe_score(r)
                    ));
                }
            }
        }
        if !differences.is_empty() {
            self.push(
                NAME,
                Outcome::Fail,
                format!("the same input gave different results: {}", differences[0]),
            )
        } else if same_bytes {
            self.push(
                NAME,
                Outcome::Pass,
                "same profile bytes and bit-identical scores, also from a fresh instance",
            )
        } else {
            self.push(
                NAME,
                Outcome::Pass,
                "bit-identical scores, also from a fresh instance (profile bytes differ, e.g. a salt)",
            )
        }
    }

    /// Interface 0.2: a prepared profile scores exactly as `score` with the bytes, and a
    /// corrupted profile is refused by `prepare` or by every prepared score.
    pub(super) fn prepared_row(&mut self, profile: &[u8]) {
        const NAME: &str = "prepared profile";
        let mut windows: Vec<Vec<Event>> = (0..5).map(|i| self.genuine(i)).collect();
        windows.push(Vec::new());
        let prepared = match self.probe.inner.score_prepared(profile, &windows) {
            Ok(p) => p,
            Err(e) => {
                return self.push(
                    NAME,
                    Outcome::Fail,
                    format!("prepare refused the profile score accepts: {e}"),
                )
            }
        };
        for (i, (w, p)) in windows.iter().zip(&prepared).enumerate() {
            let direct = self.probe.score("score", profile, w);
            if !same_result(&direct, p) {
                return self.push(
                    NAME,
                    Outcome::Fail,
                    format!(
                        "window {i}: score gave {}, the prepared profile {}",
                        describe_score(&direct),
                        describe_score(p)
                    ),
                );
            }
        }
        // A flipped bit in the middle of the profile.
        let mut corrupted = profile.to_vec();
        if let Some(b) = corrupted.get_mut(profile.len() / 2) {
            *b ^= 0x10;
        }
        if let Ok(scores) = self.probe.inner.score_prepared(&corrupted, &windows[..1]) {
            if let Some(Ok(s)) = scores.first() {
                return self.push(
                    NAME,
                    Outcome::Warn,
                    format!(
                        "a profile with one bit flipped was prepared and scored (llr {:.2})",
                        s.llr
                    ),
                );
            }
        }
        self.push(
            NAME,
            Outcome::Pass,
            "bit-identical to score on 6 windows; a corrupted profile is refused",
        )
    }

    pub(super) fn empty_window_row(&mut self, profile: &[u8]) {
        const NAME: &str = "empty window";
        let r = self.probe.score("score(empty window)", profile, &[]);
        let x = self.probe.extract("extract(empty window)", &[]);
        match &r {
            Ok(s) if s.quality > 0.0 && s.llr != 0.0 => self.push(
                NAME,
                Outcome::Fail,
                format!("scored llr {:.2} with quality {:.2} from no events: no evidence must carry quality 0", s.llr, s.quality),
            ),
            _ if is_panic(&r) || is_panic(&x) => self.push(NAME, Outcome::Fail, "panicked"),
            _ => self.push(
                NAME,
                Outcome::Pass,
                format!("score: {}", describe_score(&r)),
            ),
        }
    }

    pub(super) fn one_event_row(&mut self, profile: &[u8]) {
        const NAME: &str = "one-event window";
        let w = self.genuine(0);
        let one = &w[..w.len().min(1)];
        let r = self.probe.score("score(one-event window)", profile, one);
        if is_panic(&r) {
            self.push(NAME, Outcome::Fail, "panicked")
        } else {
            self.push(
                NAME,
                Outcome::Pass,
                format!("score: {}", describe_score(&r)),
            )
        }
    }

    /// Returns the large window's µs per event, when it could be scored.
    pub(super) fn large_window_row(&mut self, profile: &[u8]) -> Option<f64> {
        const NAME: &str = "large window";
        let n = self.options.large_window_events;
        let w = self.synthetic.window_of(&self.me, LARGE_SEED, n);
        let start = Instant::now();
        let r = self.probe.score("score(large window)", profile, &w);
        let mut elapsed = start.elapsed();
        if r.is_ok() {
            let start = Instant::now();
            let _ = self.probe.score("score(large window, again)", profile, &w);
            elapsed = elapsed.min(start.elapsed());
        }
        let per_event = elapsed.as_secs_f64() * 1e6 / w.len().max(1) as f64;
        if is_panic(&r) {
            self.push(NAME, Outcome::Fail, format!("{} events: panicked", w.len()));
            return None;
        }
        self.push(
            NAME,
            Outcome::Pass,
            format!(
                "{} events: {} in {}",
                w.len(),
                describe_score(&r),
                format_duration(elapsed)
            ),
        );
        r.is_ok().then_some(per_event)
    }

    pub(super) fn out_of_order_row(&mut self, profile: &[u8]) {
        const NAME: &str = "out-of-order events";
        let w = self.genuine(1);
        let mut swapped = w.clone();
        let mut swaps = 0;
        for i in (1..swapped.len()).step_by((swapped.len() / 4).max(1)) {
            if swapped[i - 1].t_us != swapped[i].t_us {
                let t = swapped[i - 1].t_us;
                swapped[i - 1].t_us = swapped[i].t_us;
                swapped[i].t_us = t;
                swaps += 1;
            }
        }
        let mut reversed = w.clone();
        reversed.reverse();
        let a = self.probe.score("score(swapped times)", profile, &swapped);
        let b = self
            .probe
            .score("score(reversed window)", profile, &reversed);
        let mut enrol = self.enrol_windows(&self.me);
        if let Some(last) = enrol.last_mut() {
            *last = RVec::from(reversed.clone());
        }
        let c = self
            .probe
            .enroll("enroll(with a reversed window)", &self.population, &enrol);
        let detail = format!(
            "{swaps} swapped pairs: {}; reversed: {}; enrolment with one reversed window: {}",
            describe_score(&a),
            describe_score(&b),
            describe(&c, |_| "profile built".into())
        );
        if is_panic(&a) || is_panic(&b) || is_panic(&c) {
            self.push(NAME, Outcome::Fail, format!("panicked; {detail}"))
        } else {
            self.push(NAME, Outcome::Pass, detail)
        }
    }

    pub(super) fn non_finite_row(&mut self, profile: &[u8]) {
        const NAME: &str = "NaN and infinities";
        let w = self.genuine(2);
        let mut nan = w.clone();
        for (i, e) in nan.iter_mut().enumerate().filter(|(i, _)| i % 7 == 3) {
            e.x = f32::NAN;
            e.y = if i % 2 == 0 { f32::INFINITY } else { f32::NAN };
            e.pressure = f32::NAN;
            e.area = f32::NEG_INFINITY;
        }
        let mut far = w.clone();
        if let Some(last) = far.last_mut() {
            last.t_us = u64::MAX;
        }
        let mut zero = w.clone();
        if let Some(first) = zero.first_mut() {
            first.t_us = 0;
        }
        let same_time: Vec<Event> = w.iter().map(|e| Event { t_us: 7, ..*e }).collect();
        let results = [
            (
                "NaN/inf fields",
                self.probe.score("score(NaN fields)", profile, &nan),
            ),
            (
                "time u64::MAX",
                self.probe.score("score(time u64::MAX)", profile, &far),
            ),
            ("time 0", self.probe.score("score(time 0)", profile, &zero)),
            (
                "one timestamp",
                self.probe
                    .score("score(all at one time)", profile, &same_time),
            ),
        ];
        let mut enrol = self.enrol_windows(&self.me);
        for e in enrol.iter_mut().flat_map(|w| w.iter_mut()).step_by(5) {
            e.x = f32::NAN;
            e.y = f32::NAN;
        }
        let poisoned = self
            .probe
            .enroll("enroll(NaN fields)", &self.population, &enrol);
        let after = match &poisoned {
            Ok(p) => Some(self.probe.score("score(profile enrolled with NaNs)", p, &w)),
            Err(_) => None,
        };
        let mut detail: Vec<String> = results
            .iter()
            .map(|(what, r)| format!("{what}: {}", describe_score(r)))
            .collect();
        detail.push(format!(
            "enrolment with NaNs: {}",
            match &after {
                Some(r) => format!("profile built, then {}", describe_score(r)),
                None => describe(&poisoned, |_| String::new()),
            }
        ));
        let panicked = results.iter().any(|(_, r)| is_panic(r))
            || is_panic(&poisoned)
            || after.as_ref().is_some_and(is_panic);
        self.push(
            NAME,
            if panicked {
                Outcome::Fail
            } else {
                Outcome::Pass
            },
            detail.join("; "),
        )
    }

    pub(super) fn unknown_kinds_row(&mut self, profile: &[u8]) {
        const NAME: &str = "unknown event kinds";
        let w = self.genuine(3);
        let declared: Vec<EventKind> = self.synthetic.kinds.clone();
        let mut foreign_kinds: Vec<EventKind> = EventKind::ALL
            .iter()
            .copied()
            .filter(|k| !declared.contains(k))
            .collect();
        foreign_kinds.push(EventKind(200));
        let mut mixed = Vec::with_capacity(w.len() * 2);
        for (i, e) in w.iter().enumerate() {
            mixed.push(*e);
            let kind = foreign_kinds[i % foreign_kinds.len()];
            mixed.push(Event {
                kind,
                key: 0xDEAD_BEEF,
                x: 13.0,
                y: -7.0,
                pressure: 0.5,
                area: 3.0,
                pointer: 9,
                ..*e
            });
        }
        let clean = self.probe.score("score", profile, &w);
        let r = self
            .probe
            .score("score(unknown kinds mixed in)", profile, &mixed);
        let detail = format!(
            "every other event of an undeclared or unknown kind: {} (clean window {})",
            describe_score(&r),
            describe_score(&clean)
        );
        match (&clean, &r) {
            _ if is_panic(&r) => self.push(NAME, Outcome::Fail, format!("panicked; {detail}")),
            (Ok(a), Ok(b)) if (a.llr - b.llr).abs() > 1e-9 => self.push(
                NAME,
                Outcome::Warn,
                format!("{detail}: kinds a plugin does not consume should be ignored"),
            ),
            _ => self.push(NAME, Outcome::Pass, detail),
        }
    }

    pub(super) fn timing_row(&mut self, profile: &[u8], large: Option<f64>) {
        const NAME: &str = "time per event";
        let w = self.synthetic.window_of(&self.me, TIMING_SEED, 100);
        let budget = self.options.budget_us_per_event;
        if self
            .probe
            .score("score(100-event window)", profile, &w)
            .is_err()
        {
            return self.push(
                NAME,
                Outcome::Warn,
                "not measured: a 100-event window could not be scored",
            );
        }
        let start = Instant::now();
        let mut calls = 0u32;
        while calls < 5 || (start.elapsed() < Duration::from_millis(30) && calls < 2000) {
            let _ = self.probe.score("score(100-event window)", profile, &w);
            calls += 1;
        }
        let small = start.elapsed().as_secs_f64() * 1e6 / (calls as f64 * w.len().max(1) as f64);
        let large_text = match large {
            Some(us) => format!(
                "{us:.2} us/event at {} events",
                self.options.large_window_events
            ),
            None => "large window not scored".into(),
        };
        self.timing = Some(Timing {
            small_window_events: w.len(),
            small_us_per_event: small,
            large_window_events: self.options.large_window_events,
            large_us_per_event: large.unwrap_or(f64::NAN),
        });
        let detail = format!(
            "{small:.2} us/event at {} events, {large_text} (budget {budget} us/event)",
            w.len()
        );
        let over = small > budget || large.is_some_and(|l| l > budget);
        if over {
            self.push(NAME, Outcome::Warn, format!("{detail}: over budget"))
        } else {
            self.push(NAME, Outcome::Pass, detail)
        }
    }

    pub(super) fn features_row(&mut self) {
        const NAME: &str = "feature interface";
        let w = self.genuine(6);
        let v = match self.probe.extract("extract", &w) {
            Ok(v) => v,
            Err(e) if e.kind == ErrorKind::UNSUPPORTED => {
                return self.push(
                    NAME,
                    Outcome::Warn,
                    format!(
                        "unsupported ({}): evaluations cannot feed pre-computed features",
                        e.message
                    ),
                )
            }
            Err(e) => {
                let outcome = if e.kind == ErrorKind::PANICKED {
                    Outcome::Fail
                } else {
                    Outcome::Warn
                };
                return self.push(
                    NAME,
                    outcome,
                    format!("extract on a genuine window failed: {e}"),
                );
            }
        };
        let names = self.synthetic_feature_names();
        if names == 0 {
            return self.push(
                NAME,
                Outcome::Warn,
                format!(
                    "extract returns {} values but the descriptor names no features",
                    v.len()
                ),
            );
        }
        if v.is_empty() || v.len() % names != 0 {
            return self.push(
                NAME,
                Outcome::Fail,
                format!("extract returns {} values; the descriptor names {names} features (the vector must be that long, or a repeat of that pattern)", v.len()),
            );
        }
        if v.iter().any(|x| !x.is_finite()) {
            return self.push(NAME, Outcome::Fail, "extract returned a non-finite feature");
        }
        let vectors = |habits: &Habits, first: u64, count: usize| -> Vec<RVec<f64>> {
            (0..count as u64)
                .filter_map(|i| {
                    self.probe
                        .extract("extract", &self.synthetic.window(habits, first + i))
                        .ok()
                        .map(RVec::from)
                })
                .collect()
        };
        let users: Vec<RVec<RVec<f64>>> = (0..POPULATION_PEOPLE)
            .map(|p| RVec::from(vectors(&Habits::of(100 + p), 0, POPULATION_WINDOWS)))
            .collect();
        let population = self.probe.rec.note(
            "build_population_features",
            self.probe.inner.build_population_features(&users),
        );
        let population = population.unwrap_or_default();
        let enrol = vectors(&self.me, 0, self.synthetic.enrol_windows);
        let profile = match self.probe.rec.note(
            "enroll_features",
            self.probe.inner.enroll_features(&population, &enrol),
        ) {
            Ok(p) => p,
            Err(e) if e.kind == ErrorKind::UNSUPPORTED => {
                return self.push(
                    NAME,
                    Outcome::Warn,
                    format!(
                        "extract gives {} features, but enroll_features is unsupported",
                        v.len()
                    ),
                )
            }
            Err(e) => {
                return self.push(NAME, Outcome::Fail, format!("enroll_features failed: {e}"))
            }
        };
        let score_all = |vs: &[RVec<f64>]| -> Vec<f64> {
            vs.iter()
                .filter_map(|v| {
                    self.probe
                        .score_features("score_features", &profile, v)
                        .ok()
                })
                .filter(Score::is_valid)
                .map(|s| s.llr)
                .collect()
        };
        let trials = self.synthetic.trial_windows;
        let genuine = score_all(&vectors(&self.me, TRIAL_SEED, trials));
        let shifted = score_all(&vectors(&self.me.shifted(LARGE_SHIFT), TRIAL_SEED, trials));
        let bad =
            self.probe
                .score_features("score_features(NaN)", &profile, &vec![f64::NAN; v.len()]);
        if is_panic(&bad) {
            return self.push(
                NAME,
                Outcome::Fail,
                "score_features panicked on NaN features",
            );
        }
        if genuine.is_empty() || shifted.is_empty() {
            return self.push(
                NAME,
                Outcome::Fail,
                "score_features could not score the trial vectors",
            );
        }
        let (g, s) = (mean(&genuine), mean(&shifted));
        let detail = format!(
            "{} features; score_features mean LLR {g:.2} genuine vs {s:.2} clearly shifted; NaN features: {}",
            v.len(),
            describe_score(&bad)
        );
        if g > s {
            self.push(NAME, Outcome::Pass, detail)
        } else {
            self.push(
                NAME,
                Outcome::Fail,
                format!("{detail}: genuine must score higher"),
            )
        }
    }

    pub(super) fn synthetic_feature_names(&self) -> usize {
        self.probe.inner.descriptor().feature_names.len()
    }
}

/// Bit-identical scores, or errors of the same kind.
fn same_result(a: &Result<Score, PluginError>, b: &Result<Score, PluginError>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => {
            a.llr.to_bits() == b.llr.to_bits()
                && a.quality.to_bits() == b.quality.to_bits()
                && a.events == b.events
        }
        (Err(a), Err(b)) => a.kind == b.kind,
        _ => false,
    }
}
