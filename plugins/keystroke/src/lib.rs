//! # habitus-keystroke: typing rhythm
//!
//! A Habitus modality plugin (`cdylib`) that scores how a person types, from raw
//! KeyDown/KeyUp events whose key ids are already keyed hashes: it never sees, stores or
//! returns a character. Two modes (config `mode`):
//!
//! * **`fixed`** — a password typed the same way every time. One window = one entry,
//!   turned into hold / down-down / up-down latencies ([`fixed`]). The production
//!   detector (`detector = "habitus"`) is a capped diagonal-Gaussian log-likelihood ratio:
//!   - features: `ln H`, `ln DD`, `asinh(UD / 50 ms)` (timing noise is multiplicative; UD
//!     can be negative when keys overlap);
//!   - genuine model: median and 1.4826·MAD of the **50 most recent** enrolment entries
//!     (typing settles with practice, so old entries mislead), each scale floored at half
//!     the median scale and widened by 1.2 (sessions drift);
//!   - impostor model: mean and sd of how *other* people type the same text when new to it
//!     (the first 5 entries of each population user) — the population prior;
//!   - score `Σ 0.5·min(|z_pop|, 4)² − 0.5·min(|z_user|, 3)²` (every feature's say capped,
//!     so one fumbled key cannot decide alone), mapped to an LLR by a logistic regression
//!     fitted on the population users (their later half as genuine queries against their
//!     own templates, the others' first entries as impostors; classes weighted equally,
//!     so the log-odds is a prior-free LLR).
//!
//!   Without a population prior the user term alone is used with a fixed, uncalibrated
//!   mapping (documented in [`fixed`]). The reference detectors of Killourhy & Maxion
//!   (`euclidean`, `manhattan`, `scaled-manhattan`) are kept for benchmarks.
//! * **`free`** — free text; statistics per key (hold), per digraph and per trigraph
//!   (latencies) over key ids, four measures per timing type (including a Bayesian
//!   per-id LLR) and rhythm statistics combined by a logistic regression per gallery
//!   size, S-normalised against a cohort of population users, and fused with a PLDA
//!   score of a whole-window embedding (timing distributions and per-key timings, LDA,
//!   length normalisation); see [`free`] and [`plda`].
//!
//! Constants were tuned on one half of the CMU subjects and checked on the other; the
//! numbers are in `docs/results.md`. Profiles and populations are versioned JSON in a
//! magic-tagged envelope ([`blob`]).
//!
//! Privacy: a fixed-text profile stores no key ids, only the number of keys and a 16-bit
//! digest of the key-id sequence (enough to notice a different text, far too little to
//! confirm a password guess). A free-text profile stores per-key-id and per-digraph timing
//! statistics; with the installation secret, key ids could be mapped back to keys by
//! brute force, so the profile store must keep profiles encrypted. A free-text
//! population, and every free-text profile enrolled with it, also holds such statistics
//! of up to [`free::COHORT`] *population* users (their first windows, for S-norm) and the
//! population's mean timing per key id, and the embedding's list of the 20 most frequent
//! key ids with their mean timings: populations need the same protection as profiles
//! (the store encrypts both).

pub mod blob;
pub mod buckets;
pub mod cohort;
pub mod config;
pub mod fixed;
pub mod free;
pub mod gmm;
pub mod pack;
pub mod plda;
pub mod stats;
pub mod timing;

use habitus_plugin::{
    decoded_as, export_plugin, Decoded, Event, EventKind, Modality, Plugin, PluginDescriptor,
    PluginError, RVec, Score,
};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

use crate::config::{Config, Mode};
use crate::fixed::{Detector, FixedModel, NovicePopulation};
use crate::free::{FreeModel, FreePopulation};
use crate::timing::keystrokes;

pub const PLUGIN_NAME: &str = "keystroke";

/// The keystroke plugin, configured.
pub struct Keystroke {
    config: Config,
    /// Recently decoded profiles, most recent first, keyed by their exact bytes.
    /// Decoding a free-text profile costs far more than scoring a window, and a host
    /// scores many windows against the same profile. Compared byte for byte: no hash
    /// collision can ever swap one user's profile for another's. Live sessions skip the
    /// comparison (a megabyte with a cohort): they score through `prepare`d profiles.
    decoded: Mutex<Vec<(Vec<u8>, Arc<Profile>)>>,
    /// The last decoded population (a free-text one holds a cohort: megabytes of JSON),
    /// compared byte for byte like the profiles.
    population: Mutex<Option<(Vec<u8>, Arc<Population>)>>,
}

