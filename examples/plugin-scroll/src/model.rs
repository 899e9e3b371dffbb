//! The statistics: a diagonal Gaussian per user against a diagonal Gaussian of everyone.
//!
//! **Calibration.** For a window with features `x`, per feature `f`:
//!
//! ```text
//! term_f = ln N(x_f; mu_user_f, sd_user_f) - ln N(x_f; mu_pop_f, sd_pop_f)     clipped to ±TERM_CAP
//! LLR    = SHRINK · Σ_f term_f                                                  clipped to ±10 by Score::new
//! ```
//!
//! The first Gaussian is the genuine model (the user's enrolment windows), the second the
//! impostor model (windows of many people: the population prior). If the features were
//! independent and Gaussian this sum would be exactly `ln p(x | user) / p(x | anyone)`.
//! They are not quite (a fast scroller has short intervals *and* long bursts), so the sum
//! is shrunk by [`SHRINK`], and one absurd feature cannot decide alone ([`TERM_CAP`]).
//! The user's spreads are floored at half the population's within-person spread and
//! widened by 20 %: twenty windows under-estimate how much a person varies across days.
//!
//! The built-in population ([`Population::builtin`]) was measured on 200 simulated people
//! (`habitus_plugin::conformance::Synthetic`, wheel behaviour). It is a placeholder: a
//! deployment builds one from real users with `build_population` and checks the LLRs
//! with the evaluation tools.

use habitus_plugin::{blob, PluginError};

use crate::features::FEATURES;

/// Shrinks the naive-Bayes sum for the features' dependence.
pub const SHRINK: f64 = 0.5;
/// Largest say of one feature, in nats.
pub const TERM_CAP: f64 = 4.0;
/// Floor of a user's spread, as a share of the population's within-person spread.
const SD_FLOOR: f64 = 0.5;
/// Widening of a user's measured spread.
const SD_WIDEN: f64 = 1.2;

pub const PROFILE_MAGIC: &[u8; 4] = b"HSCP";
pub const POPULATION_MAGIC: &[u8; 4] = b"HSCN";
/// The payload layout version of both blobs. Bump it when the layout changes; older
/// blobs are then refused with "re-enrol" (see `decode`).
pub const FORMAT: u8 = 1;

/// The impostor model: how windows of people in general look.
#[derive(Clone, Debug, PartialEq)]
pub struct Population {
    pub mean: [f64; FEATURES],
    /// Spread of windows across people (between plus within).
    pub sd: [f64; FEATURES],
    /// Typical spread of one person's windows.
    pub within_sd: [f64; FEATURES],
    pub users: f64,
}

/// The genuine model.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub mean: [f64; FEATURES],
    pub sd: [f64; FEATURES],
    pub windows: f64,
    pub population: Population,
}

fn ln_normal(x: f64, mean: f64, sd: f64) -> f64 {
    let z = (x - mean) / sd;
    -0.5 * z * z - sd.ln() - 0.5 * (std::f64::consts::TAU).ln()
}

