//! # habitus-mouse: mouse dynamics
//!
//! A Habitus modality plugin (`cdylib`) that scores how a person moves the pointer, from
//! raw `PointerMove`, `ButtonDown`, `ButtonUp` and `Wheel` events.
//!
//! 1. **Segmentation** ([`segment`]): a window's events become *actions* — mouse moves,
//!    point-and-clicks and drag-and-drops — with every malformed input (coordinate jumps,
//!    sentinel coordinates, duplicate timestamps, clocks going backwards, unmatched
//!    buttons) skipped and counted, never a panic. Actions shorter than `min_points`
//!    points (default 14) are dropped: they carry little and dilute a window's score.
//! 2. **Features** ([`features`]): 53 numbers per action — speed, acceleration, jerk,
//!    angular velocity and curvature statistics, straightness, deviation, direction,
//!    duration, pauses, sub-movements, initial aiming error, the pause before a press,
//!    how long a button is held, the idle time before the action. No absolute screen
//!    coordinates and no screen extent: those identify the monitor, not the person.
//! 3. **Model** ([`model`]): per user, gradient-boosted trees (crate `habitus-boost`)
//!    learn the user's actions against other people's (the *population*, built with `build_population`),
//!    calibrated to a per-action log-likelihood ratio by cross-validation in which the
//!    held-out impostors are people the fold's model never saw.
//! 4. **Window score**: the mean action LLR times an effective number of independent
//!    actions `n / (1 + ρ(n − 1))`, ρ = `window_rho` (0.2; actions of one sitting are
//!    correlated, summing them as if independent would be over-confident). Quality is
//!    `min(1, actions / quality_actions)`; a window without actions scores LLR 0 with
//!    quality 0 (no opinion). With `window_model = true` (off by default: it did not
//!    carry over from Balabit's training files to its test sessions) a window of at
//!    least `window_min_actions` actions is instead scored as a whole by the *window
//!    model* ([`window`]): the mean, spread and median of its actions' features, a
//!    second per-user tree ensemble trained on runs of consecutive actions, calibrated
//!    the same way.
//!
//! Without a population a one-class fallback is used (uncalibrated; see [`model`]).
//!
//! Feature-level entry points: `extract(window)` returns the window's actions' feature
//! vectors one after the other (`feature_names` is the per-action pattern, repeated;
//! a window without actions is a `NOT_ENOUGH_DATA` error); `enroll_features`,
//! `build_population_features` and `score_features` take such concatenations, one per
//! window, so an evaluation can segment once and train many models.
//!
//! Adaptation: a boosted profile is a discriminative model; it is rebuilt at the next
//! enrolment, not moved window by window (`adapt` checks the profile and returns it
//! unchanged).
//!
//! Profiles and populations are versioned, checksummed JSON in a magic-tagged envelope
//! ([`blob`]).
//! A profile holds trees (thresholds on movement statistics) and calibration numbers; a
//! population holds other people's action feature vectors (never raw positions or times):
//! an even sample of `population_actions_per_user` of each person's actions, or with the
//! window model their most recent ones in order.
//! Measured numbers are in `docs/results.md` (Balabit); every default was chosen on
//! Balabit's training files only (`habitus eval balabit --validation`).

pub mod blob;
pub mod config;
pub mod features;
pub mod model;
pub mod segment;
pub mod window;

use std::sync::{Arc, Mutex};

use habitus_plugin::{
    decoded_as, export_plugin, Decoded, Event, EventKind, Modality, Plugin, PluginDescriptor,
    PluginError, RVec, Score,
};

use crate::config::Config;
use crate::features::{action_features, FEATURES, FEATURE_NAMES};
use crate::model::{Population, Profile, Row, ScoringProfile};
use crate::segment::{segment, SegmentStats};

pub const PLUGIN_NAME: &str = "mouse";

