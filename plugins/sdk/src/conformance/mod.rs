//! The conformance kit: does a plugin keep the contract of this crate?
//!
//! The same checks run in two places:
//!
//! * **in the author's `cargo test`**, against their [`Plugin`] type in process:
//!
//!   ```ignore
//!   use habitus_plugin::conformance;
//!
//!   #[test]
//!   fn conforms() {
//!       conformance::check::<MyPlugin>(&conformance::Options::default()).assert_passed(true);
//!   }
//!   ```
//!
//! * **over the ABI**, by `habitus plugin check PATH [--strict]`, which loads the built
//!   library with the engine's loader and hands the kit a [`Subject`] over it.
//!
//! In process the plugin is wrapped by the very code [`export_plugin!`](crate::export_plugin)
//! exports (`catch_unwind` included), so both runs exercise the same boundary.
//!
//! Each check gives one [`Row`]: pass, warn or fail, with a one-line detail. A plugin
//! conforms when no row fails; with `strict`, warnings count as failures too. What the
//! checks are, and which ones only warn, is listed in the plugin guide
//! (`plugins/sdk/README.md`, "Testing").
//!
//! The kit feeds the plugin [`Synthetic`] behaviour chosen from the descriptor's event
//! kinds (typing, pointer, wheel or touch); a plugin for another kind of behaviour passes
//! its own [`Generator`] in [`Options::synthetic`].

mod blobs;
mod checks;
mod probe;
mod synthetic;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::marker::PhantomData;

pub use synthetic::{Behaviour, Generator, Habits, Rng, Synthetic};

use crate::interface::{descriptor_entry, new_entry};
use crate::{
    Event, ModalityPlugin, Plugin, PluginBox, PluginDescriptor, PluginError, PreparedProfile, RVec,
    Score,
};
use checks::{bounds_row, check_config, check_descriptor, panics_row, Checks};
use probe::{Probe, Recorder};

/// The stated time budget: scoring should cost at most this much per event. Reported,
/// not asserted (a warning, so `--strict` fails on it).
pub const DEFAULT_BUDGET_US_PER_EVENT: f64 = 10.0;

/// Size of the largest window the kit scores.
pub const LARGE_WINDOW_EVENTS: usize = 100_000;

/// How far the "shifted" and "clearly shifted" behaviour are moved (see [`Habits`]).
pub const SHIFT: f64 = 1.0;
pub const LARGE_SHIFT: f64 = 2.5;

/// Simulated people: the enrolled user, and the others a population is built from.
const USER: u64 = 1;
const POPULATION_PEOPLE: u64 = 8;
const POPULATION_WINDOWS: usize = 6;
/// Seeds of trial windows: disjoint from enrolment seeds (`0..enrol_windows`).
const TRIAL_SEED: u64 = 10_000;
const TIMING_SEED: u64 = 20_000;
const LARGE_SEED: u64 = 30_000;

/// One constructed plugin, as the checks call it. Implemented for [`PluginBox`] (in
/// process) and, in the `habitus` CLI, for a plugin loaded by the engine. A contract
/// violation (an invalid score) must be passed through as it is, not filtered: the kit
/// reports it.
pub trait Instance {
    fn descriptor(&self) -> PluginDescriptor;
    fn build_population(&self, users: &[RVec<RVec<Event>>]) -> Result<Vec<u8>, PluginError>;
    fn enroll(&self, population: &[u8], windows: &[RVec<Event>]) -> Result<Vec<u8>, PluginError>;
    fn score(&self, profile: &[u8], window: &[Event]) -> Result<Score, PluginError>;
    fn adapt(&self, profile: &[u8], window: &[Event], score: Score)
        -> Result<Vec<u8>, PluginError>;
    fn extract(&self, window: &[Event]) -> Result<Vec<f64>, PluginError>;
    fn build_population_features(&self, users: &[RVec<RVec<f64>>]) -> Result<Vec<u8>, PluginError>;
    fn enroll_features(
        &self,
        population: &[u8],
        samples: &[RVec<f64>],
    ) -> Result<Vec<u8>, PluginError>;
    fn score_features(&self, profile: &[u8], sample: &[f64]) -> Result<Score, PluginError>;
    /// `prepare(profile)` once, then the prepared profile's score of each window.
    fn score_prepared(
        &self,
        profile: &[u8],
        windows: &[Vec<Event>],
    ) -> Result<Vec<Result<Score, PluginError>>, PluginError>;
}

