//! The common unit every plugin scores in.

use abi_stable::StableAbi;

/// Scores are clipped to this magnitude: beyond it, a single window should not be able to
/// outvote everything else the fusion has seen.
pub const LLR_LIMIT: f64 = 10.0;

/// The result of scoring one window against a profile.
///
/// * `llr`: natural-log likelihood ratio `ln p(window | genuine) / p(window | impostor)`,
///   positive when the window looks like the enrolled user. Calibrated: an LLR of 2 means
///   the window is e² ≈ 7.4 times more likely under the genuine model. Clipped to
///   `[-LLR_LIMIT, LLR_LIMIT]`.
/// * `quality`: how much the score can be trusted, in `[0, 1]` (1 = a full window of
///   well-formed evidence; 0 = nothing usable). Fusion weights scores by it.
/// * `events`: how many input events the score rests on.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq)]
pub struct Score {
    pub llr: f64,
    pub quality: f64,
    pub events: u32,
}

impl Score {
    /// Builds a score, clipping `llr` to the allowed range and `quality` to `[0, 1]`.
    /// A NaN LLR becomes `-LLR_LIMIT` and quality 0: unusable evidence must never count
    /// for the user.
    pub fn new(llr: f64, quality: f64, events: u32) -> Score {
        if llr.is_nan() {
            return Score {
                llr: -LLR_LIMIT,
                quality: 0.0,
                events,
            };
        }
        let quality = if quality.is_nan() {
            0.0
        } else {
            quality.clamp(0.0, 1.0)
        };
        Score {
            llr: llr.clamp(-LLR_LIMIT, LLR_LIMIT),
            quality,
            events,
        }
    }

    /// True when the fields are within the contract (what a host checks on every score
    /// that crosses the boundary).
    pub fn is_valid(&self) -> bool {
        self.llr.is_finite()
            && self.llr.abs() <= LLR_LIMIT
            && self.quality.is_finite()
            && (0.0..=1.0).contains(&self.quality)
    }
}
