//! The ABI itself: the `ModalityPlugin` trait object and the root module a plugin exports.
//!
//! Plugin authors do not implement [`ModalityPlugin`] directly: they implement the plain
//! Rust trait [`Plugin`] and call [`export_plugin!`](crate::export_plugin). The SDK then
//! wraps every method in `catch_unwind`, because a panic that reaches abi_stable's
//! `extern "C"` shims aborts the whole host process (a `sudo` or a daemon).

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RSlice, RStr, RVec},
    StableAbi,
};

use crate::{ErrorKind, Event, PluginDescriptor, PluginError, Score};

/// The interface every loaded plugin exposes to the host (the stable, FFI-safe side).
///
/// All blobs (`population`, `profile`) are opaque bytes owned by the plugin; the host
/// stores them and hands them back. New methods are only ever appended after the last
/// one, in a new minor interface version (see the crate docs on versioning).
#[sabi_trait]
pub trait ModalityPlugin: Send + Sync {
    /// The same descriptor as the root module's.
    fn descriptor(&self) -> PluginDescriptor;

    /// Learns a population prior (the impostor model, normalisation statistics, ...)
    /// from other users' windows: `users[u]` holds user `u`'s windows. An empty result
    /// is allowed and means "use the built-in prior".
    fn build_population(
        &self,
        users: RSlice<'_, RVec<RVec<Event>>>,
    ) -> RResult<RVec<u8>, PluginError>;

    /// Builds a profile from a user's enrolment windows. `population` is a blob from
    /// `build_population` (of this plugin), or empty for the built-in prior.
    fn enroll(
        &self,
        population: RSlice<'_, u8>,
        windows: RSlice<'_, RVec<Event>>,
    ) -> RResult<RVec<u8>, PluginError>;

    /// Scores one window of live events against a profile.
    fn score(
        &self,
        profile: RSlice<'_, u8>,
        window: RSlice<'_, Event>,
    ) -> RResult<Score, PluginError>;

    /// Returns an updated profile after `window` scored `score`. The plugin decides
    /// whether the window is genuine enough to learn from; it may return the profile
    /// unchanged.
    fn adapt(
        &self,
        profile: RSlice<'_, u8>,
        window: RSlice<'_, Event>,
        score: Score,
    ) -> RResult<RVec<u8>, PluginError>;

