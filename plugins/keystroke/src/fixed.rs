//! Fixed text: the same password typed the same way each time.
//!
//! A window becomes one feature vector in the CMU layout — for keys `k0..k(n-1)` in press
//! order: `H.k0, DD.k0.k1, UD.k0.k1, H.k1, …, H.k(n-1)` (hold, down-down, up-down
//! latencies in seconds), `3n - 2` values.
//!
//! Detectors:
//! * `euclidean`, `manhattan`, `scaled-manhattan`: the reference anomaly detectors of
//!   Killourhy & Maxion (2009), kept so `habitus eval` can reproduce the paper. Their
//!   "LLR" is only a monotone map of the distance (`-10·tanh(ln(d/d0)/2)`, `d0` the median
//!   enrolment distance): order-preserving, not calibrated.
//! * `habitus` (production): a capped diagonal-Gaussian log-likelihood ratio between the
//!   user's template and a *novice* population model, calibrated by logistic regression.
//!   See the crate docs for the derivation and the numbers.

use serde::{Deserialize, Serialize};

use crate::stats::{column, fit_llr_calibration, mad, mean, median, std_dev};
use crate::timing::Keystroke;
use habitus_plugin::{PluginError, LLR_LIMIT};

/// Habitus detector constants (tuned on one half of the CMU subjects, see crate docs).
const UD_SCALE_S: f64 = 0.05;
const USER_CAP: f64 = 3.0;
const POPULATION_CAP: f64 = 4.0;
const RELATIVE_SCALE_FLOOR: f64 = 0.5;
const SCALE_INFLATION: f64 = 1.2;
/// Shortest duration we take a logarithm of (the CMU clock's resolution).
const MIN_DURATION_S: f64 = 1e-4;

/// Which fixed-text detector a profile uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Detector {
    Euclidean,
    Manhattan,
    ScaledManhattan,
    Habitus,
}

/// The CMU-layout feature vector of keystrokes in press order.
pub fn feature_vector(strokes: &[Keystroke]) -> Vec<f64> {
    let mut v = Vec::with_capacity(strokes.len().saturating_mul(3));
    for (i, s) in strokes.iter().enumerate() {
        v.push(s.hold_s());
        if let Some(next) = strokes.get(i + 1) {
            v.push((next.down_us - s.down_us) as f64 * 1e-6);
            v.push((next.down_us as f64 - s.up_us as f64) * 1e-6);
        }
    }
    v
}

/// The number of keys behind a CMU-layout vector of `len` values (`len = 3n - 2`).
pub fn keys_of(len: usize) -> usize {
    len.div_ceil(3)
}

/// Names of a vector of `dims` features (`H.0, DD.0.1, UD.0.1, H.1, …`).
pub fn feature_names(dims: usize) -> Vec<String> {
    (0..dims)
        .map(|j| {
            let k = j / 3;
            match j % 3 {
                0 => format!("H.{k}"),
                1 => format!("DD.{k}.{}", k + 1),
                _ => format!("UD.{k}.{}", k + 1),
            }
        })
        .collect()
}

/// Checks that `dims` is a CMU-layout length (`3n - 2`, n >= 2) and every value finite.
pub fn validate_vector(v: &[f64]) -> Result<(), PluginError> {
    if v.len() < 4 || (v.len() + 2) % 3 != 0 {
        return Err(PluginError::invalid_input(format!(
            "a fixed-text vector has 3n-2 values for n >= 2 keys, got {}",
            v.len()
        )));
    }
    if let Some(j) = v.iter().position(|x| !x.is_finite()) {
        return Err(PluginError::invalid_input(format!(
            "feature {j} is not finite"
        )));
    }
    // Holds and down-down latencies cannot be negative; up-down can (key overlap).
    if let Some(j) = (0..v.len()).find(|&j| j % 3 != 2 && v[j] < 0.0) {
        return Err(PluginError::invalid_input(format!(
            "feature {j} is a negative duration"
        )));
    }
    Ok(())
}

