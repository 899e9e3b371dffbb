//! Naive-Bayes fusion: the weighted sum of calibrated LLRs over a sliding time window.
//!
//! If the windows' evidence were independent given the user, the sum of their LLRs would
//! be the LLR of all of it. They are not quite independent (and plugins are not perfectly
//! calibrated), so each modality has a weight `≤ 1` measured from its reliability, and
//! every score counts with its `quality`. A modality with no recent evidence adds nothing:
//! missing is not suspicious.

use std::collections::{BTreeMap, VecDeque};

use habitus_plugin::Score;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FusionConfig {
    /// How long a score keeps counting, in seconds.
    pub window_s: f64,
    /// Per-plugin weight (by plugin name); plugins not listed weigh 1.
    pub weights: BTreeMap<String, f64>,
}

impl Default for FusionConfig {
    fn default() -> Self {
        FusionConfig {
            window_s: 300.0,
            weights: BTreeMap::new(),
        }
    }
}

/// The largest fusion weight a configuration may set.
pub const MAX_WEIGHT: f64 = 100.0;
/// The longest fusion window, in seconds.
pub const MAX_WINDOW_S: f64 = 86_400.0;

impl FusionConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.window_s.is_finite() && self.window_s > 0.0 && self.window_s <= MAX_WINDOW_S) {
            return Err(format!(
                "fusion window_s = {}: must be positive and at most {MAX_WINDOW_S} (a day)",
                self.window_s
            ));
        }
        // A weight multiplies a plugin's LLRs; beyond this one window decides everything,
        // and huge weights would overflow the fused sum to infinity.
        if let Some((name, w)) = self
            .weights
            .iter()
            .find(|(_, w)| !(w.is_finite() && (0.0..=MAX_WEIGHT).contains(*w)))
        {
            return Err(format!(
                "fusion weight of {name} must be a number within 0..={MAX_WEIGHT}, got {w}"
            ));
        }
        Ok(())
    }

    pub fn weight(&self, plugin: &str) -> f64 {
        self.weights.get(plugin).copied().unwrap_or(1.0)
    }
}

/// Per-modality part of the fused evidence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModalityEvidence {
    /// Weighted sum of this modality's LLRs in the window.
    pub llr: f64,
    /// Scores in the window.
    pub windows: u32,
}

#[derive(Clone, Debug)]
pub struct Fusion {
    window_us: u64,
    weights: Vec<f64>,
    recent: VecDeque<(u64, usize, f64)>,
    per_modality: Vec<ModalityEvidence>,
}

impl Fusion {
    /// `weights[i]` is the weight of modality slot `i`.
    pub fn new(window_s: f64, weights: Vec<f64>) -> Fusion {
        let n = weights.len();
        Fusion {
            window_us: (window_s * 1e6) as u64,
            weights,
            recent: VecDeque::new(),
            per_modality: vec![ModalityEvidence::default(); n],
        }
    }

    /// Adds a score of slot `modality` at time `t_us`; returns its weighted contribution.
    pub fn add(&mut self, t_us: u64, modality: usize, score: Score) -> f64 {
        let contribution = self.weights[modality] * score.quality * score.llr;
        self.recent.push_back((t_us, modality, contribution));
        let m = &mut self.per_modality[modality];
        m.llr += contribution;
        m.windows += 1;
        self.expire(t_us);
        contribution
    }

    /// Forgets scores older than the window at time `now_us`.
    pub fn expire(&mut self, now_us: u64) {
        while let Some(&(t, m, c)) = self.recent.front() {
            if now_us.saturating_sub(t) <= self.window_us {
                break;
            }
            self.recent.pop_front();
            let e = &mut self.per_modality[m];
            e.llr -= c;
            e.windows -= 1;
            if e.windows == 0 {
                e.llr = 0.0; // no drift from floating-point cancellation
            }
        }
    }

    /// Forgets every score (the input paused: see `SessionConfig::idle_reset_s`).
    pub fn clear(&mut self) {
        self.recent.clear();
        for m in &mut self.per_modality {
            *m = ModalityEvidence::default();
        }
    }

    pub fn fused_llr(&self) -> f64 {
        self.per_modality.iter().map(|m| m.llr).sum()
    }

    pub fn per_modality(&self) -> &[ModalityEvidence] {
        &self.per_modality
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_weighted_scores_and_forgets_old_ones() {
        let mut f = Fusion::new(10.0, vec![1.0, 0.5]);
        f.add(0, 0, Score::new(2.0, 1.0, 5));
        f.add(1_000_000, 1, Score::new(-4.0, 0.5, 5));
        assert!((f.fused_llr() - (2.0 - 1.0)).abs() < 1e-12);
        f.expire(10_500_000); // first score is 10.5 s old
        assert!((f.fused_llr() + 1.0).abs() < 1e-12);
        assert_eq!(f.per_modality()[0].windows, 0);
        f.expire(100_000_000);
        assert_eq!(f.fused_llr(), 0.0);
    }
}
