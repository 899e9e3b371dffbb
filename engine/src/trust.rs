//! The dynamic trust model of Mondal & Bours (2015/2017).
//!
//! Trust `T ∈ [0, 100]` starts at 100. Each action (a scored window) with score `s`
//! changes it by `ΔT(s) = min(−D + D·(1 + 1/C) / (1/C + exp(−(s − A)/B)), C)`: a smooth
//! step from a penalty of at most `D` (clearly impostor) to a reward of at most `C`
//! (clearly genuine), crossing zero at `s = A`. Below `lockout`, the session has drifted.
//! Our `s` is a calibrated LLR, so `A = 0` is "as likely genuine as impostor".

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// `A`: the score where reward turns into penalty.
    pub threshold: f64,
    /// `B`: width of the sigmoid, in score units.
    pub width: f64,
    /// `C`: largest reward per action.
    pub max_reward: f64,
    /// `D`: largest penalty per action.
    pub max_penalty: f64,
    /// Below this trust the session is in drift (locked out / step-up).
    pub lockout: f64,
    /// At or above this trust (with fresh evidence) the session is trusted.
    pub trusted: f64,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            threshold: 0.0,
            width: 1.0,
            max_reward: 1.0,
            max_penalty: 4.0,
            lockout: 90.0,
            trusted: 95.0,
        }
    }
}

impl TrustConfig {
    pub fn validate(&self) -> Result<(), String> {
        let finite = [
            self.threshold,
            self.width,
            self.max_reward,
            self.max_penalty,
            self.lockout,
            self.trusted,
        ];
        if finite.iter().any(|v| !v.is_finite()) {
            return Err("trust parameters must be finite".into());
        }
        if self.width <= 0.0 || self.max_reward <= 0.0 || self.max_penalty <= 0.0 {
            return Err("trust width, max_reward and max_penalty must be positive".into());
        }
        if !(0.0..=100.0).contains(&self.lockout) || !(self.lockout..=100.0).contains(&self.trusted)
        {
            return Err("trust thresholds need 0 <= lockout <= trusted <= 100".into());
        }
        Ok(())
    }
}

/// The running trust of one session.
#[derive(Clone, Debug, PartialEq)]
pub struct TrustModel {
    config: TrustConfig,
    trust: f64,
}

impl TrustModel {
    pub fn new(config: TrustConfig) -> TrustModel {
        TrustModel {
            config,
            trust: 100.0,
        }
    }

    pub fn trust(&self) -> f64 {
        self.trust
    }

    /// Carries over trust from an earlier assessment (e.g. the login that opened a web
    /// session), so a new running session does not start above what was already known.
    /// Clamped to 0..=100; NaN is taken as 0 (fail safe).
    pub fn carry_over(&mut self, trust: f64) {
        self.trust = if trust.is_nan() {
            0.0
        } else {
            trust.clamp(0.0, 100.0)
        };
    }

    pub fn config(&self) -> &TrustConfig {
        &self.config
    }

    /// The change of trust for one action scoring `score`.
    pub fn delta(&self, score: f64) -> f64 {
        let c = &self.config;
        if score.is_nan() {
            return -c.max_penalty; // fail safe: unusable evidence counts against
        }
        let e = (-(score - c.threshold) / c.width).exp();
        let d =
            -c.max_penalty + c.max_penalty * (1.0 + 1.0 / c.max_reward) / (1.0 / c.max_reward + e);
        d.min(c.max_reward)
    }

    /// Applies one action; returns the new trust.
    pub fn update(&mut self, score: f64) -> f64 {
        self.trust = (self.trust + self.delta(score)).clamp(0.0, 100.0);
        self.trust
    }

    pub fn is_locked_out(&self) -> bool {
        self.trust < self.config.lockout
    }

    /// Back to full trust (after the user passed a strong factor).
    pub fn reset(&mut self) {
        self.trust = 100.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_is_a_bounded_step_through_zero() {
        let m = TrustModel::new(TrustConfig::default());
        assert!(m.delta(0.0).abs() < 1e-12);
        assert!((m.delta(50.0) - 1.0).abs() < 1e-9);
        assert!((m.delta(-50.0) + 4.0).abs() < 1e-9);
        assert!(m.delta(1.0) > 0.0 && m.delta(-1.0) < 0.0);
        assert_eq!(m.delta(f64::NAN), -4.0);
    }

    #[test]
    fn impostor_stream_locks_out_and_genuine_stays() {
        let mut m = TrustModel::new(TrustConfig::default());
        let mut n = 0;
        while !m.is_locked_out() {
            m.update(-5.0);
            n += 1;
        }
        assert_eq!(n, 3); // 100 -> 96.0 -> 92.0 -> 88.1
        m.reset();
        for _ in 0..1000 {
            m.update(3.0);
        }
        assert_eq!(m.trust(), 100.0);
    }

    #[test]
    fn carried_over_trust_is_clamped_and_nan_is_zero() {
        let mut m = TrustModel::new(TrustConfig::default());
        m.carry_over(92.5);
        assert_eq!(m.trust(), 92.5);
        // One strongly impostor-like window from 92.5 crosses the lock-out line at 90.
        m.update(-20.0);
        assert!(m.is_locked_out(), "{}", m.trust());
        m.carry_over(250.0);
        assert_eq!(m.trust(), 100.0);
        m.carry_over(-3.0);
        assert_eq!(m.trust(), 0.0);
        m.carry_over(f64::NAN);
        assert_eq!(m.trust(), 0.0);
    }

    #[test]
    fn config_validation() {
        assert!(TrustConfig::default().validate().is_ok());
        let bad = TrustConfig {
            width: 0.0,
            ..TrustConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = TrustConfig {
            lockout: 99.0,
            trusted: 95.0,
            ..TrustConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
