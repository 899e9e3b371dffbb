//! The plugin's TOML config (the string given to the constructor). Unknown keys are
//! refused so a typo cannot silently fall back to a default.

use serde::Deserialize;

use habitus_plugin::PluginError;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `extract`/`score` on raw events: device units (pixels) per millimetre of screen,
    /// so features are in millimetres like the Touchalytics data (≈ 10 for a 254 dpi
    /// phone). Irrelevant for the feature-level entry points, which take millimetres.
    pub pixels_per_mm: f64,
    /// Also model mid-stroke pressure and contact area. Off by default: their scale is
    /// the touchscreen's calibration, so across devices they identify the device rather
    /// than the person (see the crate docs); turn on only when the population was
    /// recorded on the same kind of device.
    pub device_features: bool,
    /// Nearest enrolment strokes averaged into the user distance.
    pub neighbours: usize,
    /// Fewest strokes of one type (scrolling or horizontal) to model that type.
    pub min_enrol_strokes: usize,
    /// Most recent strokes of one type kept in a profile.
    pub max_template_strokes: usize,
    /// Only windows scoring at least this LLR adapt the profile.
    pub adapt_min_llr: f64,
    /// Most strokes one adapting window may add to the profile.
    pub adapt_max_strokes: usize,
    /// Weight of the per-user boosted trees' log-odds added to the k-NN LLR of each
    /// stroke (enrolment against a population only); 0 enrols without trees. 1 was
    /// chosen on the tuning half of Touchalytics (0.5, 1 and 2 tried).
    pub tree_weight: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            pixels_per_mm: 10.0,
            device_features: false,
            neighbours: 5,
            min_enrol_strokes: 20,
            max_template_strokes: 500,
            adapt_min_llr: 3.0,
            adapt_max_strokes: 20,
            tree_weight: 1.0,
        }
    }
}

impl Config {
    pub fn parse(text: &str) -> Result<Config, PluginError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| PluginError::invalid_config(format!("touch config: {}", e.message())))?;
        let bad = |m: &str| Err(PluginError::invalid_config(format!("touch config: {m}")));
        if !(config.pixels_per_mm.is_finite() && config.pixels_per_mm > 0.0) {
            return bad("pixels_per_mm must be a positive number");
        }
        if !(1..=50).contains(&config.neighbours) {
            return bad("neighbours must be within 1..=50");
        }
        if config.min_enrol_strokes < config.neighbours.max(2) {
            return bad("min_enrol_strokes must be at least neighbours (and at least 2)");
        }
        if !(config.min_enrol_strokes..=20_000).contains(&config.max_template_strokes) {
            return bad("max_template_strokes must be within min_enrol_strokes..=20000");
        }
        if !config.adapt_min_llr.is_finite() {
            return bad("adapt_min_llr must be finite");
        }
        if !(config.tree_weight.is_finite() && (0.0..=10.0).contains(&config.tree_weight)) {
            return bad("tree_weight must be within 0..=10");
        }
        if config.adapt_max_strokes > 1000 {
            return bad("adapt_max_strokes must be at most 1000");
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
        let c = Config::parse("device_features = true\nneighbours = 3").unwrap();
        assert!(c.device_features);
        assert_eq!(c.neighbours, 3);
        let e = Config::parse("neighbors = 3").unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
        assert!(Config::parse("pixels_per_mm = 0.0").is_err());
        assert!(Config::parse("pixels_per_mm = nan").is_err());
        assert!(Config::parse("neighbours = 0").is_err());
        assert!(Config::parse("min_enrol_strokes = 1").is_err());
        assert!(Config::parse("max_template_strokes = 5").is_err());
        assert!(Config::parse("this is not toml").is_err());
        assert_eq!(Config::parse("tree_weight = 0.0").unwrap().tree_weight, 0.0);
        assert!(Config::parse("tree_weight = -1.0").is_err());
        assert!(Config::parse("tree_weight = nan").is_err());
    }
}