impl Instance for PluginBox {
    fn descriptor(&self) -> PluginDescriptor {
        ModalityPlugin::descriptor(self)
    }
    fn build_population(&self, users: &[RVec<RVec<Event>>]) -> Result<Vec<u8>, PluginError> {
        ModalityPlugin::build_population(self, users.into())
            .into_result()
            .map(RVec::into_vec)
    }
    fn enroll(&self, population: &[u8], windows: &[RVec<Event>]) -> Result<Vec<u8>, PluginError> {
        ModalityPlugin::enroll(self, population.into(), windows.into())
            .into_result()
            .map(RVec::into_vec)
    }
    fn score(&self, profile: &[u8], window: &[Event]) -> Result<Score, PluginError> {
        ModalityPlugin::score(self, profile.into(), window.into()).into_result()
    }
    fn adapt(
        &self,
        profile: &[u8],
        window: &[Event],
        score: Score,
    ) -> Result<Vec<u8>, PluginError> {
        ModalityPlugin::adapt(self, profile.into(), window.into(), score)
            .into_result()
            .map(RVec::into_vec)
    }
    fn extract(&self, window: &[Event]) -> Result<Vec<f64>, PluginError> {
        ModalityPlugin::extract(self, window.into())
            .into_result()
            .map(RVec::into_vec)
    }
    fn build_population_features(&self, users: &[RVec<RVec<f64>>]) -> Result<Vec<u8>, PluginError> {
        ModalityPlugin::build_population_features(self, users.into())
            .into_result()
            .map(RVec::into_vec)
    }
    fn enroll_features(
        &self,
        population: &[u8],
        samples: &[RVec<f64>],
    ) -> Result<Vec<u8>, PluginError> {
        ModalityPlugin::enroll_features(self, population.into(), samples.into())
            .into_result()
            .map(RVec::into_vec)
    }
    fn score_features(&self, profile: &[u8], sample: &[f64]) -> Result<Score, PluginError> {
        ModalityPlugin::score_features(self, profile.into(), sample.into()).into_result()
    }
    fn score_prepared(
        &self,
        profile: &[u8],
        windows: &[Vec<Event>],
    ) -> Result<Vec<Result<Score, PluginError>>, PluginError> {
        let prepared = ModalityPlugin::prepare(self, profile.into()).into_result()?;
        Ok(windows
            .iter()
            .map(|w| PreparedProfile::score(&prepared, w.as_slice().into()).into_result())
            .collect())
    }
}

/// What is being checked: something that describes a plugin and constructs instances
/// of it from a config string.
pub trait Subject {
    fn descriptor(&self) -> Result<PluginDescriptor, PluginError>;
    fn instantiate(&self, config: &str) -> Result<Box<dyn Instance>, PluginError>;
}

/// A [`Plugin`] type checked in process, through the same entry points
/// [`export_plugin!`](crate::export_plugin) exports.
pub struct InProcess<P>(PhantomData<fn() -> P>);

impl<P: Plugin> InProcess<P> {
    pub fn new() -> InProcess<P> {
        InProcess(PhantomData)
    }
}

impl<P: Plugin> Default for InProcess<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Plugin> Subject for InProcess<P> {
    fn descriptor(&self) -> Result<PluginDescriptor, PluginError> {
        descriptor_entry::<P>().into_result()
    }
    fn instantiate(&self, config: &str) -> Result<Box<dyn Instance>, PluginError> {
        new_entry::<P>(config.into())
            .into_result()
            .map(|plugin| Box::new(plugin) as Box<dyn Instance>)
    }
}

