//! Local input from evdev (`/dev/input/event*`): keyboards, pointers, touchscreens.
//!
//! One thread per device reads raw `struct input_event` records and turns them into
//! plugin events; key codes become keyed-hash key ids right here, so no code (let alone
//! text) goes further. A scanner thread re-reads the directory every 2 s for hot-plug.
//! Event times are the kernel's timestamps (so a burst read late keeps its rhythm),
//! mapped onto the daemon's clock so that every source shares one time base; the
//! mapping is re-anchored when the two drift apart by more than a second (clock
//! changes, a long backlog).
//!
//! A regular file holding `input_event` records is read to its end and closed: that is
//! how tests replay device input.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use habitus_engine::KeyHasher;
use habitus_plugin::{Event, EventKind};
use tokio::sync::mpsc::Sender;

use crate::core::{log, DaemonClock};

const EV_SYN: u16 = 0;
const EV_KEY: u16 = 1;
const EV_REL: u16 = 2;
const EV_ABS: u16 = 3;
const SYN_REPORT: u16 = 0;
const REL_X: u16 = 0;
const REL_Y: u16 = 1;
const REL_HWHEEL: u16 = 6;
const REL_WHEEL: u16 = 8;
const ABS_X: u16 = 0;
const ABS_Y: u16 = 1;
const ABS_MT_POSITION_X: u16 = 0x35;
const ABS_MT_POSITION_Y: u16 = 0x36;
const BTN_MOUSE: u16 = 0x110;
const BTN_TASK: u16 = 0x117;
const BTN_TOUCH: u16 = 0x14a;
/// Codes below BTN_MISC, and the KEY_OK.. block, are keyboard keys.
const BTN_MISC: u16 = 0x100;
const KEY_OK: u16 = 0x160;

/// Size of `struct input_event`: a `timeval` (two `long`s) + type, code (2 + 2) + value (4).
pub const INPUT_EVENT_SIZE: usize = 2 * LONG + 8;
const LONG: usize = std::mem::size_of::<libc::c_long>();

/// One raw record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawEvent {
    /// The kernel's timestamp, microseconds (its clock's origin; only differences matter).
    pub time_us: i64,
    pub type_: u16,
    pub code: u16,
    pub value: i32,
}

// `c_long` is i64 on 64-bit targets and i32 on 32-bit ones: the casts matter on the latter.
#[allow(clippy::unnecessary_cast)]
fn long_at(bytes: &[u8], at: usize) -> i64 {
    let mut buf = [0u8; LONG];
    buf.copy_from_slice(&bytes[at..at + LONG]);
    libc::c_long::from_ne_bytes(buf) as i64
}

impl RawEvent {
    pub fn parse(bytes: &[u8; INPUT_EVENT_SIZE]) -> RawEvent {
        let t = 2 * LONG;
        let (sec, usec) = (long_at(bytes, 0), long_at(bytes, LONG));
        RawEvent {
            time_us: sec.saturating_mul(1_000_000).saturating_add(usec),
            type_: u16::from_ne_bytes([bytes[t], bytes[t + 1]]),
            code: u16::from_ne_bytes([bytes[t + 2], bytes[t + 3]]),
            value: i32::from_ne_bytes([bytes[t + 4], bytes[t + 5], bytes[t + 6], bytes[t + 7]]),
        }
    }

    /// The record as the kernel writes it: for tests and fixtures.
    #[allow(clippy::unnecessary_cast)] // c_long: see `long_at`
    pub fn to_bytes(self) -> [u8; INPUT_EVENT_SIZE] {
        let mut b = [0u8; INPUT_EVENT_SIZE];
        let t = 2 * LONG;
        let sec = (self.time_us.div_euclid(1_000_000)) as libc::c_long;
        let usec = (self.time_us.rem_euclid(1_000_000)) as libc::c_long;
        b[..LONG].copy_from_slice(&sec.to_ne_bytes());
        b[LONG..t].copy_from_slice(&usec.to_ne_bytes());
        b[t..t + 2].copy_from_slice(&self.type_.to_ne_bytes());
        b[t + 2..t + 4].copy_from_slice(&self.code.to_ne_bytes());
        b[t + 4..t + 8].copy_from_slice(&self.value.to_ne_bytes());
        b
    }
}

/// Maps a device's kernel timestamps onto the daemon's clock, keeping their
/// differences, never going back, re-anchoring when they drift apart by over 1 s.
#[derive(Default)]
pub struct ClockMap {
    offset: Option<i64>,
    last: u64,
}

