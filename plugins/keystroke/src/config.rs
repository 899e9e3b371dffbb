//! The plugin's TOML config (the string given to the constructor). Unknown keys are
//! refused so a typo cannot silently fall back to a default.

use serde::Deserialize;

use crate::fixed::Detector;
use habitus_plugin::PluginError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// A password or passphrase typed the same way each time; one window = one entry.
    Fixed,
    /// Whatever the user types; statistics per key and per digraph.
    Free,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `fixed` or `free` (default `free`: continuous authentication sees free text).
    pub mode: Mode,
    /// Fixed text only: `habitus` (default) or a reference detector of Killourhy & Maxion
    /// (`euclidean`, `manhattan`, `scaled-manhattan`) for benchmarks.
    pub detector: Detector,
    /// Fixed text: how many of the most recent enrolment windows form the template.
    pub template_windows: usize,
    /// Fixed text: how many first windows of each population user model novice typing.
    pub novice_windows: usize,
    /// Only windows scoring at least this LLR adapt the profile.
    pub adapt_min_llr: f64,
    /// How far one adapting window moves the template (0 = never adapt, 1 = replace).
    pub adapt_rate: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mode: Mode::Free,
            detector: Detector::Habitus,
            template_windows: 50,
            novice_windows: 5,
            adapt_min_llr: 3.0,
            adapt_rate: 0.05,
        }
    }
}

impl Config {
    pub fn parse(text: &str) -> Result<Config, PluginError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            PluginError::invalid_config(format!("keystroke config: {}", e.message()))
        })?;
        if config.template_windows < 2 {
            return Err(PluginError::invalid_config(
                "keystroke config: template_windows must be at least 2",
            ));
        }
        if config.novice_windows < 1 {
            return Err(PluginError::invalid_config(
                "keystroke config: novice_windows must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&config.adapt_rate) {
            return Err(PluginError::invalid_config(
                "keystroke config: adapt_rate must be within [0, 1]",
            ));
        }
        if !config.adapt_min_llr.is_finite() {
            return Err(PluginError::invalid_config(
                "keystroke config: adapt_min_llr must be finite",
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let c = Config::parse("mode = \"fixed\"\ndetector = \"scaled-manhattan\"").unwrap();
        assert_eq!(c.mode, Mode::Fixed);
        assert_eq!(c.detector, Detector::ScaledManhattan);
        let e = Config::parse("detectr = \"habitus\"").unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
        assert!(Config::parse("mode = \"cursive\"").is_err());
        assert!(Config::parse("adapt_rate = 2.0").is_err());
        assert!(Config::parse("template_windows = 1").is_err());
        assert!(Config::parse("this is not toml").is_err());
    }
}
