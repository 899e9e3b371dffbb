//! Synthetic behaviour: reproducible windows of typing, pointing, scrolling and swiping
//! from simulated people with stable habits.
//!
//! A simulated person ([`Habits`]) is a seed from which every habit (hold time, pointer
//! speed, scroll-burst length, swipe pressure, ...) is drawn once. Their windows are fresh
//! samples around those habits, so a profile enrolled from some of a person's windows
//! should recognise the others. [`Habits::shifted`] moves every habit of the same person
//! by a fixed step in a person-specific direction: shift 1 is a noticeably different
//! rhythm, shift 2.5 a clearly different one. The conformance kit expects scores to fall
//! as the shift grows.
//!
//! Everything is deterministic: the same habits and seed give the same events, on every
//! machine (no `std` randomness, no floating-point library differences beyond IEEE-754
//! `exp`/`ln`/`sin`/`cos`).

use crate::{Event, EventKind, PluginDescriptor};

/// A small, fast, reproducible random generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform(); // (0, 1]: ln stays finite
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// `-1.0` or `1.0`.
    pub fn sign(&mut self) -> f64 {
        if self.next_u64() & 1 == 0 {
            -1.0
        } else {
            1.0
        }
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// `median · e^(sd·N(0,1))`: timing noise is multiplicative.
    pub fn log_normal(&mut self, median: f64, sd: f64) -> f64 {
        median * (sd * self.normal()).exp()
    }
}

/// Mixes numbers into one seed (so that nearby inputs give unrelated streams).
fn mix(parts: &[u64]) -> u64 {
    let mut r = Rng::new(0x1234_5678);
    let mut h = 0u64;
    for &p in parts {
        r.0 ^= p.wrapping_add(h);
        h = r.next_u64();
    }
    h
}

/// A simulated person's habits: who (`person`) and how far their behaviour has been moved
/// away from their usual self (`shift`, 0 = usual).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Habits {
    pub person: u64,
    pub shift: f64,
}

impl Habits {
    /// Person `person` behaving as usual.
    pub fn of(person: u64) -> Habits {
        Habits { person, shift: 0.0 }
    }

    /// The same person with every habit moved `amount` steps further.
    pub fn shifted(self, amount: f64) -> Habits {
        Habits {
            shift: self.shift + amount,
            ..self
        }
    }

    /// A positive habit (a duration, a speed, a size): `typical` for the average person,
    /// varied between people by a log-normal spread `spread`, and moved by `step` (in log
    /// units) per unit of shift in a direction fixed per person and parameter. `index`
    /// names the parameter (any number unique within one generator).
    pub fn param(&self, index: u64, typical: f64, spread: f64, step: f64) -> f64 {
        let mut r = Rng::new(mix(&[self.person, index]));
        let base = r.normal() * spread;
        let direction = r.sign();
        typical * (base + self.shift * step * direction).exp()
    }

    /// A probability habit, varied and shifted like [`Habits::param`] but in logit space.
    pub fn probability(&self, index: u64, typical: f64, spread: f64, step: f64) -> f64 {
        let mut r = Rng::new(mix(&[self.person, index]));
        let base = r.normal() * spread;
        let direction = r.sign();
        let logit = (typical / (1.0 - typical)).ln() + base + self.shift * step * direction;
        1.0 / (1.0 + (-logit).exp())
    }
}

/// Builds about `events` events of one person's behaviour (fewer only when the
/// generator cannot stop mid-gesture; never more).
pub type Generator = fn(&Habits, &mut Rng, usize) -> Vec<Event>;

/// Which kind of behaviour to simulate.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// KeyDown/KeyUp: per-key hold times, per-digraph latencies, pauses.
    Typing,
    /// PointerMove along minimum-jerk paths with a personal bow and tremor, then
    /// ButtonDown/ButtonUp.
    Pointer,
    /// Wheel bursts: intervals, burst lengths, pauses, notch sizes, reversals.
    Wheel,
    /// TouchDown/TouchMove/TouchUp swipes and taps: speed, length, pressure, contact area.
    Touch,
    /// The author's own generator, for modalities the kit does not know.
    Custom {
        name: &'static str,
        generate: Generator,
    },
}

