//! Small robust statistics shared by the detectors (the common ones come from the SDK).

pub use habitus_plugin::stats::{fit_llr_calibration, mad, median};

/// `asinh x` as `±ln(|x| + √(x² + 1))`: one `ln` and one square root. The standard
/// library's version (a `hypot` and an `ln_1p`, exact to the last bit near 0) ran about
/// 250 times per score, for 7 % of a score's time; this one is within 1e-15 of it over
/// the whole range (relative error near 0 does not matter here: the values are timings
/// of at least a microsecond, scaled by 20 ms).
#[inline]
pub fn asinh(x: f64) -> f64 {
    let a = x.abs();
    let y = if a > 1e150 {
        // x² would overflow; asinh a = ln 2a + O(1/a²).
        (2.0 * a).ln()
    } else {
        (a + (a * a + 1.0).sqrt()).ln()
    };
    y.copysign(x)
}

pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Population standard deviation (divides by n).
pub fn std_dev(values: &[f64], mean: f64) -> f64 {
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt()
}

/// Column `j` of row-major samples.
pub fn column(samples: &[Vec<f64>], j: usize) -> Vec<f64> {
    samples.iter().map(|s| s[j]).collect()
}

/// Logistic regression `p = σ(w·x)` (the caller includes a constant 1 in `x` for the
/// bias) by Newton / IRLS, with the classes weighted to equal total mass (so `w·x` is a
/// prior-free LLR) and a ridge `lambda` on every weight but the first.
// Matrix code reads best with explicit indices.
#[allow(clippy::needless_range_loop)]
pub fn fit_logistic(genuine: &[Vec<f64>], impostor: &[Vec<f64>], lambda: f64) -> Option<Vec<f64>> {
    let d = genuine.first()?.len();
    if impostor.is_empty() || d == 0 {
        return None;
    }
    let wg = 0.5 / genuine.len() as f64;
    let wi = 0.5 / impostor.len() as f64;
    let mut w = vec![0.0; d];
    for _ in 0..30 {
        let mut grad = vec![0.0; d];
        let mut hess = vec![vec![0.0; d]; d];
        for j in 1..d {
            grad[j] = lambda * w[j];
            hess[j][j] = lambda;
        }
        hess[0][0] += 1e-9;
        for (xs, y, cw) in [(genuine, 1.0, wg), (impostor, 0.0, wi)] {
            for x in xs {
                let z: f64 = w.iter().zip(x).map(|(a, b)| a * b).sum();
                let p = 1.0 / (1.0 + (-z).exp());
                let r = cw * (p - y);
                let h = cw * p * (1.0 - p);
                for a in 0..d {
                    grad[a] += r * x[a];
                    for b in 0..=a {
                        hess[a][b] += h * x[a] * x[b];
                    }
                }
            }
        }
        for a in 0..d {
            for b in 0..a {
                hess[b][a] = hess[a][b];
            }
        }
        let step = solve(hess, grad)?;
        let mut largest: f64 = 0.0;
        for (wj, s) in w.iter_mut().zip(&step) {
            *wj -= s;
            largest = largest.max(s.abs());
        }
        if largest < 1e-9 {
            break;
        }
    }
    w.iter().all(|v| v.is_finite()).then_some(w)
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting.
#[allow(clippy::needless_range_loop)]
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            if f != 0.0 {
                for k in col..n {
                    a[row][k] -= f * a[col][k];
                }
                b[row] -= f * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

#[cfg(test)]
mod logistic_tests {
    use super::*;

    #[test]
    fn logistic_matches_the_one_dimensional_fit() {
        let g: Vec<f64> = (0..200).map(|i| 1.0 + (i as f64 * 0.37).sin()).collect();
        let im: Vec<f64> = (0..300).map(|i| -1.0 + (i as f64 * 0.53).cos()).collect();
        let (b0, b1) = fit_llr_calibration(&g, &im).unwrap();
        let gv: Vec<Vec<f64>> = g.iter().map(|&x| vec![1.0, x]).collect();
        let iv: Vec<Vec<f64>> = im.iter().map(|&x| vec![1.0, x]).collect();
        let w = fit_logistic(&gv, &iv, 1e-6).unwrap();
        assert!(
            (w[0] - b0).abs() < 1e-3 && (w[1] - b1).abs() < 1e-3,
            "{w:?} vs {b0} {b1}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asinh_matches_the_standard_library() {
        for x in [
            0.0, 1e-9, 1e-3, 0.05, 0.5, 1.0, 3.7, 50.0, 1e4, 1e9, 1e149, 1e151, 1e300,
        ] {
            for v in [x, -x] {
                let (ours, std) = (asinh(v), v.asinh());
                assert!(
                    (ours - std).abs() <= 1e-15 * std.abs().max(1.0),
                    "asinh({v}) = {ours}, std {std}"
                );
                assert_eq!(ours.is_sign_negative(), std.is_sign_negative(), "{v}");
            }
        }
        assert!(asinh(f64::NAN).is_nan());
        assert_eq!(asinh(f64::INFINITY), f64::INFINITY);
    }
}