/// The mouse plugin, configured.
pub struct Mouse {
    config: Config,
    /// Recently decoded profiles, most recent first, keyed by their exact bytes (decoding
    /// a profile costs far more than scoring a window; compared byte for byte, so no
    /// collision can swap one user's profile for another's). Live sessions skip it:
    /// they score through `prepare`d profiles.
    decoded: Mutex<Vec<(Vec<u8>, Arc<ScoringProfile>)>>,
}

const DECODED_PROFILES: usize = 8;

impl Mouse {
    /// The feature rows of a window's actions, and what segmentation skipped.
    pub fn actions(&self, window: &[Event]) -> (Vec<Row>, SegmentStats) {
        let (actions, stats) = segment(window, self.config.segment_params());
        let rows = actions
            .iter()
            .map(|a| action_features(a).to_vec())
            .collect();
        (rows, stats)
    }

    fn decode_population(&self, blob: &[u8]) -> Result<Option<Population>, PluginError> {
        if blob.is_empty() {
            return Ok(None);
        }
        let p: Population = blob::decode(blob::POPULATION_MAGIC, "population", blob)?;
        p.validate()?;
        Ok(Some(p))
    }

    fn decode_profile(&self, blob: &[u8]) -> Result<Arc<ScoringProfile>, PluginError> {
        let mut cache = self.decoded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = cache.iter().position(|(bytes, _)| bytes.as_slice() == blob) {
            let entry = cache.remove(i);
            let profile = entry.1.clone();
            cache.insert(0, entry);
            return Ok(profile);
        }
        drop(cache); // decode without holding the lock
        let profile: Profile = blob::decode(blob::PROFILE_MAGIC, "profile", blob)?;
        profile.validate()?;
        let profile = Arc::new(ScoringProfile::new(profile));
        let mut cache = self.decoded.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(0, (blob.to_vec(), profile.clone()));
        cache.truncate(DECODED_PROFILES);
        Ok(profile)
    }

    fn enroll_rows(&self, population: &[u8], windows: &[Vec<Row>]) -> Result<Vec<u8>, PluginError> {
        let population = self.decode_population(population)?;
        let profile = Profile::train(windows, population.as_ref(), &self.config)?;
        blob::encode(blob::PROFILE_MAGIC, &profile)
    }

    /// `score` against an already decoded profile.
    fn score_decoded(&self, profile: &ScoringProfile, window: &[Event]) -> Score {
        let (rows, stats) = self.actions(window);
        let (llr, n) = profile.window_llr(rows.iter().map(Vec::as_slice));
        Score::new(llr, self.quality(n), stats.events)
    }

    fn quality(&self, actions: usize) -> f64 {
        (actions as f64 / self.config.quality_actions as f64).min(1.0)
    }
}

/// Splits a concatenation of action vectors into rows, checking every value.
fn rows_of(sample: &[f64]) -> Result<Vec<Row>, PluginError> {
    if sample.len() % FEATURES != 0 {
        return Err(PluginError::invalid_input(format!(
            "a mouse feature sample is a multiple of {FEATURES} numbers (one vector per action), got {}",
            sample.len()
        )));
    }
    if let Some(i) = sample.iter().position(|v| !v.is_finite()) {
        return Err(PluginError::invalid_input(format!(
            "feature {} of action {} is not finite",
            FEATURE_NAMES[i % FEATURES],
            i / FEATURES
        )));
    }
    Ok(sample.chunks_exact(FEATURES).map(<[f64]>::to_vec).collect())
}

fn describe(stats: &SegmentStats) -> String {
    format!(
        "{} pointer events; skipped: {} invalid coordinates, {} jumps, {} backwards times, {} unmatched buttons, {} unfinished presses, {} too-short actions",
        stats.events,
        stats.invalid_coordinates,
        stats.coordinate_jumps,
        stats.backwards_times,
        stats.unmatched_buttons,
        stats.unfinished_presses,
        stats.short_actions
    )
}

