//! The per-user model: which actions are this user's, and how sure one can be.
//!
//! **With a population** (other people's actions, see [`Population`]): a two-class
//! gradient-boosted tree ensemble (crate `habitus-boost`) learns the user's actions
//! against the population's (from a consecutive population, an even sample of at most
//! `negative_actions_per_user` of each person's), classes weighted equally. Its raw
//! output is then calibrated into a
//! log-likelihood ratio on data it did not train on: `calibration_folds`-fold cross-
//! validation, the user's enrolment windows split into folds and the population split
//! *by person*, so the held-out impostor scores come from people the fold's model never
//! saw; a logistic regression (classes weighted equally) maps held-out scores to
//! `llr = offset + slope · score`. Each action's LLR is clipped to ±`action_llr_cap`.
//!
//! **A window** of at least `window_min_actions` actions is scored by the window model
//! when the profile has one ([`crate::window`]; config `window_model`, off by default).
//! Otherwise a window of `n` actions scores `llr = mean(action llr) · n_eff(n)` with
//! `n_eff = n / (1 + ρ (n − 1))`: actions of one sitting are not independent evidence
//! (ρ = 0 would add them up as naive Bayes does, ρ = 1 would count the whole window as
//! one action). ρ is one constant for every user (config `window_rho`, 0.2: the value
//! with the lowest LLR cost on Balabit's training files; fitting it per user made scores
//! of different users less comparable).
//!
//! **Without a population** (a fresh installation): a one-class fallback, the mean capped
//! robust z-distance of the action's features to the user's medians, shifted so that the
//! user's own median action scores 0. It is *not* calibrated (slope fixed at
//! [`ONE_CLASS_SLOPE`] per unit of distance) and much weaker; build a population.

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::features::FEATURES;
use crate::window::{summary, WindowModel};
use habitus_boost::{self as boost, Booster, CompiledBooster};
use habitus_plugin::stats::{fit_llr_calibration, mad, median};
use habitus_plugin::PluginError;

/// Other people's actions, per person (f32: a population is stored once and is large).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Population {
    pub users: Vec<Vec<Vec<f32>>>,
    /// Each person's rows are consecutive actions (their most recent ones), so runs of
    /// them can train the window model. Otherwise (`false`; also every population built
    /// before the window model existed) they are an even sample, and profiles enrolled
    /// with it get no window model.
    #[serde(default)]
    pub consecutive: bool,
}

/// How one action is scored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ActionModel {
    /// `llr = offset + slope · booster(x)`.
    Boosted {
        booster: Booster,
        offset: f64,
        slope: f64,
    },
    /// `llr = ONE_CLASS_SLOPE · (typical − spread.distance(x))`.
    OneClass { spread: Spread, typical: f64 },
}

/// The user's own spread: per feature the median and a robust scale (1.4826·MAD, at least
/// half the standard deviation, so that near-constant features do not explode).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub centre: Vec<f64>,
    pub scale: Vec<f64>,
}

impl Spread {
    pub fn fit(rows: &[&Row]) -> Spread {
        let mut centre = Vec::with_capacity(FEATURES);
        let mut scale = Vec::with_capacity(FEATURES);
        for j in 0..FEATURES {
            let col: Vec<f64> = rows.iter().map(|r| r[j]).collect();
            let c = median(&col);
            let n = col.len().max(1) as f64;
            let m = col.iter().sum::<f64>() / n;
            let sd = (col.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n).sqrt();
            centre.push(if c.is_finite() { c } else { 0.0 });
            scale.push(mad(&col, c).max(0.5 * sd).max(1e-9));
        }
        Spread { centre, scale }
    }

    /// Mean over features of the capped robust z-distance to the user's medians.
    pub fn distance(&self, row: &[f64]) -> f64 {
        row.iter()
            .zip(self.centre.iter().zip(&self.scale))
            .map(|(x, (c, s))| ((x - c).abs() / s).min(Z_CAP))
            .sum::<f64>()
            / FEATURES as f64
    }

    fn is_valid(&self) -> bool {
        self.centre.len() == FEATURES
            && self.scale.len() == FEATURES
            && self.centre.iter().all(|v| v.is_finite())
            && self.scale.iter().all(|v| v.is_finite() && *v > 0.0)
    }
}