/// Profiles kept decoded (a few concurrent sessions).
const DECODED_PROFILES: usize = 8;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
enum Profile {
    Fixed {
        keys: usize,
        sequence_digest: u16,
        model: FixedModel,
    },
    Free {
        /// [`free::FREE_FORMAT`]; absent (1) in profiles of earlier releases.
        format: u32,
        model: Box<FreeModel>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
enum Population {
    Fixed(NovicePopulation),
    // Boxed: a free-text population is several times larger than a fixed-text one.
    Free(Box<FreePopulation>),
}

/// FNV-1a of the key-id sequence folded to 16 bits (see the privacy note above).
fn sequence_digest(keys: impl Iterator<Item = u32>) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for k in keys {
        for b in k.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    (h ^ (h >> 16) ^ (h >> 32) ^ (h >> 48)) as u16
}

impl Keystroke {
    fn fixed_vector(&self, window: &[Event]) -> Result<(Vec<f64>, u16, u32), PluginError> {
        let ks = keystrokes(window)?;
        if ks.strokes.len() < 2 {
            return Err(PluginError::not_enough_data(format!(
                "a fixed-text entry needs at least 2 complete keystrokes, got {}",
                ks.strokes.len()
            )));
        }
        let digest = sequence_digest(ks.strokes.iter().map(|s| s.key));
        Ok((fixed::feature_vector(&ks.strokes), digest, ks.key_events))
    }

    fn decode_population(&self, blob: &[u8]) -> Result<Option<Arc<Population>>, PluginError> {
        if blob.is_empty() {
            return Ok(None);
        }
        let mut cache = self.population.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((bytes, p)) = &*cache {
            if bytes.as_slice() == blob {
                return Ok(Some(p.clone()));
            }
        }
        let mut value: serde_json::Value =
            blob::decode(blob::POPULATION_MAGIC, "population", blob)?;
        check_free_format(&mut value, "population", "rebuild the population")?;
        let population: Population = serde_json::from_value(value).map_err(|e| {
            PluginError::invalid_profile(format!("corrupted keystroke population: {e}"))
        })?;
        if let Population::Free(p) = &population {
            p.validate()?;
        }
        let population = Arc::new(population);
        *cache = Some((blob.to_vec(), population.clone()));
        Ok(Some(population))
    }

    fn fixed_population(&self, blob: &[u8]) -> Result<Option<NovicePopulation>, PluginError> {
        match self.decode_population(blob)?.as_deref() {
            None => Ok(None),
            Some(Population::Fixed(p)) => Ok(Some(p.clone())),
            Some(Population::Free(_)) => Err(PluginError::invalid_profile(
                "a free-text population was given to a fixed-text enrolment",
            )),
        }
    }

    fn enroll_fixed_vectors(
        &self,
        population: &[u8],
        vectors: &[Vec<f64>],
        keys: usize,
        sequence_digest: u16,
    ) -> Result<Vec<u8>, PluginError> {
        let population = match self.config.detector {
            Detector::Habitus => self.fixed_population(population)?,
            _ => None,
        };
        let model = FixedModel::train(
            self.config.detector,
            vectors,
            self.config.template_windows,
            population.as_ref(),
        )?;
        blob::encode(
            blob::PROFILE_MAGIC,
            &Profile::Fixed {
                keys,
                sequence_digest,
                model,
            },
        )
    }

    fn decode_profile(&self, blob: &[u8]) -> Result<Arc<Profile>, PluginError> {
        let mut cache = self.decoded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = cache.iter().position(|(bytes, _)| bytes.as_slice() == blob) {
            let entry = cache.remove(i);
            let profile = entry.1.clone();
            cache.insert(0, entry);
            return Ok(profile);
        }
        drop(cache); // decode without holding the lock
        let mut value: serde_json::Value = blob::decode(blob::PROFILE_MAGIC, "profile", blob)?;
        check_free_format(&mut value, "profile", "re-enrol")?;
        let profile: Profile = serde_json::from_value(value).map_err(|e| {
            PluginError::invalid_profile(format!("corrupted keystroke profile: {e}"))
        })?;
        if let Profile::Free { model, .. } = &profile {
            model.validate()?;
        }
        let profile = Arc::new(profile);
        let mut cache = self.decoded.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(0, (blob.to_vec(), profile.clone()));
        cache.truncate(DECODED_PROFILES);
        Ok(profile)
    }
}

/// Refuses free-text blobs of another format with a clear error (their fields differ, so
/// decoding them would only say "missing field"). A format-4 or format-5 blob's embedding
/// describes windows differently from this release's, so it is dropped: such a profile
/// scores with its plain calibration, exactly as a format-3 one, until it is re-enrolled.
fn check_free_format(
    value: &mut serde_json::Value,
    what: &str,
    remedy: &str,
) -> Result<(), PluginError> {
    if value.get("mode").and_then(|m| m.as_str()) != Some("free") {
        return Ok(());
    }
    let format = value.get("format").and_then(|f| f.as_u64()).unwrap_or(1);
    if !(free::OLDEST_FREE_FORMAT as u64..=free::FREE_FORMAT as u64).contains(&format) {
        return Err(PluginError::invalid_profile(format!(
            "free-text keystroke {what} format {format} is not supported (this plugin reads {} to {}); {remedy}",
            free::OLDEST_FREE_FORMAT,
            free::FREE_FORMAT
        )));
    }
    if format < u64::from(free::EMBEDDING_FORMAT) {
        if let Some(map) = value.as_object_mut() {
            map.remove("embedding");
        }
        if let Some(model) = value.get_mut("model").and_then(|m| m.as_object_mut()) {
            model.remove("embedding");
            model.remove("plda_gallery");
        }
    }
    Ok(())
}

/// Keeps the most common (key count, digest) among enrolment entries: a mistyped entry
/// is a different text and must not pollute the template.
fn most_common_text(entries: &[(Vec<f64>, u16, u32)]) -> Option<(usize, u16)> {
    let mut counts: Vec<((usize, u16), usize)> = Vec::new();
    for (v, d, _) in entries {
        let key = (fixed::keys_of(v.len()), *d);
        match counts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, c)) => *c += 1,
            None => counts.push((key, 1)),
        }
    }
    counts.into_iter().max_by_key(|&(_, c)| c).map(|(k, _)| k)
}