impl Plugin for Mouse {
    fn descriptor() -> PluginDescriptor {
        PluginDescriptor {
            name: PLUGIN_NAME.into(),
            modality: Modality::MOUSE,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Mouse dynamics: movement, point-and-click and drag-and-drop actions scored by boosted trees against a population; no screen positions".into(),
            event_kinds: vec![
                EventKind::POINTER_MOVE,
                EventKind::BUTTON_DOWN,
                EventKind::BUTTON_UP,
                EventKind::WHEEL,
            ]
            .into(),
            // One action's vector; a window's vector repeats this pattern per action.
            feature_names: FEATURE_NAMES.iter().map(|&n| n.into()).collect(),
        }
    }

    fn new(config: &str) -> Result<Self, PluginError> {
        Ok(Mouse {
            config: Config::parse(config)?,
            decoded: Mutex::new(Vec::new()),
        })
    }

    fn build_population(&self, users: &[RVec<RVec<Event>>]) -> Result<Vec<u8>, PluginError> {
        let rows: Vec<Vec<Row>> = users
            .iter()
            .map(|u| u.iter().flat_map(|w| self.actions(w).0).collect())
            .collect();
        let p = model::build_population(
            &rows,
            self.config.population_actions_per_user,
            self.config.window_model,
        )?;
        blob::encode(blob::POPULATION_MAGIC, &p)
    }

    fn enroll(&self, population: &[u8], windows: &[RVec<Event>]) -> Result<Vec<u8>, PluginError> {
        let rows: Vec<Vec<Row>> = windows.iter().map(|w| self.actions(w).0).collect();
        self.enroll_rows(population, &rows)
    }

    fn score(&self, profile: &[u8], window: &[Event]) -> Result<Score, PluginError> {
        Ok(self.score_decoded(&*self.decode_profile(profile)?, window))
    }

    fn prepare(&self, profile: &[u8]) -> Result<Option<Decoded>, PluginError> {
        let decoded: Decoded = self.decode_profile(profile)?;
        Ok(Some(decoded))
    }

    fn score_prepared(&self, prepared: &Decoded, window: &[Event]) -> Result<Score, PluginError> {
        let profile = decoded_as::<ScoringProfile>(prepared, PLUGIN_NAME)?;
        Ok(self.score_decoded(profile, window))
    }

    fn adapt(
        &self,
        profile: &[u8],
        _window: &[Event],
        _score: Score,
    ) -> Result<Vec<u8>, PluginError> {
        // Checked, then returned unchanged: see "Adaptation" in the crate docs.
        self.decode_profile(profile)?;
        Ok(profile.to_vec())
    }

    fn extract(&self, window: &[Event]) -> Result<Vec<f64>, PluginError> {
        let (rows, stats) = self.actions(window);
        if rows.is_empty() {
            return Err(PluginError::not_enough_data(format!(
                "no mouse actions in this window ({})",
                describe(&stats)
            )));
        }
        Ok(rows.concat())
    }

    fn build_population_features(&self, users: &[RVec<RVec<f64>>]) -> Result<Vec<u8>, PluginError> {
        let mut all = Vec::with_capacity(users.len());
        for u in users {
            let mut rows = Vec::new();
            for w in u.iter() {
                rows.extend(rows_of(w)?);
            }
            all.push(rows);
        }
        let p = model::build_population(
            &all,
            self.config.population_actions_per_user,
            self.config.window_model,
        )?;
        blob::encode(blob::POPULATION_MAGIC, &p)
    }

    fn enroll_features(
        &self,
        population: &[u8],
        samples: &[RVec<f64>],
    ) -> Result<Vec<u8>, PluginError> {
        let windows = samples
            .iter()
            .map(|s| rows_of(s))
            .collect::<Result<Vec<_>, _>>()?;
        self.enroll_rows(population, &windows)
    }

    fn score_features(&self, profile: &[u8], sample: &[f64]) -> Result<Score, PluginError> {
        let rows = rows_of(sample)?;
        let profile = self.decode_profile(profile)?;
        let (llr, n) = profile.window_llr(rows.iter().map(Vec::as_slice));
        // Events behind the score: the points of every action.
        let points: f64 = rows.iter().map(|r| r[4]).sum();
        Ok(Score::new(
            llr,
            self.quality(n),
            points.min(u32::MAX as f64) as u32,
        ))
    }
}