fn mean_sd(rows: &[[f64; FEATURES]]) -> ([f64; FEATURES], [f64; FEATURES]) {
    let n = rows.len() as f64;
    let mut mean = [0.0; FEATURES];
    let mut sd = [0.0; FEATURES];
    for f in 0..FEATURES {
        mean[f] = rows.iter().map(|r| r[f]).sum::<f64>() / n;
        let var = rows.iter().map(|r| (r[f] - mean[f]).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        sd[f] = var.sqrt();
    }
    (mean, sd)
}

impl Population {
    /// Measured on 200 simulated people x 10 windows of 100 wheel events (see the module
    /// docs; `tests::builtin_population_is_what_the_simulation_gives` recomputes it).
    pub fn builtin() -> Population {
        Population {
            mean: [3.701, 0.251, 1.405, 7.126, 0.300, 0.036, 0.053],
            sd: [0.256, 0.026, 0.337, 0.327, 0.172, 0.024, 0.076],
            within_sd: [0.028, 0.024, 0.233, 0.100, 0.033, 0.019, 0.071],
            users: 0.0,
        }
    }

    /// From each user's window features: at least 3 users with 2 windows.
    pub fn build(users: &[Vec<[f64; FEATURES]>]) -> Result<Population, PluginError> {
        let users: Vec<&Vec<[f64; FEATURES]>> = users.iter().filter(|u| u.len() >= 2).collect();
        if users.len() < 3 {
            return Err(PluginError::not_enough_data(
                "a scroll population needs at least 3 users with 2 usable windows",
            ));
        }
        let means: Vec<[f64; FEATURES]> = users.iter().map(|u| mean_sd(u).0).collect();
        let (mean, between) = mean_sd(&means);
        let mut within_var = [0.0; FEATURES];
        for u in &users {
            let (_, sd) = mean_sd(u);
            for f in 0..FEATURES {
                within_var[f] += sd[f] * sd[f] / users.len() as f64;
            }
        }
        let mut sd = [0.0; FEATURES];
        let mut within_sd = [0.0; FEATURES];
        for f in 0..FEATURES {
            within_sd[f] = within_var[f].sqrt().max(1e-3);
            sd[f] = (between[f] * between[f] + within_var[f]).sqrt().max(1e-3);
        }
        Ok(Population {
            mean,
            sd,
            within_sd,
            users: users.len() as f64,
        })
    }

    fn to_f64s(&self, out: &mut Vec<f64>) {
        out.extend_from_slice(&self.mean);
        out.extend_from_slice(&self.sd);
        out.extend_from_slice(&self.within_sd);
        out.push(self.users);
    }

    fn from_f64s(v: &[f64]) -> Population {
        let arr = |i: usize| {
            let mut a = [0.0; FEATURES];
            a.copy_from_slice(&v[i * FEATURES..(i + 1) * FEATURES]);
            a
        };
        Population {
            mean: arr(0),
            sd: arr(1),
            within_sd: arr(2),
            users: v[3 * FEATURES],
        }
    }

    const LEN: usize = 3 * FEATURES + 1;

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::LEN);
        self.to_f64s(&mut v);
        blob::seal(POPULATION_MAGIC, FORMAT, &to_bytes(&v))
    }

    /// An empty blob means "the built-in population".
    pub fn decode(bytes: &[u8]) -> Result<Population, PluginError> {
        if bytes.is_empty() {
            return Ok(Population::builtin());
        }
        let v = decode(POPULATION_MAGIC, "scroll population", bytes, Self::LEN)?;
        let p = Population::from_f64s(&v);
        check_spreads(&p.sd, "scroll population")?;
        check_spreads(&p.within_sd, "scroll population")?;
        Ok(p)
    }
}

impl Profile {
    /// From the features of a user's enrolment windows (at least 3).
    pub fn enroll(
        windows: &[[f64; FEATURES]],
        population: Population,
    ) -> Result<Profile, PluginError> {
        if windows.len() < 3 {
            return Err(PluginError::not_enough_data(format!(
                "scroll enrolment needs at least 3 usable windows, got {}",
                windows.len()
            )));
        }
        let (mean, measured) = mean_sd(windows);
        let mut sd = [0.0; FEATURES];
        for f in 0..FEATURES {
            sd[f] = (measured[f] * SD_WIDEN).max(population.within_sd[f] * SD_FLOOR);
        }
        Ok(Profile {
            mean,
            sd,
            windows: windows.len() as f64,
            population,
        })
    }

    /// The per-feature terms (see the module docs) and the LLR before clipping.
    pub fn explain(&self, x: &[f64; FEATURES]) -> ([f64; FEATURES], f64) {
        let p = &self.population;
        let mut terms = [0.0; FEATURES];
        for f in 0..FEATURES {
            terms[f] = (ln_normal(x[f], self.mean[f], self.sd[f])
                - ln_normal(x[f], p.mean[f], p.sd[f]))
            .clamp(-TERM_CAP, TERM_CAP);
        }
        (terms, SHRINK * terms.iter().sum::<f64>())
    }

    pub fn llr(&self, x: &[f64; FEATURES]) -> f64 {
        self.explain(x).1
    }

    /// Moves the means towards a clearly genuine window.
    pub fn adapt(&mut self, x: &[f64; FEATURES], rate: f64) {
        self.windows += 1.0;
        let step = (1.0 / self.windows).max(rate);
        for (m, v) in self.mean.iter_mut().zip(x) {
            *m += (v - *m) * step;
        }
    }

