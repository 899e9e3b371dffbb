//! The plugin's settings: the TOML string habitusd passes from `[plugins.scroll] settings`.
//!
//! Every setting is a number, so a few lines of parsing replace a TOML dependency: one
//! `key = number` per line, `#` comments, blank lines. Unknown keys and anything else are
//! refused with `INVALID_CONFIG`, so a typo is reported instead of silently ignored.

use habitus_plugin::PluginError;

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// A gap longer than this (ms) between wheel events ends a burst.
    pub burst_gap_ms: f64,
    /// Gaps longer than this (ms) are the user away, not scrolling rhythm: ignored.
    pub max_pause_ms: f64,
    /// Windows with fewer wheel events are not scored (`not enough data`).
    pub min_events: f64,
    /// Only windows scoring at least this LLR adapt the profile.
    pub adapt_min_llr: f64,
    /// How far one adapting window moves the profile's means (0 = never adapt).
    pub adapt_rate: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            burst_gap_ms: 300.0,
            max_pause_ms: 30_000.0,
            min_events: 12.0,
            adapt_min_llr: 3.0,
            adapt_rate: 0.05,
        }
    }
}

impl Config {
    pub fn parse(text: &str) -> Result<Config, PluginError> {
        let mut config = Config::default();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |why: &str| {
                PluginError::invalid_config(format!("scroll config line {}: {why}", n + 1))
            };
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| bad("expected `key = number`"))?;
            let value: f64 = value
                .trim()
                .parse()
                .map_err(|_| bad("the value must be a number"))?;
            if !value.is_finite() {
                return Err(bad("the value must be finite"));
            }
            let slot = match key.trim() {
                "burst_gap_ms" => &mut config.burst_gap_ms,
                "max_pause_ms" => &mut config.max_pause_ms,
                "min_events" => &mut config.min_events,
                "adapt_min_llr" => &mut config.adapt_min_llr,
                "adapt_rate" => &mut config.adapt_rate,
                other => return Err(bad(&format!("unknown key {other:?}"))),
            };
            *slot = value;
        }
        if config.burst_gap_ms <= 0.0 || config.max_pause_ms <= config.burst_gap_ms {
            return Err(PluginError::invalid_config(
                "scroll config: need 0 < burst_gap_ms < max_pause_ms",
            ));
        }
        if config.min_events < 4.0 {
            return Err(PluginError::invalid_config(
                "scroll config: min_events must be at least 4",
            ));
        }
        if !(0.0..=1.0).contains(&config.adapt_rate) {
            return Err(PluginError::invalid_config(
                "scroll config: adapt_rate must be within [0, 1]",
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_overrides_and_refusals() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(Config::parse("# nothing\n\n").unwrap(), Config::default());
        let c = Config::parse("burst_gap_ms = 250 # faster wheel\nadapt_rate = 0").unwrap();
        assert_eq!(c.burst_gap_ms, 250.0);
        assert_eq!(c.adapt_rate, 0.0);
        for bad in [
            "burst_gap = 250",
            "mode = \"free\"",
            "burst_gap_ms",
            "burst_gap_ms = fast",
            "burst_gap_ms = inf",
            "adapt_rate = 2",
            "min_events = 1",
            "burst_gap_ms = 40000",
        ] {
            let e = Config::parse(bad).unwrap_err();
            assert_eq!(e.kind, habitus_plugin::ErrorKind::INVALID_CONFIG, "{bad}");
        }
    }
}
