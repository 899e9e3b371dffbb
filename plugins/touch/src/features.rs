//! Stroke → the Touchalytics feature vector (Frank et al. 2013), in the column order and
//! units of the authors' `featMat.csv` without its label columns (user id, doc id, phone
//! id), so pre-computed vectors and vectors extracted here are interchangeable.
//!
//! Definitions (points `p_0..p_{n-1}` of one stroke, `t` in s, `x`, `y` in mm, y up;
//! a *pair* is two consecutive points; percentiles use Matlab's `prctile` rule, see
//! [`percentile`]). Every value is finite: what cannot be measured is 0, documented per
//! feature (the model reads a non-positive inter-stroke time as unknown). Strokes reach
//! this module with at least two points, a displacement and a duration ([`crate::stroke`]).
//!
//! | # | name | definition |
//! | --- | --- | --- |
//! | 0 | inter-stroke time | s from the previous stroke's release to this touch-down (0 = unknown, for a window's first stroke) |
//! | 1 | stroke duration | `t_{n-1} - t_0` |
//! | 2–5 | start x, start y, stop x, stop y | `p_0`, `p_{n-1}` |
//! | 6 | direct end-to-end distance | `|p_{n-1} - p_0|` |
//! | 7 | mean resultant length | `|mean over pairs of (cos θ, sin θ)|`, θ = `atan2(Δy, Δx)` of each pair (a pair without displacement counts with θ = 0, as in the authors' data) |
//! | 8 | up/down/left/right flag | quadrant of feature 9: 1 for `[-3π/4, -π/4)`, 2 for `[-π/4, π/4)`, 3 for `[π/4, 3π/4)`, 4 otherwise (the authors' coding) |
//! | 9 | direction of end-to-end line | `atan2` of `p_{n-1} - p_0` |
//! | 10–12 | 20/50/80 %-perc. pairwise velocity | of `|Δp| / Δt` over pairs with `Δt > 0` |
//! | 13–15 | 20/50/80 %-perc. pairwise acc | of `(v_j - v_{j-1}) / Δt_j` over consecutive velocities (0 with fewer than two velocities) |
//! | 16 | median velocity at last 3 pts | median of the last three pairwise velocities |
//! | 17 | largest deviation from end-to-end line | the signed perpendicular distance of largest magnitude (positive left of the direction of travel; 0 for a stroke ending where it started) |
//! | 18–20 | 20/50/80 %-perc. dev. from end-to-end line | of the signed distances of all points |
//! | 21 | average direction | circular mean of the pair angles θ |
//! | 22 | length of trajectory | `Σ |Δp|` |
//! | 23 | ratio end-to-end dist and length of trajectory | 6 / 22 |
//! | 24 | average velocity | 22 / 1 |
//! | 25 | median acceleration at first 5 points | median of the accelerations computed from `p_0..p_4` (0 without one) |
//! | 26 | mid-stroke pressure | pressure at `p_{⌊n/2⌋}` |
//! | 27 | mid-stroke area covered | contact area at `p_{⌊n/2⌋}` |
//! | 28 | mid-stroke finger orientation | not reported by Habitus hosts: 0 |
//! | 29 | change of finger orientation | not reported: 0 |
//! | 30 | phone orientation | not reported: 0 (Touchalytics: 1 portrait, 2 landscape) |
//!
//! Features 28–30 are kept only so the layout matches the published matrix; the model
//! never uses them (see the crate docs).

use crate::stroke::Stroke;

/// Values per stroke.
pub const FEATURES: usize = 31;

/// The descriptor's feature names, in vector order.
pub const NAMES: [&str; FEATURES] = [
    "inter-stroke time",
    "stroke duration",
    "start x",
    "start y",
    "stop x",
    "stop y",
    "direct end-to-end distance",
    "mean resultant length",
    "up/down/left/right flag",
    "direction of end-to-end line",
    "20%-perc. pairwise velocity",
    "50%-perc. pairwise velocity",
    "80%-perc. pairwise velocity",
    "20%-perc. pairwise acc",
    "50%-perc. pairwise acc",
    "80%-perc. pairwise acc",
    "median velocity at last 3 pts",
    "largest deviation from end-to-end line",
    "20%-perc. dev. from end-to-end line",
    "50%-perc. dev. from end-to-end line",
    "80%-perc. dev. from end-to-end line",
    "average direction",
    "length of trajectory",
    "ratio end-to-end dist and length of trajectory",
    "average velocity",
    "median acceleration at first 5 points",
    "mid-stroke pressure",
    "mid-stroke area covered",
    "mid-stroke finger orientation",
    "change of finger orientation",
    "phone orientation",
];

