//! The touch model: per-user nearest-neighbour density against a population reference,
//! in a space where one person's strokes vary equally in every direction.
//!
//! See the crate docs for the whole method; this module holds the arithmetic.

use serde::{Deserialize, Serialize};

use crate::features::{direction_flag, idx, FEATURES};
use crate::knn::RowBlocks;
use crate::stats::{fit_llr_calibration, inverse_cholesky, median, robust_centre_scale};
use habitus_boost::{BoostParams, Booster, CompiledBooster};
use habitus_plugin::{PluginError, LLR_LIMIT};

/// Model dimensions from the behaviour features (angles as cos/sin pairs).
pub const BEHAVIOUR_DIMS: usize = 27;
/// Standardised values are clipped here: a wild value (a 17-minute "inter-stroke time")
/// may say "unusual", not decide alone.
pub const CLIP: f64 = 4.0;
/// Ridge added to the within-user scatter, as a share of its mean variance.
pub const WHITEN_RIDGE: f64 = 0.1;
/// Population strokes kept per stroke type as the impostor density reference.
pub const REFERENCE_MAX: usize = 4000;
/// Neighbours averaged in the population reference.
pub const REFERENCE_NEIGHBOURS: usize = 20;
/// Most missing (NaN / infinite) model values a stroke may have.
pub const MAX_MISSING: usize = 8;
/// Calibration pairs per population user: genuine strokes, other users, strokes each.
const CAL_GENUINE: usize = 30;
const CAL_OTHERS: usize = 20;
const CAL_PER_OTHER: usize = 5;
/// Slope of the uncalibrated built-in prior (see [`TypeProfile::prior`]).
pub const PRIOR_SLOPE: f64 = 2.0;
/// The built-in prior's stand-in for the population distance: this many times the
/// user's own typical neighbour distance (a typical genuine stroke then scores
/// `2 ln 1.5 ≈ +0.8`, one twice as far as typical `≈ −0.6`).
pub const PRIOR_IMPOSTOR_SCALE: f64 = 1.5;
const EPS: f64 = 1e-6;

/// Most calibrated LLR the trees may add *for* the user per stroke, before
/// `tree_weight` (against: no limit but the LLR clamp). The trees only ever saw the user and the population: a stranger unlike
/// both can land on the user's side of every split, and the k-NN term, which sees that
/// the stroke is far from the user's own, must not be outvoted by that. On the
/// Touchalytics tuning half a cap of 1 on the (then uncalibrated) log-odds cost nothing
/// measurable (inter-session EER 0.1644 / 0.0616 against 0.1645 / 0.0605 uncapped,
/// 1 / 11 strokes).
pub const TREE_MAX_SUPPORT: f64 = 1.0;

/// The per-user boosted trees (see [`TypeProfile::trees`]): about LightGBM's settings that
/// a prototype chose on the tuning half of Touchalytics (300 shallow trees, slow learning
/// rate, large leaves, row and feature subsampling).
pub fn tree_params() -> BoostParams {
    BoostParams {
        rounds: 300,
        depth: 4,
        learning_rate: 0.03,
        min_leaf: 50,
        lambda: 1.0,
        subsample: 0.8,
        colsample: 0.8,
        bins: 64,
        seed: 0x70c4,
    }
}

/// Touchalytics models scrolling (up/down) and horizontal (left/right) strokes apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrokeType {
    Scroll = 0,
    Swipe = 1,
}

impl StrokeType {
    pub const ALL: [StrokeType; 2] = [StrokeType::Scroll, StrokeType::Swipe];

    pub fn name(self) -> &'static str {
        match self {
            StrokeType::Scroll => "scrolling (up/down)",
            StrokeType::Swipe => "horizontal (left/right)",
        }
    }

    /// The type of a stroke vector: its flag, or the flag of its direction when the flag
    /// is not one of 1–4.
    pub fn of(sample: &[f64]) -> Result<StrokeType, PluginError> {
        let mut flag = sample[idx::FLAG];
        if ![1.0, 2.0, 3.0, 4.0].contains(&flag) {
            flag = direction_flag(sample[idx::DIRECTION]);
        }
        match flag as i32 {
            _ if flag.is_nan() => Err(PluginError::invalid_input(
                "stroke has neither an up/down/left/right flag (1-4) nor a finite direction",
            )),
            1 | 3 => Ok(StrokeType::Scroll),
            _ => Ok(StrokeType::Swipe),
        }
    }
}