impl Behaviour {
    /// The behaviour that feeds a plugin consuming `kinds` (keys before wheel before
    /// touch before pointer, so that a plugin reading several gets its main signal).
    pub fn for_kinds(kinds: &[EventKind]) -> Behaviour {
        let has = |k: EventKind| kinds.contains(&k);
        if has(EventKind::KEY_DOWN) || has(EventKind::KEY_UP) {
            Behaviour::Typing
        } else if has(EventKind::TOUCH_DOWN)
            || has(EventKind::TOUCH_MOVE)
            || has(EventKind::TOUCH_UP)
        {
            Behaviour::Touch
        } else if has(EventKind::WHEEL)
            && !has(EventKind::POINTER_MOVE)
            && !has(EventKind::BUTTON_DOWN)
        {
            Behaviour::Wheel
        } else {
            Behaviour::Pointer
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Behaviour::Typing => "typing",
            Behaviour::Pointer => "pointer",
            Behaviour::Wheel => "wheel",
            Behaviour::Touch => "touch",
            Behaviour::Custom { name, .. } => name,
        }
    }

    fn generator(&self) -> Generator {
        match self {
            Behaviour::Typing => typing,
            Behaviour::Pointer => pointer,
            Behaviour::Wheel => wheel,
            Behaviour::Touch => touch,
            Behaviour::Custom { generate, .. } => *generate,
        }
    }

    /// Events per window a plugin of this behaviour typically scores.
    pub fn default_window_events(&self) -> usize {
        match self {
            Behaviour::Typing => 200,
            Behaviour::Pointer => 300,
            Behaviour::Wheel => 100,
            Behaviour::Touch => 200,
            Behaviour::Custom { .. } => 200,
        }
    }
}

/// The synthetic data set the conformance kit feeds a plugin.
#[derive(Clone, Debug)]
pub struct Synthetic {
    pub behaviour: Behaviour,
    /// Events per window (enrolment and trial windows).
    pub window_events: usize,
    /// Windows enrolled per profile.
    pub enrol_windows: usize,
    /// Windows scored per level of shift when comparing genuine and shifted behaviour.
    pub trial_windows: usize,
    /// Only these kinds are kept, as a host routes only declared kinds to a plugin
    /// (empty = keep everything).
    pub kinds: Vec<EventKind>,
}

impl Synthetic {
    /// `behaviour` with the default sizes (20 enrolment windows, 20 trials per level).
    pub fn new(behaviour: Behaviour) -> Synthetic {
        Synthetic {
            behaviour,
            window_events: behaviour.default_window_events(),
            enrol_windows: 20,
            trial_windows: 20,
            kinds: Vec::new(),
        }
    }

    /// The behaviour matching the descriptor's event kinds, filtered to those kinds.
    pub fn for_descriptor(descriptor: &PluginDescriptor) -> Synthetic {
        let kinds: Vec<EventKind> = descriptor.event_kinds.iter().copied().collect();
        Synthetic {
            kinds: kinds.clone(),
            ..Synthetic::new(Behaviour::for_kinds(&kinds))
        }
    }

    /// One window of `habits`' behaviour with the default size; `seed` picks the sample.
    pub fn window(&self, habits: &Habits, seed: u64) -> Vec<Event> {
        self.window_of(habits, seed, self.window_events)
    }

    /// One window of about `events` events (after filtering to [`Synthetic::kinds`]).
    pub fn window_of(&self, habits: &Habits, seed: u64, events: usize) -> Vec<Event> {
        let mut rng = Rng::new(mix(&[habits.person, habits.shift.to_bits(), seed]));
        let mut window = (self.behaviour.generator())(habits, &mut rng, events);
        if !self.kinds.is_empty() {
            window.retain(|e| self.kinds.contains(&e.kind));
        }
        window
    }