    const LEN: usize = 2 * FEATURES + 1 + Population::LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::LEN);
        v.extend_from_slice(&self.mean);
        v.extend_from_slice(&self.sd);
        v.push(self.windows);
        self.population.to_f64s(&mut v);
        blob::seal(PROFILE_MAGIC, FORMAT, &to_bytes(&v))
    }

    pub fn decode(bytes: &[u8]) -> Result<Profile, PluginError> {
        let v = decode(PROFILE_MAGIC, "scroll profile", bytes, Self::LEN)?;
        let mut mean = [0.0; FEATURES];
        let mut sd = [0.0; FEATURES];
        mean.copy_from_slice(&v[..FEATURES]);
        sd.copy_from_slice(&v[FEATURES..2 * FEATURES]);
        let profile = Profile {
            mean,
            sd,
            windows: v[2 * FEATURES],
            population: Population::from_f64s(&v[2 * FEATURES + 1..]),
        };
        check_spreads(&profile.sd, "scroll profile")?;
        check_spreads(&profile.population.sd, "scroll profile")?;
        Ok(profile)
    }
}

fn to_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Opens the envelope, checks the format version and the length, and refuses
/// non-finite numbers.
fn decode(magic: &[u8; 4], what: &str, bytes: &[u8], len: usize) -> Result<Vec<f64>, PluginError> {
    let opened = blob::open(magic, what, bytes)?;
    if opened.format != FORMAT {
        return Err(PluginError::invalid_profile(format!(
            "{what} format {} is not supported (this plugin reads {FORMAT}): re-enrol",
            opened.format
        )));
    }
    if opened.payload.len() != len * 8 {
        return Err(PluginError::invalid_profile(format!(
            "{what} holds {} bytes, format {FORMAT} has {}",
            opened.payload.len(),
            len * 8
        )));
    }
    let v: Vec<f64> = opened
        .payload
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    if v.iter().any(|x| !x.is_finite()) {
        return Err(PluginError::invalid_profile(format!(
            "{what} holds a non-finite number"
        )));
    }
    Ok(v)
}

fn check_spreads(sd: &[f64; FEATURES], what: &str) -> Result<(), PluginError> {
    if sd.iter().all(|&s| s > 0.0) {
        Ok(())
    } else {
        Err(PluginError::invalid_profile(format!(
            "{what} has a spread that is not positive"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        let windows = [
            [3.70, 0.25, 1.40, 7.10, 0.30, 0.04, 0.05],
            [3.72, 0.24, 1.50, 7.20, 0.28, 0.03, 0.04],
            [3.68, 0.26, 1.30, 7.00, 0.32, 0.05, 0.06],
        ];
        Profile::enroll(&windows, Population::builtin()).unwrap()
    }

    #[test]
    fn blobs_round_trip_and_refuse_each_other() {
        let p = profile();
        assert_eq!(Profile::decode(&p.encode()).unwrap(), p);
        let pop = Population::builtin();
        assert_eq!(Population::decode(&pop.encode()).unwrap(), pop);
        assert_eq!(Population::decode(&[]).unwrap(), pop);
        assert!(Profile::decode(&pop.encode()).is_err());
        assert!(Population::decode(&p.encode()).is_err());
        // A newer format is refused with a clear message.
        let v = vec![0.0f64; Profile::LEN];
        let newer = blob::seal(PROFILE_MAGIC, FORMAT + 1, &to_bytes(&v));
        let e = Profile::decode(&newer).unwrap_err();
        assert!(e.message.contains("re-enrol"), "{e}");
        // Non-finite numbers inside a well-formed envelope are refused too.
        let mut v = vec![1.0f64; Profile::LEN];
        v[3] = f64::NAN;
        let nan = blob::seal(PROFILE_MAGIC, FORMAT, &to_bytes(&v));
        assert!(Profile::decode(&nan).is_err());
    }

    #[test]
    fn the_users_own_mean_scores_positive_and_a_far_window_negative() {
        let p = profile();
        assert!(p.llr(&p.mean) > 0.0);
        let mut far = p.mean;
        far[0] += 0.5; // intervals e^0.5 = 1.6 times longer
        far[2] -= 0.5;
        assert!(p.llr(&far) < 0.0);
        let (terms, llr) = p.explain(&far);
        assert!(terms.iter().all(|t| t.abs() <= TERM_CAP));
        assert!((llr - SHRINK * terms.iter().sum::<f64>()).abs() < 1e-12);
    }
}