pub fn dims(device_features: bool) -> usize {
    BEHAVIOUR_DIMS + if device_features { 2 } else { 0 }
}

/// The model's view of one stroke vector: transformed values, NaN where missing.
///
/// Heavy-tailed features are compressed (`ln` of times, `ln(1 + x)` of lengths and
/// speeds, `asinh` of signed accelerations and deviations), angles become `(cos, sin)`
/// (a left swipe sits at ±π: as plain numbers its two halves would be far apart). The
/// flag is not a model value (it picks the stroke type; the direction carries it).
pub fn transform(s: &[f64], device_features: bool) -> Vec<f64> {
    let nan = f64::NAN;
    let ln_time = |x: f64, lo: f64, hi: f64| {
        if x.is_finite() && x > 0.0 {
            x.clamp(lo, hi).ln()
        } else {
            nan
        }
    };
    let ln1p = |x: f64| {
        if x.is_finite() {
            x.max(0.0).ln_1p()
        } else {
            nan
        }
    };
    let asinh = |x: f64, scale: f64| {
        if x.is_finite() {
            (x / scale).asinh()
        } else {
            nan
        }
    };
    let raw = |x: f64| if x.is_finite() { x } else { nan };
    let angle = |x: f64| {
        if x.is_finite() {
            [x.cos(), x.sin()]
        } else {
            [nan, nan]
        }
    };
    let mut v = Vec::with_capacity(dims(device_features));
    v.push(ln_time(s[idx::INTER_STROKE], 0.005, 60.0));
    v.push(ln_time(s[idx::DURATION], 0.001, 30.0));
    v.extend([raw(s[2]), raw(s[3]), raw(s[4]), raw(s[5])]);
    v.push(ln1p(s[6]));
    v.push(raw(s[7]));
    v.extend(angle(s[idx::DIRECTION]));
    v.extend([ln1p(s[10]), ln1p(s[11]), ln1p(s[12])]);
    v.extend([
        asinh(s[13], 1000.0),
        asinh(s[14], 1000.0),
        asinh(s[15], 1000.0),
    ]);
    v.push(ln1p(s[16]));
    v.push(asinh(s[17], 1.0));
    v.extend([asinh(s[18], 0.5), asinh(s[19], 0.5), asinh(s[20], 0.5)]);
    v.extend(angle(s[idx::AVERAGE_DIRECTION]));
    v.push(ln1p(s[22]));
    v.push(raw(s[23]));
    v.push(ln1p(s[24]));
    v.push(asinh(s[25], 1000.0));
    if device_features {
        v.extend([raw(s[idx::PRESSURE]), raw(s[idx::AREA])]);
    }
    debug_assert_eq!(v.len(), dims(device_features));
    v
}

/// One stroke as the model takes it: its type and transformed values.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelStroke {
    pub kind: StrokeType,
    pub values: Vec<f64>,
    /// Model values that were missing (imputed with the population centre).
    pub missing: usize,
}

/// Checks one stroke vector (exactly [`FEATURES`] values) and transforms it.
pub fn model_stroke(s: &[f64], device_features: bool) -> Result<ModelStroke, PluginError> {
    if s.len() != FEATURES {
        return Err(PluginError::invalid_input(format!(
            "a stroke has {FEATURES} features, got {}",
            s.len()
        )));
    }
    let kind = StrokeType::of(s)?;
    let values = transform(s, device_features);
    let missing = values.iter().filter(|v| v.is_nan()).count();
    if missing > MAX_MISSING {
        return Err(PluginError::invalid_input(format!(
            "stroke has {missing} missing (NaN or infinite) model values; at most {MAX_MISSING} are imputed"
        )));
    }
    Ok(ModelStroke {
        kind,
        values,
        missing,
    })
}

