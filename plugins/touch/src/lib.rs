//! # habitus-touch: touchscreen swipes
//!
//! A Habitus modality plugin (`cdylib`) that scores how a person swipes, after
//! Touchalytics (M. Frank, R. Biedert, E. Ma, I. Martinovic, D. Song, IEEE TIFS 8(1),
//! 2013).
//!
//! ## From events to features
//!
//! Raw `TouchDown` / `TouchMove` / `TouchUp` events become single-finger strokes
//! ([`stroke`]: taps, one-point strokes, clocks going backwards, non-finite values and
//! multi-touch gestures are skipped and counted), and every stroke becomes the
//! Touchalytics feature vector of 31 values ([`features`], with each definition), in the
//! column order and units of the authors' published `featMat.csv` minus its label columns.
//! `extract` returns the vectors of a window's strokes one after the other; every
//! feature-level entry point accepts one or more such vectors concatenated.
//!
//! ## What the model uses, and what it leaves out
//!
//! * **Behaviour (27 model values from 24 features)**: inter-stroke time, duration,
//!   start/stop position, end-to-end distance, mean resultant length, end-to-end
//!   direction, pairwise velocity and acceleration percentiles, velocity at the last
//!   points, deviation from the end-to-end line (largest and percentiles), average
//!   direction, trajectory length, straightness ratio, average velocity, acceleration at
//!   the first points. Transforms in [`model::transform`].
//! * **Left out as environment cues**: phone id (a label, never a feature), phone
//!   orientation (how the device is held in a given app, and constant for most users),
//!   mid-stroke finger orientation and its change (reported by few touchscreens: zero for
//!   95 % resp. 100 % of the published strokes, so they describe the device driver).
//! * **Device-dependent, off by default** (`device_features = true` turns them on):
//!   mid-stroke pressure and contact area. Their scale is the touchscreen's calibration
//!   (median pressure 0.12–0.56 depending on the phone model in the Touchalytics data), so
//!   across devices they identify the phone. Measured on Touchalytics (docs/results.md):
//!   they cut the inter-session single-stroke EER by about a third against all impostors,
//!   but only by a tenth against impostors on the same phone model, which is what an
//!   impostor picking up the user's device is.
//! * The up/down/left/right flag picks the stroke type: scrolling (up/down) and
//!   horizontal (left/right) strokes are modelled apart, as in the paper.
//!
//! ## The model (per stroke type)
//!
//! * **Population** (`build_population*`, from other users): robust centre and scale of
//!   every model value (median, IQR/1.349; standardised values clipped to ±4, missing
//!   values imputed at the centre, at most 8 per stroke), a whitening of the *within-user*
//!   scatter (Cholesky of the pooled covariance of users' strokes around their own means,
//!   plus a ridge of 0.1 × its mean variance), so one person's strokes vary equally in
//!   every direction and directions in which people differ stand out; and up to 4,000
//!   whitened population strokes as the **impostor density reference** (evenly thinned;
//!   a profile therefore carries ≈ 0.7 MB per stroke type, which it needs to score).
//!   Decoded profiles are cached; a cache hit still compares the blob byte for byte, so
//!   live sessions decode once through `prepare` (interface 0.2) and skip both.
//! * **Profile** (`enroll*`): the user's most recent whitened strokes (at most
//!   `max_template_strokes`, at least `min_enrol_strokes` for a type to be modelled).
//! * **Score of one stroke**: `s = ln d_pop − ln d_user`, with `d_user` the mean distance
//!   to its `neighbours` (5) nearest enrolment strokes and `d_pop` the mean distance to its
//!   20 nearest reference strokes: a k-nearest-neighbour estimate of the log density ratio
//!   user / population (up to a factor the calibration absorbs).
//! * **Calibration**: `llr = a + b·s`, a logistic regression (classes weighted equally, so
//!   the log-odds is a prior-free LLR) fitted on the population users: each user's earlier
//!   half of strokes is a template, the later half gives genuine scores, the later halves
//!   of up to 20 other users give impostor scores; the reference used for those scores
//!   never holds strokes of either party.
//! * **Per-user boosted trees** (with a population, `tree_weight` > 0): at enrolment,
//!   gradient-boosted trees (crate `habitus-boost`: 300 trees of depth 4, learning rate
//!   0.03, at least 50 strokes per leaf, 80 % row and feature subsampling) learn to tell
//!   the user's whitened enrolment strokes from the population reference, the two classes
//!   weighted equally. Their log-odds are **calibrated** to an LLR (`a + b·log-odds`, a
//!   logistic regression) by cross-validation inside the enrolment: the enrolment
//!   strokes in three consecutive blocks, the reference in two halves (mostly different
//!   people); trees trained without one block and with one half score that block
//!   (genuine) and the other half (people they never saw). The calibrated tree LLR,
//!   capped at +1 (trees that saw only the user and the population can put a stranger
//!   unlike both on the user's side; the cap keeps them from outvoting the k-NN term,
//!   which sees the stroke is far from the user's own; accusing has no cap), times
//!   `tree_weight` (1) is added to the calibrated k-NN LLR of every stroke. The weight
//!   was chosen on the tuning half of Touchalytics (0.5, 1, 2 tried). The trees cut the
//!   inter-session EER by about 14 % (docs/results.md), against same-phone impostors
//!   too, so they do not lean on the screen size. Enrolment trains four ensembles per
//!   stroke type (three for the calibration), about a second in a release build;
//!   adaptation does not retrain them (it moves the k-NN template only). This follows
//!   the paper's per-user discriminative classifiers, with negatives from the population
//!   only, never from the people the user is tested against.
//! * **A window** scores the sum of its strokes' LLRs (naive Bayes), clipped to ±10;
//!   quality = strokes / 11, capped at 1 (the paper decides on 11 strokes). Consecutive
//!   strokes are not independent, so the summed LLR is over-confident; fusion should
//!   weigh touch accordingly.
//! * **Without a population** (a fresh installation) a type falls back to the built-in
//!   prior: the user's own centre and scale, no whitening, `d_pop` replaced by 1.5 × the
//!   median leave-one-out neighbour distance among the user's own strokes, `llr = 2·s`. This is
//!   uncalibrated; build a population (`habitus population build`) for calibrated scores.
//! * **Adaptation**: a window that scores at least `adapt_min_llr` (re-scored by the
//!   plugin, never trusting the caller) appends at most `adapt_max_strokes` strokes; the
//!   oldest fall out beyond `max_template_strokes`.
//!
//! * **Speed**: a decoded profile is turned once into a [`model::ScoringProfile`]: rows
//!   in the blocked layout of [`knn`] (SIMD, AVX2 chosen at run time, clusters searched
//!   nearest first, exact early dismissal) and trees compiled. Scores are the same as
//!   from the stored rows, bit for bit.
//!
//! The constants (neighbours, reference size and neighbours, ridge, clip) were chosen on
//! half of the Touchalytics users and checked on the other half; the numbers are in
//! `docs/results.md` (`habitus eval touchalytics`).
//!
//! Blobs are versioned JSON in a magic-tagged, fingerprinted envelope ([`blob`]).
//! Privacy: a profile holds whitened feature vectors of the user's strokes (positions,
//! speeds, shapes), never what was on the screen; like every profile it belongs in the
//! encrypted store.

