//! Raw pointer events → mouse actions.
//!
//! Three kinds of action (after Ahmed & Traoré 2007 and Antal & Egyed-Zsigmond 2019):
//!
//! * **mouse move (MM)**: pointer moves with no button held, ended by a pause longer than
//!   `pause_split_ms`, a wheel event, a coordinate jump or the end of the window;
//! * **point-and-click (PC)**: the movement that led to a button press (if it ended at most
//!   `pause_split_ms` before it), then the press and the release of the same button with
//!   the pointer (nearly) still;
//! * **drag-and-drop (DD)**: a press, moves with the button held that leave the press
//!   point by more than `drag_min_px`, and the release.
//!
//! Input from outside is never trusted. Every event that cannot be used is skipped and
//! counted in [`SegmentStats`], never a panic:
//!
//! * non-finite or out-of-range coordinates (Balabit's RDP capture writes 65535, 65535
//!   when the pointer leaves the screen) are skipped;
//! * a single step longer than `max_step_px` is a **coordinate jump** (a warp, a sentinel
//!   value, a second screen): the action in progress ends there, a new one starts at the
//!   new point;
//! * **duplicate timestamps**: a move at the same time as the previous move replaces it
//!   (the pointer's latest position at that instant; 15 % of Balabit's rows); a move at the
//!   same time as a press is dropped (the press fixes the point);
//! * **time going backwards**: the action in progress is discarded and segmentation
//!   restarts at the new time (a clock step must not produce a negative duration);
//! * a release without its press, a second button pressed while one is held, and a press
//!   still held at the end of the window are skipped and counted;
//! * actions with fewer than `min_points` distinct points, no travel or no duration are
//!   dropped and counted (`short_actions`): there is nothing to measure.

use habitus_plugin::{Event, EventKind};

/// Segmentation parameters (from the plugin config).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SegmentParams {
    /// A pause longer than this ends a movement, and detaches a press from the movement
    /// before it.
    pub pause_split_us: u64,
    /// A single step longer than this is a coordinate jump, not a movement.
    pub max_step_px: f64,
    /// A press followed by moves leaving the press point by more than this is a drag.
    pub drag_min_px: f64,
    /// Fewest distinct points an action needs to be measured.
    pub min_points: usize,
}

/// Coordinates beyond this magnitude are sentinel values or garbage, never a position.
pub const MAX_COORDINATE: f64 = 32_767.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionKind {
    Move,
    PointClick,
    DragDrop,
}

impl ActionKind {
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Move => "MM",
            ActionKind::PointClick => "PC",
            ActionKind::DragDrop => "DD",
        }
    }
}

/// One sampled pointer position; `t` in seconds from the window's first event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub t: f64,
    pub x: f64,
    pub y: f64,
}

/// One action, ready for feature extraction.
#[derive(Clone, Debug, PartialEq)]
pub struct Action {
    pub kind: ActionKind,
    /// The measured trajectory, strictly increasing in time: the approach for PC, the
    /// path from press to release for DD, the movement for MM.
    pub points: Vec<Point>,
    /// Button number (PC, DD); 0 for MM.
    pub button: u32,
    /// PC: seconds from the last approach point to the press.
    pub pause_before_press: f64,
    /// PC, DD: seconds from press to release.
    pub hold: f64,
    /// PC: distance (px) between press and release positions.
    pub click_slip: f64,
    /// Seconds between the previous pointer event and the action's start (0 when the
    /// action starts the window, follows a release or a coordinate jump).
    pub idle_before: f64,
}

/// What segmentation skipped, and why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentStats {
    /// Pointer, button and wheel events seen.
    pub events: u32,
    /// Events of other kinds (keys, touch): ignored.
    pub other_kinds: u32,
    /// Non-finite or out-of-range coordinates.
    pub invalid_coordinates: u32,
    /// Steps longer than `max_step_px`.
    pub coordinate_jumps: u32,
    /// Moves merged into (or dropped at) the previous point's timestamp.
    pub duplicate_timestamps: u32,
    /// Events earlier than the previous one.
    pub backwards_times: u32,
    /// Releases without a press, presses of a second button while one is held.
    pub unmatched_buttons: u32,
    /// Presses still held at the end of the window, or cut by a jump or a clock step.
    pub unfinished_presses: u32,
    /// Candidate actions dropped for too few points, no travel or no duration.
    pub short_actions: u32,
    /// Actions produced.
    pub actions: u32,
}

