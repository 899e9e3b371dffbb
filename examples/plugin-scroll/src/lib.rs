//! # habitus-scroll: scroll-wheel rhythm, an example third-party Habitus plugin
//!
//! How someone turns the mouse wheel while reading is personal: how fast the notches
//! follow each other inside a flick, how many notches a flick has, how long they read
//! between flicks, how often they scroll back. This plugin turns `Wheel` events into seven
//! such numbers per window ([`features`]) and scores them with a per-user Gaussian against
//! a population Gaussian ([`model`], where the calibration is explained).
//!
//! It is deliberately small and built exactly as a plugin outside the Habitus repository
//! would be: its own `Cargo.toml`, no dependency but `habitus-plugin`, its own tests that
//! run the SDK's conformance kit (`tests/conformance.rs`). Copy it to start a plugin;
//! `plugins/sdk/README.md` is the guide.
//!
//! * **Events**: `Wheel` only; `x` is the horizontal and `y` the vertical delta in wheel
//!   notches (as habitusd reads them from evdev `REL_HWHEEL` / `REL_WHEEL`).
//! * **Modality**: [`Modality::OTHER`]: scrolling is not one of the modalities the
//!   interface names; the descriptor's name (`scroll`) says what it is.
//! * **Profiles**: 313 bytes of statistics in the SDK's checked envelope
//!   ([`habitus_plugin::blob`]), magic `HSCP`, format 1. Populations: magic `HSCN`.
//! * **Privacy**: nothing but timing and wheel-delta statistics is ever stored.

pub mod config;
pub mod features;
pub mod model;

use habitus_plugin::{
    export_plugin, ErrorKind, Event, EventKind, Modality, Plugin, PluginDescriptor, PluginError,
    RVec, Score,
};

use crate::config::Config;
use crate::features::{WindowFeatures, FEATURES, FEATURE_NAMES};
use crate::model::{Population, Profile};

/// The name habitusd knows this plugin by (`[plugins.scroll]`); profiles are stored
/// under it, so it never changes once users are enrolled.
pub const PLUGIN_NAME: &str = "scroll";

/// Windows with this many wheel events or more carry full weight (`quality` 1).
const FULL_WINDOW_EVENTS: f64 = 50.0;

pub struct Scroll {
    config: Config,
}

impl Scroll {
    fn features(&self, window: &[Event]) -> Result<WindowFeatures, PluginError> {
        features::extract(window, &self.config)
    }

    /// Features of every usable enrolment window; unusable ones are skipped (a window
    /// of mostly clicking is normal), but if none is left, the last reason is returned.
    fn usable(&self, windows: &[RVec<Event>]) -> Result<Vec<[f64; FEATURES]>, PluginError> {
        let mut rows = Vec::with_capacity(windows.len());
        let mut last_error = None;
        for w in windows {
            match self.features(w) {
                Ok(f) => rows.push(f.values),
                Err(e) => last_error = Some(e),
            }
        }
        match (rows.is_empty(), last_error) {
            (true, Some(e)) => Err(e),
            _ => Ok(rows),
        }
    }

    fn score_features_of(&self, profile: &Profile, f: &WindowFeatures) -> Score {
        let quality = f.events as f64 / FULL_WINDOW_EVENTS;
        Score::new(profile.llr(&f.values), quality, f.events)
    }
}

fn feature_vector(sample: &[f64]) -> Result<[f64; FEATURES], PluginError> {
    if sample.len() != FEATURES || sample.iter().any(|x| !x.is_finite()) {
        return Err(PluginError::invalid_input(format!(
            "a scroll feature vector has {FEATURES} finite values, got {} values",
            sample.len()
        )));
    }
    let mut v = [0.0; FEATURES];
    v.copy_from_slice(sample);
    Ok(v)
}

impl Plugin for Scroll {
    fn descriptor() -> PluginDescriptor {
        PluginDescriptor {
            name: PLUGIN_NAME.into(),
            modality: Modality::OTHER,
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Scroll-wheel rhythm: intervals, bursts, pauses, notch sizes, reversals"
                .into(),
            event_kinds: vec![EventKind::WHEEL].into(),
            feature_names: FEATURE_NAMES.iter().map(|&n| n.into()).collect(),
        }
    }