pub mod blob;
pub mod config;
pub mod features;
pub mod knn;
pub mod model;
pub mod stats;
pub mod stroke;

use std::sync::{Arc, Mutex};

use habitus_plugin::{
    decoded_as, export_plugin, Decoded, Event, EventKind, Modality, Plugin, PluginDescriptor,
    PluginError, RVec, Score,
};

use crate::config::Config;
use crate::features::{stroke_features, FEATURES};
use crate::model::{
    build_type_population, model_stroke, ModelStroke, Population, Profile, ScoringProfile,
    StrokeType, TypeProfile,
};
use crate::stroke::{segment, Skipped};

pub const PLUGIN_NAME: &str = "touch";

/// Strokes for a full-quality decision (the paper's 11).
pub const DECISION_STROKES: f64 = 11.0;

/// The touch plugin, configured.
pub struct Touch {
    config: Config,
    /// Recently decoded profiles, most recent first.
    decoded: Mutex<Vec<CachedProfile>>,
}

/// A decoded profile: (fingerprint, its exact bytes, the profile).
type CachedProfile = (u64, Vec<u8>, Arc<ScoringProfile>);

/// Profiles kept decoded (a few concurrent sessions).
const DECODED_PROFILES: usize = 8;

impl Touch {
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Feature vectors of a window's strokes, and what was skipped.
    pub fn window_features(&self, window: &[Event]) -> (Vec<[f64; FEATURES]>, Skipped, u32) {
        let seg = segment(window, self.config.pixels_per_mm);
        let events = seg.strokes.iter().map(|s| s.events).sum();
        (
            seg.strokes.iter().map(stroke_features).collect(),
            seg.skipped,
            events,
        )
    }