/// A user's profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub model: ActionModel,
    /// Scores windows of at least `min_actions` actions as a whole (see [`crate::window`]);
    /// absent in profiles enrolled without a consecutive population or before it existed.
    #[serde(default)]
    pub window: Option<WindowModel>,
    /// Dependence between the actions of one window (ρ above).
    pub rho: f64,
    pub action_llr_cap: f64,
    pub enrolled_actions: usize,
    pub enrolled_windows: usize,
    pub population_users: usize,
}

/// Fewest enrolment actions accepted.
pub const MIN_ENROL_ACTIONS: usize = 50;
/// Fewest actions a population member needs to count.
pub const MIN_POPULATION_ACTIONS: usize = 20;
/// One-class fallback: LLR per unit of mean capped z-distance (uncalibrated).
pub const ONE_CLASS_SLOPE: f64 = 2.0;
const Z_CAP: f64 = 4.0;

pub type Row = Vec<f64>;

/// An even sample of at most `cap` rows, order kept.
pub fn sample_even<T: Clone>(rows: &[T], cap: usize) -> Vec<T> {
    if rows.len() <= cap {
        return rows.to_vec();
    }
    (0..cap)
        .map(|k| rows[k * rows.len() / cap].clone())
        .collect()
}

/// Rounds to f32 precision, as stored in populations, so both classes look alike.
fn rounded(row: &[f64]) -> Row {
    row.iter().map(|&v| v as f32 as f64).collect()
}

/// A population from each person's actions (oldest first), at most `cap` of each:
/// with `consecutive`, their most recent `cap` actions in order (what the window model
/// needs, see [`Population::consecutive`]); otherwise an even sample of all of them
/// (the action model's choice: more varied negatives).
pub fn build_population(
    users: &[Vec<Row>],
    cap: usize,
    consecutive: bool,
) -> Result<Population, PluginError> {
    let users: Vec<Vec<Vec<f32>>> = users
        .iter()
        .filter(|u| u.len() >= MIN_POPULATION_ACTIONS)
        .map(|u| {
            let kept = if consecutive {
                u[u.len().saturating_sub(cap)..].to_vec()
            } else {
                sample_even(u, cap)
            };
            kept.iter()
                .map(|r| r.iter().map(|&v| v as f32).collect())
                .collect()
        })
        .collect();
    if users.is_empty() {
        return Err(PluginError::not_enough_data(format!(
            "a mouse population needs at least one person with {MIN_POPULATION_ACTIONS} actions"
        )));
    }
    Ok(Population { users, consecutive })
}

impl Population {
    pub fn validate(&self) -> Result<(), PluginError> {
        let ok = !self.users.is_empty()
            && self
                .users
                .iter()
                .flatten()
                .all(|r| r.len() == FEATURES && r.iter().all(|v| v.is_finite()));
        if ok {
            Ok(())
        } else {
            Err(PluginError::invalid_profile(
                "mouse population has malformed rows (another feature layout?)",
            ))
        }
    }
}

/// Keeps the most recent enrolment windows (the last ones given) up to `cap` actions; the
/// oldest window kept may be cut to its most recent actions.
fn most_recent(windows: &[Vec<Row>], cap: usize) -> Vec<Vec<Row>> {
    let mut kept = Vec::new();
    let mut left = cap;
    for w in windows.iter().rev() {
        if left == 0 {
            break;
        }
        if w.is_empty() {
            continue;
        }
        let take = w.len().min(left);
        kept.push(w[w.len() - take..].iter().map(|r| rounded(r)).collect());
        left -= take;
    }
    kept.reverse();
    kept
}

/// Splits groups into `k` folds: whole groups round-robin when there are enough of them,
/// otherwise every group cut into `k` contiguous blocks.
fn folds(groups: &[Vec<Row>], k: usize) -> Vec<Vec<Vec<Row>>> {
    let mut out: Vec<Vec<Vec<Row>>> = vec![Vec::new(); k];
    if groups.len() >= k {
        for (i, g) in groups.iter().enumerate() {
            out[i % k].push(g.clone());
        }
    } else {
        for g in groups {
            for (f, fold) in out.iter_mut().enumerate() {
                let block = g[f * g.len() / k..(f + 1) * g.len() / k].to_vec();
                if !block.is_empty() {
                    fold.push(block);
                }
            }
        }
    }
    out
}

