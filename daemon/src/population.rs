//! Population models: what "other people" type like, learned from a public data set.
//!
//! The keystroke plugin calibrates a user's scores against a population (within-user
//! spreads and a combiner fitted on other people's genuine and impostor windows). A
//! fresh installation has none and scores with fixed defaults; `habitus population
//! build` installs one built from the Aalto data set. Key ids in a population are keyed
//! hashes under *this installation's* secret, so a population is built per
//! installation, never copied between them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use habitus_engine::eval::aalto;
use habitus_engine::{KeyHasher, PluginInstance};
use habitus_plugin::{Event, EventKind, RVec};
use habitus_protocol::{WireEvent, WireEventKind};

/// The Aalto participant files under `dir` (or `dir/keystrokes`), in id order.
pub fn aalto_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let sub = dir.join("keystrokes");
    let dir = if sub.is_dir() { sub } else { dir.to_path_buf() };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains("_keystrokes.txt"))
        .collect();
    files.sort();
    Ok(files)
}

/// Wire key events to plugin events, key codes hashed with `hasher`.
pub fn hashed(events: &[WireEvent], hasher: &KeyHasher) -> RVec<Event> {
    events
        .iter()
        .filter_map(|e| {
            let kind = match e.kind {
                WireEventKind::KeyDown => EventKind::KEY_DOWN,
                WireEventKind::KeyUp => EventKind::KEY_UP,
                _ => return None,
            };
            Some(Event::key(kind, e.t_us, hasher.key_id(e.code)))
        })
        .collect()
}

/// Builds the plugin's population from people's recorded typing (each person's events
/// cut into windows of `window_events`).
pub fn build(
    plugin: &PluginInstance,
    people: &[Vec<WireEvent>],
    hasher: &KeyHasher,
    window_events: usize,
) -> Result<Vec<u8>> {
    let windows: Vec<RVec<RVec<Event>>> = people
        .iter()
        .map(|events| {
            events
                .chunks(window_events)
                .filter(|c| c.len() == window_events)
                .map(|c| hashed(c, hasher))
                .collect()
        })
        .collect();
    Ok(plugin.build_population(&windows)?)
}

/// All 15 sentences of up to `count` usable participants from `files`.
pub fn aalto_people(files: &[PathBuf], count: usize) -> Result<Vec<Vec<WireEvent>>> {
    let mut people = Vec::new();
    for f in files {
        if people.len() == count {
            break;
        }
        let (p, _) = aalto::read_participant(f, &|code| code)?;
        if let Some(p) = p {
            people.push(crate::replay::from_sentences(
                p.sentences.iter().map(|s| s.as_slice()),
            ));
        }
    }
    if people.len() < 3 {
        bail!(
            "{} usable participants; a population needs at least 3",
            people.len()
        );
    }
    Ok(people)
}