/// Robust standardisation followed by whitening of the within-user scatter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Standardiser {
    pub centre: Vec<f64>,
    pub scale: Vec<f64>,
    /// Lower-triangular `d × d` (row-major); empty = identity.
    pub whiten: Vec<f64>,
}

impl Standardiser {
    pub fn dims(&self) -> usize {
        self.centre.len()
    }

    fn standardise(&self, v: &[f64]) -> Vec<f64> {
        v.iter()
            .zip(self.centre.iter().zip(&self.scale))
            .map(|(x, (c, s))| {
                if x.is_nan() {
                    0.0 // missing: the population centre
                } else {
                    ((x - c) / s).clamp(-CLIP, CLIP)
                }
            })
            .collect()
    }

    /// Standardised, whitened, rounded to 1e-3 (enough, and it keeps blobs small).
    pub fn apply(&self, v: &[f64]) -> Vec<f32> {
        let z = self.standardise(v);
        let d = z.len();
        let round = |x: f64| ((x * 1000.0).round() / 1000.0) as f32;
        if self.whiten.is_empty() {
            return z.into_iter().map(round).collect();
        }
        (0..d)
            .map(|i| round((0..=i).map(|k| self.whiten[i * d + k] * z[k]).sum()))
            .collect()
    }

    fn check(&self) -> Result<(), PluginError> {
        let d = self.centre.len();
        let ok = self.scale.len() == d
            && (self.whiten.is_empty() || self.whiten.len() == d * d)
            && self.scale.iter().all(|s| s.is_finite() && *s > 0.0)
            && self
                .centre
                .iter()
                .chain(&self.whiten)
                .all(|x| x.is_finite());
        if ok {
            Ok(())
        } else {
            Err(PluginError::invalid_profile(
                "touch standardiser is inconsistent (corrupted blob?)",
            ))
        }
    }
}

/// What the population says about one stroke type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TypePopulation {
    pub standardiser: Standardiser,
    /// Whitened population strokes (row-major), the impostor density reference.
    pub reference: Vec<f32>,
    pub reference_neighbours: usize,
    /// `llr = calibration.0 + calibration.1 · s`.
    pub calibration: (f64, f64),
    pub users: usize,
    pub strokes: usize,
}

impl TypePopulation {
    fn check(&self) -> Result<(), PluginError> {
        self.standardiser.check()?;
        let d = self.standardiser.dims();
        if self.reference.len() % d.max(1) != 0
            || !self.calibration.0.is_finite()
            || !self.calibration.1.is_finite()
        {
            return Err(PluginError::invalid_profile(
                "touch population is inconsistent (corrupted blob?)",
            ));
        }
        Ok(())
    }
}

/// The population blob's content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Population {
    pub device_features: bool,
    /// Indexed by [`StrokeType`]; `None` when too few users had strokes of that type.
    pub types: Vec<Option<TypePopulation>>,
}

impl Population {
    pub fn check(&self, device_features: bool) -> Result<(), PluginError> {
        if self.types.len() != StrokeType::ALL.len() {
            return Err(PluginError::invalid_profile(
                "touch population is inconsistent",
            ));
        }
        if self.device_features != device_features {
            return Err(PluginError::invalid_profile(format!(
                "touch population was built with device_features = {}, the plugin is configured with {device_features}",
                self.device_features
            )));
        }
        for t in self.types.iter().flatten() {
            t.check()?;
            if t.standardiser.dims() != dims(device_features) {
                return Err(PluginError::invalid_profile(
                    "touch population has the wrong number of model values",
                ));
            }
        }
        Ok(())
    }
}

/// Evenly spaced indices: `count` of `0..n` (all of them when `count >= n`).
fn spread(n: usize, count: usize) -> Vec<usize> {
    if count >= n {
        return (0..n).collect();
    }
    (0..count).map(|i| i * n / count).collect()
}

/// `s = ln(reference distance) − ln(user distance)`: the log of how much closer the
/// stroke lies to the user's strokes than to other people's (a k-NN density ratio, up
/// to the dimension as a factor, which the calibration absorbs).
fn raw_score(user: f64, reference: f64) -> f64 {
    (reference + EPS).ln() - (user + EPS).ln()
}