/// Indices of the features the model reads by name.
pub mod idx {
    pub const INTER_STROKE: usize = 0;
    pub const DURATION: usize = 1;
    pub const FLAG: usize = 8;
    pub const DIRECTION: usize = 9;
    pub const AVERAGE_DIRECTION: usize = 21;
    pub const PRESSURE: usize = 26;
    pub const AREA: usize = 27;
}

/// Percentile by Matlab's `prctile` rule: sorted `x_1..x_n` sit at percentiles
/// `100 (k - 0.5) / n`; linear in between, clamped to the extremes. NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let q = n as f64 * p / 100.0 + 0.5; // 1-based position
    if q <= 1.0 {
        return v[0];
    }
    if q >= n as f64 {
        return v[n - 1];
    }
    let lo = q.floor() as usize; // 1-based
    let frac = q - lo as f64;
    v[lo - 1] + frac * (v[lo] - v[lo - 1])
}

/// A percentile, or 0 for no values (the stroke features' "cannot be measured").
fn percentile_or_zero(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        percentile(values, p)
    }
}

/// The flag (feature 8) of an end-to-end direction.
pub fn direction_flag(theta: f64) -> f64 {
    use std::f64::consts::FRAC_PI_4;
    if !theta.is_finite() {
        f64::NAN
    } else if (-3.0 * FRAC_PI_4..-FRAC_PI_4).contains(&theta) {
        1.0
    } else if (-FRAC_PI_4..FRAC_PI_4).contains(&theta) {
        2.0
    } else if (FRAC_PI_4..3.0 * FRAC_PI_4).contains(&theta) {
        3.0
    } else {
        4.0
    }
}

