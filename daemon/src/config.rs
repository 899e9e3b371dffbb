//! habitusd's configuration: strict, versioned TOML (`/etc/habitus/habitusd.toml`).
//!
//! Unknown keys are errors (`deny_unknown_fields`), so a misspelt option is reported
//! instead of silently falling back to a default. `version` must be 1; a later release
//! that changes the meaning of a key bumps it and refuses old files with a clear message.
//! Every key has a default, so an empty file (or `version = 1` alone) is a working setup.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use habitus_engine::SessionConfig;
use serde::{Deserialize, Serialize};

/// The configuration version this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// Where habitusd looks for its configuration unless `--config` is given.
pub const DEFAULT_CONFIG: &str = "/etc/habitus/habitusd.toml";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Must be 1.
    pub version: u32,
    /// The unix socket clients connect to. Its directory is created (0755) if missing;
    /// the socket itself is 0666 — who may ask what is decided per request from the
    /// peer's credentials (`SO_PEERCRED`), not by file permissions.
    pub socket: PathBuf,
    /// The SQLite profile store (created 0600).
    pub database: PathBuf,
    /// Installation secrets: the profile encryption key and the key-id hashing secret
    /// (48 bytes, created 0600 on first start; must stay root-only).
    pub secrets: PathBuf,
    /// Directory of modality plugins; default: next to the executable, then
    /// `/usr/lib/habitus/plugins`.
    pub plugin_dir: Option<PathBuf>,
    /// Modality plugins to load, by name, with their settings.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Fusion, trust and window settings of every live session.
    pub session: SessionConfig,
    pub adaptation: AdaptationConfig,
    pub drift: DriftConfig,
    pub input: InputConfig,
    /// Replay files fed as if typed live (demos and tests).
    pub replay: Vec<ReplaySource>,
}

