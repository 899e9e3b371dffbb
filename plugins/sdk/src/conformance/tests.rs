//! The kit against two tiny plugins: one that keeps the contract and one that breaks
//! most of it, so that every check is seen both passing and failing.

use super::*;
use crate::{blob, EventKind, Modality, Plugin};

/// A minimal honest plugin: the mean and spread of ln(ms between wheel events), a
/// Gaussian per user against a fixed population Gaussian.
struct Tempo;

const TEMPO_MAGIC: &[u8; 4] = b"TMPP";
const POPULATION_MEAN: [f64; 2] = [4.5, 1.5];
const POPULATION_SD: [f64; 2] = [0.6, 0.4];

fn tempo_features(window: &[Event]) -> Result<([f64; 2], u32), PluginError> {
    let mut last: Option<u64> = None;
    let mut t_prev = 0;
    let mut xs = Vec::new();
    let mut events = 0;
    for e in window {
        if e.t_us < t_prev {
            return Err(PluginError::invalid_input("time goes back"));
        }
        t_prev = e.t_us;
        if e.kind != EventKind::WHEEL {
            continue;
        }
        if !e.is_finite() {
            return Err(PluginError::invalid_input("non-finite delta"));
        }
        events += 1;
        if let Some(l) = last {
            let ms = (e.t_us - l) as f64 / 1000.0;
            if ms <= 5000.0 {
                xs.push(ms.max(1.0).ln());
            }
        }
        last = Some(e.t_us);
    }
    if xs.len() < 5 {
        return Err(PluginError::not_enough_data("fewer than 5 intervals"));
    }
    let m = xs.iter().sum::<f64>() / xs.len() as f64;
    let sd = (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64).sqrt();
    Ok(([m, sd], events))
}

fn ln_normal(x: f64, m: f64, sd: f64) -> f64 {
    -0.5 * ((x - m) / sd).powi(2) - sd.ln()
}

impl Plugin for Tempo {
    fn descriptor() -> PluginDescriptor {
        PluginDescriptor {
            name: "tempo".into(),
            modality: Modality::OTHER,
            version: "0.1.0".into(),
            description: "test plugin: wheel tempo".into(),
            event_kinds: vec![EventKind::WHEEL].into(),
            feature_names: vec!["ln_ms.mean".into(), "ln_ms.sd".into()].into(),
        }
    }
    fn new(config: &str) -> Result<Self, PluginError> {
        if config.trim().is_empty() {
            Ok(Tempo)
        } else {
            Err(PluginError::invalid_config("tempo takes no settings"))
        }
    }
    fn enroll(&self, _: &[u8], windows: &[RVec<Event>]) -> Result<Vec<u8>, PluginError> {
        let rows: Vec<[f64; 2]> = windows
            .iter()
            .filter_map(|w| tempo_features(w).ok().map(|f| f.0))
            .collect();
        if rows.len() < 3 {
            return Err(PluginError::not_enough_data("fewer than 3 usable windows"));
        }
        let mut v = Vec::new();
        for f in 0..2 {
            let m = rows.iter().map(|r| r[f]).sum::<f64>() / rows.len() as f64;
            let var = rows.iter().map(|r| (r[f] - m).powi(2)).sum::<f64>() / rows.len() as f64;
            v.push(m);
            v.push(var.sqrt().max(0.05));
        }
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Ok(blob::seal(TEMPO_MAGIC, 1, &bytes))
    }
    fn score(&self, profile: &[u8], window: &[Event]) -> Result<Score, PluginError> {
        let opened = blob::open(TEMPO_MAGIC, "tempo profile", profile)?;
        if opened.payload.len() != 32 {
            return Err(PluginError::invalid_profile("wrong length"));
        }
        let v: Vec<f64> = opened
            .payload
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let (x, events) = tempo_features(window)?;
        let mut llr = 0.0;
        for f in 0..2 {
            llr += ln_normal(x[f], v[2 * f], v[2 * f + 1])
                - ln_normal(x[f], POPULATION_MEAN[f], POPULATION_SD[f]);
        }
        Ok(Score::new(0.5 * llr, events as f64 / 50.0, events))
    }
    fn adapt(&self, profile: &[u8], _: &[Event], _: Score) -> Result<Vec<u8>, PluginError> {
        blob::open(TEMPO_MAGIC, "tempo profile", profile)?;
        Ok(profile.to_vec())
    }
}