    /// Feature level: the feature vector of one window (layout: descriptor's
    /// `feature_names`), so evaluations can feed pre-computed features.
    fn extract(&self, window: RSlice<'_, Event>) -> RResult<RVec<f64>, PluginError>;

    /// Feature level: `build_population` over feature vectors (`users[u][i]` = sample i of user u).
    fn build_population_features(
        &self,
        users: RSlice<'_, RVec<RVec<f64>>>,
    ) -> RResult<RVec<u8>, PluginError>;

    /// Feature level: `enroll` over feature vectors.
    fn enroll_features(
        &self,
        population: RSlice<'_, u8>,
        samples: RSlice<'_, RVec<f64>>,
    ) -> RResult<RVec<u8>, PluginError>;

    /// Feature level: `score` of one feature vector.
    ///
    /// The last method of interface 0.1: the vtable's prefix ends here, and methods
    /// appended later are optional accessors in its layout. (While the interface is
    /// `0.y` that does not make two minors compatible: see "Versioning".)
    #[sabi(last_prefix_field)]
    fn score_features(
        &self,
        profile: RSlice<'_, u8>,
        sample: RSlice<'_, f64>,
    ) -> RResult<Score, PluginError>;

    /// Since interface 0.2. Decodes and checks `profile` once and returns a handle that
    /// scores windows against it, exactly as `score(profile, window)` would. A host that
    /// scores many windows against one profile (a live session) keeps the handle while
    /// the profile stays the same, and so skips decoding, or comparing the whole profile
    /// with a cache of decoded ones, on every window. A profile that `score` would refuse
    /// may be refused here already.
    fn prepare(&self, profile: RSlice<'_, u8>) -> RResult<PreparedBox, PluginError>;
}

/// A profile decoded once by [`ModalityPlugin::prepare`], to score many windows against.
#[sabi_trait]
pub trait PreparedProfile: Send + Sync {
    /// Scores one window of live events, as `ModalityPlugin::score` with the profile
    /// this handle was prepared from.
    #[sabi(last_prefix_field)]
    fn score(&self, window: RSlice<'_, Event>) -> RResult<Score, PluginError>;
}

/// A constructed plugin, as the host holds it.
pub type PluginBox = ModalityPlugin_TO<'static, RBox<()>>;

/// A prepared profile, as the host holds it.
pub type PreparedBox = PreparedProfile_TO<'static, RBox<()>>;

/// What [`Plugin::prepare`] returns: the plugin's own decoded form of a profile, handed
/// back to [`Plugin::score_prepared`].
pub type Decoded = Arc<dyn Any + Send + Sync>;

/// The `T` a plugin's [`Plugin::prepare`] put into `decoded`, for its
/// [`Plugin::score_prepared`]; an `INVALID_PROFILE` error naming `plugin` otherwise.
pub fn decoded_as<'a, T: Any>(decoded: &'a Decoded, plugin: &str) -> Result<&'a T, PluginError> {
    decoded.downcast_ref::<T>().ok_or_else(|| {
        PluginError::invalid_profile(format!("prepared profile is not a {plugin} profile"))
    })
}

/// The root module: what `habitus_engine` finds in a plugin library.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
pub struct PluginMod {
    /// The plugin's descriptor, without constructing it.
    pub descriptor: extern "C" fn() -> RResult<PluginDescriptor, PluginError>,
    /// Constructs the plugin from a TOML config string (empty = defaults).
    #[sabi(last_prefix_field)]
    pub new: extern "C" fn(config: RStr<'_>) -> RResult<PluginBox, PluginError>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "habitus_plugin";
    const NAME: &'static str = "habitus_plugin";
    // The interface version is this crate's version: see "Versioning" in the crate docs.
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The interface version a host or plugin was built against (this crate's version).
pub const INTERFACE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a plugin author implements: ordinary Rust, no FFI types beyond the SDK's own.
///
/// Feature-level methods default to `UNSUPPORTED`; `build_population` defaults to an
/// empty blob (built-in prior only).
pub trait Plugin: Send + Sync + Sized + 'static {
    /// The plugin's self-description (see [`PluginDescriptor`] for the rules).
    fn descriptor() -> PluginDescriptor;

    /// Builds the plugin from a TOML config string. Reject unknown keys.
    fn new(config: &str) -> Result<Self, PluginError>;

    fn build_population(&self, _users: &[RVec<RVec<Event>>]) -> Result<Vec<u8>, PluginError> {
        Ok(Vec::new())
    }

    fn enroll(&self, population: &[u8], windows: &[RVec<Event>]) -> Result<Vec<u8>, PluginError>;

    fn score(&self, profile: &[u8], window: &[Event]) -> Result<Score, PluginError>;

    fn adapt(&self, profile: &[u8], window: &[Event], score: Score)
        -> Result<Vec<u8>, PluginError>;

    fn extract(&self, _window: &[Event]) -> Result<Vec<f64>, PluginError> {
        Err(PluginError::unsupported(
            "this plugin has no feature-level interface",
        ))
    }

    fn build_population_features(
        &self,
        _users: &[RVec<RVec<f64>>],
    ) -> Result<Vec<u8>, PluginError> {
        Err(PluginError::unsupported(
            "this plugin has no feature-level interface",
        ))
    }

    fn enroll_features(
        &self,
        _population: &[u8],
        _samples: &[RVec<f64>],
    ) -> Result<Vec<u8>, PluginError> {
        Err(PluginError::unsupported(
            "this plugin has no feature-level interface",
        ))
    }

    fn score_features(&self, _profile: &[u8], _sample: &[f64]) -> Result<Score, PluginError> {
        Err(PluginError::unsupported(
            "this plugin has no feature-level interface",
        ))
    }

    /// Optional fast path for hosts that score many windows against one profile:
    /// decode and check `profile` once and return the decoded form (any type; it comes
    /// back to [`Plugin::score_prepared`]), or `None` (the default) to have every window
    /// scored by [`Plugin::score`] with the profile's bytes. Refuse a profile here as
    /// `score` would.
    fn prepare(&self, _profile: &[u8]) -> Result<Option<Decoded>, PluginError> {
        Ok(None)
    }

    /// Scores `window` against what [`Plugin::prepare`] returned; must give exactly what
    /// `score` gives with the profile's bytes (the conformance kit checks). Only called
    /// with values this plugin's `prepare` made.
    fn score_prepared(&self, _prepared: &Decoded, _window: &[Event]) -> Result<Score, PluginError> {
        Err(PluginError::unsupported(
            "prepare returned a decoded profile but score_prepared is not implemented",
        ))
    }
}

/// Runs `f`, turning a panic into a `PANICKED` error carrying the panic message.
pub fn guard<T>(f: impl FnOnce() -> Result<T, PluginError>) -> RResult<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.into(),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic with a non-string payload".to_string());
            RResult::RErr(PluginError::new(ErrorKind::PANICKED, message))
        }
    }
}

/// The adapter that gives any [`Plugin`] the FFI-safe, panic-proof [`ModalityPlugin`] face.
/// (The plugin is shared with the prepared profiles it hands out.)
pub struct Guarded<P>(pub Arc<P>);

/// A prepared profile: the plugin's decoded form, or, for plugins without a fast path,
/// the profile's bytes scored through [`Plugin::score`].
struct Prepared<P> {
    plugin: Arc<P>,
    profile: PreparedForm,
}

enum PreparedForm {
    Decoded(Decoded),
    Bytes(Vec<u8>),
}

impl<P: Plugin> PreparedProfile for Prepared<P> {
    fn score(&self, window: RSlice<'_, Event>) -> RResult<Score, PluginError> {
        guard(|| match &self.profile {
            PreparedForm::Decoded(d) => self.plugin.score_prepared(d, window.as_slice()),
            PreparedForm::Bytes(b) => self.plugin.score(b, window.as_slice()),
        })
    }
}