/// Learns one stroke type's population from `users[u]` = user u's transformed strokes of
/// that type, in time order. `None` when fewer than 3 users have enough strokes.
pub fn build_type_population(
    users: &[Vec<Vec<f64>>],
    neighbours: usize,
    max_template: usize,
) -> Result<Option<TypePopulation>, PluginError> {
    let users: Vec<&Vec<Vec<f64>>> = users.iter().filter(|u| u.len() >= 2).collect();
    let calibration_users = users
        .iter()
        .filter(|u| u.len() >= 2 * neighbours.max(2))
        .count();
    if users.len() < 3 || calibration_users < 3 {
        return Ok(None);
    }
    let d = users[0][0].len();
    let centre_scale: Vec<(f64, f64)> = (0..d)
        .map(|j| {
            let col: Vec<f64> = users.iter().flat_map(|u| u.iter().map(|s| s[j])).collect();
            robust_centre_scale(&col)
        })
        .collect();
    let plain = Standardiser {
        centre: centre_scale.iter().map(|c| c.0).collect(),
        scale: centre_scale.iter().map(|c| c.1).collect(),
        whiten: Vec::new(),
    };
    // Within-user scatter of the standardised strokes, ridged, then its whitening.
    let mut scatter = vec![0.0; d * d];
    let mut total = 0usize;
    for u in &users {
        let z: Vec<Vec<f64>> = u.iter().map(|s| plain.standardise(s)).collect();
        let mean: Vec<f64> = (0..d)
            .map(|j| z.iter().map(|r| r[j]).sum::<f64>() / z.len() as f64)
            .collect();
        for r in &z {
            for a in 0..d {
                let da = r[a] - mean[a];
                for b in 0..=a {
                    scatter[a * d + b] += da * (r[b] - mean[b]);
                }
            }
        }
        total += z.len();
    }
    let mut trace = 0.0;
    for a in 0..d {
        for b in 0..=a {
            scatter[a * d + b] /= total as f64;
            scatter[b * d + a] = scatter[a * d + b];
        }
        trace += scatter[a * d + a];
    }
    let ridge = if trace > 0.0 {
        WHITEN_RIDGE * trace / d as f64
    } else {
        1.0
    };
    for a in 0..d {
        scatter[a * d + a] += ridge;
    }
    let whiten = inverse_cholesky(&scatter, d).ok_or_else(|| {
        PluginError::not_enough_data("touch population scatter is not positive definite")
    })?;
    let standardiser = Standardiser { whiten, ..plain };
    let white: Vec<Vec<Vec<f32>>> = users
        .iter()
        .map(|u| u.iter().map(|s| standardiser.apply(s)).collect())
        .collect();

    // The reference: population strokes, evenly thinned, remembering their owners.
    let all: Vec<(usize, &Vec<f32>)> = white
        .iter()
        .enumerate()
        .flat_map(|(u, rows)| rows.iter().map(move |r| (u, r)))
        .collect();
    let picked = spread(all.len(), REFERENCE_MAX);
    let owners: Vec<usize> = picked.iter().map(|&i| all[i].0).collect();
    let reference: Vec<f32> = picked
        .iter()
        .flat_map(|&i| all[i].1.iter().copied())
        .collect();

    // Calibration: each user's earlier half as a template, their later half as genuine
    // queries, the later halves of other users as impostors; the reference never holds
    // strokes of the template's owner or the query's owner (as for a real user, whose
    // impostors and own strokes are not in the population).
    let n = white.len();
    let reference_blocks = RowBlocks::new(&reference, d);
    let score = |template: &RowBlocks, owner: usize, x: &[f32], x_owner: usize| {
        let du = template.mean_knn_distance(x, neighbours, |_| false);
        let dr = reference_blocks.mean_knn_distance(x, REFERENCE_NEIGHBOURS, |i| {
            owners[i] == owner || owners[i] == x_owner
        });
        raw_score(du, dr)
    };
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for (u, rows) in white.iter().enumerate() {
        if rows.len() < 2 * neighbours.max(2) {
            continue;
        }
        let half = rows.len() / 2;
        let first = half.saturating_sub(max_template);
        let template: Vec<f32> = rows[first..half].iter().flatten().copied().collect();
        let template = RowBlocks::new(&template, d);
        for i in spread(rows.len() - half, CAL_GENUINE) {
            genuine.push(score(&template, u, &rows[half + i], u));
        }
        let others = (n - 1).min(CAL_OTHERS);
        for k in 1..=others {
            let o = (u + k * (n - 1) / others) % n;
            if o == u {
                continue;
            }
            let theirs = &white[o];
            let h = theirs.len() / 2;
            for i in spread(theirs.len() - h, CAL_PER_OTHER) {
                impostor.push(score(&template, u, &theirs[h + i], o));
            }
        }
    }
    genuine.retain(|s| s.is_finite());
    impostor.retain(|s| s.is_finite());
    let calibration = fit_llr_calibration(&genuine, &impostor)
        .filter(|c| c.1 > 0.0)
        .ok_or_else(|| {
            PluginError::not_enough_data(
                "touch calibration did not converge (population strokes do not separate users)",
            )
        })?;
    Ok(Some(TypePopulation {
        standardiser,
        reference,
        reference_neighbours: REFERENCE_NEIGHBOURS,
        calibration,
        users: users.len(),
        strokes: total,
    }))
}