    /// The strokes of one feature-level sample (one or more stroke vectors concatenated).
    fn sample_strokes(&self, sample: &[f64]) -> Result<Vec<ModelStroke>, PluginError> {
        if sample.is_empty() || sample.len() % FEATURES != 0 {
            return Err(PluginError::invalid_input(format!(
                "a touch sample is one or more stroke vectors of {FEATURES} values, got {} values",
                sample.len()
            )));
        }
        sample
            .chunks_exact(FEATURES)
            .map(|s| model_stroke(s, self.config.device_features))
            .collect()
    }

    fn samples_strokes(&self, samples: &[RVec<f64>]) -> Result<Vec<ModelStroke>, PluginError> {
        let mut out = Vec::with_capacity(samples.len());
        for (i, s) in samples.iter().enumerate() {
            let strokes = self.sample_strokes(s).map_err(|e| {
                PluginError::new(e.kind, format!("sample {i}: {}", e.message.as_str()))
            })?;
            out.extend(strokes);
        }
        Ok(out)
    }

    /// Model strokes of event windows; strokes the model cannot use are counted.
    fn window_strokes(&self, windows: &[RVec<Event>]) -> (Vec<ModelStroke>, Skipped, u32) {
        let mut strokes = Vec::new();
        let mut skipped = Skipped::default();
        let mut unusable = 0;
        for w in windows {
            let (features, s, _) = self.window_features(w);
            add_skipped(&mut skipped, &s);
            for f in features {
                match model_stroke(&f, self.config.device_features) {
                    Ok(m) => strokes.push(m),
                    Err(_) => unusable += 1,
                }
            }
        }
        (strokes, skipped, unusable)
    }

    fn build_population_from(&self, users: &[Vec<ModelStroke>]) -> Result<Vec<u8>, PluginError> {
        let mut types = Vec::new();
        for t in StrokeType::ALL {
            let per_user: Vec<Vec<Vec<f64>>> = users
                .iter()
                .map(|u| {
                    u.iter()
                        .filter(|s| s.kind == t)
                        .map(|s| s.values.clone())
                        .collect()
                })
                .collect();
            types.push(build_type_population(
                &per_user,
                self.config.neighbours,
                self.config.max_template_strokes,
            )?);
        }
        if types.iter().all(Option::is_none) {
            return Err(PluginError::not_enough_data(
                "a touch population needs at least 3 users with strokes of one type (scrolling or horizontal), each with at least 2·neighbours strokes",
            ));
        }
        blob::encode(
            blob::POPULATION_MAGIC,
            &Population {
                device_features: self.config.device_features,
                types,
            },
        )
    }

    fn decode_population(&self, blob: &[u8]) -> Result<Option<Population>, PluginError> {
        if blob.is_empty() {
            return Ok(None);
        }
        let p: Population = blob::decode(blob::POPULATION_MAGIC, "population", blob)?;
        p.check(self.config.device_features)?;
        Ok(Some(p))
    }

    fn enroll_strokes(
        &self,
        population: &[u8],
        strokes: &[ModelStroke],
    ) -> Result<Vec<u8>, PluginError> {
        let population = self.decode_population(population)?;
        let mut types = Vec::new();
        let mut counts = Vec::new();
        for t in StrokeType::ALL {
            let mine: Vec<Vec<f64>> = strokes
                .iter()
                .filter(|s| s.kind == t)
                .map(|s| s.values.clone())
                .collect();
            counts.push(mine.len());
            if mine.len() < self.config.min_enrol_strokes {
                types.push(None);
                continue;
            }
            let pop = population
                .as_ref()
                .and_then(|p| p.types[t as usize].as_ref());
            types.push(Some(TypeProfile::enroll(
                &mine,
                pop,
                self.config.neighbours,
                self.config.max_template_strokes,
                self.config.tree_weight,
            )));
        }
        if types.iter().all(Option::is_none) {
            return Err(PluginError::not_enough_data(format!(
                "touch enrolment needs {} strokes of one type; got {} scrolling and {} horizontal",
                self.config.min_enrol_strokes, counts[0], counts[1]
            )));
        }
        blob::encode(
            blob::PROFILE_MAGIC,
            &Profile {
                device_features: self.config.device_features,
                neighbours: self.config.neighbours,
                types,
            },
        )
    }

