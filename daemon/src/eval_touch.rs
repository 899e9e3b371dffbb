//! `habitus eval touchalytics`: touch strokes on the Touchalytics feature matrix, through
//! the loaded touch plugin's feature-level entry points.

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{bail, Result};
use clap::Args;
use habitus_engine::eval::{self, touchalytics};
use habitus_engine::loader::{default_plugin_dirs, find_plugin};
use habitus_engine::PluginLibrary;

use crate::{dataset_missing, emit, Bar, Common};

#[derive(Args)]
pub struct TouchalyticsArgs {
    /// The touchalytics folder (or its featMat.csv).
    #[arg(long, default_value = "../shared/datasets/touchalytics")]
    data: PathBuf,
    /// Skip the extra inter-session run with pressure and area (device-calibrated
    /// features, reported separately from the behaviour-only rows).
    #[arg(long)]
    no_device_variant: bool,
    #[command(flatten)]
    common: Common,
}

fn touch_plugin(common: &Common) -> Result<PluginLibrary> {
    let dirs = match &common.plugins {
        Some(d) => {
            if !d.is_dir() {
                bail!("plugin directory {} does not exist", d.display());
            }
            vec![d.clone()]
        }
        None => default_plugin_dirs(),
    };
    find_plugin(&dirs, "touch").map_err(anyhow::Error::msg)
}

pub fn run(args: TouchalyticsArgs) -> Result<()> {
    if !args.data.exists() {
        return Err(dataset_missing(&args.data));
    }
    let library = touch_plugin(&args.common)?;
    let data = touchalytics::load(&args.data)?;
    let options = touchalytics::Options {
        scenarios: touchalytics::Scenario::ALL.to_vec(),
        device_variant: !args.no_device_variant,
        users: None,
        threads: args.common.threads.unwrap_or_else(eval::default_threads),
    };
    let bar = Bar(Mutex::new(None));
    let report = touchalytics::run(&library, &data, &options, &bar)?;
    emit(&report, &args.common)
}