/// One stroke type of a user's profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TypeProfile {
    /// The population this type was enrolled against (its standardiser, reference and
    /// calibration), or the built-in prior when `prior`.
    pub population: TypePopulation,
    /// The user's whitened strokes (row-major), oldest first.
    pub template: Vec<f32>,
    /// Median leave-one-out neighbour distance inside the template.
    pub self_distance: f64,
    /// True when no population covered this type: the standardiser is the user's own
    /// (no whitening), the population distance is `PRIOR_IMPOSTOR_SCALE ·
    /// self_distance` and the LLR is `PRIOR_SLOPE · s` — uncalibrated.
    pub prior: bool,
    /// Boosted trees separating the user's enrolment strokes from the population
    /// reference (whitened values; classes weighted equally), and the weight of their
    /// log-odds (capped at [`TREE_MAX_SUPPORT`]) added to the calibrated k-NN LLR.
    /// `None` without a population, when enrolled with `tree_weight = 0`, or in a
    /// profile from before the trees existed. Adaptation does not retrain them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trees: Option<StrokeTrees>,
}

/// A user's boosted trees for one stroke type (see [`TypeProfile::trees`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StrokeTrees {
    pub booster: Booster,
    /// `llr = a + b · log-odds` with `b > 0`, fitted at enrolment by cross-validation
    /// (see `TypeProfile::train_stroke_trees`): the trees' own log-odds are
    /// over-confident on strokes like those they were trained on.
    pub calibration: (f64, f64),
    /// Weight of the calibrated tree LLR added to the k-NN LLR.
    pub weight: f64,
}

impl StrokeTrees {
    /// The trees' calibrated LLR of one whitened stroke, weighted, capped at
    /// [`TREE_MAX_SUPPORT`] in the user's favour.
    /// `compiled` is `booster.compile()` when it compiled (the same values, faster).
    fn llr(&self, x: &[f32], compiled: Option<&CompiledBooster>) -> f64 {
        let wide: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let log_odds = match compiled {
            Some(c) => c.predict(&wide),
            None => self.booster.predict(&wide),
        };
        let (a, b) = self.calibration;
        self.weight * (a + b * log_odds).min(TREE_MAX_SUPPORT)
    }
}

/// Trees telling `genuine` rows from `others`.
fn train_trees(genuine: &[&[f64]], others: &[&[f64]], d: usize) -> Booster {
    let rows: Vec<&[f64]> = genuine.iter().chain(others).copied().collect();
    let labels: Vec<bool> = (0..rows.len()).map(|i| i < genuine.len()).collect();
    habitus_boost::train(&rows, &labels, d, &tree_params())
}

