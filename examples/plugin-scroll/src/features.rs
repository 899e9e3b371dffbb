//! From a window of raw events to the seven numbers that describe how someone scrolls.
//!
//! Wheel events arrive in *bursts* (a flick of the finger turns the wheel several notches
//! in quick succession) separated by *pauses* (reading). Per window:
//!
//! | # | name | what |
//! |---|------|------|
//! | 0 | `interval.ln_ms.mean` | mean of ln(ms between wheel events inside a burst) |
//! | 1 | `interval.ln_ms.sd` | spread of the same |
//! | 2 | `burst.ln_events.mean` | mean of ln(wheel events per burst) |
//! | 3 | `pause.ln_ms.mean` | mean of ln(ms between bursts), pauses longer than `max_pause_ms` ignored |
//! | 4 | `notch.ln_abs.mean` | mean of ln(notches per event), i.e. how hard the wheel is flicked |
//! | 5 | `reversal.rate` | share of consecutive vertical events that change direction |
//! | 6 | `horizontal.share` | share of events that scroll sideways |
//!
//! Logs because timing noise is multiplicative. Intervals are floored at 1 ms (a device
//! can report two axes in one frame, at the same microsecond).

use habitus_plugin::{Event, EventKind, PluginError};

use crate::config::Config;

pub const FEATURES: usize = 7;

pub const FEATURE_NAMES: [&str; FEATURES] = [
    "interval.ln_ms.mean",
    "interval.ln_ms.sd",
    "burst.ln_events.mean",
    "pause.ln_ms.mean",
    "notch.ln_abs.mean",
    "reversal.rate",
    "horizontal.share",
];

/// The features of one window and how many wheel events they rest on.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowFeatures {
    pub values: [f64; FEATURES],
    pub events: u32,
}