    /// `count` windows of `habits`, seeds `first_seed..`.
    pub fn windows(&self, habits: &Habits, first_seed: u64, count: usize) -> Vec<Vec<Event>> {
        (0..count as u64)
            .map(|i| self.window(habits, first_seed + i))
            .collect()
    }
}

/// Time origin of generated windows (any value works; a non-zero one catches plugins
/// that assume time starts at 0).
const T0: u64 = 5_000_000_000;

fn typing(h: &Habits, rng: &mut Rng, events: usize) -> Vec<Event> {
    const KEYS: u64 = 30;
    let hold = h.param(1, 95_000.0, 0.2, 0.3);
    let flight = h.param(2, 170_000.0, 0.25, 0.3);
    let noise = h.param(3, 0.18, 0.15, 0.15);
    let pause_p = h.probability(4, 0.04, 0.3, 0.3);
    let key_hold: Vec<f64> = (0..KEYS)
        .map(|k| h.param(100 + k, 1.0, 0.15, 0.2))
        .collect();
    let key_reach: Vec<f64> = (0..KEYS).map(|k| h.param(200 + k, 1.0, 0.2, 0.2)).collect();
    // Key frequencies fall with rank, as letters do in text.
    let weights: Vec<f64> = (0..KEYS).map(|r| 1.0 / (r as f64 + 1.5)).collect();
    let total: f64 = weights.iter().sum();
    let pick = |rng: &mut Rng| {
        let mut u = rng.uniform() * total;
        for (k, w) in weights.iter().enumerate() {
            if u < *w {
                return k;
            }
            u -= w;
        }
        KEYS as usize - 1
    };
    let key_id = |k: usize| (k as u32 + 1).wrapping_mul(0x9E37_79B1) ^ 0x5BD1_E995;
    let mut out = Vec::with_capacity(events + 2);
    let mut t = T0 + rng.below(1_000_000);
    let mut key = pick(rng);
    while out.len() < events {
        let hold_us = rng.log_normal(hold * key_hold[key], noise) as u64;
        out.push(Event::key(EventKind::KEY_DOWN, t, key_id(key)));
        out.push(Event::key(
            EventKind::KEY_UP,
            t + hold_us.max(1),
            key_id(key),
        ));
        let next = pick(rng);
        let mut dd = rng.log_normal(flight * key_reach[key] / key_reach[next].sqrt(), noise);
        if rng.uniform() < pause_p {
            dd += rng.log_normal(900_000.0, 0.4);
        }
        t += (dd as u64).max(1);
        key = next;
    }
    // Presses overlap releases when typing fast (rollover): order by time, as a host would.
    out.sort_by_key(|e| e.t_us);
    out.truncate(events);
    out
}