/// The habitus detector's feature transform: log holds and down-down latencies (timing
/// noise is multiplicative), a signed log-like `asinh` for up-down (which can be negative).
fn transform(v: &[f64]) -> Vec<f64> {
    v.iter()
        .enumerate()
        .map(|(j, &x)| match j % 3 {
            2 => (x / UD_SCALE_S).asinh(),
            _ => x.max(MIN_DURATION_S).ln(),
        })
        .collect()
}

/// The impostor side of the habitus detector: how people type this text when they are new
/// to it, and the calibration of the score into an LLR.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NovicePopulation {
    pub mean: Vec<f64>,
    pub sd: Vec<f64>,
    pub b0: f64,
    pub b1: f64,
    pub users: usize,
}

/// A trained fixed-text model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "detector", rename_all = "kebab-case")]
pub enum FixedModel {
    Euclidean {
        mean: Vec<f64>,
        d0: f64,
    },
    Manhattan {
        mean: Vec<f64>,
        d0: f64,
    },
    ScaledManhattan {
        mean: Vec<f64>,
        mad: Vec<f64>,
        d0: f64,
    },
    Habitus {
        centre: Vec<f64>,
        scale: Vec<f64>,
        population: Option<NovicePopulation>,
    },
}

impl FixedModel {
    pub fn dims(&self) -> usize {
        match self {
            FixedModel::Euclidean { mean, .. }
            | FixedModel::Manhattan { mean, .. }
            | FixedModel::ScaledManhattan { mean, .. } => mean.len(),
            FixedModel::Habitus { centre, .. } => centre.len(),
        }
    }

    /// Trains on enrolment vectors (chronological). `template_windows` limits the habitus
    /// template to the most recent windows (typing settles with practice).
    pub fn train(
        detector: Detector,
        samples: &[Vec<f64>],
        template_windows: usize,
        population: Option<&NovicePopulation>,
    ) -> Result<FixedModel, PluginError> {
        let dims = samples.first().map(Vec::len).unwrap_or(0);
        if samples.len() < 2 {
            return Err(PluginError::not_enough_data(format!(
                "fixed-text enrolment needs at least 2 windows, got {}",
                samples.len()
            )));
        }
        if samples.iter().any(|s| s.len() != dims) {
            return Err(PluginError::invalid_input(
                "enrolment windows have different lengths",
            ));
        }
        let means: Vec<f64> = (0..dims).map(|j| mean(&column(samples, j))).collect();
        let mut model = match detector {
            Detector::Euclidean => FixedModel::Euclidean {
                mean: means,
                d0: 1.0,
            },
            Detector::Manhattan => FixedModel::Manhattan {
                mean: means,
                d0: 1.0,
            },
            Detector::ScaledManhattan => {
                let mad = (0..dims)
                    .map(|j| {
                        let c = column(samples, j);
                        let m = means[j];
                        // Mean absolute deviation (Araújo et al.), floored so a constant
                        // feature cannot divide by zero.
                        (c.iter().map(|x| (x - m).abs()).sum::<f64>() / c.len() as f64).max(1e-9)
                    })
                    .collect();
                FixedModel::ScaledManhattan {
                    mean: means,
                    mad,
                    d0: 1.0,
                }
            }
            Detector::Habitus => {
                if let Some(p) = population {
                    if p.mean.len() != dims {
                        return Err(PluginError::invalid_profile(format!(
                            "population was built for {} features, enrolment has {dims}",
                            p.mean.len()
                        )));
                    }
                }
                let (centre, scale) = habitus_template(samples, template_windows);
                FixedModel::Habitus {
                    centre,
                    scale,
                    population: population.cloned(),
                }
            }
        };
        // Reference detectors: d0 = median enrolment distance, so their monotone "LLR" is
        // 0 at a typical genuine distance.
        let d0 = match &model {
            FixedModel::Habitus { .. } => 1.0,
            _ => median(
                &samples
                    .iter()
                    .map(|s| model.distance(s))
                    .collect::<Vec<_>>(),
            )
            .max(1e-12),
        };
        match &mut model {
            FixedModel::Euclidean { d0: d, .. }
            | FixedModel::Manhattan { d0: d, .. }
            | FixedModel::ScaledManhattan { d0: d, .. } => *d = d0,
            FixedModel::Habitus { .. } => {}
        }
        Ok(model)
    }

