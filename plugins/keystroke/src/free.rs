//! Free text: whatever the user types, matched per key id and per key-id n-gram.
//!
//! Five timing types per window (after Gunetti & Picardi and the Aalto study): hold time
//! per key (`ln`), and per digraph down-down (`ln`), up-down and up-up (`asinh(x/20 ms)`:
//! they can be negative when keys overlap), and per trigraph down-down (`ln`). A
//! gallery keeps, per type and id, the running mean and count — timing statistics only,
//! never the order of keys.
//!
//! A query is compared with the gallery on the ids both contain. Per type: the mean
//! capped absolute z of the query's per-id means (`Z`, with the population's within-user
//! spread of that type) and the share of ids closer than half a spread (`A`). Seven
//! rhythm statistics (median and spread of holds and latencies, share of overlapping
//! keys, median up-down, mean interval) are compared as scaled absolute differences.
//! A logistic regression learned on *other* users (classes weighted equally, so the
//! output is a prior-free LLR) combines the 17 numbers.
//!
//! Timer-resolution statistics (how often times are multiples of 8 ms, …) would separate
//! users on the Aalto data much better, but they fingerprint the keyboard's USB polling
//! and the browser clock, not the person; they are deliberately not used.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::{fit_logistic, median};
use crate::timing::Keystroke;
use habitus_plugin::PluginError;

const TYPES: usize = 5;
const RHYTHM: usize = 7;
/// Inputs of the combiner: bias, Z and A per type, rhythm differences.
const INPUTS: usize = 1 + 2 * TYPES + RHYTHM;
const MAX_HOLD_US: u64 = 2_000_000;
const MAX_DIGRAPH_US: u64 = 3_000_000;
const MAX_TRIGRAPH_US: u64 = 4_000_000;
const Z_CAP: f64 = 4.0;
const RHYTHM_CAP: f64 = 5.0;

fn id(kind: u64, keys: &[u32]) -> u64 {
    // Type in the top 3 bits; key ids mixed below (collisions only merge statistics).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &k in keys {
        h ^= k as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (kind << 61) | (h >> 3)
}

/// `(feature id, value)` observations of one window, and its rhythm statistics.
pub fn observations(strokes: &[Keystroke]) -> (Vec<(u64, f64)>, Option<[f64; RHYTHM]>) {
    let mut out = Vec::with_capacity(strokes.len() * 5);
    let hold_ok = |s: &Keystroke| s.up_us > s.down_us && s.up_us - s.down_us <= MAX_HOLD_US;
    let (mut holds, mut dds, mut uds) = (Vec::new(), Vec::new(), Vec::new());
    for (i, s) in strokes.iter().enumerate() {
        if hold_ok(s) {
            let h = (s.up_us - s.down_us) as f64 / 1000.0;
            out.push((id(0, &[s.key]), h.ln()));
            holds.push(h.ln());
        }
        if let Some(n) = strokes.get(i + 1) {
            let dd = n.down_us - s.down_us;
            if dd > 0 && dd <= MAX_DIGRAPH_US && hold_ok(s) && hold_ok(n) {
                let ud = (n.down_us as f64 - s.up_us as f64) / 1000.0;
                let uu = (n.up_us as f64 - s.up_us as f64) / 1000.0;
                out.push((id(1, &[s.key, n.key]), (dd as f64 / 1000.0).ln()));
                out.push((id(2, &[s.key, n.key]), (ud / 20.0).asinh()));
                out.push((id(3, &[s.key, n.key]), (uu / 20.0).asinh()));
                dds.push((dd as f64 / 1000.0).ln());
                uds.push(ud);
            }
        }
        if let Some(m) = strokes.get(i + 2) {
            let d2 = m.down_us - s.down_us;
            if d2 > 0 && d2 <= MAX_TRIGRAPH_US {
                out.push((
                    id(4, &[s.key, strokes[i + 1].key, m.key]),
                    (d2 as f64 / 1000.0).ln(),
                ));
            }
        }
    }
    let rhythm = (holds.len() >= 3 && dds.len() >= 3).then(|| {
        let iqr = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v[(3 * v.len()) / 4] - v[v.len() / 4]
        };
        let span = strokes.last().map(|l| l.down_us).unwrap_or(0) - strokes[0].down_us;
        [
            median(&holds),
            iqr(&holds),
            median(&dds),
            iqr(&dds),
            uds.iter().filter(|&&u| u < 0.0).count() as f64 / uds.len() as f64,
            median(&uds.iter().map(|u| (u / 20.0).asinh()).collect::<Vec<_>>()),
            ((span as f64 / 1000.0).max(1.0) / (strokes.len() - 1) as f64).ln(),
        ]
    });
    (out, rhythm)
}