    fn decode_profile(&self, blob: &[u8]) -> Result<Arc<ScoringProfile>, PluginError> {
        let key = blob::stored_fingerprint(blob);
        if let Some(fp) = key {
            let mut cache = self.decoded.lock().unwrap_or_else(|p| p.into_inner());
            // The fingerprint only finds the candidate; the bytes must match exactly, so
            // a corrupted or altered blob is never served from the cache.
            if let Some(i) = cache
                .iter()
                .position(|(f, bytes, _)| *f == fp && bytes.as_slice() == blob)
            {
                let entry = cache.remove(i);
                let profile = entry.2.clone();
                cache.insert(0, entry);
                return Ok(profile);
            }
        }
        // Decode without holding the lock; `decode` verifies the fingerprint.
        let profile: Profile = blob::decode(blob::PROFILE_MAGIC, "profile", blob)?;
        profile.check(self.config.device_features)?;
        let profile = Arc::new(ScoringProfile::new(profile));
        if let Some(fp) = key {
            let mut cache = self.decoded.lock().unwrap_or_else(|p| p.into_inner());
            cache.insert(0, (fp, blob.to_vec(), profile.clone()));
            cache.truncate(DECODED_PROFILES);
        }
        Ok(profile)
    }

    /// Sum of the per-stroke LLRs and the number of strokes the profile could score.
    /// `score` against an already decoded profile.
    fn score_decoded(
        &self,
        profile: &ScoringProfile,
        window: &[Event],
    ) -> Result<Score, PluginError> {
        let seg = segment(window, self.config.pixels_per_mm);
        let mut strokes = Vec::with_capacity(seg.strokes.len());
        let mut events = 0;
        let mut unusable = 0;
        for s in &seg.strokes {
            match model_stroke(&stroke_features(s), self.config.device_features) {
                Ok(m) => {
                    if profile.has_type(m.kind) {
                        events += s.events;
                    }
                    strokes.push(m);
                }
                Err(_) => unusable += 1,
            }
        }
        let (llr, scored) = Self::score_strokes(profile, &strokes);
        if scored == 0 {
            return Err(PluginError::not_enough_data(format!(
                "no stroke of an enrolled type in the window ({} strokes, {unusable} of them without direction or timing; skipped: {})",
                seg.strokes.len(),
                seg.skipped
            )));
        }
        Ok(Score::new(llr, scored as f64 / DECISION_STROKES, events))
    }

    fn score_strokes(profile: &ScoringProfile, strokes: &[ModelStroke]) -> (f64, usize) {
        strokes
            .iter()
            .filter_map(|s| profile.llr(s))
            .fold((0.0, 0), |(sum, n), l| (sum + l, n + 1))
    }
}

fn add_skipped(total: &mut Skipped, s: &Skipped) {
    total.single_point += s.single_point;
    total.taps += s.taps;
    total.no_duration += s.no_duration;
    total.clock_backwards += s.clock_backwards;
    total.non_finite += s.non_finite;
    total.multi_touch += s.multi_touch;
    total.orphan_events += s.orphan_events;
    total.interrupted += s.interrupted;
    total.unfinished += s.unfinished;
    total.duplicate_timestamps += s.duplicate_timestamps;
}

impl Plugin for Touch {
    fn descriptor() -> PluginDescriptor {
        PluginDescriptor {
            name: PLUGIN_NAME.into(),
            modality: Modality::TOUCH,
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Touchscreen swipes: Touchalytics stroke features, per-user neighbour density against a population, calibrated LLRs"
                    .into(),
            event_kinds: vec![
                EventKind::TOUCH_DOWN,
                EventKind::TOUCH_MOVE,
                EventKind::TOUCH_UP,
            ]
            .into(),
            // One stroke; a window's vector repeats this pattern per stroke.
            feature_names: features::NAMES.iter().map(|&n| n.into()).collect(),
        }
    }

    fn new(config: &str) -> Result<Self, PluginError> {
        Ok(Touch {
            config: Config::parse(config)?,
            decoded: Mutex::new(Vec::new()),
        })
    }

    fn build_population(&self, users: &[RVec<RVec<Event>>]) -> Result<Vec<u8>, PluginError> {
        let strokes: Vec<Vec<ModelStroke>> =
            users.iter().map(|u| self.window_strokes(u).0).collect();
        self.build_population_from(&strokes)
    }