    fn new(config: &str) -> Result<Self, PluginError> {
        Ok(Scroll {
            config: Config::parse(config)?,
        })
    }

    fn build_population(&self, users: &[RVec<RVec<Event>>]) -> Result<Vec<u8>, PluginError> {
        let rows: Vec<Vec<[f64; FEATURES]>> = users
            .iter()
            .map(|u| {
                u.iter()
                    .filter_map(|w| self.features(w).ok().map(|f| f.values))
                    .collect()
            })
            .collect();
        Ok(Population::build(&rows)?.encode())
    }

    fn enroll(&self, population: &[u8], windows: &[RVec<Event>]) -> Result<Vec<u8>, PluginError> {
        let population = Population::decode(population)?;
        let rows = self.usable(windows)?;
        Ok(Profile::enroll(&rows, population)?.encode())
    }

    fn score(&self, profile: &[u8], window: &[Event]) -> Result<Score, PluginError> {
        let profile = Profile::decode(profile)?;
        match self.features(window) {
            Ok(f) => Ok(self.score_features_of(&profile, &f)),
            // Too little scrolling to judge (the host also scores the partial window
            // pending when it is asked for a verdict): no opinion rather than an error,
            // which the host would log as a failed window.
            Err(e) if e.kind == ErrorKind::NOT_ENOUGH_DATA => {
                let wheel = window.iter().filter(|e| e.kind == EventKind::WHEEL).count();
                Ok(Score::new(0.0, 0.0, wheel as u32))
            }
            Err(e) => Err(e),
        }
    }

    fn adapt(
        &self,
        profile: &[u8],
        window: &[Event],
        score: Score,
    ) -> Result<Vec<u8>, PluginError> {
        let mut decoded = Profile::decode(profile)?;
        // Compared so that a NaN score falls into "do not adapt"; then re-scored ourselves
        // rather than trusting the caller: adaptation is where an impostor could slowly
        // teach the profile.
        let clearly_genuine = score.llr >= self.config.adapt_min_llr;
        if !clearly_genuine || self.config.adapt_rate == 0.0 {
            return Ok(profile.to_vec());
        }
        let f = self.features(window)?;
        if self.score_features_of(&decoded, &f).llr < self.config.adapt_min_llr {
            return Ok(profile.to_vec());
        }
        decoded.adapt(&f.values, self.config.adapt_rate);
        Ok(decoded.encode())
    }

    fn extract(&self, window: &[Event]) -> Result<Vec<f64>, PluginError> {
        Ok(self.features(window)?.values.to_vec())
    }