impl Keystroke {
    /// `score` against an already decoded profile.
    fn score_decoded(&self, profile: &Profile, window: &[Event]) -> Result<Score, PluginError> {
        match profile {
            Profile::Fixed {
                keys,
                sequence_digest,
                model,
            } => {
                let (v, digest, events) = self.fixed_vector(window)?;
                let got = fixed::keys_of(v.len());
                if got != *keys || digest != *sequence_digest {
                    return Err(PluginError::invalid_input(format!(
                        "window is not the enrolled text ({got} keys, enrolled {keys})"
                    )));
                }
                Ok(Score::new(model.llr(&v), 1.0, events))
            }
            Profile::Free { model, .. } => {
                let ks = keystrokes(window)?;
                let (llr, quality) = model.score(&ks.strokes);
                Ok(Score::new(llr, quality, ks.key_events))
            }
        }
    }
}

impl Plugin for Keystroke {
    fn descriptor() -> PluginDescriptor {
        PluginDescriptor {
            name: PLUGIN_NAME.into(),
            modality: Modality::KEYSTROKE,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Typing rhythm from key press/release times (fixed text and free text); never sees characters"
                .into(),
            event_kinds: vec![EventKind::KEY_DOWN, EventKind::KEY_UP].into(),
            // Fixed-text vectors repeat this pattern per key position (see `fixed`).
            feature_names: vec!["H.k".into(), "DD.k.k+1".into(), "UD.k.k+1".into()].into(),
        }
    }

    fn new(config: &str) -> Result<Self, PluginError> {
        Ok(Keystroke {
            config: Config::parse(config)?,
            decoded: Mutex::new(Vec::new()),
            population: Mutex::new(None),
        })
    }