/// Boosted trees separating `genuine` rows from `impostor` rows of `features` values
/// (actions here, run summaries in [`crate::window`]).
pub(crate) fn train_booster(
    genuine: &[&Row],
    impostor: &[&Row],
    features: usize,
    config: &Config,
) -> Booster {
    let rows: Vec<&[f64]> = genuine
        .iter()
        .chain(impostor.iter())
        .map(|r| r.as_slice())
        .collect();
    let labels: Vec<bool> = (0..rows.len()).map(|i| i < genuine.len()).collect();
    boost::train(&rows, &labels, features, &config.boost_params())
}

/// Window LLR from action LLRs (already capped).
pub fn aggregate(action_llrs: &[f64], rho: f64) -> f64 {
    if action_llrs.is_empty() {
        return 0.0;
    }
    let n = action_llrs.len() as f64;
    let mean = action_llrs.iter().sum::<f64>() / n;
    mean * n / (1.0 + rho * (n - 1.0))
}

impl Profile {
    /// Trains a profile from the user's enrolment windows (each a list of action rows,
    /// oldest first) and, if given, a population of other people.
    pub fn train(
        windows: &[Vec<Row>],
        population: Option<&Population>,
        config: &Config,
    ) -> Result<Profile, PluginError> {
        let windows = most_recent(windows, config.max_enrol_actions);
        let actions: usize = windows.iter().map(Vec::len).sum();
        if actions < MIN_ENROL_ACTIONS {
            return Err(PluginError::not_enough_data(format!(
                "mouse enrolment found {actions} actions; at least {MIN_ENROL_ACTIONS} are needed"
            )));
        }
        let Some(population) = population else {
            return Ok(Self::one_class(&windows, actions, config));
        };
        population.validate()?;
        let negatives: Vec<Vec<Row>> = population
            .users
            .iter()
            .map(|u| {
                u.iter()
                    .map(|r| r.iter().map(|&v| v as f64).collect())
                    .collect()
            })
            .collect();
        let k = config.calibration_folds;
        let gen_folds = folds(&windows, k);
        // The window model runs over consecutive actions; its folds split the people
        // the same way as the action model's.
        let window = if config.window_model && population.consecutive {
            WindowModel::train(&gen_folds, &folds(&negatives, k), config)
        } else {
            None
        };
        // A consecutive population keeps more of each person than the action model
        // needs; an even-sampled one (the default) is used as it is, as before.
        let negatives: Vec<Vec<Row>> = if population.consecutive {
            negatives
                .into_iter()
                .map(|u| sample_even(&u, config.negative_actions_per_user))
                .collect()
        } else {
            negatives
        };
        let imp_folds = folds(&negatives, k);
        // Held-out booster scores of genuine and impostor actions.
        let mut g: Vec<f64> = Vec::new();
        let mut i: Vec<f64> = Vec::new();
        for f in 0..k {
            let train_gen: Vec<&Row> = (0..k)
                .filter(|&o| o != f)
                .flat_map(|o| gen_folds[o].iter().flatten())
                .collect();
            let train_imp: Vec<&Row> = (0..k)
                .filter(|&o| o != f)
                .flat_map(|o| imp_folds[o].iter().flatten())
                .collect();
            if train_gen.is_empty() || train_imp.is_empty() {
                continue;
            }
            let b = train_booster(&train_gen, &train_imp, FEATURES, config);
            g.extend(gen_folds[f].iter().flatten().map(|r| b.predict(r)));
            i.extend(imp_folds[f].iter().flatten().map(|r| b.predict(r)));
        }
        let (offset, slope) = fit_llr_calibration(&g, &i).ok_or_else(|| {
            PluginError::not_enough_data("mouse score calibration did not converge")
        })?;
        // A model that ranks the user below other people has learned nothing usable:
        // a zero slope makes every action "no evidence" rather than evidence against.
        let (offset, slope) = if slope > 0.0 {
            (offset, slope)
        } else {
            (0.0, 0.0)
        };
        let cap = config.action_llr_cap;
        let all_gen: Vec<&Row> = windows.iter().flatten().collect();
        let all_imp: Vec<&Row> = negatives.iter().flatten().collect();
        let booster = train_booster(&all_gen, &all_imp, FEATURES, config);
        Ok(Profile {
            model: ActionModel::Boosted {
                booster,
                offset,
                slope,
            },
            window,
            rho: config.window_rho,
            action_llr_cap: cap,
            enrolled_actions: actions,
            enrolled_windows: windows.len(),
            population_users: negatives.len(),
        })
    }

