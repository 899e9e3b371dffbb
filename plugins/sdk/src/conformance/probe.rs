//! The recording harness: every call the checks make goes through a [`Probe`], which
//! notes panics and contract-breaking scores for the summary rows.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use crate::{ErrorKind, Event, PluginError, RVec, Score, LLR_LIMIT};

use super::Instance;

/// Every panic and every contract-breaking score seen during a run.
#[derive(Default)]
pub(super) struct Recorder {
    pub(super) panics: RefCell<Vec<String>>,
    pub(super) bad_scores: RefCell<Vec<String>>,
    pub(super) scores: Cell<usize>,
}

impl Recorder {
    pub(super) fn note<T>(
        &self,
        call: &str,
        result: Result<T, PluginError>,
    ) -> Result<T, PluginError> {
        if let Err(e) = &result {
            if e.kind == ErrorKind::PANICKED {
                self.panics
                    .borrow_mut()
                    .push(format!("{call}: {}", e.message));
            }
        }
        result
    }

    pub(super) fn note_score(
        &self,
        call: &str,
        result: Result<Score, PluginError>,
        max_events: Option<usize>,
    ) -> Result<Score, PluginError> {
        let result = self.note(call, result);
        if let Ok(s) = &result {
            self.scores.set(self.scores.get() + 1);
            if !s.is_valid() {
                self.bad_scores.borrow_mut().push(format!(
                    "{call}: llr {} quality {} (llr must be finite within ±{LLR_LIMIT}, quality within [0, 1])",
                    s.llr, s.quality
                ));
            } else if let Some(n) = max_events.filter(|&n| s.events as usize > n) {
                self.bad_scores.borrow_mut().push(format!(
                    "{call}: claims {} events from a window of {n}",
                    s.events
                ));
            }
        }
        result
    }
}

/// An instance whose every call is recorded.
pub(super) struct Probe<'a> {
    pub(super) inner: &'a dyn Instance,
    pub(super) rec: &'a Recorder,
}

impl Probe<'_> {
    pub(super) fn build_population(
        &self,
        call: &str,
        users: &[RVec<RVec<Event>>],
    ) -> Result<Vec<u8>, PluginError> {
        self.rec.note(call, self.inner.build_population(users))
    }
    pub(super) fn enroll(
        &self,
        call: &str,
        population: &[u8],
        windows: &[RVec<Event>],
    ) -> Result<Vec<u8>, PluginError> {
        self.rec.note(call, self.inner.enroll(population, windows))
    }
    pub(super) fn score(
        &self,
        call: &str,
        profile: &[u8],
        window: &[Event],
    ) -> Result<Score, PluginError> {
        self.rec
            .note_score(call, self.inner.score(profile, window), Some(window.len()))
    }
    pub(super) fn adapt(
        &self,
        call: &str,
        profile: &[u8],
        window: &[Event],
        score: Score,
    ) -> Result<Vec<u8>, PluginError> {
        self.rec
            .note(call, self.inner.adapt(profile, window, score))
    }
    pub(super) fn extract(&self, call: &str, window: &[Event]) -> Result<Vec<f64>, PluginError> {
        self.rec.note(call, self.inner.extract(window))
    }
    pub(super) fn score_features(
        &self,
        call: &str,
        profile: &[u8],
        sample: &[f64],
    ) -> Result<Score, PluginError> {
        self.rec
            .note_score(call, self.inner.score_features(profile, sample), None)
    }
}

pub(super) fn to_windows(windows: Vec<Vec<Event>>) -> Vec<RVec<Event>> {
    windows.into_iter().map(RVec::from).collect()
}

pub(super) fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Probability that a genuine score beats a shifted one (ties count half).
pub(super) fn auc(genuine: &[f64], shifted: &[f64]) -> f64 {
    let mut wins = 0.0;
    for g in genuine {
        for s in shifted {
            wins += if g > s {
                1.0
            } else if g == s {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (genuine.len() * shifted.len()).max(1) as f64
}

pub(super) fn describe<T>(result: &Result<T, PluginError>, ok: impl Fn(&T) -> String) -> String {
    match result {
        Ok(v) => ok(v),
        Err(e) => format!("error ({})", e.kind.name()),
    }
}

pub(super) fn describe_score(result: &Result<Score, PluginError>) -> String {
    describe(result, |s| format!("llr {:.2} q {:.2}", s.llr, s.quality))
}

pub(super) fn is_panic<T>(result: &Result<T, PluginError>) -> bool {
    matches!(result, Err(e) if e.kind == ErrorKind::PANICKED)
}

pub(super) fn format_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{us:.0} us")
    }
}