/// How to run the checks.
#[derive(Clone, Debug)]
pub struct Options {
    /// The TOML config the plugin is constructed with (empty = its defaults).
    pub config: String,
    /// The behaviour to feed it; `None` = chosen from the descriptor's event kinds.
    pub synthetic: Option<Synthetic>,
    /// The time budget per scored event, in microseconds.
    pub budget_us_per_event: f64,
    /// Size of the large-window check.
    pub large_window_events: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            config: String::new(),
            synthetic: None,
            budget_us_per_event: DEFAULT_BUDGET_US_PER_EVENT,
            large_window_events: LARGE_WINDOW_EVENTS,
        }
    }
}

impl Options {
    /// The defaults with the plugin constructed from `config`.
    pub fn with_config(config: impl Into<String>) -> Options {
        Options {
            config: config.into(),
            ..Options::default()
        }
    }
}

/// Checks the plugin type `P` in process.
pub fn check<P: Plugin>(options: &Options) -> Report {
    run(&InProcess::<P>::new(), options)
}

/// The result of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Allowed, but worth fixing; a failure under `--strict`.
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub name: &'static str,
    pub outcome: Outcome,
    pub detail: String,
}

impl Row {
    fn new(name: &'static str, outcome: Outcome, detail: impl Into<String>) -> Row {
        Row {
            name,
            outcome,
            detail: detail.into(),
        }
    }

    pub fn passed(&self, strict: bool) -> bool {
        match self.outcome {
            Outcome::Pass => true,
            Outcome::Warn => !strict,
            Outcome::Fail => false,
        }
    }
}

/// Measured scoring cost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    pub small_window_events: usize,
    pub small_us_per_event: f64,
    pub large_window_events: usize,
    pub large_us_per_event: f64,
}

/// Everything the kit found.
#[derive(Clone, Debug)]
pub struct Report {
    pub plugin: String,
    pub version: String,
    pub behaviour: &'static str,
    pub rows: Vec<Row>,
    pub timing: Option<Timing>,
    pub budget_us_per_event: f64,
}

impl Report {
    /// True when no check failed (and, if `strict`, none warned).
    pub fn passed(&self, strict: bool) -> bool {
        self.rows.iter().all(|r| r.passed(strict))
    }

    /// The rows that make the run fail.
    pub fn failures(&self, strict: bool) -> Vec<&Row> {
        self.rows.iter().filter(|r| !r.passed(strict)).collect()
    }

    /// The pass/fail table, with a summary line.
    pub fn table(&self, strict: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "conformance of {} {} (interface {}), synthetic {} behaviour{}",
            self.plugin,
            self.version,
            crate::INTERFACE_VERSION,
            self.behaviour,
            if strict { ", strict" } else { "" }
        );
        let width = self.rows.iter().map(|r| r.name.len()).max().unwrap_or(5);
        let _ = writeln!(out, "{:<width$}  result  detail", "check");
        let _ = writeln!(out, "{}  ------  {}", "-".repeat(width), "-".repeat(40));
        for r in &self.rows {
            let result = match (r.outcome, strict) {
                (Outcome::Pass, _) => "pass",
                (Outcome::Warn, false) => "warn",
                (Outcome::Warn, true) | (Outcome::Fail, _) => "FAIL",
            };
            let _ = writeln!(out, "{:<width$}  {result:<6}  {}", r.name, r.detail);
        }
        let count = |o: Outcome| self.rows.iter().filter(|r| r.outcome == o).count();
        let _ = write!(
            out,
            "{} checks: {} pass, {} warn, {} fail => {}",
            self.rows.len(),
            count(Outcome::Pass),
            count(Outcome::Warn),
            count(Outcome::Fail),
            if self.passed(strict) {
                "CONFORMS"
            } else if strict && self.passed(false) {
                "FAILED (warnings count as failures with --strict)"
            } else {
                "FAILED"
            }
        );
        out
    }

    /// Panics with the table unless the plugin passed: for the author's `cargo test`.
    #[track_caller]
    pub fn assert_passed(&self, strict: bool) {
        if !self.passed(strict) {
            panic!(
                "plugin does not conform to habitus-plugin {}:\n{}",
                crate::INTERFACE_VERSION,
                self.table(strict)
            );
        }
    }
}

