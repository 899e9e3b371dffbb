//! The result of an evaluation, as printed (`--json`) and plotted (`--plot`).

use serde::Serialize;

/// One detector's numbers.
#[derive(Clone, Debug, Serialize)]
pub struct DetectorResult {
    pub detector: String,
    /// How the detector was trained and what population data it saw.
    pub variant: String,
    pub eer_mean: f64,
    pub eer_sd: f64,
    pub zero_miss_far_mean: f64,
    pub zero_miss_far_sd: f64,
    /// Subjects (or participants) averaged over.
    pub subjects: usize,
    /// Extra protocol parameters (e.g. gallery size), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gallery: Option<usize>,
    /// Per-subject EERs, in subject order.
    pub per_subject_eer: Vec<f64>,
    /// Pooled DET curve points `(false alarm, miss)` for plotting (not in JSON).
    #[serde(skip)]
    pub det: Vec<(f64, f64)>,
}

/// Everything one `habitus eval` run measured.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub dataset: String,
    pub protocol: String,
    pub results: Vec<DetectorResult>,
    pub notes: Vec<String>,
}