fn kind_of(id: u64) -> usize {
    (id >> 61) as usize
}

/// Mean per id of a window's observations.
fn per_id_means(obs: &[(u64, f64)]) -> Vec<(u64, f64)> {
    let mut m: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for &(i, x) in obs {
        let e = m.entry(i).or_insert((0.0, 0.0));
        e.0 += x;
        e.1 += 1.0;
    }
    m.into_iter().map(|(i, (s, n))| (i, s / n)).collect()
}

/// Spreads and combiner learned from other users.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FreePopulation {
    /// Within-user spread of each timing type.
    pub type_sd: Vec<f64>,
    /// Spread of each rhythm statistic between windows of one user.
    pub rhythm_sd: Vec<f64>,
    /// Combiner weights (`INPUTS` values; the first is the bias).
    pub weights: Vec<f64>,
    pub users: usize,
}

impl Default for FreePopulation {
    /// Uncalibrated built-in prior (typical spreads; equal-say weights), used until a
    /// population is built: decision near a mean capped |z| of 1.2.
    fn default() -> Self {
        let mut weights = vec![0.0; INPUTS];
        weights[0] = 6.0;
        for t in 0..TYPES {
            weights[1 + t] = -1.0;
        }
        FreePopulation {
            type_sd: vec![0.25, 0.3, 1.0, 1.0, 0.3],
            rhythm_sd: vec![0.15, 0.15, 0.15, 0.15, 0.15, 0.5, 0.15],
            weights,
            users: 0,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub n: f64,
    pub mean: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FreeModel {
    /// Sorted by feature id (a list, not a map: JSON map keys would have to be strings).
    pub features: Vec<(u64, Stat)>,
    pub rhythm: Vec<f64>,
    pub rhythm_windows: f64,
    pub population: FreePopulation,
}

impl FreeModel {
    pub fn train(
        windows: &[Vec<Keystroke>],
        population: Option<FreePopulation>,
    ) -> Result<FreeModel, PluginError> {
        let mut features: BTreeMap<u64, Stat> = BTreeMap::new();
        let mut rhythm = vec![0.0; RHYTHM];
        let mut rhythm_windows = 0.0;
        for w in windows {
            let (obs, r) = observations(w);
            for (i, x) in obs {
                let s = features.entry(i).or_default();
                s.n += 1.0;
                s.mean += (x - s.mean) / s.n;
            }
            if let Some(r) = r {
                rhythm_windows += 1.0;
                for (a, b) in rhythm.iter_mut().zip(r) {
                    *a += (b - *a) / rhythm_windows;
                }
            }
        }
        if features.len() < 5 || rhythm_windows == 0.0 {
            return Err(PluginError::not_enough_data(format!(
                "free-text enrolment found only {} keys and n-grams",
                features.len()
            )));
        }
        Ok(FreeModel {
            features: features.into_iter().collect(),
            rhythm,
            rhythm_windows,
            population: population.unwrap_or_default(),
        })
    }

    fn get(&self, id: u64) -> Option<&Stat> {
        self.features
            .binary_search_by_key(&id, |(k, _)| *k)
            .ok()
            .map(|i| &self.features[i].1)
    }

    /// The combiner's inputs for one window, and how many ids were shared.
    // Parallel per-type and per-statistic arrays: indices say which is which.
    #[allow(clippy::needless_range_loop)]
    fn inputs(&self, strokes: &[Keystroke]) -> Option<(Vec<f64>, usize)> {
        let (obs, rhythm) = observations(strokes);
        let rhythm = rhythm?;
        let p = &self.population;
        let mut z = [0.0; TYPES];
        let mut close = [0.0; TYPES];
        let mut n = [0usize; TYPES];
        for (i, q) in per_id_means(&obs) {
            if let Some(g) = self.get(i) {
                let t = kind_of(i);
                let d = (q - g.mean).abs() / p.type_sd[t];
                z[t] += d.min(Z_CAP);
                close[t] += (d < 0.5) as u8 as f64;
                n[t] += 1;
            }
        }
        let shared: usize = n.iter().sum();
        if shared == 0 {
            return None;
        }
        let mut x = Vec::with_capacity(INPUTS);
        x.push(1.0);
        for t in 0..TYPES {
            x.push(if n[t] > 0 { z[t] / n[t] as f64 } else { 1.0 });
        }
        for t in 0..TYPES {
            x.push(if n[t] > 0 {
                close[t] / n[t] as f64
            } else {
                0.5
            });
        }
        for r in 0..RHYTHM {
            x.push(((rhythm[r] - self.rhythm[r]).abs() / p.rhythm_sd[r]).min(RHYTHM_CAP));
        }
        Some((x, shared))
    }

    /// `(llr, quality)`; a window sharing nothing with the profile gives no opinion.
    pub fn score(&self, strokes: &[Keystroke]) -> (f64, f64) {
        match self.inputs(strokes) {
            Some((x, shared)) => {
                let llr = self
                    .population
                    .weights
                    .iter()
                    .zip(&x)
                    .map(|(w, v)| w * v)
                    .sum();
                (llr, (shared as f64 / 60.0).min(1.0))
            }
            None => (0.0, 0.0),
        }
    }

    /// Folds a clearly genuine window into the gallery, each new observation weighing at
    /// most `rate` (an exponential moving mean once enough has been seen).
    pub fn adapt(&mut self, strokes: &[Keystroke], rate: f64) {
        let (obs, _) = observations(strokes);
        for (i, x) in per_id_means(&obs) {
            match self.features.binary_search_by_key(&i, |(k, _)| *k) {
                Ok(j) => {
                    let s = &mut self.features[j].1;
                    s.n += 1.0;
                    s.mean += (x - s.mean) * (1.0 / s.n).max(rate);
                }
                Err(j) => self.features.insert(j, (i, Stat { n: 1.0, mean: x })),
            }
        }
    }
}

/// Learns spreads and the combiner from other users (each user's windows in order): a
/// gallery of the first third (at most 5 windows), genuine queries from the last third,
/// impostor queries = a middle window of up to 60 other users.
pub fn build_population(users: &[Vec<Vec<Keystroke>>]) -> Result<FreePopulation, PluginError> {
    let users: Vec<&Vec<Vec<Keystroke>>> = users.iter().filter(|u| u.len() >= 3).collect();
    if users.len() < 3 {
        return Err(PluginError::not_enough_data(
            "a free-text population needs at least 3 users with 3 windows",
        ));
    }
    // Within-user spreads: per user and id, the spread of window means.
    let mut spreads: Vec<Vec<f64>> = vec![Vec::new(); TYPES];
    let mut rhythm_dev: Vec<Vec<f64>> = vec![Vec::new(); RHYTHM];
    for u in &users {
        let mut per: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
        let mut rh: Vec<[f64; RHYTHM]> = Vec::new();
        for w in u.iter() {
            let (obs, r) = observations(w);
            for (i, x) in per_id_means(&obs) {
                per.entry(i).or_default().push(x);
            }
            rh.extend(r);
        }
        for (i, v) in per {
            if v.len() >= 3 {
                let m = v.iter().sum::<f64>() / v.len() as f64;
                let sd =
                    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt();
                spreads[kind_of(i)].push(sd);
            }
        }
        if rh.len() >= 2 {
            for r in 0..RHYTHM {
                let m = rh.iter().map(|x| x[r]).sum::<f64>() / rh.len() as f64;
                for x in &rh {
                    rhythm_dev[r].push((x[r] - m).abs() * 1.2533); // mean |dev| -> sd
                }
            }
        }
    }
    let fallback = FreePopulation::default();
    let type_sd = (0..TYPES)
        .map(|t| {
            if spreads[t].is_empty() {
                fallback.type_sd[t]
            } else {
                median(&spreads[t]).max(0.02)
            }
        })
        .collect();
    let rhythm_sd = (0..RHYTHM)
        .map(|r| {
            if rhythm_dev[r].is_empty() {
                fallback.rhythm_sd[r]
            } else {
                (rhythm_dev[r].iter().sum::<f64>() / rhythm_dev[r].len() as f64).max(1e-3)
            }
        })
        .collect();
    let base = FreePopulation {
        type_sd,
        rhythm_sd,
        weights: fallback.weights.clone(),
        users: users.len(),
    };
    let mut genuine = Vec::new();
    let mut impostor = Vec::new();
    let n = users.len();
    for (t, u) in users.iter().enumerate() {
        let third = (u.len() / 3).max(1);
        let Ok(model) = FreeModel::train(&u[..third.min(5)], Some(base.clone())) else {
            continue;
        };
        genuine.extend(
            u[u.len() - third..]
                .iter()
                .filter_map(|w| model.inputs(w))
                .map(|x| x.0),
        );
        let others = (n - 1).min(60);
        for k in 1..=others {
            let o = users[(t + k * (n - 1) / others.max(1)) % n];
            if std::ptr::eq(o, *u) {
                continue;
            }
            if let Some((x, _)) = model.inputs(&o[o.len() / 2]) {
                impostor.push(x);
            }
        }
    }
    let weights = fit_logistic(&genuine, &impostor, 1e-3)
        .ok_or_else(|| PluginError::not_enough_data("free-text combiner did not converge"))?;
    Ok(FreePopulation { weights, ..base })
}
