//! `habitus`: the command line of Habitus.
//!
//! * `habitus eval cmu|fixed-text|aalto …` — reproduce published keystroke benchmarks
//!   through the loaded plugins.
//! * `habitus eval balabit …` — mouse dynamics on the Balabit challenge data.
//! * `habitus eval touchalytics …` — touch strokes on the Touchalytics feature matrix.
//! * `habitus plugin check PATH [--strict]` — load one plugin, print its descriptor and
//!   run the conformance kit of `habitus-plugin` on it.
//! * `habitus status|enroll|ingest|forget|export` — talk to a running habitusd.
//! * `habitus replay aalto|synthetic` — write replay files of recorded behaviour.
//! * `habitus demo` — habitusd, enrolment and the PAM step-up end to end, on one machine.

/// `println!` that returns an error instead of panicking when standard output cannot
/// be written (a full disk, `> /dev/full`); a closed pipe ends the process quietly
/// before that (see `main`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err($crate::stdout_error)?
    }};
}

mod admin;
mod demo;
mod eval_continuous;
mod eval_mouse;
mod eval_touch;
mod plot;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use habitus_engine::eval::{self, aalto, fixed_text, EvalReport, Progress};
use habitus_engine::loader::{default_plugin_dirs, find_plugin};
use habitus_engine::{HostError, PluginInstance, PluginLibrary};
use habitus_plugin::conformance;
use habitus_plugin::{Event, PluginDescriptor, PluginError, RVec, Score};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "habitus",
    version,
    about = "Behavioural-biometrics authentication: evaluation and plugin tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reproduce a benchmark's protocol through the loaded plugins.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Inspect plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// State, trust and enrolment progress of one user (or all, as root).
    Status {
        user: Option<String>,
        #[command(flatten)]
        daemon: admin::DaemonArgs,
    },
    /// Build USER's profiles from a replay of their own behaviour (root).
    Enroll {
        user: String,
        /// Replay file (see `habitus replay`).
        #[arg(long, value_name = "FILE")]
        replay: PathBuf,
        /// Replace profiles USER already has (without it, enrolling an enrolled user is
        /// refused: a mistyped name or a short file would silently replace a good profile).
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        daemon: admin::DaemonArgs,
    },
    /// Feed a replay file into USER's live session, as a user-session collector would.
    Ingest {
        user: String,
        #[arg(long, value_name = "FILE")]
        replay: PathBuf,
        /// 1 = recorded pace, 0 = as fast as possible.
        #[arg(long, default_value_t = 0.0)]
        speed: f64,
        #[command(flatten)]
        daemon: admin::DaemonArgs,
    },
    /// Erase everything stored about USER (root).
    Forget {
        user: String,
        #[command(flatten)]
        daemon: admin::DaemonArgs,
    },
    /// Print everything stored about USER, as JSON.
    Export {
        user: String,
        #[command(flatten)]
        daemon: admin::DaemonArgs,
    },
    /// Population models (how other people type), for calibrated scores.
    #[command(subcommand)]
    Population(admin::PopulationCommand),
    /// Write replay files (recorded behaviour in the ingest format).
    #[command(subcommand)]
    Replay(admin::ReplayCommand),
    /// Show Habitus end to end: habitusd up, a user enrolled, genuine typing passing the
    /// PAM step-up, an impostor asked for the strong factor.
    Demo(demo::DemoArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Write a DET curve of every detector to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Directory to load plugins from (default: next to this executable, then /usr/lib/habitus/plugins).
    #[arg(long, value_name = "DIR")]
    plugins: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Killourhy & Maxion 2009 on the CMU strong-password data.
    Cmu {
        /// DSL-StrongPasswordData.csv, or the folder holding it.
        #[arg(
            long,
            default_value = "../shared/datasets/cmu-keystroke/DSL-StrongPasswordData.csv"
        )]
        data: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// The same protocol on any CSV in the CMU layout.
    FixedText {
        /// CSV: subject,sessionIndex,rep then H.*,DD.*,UD.* columns.
        #[arg(long)]
        data: PathBuf,
        /// Genuine training repetitions per subject (the first ones).
        #[arg(long, default_value_t = 200)]
        train: usize,
        /// First repetitions of every other subject used as impostor attempts.
        #[arg(long, default_value_t = 5)]
        impostor_reps: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Continuous authentication: keystroke (CMU, Aalto), mouse (Balabit), touch
    /// (Touchalytics) and fused keystroke + mouse action streams through the trust model
    /// (ANGA, ANIA, undetected impostors; trust tuned on one half of the users).
    Continuous(eval_continuous::ContinuousArgs),
    /// The PAM step-up decision over many people: enrol each Aalto participant through
    /// habitusd's core, replay their own and others' typing into fresh sessions, count
    /// how often the strong factor is skipped.
    Stepup {
        /// The aalto-136m-subset folder (or its keystrokes/ folder).
        #[arg(long, default_value = "../shared/datasets/aalto-136m-subset")]
        data: PathBuf,
        /// Participant files to pass over first (id order), e.g. to hold out a tuning set.
        #[arg(long, default_value_t = 0)]
        skip: usize,
        /// Participants enrolled (after --skip, in id order).
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// Other participants typing into each user's session.
        #[arg(long, default_value_t = 10)]
        impostors: usize,
        /// Further participants whose typing builds the population model (0: none,
        /// as on a fresh installation).
        #[arg(long, default_value_t = 0)]
        population: usize,
        /// habitusd configuration to evaluate (default: the built-in defaults).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Directory holding libhabitus_keystroke.so (default: next to this executable).
        #[arg(long, value_name = "DIR")]
        plugins: Option<PathBuf>,
    },
    /// Free-text keystroke on the Aalto 136M-keystrokes files (TypeNet-style protocol).
    Aalto {
        /// The aalto-136m-subset folder (or its keystrokes/ folder).
        #[arg(long, default_value = "../shared/datasets/aalto-136m-subset")]
        data: PathBuf,
        /// Gallery sizes (enrolment sentences); repeat or comma-separate.
        #[arg(long, value_delimiter = ',', default_values_t = vec![1, 2, 5, 10])]
        gallery: Vec<usize>,
        #[command(flatten)]
        common: Common,
    },
    /// Mouse dynamics on the Balabit Mouse Dynamics Challenge data (challenge protocol:
    /// ROC AUC over the labelled test sessions; closed and open set).
    Balabit(eval_mouse::BalabitArgs),
    /// Touch strokes on the Touchalytics feature matrix (Frank et al. 2013): intra-session,
    /// inter-session and inter-week EER for 1 and 11 strokes.
    Touchalytics(eval_touch::TouchalyticsArgs),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Load one plugin library, print its descriptor (or why it cannot be loaded) and run
    /// the conformance kit on it; exit status 1 when a check fails.
    Check {
        /// Path of the plugin library (.so).
        path: PathBuf,
        /// Warnings (time over budget, no feature interface, unnoticed bit flips, ...)
        /// fail too.
        #[arg(long)]
        strict: bool,
        /// The plugin's TOML settings to construct it with (default: its defaults).
        #[arg(long, value_name = "TOML", default_value = "")]
        config: String,
    },
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
struct Bar(Mutex<Option<ProgressBar>>);

impl Progress for Bar {
    fn start(&self, label: &str, total: usize) {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>24} [{bar:40}] {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar);
    }
    fn advance(&self) {
        if let Some(b) = self.0.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            b.inc(1);
        }
    }
    fn finish(&self) {
        if let Some(b) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            b.finish_and_clear();
        }
    }
}