    fn build_population_features(&self, users: &[RVec<RVec<f64>>]) -> Result<Vec<u8>, PluginError> {
        let mut rows = Vec::with_capacity(users.len());
        for u in users {
            rows.push(
                u.iter()
                    .map(|s| feature_vector(s))
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        Ok(Population::build(&rows)?.encode())
    }

    fn enroll_features(
        &self,
        population: &[u8],
        samples: &[RVec<f64>],
    ) -> Result<Vec<u8>, PluginError> {
        let population = Population::decode(population)?;
        let rows = samples
            .iter()
            .map(|s| feature_vector(s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Profile::enroll(&rows, population)?.encode())
    }

    fn score_features(&self, profile: &[u8], sample: &[f64]) -> Result<Score, PluginError> {
        let profile = Profile::decode(profile)?;
        let x = feature_vector(sample)?;
        Ok(Score::new(profile.llr(&x), 1.0, 0))
    }
}

export_plugin!(Scroll);

#[cfg(test)]
mod tests {
    use super::*;
    use habitus_plugin::conformance::{Behaviour, Habits, Synthetic};

    fn synthetic() -> Synthetic {
        Synthetic::new(Behaviour::Wheel)
    }

    fn windows(person: u64, count: usize) -> Vec<RVec<Event>> {
        synthetic()
            .windows(&Habits::of(person), 0, count)
            .into_iter()
            .map(RVec::from)
            .collect()
    }

    #[test]
    fn descriptor_is_valid() {
        Scroll::descriptor().validate().unwrap();
        assert_eq!(Scroll::descriptor().feature_names.len(), FEATURES);
    }

    #[test]
    fn the_user_scores_above_other_people() {
        let plugin = Scroll::new("").unwrap();
        let profile = plugin.enroll(&[], &windows(1, 20)).unwrap();
        let s = synthetic();
        let own: Vec<f64> = (0..10)
            .map(|i| {
                plugin
                    .score(&profile, &s.window(&Habits::of(1), 500 + i))
                    .unwrap()
                    .llr
            })
            .collect();
        let others: Vec<f64> = (2..12)
            .map(|p| {
                plugin
                    .score(&profile, &s.window(&Habits::of(p), 500))
                    .unwrap()
                    .llr
            })
            .collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!(mean(&own) > 2.0, "{own:?}");
        assert!(mean(&others) < -2.0, "{others:?}");
    }

    #[test]
    fn a_population_from_other_users_is_used() {
        let plugin = Scroll::new("").unwrap();
        let users: Vec<RVec<RVec<Event>>> = (100..106).map(|p| RVec::from(windows(p, 5))).collect();
        let population = plugin.build_population(&users).unwrap();
        let profile = plugin.enroll(&population, &windows(1, 20)).unwrap();
        let decoded = Profile::decode(&profile).unwrap();
        assert_eq!(decoded.population.users, 6.0);
        // Two users only: refused, not silently a bad prior.
        let e = plugin.build_population(&users[..2]).unwrap_err();
        assert_eq!(e.kind, habitus_plugin::ErrorKind::NOT_ENOUGH_DATA);
    }

    #[test]
    fn adapts_only_on_clearly_genuine_windows() {
        let plugin = Scroll::new("").unwrap();
        let profile = plugin.enroll(&[], &windows(1, 20)).unwrap();
        // A window of the user's that scores clearly genuine (LLR >= adapt_min_llr = 3).
        let (mine, s) = (900..950)
            .map(|seed| synthetic().window(&Habits::of(1), seed))
            .map(|w| {
                let s = plugin.score(&profile, &w).unwrap();
                (w, s)
            })
            .find(|(_, s)| s.llr >= 3.0)
            .expect("a clearly genuine window");
        assert_ne!(plugin.adapt(&profile, &mine, s).unwrap(), profile);
        let theirs = synthetic().window(&Habits::of(2), 900);
        // Even if the caller claims it is genuine, the plugin re-scores and refuses.
        let claimed = Score::new(9.0, 1.0, 100);
        assert_eq!(plugin.adapt(&profile, &theirs, claimed).unwrap(), profile);
        let nan = Score {
            llr: f64::NAN,
            quality: 1.0,
            events: 100,
        };
        assert_eq!(plugin.adapt(&profile, &mine, nan).unwrap(), profile);
    }

    /// Recomputes [`Population::builtin`] from 200 simulated people (run with
    /// `--nocapture` to print the numbers after changing the features).
    #[test]
    fn builtin_population_is_what_the_simulation_gives() {
        let plugin = Scroll::new("").unwrap();
        let rows: Vec<Vec<[f64; FEATURES]>> = (0..200)
            .map(|p| {
                windows(10_000 + p, 10)
                    .iter()
                    .filter_map(|w| plugin.features(w).ok().map(|f| f.values))
                    .collect()
            })
            .collect();
        let measured = Population::build(&rows).unwrap();
        println!("{measured:#?}");
        let builtin = Population::builtin();
        for f in 0..FEATURES {
            for (a, b) in [
                (measured.mean[f], builtin.mean[f]),
                (measured.sd[f], builtin.sd[f]),
                (measured.within_sd[f], builtin.within_sd[f]),
            ] {
                assert!(
                    (a - b).abs() < 2e-3,
                    "feature {f}: measured {a:.4}, built in {b:.4}"
                );
            }
        }
    }
}