export_plugin!(Mouse);

#[cfg(test)]
mod tests {
    use super::*;
    use habitus_plugin::ErrorKind;

    /// Synthetic pointer behaviour (see engine/benches/mouse.rs): aimed movements every
    /// 8 ms, clicks, drags, scrolls, pauses; `speed` and `bow` make people differ.
    fn stream(events: usize, seed: u64, speed: f64, bow: f64) -> Vec<Event> {
        let mut rng = habitus_boost::Rng::new(seed);
        let mut out = Vec::with_capacity(events + 64);
        let (mut t, mut x, mut y) = (1_000_000u64, 500.0f64, 400.0f64);
        let button = |kind, t, x: f64, y: f64| Event {
            pointer: 1,
            ..Event::at(kind, t, x as f32, y as f32)
        };
        while out.len() < events {
            let (tx, ty) = (100.0 + rng.unit() * 1200.0, 100.0 + rng.unit() * 700.0);
            let dist = (tx - x).hypot(ty - y);
            let steps = (((0.15 + dist / (1500.0 * speed)) / 0.008) as usize).max(4);
            let bend = bow * (0.5 + rng.unit());
            let (x0, y0) = (x, y);
            for s in 1..=steps {
                let u = s as f64 / steps as f64;
                let p = u * u * u * (10.0 - 15.0 * u + 6.0 * u * u);
                let off = bend * dist * (std::f64::consts::PI * p).sin();
                let (dx, dy) = ((tx - x0) / dist.max(1.0), (ty - y0) / dist.max(1.0));
                x = x0 + (tx - x0) * p - dy * off;
                y = y0 + (ty - y0) * p + dx * off;
                t += 8_000;
                out.push(Event::at(
                    EventKind::POINTER_MOVE,
                    t,
                    x.round() as f32,
                    y.round() as f32,
                ));
            }
            let r = rng.unit();
            if r < 0.5 {
                t += 50_000 + (rng.unit() * 150_000.0) as u64;
                out.push(button(EventKind::BUTTON_DOWN, t, x, y));
                t += 60_000 + (rng.unit() * 80_000.0 / speed) as u64;
                out.push(button(EventKind::BUTTON_UP, t, x, y));
            } else if r < 0.65 {
                t += 80_000;
                out.push(button(EventKind::BUTTON_DOWN, t, x, y));
                for _ in 0..20 {
                    t += 8_000;
                    x += 6.0 * speed;
                    out.push(Event::at(EventKind::POINTER_MOVE, t, x as f32, y as f32));
                }
                t += 50_000;
                out.push(button(EventKind::BUTTON_UP, t, x, y));
            } else if r < 0.75 {
                t += 200_000;
                out.push(Event::at(EventKind::WHEEL, t, 0.0, -1.0));
            }
            t += 100_000 + (rng.unit() * 1_400_000.0) as u64;
        }
        out.truncate(events);
        out
    }

    fn person(p: u64) -> (f64, f64) {
        (0.6 + 0.2 * p as f64, 0.02 * p as f64)
    }

    fn windows(p: u64, n: u64, events: usize) -> Vec<RVec<Event>> {
        let (speed, bow) = person(p);
        (0..n)
            .map(|w| RVec::from(stream(events, 1000 * p + w, speed, bow)))
            .collect()
    }

    const SMALL: &str = "rounds = 40\nmin_leaf = 10\n";

    fn enrolled(plugin: &Mouse) -> Vec<u8> {
        let others: Vec<RVec<RVec<Event>>> = [0, 1, 2, 4, 5]
            .iter()
            .map(|&p| windows(p, 2, 3000).into())
            .collect();
        let population = plugin.build_population(&others).unwrap();
        plugin.enroll(&population, &windows(3, 3, 3000)).unwrap()
    }

    #[test]
    fn descriptor_is_valid() {
        let d = Mouse::descriptor();
        d.validate().unwrap();
        assert_eq!(d.feature_names.len(), FEATURES);
        assert_eq!(d.modality, Modality::MOUSE);
    }

