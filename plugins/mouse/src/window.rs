//! The window model: scores a run of consecutive actions as a whole.
//!
//! The action model ([`crate::model`]) scores every action on its own and averages. A
//! person's habits also show in how their actions *vary* within one sitting (how
//! steady their speed is from one movement to the next, how often they pause, how their
//! clicks mix with moves), which no single action shows. So a run of `n` consecutive
//! actions is summarised by, per action feature, the mean, the standard deviation and
//! the median over the run ([`WINDOW_FEATURES`] = 3 × 53 numbers), and a second per-user
//! boosted tree ensemble learns the user's runs against other people's.
//!
//! Training runs are cut from **consecutive** actions, for both classes alike: a run
//! sampled from scattered actions varies more than a run from one sitting, and a model
//! trained on such impostor runs would learn "varies a lot" rather than "someone else".
//! That is why a population must say its rows are consecutive
//! ([`crate::model::Population::consecutive`]) before a window model is trained from it.
//! A population member's rows are their windows one after the other, so the user's
//! enrolment windows are likewise joined (per calibration fold) before runs are cut:
//! runs of both classes may span a window boundary, and short enrolment windows still
//! give long runs. Runs of `window_train_sizes` actions (8, 16 and 32) start every
//! `window_stride` actions; a population member contributes at most
//! `window_runs_per_user` runs (per calibration block when there are fewer members than
//! folds), the user at most [`MAX_USER_RUNS`], taken evenly before any is summarised.
//!
//! The raw output is calibrated into an LLR like the action model's: cross-validation
//! with the population split by person, a logistic fit on held-out runs, clipped to
//! ±`window_llr_cap`. A window with at least `window_min_actions` actions scores with
//! this model; shorter windows keep the action model's aggregate.
//!
//! On Balabit's training files (validation protocol, each user's last, second-last or
//! third-last training session held out and cut into runs of 16 actions) a Python
//! prototype measured pooled AUC 0.9925 / 0.9154 / 0.9903 for the window model against
//! 0.9815 / 0.8646 / 0.9794 for the mean of the action scores, and `habitus eval balabit
//! --validation` agreed (whole pseudo-sessions: AUC 0.9765 against 0.9616).
//!
//! **Off by default** (`window_model = false`): on Balabit's labelled test sessions the
//! calibrated window model scored a pooled session AUC of 0.9438 against 0.9506 for the
//! action model (better only on runs of 20 actions: 0.9771 against 0.9645). The
//! prototype traced the loss to the per-user calibration: the same window model's raw
//! outputs pooled to 0.955 and its calibrated ones to 0.943, because each user's
//! held-out *training* runs set offsets (−0.3 to +2.2) that do not hold for their test
//! sessions. A calibration that transfers is the open problem; see docs/results.md.

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::features::FEATURES;
use crate::model::{sample_even, train_booster, Row};
use habitus_boost::{Booster, CompiledBooster};
use habitus_plugin::stats::median;

/// Per action feature: mean, standard deviation and median over the window.
pub const WINDOW_FEATURES: usize = 3 * FEATURES;

/// The calibrated window model of a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowModel {
    /// `llr = offset + slope · booster(summary)`, clipped to ±`llr_cap`.
    pub booster: Booster,
    pub offset: f64,
    pub slope: f64,
    pub llr_cap: f64,
    /// Fewest actions a window needs to be scored by this model.
    pub min_actions: usize,
}