impl ClockMap {
    pub fn map(&mut self, kernel_us: i64, now_us: u64) -> u64 {
        let now = now_us as i64;
        let mapped = self.offset.map(|o| kernel_us.saturating_add(o));
        let t = match mapped {
            Some(t) if (t - now).abs() <= 1_000_000 => t,
            _ => {
                self.offset = Some(now.saturating_sub(kernel_us));
                now
            }
        };
        self.last = self.last.max(t.max(0) as u64);
        self.last
    }
}

/// Turns one device's raw records into events (state: pointer position, touch contact).
pub struct Translator {
    hasher: KeyHasher,
    x: f32,
    y: f32,
    moved: bool,
    touching: bool,
    touch_started: bool,
    pending: Vec<Event>,
}

impl Translator {
    pub fn new(hasher: KeyHasher) -> Translator {
        Translator {
            hasher,
            x: 0.0,
            y: 0.0,
            moved: false,
            touching: false,
            touch_started: false,
            pending: Vec::new(),
        }
    }

    /// Feeds one record at time `t_us`; returns the events completed by a SYN_REPORT.
    pub fn push(&mut self, raw: RawEvent, t_us: u64) -> Option<Vec<Event>> {
        match raw.type_ {
            EV_KEY => {
                if raw.value == 2 {
                    return None; // auto-repeat: not a keystroke
                }
                let down = raw.value != 0;
                let kind = |d, u| if down { d } else { u };
                if raw.code < BTN_MISC || raw.code >= KEY_OK {
                    let key = self.hasher.key_id(raw.code as u32);
                    self.pending.push(Event::key(
                        kind(EventKind::KEY_DOWN, EventKind::KEY_UP),
                        t_us,
                        key,
                    ));
                } else if (BTN_MOUSE..=BTN_TASK).contains(&raw.code) {
                    let mut e = Event::at(
                        kind(EventKind::BUTTON_DOWN, EventKind::BUTTON_UP),
                        t_us,
                        self.x,
                        self.y,
                    );
                    e.pointer = (raw.code - BTN_MOUSE) as u32;
                    self.pending.push(e);
                } else if raw.code == BTN_TOUCH {
                    self.touching = down;
                    if down {
                        self.touch_started = true;
                    } else {
                        self.pending
                            .push(Event::at(EventKind::TOUCH_UP, t_us, self.x, self.y));
                    }
                }
            }
            EV_REL => match raw.code {
                REL_X => {
                    self.x += raw.value as f32;
                    self.moved = true;
                }
                REL_Y => {
                    self.y += raw.value as f32;
                    self.moved = true;
                }
                REL_WHEEL => {
                    self.pending
                        .push(Event::at(EventKind::WHEEL, t_us, 0.0, raw.value as f32))
                }
                REL_HWHEEL => {
                    self.pending
                        .push(Event::at(EventKind::WHEEL, t_us, raw.value as f32, 0.0))
                }
                _ => {}
            },
            EV_ABS => match raw.code {
                ABS_X | ABS_MT_POSITION_X => {
                    self.x = raw.value as f32;
                    self.moved = true;
                }
                ABS_Y | ABS_MT_POSITION_Y => {
                    self.y = raw.value as f32;
                    self.moved = true;
                }
                _ => {}
            },
            EV_SYN if raw.code == SYN_REPORT => {
                if self.touch_started {
                    self.touch_started = false;
                    self.moved = false;
                    self.pending
                        .push(Event::at(EventKind::TOUCH_DOWN, t_us, self.x, self.y));
                } else if self.moved {
                    self.moved = false;
                    let kind = if self.touching {
                        EventKind::TOUCH_MOVE
                    } else {
                        EventKind::POINTER_MOVE
                    };
                    self.pending.push(Event::at(kind, t_us, self.x, self.y));
                }
                if !self.pending.is_empty() {
                    let mut out = std::mem::take(&mut self.pending);
                    // Releases before presses at the same instant, as the engine expects.
                    out.sort_by_key(|e| e.kind != EventKind::KEY_UP);
                    return Some(out);
                }
            }
            _ => {}
        }
        None
    }
}

/// Reads one device (or fixture file) until it ends or fails, then forgets it in
/// `seen` so that a device plugged in again under the same name is read again.
fn read_device(
    path: PathBuf,
    hasher: KeyHasher,
    clock: DaemonClock,
    out: Sender<Vec<Event>>,
    seen: Arc<Mutex<HashSet<PathBuf>>>,
) {
    read_until_gone(&path, hasher, clock, out);
    seen.lock().unwrap_or_else(|p| p.into_inner()).remove(&path);
}

