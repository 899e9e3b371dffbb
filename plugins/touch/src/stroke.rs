//! Raw touch events → strokes.
//!
//! A stroke is everything one finger (`pointer`) does from `TouchDown` to `TouchUp`: the
//! down position and every `TouchMove` are its points (a `TouchUp` only ends it: evdev
//! hosts report no position on release). What is not a stroke is skipped and counted,
//! never trusted and never a panic:
//!
//! * **single point** — down and up with no move in between;
//! * **tap** — points, but no displacement (Touchalytics: "clicks");
//! * **no duration** — every point has the same timestamp: no speed can be measured;
//! * **clock backwards** — an event earlier than the touch event before it (in window
//!   order, any finger): the stroke it belongs to is dropped;
//! * **non-finite** — a NaN or infinite coordinate, pressure or area;
//! * **multi-touch** — another finger was down at the same time (pinch, two-finger
//!   scroll): Touchalytics models single-finger strokes only;
//! * **orphan events** — a move or up of a finger that is not down;
//! * **interrupted** — a second down of a finger that is already down;
//! * **unfinished** — still down at the end of the window (not an error: the next window
//!   will hold the rest; a live host keeps windows on stroke boundaries where it can).
//!
//! Duplicate timestamps inside a stroke are allowed (touch controllers batch samples);
//! the point pairs between them carry no velocity and are counted in
//! [`Skipped::duplicate_timestamps`].

use habitus_plugin::{Event, EventKind};

/// One sample of a stroke, in Touchalytics units: seconds from touch-down, millimetres,
/// y axis pointing up (screen y negated).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub t: f64,
    pub x: f64,
    pub y: f64,
    pub pressure: f64,
    pub area: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stroke {
    pub points: Vec<Point>,
    /// Seconds from the previous stroke's release to this touch-down; `None` for the
    /// first stroke of a window.
    pub inter_stroke: Option<f64>,
    /// Input events the stroke was built from (down, moves, up).
    pub events: u32,
}

/// What was not turned into a stroke, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    pub single_point: u32,
    pub taps: u32,
    pub no_duration: u32,
    pub clock_backwards: u32,
    pub non_finite: u32,
    pub multi_touch: u32,
    pub orphan_events: u32,
    pub interrupted: u32,
    pub unfinished: u32,
    /// Point pairs with equal timestamps (kept, but without a velocity).
    pub duplicate_timestamps: u32,
}