/// Breaks the contract in many ways.
struct Sloppy;

impl Plugin for Sloppy {
    fn descriptor() -> PluginDescriptor {
        PluginDescriptor {
            description: "test plugin that breaks the rules".into(),
            name: "sloppy".into(),
            ..Tempo::descriptor()
        }
    }
    fn new(_: &str) -> Result<Self, PluginError> {
        Ok(Sloppy)
    }
    fn enroll(&self, _: &[u8], _: &[RVec<Event>]) -> Result<Vec<u8>, PluginError> {
        Ok(b"sloppy profile".to_vec())
    }
    fn score(&self, _: &[u8], window: &[Event]) -> Result<Score, PluginError> {
        if window.is_empty() {
            panic!("empty windows were never considered");
        }
        if window.windows(2).any(|w| w[1].t_us < w[0].t_us) {
            return Ok(Score {
                llr: f64::NAN,
                quality: 1.0,
                events: 0,
            });
        }
        Ok(Score::new(1.0, 1.0, window.len() as u32 + 5))
    }
    fn adapt(&self, _: &[u8], _: &[Event], _: Score) -> Result<Vec<u8>, PluginError> {
        Ok(vec![1, 2, 3])
    }
}

fn quick() -> Options {
    Options {
        large_window_events: 20_000,
        ..Options::default()
    }
}

fn outcome(report: &Report, name: &str) -> Outcome {
    report
        .rows
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no row {name}:\n{}", report.table(false)))
        .outcome
}

#[test]
fn an_honest_plugin_conforms() {
    let report = check::<Tempo>(&quick());
    let table = report.table(false);
    assert!(report.passed(false), "{table}");
    // Only the missing feature interface warns, so --strict fails on it alone.
    let warnings: Vec<&str> = report
        .rows
        .iter()
        .filter(|r| r.outcome != Outcome::Pass)
        .map(|r| r.name)
        .collect();
    assert_eq!(warnings, ["feature interface"], "{table}");
    assert!(!report.passed(true));
    assert!(report
        .table(true)
        .contains("FAILED (warnings count as failures"));
    assert_eq!(report.behaviour, "wheel");
    let timing = report.timing.expect("timed");
    assert!(timing.small_us_per_event.is_finite() && timing.large_us_per_event.is_finite());
    assert!(table.contains("CONFORMS"), "{table}");
}

#[test]
fn a_sloppy_plugin_fails_where_it_is_sloppy() {
    let report = check::<Sloppy>(&quick());
    let table = report.table(false);
    assert!(!report.passed(false), "{table}");
    for name in [
        "enrol",
        "genuine > shifted",
        "empty window",
        "foreign profile",
        "truncated profile",
        "corrupted profile",
        "adapt",
        "score bounds",
        "panics",
    ] {
        assert_eq!(outcome(&report, name), Outcome::Fail, "{name}\n{table}");
    }
    assert_eq!(outcome(&report, "config"), Outcome::Warn, "{table}");
    assert_eq!(outcome(&report, "descriptor"), Outcome::Pass, "{table}");
    assert!(
        table.contains("empty windows were never considered"),
        "{table}"
    );
}

#[test]
fn a_plugin_that_cannot_be_built_is_one_failing_row() {
    let report = check::<Tempo>(&Options::with_config("speed = 3"));
    assert_eq!(outcome(&report, "config"), Outcome::Fail);
    assert!(!report.passed(false));
}

#[test]
fn a_custom_generator_is_used() {
    fn ticks(_: &Habits, rng: &mut Rng, events: usize) -> Vec<Event> {
        let mut t = 1_000_000;
        (0..events)
            .map(|_| {
                t += 20_000 + rng.below(10_000);
                Event::at(EventKind::WHEEL, t, 0.0, 1.0)
            })
            .collect()
    }
    let options = Options {
        synthetic: Some(Synthetic::new(Behaviour::Custom {
            name: "ticks",
            generate: ticks,
        })),
        ..quick()
    };
    let report = check::<Tempo>(&options);
    assert_eq!(report.behaviour, "ticks");
    assert_eq!(
        outcome(&report, "enrol"),
        Outcome::Pass,
        "{}",
        report.table(false)
    );
    assert_eq!(outcome(&report, "corrupted profile"), Outcome::Pass);
}