impl<P: Plugin> ModalityPlugin for Guarded<P> {
    fn descriptor(&self) -> PluginDescriptor {
        // A descriptor is plain data built by the author; if building it panics the
        // root-module `descriptor` entry point (which is guarded) already failed first.
        P::descriptor()
    }

    fn build_population(
        &self,
        users: RSlice<'_, RVec<RVec<Event>>>,
    ) -> RResult<RVec<u8>, PluginError> {
        guard(|| self.0.build_population(users.as_slice()).map(RVec::from))
    }

    fn enroll(
        &self,
        population: RSlice<'_, u8>,
        windows: RSlice<'_, RVec<Event>>,
    ) -> RResult<RVec<u8>, PluginError> {
        guard(|| {
            self.0
                .enroll(population.as_slice(), windows.as_slice())
                .map(RVec::from)
        })
    }

    fn score(
        &self,
        profile: RSlice<'_, u8>,
        window: RSlice<'_, Event>,
    ) -> RResult<Score, PluginError> {
        guard(|| self.0.score(profile.as_slice(), window.as_slice()))
    }

    fn adapt(
        &self,
        profile: RSlice<'_, u8>,
        window: RSlice<'_, Event>,
        score: Score,
    ) -> RResult<RVec<u8>, PluginError> {
        guard(|| {
            self.0
                .adapt(profile.as_slice(), window.as_slice(), score)
                .map(RVec::from)
        })
    }

    fn extract(&self, window: RSlice<'_, Event>) -> RResult<RVec<f64>, PluginError> {
        guard(|| self.0.extract(window.as_slice()).map(RVec::from))
    }

    fn build_population_features(
        &self,
        users: RSlice<'_, RVec<RVec<f64>>>,
    ) -> RResult<RVec<u8>, PluginError> {
        guard(|| {
            self.0
                .build_population_features(users.as_slice())
                .map(RVec::from)
        })
    }

    fn enroll_features(
        &self,
        population: RSlice<'_, u8>,
        samples: RSlice<'_, RVec<f64>>,
    ) -> RResult<RVec<u8>, PluginError> {
        guard(|| {
            self.0
                .enroll_features(population.as_slice(), samples.as_slice())
                .map(RVec::from)
        })
    }

    fn score_features(
        &self,
        profile: RSlice<'_, u8>,
        sample: RSlice<'_, f64>,
    ) -> RResult<Score, PluginError> {
        guard(|| self.0.score_features(profile.as_slice(), sample.as_slice()))
    }

    fn prepare(&self, profile: RSlice<'_, u8>) -> RResult<PreparedBox, PluginError> {
        guard(|| {
            let form = match self.0.prepare(profile.as_slice())? {
                Some(decoded) => PreparedForm::Decoded(decoded),
                None => PreparedForm::Bytes(profile.to_vec()),
            };
            let prepared = Prepared {
                plugin: self.0.clone(),
                profile: form,
            };
            Ok(PreparedProfile_TO::from_value(
                prepared,
                abi_stable::sabi_trait::TD_Opaque,
            ))
        })
    }
}

/// Wraps a [`Plugin`] into the host-facing box (also what in-process tests and benchmarks
/// use to compare against the loaded library).
pub fn into_plugin_box<P: Plugin>(plugin: P) -> PluginBox {
    ModalityPlugin_TO::from_value(Guarded(Arc::new(plugin)), abi_stable::sabi_trait::TD_Opaque)
}

#[doc(hidden)]
pub extern "C" fn descriptor_entry<P: Plugin>() -> RResult<PluginDescriptor, PluginError> {
    guard(|| Ok(P::descriptor()))
}

#[doc(hidden)]
pub extern "C" fn new_entry<P: Plugin>(config: RStr<'_>) -> RResult<PluginBox, PluginError> {
    guard(|| P::new(config.as_str()).map(into_plugin_box))
}

#[doc(hidden)]
pub fn root_module<P: Plugin>() -> PluginModRef {
    use abi_stable::prefix_type::PrefixTypeTrait;
    PluginMod {
        descriptor: descriptor_entry::<P>,
        new: new_entry::<P>,
    }
    .leak_into_prefix()
}

/// Exports a [`Plugin`] type as this library's Habitus plugin. Use once per `cdylib`.
///
/// Expands to the static `abi_stable` looks up when loading a library (the same item
/// `#[export_root_module]` would generate), so plugin crates need no direct dependency
/// on `abi_stable`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
        pub static HABITUS_PLUGIN_LIB_HEADER: $crate::__private::LibHeader = {
            extern "C" fn habitus_root_module_loader() -> $crate::__private::RootModuleResult {
                $crate::__private::__call_root_module_loader(
                    $crate::__private::root_module::<$plugin>,
                )
            }
            // SAFETY: the constructor returns a `PluginModRef`, the type named here, so the
            // header's layout constant matches what it will hand out.
            unsafe {
                $crate::__private::LibHeader::from_constructor::<$crate::PluginModRef>(
                    habitus_root_module_loader,
                    $crate::__private::CheckTypeLayout::Yes,
                )
            }
        };
    };
}