/// Runs every check against `subject`.
pub fn run(subject: &dyn Subject, options: &Options) -> Report {
    let rec = Recorder::default();
    let mut report = Report {
        plugin: "?".into(),
        version: "?".into(),
        behaviour: "?",
        rows: Vec::new(),
        timing: None,
        budget_us_per_event: options.budget_us_per_event,
    };
    let descriptor = match rec.note("descriptor()", subject.descriptor()) {
        Ok(d) => d,
        Err(e) => {
            report.rows.push(Row::new(
                "descriptor",
                Outcome::Fail,
                format!("cannot be read: {e}"),
            ));
            report.rows.push(panics_row(&rec));
            return report;
        }
    };
    report.plugin = descriptor.name.to_string();
    report.version = descriptor.version.to_string();
    let instance = match rec.note("new(config)", subject.instantiate(&options.config)) {
        Ok(i) => i,
        Err(e) => {
            report.rows.push(check_descriptor(&descriptor, None));
            report.rows.push(Row::new(
                "config",
                Outcome::Fail,
                format!(
                    "the plugin cannot be constructed from {:?}: {e}",
                    options.config
                ),
            ));
            report.rows.push(panics_row(&rec));
            return report;
        }
    };
    report
        .rows
        .push(check_descriptor(&descriptor, Some(&instance.descriptor())));
    report.rows.push(check_config(subject, options, &rec));

    let synthetic = options
        .synthetic
        .clone()
        .unwrap_or_else(|| Synthetic::for_descriptor(&descriptor));
    report.behaviour = synthetic.behaviour.name();
    let probe = Probe {
        inner: instance.as_ref(),
        rec: &rec,
    };
    let mut ctx = Checks {
        probe,
        subject,
        options,
        synthetic,
        me: Habits::of(USER),
        population: Vec::new(),
        rows: Vec::new(),
        timing: None,
    };
    ctx.population_row();
    if let Some(profile) = ctx.enrol_row() {
        ctx.monotone_row(&profile);
        ctx.deterministic_row(&profile);
        ctx.prepared_row(&profile);
        ctx.empty_window_row(&profile);
        ctx.one_event_row(&profile);
        let large = ctx.large_window_row(&profile);
        ctx.out_of_order_row(&profile);
        ctx.non_finite_row(&profile);
        ctx.unknown_kinds_row(&profile);
        ctx.foreign_profile_row(&profile);
        ctx.truncated_profile_row(&profile);
        ctx.corrupted_profile_row(&profile);
        ctx.population_blobs_row(&profile);
        ctx.adapt_row(&profile);
        ctx.timing_row(&profile, large);
    } else {
        for name in [
            "genuine > shifted",
            "deterministic",
            "empty window",
            "one-event window",
            "large window",
            "out-of-order events",
            "NaN and infinities",
            "unknown event kinds",
            "foreign profile",
            "truncated profile",
            "corrupted profile",
            "population blobs",
            "adapt",
            "time per event",
        ] {
            ctx.rows
                .push(Row::new(name, Outcome::Fail, "not run: enrolment failed"));
        }
    }
    ctx.features_row();
    let Checks { rows, timing, .. } = ctx;
    report.rows.extend(rows);
    report.timing = timing;
    report.rows.push(bounds_row(&rec));
    report.rows.push(panics_row(&rec));
    report
}
