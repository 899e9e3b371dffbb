//! habitusd and the `habitus` command line.
//!
//! * [`config`]: the strict, versioned TOML configuration.
//! * [`core`]: live sessions, enrolment, adaptation and authorisation (no I/O).
//! * [`server`]: the unix socket, evdev and replay sources around the core.
//! * [`evdev`]: local input devices; [`replay`]: recorded behaviour files.
//! * [`client`]: the blocking client the CLI uses; [`peer`]: `SO_PEERCRED` identities.
//! * [`stepup`]: the step-up evaluation (`habitus eval stepup`); [`pamtest`]: pamtester
//!   under pam_wrapper; [`scratch`]: temporary directories.

pub mod client;
pub mod config;
pub mod core;
pub mod evdev;
pub mod pamtest;
pub mod peer;
pub mod population;
pub mod replay;
pub mod scratch;
pub mod seat;
pub mod server;
pub mod stepup;