/// Folds of the enrolment strokes used to calibrate the trees.
const TREE_CAL_FOLDS: usize = 3;

impl TypeProfile {
    pub fn enroll(
        strokes: &[Vec<f64>],
        population: Option<&TypePopulation>,
        neighbours: usize,
        max_template: usize,
        tree_weight: f64,
    ) -> TypeProfile {
        let (population, prior) = match population {
            Some(p) => (p.clone(), false),
            None => {
                let d = strokes.first().map_or(0, |s| s.len());
                let cs: Vec<(f64, f64)> = (0..d)
                    .map(|j| robust_centre_scale(&strokes.iter().map(|s| s[j]).collect::<Vec<_>>()))
                    .collect();
                (
                    TypePopulation {
                        standardiser: Standardiser {
                            centre: cs.iter().map(|c| c.0).collect(),
                            scale: cs.iter().map(|c| c.1).collect(),
                            whiten: Vec::new(),
                        },
                        reference: Vec::new(),
                        reference_neighbours: 0,
                        calibration: (0.0, PRIOR_SLOPE),
                        users: 0,
                        strokes: 0,
                    },
                    true,
                )
            }
        };
        let first = strokes.len().saturating_sub(max_template);
        let template: Vec<f32> = strokes[first..]
            .iter()
            .flat_map(|s| population.standardiser.apply(s))
            .collect();
        let mut profile = TypeProfile {
            population,
            template,
            self_distance: 1.0,
            prior,
            trees: None,
        };
        profile.self_distance = profile.leave_one_out_distance(neighbours);
        if tree_weight > 0.0 && !profile.population.reference.is_empty() {
            profile.trees = profile.train_stroke_trees(tree_weight);
        }
        profile
    }

    /// The user's template (genuine) against the population reference (other people),
    /// calibrated by cross-validation: the template is cut into [`TREE_CAL_FOLDS`]
    /// consecutive blocks (later strokes stand in for a later session) and the reference
    /// into halves (its rows are grouped by population user, so the halves hold mostly
    /// different people); trees trained without block `k` and with one reference half
    /// score block `k` (genuine) and the other half (people they never saw). `None` when
    /// the template is too short or the scores do not separate.
    fn train_stroke_trees(&self, weight: f64) -> Option<StrokeTrees> {
        let d = self.population.standardiser.dims();
        let widen = |c: &[f32]| c.iter().map(|&v| v as f64).collect::<Vec<f64>>();
        let mine: Vec<Vec<f64>> = self.template.chunks_exact(d).map(widen).collect();
        let others: Vec<Vec<f64>> = self
            .population
            .reference
            .chunks_exact(d)
            .map(widen)
            .collect();
        if mine.len() < 2 * TREE_CAL_FOLDS || others.len() < 4 {
            return None;
        }
        let mine: Vec<&[f64]> = mine.iter().map(Vec::as_slice).collect();
        let others: Vec<&[f64]> = others.iter().map(Vec::as_slice).collect();
        let halves = others.split_at(others.len() / 2);
        let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
        for k in 0..TREE_CAL_FOLDS {
            let (lo, hi) = (
                k * mine.len() / TREE_CAL_FOLDS,
                (k + 1) * mine.len() / TREE_CAL_FOLDS,
            );
            let train: Vec<&[f64]> = mine[..lo].iter().chain(&mine[hi..]).copied().collect();
            let (seen, unseen) = if k % 2 == 0 {
                halves
            } else {
                (halves.1, halves.0)
            };
            let trees = train_trees(&train, seen, d);
            genuine.extend(mine[lo..hi].iter().map(|x| trees.predict(x)));
            impostor.extend(unseen.iter().map(|x| trees.predict(x)));
        }
        let calibration = fit_llr_calibration(&genuine, &impostor)
            .filter(|c| c.0.is_finite() && c.1.is_finite() && c.1 > 0.0)?;
        Some(StrokeTrees {
            booster: train_trees(&mine, &others, d),
            calibration,
            weight,
        })
    }

