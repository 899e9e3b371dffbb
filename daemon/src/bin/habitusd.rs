//! `habitusd`: the Habitus daemon. See `habitusd --help` and `daemon/habitusd.toml`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use habitus::config::{Config, DEFAULT_CONFIG};

#[derive(Parser)]
#[command(
    name = "habitusd",
    version,
    about = "Habitus daemon: learns users' behaviour and answers pam_habitus.so"
)]
struct Args {
    /// Configuration file. A missing file at the default path means "all defaults".
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match &args.config {
        Some(path) => Config::load(path),
        None if !std::path::Path::new(DEFAULT_CONFIG).exists() => Ok(Config::default()),
        None => Config::load(std::path::Path::new(DEFAULT_CONFIG)),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("habitusd: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        // The plugins are loaded and given their settings exactly as at start-up; the
        // store and secrets are not touched (the check must not create them).
        if let Err(e) = habitus::server::load_plugins(&config) {
            eprintln!("habitusd: {e:#}");
            return ExitCode::from(2);
        }
        // No SIGPIPE default here (a daemon writing to sockets keeps Rust's "ignore"):
        // a closed or full stdout is reported, not a panic.
        use std::io::Write;
        if let Err(e) = writeln!(std::io::stdout(), "configuration OK") {
            eprintln!("habitusd: cannot write to standard output: {e}");
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    match habitus::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("habitusd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
