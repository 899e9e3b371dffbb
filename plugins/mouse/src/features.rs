//! One action → one feature vector ([`FEATURES`] numbers, names in [`FEATURE_NAMES`]).
//!
//! The movement is measured along its trajectory `p_0 … p_{n-1}` (pixels, seconds):
//! steps `(dx_i, dy_i, dt_i)`, speed `v_i = |d_i| / dt_i` at the step's mid-time, then
//! acceleration and jerk as differences of consecutive speeds and accelerations over the
//! time between their mid-times; direction `θ_i = atan2(dy_i, dx_i)` (kept from the last
//! moving step while the pointer rests), turning angle `Δθ_i` wrapped to `(-π, π]`, angular
//! velocity `Δθ_i / Δt` and curvature `Δθ_i / Δs`. Each of these series enters as mean,
//! standard deviation, minimum and maximum. Shape: duration, number of points, path length,
//! end-to-end distance, straightness (distance / length), direction of the end-to-end line
//! (cos, sin), largest deviation from that line (absolute and relative to the distance),
//! total turning, sharp turns (|Δθ| > 30°). Rhythm: where in the action the peak speed
//! falls, pauses inside it (steps longer than 100 ms) and the longest one, the speed over
//! the last three steps, the mean speed (length / duration), the number of speed peaks
//! (sub-movements), the initial aiming error (angle between the heading over the first
//! fifth of the path and the end-to-end line), the idle time before the action. Buttons: action kind, secondary button, the pause between the
//! approach and the press, how long the button is held, how far the pointer slips during
//! a click.
//!
//! Deliberately absent: absolute screen coordinates and the screen's extent. They
//! identify the monitor (Balabit's ten users have six distinct screen sizes), not the
//! person, and a profile that learned them would reject its own user on a new screen.

use crate::segment::{Action, ActionKind, Point};

/// Names of the features, in vector order.
pub const FEATURE_NAMES: [&str; FEATURES] = [
    "kind_pc",
    "kind_dd",
    "secondary_button",
    "duration_s",
    "points",
    "length_px",
    "distance_px",
    "straightness",
    "direction_cos",
    "direction_sin",
    "max_deviation_px",
    "deviation_ratio",
    "v_mean",
    "v_sd",
    "v_min",
    "v_max",
    "vx_mean",
    "vx_sd",
    "vx_min",
    "vx_max",
    "vy_mean",
    "vy_sd",
    "vy_min",
    "vy_max",
    "a_mean",
    "a_sd",
    "a_min",
    "a_max",
    "jerk_mean",
    "jerk_sd",
    "jerk_min",
    "jerk_max",
    "omega_mean",
    "omega_sd",
    "omega_min",
    "omega_max",
    "curvature_mean",
    "curvature_sd",
    "curvature_min",
    "curvature_max",
    "total_turn_rad",
    "sharp_turns",
    "peak_speed_time_fraction",
    "pauses",
    "longest_pause_s",
    "end_speed",
    "pause_before_press_s",
    "hold_s",
    "click_slip_px",
    "mean_speed",
    "speed_peaks",
    "initial_angle_error_rad",
    "idle_before_s",
];

/// Length of one action's feature vector.
pub const FEATURES: usize = 53;

/// A step longer than this (seconds) is a pause inside an action.
const PAUSE_S: f64 = 0.1;
/// A turn sharper than this (radians) is a sharp turn.
const SHARP_TURN: f64 = std::f64::consts::PI / 6.0;