/// The summary of a run of actions: per feature the mean, then per feature the
/// (population) standard deviation, then per feature the median. `rows` must not be
/// empty.
pub fn summary<'a>(rows: impl Iterator<Item = &'a [f64]> + Clone) -> Vec<f64> {
    let n = rows.clone().count().max(1) as f64;
    let mut out = vec![0.0; WINDOW_FEATURES];
    for r in rows.clone() {
        for (o, v) in out[..FEATURES].iter_mut().zip(r) {
            *o += v;
        }
    }
    for o in &mut out[..FEATURES] {
        *o /= n;
    }
    for r in rows.clone() {
        for j in 0..FEATURES {
            out[FEATURES + j] += (r[j] - out[j]).powi(2);
        }
    }
    for o in &mut out[FEATURES..2 * FEATURES] {
        *o = (*o / n).sqrt();
    }
    let mut column = Vec::with_capacity(n as usize);
    for j in 0..FEATURES {
        column.clear();
        column.extend(rows.clone().map(|r| r[j]));
        out[2 * FEATURES + j] = median(&column);
    }
    out
}

/// Training runs of one list of consecutive actions: every `stride` actions, one run of
/// each size that fits; at most `cap` of them, taken evenly (chosen before any is
/// summarised, so the cap also bounds the work).
pub fn runs_of(rows: &[Row], sizes: &[usize], stride: usize, cap: usize) -> Vec<Vec<f64>> {
    let mut spans = Vec::new();
    for &size in sizes {
        let mut start = 0;
        while size > 0 && start + size <= rows.len() {
            spans.push(start..start + size);
            start += stride.max(1);
        }
    }
    sample_even(&spans, cap)
        .into_iter()
        .map(|span| summary(rows[span].iter().map(Vec::as_slice)))
        .collect()
}

impl WindowModel {
    /// Trains and calibrates the window model. `gen_folds` are the user's enrolment
    /// windows per calibration fold, `imp_folds` the population members per fold (so a
    /// fold's held-out impostors are people its model never saw, when there are at
    /// least as many members as folds); only the folds both lists have are used.
    /// `None` when there are too few runs of either class, or when the model ranks the
    /// user below other people (then the action model alone is the better judge).
    pub fn train(
        gen_folds: &[Vec<Vec<Row>>],
        imp_folds: &[Vec<Vec<Row>>],
        config: &Config,
    ) -> Option<WindowModel> {
        let sizes = &config.window_train_sizes;
        let stride = config.window_stride;
        let per_fold = MAX_USER_RUNS / gen_folds.len().max(1);
        // The user's windows of one fold joined, like a population member's rows.
        let gen: Vec<Vec<Vec<f64>>> = gen_folds
            .iter()
            .map(|f| runs_of(&f.concat(), sizes, stride, per_fold))
            .collect();
        let imp: Vec<Vec<Vec<f64>>> = imp_folds
            .iter()
            .map(|f| {
                f.iter()
                    .flat_map(|person| runs_of(person, sizes, stride, config.window_runs_per_user))
                    .collect()
            })
            .collect();
        let k = gen.len().min(imp.len());
        // Few runs make a poor and poorly calibrated model: the action model alone is
        // then the better judge.
        let enough = |v: &[Vec<Vec<f64>>]| v.iter().map(Vec::len).sum::<usize>() >= MIN_RUNS;
        if !enough(&gen) || !enough(&imp) {
            return None;
        }
        let (mut g, mut i) = (Vec::new(), Vec::new());
        for f in 0..k {
            let train_gen: Vec<&Vec<f64>> =
                (0..k).filter(|&o| o != f).flat_map(|o| &gen[o]).collect();
            let train_imp: Vec<&Vec<f64>> =
                (0..k).filter(|&o| o != f).flat_map(|o| &imp[o]).collect();
            if train_gen.is_empty() || train_imp.is_empty() {
                continue;
            }
            let b = train_booster(&train_gen, &train_imp, WINDOW_FEATURES, config);
            g.extend(gen[f].iter().map(|r| b.predict(r)));
            i.extend(imp[f].iter().map(|r| b.predict(r)));
        }
        let (offset, slope) = habitus_plugin::stats::fit_llr_calibration(&g, &i)?;
        if !(slope > 0.0 && offset.is_finite() && slope.is_finite()) {
            return None;
        }
        let all_gen: Vec<&Vec<f64>> = gen.iter().flatten().collect();
        let all_imp: Vec<&Vec<f64>> = imp.iter().flatten().collect();
        Some(WindowModel {
            booster: train_booster(&all_gen, &all_imp, WINDOW_FEATURES, config),
            offset,
            slope,
            llr_cap: config.window_llr_cap,
            min_actions: config.window_min_actions,
        })
    }