fn pointer(h: &Habits, rng: &mut Rng, events: usize) -> Vec<Event> {
    const INTERVAL_US: f64 = 8_000.0; // the device's report rate, not a habit
    let speed = h.param(1, 0.9, 0.25, 0.35); // px per ms
    let bow = h.param(2, 0.08, 0.4, 0.4);
    let tremor = h.param(3, 1.2, 0.3, 0.4);
    let dwell = h.param(4, 250_000.0, 0.3, 0.35);
    let click_hold = h.param(5, 95_000.0, 0.2, 0.3);
    let pause = h.param(6, 400_000.0, 0.3, 0.35);
    let mut out = Vec::with_capacity(events + 2);
    let mut t = T0 + rng.below(1_000_000);
    let (mut x, mut y) = (960.0f64, 540.0f64);
    while out.len() < events {
        let angle = rng.uniform() * std::f64::consts::TAU;
        let distance = 100.0 + rng.uniform() * 600.0;
        let tx = (x + distance * angle.cos()).clamp(0.0, 1919.0);
        let ty = (y + distance * angle.sin()).clamp(0.0, 1079.0);
        let (dx, dy) = (tx - x, ty - y);
        let d = (dx * dx + dy * dy).sqrt().max(1.0);
        let duration_us = rng.log_normal(d / speed * 1000.0, 0.15);
        let steps = ((duration_us / INTERVAL_US) as usize).max(3);
        let side = rng.sign();
        for i in 1..=steps {
            let s = i as f64 / steps as f64;
            let p = s * s * s * (10.0 - 15.0 * s + 6.0 * s * s); // minimum jerk
            let b = side * bow * d * (std::f64::consts::PI * s).sin();
            let px = x + dx * p - dy / d * b + tremor * rng.normal();
            let py = y + dy * p + dx / d * b + tremor * rng.normal();
            t += INTERVAL_US as u64;
            out.push(Event::at(EventKind::POINTER_MOVE, t, px as f32, py as f32));
        }
        x = tx;
        y = ty;
        t += rng.log_normal(dwell, 0.3) as u64;
        let mut down = Event::at(EventKind::BUTTON_DOWN, t, x as f32, y as f32);
        down.pointer = 1;
        out.push(down);
        t += rng.log_normal(click_hold, 0.2) as u64;
        let mut up = Event::at(EventKind::BUTTON_UP, t, x as f32, y as f32);
        up.pointer = 1;
        out.push(up);
        t += rng.log_normal(pause, 0.4) as u64;
    }
    out.truncate(events);
    out
}

fn wheel(h: &Habits, rng: &mut Rng, events: usize) -> Vec<Event> {
    let interval = h.param(1, 40_000.0, 0.25, 0.35);
    let burst = h.param(2, 6.0, 0.25, 0.35).max(1.2);
    let pause = h.param(3, 1_200_000.0, 0.3, 0.35);
    let notches = h.param(4, 1.4, 0.2, 0.3);
    let reverse_p = h.probability(5, 0.2, 0.3, 0.5);
    let horizontal_p = h.probability(6, 0.05, 0.3, 0.4);
    let mut out = Vec::with_capacity(events);
    let mut t = T0 + rng.below(1_000_000);
    let mut direction = -1.0f64; // reading: scrolling down
    while out.len() < events {
        if rng.uniform() < reverse_p {
            direction = -direction;
        }
        let horizontal = rng.uniform() < horizontal_p;
        // Geometric burst length with mean `burst`.
        let u = 1.0 - rng.uniform();
        let n = 1 + (u.ln() / (1.0 - 1.0 / burst).ln()).floor().min(200.0) as usize;
        for _ in 0..n {
            let delta = (direction * rng.log_normal(notches, 0.3).round().max(1.0)) as f32;
            let (x, y) = if horizontal {
                (delta, 0.0)
            } else {
                (0.0, delta)
            };
            out.push(Event::at(EventKind::WHEEL, t, x, y));
            t += rng.log_normal(interval, 0.25) as u64;
        }
        t += rng.log_normal(pause, 0.4) as u64;
    }
    out.truncate(events);
    out
}