    #[test]
    fn genuine_windows_outscore_other_people() {
        let plugin = Mouse::new(SMALL).unwrap();
        let profile = enrolled(&plugin);
        let (speed, bow) = person(3);
        for seed in 0..3 {
            let me = plugin
                .score(&profile, &stream(1500, 77_000 + seed, speed, bow))
                .unwrap();
            let (s2, b2) = person(6);
            let other = plugin
                .score(&profile, &stream(1500, 88_000 + seed, s2, b2))
                .unwrap();
            assert!(me.is_valid() && other.is_valid());
            assert!(me.llr > 0.0 && other.llr < 0.0, "{me:?} vs {other:?}");
            assert_eq!(me.quality, 1.0);
            assert_eq!(me.events, 1500);
        }
    }

    #[test]
    fn feature_level_path_matches_the_event_path() {
        let plugin = Mouse::new(SMALL).unwrap();
        let profile = enrolled(&plugin);
        let (speed, bow) = person(3);
        let window = stream(800, 5, speed, bow);
        let features = plugin.extract(&window).unwrap();
        assert_eq!(features.len() % FEATURES, 0);
        let a = plugin.score(&profile, &window).unwrap();
        let b = plugin.score_features(&profile, &features).unwrap();
        assert_eq!(a.llr, b.llr);
        assert_eq!(a.quality, b.quality);
        // Enrolling from features gives the same profile as enrolling from events.
        let others: Vec<RVec<RVec<Event>>> = [0, 1, 2, 4, 5]
            .iter()
            .map(|&p| windows(p, 2, 3000).into())
            .collect();
        let feature_users: Vec<RVec<RVec<f64>>> = others
            .iter()
            .map(|u| {
                u.iter()
                    .map(|w| RVec::from(plugin.extract(w).unwrap()))
                    .collect()
            })
            .collect();
        let population = plugin.build_population_features(&feature_users).unwrap();
        let own: Vec<RVec<f64>> = windows(3, 3, 3000)
            .iter()
            .map(|w| RVec::from(plugin.extract(w).unwrap()))
            .collect();
        assert_eq!(plugin.enroll_features(&population, &own).unwrap(), profile);
    }

    #[test]
    fn windows_without_actions_give_no_opinion() {
        let plugin = Mouse::new(SMALL).unwrap();
        let profile = enrolled(&plugin);
        let keys_only = vec![Event::key(EventKind::KEY_DOWN, 5, 1); 10];
        let clicks_only: Vec<Event> = (0..10)
            .flat_map(|i| {
                let b = |kind, t| Event {
                    pointer: 1,
                    ..Event::at(kind, t, 10.0, 10.0)
                };
                [
                    b(EventKind::BUTTON_DOWN, i * 1_000_000),
                    b(EventKind::BUTTON_UP, i * 1_000_000 + 90_000),
                ]
            })
            .collect();
        for window in [&[][..], &keys_only[..], &clicks_only[..]] {
            let s = plugin.score(&profile, window).unwrap();
            assert_eq!((s.llr, s.quality), (0.0, 0.0));
            let e = plugin.extract(window).unwrap_err();
            assert_eq!(e.kind, ErrorKind::NOT_ENOUGH_DATA);
            assert!(e.message.contains("no mouse actions"), "{e}");
        }
        let s = plugin.score_features(&profile, &[]).unwrap();
        assert_eq!((s.llr, s.quality), (0.0, 0.0));
    }