/// Computes the features, or says why the window cannot be used.
///
/// * Times going backwards, or a non-finite wheel delta: `INVALID_INPUT` (the host should
///   never send them; the window's rhythm would be meaningless).
/// * Fewer than `min_events` wheel events, fewer than 3 intervals inside bursts, or no
///   pause between bursts: `NOT_ENOUGH_DATA`.
///
/// Events of other kinds are ignored (the host only routes `Wheel`, but a plugin must not
/// rely on it), as are wheel events that move nothing.
pub fn extract(window: &[Event], config: &Config) -> Result<WindowFeatures, PluginError> {
    let mut last_t = 0u64;
    let mut previous: Option<&Event> = None;
    let mut events = 0u32;
    let (mut intervals, mut notches) = (Vec::new(), Vec::new());
    let mut pauses = Vec::new();
    let mut bursts: Vec<f64> = Vec::new();
    let mut burst_len = 0u32;
    let (mut reversals, mut vertical_pairs, mut horizontal) = (0u32, 0u32, 0u32);
    let mut last_direction = 0.0f32;
    for (i, e) in window.iter().enumerate() {
        if e.t_us < last_t {
            return Err(PluginError::invalid_input(format!(
                "event {i} goes back in time ({} us after {} us)",
                e.t_us, last_t
            )));
        }
        last_t = e.t_us;
        if e.kind != EventKind::WHEEL {
            continue;
        }
        if !e.x.is_finite() || !e.y.is_finite() {
            return Err(PluginError::invalid_input(format!(
                "wheel event {i} has a non-finite delta"
            )));
        }
        if e.x == 0.0 && e.y == 0.0 {
            continue;
        }
        events += 1;
        let sideways = e.x.abs() > e.y.abs();
        let amount = if sideways { e.x.abs() } else { e.y.abs() };
        notches.push((amount as f64).max(1e-3).ln());
        if sideways {
            horizontal += 1;
        } else {
            let direction = e.y.signum();
            if last_direction != 0.0 {
                vertical_pairs += 1;
                reversals += (direction != last_direction) as u32;
            }
            last_direction = direction;
        }
        if let Some(p) = previous {
            let gap_ms = ((e.t_us - p.t_us) as f64 / 1000.0).max(1.0);
            if gap_ms <= config.burst_gap_ms {
                intervals.push(gap_ms.ln());
                burst_len += 1;
            } else {
                bursts.push((burst_len as f64).ln());
                burst_len = 1;
                if gap_ms <= config.max_pause_ms {
                    pauses.push(gap_ms.ln());
                }
            }
        } else {
            burst_len = 1;
        }
        previous = Some(e);
    }
    if burst_len > 0 {
        bursts.push((burst_len as f64).ln());
    }
    if (events as f64) < config.min_events || intervals.len() < 3 || pauses.is_empty() {
        return Err(PluginError::not_enough_data(format!(
            "{events} wheel events in {} bursts: need at least {} events, 3 intervals within bursts and one pause",
            bursts.len(),
            config.min_events
        )));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let interval_mean = mean(&intervals);
    let interval_sd = (intervals
        .iter()
        .map(|x| (x - interval_mean).powi(2))
        .sum::<f64>()
        / (intervals.len() - 1) as f64)
        .sqrt();
    Ok(WindowFeatures {
        values: [
            interval_mean,
            interval_sd,
            mean(&bursts),
            mean(&pauses),
            mean(&notches),
            reversals as f64 / vertical_pairs.max(1) as f64,
            horizontal as f64 / events as f64,
        ],
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wheel(t_ms: u64, dy: f32) -> Event {
        Event::at(EventKind::WHEEL, t_ms * 1000, 0.0, dy)
    }

    /// Three bursts of four notches 40 ms apart, 1 s pauses, the middle burst upwards.
    fn three_bursts() -> Vec<Event> {
        let mut w = Vec::new();
        for (b, dir) in [(0u64, -1.0f32), (1, 1.0), (2, -1.0)] {
            for i in 0..4 {
                w.push(wheel(b * 1120 + i * 40, dir));
            }
        }
        w
    }

    #[test]
    fn bursts_pauses_and_reversals() {
        let config = Config {
            min_events: 4.0,
            ..Config::default()
        };
        let f = extract(&three_bursts(), &config).unwrap();
        assert_eq!(f.events, 12);
        assert!((f.values[0] - 40f64.ln()).abs() < 1e-9, "{:?}", f.values);
        assert!(f.values[1].abs() < 1e-9);
        assert!((f.values[2] - 4f64.ln()).abs() < 1e-9);
        assert!((f.values[3] - 1000f64.ln()).abs() < 1e-9);
        assert_eq!(f.values[4], 0.0); // one notch per event
        assert!((f.values[5] - 2.0 / 11.0).abs() < 1e-9);
        assert_eq!(f.values[6], 0.0);
    }

    #[test]
    fn other_kinds_and_still_wheels_are_ignored() {
        let config = Config {
            min_events: 4.0,
            ..Config::default()
        };
        let clean = extract(&three_bursts(), &config).unwrap();
        let mut noisy = Vec::new();
        for e in three_bursts() {
            noisy.push(e);
            noisy.push(Event::key(EventKind::KEY_DOWN, e.t_us, 7));
            noisy.push(Event::at(EventKind::WHEEL, e.t_us, 0.0, 0.0));
        }
        assert_eq!(extract(&noisy, &config).unwrap(), clean);
    }

    #[test]
    fn refusals() {
        let config = Config::default();
        let kind = |w: &[Event]| extract(w, &config).unwrap_err().kind;
        assert_eq!(kind(&[]), habitus_plugin::ErrorKind::NOT_ENOUGH_DATA);
        assert_eq!(
            kind(&three_bursts()[..1]),
            habitus_plugin::ErrorKind::NOT_ENOUGH_DATA
        );
        let mut backwards = three_bursts();
        backwards.swap(2, 3);
        assert_eq!(kind(&backwards), habitus_plugin::ErrorKind::INVALID_INPUT);
        let mut nan = three_bursts();
        nan[5].y = f32::NAN;
        assert_eq!(kind(&nan), habitus_plugin::ErrorKind::INVALID_INPUT);
    }
}
