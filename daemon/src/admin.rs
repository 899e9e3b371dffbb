//! The `habitus` subcommands that talk to habitusd, and replay-file conversion.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use habitus::client::call;
use habitus::config::{Config, ConfigError, DEFAULT_CONFIG};
use habitus::replay;
use habitus_engine::eval::aalto;
use habitus_protocol::{RequestBody, ResponseBody, UserStatus, DEFAULT_SOCKET};

#[derive(Args, Clone)]
pub struct DaemonArgs {
    /// habitusd's socket.
    #[arg(long, env = "HABITUS_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print habitusd's JSON reply instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Enrolment can take a moment for long replays; everything else is instant.
const TIMEOUT: Duration = Duration::from_secs(60);

fn ask(daemon: &DaemonArgs, body: RequestBody) -> Result<ResponseBody> {
    let reply = call(&daemon.socket, body, TIMEOUT)?;
    if daemon.json {
        outln!("{}", serde_json::to_string_pretty(&reply)?);
    }
    Ok(reply)
}

fn print_done(reply: ResponseBody, daemon: &DaemonArgs) -> Result<()> {
    match reply {
        ResponseBody::Done { message } => {
            if !daemon.json {
                outln!("{message}");
            }
            Ok(())
        }
        other => bail!("unexpected reply from habitusd: {other:?}"),
    }
}

pub fn print_status(users: &[UserStatus]) -> Result<()> {
    if users.is_empty() {
        outln!("no users");
    }
    for u in users {
        let a = &u.assessment;
        outln!(
            "{}: {:?}, trust {:.1}, fused LLR {:+.2}, evidence {}",
            u.user,
            a.state,
            a.trust,
            a.fused_llr,
            match a.evidence_age_ms {
                Some(ms) => format!("{:.1} s old", ms as f64 / 1000.0),
                None => "none yet".to_string(),
            }
        );
        if !u.sessions.is_empty() {
            outln!("  sessions: {}", u.sessions.join(", "));
        }
        if u.forgotten {
            outln!(
                "  forgotten: nothing is learned until `habitus enroll {}`",
                u.user
            );
        }
        for m in &a.modalities {
            let progress = if m.enrolled {
                format!("enrolled ({} windows)", m.enrol_windows)
            } else if u.forgotten {
                "not learning".to_string()
            } else {
                format!("learning {}/{} windows", m.enrol_windows, m.enrol_needed)
            };
            let last = m
                .last_llr
                .map(|l| format!(", last window LLR {l:+.2}"))
                .unwrap_or_default();
            outln!("  {}: {progress}{last}", m.plugin);
        }
    }
    Ok(())
}

pub fn status(user: Option<String>, daemon: &DaemonArgs) -> Result<()> {
    match ask(daemon, RequestBody::Status { user })? {
        ResponseBody::Status { users } => {
            if !daemon.json {
                print_status(&users)?;
            }
            Ok(())
        }
        other => bail!("unexpected reply from habitusd: {other:?}"),
    }
}

pub fn enroll(user: String, file: &Path, replace: bool, daemon: &DaemonArgs) -> Result<()> {
    let events = replay::read(file)?;
    if !replace {
        // The store's export lists the profiles a user has (and works for any name).
        let existing = match call(
            &daemon.socket,
            RequestBody::Export { user: user.clone() },
            TIMEOUT,
        )? {
            ResponseBody::Export { data, .. } => existing_profiles(&data),
            other => bail!("unexpected reply from habitusd: {other:?}"),
        };
        if !existing.is_empty() {
            bail!(
                "{user} already has a profile ({}); enrolling again replaces it with one built from {} alone: pass --replace if that is meant",
                existing.join(", "),
                file.display()
            );
        }
    }
    let no_account = habitus::peer::user_uid(&user).is_none();
    print_done(
        ask(
            daemon,
            RequestBody::Enroll {
                user: user.clone(),
                events,
            },
        )?,
        daemon,
    )?;
    if no_account {
        // Stored all the same (a replay, a test, a user of another machine's directory
        // that is not reachable now), but worth knowing before counting on it.
        eprintln!(
            "warning: {user} has no account on this machine: where systemd-logind runs, pam_habitus gets no verdict for a name that is not an account (docs/habitusd.md, \"The verdict is seat0's\")"
        );
    }
    Ok(())
}

/// "plugin (N windows)" for every profile in a store export.
fn existing_profiles(export: &serde_json::Value) -> Vec<String> {
    export["profiles"]
        .as_array()
        .map(|profiles| {
            profiles
                .iter()
                .map(|p| {
                    let plugin = p["plugin"].as_str().unwrap_or("?");
                    match p["windows"].as_u64() {
                        Some(n) => format!("{plugin}, {n} windows"),
                        None => plugin.to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn ingest(user: String, file: &Path, speed: f64, daemon: &DaemonArgs) -> Result<()> {
    // Below 1/1000 a second of typing takes over a quarter of an hour to send: a typo.
    if !(speed == 0.0 || (1e-3..=1e6).contains(&speed)) {
        bail!("--speed {speed}: must be 0 (as fast as possible) or within 0.001..=1000000 (1 = the recorded pace)");
    }
    // The whole file is checked (times in range and in order) before anything is sent.
    let events = replay::read(file)?;
    // Batches of about a second of typing, paced like the recording when speed > 0.
    let mut accepted = 0;
    for batch in events.chunks(20) {
        // A refusal after the first batch leaves the earlier ones ingested: say so
        // (habitusd's "nothing of this batch was ingested" speaks of the refused one).
        let reply = call(
            &daemon.socket,
            RequestBody::Ingest {
                user: user.clone(),
                events: batch.to_vec(),
            },
            TIMEOUT,
        )
        .with_context(|| {
            format!(
                "{}: events {}-{} not ingested; the {accepted} events before them were",
                file.display(),
                accepted + 1,
                accepted + batch.len()
            )
        })?;
        if !matches!(reply, ResponseBody::Done { .. }) {
            bail!(
                "unexpected reply from habitusd after {accepted} events were ingested: {reply:?}"
            );
        }
        accepted += batch.len();
        if speed > 0.0 {
            let span = batch[batch.len() - 1].t_us - batch[0].t_us;
            std::thread::sleep(Duration::from_micros((span as f64 / speed) as u64));
        }
    }
    if daemon.json {
        // Ingest answers per batch, so there is no single reply of habitusd's to print.
        let summary = serde_json::json!({ "user": user, "events": accepted });
        outln!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        outln!("{accepted} events sent for {user}");
    }
    Ok(())
}

pub fn forget(user: String, daemon: &DaemonArgs) -> Result<()> {
    print_done(ask(daemon, RequestBody::Forget { user })?, daemon)
}

pub fn export(user: String, daemon: &DaemonArgs) -> Result<()> {
    let json = daemon.json;
    let quiet = DaemonArgs {
        json: false,
        ..daemon.clone()
    };
    match ask(&quiet, RequestBody::Export { user })? {
        ResponseBody::Export { data, .. } => {
            // Export is JSON either way.
            let _ = json;
            outln!("{}", serde_json::to_string_pretty(&data)?);
            Ok(())
        }
        other => bail!("unexpected reply from habitusd: {other:?}"),
    }
}

#[derive(Subcommand)]
pub enum ReplayCommand {
    /// One participant of the Aalto 136M-keystrokes data set (first 50 keystrokes of
    /// each chosen sentence, sentences laid end to end).
    Aalto {
        /// A participant file (`<ID>_keystrokes.txt[.gz]`).
        #[arg(long)]
        file: PathBuf,
        /// Sentences to keep, 1-based and inclusive, e.g. `1-10` or `11-15`.
        #[arg(long, default_value = "1-15")]
        sentences: String,
        #[arg(long, short)]
        out: PathBuf,
    },
    /// A synthetic typist (for trying things out without a data set).
    Synthetic {
        #[arg(long, default_value_t = 500)]
        keystrokes: usize,
        /// Mean key hold, ms.
        #[arg(long, default_value_t = 95.0)]
        hold_ms: f64,
        /// Mean time between key presses, ms.
        #[arg(long, default_value_t = 190.0)]
        gap_ms: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, short)]
        out: PathBuf,
    },
}

/// `"a-b"` (1-based, inclusive) or `"a"` → a 0-based range.
pub fn parse_range(text: &str, max: usize) -> Result<std::ops::Range<usize>> {
    let (a, b) = text.split_once('-').unwrap_or((text, text));
    let (a, b): (usize, usize) = (
        a.trim().parse().context("sentence range: not a number")?,
        b.trim().parse().context("sentence range: not a number")?,
    );
    if a < 1 || b < a || b > max {
        bail!("sentence range {text} must lie within 1-{max}");
    }
    Ok(a - 1..b)
}

pub fn replay(command: ReplayCommand) -> Result<()> {
    match command {
        ReplayCommand::Aalto {
            file,
            sentences,
            out,
        } => {
            let range = parse_range(&sentences, aalto::SENTENCES)?;
            let events = replay::from_aalto(&file, range)?;
            let header = format!(
                "habitus replay: {} sentences {sentences} (Aalto 136M keystrokes; research use, cite Dhakal et al. 2018)",
                file.display()
            );
            replay::write(&out, &header, &events)
                .with_context(|| format!("writing {}", out.display()))?;
            outln!("{} events written to {}", events.len(), out.display());
        }
        ReplayCommand::Synthetic {
            keystrokes,
            hold_ms,
            gap_ms,
            seed,
            out,
        } => {
            replay::check_synthetic(keystrokes, hold_ms, gap_ms).map_err(anyhow::Error::msg)?;
            let events = replay::synthetic_typist(keystrokes, hold_ms, gap_ms, seed);
            let header = format!(
                "habitus replay: synthetic typist hold {hold_ms} ms, gap {gap_ms} ms, seed {seed}"
            );
            replay::write(&out, &header, &events)
                .with_context(|| format!("writing {}", out.display()))?;
            outln!("{} events written to {}", events.len(), out.display());
        }
    }
    Ok(())
}

/// habitusd's configuration for a command that takes `--config FILE`. A file named on
/// the command line must exist: falling back to the defaults there would write to the
/// default store and secrets on a typo. Only the default path may be missing (a fresh
/// installation runs on the built-in defaults, as habitusd does).
pub fn load_config(explicit: Option<&Path>) -> Result<Config> {
    let path = match explicit {
        Some(path) => path,
        None => {
            let default = Path::new(DEFAULT_CONFIG);
            if !default.exists() {
                eprintln!("note: {DEFAULT_CONFIG} not found: using the default configuration");
                return Ok(Config::default());
            }
            default
        }
    };
    // The error's own text already carries the OS error: formatting it as a chain would
    // print that twice.
    Config::load(path).map_err(|e| match e {
        ConfigError::Read { .. } if explicit.is_some() => {
            anyhow::anyhow!("{e} (check the --config path)")
        }
        e => anyhow::anyhow!("{e}"),
    })
}

#[derive(Subcommand)]
pub enum PopulationCommand {
    /// Build the population model from Aalto participants and install it in habitusd's
    /// store (root; works while habitusd runs). Later enrolments use it; re-enrol
    /// existing users to benefit.
    Build {
        /// The aalto-136m-subset folder (or its keystrokes/ folder).
        #[arg(long)]
        aalto: PathBuf,
        /// Participants to learn from (the first ones in id order).
        #[arg(long, default_value_t = 200)]
        participants: usize,
        /// habitusd's configuration (for the store, secrets and plugin settings); default:
        /// /etc/habitus/habitusd.toml, or the built-in defaults when that is missing.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

pub fn population(command: PopulationCommand) -> Result<()> {
    let PopulationCommand::Build {
        aalto,
        participants,
        config,
    } = command;
    let config = load_config(config.as_deref())?;
    let secrets = habitus_engine::Secrets::load_or_create(&config.secrets)?;
    let mut store = habitus_engine::ProfileStore::open(&config.database, &secrets)?;
    let files = habitus::population::aalto_files(&aalto)?;
    let people = habitus::population::aalto_people(&files, participants)?;
    let dirs = match &config.plugin_dir {
        Some(d) => vec![d.clone()],
        None => habitus_engine::loader::default_plugin_dirs(),
    };
    for (name, pc) in &config.plugins {
        let library =
            habitus_engine::loader::find_plugin(&dirs, name).map_err(anyhow::Error::msg)?;
        let plugin = library.instantiate(&pc.settings)?;
        let window_events = config
            .session
            .window_events
            .get(name)
            .copied()
            .unwrap_or(50);
        let blob =
            habitus::population::build(&plugin, &people, &secrets.key_hasher(), window_events)
                .with_context(|| format!("building the {name} population"))?;
        store.put_population(name, &blob)?;
        outln!(
            "{name}: population from {} participants installed in {}",
            people.len(),
            config.database.display()
        );
    }
    Ok(())
}