    #[test]
    fn broken_streams_score_without_panicking() {
        let plugin = Mouse::new(SMALL).unwrap();
        let profile = enrolled(&plugin);
        let (speed, bow) = person(3);
        let clean = stream(2000, 9, speed, bow);
        let mut jumping = clean.clone();
        for (i, e) in jumping.iter_mut().enumerate() {
            if i % 37 == 0 {
                e.x = 65535.0;
                e.y = 65535.0;
            } else if i % 41 == 0 {
                e.x += 5000.0;
            } else if i % 43 == 0 {
                e.y = f32::NAN;
            }
        }
        let mut duplicated = clean.clone();
        for w in duplicated.chunks_mut(3) {
            let t = w[0].t_us;
            for e in w.iter_mut() {
                e.t_us = t;
            }
        }
        let mut backwards = clean.clone();
        for e in backwards[1000..].iter_mut() {
            e.t_us -= 3_000_000;
        }
        let mut reversed = clean.clone();
        reversed.reverse();
        for window in [&jumping, &duplicated, &backwards, &reversed] {
            let s = plugin.score(&profile, window).unwrap();
            assert!(s.is_valid(), "{s:?}");
            if let Ok(f) = plugin.extract(window) {
                assert!(f.iter().all(|v| v.is_finite()));
            }
        }
        // The clock step costs only the actions around it.
        let (a, stats) = plugin.actions(&backwards);
        let (b, _) = plugin.actions(&clean);
        assert_eq!(stats.backwards_times, 1);
        assert!(a.len() + 2 >= b.len(), "{} vs {}", a.len(), b.len());
    }

    #[test]
    fn foreign_and_damaged_blobs_are_refused() {
        let plugin = Mouse::new(SMALL).unwrap();
        let profile = enrolled(&plugin);
        let window = stream(500, 3, 1.0, 0.0);
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"HKSP\x01{}".to_vec(),
            profile[..profile.len() / 2].to_vec(),
            {
                let mut p = profile.clone();
                p[4] = blob::FORMAT_VERSION + 1;
                p
            },
            blob::encode(blob::PROFILE_MAGIC, &serde_json::json!({"model": 1})).unwrap(),
        ];
        for (i, bad) in cases.iter().enumerate() {
            let e = plugin
                .score(bad, &window)
                .err()
                .unwrap_or_else(|| panic!("case {i} accepted"));
            assert_eq!(e.kind, ErrorKind::INVALID_PROFILE, "{e}");
            let e = plugin
                .adapt(bad, &window, Score::new(5.0, 1.0, 1))
                .unwrap_err();
            assert_eq!(e.kind, ErrorKind::INVALID_PROFILE, "{e}");
        }
        // A population given where a profile belongs, and the reverse.
        let others: Vec<RVec<RVec<Event>>> =
            [0, 1].iter().map(|&p| windows(p, 1, 3000).into()).collect();
        let population = plugin.build_population(&others).unwrap();
        assert!(plugin.score(&population, &window).is_err());
        let e = plugin.enroll(&profile, &windows(3, 2, 3000)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::INVALID_PROFILE);
        // Adapting leaves a good profile as it is.
        let same = plugin
            .adapt(&profile, &window, Score::new(9.0, 1.0, 1))
            .unwrap();
        assert_eq!(same, profile);
    }

    #[test]
    fn malformed_feature_samples_are_refused() {
        let plugin = Mouse::new(SMALL).unwrap();
        let profile = enrolled(&plugin);
        let e = plugin
            .score_features(&profile, &[1.0; FEATURES + 1])
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::INVALID_INPUT);
        let mut nan = vec![1.0; 2 * FEATURES];
        nan[FEATURES + 3] = f64::NAN;
        let e = plugin.score_features(&profile, &nan).unwrap_err();
        assert!(e.message.contains("duration_s of action 1"), "{e}");
        let e = plugin
            .enroll_features(&[], &[RVec::from(vec![0.5; 7])])
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::INVALID_INPUT);
        let e = plugin.enroll(&[], &[]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NOT_ENOUGH_DATA);
    }

    #[test]
    fn without_a_population_the_one_class_fallback_still_ranks() {
        let plugin = Mouse::new(SMALL).unwrap();
        let profile = plugin.enroll(&[], &windows(3, 3, 3000)).unwrap();
        let (speed, bow) = person(3);
        let (s2, b2) = person(7);
        let me = plugin
            .score(&profile, &stream(3000, 123, speed, bow))
            .unwrap();
        let other = plugin.score(&profile, &stream(3000, 124, s2, b2)).unwrap();
        assert!(me.llr > other.llr, "{me:?} vs {other:?}");
    }
}