    pub fn strokes(&self) -> usize {
        self.template.len() / self.population.standardiser.dims().max(1)
    }

    fn leave_one_out_distance(&self, neighbours: usize) -> f64 {
        let d = self.population.standardiser.dims();
        let blocks = RowBlocks::new(&self.template, d);
        let ds: Vec<f64> = self
            .template
            .chunks_exact(d)
            .enumerate()
            .map(|(i, row)| blocks.mean_knn_distance(row, neighbours, |j| j == i))
            .collect();
        let m = median(&ds);
        if m.is_finite() && m > 0.0 {
            m
        } else {
            1.0
        }
    }

    /// The calibrated LLR of one transformed stroke of this type; `blocks` are this
    /// type's template and reference as [`TypeBlocks::new`] builds them.
    fn llr(&self, values: &[f64], neighbours: usize, blocks: &TypeBlocks) -> f64 {
        let p = &self.population;
        let x = p.standardiser.apply(values);
        let du = blocks.template.mean_knn_distance(&x, neighbours, |_| false);
        let dr = if p.reference.is_empty() {
            PRIOR_IMPOSTOR_SCALE * self.self_distance
        } else {
            blocks
                .reference
                .mean_knn_distance(&x, p.reference_neighbours, |_| false)
        };
        let mut llr = p.calibration.0 + p.calibration.1 * raw_score(du, dr);
        if let Some(trees) = &self.trees {
            llr += trees.llr(&x, blocks.trees.as_ref());
        }
        if llr.is_nan() {
            -LLR_LIMIT
        } else {
            llr.clamp(-LLR_LIMIT, LLR_LIMIT)
        }
    }

    /// Appends strokes (already transformed), dropping the oldest beyond `max_template`.
    pub fn append(&mut self, strokes: &[Vec<f64>], max_template: usize) {
        let d = self.population.standardiser.dims();
        for s in strokes {
            self.template.extend(self.population.standardiser.apply(s));
        }
        let rows = self.template.len() / d.max(1);
        if rows > max_template {
            self.template.drain(..(rows - max_template) * d);
        }
    }

    fn check(&self, dims: usize) -> Result<(), PluginError> {
        self.population.check()?;
        if self.population.standardiser.dims() != dims
            || self.template.is_empty()
            || self.template.len() % dims != 0
            || !self.self_distance.is_finite()
        {
            return Err(PluginError::invalid_profile(
                "touch profile is inconsistent (corrupted blob?)",
            ));
        }
        if let Some(t) = &self.trees {
            let (trees, weight) = (&t.booster, t.weight);
            if trees.features != dims
                || !weight.is_finite()
                || weight < 0.0
                || !t.calibration.0.is_finite()
                || !(t.calibration.1.is_finite() && t.calibration.1 > 0.0)
            {
                return Err(PluginError::invalid_profile(
                    "touch profile's trees are inconsistent (corrupted blob?)",
                ));
            }
            trees
                .validate()
                .map_err(|e| PluginError::invalid_profile(format!("touch profile's trees: {e}")))?;
        }
        Ok(())
    }
}

/// A user's profile: one model per stroke type the enrolment had enough strokes of.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub device_features: bool,
    pub neighbours: usize,
    /// Indexed by [`StrokeType`].
    pub types: Vec<Option<TypeProfile>>,
}

impl Profile {
    pub fn check(&self, device_features: bool) -> Result<(), PluginError> {
        if self.types.len() != StrokeType::ALL.len()
            || self.neighbours == 0
            || self.types.iter().all(Option::is_none)
        {
            return Err(PluginError::invalid_profile(
                "touch profile is inconsistent",
            ));
        }
        if self.device_features != device_features {
            return Err(PluginError::invalid_profile(format!(
                "touch profile was enrolled with device_features = {}, the plugin is configured with {device_features}; re-enrol",
                self.device_features
            )));
        }
        for t in self.types.iter().flatten() {
            t.check(dims(device_features))?;
        }
        Ok(())
    }
}