/// The feature vector of one stroke (at least two points; see [`crate::stroke`]).
pub fn stroke_features(stroke: &Stroke) -> [f64; FEATURES] {
    let p = &stroke.points;
    let n = p.len();
    let mut f = [0.0; FEATURES];
    if n < 2 {
        return f;
    }
    let (first, last) = (p[0], p[n - 1]);
    f[idx::INTER_STROKE] = stroke.inter_stroke.unwrap_or(0.0);
    f[idx::DURATION] = last.t - first.t;
    f[2] = first.x;
    f[3] = first.y;
    f[4] = last.x;
    f[5] = last.y;
    let (ex, ey) = (last.x - first.x, last.y - first.y);
    let end_to_end = ex.hypot(ey);
    f[6] = end_to_end;
    let direction = ey.atan2(ex);
    f[idx::DIRECTION] = direction;
    f[idx::FLAG] = direction_flag(direction);

    // Pairs: angles (all pairs), lengths, velocities (pairs with time between them).
    let (mut sum_cos, mut sum_sin, mut length) = (0.0, 0.0, 0.0);
    let mut velocities: Vec<(f64, f64, usize)> = Vec::with_capacity(n); // (v, dt, end index)
    for i in 1..n {
        let (dx, dy, dt) = (
            p[i].x - p[i - 1].x,
            p[i].y - p[i - 1].y,
            p[i].t - p[i - 1].t,
        );
        let theta = dy.atan2(dx); // atan2(0, 0) = 0
        sum_cos += theta.cos();
        sum_sin += theta.sin();
        let d = dx.hypot(dy);
        length += d;
        if dt > 0.0 {
            velocities.push((d / dt, dt, i));
        }
    }
    let pairs = (n - 1) as f64;
    f[7] = (sum_cos / pairs).hypot(sum_sin / pairs);
    f[idx::AVERAGE_DIRECTION] = sum_sin.atan2(sum_cos);
    let v: Vec<f64> = velocities.iter().map(|x| x.0).collect();
    f[10] = percentile_or_zero(&v, 20.0);
    f[11] = percentile_or_zero(&v, 50.0);
    f[12] = percentile_or_zero(&v, 80.0);
    let mut acc = Vec::with_capacity(v.len());
    let mut acc_first5 = Vec::new();
    for w in velocities.windows(2) {
        let a = (w[1].0 - w[0].0) / w[1].1;
        acc.push(a);
        if w[1].2 <= 4 {
            acc_first5.push(a);
        }
    }
    f[13] = percentile_or_zero(&acc, 20.0);
    f[14] = percentile_or_zero(&acc, 50.0);
    f[15] = percentile_or_zero(&acc, 80.0);
    f[16] = percentile_or_zero(&v[v.len().saturating_sub(3)..], 50.0);

    // Signed distance from the end-to-end line (left of travel positive).
    if end_to_end > 0.0 {
        let (ux, uy) = (ex / end_to_end, ey / end_to_end);
        let dev: Vec<f64> = p
            .iter()
            .map(|q| ux * (q.y - first.y) - uy * (q.x - first.x))
            .collect();
        f[17] = dev.iter().copied().fold(
            0.0,
            |best: f64, d| if d.abs() > best.abs() { d } else { best },
        );
        f[18] = percentile(&dev, 20.0);
        f[19] = percentile(&dev, 50.0);
        f[20] = percentile(&dev, 80.0);
    }
    f[22] = length;
    if length > 0.0 {
        f[23] = end_to_end / length;
    }
    if f[idx::DURATION] > 0.0 {
        f[24] = length / f[idx::DURATION];
    }
    f[25] = percentile_or_zero(&acc_first5, 50.0);
    let mid = p[n / 2];
    f[idx::PRESSURE] = mid.pressure;
    f[idx::AREA] = mid.area;
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stroke::segment;
    use habitus_plugin::{Event, EventKind};

    fn close(got: f64, want: f64, what: &str) {
        assert!(
            (got - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{what}: got {got}, hand-computed {want}"
        );
    }

    /// A stroke with known geometry, fed as raw events at 2 device units per mm:
    /// points (mm, y up) (0,0) (10,5) (30,5) (40,0) at 0, 0.1, 0.2, 0.3 s, pressure
    /// 0.1, 0.2, 0.3, 0.4; released at 0.35 s; then a second stroke 0.5 s later.
    #[test]
    fn hand_computed_geometry() {
        let ppm = 2.0f32;
        let pts: [(f32, f32); 4] = [(0.0, 0.0), (10.0, 5.0), (30.0, 5.0), (40.0, 0.0)];
        let mut events = Vec::new();
        for (i, (x, y)) in pts.iter().enumerate() {
            let kind = if i == 0 {
                EventKind::TOUCH_DOWN
            } else {
                EventKind::TOUCH_MOVE
            };
            // Screen y points down: y_screen = -y_mm * ppm.
            let mut e = Event::at(kind, 1_000_000 + i as u64 * 100_000, x * ppm, -y * ppm);
            e.pressure = 0.1 * (i + 1) as f32;
            e.area = 0.05;
            events.push(e);
        }
        events.push(Event::at(EventKind::TOUCH_UP, 1_350_000, 0.0, 0.0));
        events.push(Event::at(EventKind::TOUCH_DOWN, 1_850_000, 0.0, 0.0));
        events.push(Event::at(EventKind::TOUCH_MOVE, 1_900_000, 0.0, -20.0));
        events.push(Event::at(EventKind::TOUCH_UP, 1_950_000, 0.0, 0.0));
        let s = segment(&events, ppm as f64);
        assert_eq!(s.strokes.len(), 2);
        let f = stroke_features(&s.strokes[0]);

        assert_eq!(
            f[0], 0.0,
            "first stroke of a window: inter-stroke time unknown"
        );
        close(f[1], 0.3, "duration");
        close(f[2], 0.0, "start x");
        close(f[3], 0.0, "start y");
        close(f[4], 40.0, "stop x");
        close(f[5], 0.0, "stop y");
        close(f[6], 40.0, "end-to-end distance");
        // Pair angles atan2(5,10), 0, atan2(-5,10): mean cos (2·0.894427 + 1)/3, mean sin 0.
        let c = 10.0 / 125f64.sqrt();
        close(f[7], (2.0 * c + 1.0) / 3.0, "mean resultant length");
        close(f[8], 2.0, "flag (direction 0 -> 2)");
        close(f[9], 0.0, "direction");
        // Velocities √125/0.1, 20/0.1, √125/0.1 = 111.803, 200, 111.803 mm/s;
        // prctile positions for n = 3: 20 % -> 1.1, 50 % -> 2, 80 % -> 2.9.
        let v1 = 125f64.sqrt() / 0.1;
        close(f[10], v1, "v20");
        close(f[11], v1, "v50");
        close(f[12], v1 + 0.9 * (200.0 - v1), "v80");
        // Accelerations ±(200 - 111.803)/0.1 = ±881.97; n = 2: 20 % -> 0.9 (clamped),
        // 50 % -> 1.5, 80 % -> 2.1 (clamped).
        let a = (200.0 - v1) / 0.1;
        close(f[13], -a, "a20");
        close(f[14], 0.0, "a50");
        close(f[15], a, "a80");
        close(f[16], v1, "median velocity at last 3 pts");
        // Deviations from the x axis: 0, 5, 5, 0 (left of travel = +y).
        close(f[17], 5.0, "largest deviation");
        close(f[18], 0.0, "dev20 (position 1.3)");
        close(f[19], 2.5, "dev50 (position 2.5)");
        close(f[20], 5.0, "dev80 (position 3.7)");
        close(f[21], 0.0, "average direction");
        let length = 2.0 * 125f64.sqrt() + 20.0;
        close(f[22], length, "trajectory length");
        close(f[23], 40.0 / length, "ratio");
        close(f[24], length / 0.3, "average velocity");
        close(f[25], 0.0, "median acceleration at first 5 points");
        close(f[26], 0.3, "mid-stroke pressure (point 2)");
        close(f[27], 0.05, "mid-stroke area");
        assert_eq!((f[28], f[29], f[30]), (0.0, 0.0, 0.0));
        assert!(f.iter().all(|v| v.is_finite()));

        // The second stroke: straight down the screen, 0.5 s after the first release.
        let g = stroke_features(&s.strokes[1]);
        close(g[0], 0.5, "inter-stroke time");
        close(
            g[9],
            std::f64::consts::FRAC_PI_2,
            "direction (up the screen = π/2)",
        );
        close(g[8], 3.0, "flag");
        close(g[6], 10.0, "distance");
        assert_eq!(g[13], 0.0, "one velocity gives no acceleration");
    }

    #[test]
    fn duplicate_timestamps_carry_no_velocity() {
        let e = |k, t: u64, x: f32| Event::at(k, t * 1000, x, 0.0);
        let w = [
            e(EventKind::TOUCH_DOWN, 0, 0.0),
            e(EventKind::TOUCH_MOVE, 0, 5.0),
            e(EventKind::TOUCH_MOVE, 10, 10.0),
            e(EventKind::TOUCH_UP, 20, 10.0),
        ];
        let s = segment(&w, 1.0);
        assert_eq!(s.skipped.duplicate_timestamps, 1);
        let f = stroke_features(&s.strokes[0]);
        assert!(f.iter().take(28).all(|v| !v.is_infinite()));
        close(f[11], 500.0, "only the timed pair has a velocity");
        close(f[22], 10.0, "but every pair has a length");
    }

    #[test]
    fn percentile_follows_matlab() {
        assert!(percentile(&[], 50.0).is_nan());
        assert_eq!(percentile(&[3.0], 80.0), 3.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.5);
        assert!((percentile(&[4.0, 1.0, 3.0, 2.0], 20.0) - 1.3).abs() < 1e-12);
        assert_eq!(direction_flag(-std::f64::consts::FRAC_PI_2), 1.0);
        assert_eq!(direction_flag(3.0), 4.0);
        assert!(direction_flag(f64::NAN).is_nan());
    }
}