    /// Reference detectors' anomaly distance (0 for habitus).
    fn distance(&self, x: &[f64]) -> f64 {
        match self {
            FixedModel::Euclidean { mean, .. } => mean
                .iter()
                .zip(x)
                .map(|(m, v)| (v - m).powi(2))
                .sum::<f64>()
                .sqrt(),
            FixedModel::Manhattan { mean, .. } => {
                mean.iter().zip(x).map(|(m, v)| (v - m).abs()).sum()
            }
            FixedModel::ScaledManhattan { mean, mad, .. } => mean
                .iter()
                .zip(mad)
                .zip(x)
                .map(|((m, a), v)| (v - m).abs() / a)
                .sum(),
            FixedModel::Habitus { .. } => 0.0,
        }
    }

    /// The LLR of one validated vector of the right length.
    pub fn llr(&self, x: &[f64]) -> f64 {
        match self {
            FixedModel::Habitus {
                centre,
                scale,
                population,
            } => {
                let t = transform(x);
                match population {
                    Some(p) => {
                        let s = habitus_raw_score(&t, centre, scale, Some(p));
                        p.b0 + p.b1 * s
                    }
                    None => {
                        default_calibration(habitus_raw_score(&t, centre, scale, None), t.len())
                    }
                }
            }
            FixedModel::Euclidean { d0, .. }
            | FixedModel::Manhattan { d0, .. }
            | FixedModel::ScaledManhattan { d0, .. } => {
                let d = self.distance(x);
                -LLR_LIMIT * ((d / d0).ln() / 2.0).tanh()
            }
        }
    }
}

/// Median centre and inflated, floored MAD scale over the last `k` transformed samples.
fn habitus_template(samples: &[Vec<f64>], k: usize) -> (Vec<f64>, Vec<f64>) {
    let recent: Vec<Vec<f64>> = samples[samples.len().saturating_sub(k.max(2))..]
        .iter()
        .map(|s| transform(s))
        .collect();
    let dims = recent[0].len();
    let centre: Vec<f64> = (0..dims).map(|j| median(&column(&recent, j))).collect();
    let spread: Vec<f64> = (0..dims)
        .map(|j| mad(&column(&recent, j), centre[j]))
        .collect();
    // A feature that happened not to vary must not become infinitely sharp: floor each
    // scale at half the median scale, then widen all a little (sessions drift).
    let floor = (RELATIVE_SCALE_FLOOR * median(&spread)).max(1e-6);
    let scale = spread
        .iter()
        .map(|a| a.max(floor) * SCALE_INFLATION)
        .collect();
    (centre, scale)
}

/// `Σ 0.5·min(|x-M|/A, 4)² − 0.5·min(|x-m|/a, 3)²`: a diagonal-Gaussian log-likelihood
/// ratio with every feature's say capped, so one fumbled key cannot decide alone.
fn habitus_raw_score(
    t: &[f64],
    centre: &[f64],
    scale: &[f64],
    population: Option<&NovicePopulation>,
) -> f64 {
    let user: f64 = t
        .iter()
        .zip(centre.iter().zip(scale))
        .map(|(x, (m, a))| 0.5 * ((x - m).abs() / a).min(USER_CAP).powi(2))
        .sum();
    let impostor: f64 = match population {
        Some(p) => t
            .iter()
            .zip(p.mean.iter().zip(&p.sd))
            .map(|(x, (m, a))| 0.5 * ((x - m).abs() / a.max(1e-6)).min(POPULATION_CAP).powi(2))
            .sum(),
        None => 0.0,
    };
    impostor - user
}

