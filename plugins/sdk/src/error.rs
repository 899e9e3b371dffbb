//! Errors that cross the plugin boundary.

use abi_stable::{std_types::RString, StableAbi};

/// What went wrong, so the host knows what to do about it.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorKind(pub u8);

impl ErrorKind {
    /// The TOML config given to the constructor was rejected: fix the config.
    pub const INVALID_CONFIG: ErrorKind = ErrorKind(0);
    /// The window or samples were malformed (out-of-order, non-finite, absurd): skip them.
    pub const INVALID_INPUT: ErrorKind = ErrorKind(1);
    /// The profile or population blob is not one this plugin can read (another plugin's,
    /// truncated, corrupted, or a newer format): re-enrol.
    pub const INVALID_PROFILE: ErrorKind = ErrorKind(2);
    /// Not enough evidence to enrol or score: collect more.
    pub const NOT_ENOUGH_DATA: ErrorKind = ErrorKind(3);
    /// The plugin panicked; the SDK caught it. The plugin is buggy: report it.
    pub const PANICKED: ErrorKind = ErrorKind(4);
    /// The operation is not supported by this plugin (e.g. feature-level scoring).
    pub const UNSUPPORTED: ErrorKind = ErrorKind(5);

    pub fn name(self) -> &'static str {
        match self {
            Self::INVALID_CONFIG => "invalid config",
            Self::INVALID_INPUT => "invalid input",
            Self::INVALID_PROFILE => "invalid profile",
            Self::NOT_ENOUGH_DATA => "not enough data",
            Self::PANICKED => "plugin panicked",
            Self::UNSUPPORTED => "unsupported",
            _ => "unknown error",
        }
    }
}

/// An error returned by a plugin: a kind and a one-line human message.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct PluginError {
    pub kind: ErrorKind,
    pub message: RString,
}

impl PluginError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> PluginError {
        PluginError {
            kind,
            message: RString::from(message.into()),
        }
    }
    pub fn invalid_config(message: impl Into<String>) -> PluginError {
        Self::new(ErrorKind::INVALID_CONFIG, message)
    }
    pub fn invalid_input(message: impl Into<String>) -> PluginError {
        Self::new(ErrorKind::INVALID_INPUT, message)
    }
    pub fn invalid_profile(message: impl Into<String>) -> PluginError {
        Self::new(ErrorKind::INVALID_PROFILE, message)
    }
    pub fn not_enough_data(message: impl Into<String>) -> PluginError {
        Self::new(ErrorKind::NOT_ENOUGH_DATA, message)
    }
    pub fn unsupported(message: impl Into<String>) -> PluginError {
        Self::new(ErrorKind::UNSUPPORTED, message)
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

impl std::error::Error for PluginError {}