fn summary(values: &[f64]) -> [f64; 4] {
    if values.is_empty() {
        return [0.0; 4];
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    [mean, var.sqrt(), min, max]
}

fn wrap(angle: f64) -> f64 {
    use std::f64::consts::PI;
    let mut a = angle % (2.0 * PI);
    if a > PI {
        a -= 2.0 * PI;
    } else if a <= -PI {
        a += 2.0 * PI;
    }
    a
}

/// Speed peaks with a prominence of at least a tenth of the top speed (rising that much
/// above the last trough, falling that much before the next): one per sub-movement (an
/// aimed movement is a main ballistic phase plus corrections).
fn speed_peaks(v: &[f64]) -> f64 {
    let top = v.iter().copied().fold(0.0, f64::max);
    let margin = 0.1 * top;
    let (mut peaks, mut in_peak, mut trough, mut crest) = (0.0, false, 0.0f64, 0.0f64);
    for &x in v {
        if in_peak {
            crest = crest.max(x);
            if x < crest - margin {
                in_peak = false;
                trough = x;
            }
        } else {
            trough = trough.min(x);
            if x > trough + margin {
                peaks += 1.0;
                in_peak = true;
                crest = x;
            }
        }
    }
    peaks
}

/// Angle between where the movement first heads (to the point a fifth of the way along
/// the path) and the end-to-end line: how far off target the initial aim was.
fn initial_angle_error(p: &[Point], length: f64, distance: f64, cx: f64, cy: f64) -> f64 {
    let (Some(first), true) = (p.first(), distance > 0.0) else {
        return 0.0;
    };
    let mut walked = 0.0;
    let mut target = p.last().copied().unwrap_or(*first);
    for w in p.windows(2) {
        walked += (w[1].x - w[0].x).hypot(w[1].y - w[0].y);
        if walked >= 0.2 * length {
            target = w[1];
            break;
        }
    }
    let (ax, ay) = (target.x - first.x, target.y - first.y);
    if ax == 0.0 && ay == 0.0 {
        return 0.0;
    }
    wrap(ay.atan2(ax) - cy.atan2(cx)).abs()
}

/// The feature vector of one action. Every value is finite (non-finite intermediate
/// results, impossible for actions from [`crate::segment`], are replaced by 0).
pub fn action_features(action: &Action) -> [f64; FEATURES] {
    let p = &action.points;
    let steps = p.len().saturating_sub(1);
    let mut v = Vec::with_capacity(steps);
    let mut vx = Vec::with_capacity(steps);
    let mut vy = Vec::with_capacity(steps);
    let mut tm = Vec::with_capacity(steps);
    let mut ds = Vec::with_capacity(steps);
    let mut theta = Vec::with_capacity(steps);
    let mut length = 0.0;
    let mut pauses = 0.0;
    let mut longest_pause: f64 = 0.0;
    let mut last_theta = None;
    for w in p.windows(2) {
        let (dx, dy, dt) = (w[1].x - w[0].x, w[1].y - w[0].y, w[1].t - w[0].t);
        let d = dx.hypot(dy);
        let dt = dt.max(1e-6);
        length += d;
        v.push(d / dt);
        vx.push(dx / dt);
        vy.push(dy / dt);
        tm.push(0.5 * (w[0].t + w[1].t));
        ds.push(d);
        if dt > PAUSE_S {
            pauses += 1.0;
        }
        longest_pause = longest_pause.max(dt);
        let th = if d > 0.0 {
            dy.atan2(dx)
        } else {
            last_theta.unwrap_or(0.0)
        };
        last_theta = Some(th);
        theta.push(th);
    }
    let mut acc = Vec::with_capacity(steps);
    let mut ta = Vec::with_capacity(steps);
    let mut omega = Vec::with_capacity(steps);
    let mut curvature = Vec::with_capacity(steps);
    let mut total_turn = 0.0;
    let mut sharp = 0.0;
    for i in 1..steps {
        let dt = (tm[i] - tm[i - 1]).max(1e-6);
        acc.push((v[i] - v[i - 1]) / dt);
        ta.push(0.5 * (tm[i] + tm[i - 1]));
        let turn = wrap(theta[i] - theta[i - 1]);
        total_turn += turn.abs();
        if turn.abs() > SHARP_TURN {
            sharp += 1.0;
        }
        omega.push(turn / dt);
        let s = 0.5 * (ds[i] + ds[i - 1]);
        if s > 0.0 {
            curvature.push(turn / s);
        }
    }
    let jerk: Vec<f64> = (1..acc.len())
        .map(|i| (acc[i] - acc[i - 1]) / (ta[i] - ta[i - 1]).max(1e-6))
        .collect();
    let (first, last) = match (p.first(), p.last()) {
        (Some(a), Some(b)) => (*a, *b),
        _ => return [0.0; FEATURES],
    };
    let duration = last.t - first.t;
    let (cx, cy) = (last.x - first.x, last.y - first.y);
    let distance = cx.hypot(cy);
    let max_deviation = if distance > 0.0 {
        p.iter()
            .map(|q| ((q.x - first.x) * cy - (q.y - first.y) * cx).abs() / distance)
            .fold(0.0, f64::max)
    } else {
        p.iter()
            .map(|q| (q.x - first.x).hypot(q.y - first.y))
            .fold(0.0, f64::max)
    };
    let (dir_cos, dir_sin) = if distance > 0.0 {
        (cx / distance, cy / distance)
    } else {
        (0.0, 0.0)
    };
    let peak = v
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0.0, |(i, _)| tm[i] - first.t);
    let tail = &v[v.len().saturating_sub(3)..];
    let end_speed = if tail.is_empty() {
        0.0
    } else {
        tail.iter().sum::<f64>() / tail.len() as f64
    };
    let mut f = [0.0; FEATURES];
    f[0] = (action.kind == ActionKind::PointClick) as u8 as f64;
    f[1] = (action.kind == ActionKind::DragDrop) as u8 as f64;
    f[2] = (action.kind != ActionKind::Move && action.button != 1) as u8 as f64;
    f[3] = duration;
    f[4] = p.len() as f64;
    f[5] = length;
    f[6] = distance;
    f[7] = if length > 0.0 { distance / length } else { 0.0 };
    f[8] = dir_cos;
    f[9] = dir_sin;
    f[10] = max_deviation;
    f[11] = max_deviation / distance.max(1.0);
    f[12..16].copy_from_slice(&summary(&v));
    f[16..20].copy_from_slice(&summary(&vx));
    f[20..24].copy_from_slice(&summary(&vy));
    f[24..28].copy_from_slice(&summary(&acc));
    f[28..32].copy_from_slice(&summary(&jerk));
    f[32..36].copy_from_slice(&summary(&omega));
    f[36..40].copy_from_slice(&summary(&curvature));
    f[40] = total_turn;
    f[41] = sharp;
    f[42] = if duration > 0.0 { peak / duration } else { 0.0 };
    f[43] = pauses;
    f[44] = longest_pause;
    f[45] = end_speed;
    f[46] = action.pause_before_press;
    f[47] = action.hold;
    f[48] = action.click_slip;
    f[49] = if duration > 0.0 {
        length / duration
    } else {
        0.0
    };
    f[50] = speed_peaks(&v);
    f[51] = initial_angle_error(p, length, distance, cx, cy);
    f[52] = action.idle_before;
    for x in f.iter_mut() {
        if !x.is_finite() {
            *x = 0.0;
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::Point;

    fn action(points: Vec<Point>) -> Action {
        Action {
            kind: ActionKind::Move,
            points,
            button: 0,
            pause_before_press: 0.0,
            hold: 0.0,
            click_slip: 0.0,
            idle_before: 0.0,
        }
    }

    fn get(f: &[f64; FEATURES], name: &str) -> f64 {
        f[FEATURE_NAMES.iter().position(|n| *n == name).unwrap()]
    }

    #[test]
    fn names_match_the_vector() {
        assert_eq!(FEATURE_NAMES.len(), FEATURES);
        let mut sorted = FEATURE_NAMES.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), FEATURES, "names are unique");
    }

    #[test]
    fn straight_line_at_constant_speed() {
        // 11 points, 10 px right and 10 px down every 10 ms: speed 1414.2 px/s along 45°.
        let pts = (0..11)
            .map(|i| Point {
                t: 0.01 * i as f64,
                x: 10.0 * i as f64,
                y: 10.0 * i as f64,
            })
            .collect();
        let f = action_features(&action(pts));
        let s2 = 2f64.sqrt();
        assert!((get(&f, "duration_s") - 0.1).abs() < 1e-12);
        assert!((get(&f, "length_px") - 100.0 * s2).abs() < 1e-9);
        assert!((get(&f, "distance_px") - 100.0 * s2).abs() < 1e-9);
        assert!((get(&f, "straightness") - 1.0).abs() < 1e-12);
        assert!((get(&f, "v_mean") - 1000.0 * s2).abs() < 1e-6);
        assert!(get(&f, "v_sd") < 1e-6);
        assert!((get(&f, "vx_mean") - 1000.0).abs() < 1e-6);
        assert!(get(&f, "a_mean").abs() < 1e-3 && get(&f, "a_max").abs() < 1e-3);
        assert!(get(&f, "jerk_max").abs() < 1e-3);
        assert!(get(&f, "curvature_max").abs() < 1e-12);
        assert!(get(&f, "total_turn_rad").abs() < 1e-12);
        assert!(get(&f, "max_deviation_px") < 1e-9);
        assert!((get(&f, "direction_cos") - 1.0 / s2).abs() < 1e-12);
        assert!((get(&f, "direction_sin") - 1.0 / s2).abs() < 1e-12);
        assert_eq!(get(&f, "points"), 11.0);
        assert_eq!(get(&f, "pauses"), 0.0);
        assert_eq!(get(&f, "speed_peaks"), 1.0);
        assert!(get(&f, "initial_angle_error_rad").abs() < 1e-12);
        assert!((get(&f, "mean_speed") - 1000.0 * s2).abs() < 1e-6);
    }

    #[test]
    fn half_circle_has_the_circles_curvature() {
        // Radius 100 px, 181 points over half a turn in 1.8 s: curvature 1/100 per px,
        // angular velocity π/1.8 rad/s, chord 200 px, deviation 100 px.
        let r = 100.0;
        let pts = (0..=180)
            .map(|i| {
                let a = (i as f64).to_radians();
                Point {
                    t: 0.01 * i as f64,
                    x: r * a.cos(),
                    y: r * a.sin(),
                }
            })
            .collect();
        let f = action_features(&action(pts));
        let arc = std::f64::consts::PI * r;
        assert!((get(&f, "length_px") - arc).abs() < 0.01 * arc);
        assert!((get(&f, "distance_px") - 200.0).abs() < 1e-9);
        assert!((get(&f, "straightness") - 200.0 / arc).abs() < 0.01);
        assert!((get(&f, "curvature_mean") - 0.01).abs() < 1e-4);
        assert!(get(&f, "curvature_sd") < 1e-6);
        let omega = std::f64::consts::PI / 1.8;
        assert!((get(&f, "omega_mean") - omega).abs() < 1e-3 * omega);
        assert!((get(&f, "total_turn_rad") - std::f64::consts::PI).abs() < 0.02);
        assert!((get(&f, "max_deviation_px") - 100.0).abs() < 1e-6);
        assert!((get(&f, "v_mean") - arc / 1.8).abs() < 0.01 * arc);
        assert_eq!(get(&f, "sharp_turns"), 0.0);
        // Heading to the point a fifth along the arc (36°) vs the diameter: 72°.
        let err = get(&f, "initial_angle_error_rad").to_degrees();
        assert!((err - 72.0).abs() < 0.6, "{err}");
    }

    #[test]
    fn speed_peaks_count_sub_movements_not_noise() {
        assert_eq!(
            speed_peaks(&[1.0, 5.0, 10.0, 5.0, 2.0, 6.0, 8.0, 3.0, 0.5]),
            2.0
        );
        assert_eq!(speed_peaks(&[1.0, 5.0, 10.0, 9.5, 9.8, 5.0, 0.5]), 1.0);
        assert_eq!(speed_peaks(&[]), 0.0);
    }

    #[test]
    fn pauses_and_resting_steps_stay_finite() {
        let pts = vec![
            Point {
                t: 0.0,
                x: 0.0,
                y: 0.0,
            },
            Point {
                t: 0.5,
                x: 0.0,
                y: 0.0,
            },
            Point {
                t: 0.51,
                x: 5.0,
                y: 0.0,
            },
            Point {
                t: 0.52,
                x: 5.0,
                y: 0.0,
            },
        ];
        let f = action_features(&action(pts));
        assert!(f.iter().all(|x| x.is_finite()));
        assert_eq!(get(&f, "pauses"), 1.0);
        assert!((get(&f, "longest_pause_s") - 0.5).abs() < 1e-12);
    }
}
