//! Small statistics that most plugins need: robust location and scale, and the logistic
//! calibration that turns a detector's raw score into a log-likelihood ratio (the unit
//! every `Score::llr` is in). Plain functions on `f64` slices, no dependencies.

/// Median; the mean of the two middle values for an even count. `NaN` for no values.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Median absolute deviation scaled to estimate a normal standard deviation.
pub fn mad(values: &[f64], centre: f64) -> f64 {
    let dev: Vec<f64> = values.iter().map(|v| (v - centre).abs()).collect();
    1.4826 * median(&dev)
}

/// Fits `llr = b0 + b1 * x` by logistic regression (Newton / IRLS) with the two classes
/// weighted to equal total mass, so the log-odds is a prior-free log-likelihood ratio.
/// A tiny ridge keeps the Hessian invertible when the classes separate perfectly.
pub fn fit_llr_calibration(genuine: &[f64], impostor: &[f64]) -> Option<(f64, f64)> {
    if genuine.is_empty() || impostor.is_empty() {
        return None;
    }
    const RIDGE: f64 = 1e-6;
    let wg = 0.5 / genuine.len() as f64;
    let wi = 0.5 / impostor.len() as f64;
    let (mut b0, mut b1) = (0.0f64, 0.0f64);
    for _ in 0..50 {
        let (mut g0, mut g1) = (RIDGE * b0, RIDGE * b1);
        let (mut h00, mut h01, mut h11) = (RIDGE, 0.0, RIDGE);
        let classes = [(genuine, 1.0, wg), (impostor, 0.0, wi)];
        for (xs, y, w) in classes {
            for &x in xs {
                let p = 1.0 / (1.0 + (-(b0 + b1 * x)).exp());
                let r = w * (p - y);
                g0 += r;
                g1 += r * x;
                let h = w * p * (1.0 - p);
                h00 += h;
                h01 += h * x;
                h11 += h * x * x;
            }
        }
        let det = h00 * h11 - h01 * h01;
        if !det.is_finite() || det.abs() < 1e-300 {
            return None;
        }
        let s0 = (h11 * g0 - h01 * g1) / det;
        let s1 = (h00 * g1 - h01 * g0) / det;
        b0 -= s0;
        b1 -= s1;
        if s0.abs().max(s1.abs()) < 1e-10 {
            break;
        }
    }
    (b0.is_finite() && b1.is_finite()).then_some((b0, b1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mad() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!((mad(&[1.0, 2.0, 3.0, 4.0, 100.0], 3.0) - 1.4826).abs() < 1e-12);
    }

    #[test]
    fn calibration_recovers_a_known_logistic_slope() {
        // Genuine ~ N(+1, 1), impostor ~ N(-1, 1): the true LLR is 2x (b0 = 0, b1 = 2).
        let grid: Vec<f64> = (0..2001).map(|i| -5.0 + i as f64 * 0.005).collect();
        let pdf = |x: f64, m: f64| (-(x - m) * (x - m) / 2.0).exp();
        let mut g = Vec::new();
        let mut im = Vec::new();
        for &x in &grid {
            for _ in 0..(pdf(x, 1.0) * 20.0).round() as usize {
                g.push(x);
            }
            for _ in 0..(pdf(x, -1.0) * 20.0).round() as usize {
                im.push(x);
            }
        }
        let (b0, b1) = fit_llr_calibration(&g, &im).unwrap();
        assert!(b0.abs() < 0.05, "b0 {b0}");
        assert!((b1 - 2.0).abs() < 0.1, "b1 {b1}");
        assert!(fit_llr_calibration(&[], &[1.0]).is_none());
    }
}
