//! What a plugin says about itself.

use abi_stable::{
    std_types::{RString, RVec},
    StableAbi,
};

use crate::EventKind;

/// Which behaviour a plugin models. A byte, like [`EventKind`], so that an unknown value
/// from a newer plugin is just "other".
///
/// Third-party modalities use [`Modality::OTHER`] and say what they are in the
/// descriptor's name and description. The host does not interpret the value beyond
/// display: 3–127 are reserved for modalities a later interface version names, 128–254
/// are free for private use.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Modality(pub u8);

impl Modality {
    pub const KEYSTROKE: Modality = Modality(0);
    pub const MOUSE: Modality = Modality(1);
    pub const TOUCH: Modality = Modality(2);
    /// Anything else (scroll rhythm, gait, ...): the descriptor's name says what.
    pub const OTHER: Modality = Modality(255);

    pub fn name(self) -> &'static str {
        match self {
            Self::KEYSTROKE => "keystroke",
            Self::MOUSE => "mouse",
            Self::TOUCH => "touch",
            _ => "other",
        }
    }
}

impl std::fmt::Display for Modality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A plugin's self-description, available without constructing it.
///
/// * `name`: unique, lowercase, `[a-z0-9-]` (e.g. `keystroke`); profiles are stored under it.
/// * `version`: the plugin's own semver version (not the interface version).
/// * `event_kinds`: the kinds the host should route to it; others are never sent.
/// * `feature_names`: the layout of one feature vector for the feature-level entry points
///   (`extract`, `enroll_features`, `score_features`). A plugin whose vector length depends
///   on its input (a fixed-text password of any length) documents the repeating pattern.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct PluginDescriptor {
    pub name: RString,
    pub modality: Modality,
    pub version: RString,
    pub description: RString,
    pub event_kinds: RVec<EventKind>,
    pub feature_names: RVec<RString>,
}

impl PluginDescriptor {
    /// Checks the descriptor against the rules above; the message says which one failed.
    pub fn validate(&self) -> Result<(), String> {
        let name = self.name.as_str();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!(
                "plugin name {name:?} must be 1-64 characters of [a-z0-9-]"
            ));
        }
        let version_ok = {
            let parts: Vec<&str> = self.version.split('.').collect();
            parts.len() == 3
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.parse::<u64>().is_ok())
        };
        if !version_ok {
            return Err(format!(
                "plugin version {:?} is not MAJOR.MINOR.PATCH",
                self.version.as_str()
            ));
        }
        if self.event_kinds.is_empty() {
            return Err("plugin consumes no event kinds".into());
        }
        if let Some(kind) = self.event_kinds.iter().find(|k| !k.is_known()) {
            return Err(format!("plugin declares unknown event kind {kind}"));
        }
        if self.feature_names.iter().any(|n| n.trim().is_empty()) {
            return Err("plugin declares an empty feature name".into());
        }
        Ok(())
    }
}