fn read_until_gone(path: &Path, hasher: KeyHasher, clock: DaemonClock, out: Sender<Vec<Event>>) {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            log::warn(&format!("cannot read {}: {e}", path.display()));
            return;
        }
    };
    log::info(&format!("reading input device {}", path.display()));
    let mut translator = Translator::new(hasher);
    let mut times = ClockMap::default();
    let mut record = [0u8; INPUT_EVENT_SIZE];
    loop {
        match file.read_exact(&mut record) {
            Ok(()) => {}
            Err(e) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    log::info(&format!("input device {} gone: {e}", path.display()));
                }
                return;
            }
        }
        let raw = RawEvent::parse(&record);
        let t_us = times.map(raw.time_us, clock.now_us());
        if let Some(events) = translator.push(raw, t_us) {
            if out.blocking_send(events).is_err() {
                return; // the daemon is shutting down
            }
        }
    }
}

fn event_nodes(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut nodes: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("event"))
        })
        .collect();
    nodes.sort();
    nodes
}

/// Starts the scanner: every `event*` node in `dir` gets a reader thread, now and
/// whenever one appears. `clock` must be the core's clock.
pub fn spawn(dir: PathBuf, hasher: KeyHasher, clock: DaemonClock, out: Sender<Vec<Event>>) {
    std::thread::spawn(move || {
        let seen: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
        if !dir.is_dir() {
            log::warn(&format!(
                "{} does not exist: no local input devices (replay and ingest still work)",
                dir.display()
            ));
        }
        loop {
            for node in event_nodes(&dir) {
                let new = seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(node.clone());
                if new {
                    let (h, o, s) = (hasher.clone(), out.clone(), seen.clone());
                    std::thread::spawn(move || read_device(node, h, clock, o, s));
                }
            }
            if out.is_closed() {
                return;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(type_: u16, code: u16, value: i32) -> RawEvent {
        RawEvent {
            time_us: 0,
            type_,
            code,
            value,
        }
    }

    #[test]
    fn kernel_times_keep_their_rhythm_on_the_daemon_clock() {
        let mut map = ClockMap::default();
        let base = 1u64 << 40;
        // Read late (a backlog of 300 ms) but in rhythm: differences kept.
        assert_eq!(map.map(5_000_000, base + 300_000), base + 300_000);
        assert_eq!(map.map(5_085_000, base + 300_100), base + 385_000);
        assert_eq!(map.map(5_170_000, base + 300_200), base + 470_000);
        // The kernel clock jumps back an hour: re-anchored, never backwards.
        let t = map.map(1_000, base + 600_000);
        assert_eq!(t, base + 600_000);
        assert!(map.map(900, base + 600_001) >= t);
    }

    #[test]
    fn keys_are_hashed_and_repeats_skipped() {
        let hasher = KeyHasher::new(*b"0123456789abcdef");
        let mut t = Translator::new(hasher.clone());
        assert_eq!(t.push(raw(EV_KEY, 30, 1), 10), None);
        assert_eq!(t.push(raw(EV_KEY, 30, 2), 11), None);
        let out = t.push(raw(EV_SYN, SYN_REPORT, 0), 12).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, EventKind::KEY_DOWN);
        assert_eq!(out[0].key, hasher.key_id(30));
        assert_ne!(out[0].key, 30);
        t.push(raw(EV_KEY, 30, 0), 20);
        let out = t.push(raw(EV_SYN, SYN_REPORT, 0), 21).unwrap();
        assert_eq!(out[0].kind, EventKind::KEY_UP);
        assert_eq!(t.push(raw(EV_SYN, SYN_REPORT, 0), 22), None);
    }

    #[test]
    fn pointer_moves_accumulate_and_buttons_carry_position() {
        let mut t = Translator::new(KeyHasher::new([0; 16]));
        t.push(raw(EV_REL, REL_X, 5), 1);
        t.push(raw(EV_REL, REL_Y, -3), 1);
        let out = t.push(raw(EV_SYN, SYN_REPORT, 0), 1).unwrap();
        assert_eq!(
            (out[0].kind, out[0].x, out[0].y),
            (EventKind::POINTER_MOVE, 5.0, -3.0)
        );
        t.push(raw(EV_KEY, BTN_MOUSE + 1, 1), 2);
        let out = t.push(raw(EV_SYN, SYN_REPORT, 0), 2).unwrap();
        assert_eq!(
            (out[0].kind, out[0].pointer, out[0].x),
            (EventKind::BUTTON_DOWN, 1, 5.0)
        );
    }

    #[test]
    fn records_round_trip() {
        let mut r = raw(EV_ABS, ABS_MT_POSITION_X, -7);
        r.time_us = 1_700_000_123_456;
        assert_eq!(RawEvent::parse(&r.to_bytes()), r);
    }
}
