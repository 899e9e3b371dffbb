//! The result of an evaluation, as printed (`--json`) and plotted (`--plot`).

use serde::Serialize;

use super::metrics::{det_curve, eer, mean_sd, zero_miss_far};

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

/// One subject's anomaly scores (`-llr`) and the metrics computed from them.
pub(crate) struct SubjectScores {
    pub eer: f64,
    pub zm_far: f64,
    pub genuine: Vec<f64>,
    pub impostor: Vec<f64>,
}

impl SubjectScores {
    pub fn new(genuine: Vec<f64>, impostor: Vec<f64>) -> SubjectScores {
        SubjectScores {
            eer: eer(&genuine, &impostor),
            zm_far: zero_miss_far(&genuine, &impostor),
            genuine,
            impostor,
        }
    }
}

/// Mean and sd over subjects, and the DET curve of all their scores pooled.
pub(crate) fn summarise(
    detector: &str,
    variant: String,
    gallery: Option<usize>,
    per_subject: Vec<SubjectScores>,
) -> DetectorResult {
    let eers: Vec<f64> = per_subject.iter().map(|s| s.eer).collect();
    let zms: Vec<f64> = per_subject.iter().map(|s| s.zm_far).collect();
    let (eer_mean, eer_sd) = mean_sd(&eers);
    let (zero_miss_far_mean, zero_miss_far_sd) = mean_sd(&zms);
    let genuine: Vec<f64> = per_subject
        .iter()
        .flat_map(|s| s.genuine.iter().copied())
        .collect();
    let impostor: Vec<f64> = per_subject
        .iter()
        .flat_map(|s| s.impostor.iter().copied())
        .collect();
    DetectorResult {
        detector: detector.to_string(),
        variant,
        eer_mean,
        eer_sd,
        zero_miss_far_mean,
        zero_miss_far_sd,
        subjects: eers.len(),
        gallery,
        per_subject_eer: eers,
        det: det_curve(&genuine, &impostor),
    }
}
