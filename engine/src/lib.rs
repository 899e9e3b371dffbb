//! # habitus-engine
//!
//! The part of Habitus every front end shares: the plugin host ([`loader`], [`plugin`]),
//! naive-Bayes [`fusion`] of calibrated LLRs, the dynamic [`trust`] model, live
//! [`session`]s that turn events into an [`Assessment`](session::Assessment), key-id
//! hashing ([`keyid`]), the installation [`secrets`], the encrypted profile [`store`] and the
//! benchmark protocols ([`eval`]).

pub mod eval;
pub mod fusion;
pub mod keyid;
pub mod loader;
pub mod others;
pub mod plugin;
pub mod secrets;
pub mod session;
pub mod store;
pub mod trust;

pub use keyid::KeyHasher;
pub use loader::{load_dir, LoadError, PluginLibrary};
pub use plugin::{HostError, PluginInstance};
pub use secrets::Secrets;
pub use session::{AdaptationCandidate, Assessment, Session, SessionConfig, State};
pub use store::{AdaptOutcome, ProfileStore, StoreError, StoredProfile};
