//! The one flat input record every plugin receives.

use abi_stable::StableAbi;

/// What happened. A `#[repr(transparent)]` byte rather than a Rust enum: a value the
/// plugin does not know (sent by a newer host) is then just an unknown kind to ignore,
/// never undefined behaviour.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKind(pub u8);

impl EventKind {
    pub const KEY_DOWN: EventKind = EventKind(0);
    pub const KEY_UP: EventKind = EventKind(1);
    pub const POINTER_MOVE: EventKind = EventKind(2);
    pub const BUTTON_DOWN: EventKind = EventKind(3);
    pub const BUTTON_UP: EventKind = EventKind(4);
    pub const WHEEL: EventKind = EventKind(5);
    pub const TOUCH_DOWN: EventKind = EventKind(6);
    pub const TOUCH_MOVE: EventKind = EventKind(7);
    pub const TOUCH_UP: EventKind = EventKind(8);

    /// Every kind this interface version defines.
    pub const ALL: [EventKind; 9] = [
        Self::KEY_DOWN,
        Self::KEY_UP,
        Self::POINTER_MOVE,
        Self::BUTTON_DOWN,
        Self::BUTTON_UP,
        Self::WHEEL,
        Self::TOUCH_DOWN,
        Self::TOUCH_MOVE,
        Self::TOUCH_UP,
    ];

    /// The name used in descriptors, configs and reports; `None` for an unknown kind.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::KEY_DOWN => "KeyDown",
            Self::KEY_UP => "KeyUp",
            Self::POINTER_MOVE => "PointerMove",
            Self::BUTTON_DOWN => "ButtonDown",
            Self::BUTTON_UP => "ButtonUp",
            Self::WHEEL => "Wheel",
            Self::TOUCH_DOWN => "TouchDown",
            Self::TOUCH_MOVE => "TouchMove",
            Self::TOUCH_UP => "TouchUp",
            _ => return None,
        })
    }

    pub fn is_known(self) -> bool {
        self.name().is_some()
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Unknown({})", self.0),
        }
    }
}

/// One input event.
///
/// * `t_us`: monotonic time in microseconds (any origin; only differences matter).
/// * `key`: an opaque key identity. Hosts fill it with a keyed hash of the key code
///   (see `habitus_engine::KeyHasher`), so a plugin can match the same key or digraph
///   across windows but can never learn which key it was, let alone the text.
/// * `x`, `y`: pointer or touch position (pixels or device units); wheel deltas for `Wheel`.
/// * `pressure`, `area`: touch pressure and contact area, `0.0` when unknown.
/// * `pointer`: button number for buttons, finger/slot id for touch.
///
/// Fields a kind does not use are zero.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq)]
pub struct Event {
    pub t_us: u64,
    pub kind: EventKind,
    pub key: u32,
    pub x: f32,
    pub y: f32,
    pub pressure: f32,
    pub area: f32,
    pub pointer: u32,
}

impl Event {
    /// A key event; every other field zero.
    pub fn key(kind: EventKind, t_us: u64, key: u32) -> Event {
        Event {
            t_us,
            kind,
            key,
            x: 0.0,
            y: 0.0,
            pressure: 0.0,
            area: 0.0,
            pointer: 0,
        }
    }

    /// A pointer or touch event at `(x, y)`; every other field zero.
    pub fn at(kind: EventKind, t_us: u64, x: f32, y: f32) -> Event {
        Event {
            t_us,
            kind,
            key: 0,
            x,
            y,
            pressure: 0.0,
            area: 0.0,
            pointer: 0,
        }
    }

    /// True when every float field is finite (NaN and infinities are never valid input).
    pub fn is_finite(&self) -> bool {
        self.x.is_finite()
            && self.y.is_finite()
            && self.pressure.is_finite()
            && self.area.is_finite()
    }
}