    fn enroll(&self, population: &[u8], windows: &[RVec<Event>]) -> Result<Vec<u8>, PluginError> {
        let (strokes, skipped, unusable) = self.window_strokes(windows);
        self.enroll_strokes(population, &strokes).map_err(|e| {
            if e.kind == habitus_plugin::ErrorKind::NOT_ENOUGH_DATA {
                PluginError::not_enough_data(format!(
                    "{} (skipped: {skipped}, {unusable} without direction or with too many missing features)",
                    e.message.as_str()
                ))
            } else {
                e
            }
        })
    }

    fn score(&self, profile: &[u8], window: &[Event]) -> Result<Score, PluginError> {
        self.score_decoded(&*self.decode_profile(profile)?, window)
    }

    fn prepare(&self, profile: &[u8]) -> Result<Option<Decoded>, PluginError> {
        let decoded: Decoded = self.decode_profile(profile)?;
        Ok(Some(decoded))
    }

    fn score_prepared(&self, prepared: &Decoded, window: &[Event]) -> Result<Score, PluginError> {
        let profile = decoded_as::<ScoringProfile>(prepared, PLUGIN_NAME)?;
        self.score_decoded(profile, window)
    }

    fn adapt(
        &self,
        profile: &[u8],
        window: &[Event],
        score: Score,
    ) -> Result<Vec<u8>, PluginError> {
        // Whatever the decision, the profile must be ours and intact.
        self.decode_profile(profile)?;
        // A NaN score must never adapt: compare so that NaN falls into "do not adapt".
        let clearly_genuine = score.llr >= self.config.adapt_min_llr;
        if !clearly_genuine || self.config.adapt_max_strokes == 0 {
            return Ok(profile.to_vec());
        }
        // Re-score rather than trust the caller: adaptation is where an impostor could
        // slowly teach the profile.
        match self.score(profile, window) {
            Ok(own) if own.llr >= self.config.adapt_min_llr => {}
            _ => return Ok(profile.to_vec()),
        }
        let mut updated = self.decode_profile(profile)?.profile().clone();
        let (strokes, _, _) = self.window_strokes(&[RVec::from(window.to_vec())]);
        let take = strokes.len().min(self.config.adapt_max_strokes);
        for t in StrokeType::ALL {
            let new: Vec<Vec<f64>> = strokes[strokes.len() - take..]
                .iter()
                .filter(|s| s.kind == t)
                .map(|s| s.values.clone())
                .collect();
            if let (Some(tp), false) = (updated.types[t as usize].as_mut(), new.is_empty()) {
                tp.append(&new, self.config.max_template_strokes);
            }
        }
        blob::encode(blob::PROFILE_MAGIC, &updated)
    }

    fn extract(&self, window: &[Event]) -> Result<Vec<f64>, PluginError> {
        let (features, skipped, _) = self.window_features(window);
        if features.is_empty() {
            return Err(PluginError::not_enough_data(format!(
                "no complete stroke in the window (skipped: {skipped})"
            )));
        }
        Ok(features.iter().flatten().copied().collect())
    }

    fn build_population_features(&self, users: &[RVec<RVec<f64>>]) -> Result<Vec<u8>, PluginError> {
        let mut strokes = Vec::with_capacity(users.len());
        for (u, samples) in users.iter().enumerate() {
            strokes.push(self.samples_strokes(samples).map_err(|e| {
                PluginError::new(e.kind, format!("user {u}: {}", e.message.as_str()))
            })?);
        }
        self.build_population_from(&strokes)
    }

    fn enroll_features(
        &self,
        population: &[u8],
        samples: &[RVec<f64>],
    ) -> Result<Vec<u8>, PluginError> {
        let strokes = self.samples_strokes(samples)?;
        self.enroll_strokes(population, &strokes)
    }

    fn score_features(&self, profile: &[u8], sample: &[f64]) -> Result<Score, PluginError> {
        let strokes = self.sample_strokes(sample)?;
        let profile = self.decode_profile(profile)?;
        let (llr, scored) = Self::score_strokes(&profile, &strokes);
        if scored == 0 {
            return Err(PluginError::not_enough_data(
                "the profile has no model of this stroke type (too few enrolment strokes of it)",
            ));
        }
        // Feature vectors carry no events: `events` counts strokes here.
        Ok(Score::new(
            llr,
            scored as f64 / DECISION_STROKES,
            scored as u32,
        ))
    }
}

export_plugin!(Touch);

#[cfg(test)]
mod tests;
