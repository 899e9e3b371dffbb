//! Verification metrics, computed exactly as Killourhy & Maxion (2009) do.
//!
//! Inputs are *anomaly* scores (higher = more impostor-like): evaluations pass `-llr`.

/// Equal error rate by the paper's interpolation rule: for every cutoff `c` in
/// `{+∞} ∪ scores`, an alarm is `score >= c`; miss = impostors below `c`, false alarm =
/// genuine at or above `c`. Between the adjacent cutoffs where `miss - fa` changes sign,
/// the line is intersected with `miss = fa`.
pub fn eer(genuine: &[f64], impostor: &[f64]) -> f64 {
    assert!(
        !genuine.is_empty() && !impostor.is_empty(),
        "EER needs both classes"
    );
    let mut g = genuine.to_vec();
    let mut im = impostor.to_vec();
    g.sort_by(f64::total_cmp);
    im.sort_by(f64::total_cmp);
    let mut cuts: Vec<f64> = g.iter().chain(im.iter()).copied().collect();
    cuts.sort_by(|a, b| b.total_cmp(a));
    cuts.dedup();
    let (ng, ni) = (g.len() as f64, im.len() as f64);
    // Rates at a cutoff: miss = #imp < c / ni, fa = #gen >= c / ng.
    let rates = |c: f64| {
        let miss = im.partition_point(|&x| x < c) as f64 / ni;
        let fa = (g.len() - g.partition_point(|&x| x < c)) as f64 / ng;
        (miss, fa)
    };
    // Cutoffs from +∞ downwards: miss falls from 1 to 0, fa rises from 0 to 1, so
    // miss - fa decreases monotonically; find the last cutoff with d >= 0.
    let mut prev = (1.0, 0.0); // c = +∞
    for &c in &cuts {
        let cur = rates(c);
        if cur.0 - cur.1 < 0.0 {
            let (m1, f1) = prev;
            let (m2, f2) = cur;
            let t = (m1 - f1) / ((m1 - f1) - (m2 - f2));
            return f1 + t * (f2 - f1);
        }
        prev = cur;
    }
    prev.1 // never crossed (cannot happen: at the lowest cutoff miss = 0 < fa = 1)
}

/// Zero-miss false-alarm rate: the share of genuine scores at or above the lowest
/// impostor score (the alarm rate when no impostor may pass).
pub fn zero_miss_far(genuine: &[f64], impostor: &[f64]) -> f64 {
    let lowest = impostor.iter().copied().fold(f64::INFINITY, f64::min);
    genuine.iter().filter(|&&x| x >= lowest).count() as f64 / genuine.len() as f64
}

/// Points `(false alarm rate, miss rate)` of the DET curve, one per distinct cutoff.
pub fn det_curve(genuine: &[f64], impostor: &[f64]) -> Vec<(f64, f64)> {
    let mut all: Vec<(f64, bool)> = genuine
        .iter()
        .map(|&x| (x, true))
        .chain(impostor.iter().map(|&x| (x, false)))
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (ng, ni) = (genuine.len() as f64, impostor.len() as f64);
    let (mut fa, mut detected) = (0usize, 0usize);
    let mut points = vec![(0.0, 1.0)];
    let mut i = 0;
    while i < all.len() {
        let c = all[i].0;
        while i < all.len() && all[i].0 == c {
            if all[i].1 {
                fa += 1;
            } else {
                detected += 1;
            }
            i += 1;
        }
        points.push((fa as f64 / ng, 1.0 - detected as f64 / ni));
    }
    points
}

/// Mean and sample standard deviation (n - 1).
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_separation_gives_zero() {
        assert_eq!(eer(&[0.0, 1.0, 2.0], &[5.0, 6.0]), 0.0);
        assert_eq!(zero_miss_far(&[0.0, 1.0, 2.0], &[5.0, 6.0]), 0.0);
    }

    #[test]
    fn interpolates_between_adjacent_cutoffs() {
        // genuine 1,2,3,4; impostor 2.5,5,6,7
        // c=+inf: miss 1, fa 0 ... c=3: miss 1/4 (2.5 < 3), fa 2/4 -> d<0; prev c=4: miss 1/4, fa 1/4 -> d=0.
        let e = eer(&[1.0, 2.0, 3.0, 4.0], &[2.5, 5.0, 6.0, 7.0]);
        assert!((e - 0.25).abs() < 1e-12, "{e}");
        // Full overlap: identical distributions give 0.5 when interpolated.
        let e = eer(&[1.0, 2.0], &[1.0, 2.0]);
        assert!((e - 0.5).abs() < 1e-12, "{e}");
    }

    #[test]
    fn zero_miss_far_counts_genuine_above_lowest_impostor() {
        assert_eq!(zero_miss_far(&[1.0, 2.0, 3.0, 4.0], &[2.5, 9.0]), 0.5);
    }

    #[test]
    fn det_curve_runs_from_all_miss_to_all_alarm() {
        let d = det_curve(&[1.0, 2.0], &[3.0, 4.0]);
        assert_eq!(d.first(), Some(&(0.0, 1.0)));
        assert_eq!(d.last(), Some(&(1.0, 0.0)));
    }

    #[test]
    fn mean_sd_is_sample_sd() {
        let (m, s) = mean_sd(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((s - 1.0).abs() < 1e-12);
    }
}