struct Press {
    button: u32,
    down: Point,
    /// The approach movement (PC), if it ended close enough to the press.
    approach: Vec<Point>,
    /// Press point, then moves while held.
    drag: Vec<Point>,
    /// Farthest distance from the press point while held.
    travel: f64,
    /// Idle time before the approach (PC) and before the press (DD).
    approach_idle: f64,
    press_idle: f64,
    /// The last point of `drag` is the press itself (so a same-time move is dropped).
    anchored: bool,
}

/// Incremental segmenter: feed events in order, collect actions.
pub struct Segmenter {
    params: SegmentParams,
    origin_us: Option<u64>,
    last_us: u64,
    /// Time of the previous usable event, and the idle time before the current one.
    prev_t: Option<f64>,
    idle: f64,
    path: Vec<Point>,
    path_idle: f64,
    press: Option<Press>,
    pub stats: SegmentStats,
    pub actions: Vec<Action>,
}

fn distance(a: &Point, b: &Point) -> f64 {
    (a.x - b.x).hypot(a.y - b.y)
}

impl Segmenter {
    pub fn new(params: SegmentParams) -> Segmenter {
        Segmenter {
            params,
            origin_us: None,
            last_us: 0,
            prev_t: None,
            idle: 0.0,
            path: Vec::new(),
            path_idle: 0.0,
            press: None,
            stats: SegmentStats::default(),
            actions: Vec::new(),
        }
    }

    fn emit(&mut self, action: Action) {
        let pts = &action.points;
        let enough = pts.len() >= self.params.min_points;
        let duration = match (pts.first(), pts.last()) {
            (Some(a), Some(b)) => b.t - a.t,
            _ => 0.0,
        };
        let travel: f64 = pts.windows(2).map(|w| distance(&w[0], &w[1])).sum();
        if enough && duration > 0.0 && travel > 0.0 {
            self.stats.actions += 1;
            self.actions.push(action);
        } else {
            self.stats.short_actions += 1;
        }
    }

    /// Ends the free movement in progress (an MM action if it is long enough).
    fn close_path(&mut self) {
        if self.path.is_empty() {
            return;
        }
        let points = std::mem::take(&mut self.path);
        if points.len() == 1 {
            // A lone point (a jump target, the start of a window) is not an attempted action.
            return;
        }
        self.emit(Action {
            kind: ActionKind::Move,
            points,
            button: 0,
            pause_before_press: 0.0,
            hold: 0.0,
            click_slip: 0.0,
            idle_before: self.path_idle,
        });
    }

    /// Starts a free movement at `p`, `idle` seconds after the previous event.
    fn start_path(&mut self, p: Point, idle: f64) {
        self.path.clear();
        self.path.push(p);
        self.path_idle = idle;
    }

    fn abandon_press(&mut self) {
        if self.press.take().is_some() {
            self.stats.unfinished_presses += 1;
        }
    }

    /// Feeds one event (events must come in time order; disorder is handled, see the
    /// module docs).
    pub fn push(&mut self, e: &Event) {
        let pointer_kind = matches!(
            e.kind,
            EventKind::POINTER_MOVE
                | EventKind::BUTTON_DOWN
                | EventKind::BUTTON_UP
                | EventKind::WHEEL
        );
        if !pointer_kind {
            self.stats.other_kinds += 1;
            return;
        }
        self.stats.events += 1;
        let origin = *self.origin_us.get_or_insert(e.t_us);
        if e.t_us < self.last_us {
            self.stats.backwards_times += 1;
            self.path.clear();
            self.abandon_press();
            self.prev_t = None;
        }
        // Times before the first event (after a clock step) are measured from the new time.
        if e.t_us < origin {
            self.origin_us = Some(e.t_us);
        }
        self.last_us = e.t_us;
        let origin = self.origin_us.unwrap_or(e.t_us);
        let t = (e.t_us - origin) as f64 * 1e-6;
        self.idle = self.prev_t.map_or(0.0, |prev| (t - prev).max(0.0));
        if e.kind == EventKind::WHEEL {
            self.prev_t = Some(t);
            // A scroll interrupts a movement; wheel deltas carry no position.
            if self.press.is_none() {
                self.close_path();
            }
            return;
        }
        let (x, y) = (e.x as f64, e.y as f64);
        if !x.is_finite() || !y.is_finite() || x.abs() > MAX_COORDINATE || y.abs() > MAX_COORDINATE
        {
            self.stats.invalid_coordinates += 1;
            return;
        }
        let p = Point { t, x, y };
        self.prev_t = Some(t);
        match e.kind {
            EventKind::POINTER_MOVE => self.on_move(p),
            EventKind::BUTTON_DOWN => self.on_down(p, e.pointer),
            _ => self.on_up(p, e.pointer),
        }
    }