    fn build_population(&self, users: &[RVec<RVec<Event>>]) -> Result<Vec<u8>, PluginError> {
        let population = match self.config.mode {
            Mode::Fixed => {
                let vectors: Vec<Vec<Vec<f64>>> = users
                    .iter()
                    .map(|u| {
                        u.iter()
                            .filter_map(|w| self.fixed_vector(w).ok().map(|(v, _, _)| v))
                            .collect()
                    })
                    .collect();
                Population::Fixed(fixed::build_population(
                    &vectors,
                    self.config.novice_windows,
                    self.config.template_windows,
                )?)
            }
            Mode::Free => {
                let strokes: Vec<Vec<Vec<timing::Keystroke>>> = users
                    .iter()
                    .map(|u| {
                        u.iter()
                            .filter_map(|w| keystrokes(w).ok().map(|k| k.strokes))
                            .collect()
                    })
                    .collect();
                Population::Free(Box::new(free::build_population(&strokes)?))
            }
        };
        blob::encode(blob::POPULATION_MAGIC, &population)
    }

    fn enroll(&self, population: &[u8], windows: &[RVec<Event>]) -> Result<Vec<u8>, PluginError> {
        match self.config.mode {
            Mode::Fixed => {
                let entries: Vec<(Vec<f64>, u16, u32)> = windows
                    .iter()
                    .filter_map(|w| self.fixed_vector(w).ok())
                    .collect();
                let (keys, digest) = most_common_text(&entries).ok_or_else(|| {
                    PluginError::not_enough_data("no usable fixed-text entry to enrol")
                })?;
                let vectors: Vec<Vec<f64>> = entries
                    .into_iter()
                    .filter(|(v, d, _)| fixed::keys_of(v.len()) == keys && *d == digest)
                    .map(|(v, _, _)| v)
                    .collect();
                self.enroll_fixed_vectors(population, &vectors, keys, digest)
            }
            Mode::Free => {
                let population = self.decode_population(population)?;
                let population = match population.as_deref() {
                    None => None,
                    Some(Population::Free(p)) => Some(&**p),
                    Some(Population::Fixed(_)) => {
                        return Err(PluginError::invalid_profile(
                            "a fixed-text population was given to a free-text enrolment",
                        ))
                    }
                };
                let mut strokes = Vec::with_capacity(windows.len());
                for w in windows {
                    strokes.push(keystrokes(w)?.strokes);
                }
                let model = Box::new(FreeModel::train(&strokes, population)?);
                blob::encode(
                    blob::PROFILE_MAGIC,
                    &Profile::Free {
                        format: free::FREE_FORMAT,
                        model,
                    },
                )
            }
        }
    }

    fn score(&self, profile: &[u8], window: &[Event]) -> Result<Score, PluginError> {
        self.score_decoded(&*self.decode_profile(profile)?, window)
    }

    fn prepare(&self, profile: &[u8]) -> Result<Option<Decoded>, PluginError> {
        let decoded: Decoded = self.decode_profile(profile)?;
        Ok(Some(decoded))
    }

    fn score_prepared(&self, prepared: &Decoded, window: &[Event]) -> Result<Score, PluginError> {
        let profile = decoded_as::<Profile>(prepared, PLUGIN_NAME)?;
        self.score_decoded(profile, window)
    }
    fn adapt(
        &self,
        profile: &[u8],
        window: &[Event],
        score: Score,
    ) -> Result<Vec<u8>, PluginError> {
        // A NaN score must never adapt: compare so that NaN falls into "do not adapt".
        let clearly_genuine = score.llr >= self.config.adapt_min_llr;
        if !clearly_genuine || self.config.adapt_rate == 0.0 {
            return Ok(profile.to_vec());
        }
        // Re-score rather than trust the caller's score blindly: adaptation is the one
        // place an impostor could slowly teach the profile.
        let own = self.score(profile, window)?;
        if own.llr < self.config.adapt_min_llr {
            return Ok(profile.to_vec());
        }
        let updated = match (*self.decode_profile(profile)?).clone() {
            Profile::Fixed {
                keys,
                sequence_digest,
                mut model,
            } => {
                let (v, _, _) = self.fixed_vector(window)?;
                model.adapt(&v, self.config.adapt_rate);
                Profile::Fixed {
                    keys,
                    sequence_digest,
                    model,
                }
            }
            Profile::Free { format, mut model } => {
                let ks = keystrokes(window)?;
                model.adapt(&ks.strokes, self.config.adapt_rate);
                Profile::Free { format, model }
            }
        };
        blob::encode(blob::PROFILE_MAGIC, &updated)
    }

