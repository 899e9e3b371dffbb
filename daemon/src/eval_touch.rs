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
    /// Also run every scenario closed set, the paper's setting: populations (negatives)
    /// from the training documents of every other user, impostors among them (reported
    /// as separate rows; the main rows are open set).
    #[arg(long)]
    closed_set: bool,
    /// Run only these scenarios (`intra-session`, `inter-session`, `inter-week`;
    /// repeat or separate by commas). Default: all three.
    #[arg(long, value_delimiter = ',')]
    scenario: Vec<String>,
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
    let scenarios = if args.scenario.is_empty() {
        touchalytics::Scenario::ALL.to_vec()
    } else {
        args.scenario
            .iter()
            .map(|name| {
                touchalytics::Scenario::ALL
                    .into_iter()
                    .find(|s| s.name() == name.trim())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "unknown scenario {name:?}: expected intra-session, inter-session or inter-week"
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?
    };
    if !args.data.exists() {
        return Err(dataset_missing(&args.data));
    }
    let library = touch_plugin(&args.common)?;
    let data = touchalytics::load(&args.data)?;
    let options = touchalytics::Options {
        scenarios,
        device_variant: !args.no_device_variant,
        closed_set_variant: args.closed_set,
        users: None,
        threads: args.common.threads.unwrap_or_else(eval::default_threads),
    };
    let bar = Bar(Mutex::new(None));
    let report = touchalytics::run(&library, &data, &options, &bar)?;
    emit(&report, &args.common)
}
