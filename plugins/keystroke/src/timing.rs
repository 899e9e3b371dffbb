//! From raw KeyDown/KeyUp events to keystrokes (key id, press time, release time).

use habitus_plugin::{Event, EventKind, PluginError};

/// Longest hold we believe is a real keystroke (a held key is not typing rhythm).
pub const MAX_HOLD_US: u64 = 5_000_000;

/// One pressed-and-released key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keystroke {
    pub key: u32,
    pub down_us: u64,
    pub up_us: u64,
}

impl Keystroke {
    pub fn hold_s(&self) -> f64 {
        (self.up_us - self.down_us) as f64 * 1e-6
    }
}

/// Keystrokes of a window plus what was dropped and why.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Keystrokes {
    /// Ordered by press time.
    pub strokes: Vec<Keystroke>,
    /// Events ignored: auto-repeat presses, releases without a press, presses never
    /// released, holds longer than [`MAX_HOLD_US`], non-key events.
    pub skipped: u32,
    /// Key events in the window.
    pub key_events: u32,
}

/// Pairs each KeyDown with the next KeyUp of the same key.
///
/// Rejected (error, nothing scored): timestamps that go backwards, since the whole
/// window's rhythm is then meaningless. Skipped and counted: everything in
/// [`Keystrokes::skipped`].
pub fn keystrokes(window: &[Event]) -> Result<Keystrokes, PluginError> {
    let mut out = Keystrokes::default();
    // Open presses: (key, down time). Few keys are ever down at once, so a Vec is fastest.
    let mut open: Vec<(u32, u64)> = Vec::with_capacity(8);
    let mut last_t = 0u64;
    for (i, e) in window.iter().enumerate() {
        if e.t_us < last_t {
            return Err(PluginError::invalid_input(format!(
                "event {i} goes back in time ({} us after {} us)",
                e.t_us, last_t
            )));
        }
        last_t = e.t_us;
        match e.kind {
            EventKind::KEY_DOWN => {
                out.key_events += 1;
                if open.iter().any(|&(k, _)| k == e.key) {
                    out.skipped += 1; // auto-repeat of a held key
                } else {
                    open.push((e.key, e.t_us));
                }
            }
            EventKind::KEY_UP => {
                out.key_events += 1;
                match open.iter().position(|&(k, _)| k == e.key) {
                    Some(pos) => {
                        let (key, down_us) = open.swap_remove(pos);
                        if e.t_us - down_us > MAX_HOLD_US {
                            out.skipped += 2;
                        } else {
                            out.strokes.push(Keystroke {
                                key,
                                down_us,
                                up_us: e.t_us,
                            });
                        }
                    }
                    None => out.skipped += 1,
                }
            }
            _ => out.skipped += 1,
        }
    }
    out.skipped += open.len() as u32;
    // Releases arrive in release order; rhythm is read in press order.
    out.strokes.sort_by_key(|s| (s.down_us, s.up_us));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, t: u64, key: u32) -> Event {
        Event::key(kind, t, key)
    }

    #[test]
    fn pairs_overlapping_keys_in_press_order() {
        let w = [
            ev(EventKind::KEY_DOWN, 100, 1),
            ev(EventKind::KEY_DOWN, 150, 2),
            ev(EventKind::KEY_UP, 180, 1),
            ev(EventKind::KEY_UP, 260, 2),
        ];
        let k = keystrokes(&w).unwrap();
        assert_eq!(k.skipped, 0);
        assert_eq!(
            k.strokes,
            vec![
                Keystroke {
                    key: 1,
                    down_us: 100,
                    up_us: 180
                },
                Keystroke {
                    key: 2,
                    down_us: 150,
                    up_us: 260
                }
            ]
        );
    }

    #[test]
    fn skips_repeats_orphans_and_unreleased() {
        let w = [
            ev(EventKind::KEY_UP, 10, 9), // release without press
            ev(EventKind::KEY_DOWN, 100, 1),
            ev(EventKind::KEY_DOWN, 130, 1), // auto-repeat
            ev(EventKind::KEY_UP, 180, 1),
            ev(EventKind::KEY_DOWN, 200, 2), // never released
            Event::at(EventKind::POINTER_MOVE, 210, 1.0, 1.0),
        ];
        let k = keystrokes(&w).unwrap();
        assert_eq!(k.strokes.len(), 1);
        assert_eq!(k.skipped, 4);
    }

    #[test]
    fn rejects_time_going_backwards() {
        let w = [
            ev(EventKind::KEY_DOWN, 100, 1),
            ev(EventKind::KEY_UP, 50, 1),
        ];
        let err = keystrokes(&w).unwrap_err();
        assert!(err.message.contains("back in time"), "{err}");
    }

    #[test]
    fn drops_absurd_holds() {
        let w = [
            ev(EventKind::KEY_DOWN, 0, 1),
            ev(EventKind::KEY_UP, MAX_HOLD_US + 1, 1),
        ];
        let k = keystrokes(&w).unwrap();
        assert!(k.strokes.is_empty());
        assert_eq!(k.skipped, 2);
    }
}