    fn extract(&self, window: &[Event]) -> Result<Vec<f64>, PluginError> {
        match self.config.mode {
            Mode::Fixed => self.fixed_vector(window).map(|(v, _, _)| v),
            Mode::Free => Err(PluginError::unsupported(
                "free text has no fixed-length feature vector; use enroll/score on events",
            )),
        }
    }

    fn build_population_features(&self, users: &[RVec<RVec<f64>>]) -> Result<Vec<u8>, PluginError> {
        if self.config.mode != Mode::Fixed {
            return Err(PluginError::unsupported(
                "feature-level entry points are fixed-text only",
            ));
        }
        let mut vectors = Vec::with_capacity(users.len());
        for u in users {
            let mut user = Vec::with_capacity(u.len());
            for s in u.iter() {
                fixed::validate_vector(s)?;
                user.push(s.to_vec());
            }
            vectors.push(user);
        }
        let p = fixed::build_population(
            &vectors,
            self.config.novice_windows,
            self.config.template_windows,
        )?;
        blob::encode(blob::POPULATION_MAGIC, &Population::Fixed(p))
    }

    fn enroll_features(
        &self,
        population: &[u8],
        samples: &[RVec<f64>],
    ) -> Result<Vec<u8>, PluginError> {
        if self.config.mode != Mode::Fixed {
            return Err(PluginError::unsupported(
                "feature-level entry points are fixed-text only",
            ));
        }
        let mut vectors = Vec::with_capacity(samples.len());
        for s in samples {
            fixed::validate_vector(s)?;
            vectors.push(s.to_vec());
        }
        let keys = vectors
            .first()
            .map(|v| fixed::keys_of(v.len()))
            .unwrap_or(0);
        // Feature vectors carry no key ids: the digest only records "features given".
        self.enroll_fixed_vectors(population, &vectors, keys, 0)
    }

    fn score_features(&self, profile: &[u8], sample: &[f64]) -> Result<Score, PluginError> {
        fixed::validate_vector(sample)?;
        match &*self.decode_profile(profile)? {
            Profile::Fixed { model, .. } if model.dims() == sample.len() => {
                let keys = fixed::keys_of(sample.len());
                Ok(Score::new(model.llr(sample), 1.0, 2 * keys as u32))
            }
            Profile::Fixed { model, .. } => Err(PluginError::invalid_input(format!(
                "sample has {} features, the profile {}",
                sample.len(),
                model.dims()
            ))),
            Profile::Free { .. } => Err(PluginError::unsupported(
                "feature-level scoring needs a fixed-text profile",
            )),
        }
    }
}

export_plugin!(Keystroke);

#[cfg(test)]
mod tests {
    use super::*;

    fn typing(keys: u32) -> RVec<Event> {
        let mut events = Vec::new();
        for i in 0..keys {
            let t = 1_000_000 + i as u64 * 200_000;
            events.push(Event::key(EventKind::KEY_DOWN, t, 10 + i % 7));
            events.push(Event::key(EventKind::KEY_UP, t + 90_000, 10 + i % 7));
        }
        RVec::from(events)
    }

