//! The host's view of a constructed plugin: every call checked, every error typed.

use habitus_plugin::{
    Event, PluginBox, PluginDescriptor, PluginError, PreparedBox, RResult, RSlice, RVec, Score,
};

/// What can go wrong when calling into a plugin.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    /// The plugin returned an error (including a caught panic): see `error.kind`.
    #[error("plugin {plugin}: {error}")]
    Plugin { plugin: String, error: PluginError },
    /// The plugin broke the score contract (non-finite or out-of-range LLR or quality):
    /// the score is discarded, never fused.
    #[error("plugin {plugin} returned an invalid score {score:?}")]
    InvalidScore { plugin: String, score: Score },
}

/// A constructed plugin.
pub struct PluginInstance {
    descriptor: PluginDescriptor,
    inner: PluginBox,
}

impl PluginInstance {
    pub fn new(descriptor: PluginDescriptor, inner: PluginBox) -> PluginInstance {
        PluginInstance { descriptor, inner }
    }

    pub fn descriptor(&self) -> &PluginDescriptor {
        &self.descriptor
    }

    pub fn name(&self) -> &str {
        self.descriptor.name.as_str()
    }

    fn lift<T>(&self, result: RResult<T, PluginError>) -> Result<T, HostError> {
        lift(self.name(), result)
    }

    fn checked(&self, result: RResult<Score, PluginError>) -> Result<Score, HostError> {
        checked(self.name(), result)
    }

    /// Decodes `profile` once for many [`PreparedProfile::score`] calls (a live session
    /// keeps it while its profile stays the same). Scores are exactly those of
    /// [`PluginInstance::score`] with the same bytes, checked the same way.
    pub fn prepare(&self, profile: &[u8]) -> Result<PreparedProfile, HostError> {
        let inner = self.lift(self.inner.prepare(profile.into()))?;
        Ok(PreparedProfile {
            plugin: self.name().to_string(),
            inner,
        })
    }

    pub fn build_population(&self, users: &[RVec<RVec<Event>>]) -> Result<Vec<u8>, HostError> {
        self.lift(self.inner.build_population(RSlice::from_slice(users)))
            .map(RVec::into_vec)
    }

    pub fn enroll(&self, population: &[u8], windows: &[RVec<Event>]) -> Result<Vec<u8>, HostError> {
        self.lift(
            self.inner
                .enroll(population.into(), RSlice::from_slice(windows)),
        )
        .map(RVec::into_vec)
    }

    pub fn score(&self, profile: &[u8], window: &[Event]) -> Result<Score, HostError> {
        self.checked(self.inner.score(profile.into(), window.into()))
    }

    pub fn adapt(
        &self,
        profile: &[u8],
        window: &[Event],
        score: Score,
    ) -> Result<Vec<u8>, HostError> {
        self.lift(self.inner.adapt(profile.into(), window.into(), score))
            .map(RVec::into_vec)
    }

    pub fn extract(&self, window: &[Event]) -> Result<Vec<f64>, HostError> {
        self.lift(self.inner.extract(window.into()))
            .map(RVec::into_vec)
    }

    pub fn build_population_features(
        &self,
        users: &[RVec<RVec<f64>>],
    ) -> Result<Vec<u8>, HostError> {
        self.lift(
            self.inner
                .build_population_features(RSlice::from_slice(users)),
        )
        .map(RVec::into_vec)
    }

    pub fn enroll_features(
        &self,
        population: &[u8],
        samples: &[RVec<f64>],
    ) -> Result<Vec<u8>, HostError> {
        self.lift(
            self.inner
                .enroll_features(population.into(), RSlice::from_slice(samples)),
        )
        .map(RVec::into_vec)
    }

    pub fn score_features(&self, profile: &[u8], sample: &[f64]) -> Result<Score, HostError> {
        self.checked(self.inner.score_features(profile.into(), sample.into()))
    }
}

/// A profile a plugin has decoded once ([`PluginInstance::prepare`]).
pub struct PreparedProfile {
    plugin: String,
    inner: PreparedBox,
}

impl PreparedProfile {
    /// Scores one window, as [`PluginInstance::score`] would with the profile's bytes.
    pub fn score(&self, window: &[Event]) -> Result<Score, HostError> {
        checked(&self.plugin, self.inner.score(window.into()))
    }
}

fn lift<T>(plugin: &str, result: RResult<T, PluginError>) -> Result<T, HostError> {
    result.into_result().map_err(|error| HostError::Plugin {
        plugin: plugin.to_string(),
        error,
    })
}

/// A score is only ever used when it keeps the contract (finite, in range).
fn checked(plugin: &str, result: RResult<Score, PluginError>) -> Result<Score, HostError> {
    let score = lift(plugin, result)?;
    if score.is_valid() {
        Ok(score)
    } else {
        Err(HostError::InvalidScore {
            plugin: plugin.to_string(),
            score,
        })
    }
}