    pub fn is_valid(&self) -> bool {
        self.booster.features == WINDOW_FEATURES
            && self.booster.validate().is_ok()
            && self.offset.is_finite()
            && self.slope.is_finite()
            && self.llr_cap.is_finite()
            && self.llr_cap > 0.0
            && self.min_actions >= 2
    }

    /// The window's LLR from its summary; `compiled` is the booster compiled, when it
    /// compiled (the same values, faster). A NaN counts as the strongest evidence
    /// against (fail safe).
    pub fn llr(&self, summary: &[f64], compiled: Option<&CompiledBooster>) -> f64 {
        let raw = match compiled {
            Some(c) => c.predict(summary),
            None => self.booster.predict(summary),
        };
        let llr = self.offset + self.slope * raw;
        if llr.is_nan() {
            return -self.llr_cap;
        }
        llr.clamp(-self.llr_cap, self.llr_cap)
    }
}

/// Fewest training runs of either class for a window model (about 280 consecutive
/// actions in one list with the default sizes and stride).
pub const MIN_RUNS: usize = 100;
/// Most training runs taken from the user's enrolment (all folds together).
pub const MAX_USER_RUNS: usize = 20_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_mean_sd_and_median_per_feature() {
        let rows: Vec<Row> = (0..4)
            .map(|i| (0..FEATURES).map(|j| (i * (j + 1)) as f64).collect())
            .collect();
        let s = summary(rows.iter().map(Vec::as_slice));
        assert_eq!(s.len(), WINDOW_FEATURES);
        // Feature 0 takes 0, 1, 2, 3: mean 1.5, sd sqrt(1.25), median 1.5.
        assert_eq!(s[0], 1.5);
        assert!((s[FEATURES] - 1.25f64.sqrt()).abs() < 1e-12);
        assert_eq!(s[2 * FEATURES], 1.5);
        // Feature 2 takes 0, 3, 6, 9.
        assert_eq!(s[2], 4.5);
        assert_eq!(s[2 * FEATURES + 2], 4.5);
        // One action: no spread.
        let one = summary(rows[3..].iter().map(Vec::as_slice));
        assert!(one[FEATURES..2 * FEATURES].iter().all(|&v| v == 0.0));
        assert_eq!(one[..FEATURES], one[2 * FEATURES..]);
    }

    #[test]
    fn runs_cover_each_size_at_each_stride() {
        let rows: Vec<Row> = (0..40).map(|i| vec![i as f64; FEATURES]).collect();
        let runs = runs_of(&rows, &[8, 16, 32], 8, usize::MAX);
        // Size 8: starts 0..=32 (5), size 16: 0..=24 (4), size 32: 0 and 8 (2).
        assert_eq!(runs.len(), 11);
        assert_eq!(runs[0][0], 3.5);
        assert_eq!(runs[4][0], 35.5);
        assert!(runs_of(&rows[..7], &[8], 1, usize::MAX).is_empty());
        // A cap keeps an even choice of the same runs: 0, 2, 5, 8 of the 11.
        let capped = runs_of(&rows, &[8, 16, 32], 8, 4);
        assert_eq!(
            capped,
            vec![
                runs[0].clone(),
                runs[2].clone(),
                runs[5].clone(),
                runs[8].clone()
            ]
        );
        assert_eq!(
            sample_even(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 4),
            vec![0, 2, 5, 7]
        );
        assert_eq!(sample_even(&[0, 1, 2], 4), vec![0, 1, 2]);
    }
}