    #[test]
    fn free_text_blobs_of_another_format_are_refused_clearly() {
        let plugin = Keystroke::new("mode = \"free\"").unwrap();
        let old_profile = blob::encode(
            blob::PROFILE_MAGIC,
            &serde_json::json!({"mode": "free", "model": {"features": [], "rhythm": [],
                "rhythm_windows": 1.0, "population": {}}}),
        )
        .unwrap();
        let err = plugin.score(&old_profile, &typing(20)).unwrap_err();
        assert!(
            err.message.contains("profile format 1 is not supported")
                && err.message.contains("re-enrol"),
            "{err}"
        );
        let old_population = blob::encode(
            blob::POPULATION_MAGIC,
            &serde_json::json!({"mode": "free", "type_sd": [], "rhythm_sd": [], "weights": [], "users": 3}),
        )
        .unwrap();
        let err = plugin.enroll(&old_population, &[typing(20)]).unwrap_err();
        assert!(err.message.contains("population format 1"), "{err}");

        // A damaged cohort inside an intact envelope: a clear error, no panic.
        let profile = plugin.enroll(&[], &[typing(30), typing(30)]).unwrap();
        let mut value: serde_json::Value =
            blob::decode(blob::PROFILE_MAGIC, "profile", &profile).unwrap();
        value["model"]["combiner"]["calibration"] = serde_json::json!([0.0, 1.0]);
        value["model"]["snorm"] = serde_json::json!({"z_mean": 0.0, "z_sd": 1.0, "cohort": "AAA"});
        let damaged = blob::encode(blob::PROFILE_MAGIC, &value).unwrap();
        let err = plugin.score(&damaged, &typing(20)).unwrap_err();
        assert!(err.message.contains("packed statistics"), "{err}");
        // Wrong number of combiner weights.
        value["model"]["snorm"] = serde_json::Value::Null;
        value["model"]["combiner"]["weights"] = serde_json::json!([1.0, 2.0]);
        let damaged = blob::encode(blob::PROFILE_MAGIC, &value).unwrap();
        let err = plugin.score(&damaged, &typing(20)).unwrap_err();
        assert!(err.message.contains("finite weights"), "{err}");
        // The intact profile scores, also marked as format 2 (read: its cohort layout is
        // recognised on its own); a newer format is refused by number.
        assert!(plugin.score(&profile, &typing(20)).unwrap().llr.is_finite());
        let mut value: serde_json::Value =
            blob::decode(blob::PROFILE_MAGIC, "profile", &profile).unwrap();
        assert_eq!(value["format"], free::FREE_FORMAT);
        value["format"] = serde_json::json!(2);
        let format2 = blob::encode(blob::PROFILE_MAGIC, &value).unwrap();
        assert_eq!(
            plugin.score(&format2, &typing(20)).unwrap(),
            plugin.score(&profile, &typing(20)).unwrap()
        );
        // Formats 4 and 5: their embedding (of another layout) is dropped, not decoded, so
        // even a damaged one does not stop the profile from scoring with its plain
        // calibration; in the current format the same damage is refused.
        value["model"]["embedding"] = serde_json::json!("not an embedding of this release");
        value["model"]["plda_gallery"] = serde_json::json!({"mean": "", "n": 5.0});
        for old in 4..free::EMBEDDING_FORMAT {
            value["format"] = serde_json::json!(old);
            let older = blob::encode(blob::PROFILE_MAGIC, &value).unwrap();
            assert_eq!(
                plugin.score(&older, &typing(20)).unwrap(),
                plugin.score(&profile, &typing(20)).unwrap(),
                "format {old}"
            );
        }
        value["format"] = serde_json::json!(free::FREE_FORMAT);
        let damaged = blob::encode(blob::PROFILE_MAGIC, &value).unwrap();
        let err = plugin.score(&damaged, &typing(20)).unwrap_err();
        assert!(err.message.contains("corrupted keystroke profile"), "{err}");
        // The same for a population: a format-4 or 5 one's embedding is dropped unread.
        let mut population = serde_json::to_value(Population::Free(Box::default())).unwrap();
        population["embedding"] = serde_json::json!("not an embedding of this release");
        for old in 4..free::EMBEDDING_FORMAT {
            population["format"] = serde_json::json!(old);
            let older = blob::encode(blob::POPULATION_MAGIC, &population).unwrap();
            plugin
                .enroll(&older, &[typing(30), typing(30)])
                .unwrap_or_else(|e| {
                    panic!("a format-{old} population enrols without its embedding: {e}")
                });
        }
        population["format"] = serde_json::json!(free::FREE_FORMAT);
        let damaged = blob::encode(blob::POPULATION_MAGIC, &population).unwrap();
        let err = plugin
            .enroll(&damaged, &[typing(30), typing(30)])
            .unwrap_err();
        assert!(
            err.message.contains("corrupted keystroke population"),
            "{err}"
        );
        value["format"] = serde_json::json!(free::FREE_FORMAT + 1);
        let newer = blob::encode(blob::PROFILE_MAGIC, &value).unwrap();
        let err = plugin.score(&newer, &typing(20)).unwrap_err();
        let expected = format!("format {} is not supported", free::FREE_FORMAT + 1);
        assert!(err.message.contains(&expected), "{err}");
    }
}
