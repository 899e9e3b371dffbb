//! # habitus-plugin: the stable plugin ABI of Habitus
//!
//! Every behavioural modality (keystroke, mouse, touch, and whatever third parties add) is
//! a `cdylib` that implements [`Plugin`] and calls [`export_plugin!`]. The host
//! (`habitus-engine`) loads each library with `abi_stable`, checks the interface version
//! and the layout of every type that crosses the boundary, and talks to it only through
//! the types in this crate.
//!
//! ```ignore
//! use habitus_plugin::{export_plugin, Event, Plugin, PluginDescriptor, PluginError, Score};
//!
//! struct Rhythm;
//! impl Plugin for Rhythm {
//!     fn descriptor() -> PluginDescriptor { /* name, modality, version, kinds, features */ }
//!     fn new(config: &str) -> Result<Self, PluginError> { Ok(Rhythm) }
//!     fn enroll(&self, population: &[u8], windows: &[RVec<Event>]) -> Result<Vec<u8>, PluginError> { .. }
//!     fn score(&self, profile: &[u8], window: &[Event]) -> Result<Score, PluginError> { .. }
//!     fn adapt(&self, profile: &[u8], window: &[Event], score: Score) -> Result<Vec<u8>, PluginError> { .. }
//! }
//! export_plugin!(Rhythm);
//! ```
//!
//! ## The contract
//!
//! * **Events** ([`Event`]) are flat `#[repr(C)]` records; key identities are keyed hashes,
//!   never key codes or characters. A plugin must accept any input without panicking:
//!   out-of-order times, NaN coordinates and absurd durations are rejected with
//!   [`ErrorKind::INVALID_INPUT`] or skipped, never trusted.
//! * **Scores** ([`Score`]) are calibrated natural-log likelihood ratios, genuine versus
//!   impostor, clipped to ±[`LLR_LIMIT`]. The host adds them up (naive-Bayes fusion), so a
//!   plugin that is over-confident drowns the others: document your calibration.
//! * **Profiles and populations** are opaque, versioned byte blobs owned by the plugin.
//!   A blob of another plugin or another format version must give
//!   [`ErrorKind::INVALID_PROFILE`], never a crash or a silently wrong score.
//! * **Panics** are caught by the SDK in every entry point and returned as
//!   [`ErrorKind::PANICKED`]; build plugins with `panic = "unwind"` (the default), never
//!   `abort`. A panic that escaped would terminate the host process.
//! * **Trust**: a native plugin runs inside the host with its full rights. Load only
//!   plugins you trust. The trait is kept free of host callbacks so that it can later run
//!   out of process or in WebAssembly unchanged.
//! * **Testing**: [`conformance::check`] runs, in the author's `cargo test`, the checks
//!   `habitus plugin check` runs on the built library (descriptor, monotone and bounded
//!   LLRs, determinism, hostile windows and blobs, contained panics, time per event).
//! * **Helpers**: [`blob`] (a versioned, checksummed envelope for profiles) and [`stats`]
//!   (median, MAD, and the logistic fit that calibrates a raw score into an LLR).
//!
//! The plugin author's guide — quick start from `examples/plugin-scroll`, the event model,
//! a worked calibration example, profile versioning, testing and shipping — is
//! `plugins/sdk/README.md`.
//!
//! ## Versioning
//!
//! The *interface version* is this crate's version ([`INTERFACE_VERSION`]); `abi_stable`
//! compares the host's against the plugin's when loading, and then checks the layout of
//! every type in the root module and the trait's vtable.
//!
//! * While the interface is `0.y.z`, host and plugins must share the minor `y` (the patch
//!   number is not compared; from `1.0` on: the same major). A host refuses plugins of an
//!   older minor by version, and plugins of a newer minor by layout: every type crossing
//!   the boundary carries its package version, and `abi_stable` holds two `0.y` minors
//!   incompatible (a 0.1.0 host refuses 0.2.0 plugins with "incompatible package
//!   versions"). Build host and plugins of one minor together. A refused plugin is one
//!   line naming the file and the versions or the fix (`engine/tests/loader.rs` shows it
//!   with a fixture built against 0.0.1).
//! * **Patch** (`0.y.z` → `0.y.z+1`): documentation, plugin-side helpers ([`blob`],
//!   [`stats`], [`conformance`]), bug fixes in the SDK's wrappers; nothing that crosses the boundary
//!   changes. Compatible both ways.
//! * **Minor** (`0.y` → `0.y+1`): something was *appended*: a method after the last one of
//!   [`ModalityPlugin`] or a field after the last prefix field of [`PluginMod`], a new
//!   [`EventKind`], [`ErrorKind`] or [`Modality`] value (all of them are open byte values,
//!   so old plugins see an unknown kind and ignore it). While `0.y`, every plugin must be
//!   rebuilt (see above); appending keeps that a rebuild, with no code change. (From
//!   `1.0` on, appended methods outside the vtable's prefix are what would let hosts of
//!   an older minor load newer plugins.)
//! * **Breaking** (a field of [`Event`], [`Score`] or [`PluginDescriptor`] changed, a
//!   method removed, reordered or its signature changed): a minor bump while the
//!   interface is `0.y`, a major one from `1.0`. All plugins must be rebuilt; the loader
//!   refuses old ones by version or, failing that, by layout, in one line.
//!
//! The plugin author's guide (`plugins/sdk/README.md`) has the table and the host's exact
//! message.
//!
//! Profiles are versioned by each plugin independently of the interface.