fn touch(h: &Habits, rng: &mut Rng, events: usize) -> Vec<Event> {
    const INTERVAL_US: u64 = 16_000;
    let speed = h.param(1, 1.2, 0.25, 0.35); // px per ms
    let length = h.param(2, 450.0, 0.25, 0.3);
    let pressure = h.param(3, 0.45, 0.2, 0.25).min(1.0);
    let area = h.param(4, 60.0, 0.2, 0.25);
    let pause = h.param(5, 700_000.0, 0.3, 0.35);
    let tap_p = h.probability(6, 0.2, 0.3, 0.4);
    let tap_hold = h.param(7, 90_000.0, 0.2, 0.3);
    let slant = h.param(8, 0.15, 0.4, 0.4);
    let mut out = Vec::with_capacity(events + 2);
    let mut t = T0 + rng.below(1_000_000);
    let contact = |kind, t, x: f64, y: f64, p: f64, a: f64| Event {
        t_us: t,
        kind,
        key: 0,
        x: x as f32,
        y: y as f32,
        pressure: p as f32,
        area: a as f32,
        pointer: 0,
    };
    while out.len() < events {
        let x0 = 200.0 + rng.uniform() * 680.0;
        let y0 = 600.0 + rng.uniform() * 1000.0;
        let p = rng.log_normal(pressure, 0.1).min(1.0);
        let a = rng.log_normal(area, 0.1);
        out.push(contact(EventKind::TOUCH_DOWN, t, x0, y0, p, a));
        if rng.uniform() < tap_p {
            t += rng.log_normal(tap_hold, 0.2) as u64;
            out.push(contact(EventKind::TOUCH_UP, t, x0, y0, p * 0.8, a));
        } else {
            let len = rng.log_normal(length, 0.2);
            let steps = ((len / speed * 1000.0) as u64 / INTERVAL_US).max(2);
            let (mut x, mut y) = (x0, y0);
            for i in 1..=steps {
                let s = i as f64 / steps as f64;
                x = x0 + len * slant * s + rng.normal();
                y = y0 - len * s + rng.normal();
                t += INTERVAL_US;
                let pi = p * (1.0 - 0.3 * s);
                out.push(contact(EventKind::TOUCH_MOVE, t, x, y, pi, a));
            }
            t += INTERVAL_US;
            out.push(contact(EventKind::TOUCH_UP, t, x, y, p * 0.6, a));
        }
        t += rng.log_normal(pause, 0.4) as u64;
    }
    out.truncate(events);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_reproducible_ordered_and_sized() {
        for behaviour in [
            Behaviour::Typing,
            Behaviour::Pointer,
            Behaviour::Wheel,
            Behaviour::Touch,
        ] {
            let s = Synthetic::new(behaviour);
            let a = s.window(&Habits::of(7), 3);
            assert_eq!(a, s.window(&Habits::of(7), 3), "{}", behaviour.name());
            assert_ne!(a, s.window(&Habits::of(7), 4), "{}", behaviour.name());
            assert_eq!(a.len(), s.window_events, "{}", behaviour.name());
            assert!(a.windows(2).all(|w| w[0].t_us <= w[1].t_us));
            assert!(a.iter().all(Event::is_finite));
            let big = s.window_of(&Habits::of(7), 3, 100_000);
            assert_eq!(big.len(), 100_000, "{}", behaviour.name());
        }
    }

    #[test]
    fn shifted_habits_move_every_parameter() {
        let h = Habits::of(11);
        let base = h.param(1, 100.0, 0.2, 0.3);
        let moved = h.shifted(1.0).param(1, 100.0, 0.2, 0.3);
        assert!(((moved / base).ln().abs() - 0.3).abs() < 1e-9);
        let further = h.shifted(2.0).param(1, 100.0, 0.2, 0.3);
        assert!(((further / base).ln().abs() - 0.6).abs() < 1e-9);
        let p = h.probability(5, 0.2, 0.3, 0.5);
        assert!(p > 0.0 && p < 1.0);
    }

    #[test]
    fn kinds_pick_the_behaviour() {
        let b = |k: &[EventKind]| Behaviour::for_kinds(k).name();
        assert_eq!(b(&[EventKind::KEY_DOWN, EventKind::KEY_UP]), "typing");
        assert_eq!(b(&[EventKind::WHEEL]), "wheel");
        assert_eq!(
            b(&[
                EventKind::POINTER_MOVE,
                EventKind::BUTTON_DOWN,
                EventKind::WHEEL
            ]),
            "pointer"
        );
        assert_eq!(b(&[EventKind::TOUCH_MOVE]), "touch");
    }
}