fn keystroke_plugin(common: &Common) -> Result<PluginLibrary> {
    let dirs = match &common.plugins {
        Some(d) => {
            if !d.is_dir() {
                bail!("plugin directory {} does not exist", d.display());
            }
            vec![d.clone()]
        }
        None => default_plugin_dirs(),
    };
    find_plugin(&dirs, "keystroke").map_err(anyhow::Error::msg)
}

fn dataset_missing(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "data set not found at {} (the benchmarks live in ../shared/datasets; see README.md, or pass --data PATH)",
        path.display()
    )
}

fn emit(report: &EvalReport, common: &Common) -> Result<()> {
    if let Some(path) = &common.plot {
        std::fs::write(path, plot::det_svg(report))
            .with_context(|| format!("cannot write plot {}", path.display()))?;
    }
    if common.json {
        outln!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    outln!("{}", report.dataset);
    outln!("protocol: {}", report.protocol);
    outln!();
    outln!(
        "{:<28} {:>18} {:>22}",
        "detector",
        "mean EER (sd)",
        "zero-miss FAR (sd)"
    );
    outln!("{}", "-".repeat(70));
    for r in &report.results {
        outln!(
            "{:<28} {:>9.4} ({:.4}) {:>13.4} ({:.4})",
            r.detector,
            r.eer_mean,
            r.eer_sd,
            r.zero_miss_far_mean,
            r.zero_miss_far_sd
        );
    }
    outln!();
    for r in &report.results {
        outln!("{}: {}", r.detector, r.variant);
    }
    for n in &report.notes {
        outln!("note: {n}");
    }
    if let Some(path) = &common.plot {
        outln!("DET curves written to {}", path.display());
    }
    Ok(())
}

fn run_fixed_text(
    name: &str,
    data: &Path,
    protocol: fixed_text::Protocol,
    common: &Common,
) -> Result<()> {
    let data = if data.is_dir() {
        data.join("DSL-StrongPasswordData.csv")
    } else {
        data.to_path_buf()
    };
    if !data.exists() {
        return Err(dataset_missing(&data));
    }
    let library = keystroke_plugin(common)?;
    let threads = common.threads.unwrap_or_else(eval::default_threads);
    let parsed = fixed_text::load(&data)?;
    let bar = Bar(Mutex::new(None));
    let report = fixed_text::run(&library, name, &parsed, protocol, threads, &bar)?;
    emit(&report, common)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Eval(EvalCommand::Cmu { data, common }) => run_fixed_text(
            "CMU keystroke (DSL-StrongPasswordData)",
            &data,
            fixed_text::Protocol::CMU,
            &common,
        ),
        Command::Eval(EvalCommand::FixedText {
            data,
            train,
            impostor_reps,
            common,
        }) => {
            if train < 2 || impostor_reps < 1 {
                bail!("--train must be at least 2 and --impostor-reps at least 1");
            }
            let name = format!("fixed text ({})", data.display());
            run_fixed_text(
                &name,
                &data,
                fixed_text::Protocol {
                    train,
                    impostor_reps,
                },
                &common,
            )
        }
        Command::Eval(EvalCommand::Balabit(args)) => eval_mouse::run(args),
        Command::Eval(EvalCommand::Touchalytics(args)) => eval_touch::run(args),
        Command::Eval(EvalCommand::Aalto {
            data,
            gallery,
            common,
        }) => {
            if !data.exists() {
                return Err(dataset_missing(&data));
            }
            let library = keystroke_plugin(&common)?;
            let threads = common.threads.unwrap_or_else(eval::default_threads);
            let bar = Bar(Mutex::new(None));
            let parsed = aalto::load(&data, threads, &bar)?;
            let report = aalto::run(&library, &parsed, &gallery, threads, &bar)?;
            emit(&report, &common)
        }
        Command::Eval(EvalCommand::Continuous(args)) => {
            let bar = Bar(Mutex::new(None));
            eval_continuous::run(args, &bar)
        }
        Command::Eval(EvalCommand::Stepup {
            data,
            skip,
            users,
            impostors,
            population,
            config,
            json,
            plugins,
        }) => {
            if !data.exists() {
                return Err(dataset_missing(&data));
            }
            // Without --config the built-in defaults (not /etc's file): the evaluation
            // must not depend on the machine it runs on.
            let mut config = match config {
                Some(path) => admin::load_config(Some(&path))?,
                None => habitus::config::Config::default(),
            };
            config.drift.action = habitus::config::DriftAction::None;
            let plugin_dir = match plugins {
                Some(d) => d,
                None => std::env::current_exe()?
                    .parent()
                    .map(Path::to_path_buf)
                    .context("executable directory")?,
            };
            habitus::core::log::set_quiet(true);
            let bar = Bar(Mutex::new(None));
            let r = habitus::stepup::run(
                &data,
                &plugin_dir,
                config,
                habitus::stepup::Protocol {
                    skip,
                    users,
                    impostors,
                    population,
                },
                &bar,
            )?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                outln!("PAM step-up on Aalto: {} users enrolled from sentences 1-10, sessions replay sentences 11-15", r.users);
                outln!(
                    "population model: {} other participants",
                    r.population_users
                );
                outln!(
                    "genuine sessions that skip the strong factor:  {:>5} / {:<5} = {:.3}",
                    r.genuine_skipped,
                    r.genuine_sessions,
                    r.skip_rate()
                );
                outln!(
                    "impostor sessions that skip it (false skips):  {:>5} / {:<5} = {:.3}",
                    r.impostor_skipped,
                    r.impostor_sessions,
                    r.false_skip_rate()
                );
                outln!("genuine final states:  {:?}", r.genuine_states);
                outln!("impostor final states: {:?}", r.impostor_states);
            }
            Ok(())
        }
        Command::Status { user, daemon } => admin::status(user, &daemon),
        Command::Enroll {
            user,
            replay,
            replace,
            daemon,
        } => admin::enroll(user, &replay, replace, &daemon),
        Command::Ingest {
            user,
            replay,
            speed,
            daemon,
        } => admin::ingest(user, &replay, speed, &daemon),
        Command::Forget { user, daemon } => admin::forget(user, &daemon),
        Command::Export { user, daemon } => admin::export(user, &daemon),
        Command::Replay(command) => admin::replay(command),
        Command::Population(command) => admin::population(command),
        Command::Demo(args) => demo::run(args),
        Command::Plugin(PluginCommand::Check {
            path,
            strict,
            config,
        }) => {
            let lib = PluginLibrary::load(&path)?;
            let d = &lib.descriptor;
            outln!("plugin      {}", d.name);
            outln!("file        {}", lib.path.display());
            outln!("modality    {}", d.modality);
            outln!("version     {}", d.version);
            outln!("interface   {}", habitus_plugin::INTERFACE_VERSION);
            outln!("about       {}", d.description);
            let kinds: Vec<String> = d.event_kinds.iter().map(|k| k.to_string()).collect();
            outln!("events      {}", kinds.join(", "));
            let features: Vec<&str> = d.feature_names.iter().map(|f| f.as_str()).collect();
            outln!(
                "features    {}",
                if features.is_empty() {
                    "(none)".to_string()
                } else {
                    features.join(", ")
                }
            );
            outln!();
            let options = conformance::Options::with_config(config);
            let report = conformance::run(&LoadedPlugin(lib), &options);
            outln!("{}", report.table(strict));
            let failed = report.failures(strict).len();
            if failed > 0 {
                bail!(
                    "{}: {failed} conformance check{} failed",
                    path.display(),
                    if failed == 1 { "" } else { "s" }
                );
            }
            Ok(())
        }
    }
}