    fn one_class(windows: &[Vec<Row>], actions: usize, config: &Config) -> Profile {
        let rows: Vec<&Row> = windows.iter().flatten().collect();
        let spread = Spread::fit(&rows);
        let d: Vec<f64> = rows.iter().map(|r| spread.distance(r)).collect();
        Profile {
            model: ActionModel::OneClass {
                spread,
                typical: median(&d),
            },
            window: None,
            rho: config.window_rho,
            action_llr_cap: config.action_llr_cap,
            enrolled_actions: actions,
            enrolled_windows: windows.len(),
            population_users: 0,
        }
    }

    /// Checks a decoded profile before it is used.
    pub fn validate(&self) -> Result<(), PluginError> {
        let ok = match &self.model {
            ActionModel::Boosted {
                booster,
                offset,
                slope,
            } => {
                booster.features == FEATURES
                    && booster.validate().is_ok()
                    && offset.is_finite()
                    && slope.is_finite()
            }
            ActionModel::OneClass { spread, typical } => spread.is_valid() && typical.is_finite(),
        };
        if ok
            && self.window.as_ref().map_or(true, WindowModel::is_valid)
            && (0.0..=1.0).contains(&self.rho)
            && self.action_llr_cap.is_finite()
            && self.action_llr_cap > 0.0
        {
            Ok(())
        } else {
            Err(PluginError::invalid_profile(
                "mouse profile is malformed (corrupted, or another feature layout)",
            ))
        }
    }

    /// One action's LLR, clipped to ±`action_llr_cap`.
    pub fn action_llr(&self, row: &[f64]) -> f64 {
        self.action_llr_with(row, None)
    }

    /// [`Profile::action_llr`]; `compiled` is the booster compiled, when it compiled
    /// (the same values, faster).
    fn action_llr_with(&self, row: &[f64], compiled: Option<&CompiledBooster>) -> f64 {
        let raw = match &self.model {
            ActionModel::Boosted {
                booster,
                offset,
                slope,
            } => {
                let log_odds = match compiled {
                    Some(c) => c.predict(row),
                    None => booster.predict(row),
                };
                offset + slope * log_odds
            }
            ActionModel::OneClass { spread, typical } => {
                ONE_CLASS_SLOPE * (typical - spread.distance(row))
            }
        };
        if raw.is_nan() {
            return -self.action_llr_cap;
        }
        raw.clamp(-self.action_llr_cap, self.action_llr_cap)
    }

    /// A window's LLR from its actions' rows.
    pub fn window_llr<'a>(&self, rows: impl Iterator<Item = &'a [f64]>) -> (f64, usize) {
        self.window_llr_with(rows, None, None)
    }

    fn window_llr_with<'a>(
        &self,
        rows: impl Iterator<Item = &'a [f64]>,
        compiled: Option<&CompiledBooster>,
        compiled_window: Option<&CompiledBooster>,
    ) -> (f64, usize) {
        let rows: Vec<&[f64]> = rows.collect();
        if let Some(window) = &self.window {
            if rows.len() >= window.min_actions {
                let summary = summary(rows.iter().copied());
                return (window.llr(&summary, compiled_window), rows.len());
            }
        }
        let llrs: Vec<f64> = rows
            .iter()
            .map(|r| self.action_llr_with(r, compiled))
            .collect();
        (aggregate(&llrs, self.rho), llrs.len())
    }
}