    fn on_move(&mut self, p: Point) {
        let params = self.params;
        if let Some(press) = self.press.as_mut() {
            let last = *press.drag.last().unwrap_or(&press.down);
            if distance(&last, &p) > params.max_step_px {
                self.stats.coordinate_jumps += 1;
                self.abandon_press();
                self.start_path(p, 0.0);
                return;
            }
            if p.t <= last.t {
                self.stats.duplicate_timestamps += 1;
                if !press.anchored {
                    if let Some(l) = press.drag.last_mut() {
                        *l = Point { t: l.t, ..p };
                    }
                }
            } else {
                press.drag.push(p);
                press.anchored = false;
            }
            press.travel = press.travel.max(distance(&press.down, &p));
            return;
        }
        if let Some(&last) = self.path.last() {
            if distance(&last, &p) > params.max_step_px {
                self.stats.coordinate_jumps += 1;
                self.close_path();
                self.start_path(p, 0.0);
                return;
            }
            if p.t <= last.t {
                self.stats.duplicate_timestamps += 1;
                if let Some(l) = self.path.last_mut() {
                    *l = Point { t: l.t, ..p };
                }
                return;
            }
            if ((p.t - last.t) * 1e6) as u64 > params.pause_split_us {
                self.close_path();
            }
        }
        if self.path.is_empty() {
            self.start_path(p, self.idle);
        } else {
            self.path.push(p);
        }
    }

    fn on_down(&mut self, p: Point, button: u32) {
        if let Some(press) = &self.press {
            if press.button != button {
                self.stats.unmatched_buttons += 1;
                return;
            }
            // The same button again: its release was lost.
            self.abandon_press();
        }
        let attached = self
            .path
            .last()
            .is_some_and(|l| ((p.t - l.t) * 1e6) as u64 <= self.params.pause_split_us);
        let approach = if attached {
            std::mem::take(&mut self.path)
        } else {
            self.close_path();
            Vec::new()
        };
        self.press = Some(Press {
            button,
            down: p,
            approach,
            drag: vec![p],
            travel: 0.0,
            approach_idle: self.path_idle,
            press_idle: self.idle,
            anchored: true,
        });
    }

    fn on_up(&mut self, p: Point, button: u32) {
        let Some(press) = self.press.take() else {
            self.stats.unmatched_buttons += 1;
            return;
        };
        if press.button != button {
            self.stats.unmatched_buttons += 1;
            self.press = Some(press);
            return;
        }
        let hold = p.t - press.down.t;
        let travel = press.travel.max(distance(&press.down, &p));
        if travel > self.params.drag_min_px {
            let mut points = press.drag;
            match points.last_mut() {
                Some(l) if l.t >= p.t => *l = Point { t: l.t, ..p },
                _ => points.push(p),
            }
            self.emit(Action {
                kind: ActionKind::DragDrop,
                points,
                button,
                pause_before_press: 0.0,
                hold,
                click_slip: 0.0,
                idle_before: press.press_idle,
            });
        } else if press.approach.is_empty() {
            // A click with no movement before it (the second click of a double click):
            // nothing to measure the movement of.
            self.stats.short_actions += 1;
        } else {
            let pause = press.down.t - press.approach.last().map_or(press.down.t, |l| l.t);
            self.emit(Action {
                kind: ActionKind::PointClick,
                points: press.approach,
                button,
                pause_before_press: pause,
                hold,
                click_slip: distance(&press.down, &p),
                idle_before: press.approach_idle,
            });
        }
        // The pointer rests at the release point: the next movement starts there.
        self.start_path(p, 0.0);
    }

    /// Ends the window: the movement in progress becomes an action, a held press is
    /// counted as unfinished.
    pub fn finish(mut self) -> (Vec<Action>, SegmentStats) {
        self.abandon_press();
        self.close_path();
        (self.actions, self.stats)
    }
}