/// The conformance kit's view of a library loaded by the engine: every call goes through
/// the same `PluginInstance` habitusd uses.
struct LoadedPlugin(PluginLibrary);

impl conformance::Subject for LoadedPlugin {
    fn descriptor(&self) -> Result<PluginDescriptor, PluginError> {
        Ok(self.0.descriptor.clone())
    }
    fn instantiate(&self, config: &str) -> Result<Box<dyn conformance::Instance>, PluginError> {
        let instance = unhost(self.0.instantiate(config))?;
        Ok(Box::new(LoadedInstance(instance)))
    }
}

struct LoadedInstance(PluginInstance);

/// The plugin's own error, or the score the host refused (the kit reports it itself).
fn plugin_error(e: HostError) -> Result<PluginError, Score> {
    match e {
        HostError::Plugin { error, .. } => Ok(error),
        HostError::InvalidScore { score, .. } => Err(score),
    }
}

fn unhost<T>(result: Result<T, HostError>) -> Result<T, PluginError> {
    result.map_err(|e| {
        plugin_error(e)
            .unwrap_or_else(|s| PluginError::invalid_input(format!("invalid score {s:?}")))
    })
}

fn unhost_score(result: Result<Score, HostError>) -> Result<Score, PluginError> {
    match result {
        Ok(s) => Ok(s),
        Err(e) => match plugin_error(e) {
            Ok(error) => Err(error),
            Err(score) => Ok(score),
        },
    }
}