pub mod blob;
pub mod conformance;
mod descriptor;
mod error;
mod event;
pub mod stats;
// abi_stable's `#[sabi_trait]` expands to impls the `non_local_definitions` lint dislikes.
#[allow(non_local_definitions)]
mod interface;
mod score;

pub use abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};
pub use descriptor::{Modality, PluginDescriptor};
pub use error::{ErrorKind, PluginError};
pub use event::{Event, EventKind};
pub use interface::{
    decoded_as, guard, into_plugin_box, Decoded, Guarded, ModalityPlugin, ModalityPlugin_TO,
    Plugin, PluginBox, PluginMod, PluginModRef, PreparedBox, PreparedProfile, PreparedProfile_TO,
    INTERFACE_VERSION,
};
pub use score::{Score, LLR_LIMIT};

/// Re-exported so hosts can use the exact `abi_stable` the interface was built with.
pub use abi_stable;

#[doc(hidden)]
pub mod __private {
    pub use crate::interface::root_module;
    pub use abi_stable::library::{
        __call_root_module_loader, CheckTypeLayout, LibHeader, RootModuleResult,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `export_plugin!` hard-codes the symbol name abi_stable looks for, so that plugins
    /// need not depend on abi_stable's proc macros. It must track abi_stable's constant.
    #[test]
    fn export_symbol_name_matches_abi_stable() {
        let macro_source = include_str!("interface.rs");
        let expected = format!(
            "#[export_name = \"{}\"]",
            abi_stable::library::ROOT_MODULE_LOADER_NAME
        );
        assert!(
            macro_source.contains(&expected),
            "export_plugin! must export {expected}"
        );
    }

    #[test]
    fn score_new_clips_and_rejects_nan() {
        let s = Score::new(42.0, 2.0, 3);
        assert_eq!(s.llr, LLR_LIMIT);
        assert_eq!(s.quality, 1.0);
        let s = Score::new(f64::NAN, 1.0, 3);
        assert_eq!(s.llr, -LLR_LIMIT);
        assert_eq!(s.quality, 0.0);
        assert!(!Score {
            llr: f64::INFINITY,
            quality: 1.0,
            events: 0
        }
        .is_valid());
        assert!(Score::new(-3.0, 0.5, 1).is_valid());
    }

    #[test]
    fn unknown_event_kind_is_not_known() {
        assert!(EventKind::TOUCH_UP.is_known());
        assert!(!EventKind(200).is_known());
        assert_eq!(EventKind(200).to_string(), "Unknown(200)");
    }

    struct Panicky;
    impl Plugin for Panicky {
        fn descriptor() -> PluginDescriptor {
            PluginDescriptor {
                name: "panicky".into(),
                modality: Modality::OTHER,
                version: "0.1.0".into(),
                description: "panics everywhere".into(),
                event_kinds: vec![EventKind::WHEEL].into(),
                feature_names: RVec::new(),
            }
        }
        fn new(_config: &str) -> Result<Self, PluginError> {
            Ok(Panicky)
        }
        fn enroll(&self, _: &[u8], _: &[RVec<Event>]) -> Result<Vec<u8>, PluginError> {
            panic!("enroll exploded")
        }
        fn score(&self, _: &[u8], _: &[Event]) -> Result<Score, PluginError> {
            // An out-of-bounds index: a panic the author did not write on purpose.
            let v: Vec<u8> = Vec::new();
            let i = v.len() + 3;
            Ok(Score::new(v[i] as f64, 1.0, 0))
        }
        fn adapt(&self, _: &[u8], _: &[Event], _: Score) -> Result<Vec<u8>, PluginError> {
            Err(PluginError::unsupported("no"))
        }
    }

    #[test]
    fn guarded_plugin_turns_panics_into_errors() {
        let plugin = into_plugin_box(Panicky);
        let err = plugin
            .enroll(RSlice::from_slice(&[]), RSlice::from_slice(&[]))
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::PANICKED);
        assert!(err.message.contains("enroll exploded"), "{err}");
        let err = plugin
            .score(RSlice::from_slice(&[]), RSlice::from_slice(&[]))
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::PANICKED);
        assert!(Panicky::descriptor().validate().is_ok());
        let err = plugin.extract(RSlice::from_slice(&[])).unwrap_err();
        assert_eq!(err.kind, ErrorKind::UNSUPPORTED);
    }
}
