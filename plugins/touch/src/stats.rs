//! Small numerical helpers: robust location and scale, a Cholesky whitening, the
//! logistic LLR calibration (k-nearest-neighbour distances are in [`crate::knn`]).

pub use habitus_plugin::stats::fit_llr_calibration;

/// Median of the finite values; NaN when there are none.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Robust centre and scale of the finite values: median and interquartile range / 1.349
/// (a normal sd), falling back to the sd, then to 1 for a constant column.
pub fn robust_centre_scale(values: &[f64]) -> (f64, f64) {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (0.0, 1.0);
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let at = |q: f64| v[((n - 1) as f64 * q).round() as usize];
    let centre = median(&v);
    let mut scale = (at(0.75) - at(0.25)) / 1.349;
    // `is_nan() ||` keeps a NaN scale out as well.
    if scale.is_nan() || scale <= 1e-9 {
        let mean = v.iter().sum::<f64>() / n as f64;
        scale = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    }
    if scale.is_nan() || scale <= 1e-9 {
        scale = 1.0;
    }
    (centre, scale)
}

/// The inverse of the Cholesky factor `L` of a symmetric positive-definite `d × d`
/// matrix (row-major), i.e. a whitening `W` with `W A Wᵀ = I`; lower triangular,
/// row-major. `None` when the matrix is not positive definite.
#[allow(clippy::needless_range_loop)]
pub fn inverse_cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let v = a[i * d + i] - s;
                if v.is_nan() || v <= 0.0 {
                    return None;
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = (a[i * d + j] - s) / l[j * d + j];
            }
        }
    }
    // Invert the lower-triangular L by forward substitution, column by column.
    let mut w = vec![0.0; d * d];
    for c in 0..d {
        for i in c..d {
            let rhs = if i == c { 1.0 } else { 0.0 };
            let s: f64 = (c..i).map(|k| l[i * d + k] * w[k * d + c]).sum();
            w[i * d + c] = (rhs - s) / l[i * d + i];
        }
    }
    w.iter().all(|x| x.is_finite()).then_some(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robust_statistics() {
        assert_eq!(median(&[3.0, f64::NAN, 1.0, 2.0]), 2.0);
        let (c, s) = robust_centre_scale(&[5.0; 10]);
        assert_eq!((c, s), (5.0, 1.0));
        let (c, _) = robust_centre_scale(&[]);
        assert_eq!(c, 0.0);
    }

    #[test]
    fn inverse_cholesky_whitens() {
        let a = [4.0, 2.0, 0.4, 2.0, 3.0, 0.5, 0.4, 0.5, 2.0];
        let w = inverse_cholesky(&a, 3).unwrap();
        // W A Wᵀ = I
        for i in 0..3 {
            for j in 0..3 {
                let mut s = 0.0;
                for k in 0..3 {
                    for l in 0..3 {
                        s += w[i * 3 + k] * a[k * 3 + l] * w[j * 3 + l];
                    }
                }
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 1e-12, "({i},{j}) = {s}");
            }
        }
        assert!(inverse_cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }
}