impl conformance::Instance for LoadedInstance {
    fn descriptor(&self) -> PluginDescriptor {
        self.0.descriptor().clone()
    }
    fn build_population(&self, users: &[RVec<RVec<Event>>]) -> Result<Vec<u8>, PluginError> {
        unhost(self.0.build_population(users))
    }
    fn enroll(&self, population: &[u8], windows: &[RVec<Event>]) -> Result<Vec<u8>, PluginError> {
        unhost(self.0.enroll(population, windows))
    }
    fn score(&self, profile: &[u8], window: &[Event]) -> Result<Score, PluginError> {
        unhost_score(self.0.score(profile, window))
    }
    fn adapt(
        &self,
        profile: &[u8],
        window: &[Event],
        score: Score,
    ) -> Result<Vec<u8>, PluginError> {
        unhost(self.0.adapt(profile, window, score))
    }
    fn extract(&self, window: &[Event]) -> Result<Vec<f64>, PluginError> {
        unhost(self.0.extract(window))
    }
    fn build_population_features(&self, users: &[RVec<RVec<f64>>]) -> Result<Vec<u8>, PluginError> {
        unhost(self.0.build_population_features(users))
    }
    fn enroll_features(
        &self,
        population: &[u8],
        samples: &[RVec<f64>],
    ) -> Result<Vec<u8>, PluginError> {
        unhost(self.0.enroll_features(population, samples))
    }
    fn score_features(&self, profile: &[u8], sample: &[f64]) -> Result<Score, PluginError> {
        unhost_score(self.0.score_features(profile, sample))
    }
    fn score_prepared(
        &self,
        profile: &[u8],
        windows: &[Vec<Event>],
    ) -> Result<Vec<Result<Score, PluginError>>, PluginError> {
        let prepared = unhost(self.0.prepare(profile))?;
        Ok(windows
            .iter()
            .map(|w| unhost_score(prepared.score(w)))
            .collect())
    }
}

/// Why a report could not be printed.
fn stdout_error(e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot write to standard output: {e}")
}

/// Restores the default action of SIGPIPE (Rust ignores it): `habitus … | head` then
/// ends quietly when `head` stops reading, like any other Unix tool, instead of
/// panicking on the failed write. Requests to habitusd are sent with MSG_NOSIGNAL
/// (`habitus::client`), so a daemon that hangs up is still an error, not a silent exit.
fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    default_sigpipe();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Demo(_)) {
        // The demo writes to pamtester's standard input: a pamtester that exits early
        // must not kill the demo (and its habitusd) without a word.
        // SAFETY: as above.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("habitus: {e:#}");
            ExitCode::FAILURE
        }
    }
}