/// A validated, decoded profile ready to score: the stored [`Profile`] plus its trees
/// compiled once (see [`CompiledBooster`]), which score the same values as the stored
/// node lists, several times faster. The stored form is unchanged.
#[derive(Debug)]
pub struct ScoringProfile {
    profile: Profile,
    compiled: Option<CompiledBooster>,
    compiled_window: Option<CompiledBooster>,
}

impl ScoringProfile {
    pub fn new(profile: Profile) -> ScoringProfile {
        let compiled = match &profile.model {
            ActionModel::Boosted { booster, .. } => booster.compile(),
            ActionModel::OneClass { .. } => None,
        };
        let compiled_window = profile.window.as_ref().and_then(|w| w.booster.compile());
        ScoringProfile {
            profile,
            compiled,
            compiled_window,
        }
    }

    /// [`Profile::window_llr`], with the compiled trees.
    pub fn window_llr<'a>(&self, rows: impl Iterator<Item = &'a [f64]>) -> (f64, usize) {
        self.profile
            .window_llr_with(rows, self.compiled.as_ref(), self.compiled_window.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use habitus_boost::Rng;

    /// Synthetic "people": feature j of person p ~ N(p·0.3·[j < 8], 1).
    fn person(p: usize, n: usize, seed: u64) -> Vec<Row> {
        let mut rng = Rng::new(seed);
        let mut gauss = || {
            let (u, v) = (rng.unit().max(1e-12), rng.unit());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        };
        (0..n)
            .map(|_| {
                (0..FEATURES)
                    .map(|j| gauss() + if j < 8 { 0.3 * p as f64 } else { 0.0 })
                    .collect()
            })
            .collect()
    }

    fn small() -> Config {
        Config {
            rounds: 40,
            min_leaf: 10,
            ..Config::default()
        }
    }

    #[test]
    fn calibrated_llrs_separate_and_aggregate() {
        let config = small();
        let me: Vec<Vec<Row>> = (0..3).map(|w| person(4, 200, 10 + w)).collect();
        let others: Vec<Vec<Row>> = [0, 1, 2, 3, 6, 7]
            .iter()
            .map(|&p| person(p, 300, 100 + p as u64))
            .collect();
        let pop = build_population(&others, 250, false).unwrap();
        assert!(pop.users.iter().all(|u| u.len() == 250));
        assert!(!pop.consecutive);
        // An even sample: the first and a middle action of the person's 300.
        assert_eq!(pop.users[0][0][0], others[0][0][0] as f32);
        assert_eq!(pop.users[0][125][0], others[0][150][0] as f32);
        let profile = Profile::train(&me, Some(&pop), &config).unwrap();
        profile.validate().unwrap();
        assert!((0.0..=1.0).contains(&profile.rho));
        let test_me = person(4, 40, 999);
        let test_other = person(1, 40, 998);
        let (g, n) = profile.window_llr(test_me.iter().map(|r| r.as_slice()));
        let (i, _) = profile.window_llr(test_other.iter().map(|r| r.as_slice()));
        assert_eq!(n, 40);
        assert!(g > 1.0 && i < -1.0, "genuine {g}, impostor {i}");
        // Single actions are clipped.
        let cap = profile.action_llr_cap;
        assert!(test_me.iter().all(|r| profile.action_llr(r).abs() <= cap));
        // The scoring form (compiled trees) gives the same numbers, bit for bit.
        let scoring = ScoringProfile::new(profile.clone());
        assert!(scoring.compiled.is_some());
        for rows in [&test_me, &test_other] {
            let want = profile.window_llr(rows.iter().map(|r| r.as_slice()));
            let got = scoring.window_llr(rows.iter().map(|r| r.as_slice()));
            assert_eq!((want.0.to_bits(), want.1), (got.0.to_bits(), got.1));
        }
    }

    #[test]
    fn window_model_scores_long_windows_and_only_from_consecutive_populations() {
        let config = Config {
            window_model: true,
            ..small()
        };
        let me: Vec<Vec<Row>> = (0..3).map(|w| person(4, 200, 20 + w)).collect();
        let others: Vec<Vec<Row>> = [0, 1, 2, 3, 6, 7]
            .iter()
            .map(|&p| person(p, 300, 200 + p as u64))
            .collect();
        let pop = build_population(&others, 250, true).unwrap();
        assert!(pop.consecutive);
        // The most recent actions are kept, in order.
        assert_eq!(pop.users[0][0][0], others[0][50][0] as f32);
        let with = Profile::train(&me, Some(&pop), &config).unwrap();
        let window = with.window.clone().expect("a window model");
        assert!(window.is_valid());
        // Without the window model (switched off, or an old even-sampled population)
        // the action model is the same and scores every window.
        let off = Config {
            window_model: false,
            ..config.clone()
        };
        let without = Profile::train(&me, Some(&pop), &off).unwrap();
        assert!(without.window.is_none());
        assert_eq!(without.model, with.model);
        let sampled = build_population(&others, 250, false).unwrap();
        assert!(Profile::train(&me, Some(&sampled), &config)
            .unwrap()
            .window
            .is_none());
        // A population stored before the field existed reads as even-sampled.
        let mut json = serde_json::to_value(&pop).unwrap();
        json.as_object_mut().unwrap().remove("consecutive");
        let stored: Population = serde_json::from_value(json).unwrap();
        assert!(!stored.consecutive && stored.users == pop.users);
        // Enrolment in many short windows (as a live daemon collects it) still gives
        // long training runs: a fold's windows are joined.
        let short_windows: Vec<Vec<Row>> = me.concat().chunks(10).map(<[Row]>::to_vec).collect();
        assert!(Profile::train(&short_windows, Some(&pop), &config)
            .unwrap()
            .window
            .is_some());
        let short = person(4, window.min_actions - 1, 7);
        let long = person(4, 40, 8);
        let score = |p: &Profile, rows: &[Row]| p.window_llr(rows.iter().map(|r| r.as_slice()));
        assert_eq!(score(&with, &short), score(&without, &short));
        let (g, n) = score(&with, &long);
        assert_eq!(n, 40);
        assert_ne!(g, score(&without, &long).0);
        let (i, _) = score(&with, &person(1, 40, 9));
        assert!(g > 1.0 && i < -1.0, "genuine {g}, impostor {i}");
        assert!(g.abs() <= window.llr_cap && i.abs() <= window.llr_cap);
        // A profile stored before the window model existed still decodes (no window).
        let mut json: serde_json::Value = serde_json::to_value(&without).unwrap();
        json.as_object_mut().unwrap().remove("window");
        let decoded: Profile = serde_json::from_value(json).unwrap();
        assert_eq!(decoded, without);
        // A corrupted window model is refused.
        let mut bad = with.clone();
        bad.window.as_mut().unwrap().slope = f64::NAN;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn one_class_fallback_prefers_the_user() {
        let me: Vec<Vec<Row>> = vec![person(4, 300, 1)];
        let profile = Profile::train(&me, None, &small()).unwrap();
        profile.validate().unwrap();
        assert!(matches!(profile.model, ActionModel::OneClass { .. }));
        let (g, _) = profile.window_llr(person(4, 40, 2).iter().map(|r| r.as_slice()));
        let (i, _) = profile.window_llr(person(0, 40, 3).iter().map(|r| r.as_slice()));
        assert!(g > i, "genuine {g}, impostor {i}");
    }

    #[test]
    fn too_little_data_is_a_clear_error() {
        let e = Profile::train(&[person(1, 10, 1)], None, &small()).unwrap_err();
        assert_eq!(e.kind, habitus_plugin::ErrorKind::NOT_ENOUGH_DATA);
        let e = build_population(&[person(1, 10, 1), vec![]], 50, false).unwrap_err();
        assert_eq!(e.kind, habitus_plugin::ErrorKind::NOT_ENOUGH_DATA);
    }

    #[test]
    fn aggregation_interpolates_between_sum_and_mean() {
        let l = [1.0, 1.0, 1.0, 1.0];
        assert!((aggregate(&l, 0.0) - 4.0).abs() < 1e-12);
        assert!((aggregate(&l, 1.0) - 1.0).abs() < 1e-12);
        assert_eq!(aggregate(&[], 0.3), 0.0);
    }
}