/// Without a population the raw score is only the user term: an uncalibrated default puts
/// the decision point where the mean capped squared deviation is 3 (z ≈ 1.7) per feature.
fn default_calibration(raw: f64, dims: usize) -> f64 {
    0.2 * (raw + 1.5 * dims as f64)
}

/// Builds the novice population from other users' vectors (each user's chronological):
/// the first `novice_windows` of each user model impostors typing an unfamiliar text, and
/// a logistic regression calibrates the score with each user's later half as genuine.
pub fn build_population(
    users: &[Vec<Vec<f64>>],
    novice_windows: usize,
    template_windows: usize,
) -> Result<NovicePopulation, PluginError> {
    let users: Vec<&Vec<Vec<f64>>> = users
        .iter()
        .filter(|u| u.len() >= 2 * novice_windows.max(2))
        .collect();
    if users.len() < 3 {
        return Err(PluginError::not_enough_data(format!(
            "a population needs at least 3 users with {} windows each, got {}",
            2 * novice_windows.max(2),
            users.len()
        )));
    }
    let dims = users[0][0].len();
    if users.iter().any(|u| u.iter().any(|s| s.len() != dims)) {
        return Err(PluginError::invalid_input(
            "population users typed texts of different lengths",
        ));
    }
    let novice: Vec<Vec<f64>> = users
        .iter()
        .flat_map(|u| u[..novice_windows].iter().map(|s| transform(s)))
        .collect();
    let mean_v: Vec<f64> = (0..dims).map(|j| mean(&column(&novice, j))).collect();
    let sd: Vec<f64> = (0..dims)
        .map(|j| std_dev(&column(&novice, j), mean_v[j]).max(1e-6))
        .collect();
    let mut population = NovicePopulation {
        mean: mean_v,
        sd,
        b0: 0.0,
        b1: 1.0,
        users: users.len(),
    };
    let mut genuine = Vec::new();
    let mut impostor = Vec::new();
    for (t, user) in users.iter().enumerate() {
        let half = user.len() / 2;
        let (centre, scale) = habitus_template(&user[..half], template_windows);
        for s in &user[half..] {
            genuine.push(habitus_raw_score(
                &transform(s),
                &centre,
                &scale,
                Some(&population),
            ));
        }
        for (o, other) in users.iter().enumerate() {
            if o != t {
                for s in &other[..novice_windows] {
                    impostor.push(habitus_raw_score(
                        &transform(s),
                        &centre,
                        &scale,
                        Some(&population),
                    ));
                }
            }
        }
    }
    let (b0, b1) = fit_llr_calibration(&genuine, &impostor)
        .ok_or_else(|| PluginError::not_enough_data("population calibration did not converge"))?;
    population.b0 = b0;
    population.b1 = b1;
    Ok(population)
}

impl FixedModel {
    /// Moves the template centre a fraction `rate` towards a window that scored clearly
    /// genuine (the caller checked). Scales are kept: a few windows cannot tell us the
    /// spread has changed, and widening them would make the profile easier to pass.
    pub fn adapt(&mut self, x: &[f64], rate: f64) {
        if x.len() != self.dims() {
            return;
        }
        let (centre, target): (&mut Vec<f64>, Vec<f64>) = match self {
            FixedModel::Euclidean { mean, .. }
            | FixedModel::Manhattan { mean, .. }
            | FixedModel::ScaledManhattan { mean, .. } => (mean, x.to_vec()),
            FixedModel::Habitus { centre, .. } => (centre, transform(x)),
        };
        for (c, t) in centre.iter_mut().zip(target) {
            *c += rate * (t - *c);
        }
    }
}