impl Skipped {
    /// Strokes (not events or pairs) that were dropped.
    pub fn strokes(&self) -> u32 {
        self.single_point
            + self.taps
            + self.no_duration
            + self.clock_backwards
            + self.non_finite
            + self.multi_touch
            + self.interrupted
    }
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} single-point, {} taps, {} without duration, {} clock going backwards, {} non-finite, {} multi-touch, {} interrupted, {} unfinished, {} orphan events",
            self.single_point,
            self.taps,
            self.no_duration,
            self.clock_backwards,
            self.non_finite,
            self.multi_touch,
            self.interrupted,
            self.unfinished,
            self.orphan_events
        )
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Segmentation {
    pub strokes: Vec<Stroke>,
    pub skipped: Skipped,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Poison {
    Clock,
    NonFinite,
}

struct Active {
    pointer: u32,
    down_us: u64,
    points: Vec<Point>,
    events: u32,
    poison: Option<Poison>,
    multi: bool,
}

/// Splits a window of events into strokes (in order of release).
pub fn segment(window: &[Event], pixels_per_mm: f64) -> Segmentation {
    let mut out = Segmentation::default();
    let mut active: Vec<Active> = Vec::new();
    let mut last_t: Option<u64> = None;
    let mut last_up: Option<u64> = None;
    let point = |e: &Event, down_us: u64| Point {
        t: (e.t_us.saturating_sub(down_us)) as f64 / 1e6,
        x: e.x as f64 / pixels_per_mm,
        y: -(e.y as f64) / pixels_per_mm,
        pressure: e.pressure as f64,
        area: e.area as f64,
    };
    for e in window {
        if !matches!(
            e.kind,
            EventKind::TOUCH_DOWN | EventKind::TOUCH_MOVE | EventKind::TOUCH_UP
        ) {
            continue;
        }
        // Compared with the previous touch event only: after a clock step back, the stroke
        // that straddles it is dropped and later strokes are measured on the new clock.
        let backwards = last_t.is_some_and(|t| e.t_us < t);
        last_t = Some(e.t_us);
        let slot = active.iter().position(|a| a.pointer == e.pointer);
        match e.kind {
            EventKind::TOUCH_DOWN => {
                if let Some(i) = slot {
                    active.remove(i);
                    out.skipped.interrupted += 1;
                }
                let multi = !active.is_empty();
                for a in active.iter_mut() {
                    a.multi = true;
                }
                let mut a = Active {
                    pointer: e.pointer,
                    down_us: e.t_us,
                    points: vec![point(e, e.t_us)],
                    events: 1,
                    poison: None,
                    multi,
                };
                if backwards {
                    a.poison = Some(Poison::Clock);
                } else if !e.is_finite() {
                    a.poison = Some(Poison::NonFinite);
                }
                active.push(a);
            }
            EventKind::TOUCH_MOVE => {
                let Some(i) = slot else {
                    out.skipped.orphan_events += 1;
                    continue;
                };
                let a = &mut active[i];
                a.events += 1;
                if backwards || e.t_us < a.down_us {
                    a.poison = Some(Poison::Clock);
                } else if !e.is_finite() {
                    a.poison.get_or_insert(Poison::NonFinite);
                } else {
                    a.points.push(point(e, a.down_us));
                }
            }
            _ => {
                let Some(i) = slot else {
                    out.skipped.orphan_events += 1;
                    continue;
                };
                let mut a = active.remove(i);
                a.events += 1;
                if backwards || e.t_us < a.down_us {
                    a.poison = Some(Poison::Clock);
                }
                let s = &mut out.skipped;
                match a.poison {
                    Some(Poison::Clock) => s.clock_backwards += 1,
                    Some(Poison::NonFinite) => s.non_finite += 1,
                    None if a.multi => s.multi_touch += 1,
                    None if a.points.len() < 2 => s.single_point += 1,
                    None if a
                        .points
                        .iter()
                        .all(|p| p.x == a.points[0].x && p.y == a.points[0].y) =>
                    {
                        s.taps += 1
                    }
                    None if a.points.iter().all(|p| p.t == a.points[0].t) => s.no_duration += 1,
                    None => {
                        s.duplicate_timestamps +=
                            a.points.windows(2).filter(|w| w[1].t <= w[0].t).count() as u32;
                        let inter_stroke = last_up
                            .filter(|&up| up <= a.down_us)
                            .map(|up| (a.down_us - up) as f64 / 1e6);
                        last_up = Some(e.t_us);
                        out.strokes.push(Stroke {
                            points: a.points,
                            inter_stroke,
                            events: a.events,
                        });
                    }
                }
            }
        }
    }
    out.skipped.unfinished += active.len() as u32;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, t_ms: u64, x: f32, y: f32) -> Event {
        Event::at(kind, t_ms * 1000, x, y)
    }
    const D: EventKind = EventKind::TOUCH_DOWN;
    const M: EventKind = EventKind::TOUCH_MOVE;
    const U: EventKind = EventKind::TOUCH_UP;

    #[test]
    fn splits_strokes_and_measures_the_gap() {
        let w = [
            ev(D, 0, 0.0, 0.0),
            ev(M, 10, 10.0, 0.0),
            ev(U, 20, 0.0, 0.0),
            ev(D, 520, 0.0, 0.0),
            ev(M, 530, 0.0, 10.0),
            ev(U, 540, 0.0, 0.0),
        ];
        let s = segment(&w, 1.0);
        assert_eq!(s.strokes.len(), 2);
        assert_eq!(s.skipped, Skipped::default());
        assert_eq!(s.strokes[0].inter_stroke, None);
        assert_eq!(s.strokes[1].inter_stroke, Some(0.5));
        // Screen y grows downwards; strokes use y up.
        assert_eq!(s.strokes[1].points[1].y, -10.0);
        assert_eq!(s.strokes[0].events, 3);
    }

    #[test]
    fn bad_input_is_skipped_and_counted() {
        let mut nan = ev(M, 110, f32::NAN, 1.0);
        nan.pointer = 0;
        let w = [
            // one point
            ev(D, 0, 5.0, 5.0),
            ev(U, 5, 5.0, 5.0),
            // tap: moves without displacement
            ev(D, 10, 5.0, 5.0),
            ev(M, 20, 5.0, 5.0),
            ev(U, 30, 5.0, 5.0),
            // clock going backwards inside a stroke
            ev(D, 50, 0.0, 0.0),
            ev(M, 40, 3.0, 0.0),
            ev(U, 60, 3.0, 0.0),
            // non-finite coordinate
            ev(D, 100, 0.0, 0.0),
            nan,
            ev(U, 120, 0.0, 0.0),
            // orphan move and up
            ev(M, 130, 1.0, 1.0),
            ev(U, 131, 1.0, 1.0),
            // duplicate timestamps are kept
            ev(D, 200, 0.0, 0.0),
            ev(M, 200, 1.0, 0.0),
            ev(M, 210, 2.0, 0.0),
            ev(U, 220, 2.0, 0.0),
            // unfinished
            ev(D, 300, 0.0, 0.0),
        ];
        let s = segment(&w, 1.0);
        assert_eq!(s.strokes.len(), 1);
        let k = s.skipped;
        assert_eq!(
            (
                k.single_point,
                k.taps,
                k.clock_backwards,
                k.non_finite,
                k.orphan_events
            ),
            (1, 1, 1, 1, 2)
        );
        assert_eq!((k.duplicate_timestamps, k.unfinished), (1, 1));
        assert_eq!(k.strokes(), 4);
        assert!(k.to_string().contains("1 clock going backwards"), "{k}");
    }

    #[test]
    fn multi_touch_and_interrupted_strokes_are_dropped() {
        let mut second = ev(D, 5, 50.0, 50.0);
        second.pointer = 1;
        let mut second_up = ev(U, 25, 60.0, 50.0);
        second_up.pointer = 1;
        let w = [
            ev(D, 0, 0.0, 0.0),
            second,
            ev(M, 10, 10.0, 0.0),
            ev(U, 20, 10.0, 0.0),
            second_up,
            ev(D, 100, 0.0, 0.0),
            ev(D, 110, 0.0, 0.0),
            ev(M, 120, 0.0, 9.0),
            ev(U, 130, 0.0, 9.0),
        ];
        let s = segment(&w, 1.0);
        assert_eq!(s.skipped.multi_touch, 2);
        assert_eq!(s.skipped.interrupted, 1);
        assert_eq!(s.strokes.len(), 1);
    }

    #[test]
    fn clock_going_backwards_between_strokes_drops_the_later_stroke() {
        let w = [
            ev(D, 100, 0.0, 0.0),
            ev(M, 110, 10.0, 0.0),
            ev(U, 120, 10.0, 0.0),
            ev(D, 50, 0.0, 0.0),
            ev(M, 60, 10.0, 0.0),
            ev(U, 70, 10.0, 0.0),
        ];
        let s = segment(&w, 1.0);
        assert_eq!(s.strokes.len(), 1);
        assert_eq!(s.skipped.clock_backwards, 1);
    }
}