/// Segments a whole window.
pub fn segment(events: &[Event], params: SegmentParams) -> (Vec<Action>, SegmentStats) {
    let mut s = Segmenter::new(params);
    for e in events {
        s.push(e);
    }
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1000;

    /// The defaults, except that short synthetic strokes (4+ points) count as actions.
    fn params() -> SegmentParams {
        SegmentParams {
            min_points: 4,
            ..crate::config::Config::default().segment_params()
        }
    }

    fn mv(t_ms: u64, x: f32, y: f32) -> Event {
        Event::at(EventKind::POINTER_MOVE, t_ms * MS, x, y)
    }
    fn button(kind: EventKind, t_ms: u64, x: f32, y: f32, b: u32) -> Event {
        Event {
            pointer: b,
            ..Event::at(kind, t_ms * MS, x, y)
        }
    }
    fn down(t_ms: u64, x: f32, y: f32) -> Event {
        button(EventKind::BUTTON_DOWN, t_ms, x, y, 1)
    }
    fn up(t_ms: u64, x: f32, y: f32) -> Event {
        button(EventKind::BUTTON_UP, t_ms, x, y, 1)
    }
    /// `n` moves from `(x0, y0)` by `(dx, dy)` each, every 16 ms from `t0`.
    fn line(t0: u64, x0: f32, y0: f32, dx: f32, dy: f32, n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| mv(t0 + 16 * i as u64, x0 + dx * i as f32, y0 + dy * i as f32))
            .collect()
    }

    #[test]
    fn move_click_drag_are_told_apart() {
        let mut ev = line(0, 0.0, 0.0, 10.0, 0.0, 10); // MM, ends at t=144
                                                       // 1 s pause: a new movement that ends in a click.
        ev.extend(line(1200, 100.0, 0.0, 0.0, 10.0, 8)); // ends t=1312 at (100,70)
        ev.push(down(1400, 100.0, 70.0));
        ev.push(up(1490, 100.0, 70.0));
        // Drag: press, move 50 px with the button held, release.
        ev.push(down(3000, 100.0, 70.0));
        ev.extend(line(3016, 105.0, 70.0, 5.0, 0.0, 10));
        ev.push(up(3300, 150.0, 70.0));
        let (actions, stats) = segment(&ev, params());
        let kinds: Vec<ActionKind> = actions.iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            vec![
                ActionKind::Move,
                ActionKind::PointClick,
                ActionKind::DragDrop
            ],
            "{stats:?}"
        );
        assert_eq!(actions[0].points.len(), 10);
        let pc = &actions[1];
        assert_eq!(pc.points.len(), 8);
        assert!((pc.pause_before_press - 0.088).abs() < 1e-9);
        assert!((pc.hold - 0.090).abs() < 1e-9);
        let dd = &actions[2];
        assert_eq!(dd.points.len(), 12); // press, 10 moves, release
        assert!((dd.hold - 0.300).abs() < 1e-9);
        assert_eq!(stats.actions, 3);
        let idle: Vec<f64> = actions.iter().map(|a| a.idle_before).collect();
        assert!(idle[0] == 0.0 && (idle[1] - 1.056).abs() < 1e-9, "{idle:?}");
        assert!((idle[2] - 1.51).abs() < 1e-9, "{idle:?}");
        assert_eq!(stats.short_actions, 0);
    }

    #[test]
    fn a_long_pause_before_the_press_detaches_the_click() {
        let mut ev = line(0, 0.0, 0.0, 10.0, 0.0, 10);
        ev.push(down(2000, 90.0, 0.0));
        ev.push(up(2080, 90.0, 0.0));
        let (actions, stats) = segment(&ev, params());
        assert_eq!(actions.len(), 1);
        assert_eq!(actions[0].kind, ActionKind::Move);
        assert_eq!(stats.short_actions, 1, "the bare click is counted");
    }

    #[test]
    fn wheel_ends_a_movement() {
        let mut ev = line(0, 0.0, 0.0, 10.0, 0.0, 6);
        ev.push(Event::at(EventKind::WHEEL, 100 * MS, 0.0, -1.0));
        ev.extend(line(116, 50.0, 0.0, 10.0, 0.0, 6));
        let (actions, _) = segment(&ev, params());
        assert_eq!(actions.len(), 2);
    }

    #[test]
    fn duplicate_timestamps_merge_into_the_latest_position() {
        let ev = vec![
            mv(0, 0.0, 0.0),
            mv(16, 10.0, 0.0),
            mv(16, 12.0, 0.0),
            mv(32, 20.0, 0.0),
            mv(48, 30.0, 0.0),
            mv(48, 30.0, 0.0),
        ];
        let (actions, stats) = segment(&ev, params());
        assert_eq!(stats.duplicate_timestamps, 2);
        assert_eq!(actions.len(), 1);
        let xs: Vec<f64> = actions[0].points.iter().map(|p| p.x).collect();
        assert_eq!(xs, vec![0.0, 12.0, 20.0, 30.0]);
        let ts = actions[0].points.windows(2).all(|w| w[1].t > w[0].t);
        assert!(ts, "strictly increasing times");
    }

    #[test]
    fn jumps_and_sentinels_split_and_are_counted() {
        let mut ev = line(0, 0.0, 0.0, 10.0, 0.0, 6);
        ev.push(mv(100, 65535.0, 65535.0)); // Balabit's off-screen sentinel
        ev.push(mv(116, f32::NAN, 3.0));
        ev.push(mv(132, 3000.0, 0.0)); // a jump (warp to another screen)
        ev.extend(line(148, 3010.0, 0.0, 10.0, 0.0, 6));
        let (actions, stats) = segment(&ev, params());
        assert_eq!(stats.invalid_coordinates, 2);
        assert_eq!(stats.coordinate_jumps, 1);
        assert_eq!(actions.len(), 2);
        assert!(actions.iter().all(|a| a
            .points
            .windows(2)
            .all(|w| distance(&w[0], &w[1]) <= 1500.0)));
    }

    #[test]
    fn clock_going_backwards_discards_the_action_in_progress() {
        let mut ev = line(10_000, 0.0, 0.0, 10.0, 0.0, 6);
        ev.push(down(10_100, 50.0, 0.0));
        ev.extend(line(500, 50.0, 0.0, 10.0, 0.0, 6)); // clock stepped back 9.6 s
        ev.push(up(600, 100.0, 0.0)); // its press was discarded
        let (actions, stats) = segment(&ev, params());
        assert_eq!(stats.backwards_times, 1);
        assert_eq!(stats.unfinished_presses, 1);
        assert_eq!(stats.unmatched_buttons, 1);
        assert_eq!(actions.len(), 1, "{stats:?}");
        assert!(actions[0].points.iter().all(|p| p.t >= 0.0));
        assert!(actions[0].points.windows(2).all(|w| w[1].t > w[0].t));
    }

    #[test]
    fn windows_without_actions_yield_nothing_and_say_why() {
        let (actions, stats) = segment(&[], params());
        assert!(actions.is_empty());
        assert_eq!(stats, SegmentStats::default());
        // Only clicks, keys and a lone point.
        let ev = vec![
            Event::key(EventKind::KEY_DOWN, 0, 7),
            down(10, 5.0, 5.0),
            up(60, 5.0, 5.0),
            up(70, 5.0, 5.0),
            mv(100, 5.0, 5.0),
            down(200, 5.0, 5.0),
        ];
        let (actions, stats) = segment(&ev, params());
        assert!(actions.is_empty());
        assert_eq!(stats.other_kinds, 1);
        assert_eq!(stats.unmatched_buttons, 1);
        assert_eq!(stats.unfinished_presses, 1);
        assert_eq!(stats.short_actions, 1);
    }

    #[test]
    fn a_second_button_while_one_is_held_is_ignored() {
        let mut ev = line(0, 0.0, 0.0, 10.0, 0.0, 6);
        ev.push(down(90, 50.0, 0.0));
        ev.push(button(EventKind::BUTTON_DOWN, 100, 50.0, 0.0, 3));
        ev.push(button(EventKind::BUTTON_UP, 110, 50.0, 0.0, 3));
        ev.push(up(150, 50.0, 0.0));
        let (actions, stats) = segment(&ev, params());
        assert_eq!(stats.unmatched_buttons, 2);
        assert_eq!(actions.len(), 1);
        assert_eq!(actions[0].kind, ActionKind::PointClick);
        assert_eq!(actions[0].button, 1);
    }
}
