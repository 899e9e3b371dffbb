//! `habitus eval balabit`: mouse dynamics on the Balabit Mouse Dynamics Challenge data,
//! through the loaded mouse plugin.

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use clap::Args;
use habitus_engine::eval::{self, balabit};
use habitus_engine::loader::{default_plugin_dirs, find_plugin};
use habitus_engine::PluginLibrary;

use crate::{dataset_missing, plot, Bar, Common};

#[derive(Args)]
pub struct BalabitArgs {
    /// The balabit-mouse folder (training_files/, test_files/, public_labels.csv).
    #[arg(long, default_value = "../shared/datasets/balabit-mouse")]
    data: PathBuf,
    /// Run the training-only validation protocol instead (held-out training sessions;
    /// for choosing hyper-parameters without touching the test sessions).
    #[arg(long)]
    validation: bool,
    /// Validation rounds: round r holds out each user's r-th last training session.
    #[arg(long, default_value_t = 3, value_name = "N")]
    validation_rounds: usize,
    /// Build only the closed-set profiles (10 instead of 100; for quick comparisons).
    #[arg(long)]
    closed_set_only: bool,
    /// Mouse plugin configuration (TOML file) to evaluate (default: the plugin's defaults).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

fn mouse_plugin(common: &Common) -> Result<PluginLibrary> {
    let dirs = match &common.plugins {
        Some(d) => {
            if !d.is_dir() {
                bail!("plugin directory {} does not exist", d.display());
            }
            vec![d.clone()]
        }
        None => default_plugin_dirs(),
    };
    find_plugin(&dirs, "mouse").map_err(anyhow::Error::msg)
}

pub fn run(args: BalabitArgs) -> Result<()> {
    if !args.data.join("training_files").is_dir() {
        return Err(dataset_missing(&args.data));
    }
    let config = match &args.config {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => String::new(),
    };
    let library = mouse_plugin(&args.common)?;
    let threads = args.common.threads.unwrap_or_else(eval::default_threads);
    let bar = Bar(Mutex::new(None));
    let open_set = !args.closed_set_only;
    let data = balabit::load(&args.data, threads, &bar)?;
    let report = if args.validation {
        balabit::run_validation(
            &library,
            &data,
            &config,
            open_set,
            args.validation_rounds,
            threads,
            &bar,
        )?
    } else {
        balabit::run(&library, &data, &config, open_set, threads, &bar)?
    };
    emit(&report, &args.common)
}

fn emit(report: &balabit::BalabitReport, common: &Common) -> Result<()> {
    if let Some(path) = &common.plot {
        std::fs::write(path, plot::det_svg(&report.det_report()))
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
        "{:<48} {:>7} {:>16} {:>8} {:>8} {:>6} {:>9}",
        "variant",
        "actions",
        "legal / illegal",
        "AUC",
        "EER",
        "Cllr",
        "AUC/acct"
    );
    outln!("{}", "-".repeat(108));
    for r in &report.rows {
        outln!(
            "{:<48} {:>7} {:>16} {:>8.4} {:>7.2}% {:>6.3} {:>9.4}",
            r.variant,
            r.actions,
            format!("{} / {}", r.genuine, r.impostor),
            r.auc,
            r.eer * 100.0,
            r.cllr,
            r.auc_per_account
        );
    }
    outln!("AUC/acct: the mean of each account's own AUC (its legal against its illegal runs)");
    outln!();
    outln!(
        "median actions per session: {}",
        report.actions_per_session_median
    );
    for n in &report.notes {
        outln!("note: {n}");
    }
    if let Some(path) = &common.plot {
        outln!("DET curves written to {}", path.display());
    }
    Ok(())
}