/// One stroke type's template and reference in the blocked layout the neighbour search
/// runs on (see [`crate::knn`]), and its trees compiled (see [`CompiledBooster`]).
#[derive(Debug)]
struct TypeBlocks {
    template: RowBlocks,
    reference: RowBlocks,
    /// The trees in the layout they score fastest in (`None` without trees).
    trees: Option<CompiledBooster>,
}

impl TypeBlocks {
    fn new(t: &TypeProfile) -> TypeBlocks {
        let d = t.population.standardiser.dims();
        TypeBlocks {
            template: RowBlocks::new(&t.template, d),
            reference: RowBlocks::new(&t.population.reference, d),
            trees: t.trees.as_ref().and_then(|t| t.booster.compile()),
        }
    }
}

/// A checked, decoded profile ready to score: the stored [`Profile`] plus, built once,
/// its rows in the blocked layout and its trees compiled (the stored form is unchanged,
/// so profiles written before score the same). This adds about the size of the
/// reference and template to a decoded profile (≈ 0.45 MB per stroke type).
#[derive(Debug)]
pub struct ScoringProfile {
    profile: Profile,
    blocks: Vec<Option<TypeBlocks>>,
}

impl ScoringProfile {
    pub fn new(profile: Profile) -> ScoringProfile {
        let blocks = profile
            .types
            .iter()
            .map(|t| t.as_ref().map(TypeBlocks::new))
            .collect();
        ScoringProfile { profile, blocks }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Whether the profile has a model of this stroke type.
    pub fn has_type(&self, kind: StrokeType) -> bool {
        self.profile.types[kind as usize].is_some()
    }

    /// The LLR of one stroke, or `None` when the profile has no model of its type.
    pub fn llr(&self, stroke: &ModelStroke) -> Option<f64> {
        let i = stroke.kind as usize;
        match (&self.profile.types[i], &self.blocks[i]) {
            (Some(t), Some(b)) => Some(t.llr(&stroke.values, self.profile.neighbours, b)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(flag: f64, direction: f64) -> Vec<f64> {
        let mut s = vec![1.0; FEATURES];
        s[idx::FLAG] = flag;
        s[idx::DIRECTION] = direction;
        s[idx::AVERAGE_DIRECTION] = direction;
        s
    }

    #[test]
    fn stroke_types_and_missing_values() {
        assert_eq!(
            StrokeType::of(&sample(1.0, 0.0)).unwrap(),
            StrokeType::Scroll
        );
        assert_eq!(
            StrokeType::of(&sample(4.0, 0.0)).unwrap(),
            StrokeType::Swipe
        );
        // No usable flag: the direction decides.
        assert_eq!(
            StrokeType::of(&sample(f64::NAN, 1.5)).unwrap(),
            StrokeType::Scroll
        );
        assert!(StrokeType::of(&sample(f64::NAN, f64::NAN)).is_err());
        assert!(StrokeType::of(&sample(7.0, f64::INFINITY)).is_err());

        let mut s = sample(2.0, 0.1);
        s[13] = f64::NAN;
        s[15] = f64::INFINITY;
        let m = model_stroke(&s, false).unwrap();
        assert_eq!(m.missing, 2);
        assert_eq!(m.values.len(), BEHAVIOUR_DIMS);
        assert_eq!(
            model_stroke(&s, true).unwrap().values.len(),
            BEHAVIOUR_DIMS + 2
        );
        let all_nan: Vec<f64> = (0..FEATURES)
            .map(|i| if i == idx::FLAG { 2.0 } else { f64::NAN })
            .collect();
        let e = model_stroke(&all_nan, false).unwrap_err();
        assert!(e.message.contains("missing"), "{e}");
        assert!(model_stroke(&s[..30], false).is_err());
    }

    #[test]
    fn standardiser_imputes_missing_values_at_the_centre() {
        let st = Standardiser {
            centre: vec![1.0, 2.0],
            scale: vec![2.0, 1.0],
            whiten: Vec::new(),
        };
        assert_eq!(st.apply(&[3.0, f64::NAN]), vec![1.0, 0.0]);
        assert_eq!(st.apply(&[1e9, -1e9]), vec![CLIP as f32, -CLIP as f32]);
    }
}
