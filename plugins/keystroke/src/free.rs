//! Free text: statistics per key (hold time) and per digraph (down-down latency) over
//! key ids, matched between enrolment and query wherever both contain the same key or
//! digraph. Only timing statistics are kept, never the order of keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::fit_llr_calibration;
use crate::timing::Keystroke;
use habitus_plugin::PluginError;

/// Latencies above this are pauses (thinking, reading), not rhythm.
const MAX_LATENCY_US: u64 = 2_000_000;
const Z_CAP: f64 = 3.0;
/// Smallest spread of a log-time we believe (about ±10 %).
const MIN_SD: f64 = 0.1;

/// Feature identities: holds keyed by key id, digraphs by the pair (high bit marks them).
fn hold_id(key: u32) -> u64 {
    key as u64
}
fn digraph_id(a: u32, b: u32) -> u64 {
    (1 << 63) | ((a as u64) << 31) ^ b as u64
}

/// `(feature id, ln seconds)` for every usable hold and digraph of a window.
pub fn observations(strokes: &[Keystroke]) -> Vec<(u64, f64)> {
    let mut out = Vec::with_capacity(strokes.len() * 2);
    for (i, s) in strokes.iter().enumerate() {
        let hold = s.up_us - s.down_us;
        if hold > 0 {
            out.push((hold_id(s.key), (hold as f64 * 1e-6).ln()));
        }
        if let Some(n) = strokes.get(i + 1) {
            let dd = n.down_us - s.down_us;
            if dd > 0 && dd <= MAX_LATENCY_US {
                out.push((digraph_id(s.key, n.key), (dd as f64 * 1e-6).ln()));
            }
        }
    }
    out
}

/// Running statistics of one feature.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub n: f64,
    pub mean: f64,
    pub m2: f64,
}

impl Stat {
    fn push(&mut self, x: f64) {
        self.n += 1.0;
        let d = x - self.mean;
        self.mean += d / self.n;
        self.m2 += d * (x - self.mean);
    }
    fn sd(&self, prior_sd: f64) -> f64 {
        // Shrink towards the population spread: few observations say little about spread.
        let k = 3.0;
        (((self.m2 + k * prior_sd * prior_sd) / (self.n + k)).sqrt()).max(MIN_SD)
    }
}

/// Spread prior and calibration learned from other users.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FreePopulation {
    pub prior_sd: f64,
    pub b0: f64,
    pub b1: f64,
    pub users: usize,
}

impl Default for FreePopulation {
    fn default() -> Self {
        // Uncalibrated defaults: decision where the mean capped squared z is about 2.
        FreePopulation {
            prior_sd: 0.25,
            b0: 4.0,
            b1: -2.0,
            users: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FreeModel {
    /// Sorted by feature id (a list, not a map: JSON map keys would have to be strings).
    pub features: Vec<(u64, Stat)>,
    pub population: FreePopulation,
}

impl FreeModel {
    pub fn train(
        windows: &[Vec<Keystroke>],
        population: Option<FreePopulation>,
    ) -> Result<FreeModel, PluginError> {
        let mut features: BTreeMap<u64, Stat> = BTreeMap::new();
        for w in windows {
            for (id, x) in observations(w) {
                features.entry(id).or_default().push(x);
            }
        }
        if features.len() < 5 {
            return Err(PluginError::not_enough_data(format!(
                "free-text enrolment found only {} keys and digraphs",
                features.len()
            )));
        }
        Ok(FreeModel {
            features: features.into_iter().collect(),
            population: population.unwrap_or_default(),
        })
    }

    /// Mean capped squared z over the query's observations shared with the profile, and
    /// how many were shared.
    fn distance(&self, strokes: &[Keystroke]) -> (f64, usize) {
        let mut sum = 0.0;
        let mut shared = 0usize;
        for (id, x) in observations(strokes) {
            if let Some(s) = self.get(id) {
                let z = ((x - s.mean) / s.sd(self.population.prior_sd))
                    .abs()
                    .min(Z_CAP);
                sum += 0.5 * z * z;
                shared += 1;
            }
        }
        if shared == 0 {
            (f64::NAN, 0)
        } else {
            (sum / shared as f64, shared)
        }
    }

    /// `(llr, quality)`; no shared evidence gives LLR 0 with quality 0 (no opinion).
    pub fn score(&self, strokes: &[Keystroke]) -> (f64, f64) {
        let (d, shared) = self.distance(strokes);
        if shared == 0 {
            return (0.0, 0.0);
        }
        let p = &self.population;
        (p.b0 + p.b1 * d, (shared as f64 / 40.0).min(1.0))
    }

    fn get(&self, id: u64) -> Option<&Stat> {
        self.features
            .binary_search_by_key(&id, |(k, _)| *k)
            .ok()
            .map(|i| &self.features[i].1)
    }

    pub fn adapt(&mut self, strokes: &[Keystroke], _rate: f64) {
        for (id, x) in observations(strokes) {
            match self.features.binary_search_by_key(&id, |(k, _)| *k) {
                Ok(i) => self.features[i].1.push(x),
                Err(i) => {
                    let mut s = Stat::default();
                    s.push(x);
                    self.features.insert(i, (id, s));
                }
            }
        }
    }
}

/// Spread prior and calibration from other users: each user's first half of windows
/// enrols, their second half are genuine queries, other users' windows are impostors.
pub fn build_population(users: &[Vec<Vec<Keystroke>>]) -> Result<FreePopulation, PluginError> {
    let users: Vec<&Vec<Vec<Keystroke>>> = users.iter().filter(|u| u.len() >= 2).collect();
    if users.len() < 3 {
        return Err(PluginError::not_enough_data(
            "a free-text population needs at least 3 users with 2 windows",
        ));
    }
    let mut spreads = Vec::new();
    for u in &users {
        let model = FreeModel::train(&u[..u.len() / 2], None);
        if let Ok(m) = model {
            spreads.extend(
                m.features
                    .iter()
                    .map(|(_, s)| s)
                    .filter(|s| s.n >= 3.0)
                    .map(|s| (s.m2 / (s.n - 1.0)).sqrt()),
            );
        }
    }
    let prior_sd = if spreads.is_empty() {
        FreePopulation::default().prior_sd
    } else {
        crate::stats::median(&spreads)
    };
    let base = FreePopulation {
        prior_sd,
        b0: 0.0,
        b1: 1.0,
        users: users.len(),
    };
    let mut genuine = Vec::new();
    let mut impostor = Vec::new();
    for (t, u) in users.iter().enumerate() {
        let Ok(model) = FreeModel::train(&u[..u.len() / 2], Some(base.clone())) else {
            continue;
        };
        genuine.extend(
            u[u.len() / 2..]
                .iter()
                .map(|w| model.distance(w))
                .filter(|d| d.1 > 0)
                .map(|d| d.0),
        );
        for (o, other) in users.iter().enumerate() {
            if o != t {
                if let Some(w) = other.last() {
                    let d = model.distance(w);
                    if d.1 > 0 {
                        impostor.push(d.0);
                    }
                }
            }
        }
    }
    let (b0, b1) = fit_llr_calibration(&genuine, &impostor)
        .ok_or_else(|| PluginError::not_enough_data("free-text calibration did not converge"))?;
    Ok(FreePopulation { b0, b1, ..base })
}