impl Default for Config {
    fn default() -> Config {
        let mut plugins = BTreeMap::new();
        plugins.insert("keystroke".to_string(), PluginConfig::default());
        let session = SessionConfig::default();
        Config {
            version: CONFIG_VERSION,
            socket: PathBuf::from(habitus_protocol::DEFAULT_SOCKET),
            database: PathBuf::from("/var/lib/habitus/profiles.sqlite"),
            secrets: PathBuf::from("/etc/habitus/secrets.key"),
            plugin_dir: None,
            plugins,
            session,
            adaptation: AdaptationConfig::default(),
            drift: DriftConfig::default(),
            input: InputConfig::default(),
            replay: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginConfig {
    /// The plugin's own TOML settings, passed through verbatim (default: empty, i.e. the
    /// plugin's defaults).
    pub settings: String,
    /// Windows collected live before a profile is built (enrolment from `habitus enroll`
    /// uses whatever it is given).
    pub enrol_windows: u32,
}

impl Default for PluginConfig {
    fn default() -> PluginConfig {
        PluginConfig {
            // Empty: the plugin's own defaults (the keystroke plugin's is free text).
            settings: String::new(),
            enrol_windows: 20,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptationConfig {
    /// Most template updates applied per user, plugin and UTC day. Bounding the rate
    /// means an impostor who scores "clearly genuine" by chance cannot walk the profile
    /// towards themselves in one sitting. 0 disables adaptation.
    pub max_per_day: u32,
}

impl Default for AdaptationConfig {
    fn default() -> AdaptationConfig {
        AdaptationConfig { max_per_day: 20 }
    }
}

/// What to do when a user's state enters `Drift`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    pub action: DriftAction,
    /// For `action = "command"`: program and arguments, run without a shell, with
    /// `HABITUS_USER` set. Example: `["loginctl", "lock-sessions"]`.
    pub command: Vec<String>,
}

impl Default for DriftConfig {
    fn default() -> DriftConfig {
        DriftConfig {
            action: DriftAction::Log,
            command: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftAction {
    /// Only a log line (the PAM step-up still happens at the next `sudo`).
    Log,
    /// Run `command`.
    Command,
    /// Nothing at all.
    None,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// Read keyboards, pointers and touchscreens from evdev.
    pub evdev: bool,
    /// Where the `event*` device nodes are (rescanned every 2 s for hot-plug).
    pub evdev_dir: PathBuf,
    /// PAM services whose sessions never take over the local input devices. `sudo` and
    /// `su` open their session for the *target* user (usually root) while the same
    /// person keeps typing: binding the seat to root there would score the user's typing
    /// against root's profile (or none).
    pub ignore_session_services: Vec<String>,
    /// systemd-logind's record of seat0: its `ACTIVE_UID` decides whose session owns the
    /// local devices (fast user switching changes it without any PAM call). When the
    /// file does not exist, the most recent local PAM session owns them.
    pub logind_seat: PathBuf,
    /// systemd-logind's session records (`REMOTE=1` marks SSH sessions): no verdict for
    /// a process in a remote session, nor about a user who has one open.
    pub logind_sessions: PathBuf,
    /// The kernel's active virtual console (`tty1`): a verdict asked for a virtual console
    /// (`login` on `tty3`) is given only for the one in front. Unreadable: no verdict for
    /// any virtual console.
    pub active_vt: PathBuf,
    /// Seconds a user stays "remote" after their last remote logind session was seen
    /// (habitusd looks every 2 s): a job started from an SSH session can outlive it.
    /// 0: only open sessions count.
    pub remote_hold_s: u64,
}

impl Default for InputConfig {
    fn default() -> InputConfig {
        InputConfig {
            evdev: true,
            evdev_dir: PathBuf::from("/dev/input"),
            ignore_session_services: [
                "sudo",
                "sudo-i",
                "su",
                "su-l",
                "runuser",
                "runuser-l",
                // OpenDoas, run0 (systemd 256+), pkexec.
                "doas",
                "systemd-run0",
                "polkit-1",
                // Debian cron, cronie, at.
                "cron",
                "crond",
                "atd",
                "systemd-user",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            logind_seat: PathBuf::from("/run/systemd/seats/seat0"),
            logind_sessions: PathBuf::from("/run/systemd/sessions"),
            active_vt: PathBuf::from("/sys/class/tty/tty0/active"),
            remote_hold_s: 3600,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySource {
    /// Whose behaviour this is.
    pub user: String,
    /// A replay file (JSON lines of events, see `habitus replay`).
    pub file: PathBuf,
    /// 1.0 = recorded pace; 0 = as fast as possible.
    #[serde(default = "one")]
    pub speed: f64,
}

fn one() -> f64 {
    1.0
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // Not named `source`: as the error's source, the OS error would print twice in a
    // chain (`{:#}`), once here and once as the cause.
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Config {
    /// Parses and checks a configuration text. `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.to_string(),
            message,
        };
        let mut config: Config = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        // A `[session.window_events]` table adds to the default sizes rather than
        // replacing them: writing only `mouse = 200` must not move keystroke from its
        // default to the generic fallback without a word.
        for (name, n) in SessionConfig::default().window_events {
            config.session.window_events.entry(name).or_insert(n);
        }
        if config.version != CONFIG_VERSION {
            return Err(invalid(format!(
                "configuration version {} is not supported (this habitusd reads version {CONFIG_VERSION})",
                config.version
            )));
        }
        config.session.validate().map_err(&invalid)?;
        if config.input.remote_hold_s > 7 * 86_400 {
            return Err(invalid(format!(
                "input.remote_hold_s = {}: at most 604800 (a week)",
                config.input.remote_hold_s
            )));
        }
        if config.plugins.is_empty() {
            return Err(invalid("no [plugins.*] table: nothing to measure".into()));
        }
        // A setting for a plugin that is not loaded is a typo (`keystrok = 50`) that
        // would otherwise leave the real plugin on its default without a word. The
        // default window size for keystroke stands even when keystroke is not loaded.
        let default_sizes = Config::default().session.window_events;
        let sized = config
            .session
            .window_events
            .iter()
            .filter(|(name, n)| default_sizes.get(*name) != Some(n))
            .map(|(name, _)| ("session.window_events", name));
        let weighted = config
            .session
            .fusion
            .weights
            .keys()
            .map(|name| ("session.fusion.weights", name));
        if let Some((table, name)) = sized
            .chain(weighted)
            .find(|(_, name)| !config.plugins.contains_key(*name))
        {
            let loaded: Vec<&str> = config.plugins.keys().map(String::as_str).collect();
            return Err(invalid(format!(
                "{table}.{name}: no plugin of that name is configured (configured: {})",
                loaded.join(", ")
            )));
        }
        for (name, p) in &config.plugins {
            if p.enrol_windows == 0 {
                return Err(invalid(format!(
                    "plugins.{name}.enrol_windows must be at least 1"
                )));
            }
        }
        if let Some(gate) = config.session.adapt_min_llr {
            if !gate.is_finite() || gate <= 0.0 {
                return Err(invalid(
                    "session.adapt_min_llr must be a positive number (only clearly genuine windows may adapt)".into(),
                ));
            }
        }
        if config.drift.action == DriftAction::Command && config.drift.command.is_empty() {
            return Err(invalid(
                "drift.action = \"command\" needs drift.command = [\"program\", \"arg\", ...]"
                    .into(),
            ));
        }
        for r in &config.replay {
            if !habitus_protocol::valid_user_name(&r.user) {
                return Err(invalid(format!(
                    "replay user {:?} is not a valid user name",
                    r.user
                )));
            }
            if !r.speed.is_finite() || r.speed < 0.0 {
                return Err(invalid(format!("replay speed {} must be >= 0", r.speed)));
            }
        }
        Ok(config)
    }

    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Config::parse(&text, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::parse("", "t").unwrap(), Config::default());
        assert_eq!(
            Config::parse("version = 1", "t").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../habitusd.toml");
        let c = Config::parse(text, "habitusd.toml").unwrap();
        assert_eq!(c.socket, PathBuf::from("/run/habitus/habitusd.sock"));
        // The example shows the defaults of what it sets.
        let d = Config::default();
        assert_eq!(c.session.idle_reset_s, d.session.idle_reset_s);
        assert_eq!(c.session.other_users, d.session.other_users);
        assert_eq!(
            c.input.ignore_session_services,
            d.input.ignore_session_services
        );
        assert_eq!(c.input.remote_hold_s, d.input.remote_hold_s);
    }

    #[test]
    fn window_sizes_written_add_to_the_defaults() {
        let c = Config::parse(
            "[plugins.keystroke]\n[plugins.mouse]\n[session.window_events]\nmouse = 200",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.session.window_events["mouse"], 200);
        assert_eq!(c.session.window_events["keystroke"], 100);
        let c = Config::parse("[session.window_events]\nkeystroke = 40", "t.toml").unwrap();
        assert_eq!(c.session.window_events["keystroke"], 40);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        for (text, needle) in [
            ("version = 2", "version 2 is not supported"),
            ("sockett = \"/x\"", "unknown field"),
            ("[drift]\naction = \"command\"", "drift.command"),
            ("[drift]\naction = \"explode\"", "unknown variant"),
            ("[plugins.keystroke]\nenrol_windows = 0", "enrol_windows"),
            ("[session]\nadapt_min_llr = -1.0", "adapt_min_llr"),
            ("[session]\ntrusted_min_llr = -1.0", "trusted_min_llr"),
            ("[session]\ntrusted_min_llr = nan", "trusted_min_llr"),
            (
                "[session]\ntrusted_min_llr = 0.0",
                "must be a finite number > 0",
            ),
            ("[session]\nidle_reset_s = 0.0", "idle_reset_s"),
            ("[session]\nidle_reset_s = -5.0", "idle_reset_s"),
            ("[session]\nidle_reset_s = inf", "idle_reset_s"),
            ("[session]\nidle_reset_s = nan", "idle_reset_s"),
            ("[session]\nidle_reset_s = 0.5", "idle_reset_s"),
            ("[session]\nother_users = 65", "other_users"),
            ("[session]\nother_users = -1", "other_users"),
            ("[input]\nremote_hold_s = 999999999", "remote_hold_s"),
            ("[input]\nremote_hold_s = -1", "remote_hold_s"),
            (
                "[session.window_events]\nkeystroke = 0",
                "window_events.keystroke",
            ),
            (
                "[session.window_events]\nkeystroke = 4000000000",
                "within 1..=100000",
            ),
            (
                "[session.window_events]\nkeystrok = 50",
                "session.window_events.keystrok: no plugin of that name",
            ),
            (
                "[session.fusion.weights]\nmouse = 2.0",
                "session.fusion.weights.mouse: no plugin of that name",
            ),
            (
                "[session.fusion.weights]\nkeystroke = 1e308",
                "within 0..=100",
            ),
            ("[session.fusion]\nwindow_s = 1e9", "window_s"),
            ("[session.trust]\nlockout = 99.0\ntrusted = 50.0", "lockout"),
            (
                "[[replay]]\nuser = \"a/b\"\nfile = \"x\"",
                "valid user name",
            ),
            ("version = ", "TOML parse error"),
        ] {
            let e = Config::parse(text, "t.toml").unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(e.starts_with("t.toml"), "{e}");
        }
    }
}
