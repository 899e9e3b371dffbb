//! Alternating A/B timing of two (or more) builds of one plugin, for a machine whose speed
//! drifts: criterion's means moved by up to 25 % within minutes on the development
//! machine, more than most changes were worth. Each build is loaded side by side in this
//! process, the same session (the engine benchmark's) is timed through each in turn for
//! many rounds, and the best round of each is reported: slow phases hit every build
//! alike and drop out of the minimum.
//!
//! ```text
//! cargo build --release -p habitus-keystroke && cp target/release/libhabitus_keystroke.so /tmp/a.so
//! # ... change the plugin, build again, copy to /tmp/b.so ...
//! cargo run --release -p habitus-engine --example ab_speed -- keystroke /tmp/a.so /tmp/b.so
//! cargo run --release -p habitus-engine --example ab_speed -- phone /tmp/touch-a.so /tmp/touch-b.so
//! ```
//!
//! `keystroke`: the keystroke plugin alone with the S-norm cohort profile (the bench's
//! `engine/route+score+fuse+trust/cohort`). `phone`: builds of the *touch* plugin, each
//! paired with the keystroke plugin of this workspace's release build (the bench's
//! `multimodal/phone`).

#[path = "../benches/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use common::{plugin_library, swipes, touch_profile, typing, typing_at};
use habitus_engine::{PluginInstance, PluginLibrary, Session, SessionConfig};
use habitus_plugin::{Event, RVec};

const ROUNDS: usize = 40;
const SESSIONS_PER_ROUND: usize = 5;

/// The engine benchmark's keystroke profile: a population of 150 synthetic typists of
/// different tempo, and a user enrolled from 5 windows.
fn keystroke_profile(plugin: &PluginInstance) -> Vec<u8> {
    let users: Vec<RVec<RVec<Event>>> = (0..150u64)
        .map(|u| {
            let tempo = 0.7 + 0.6 * (u % 25) as f64 / 25.0;
            (0..15)
                .map(|s| RVec::from(typing_at(50, 1000 + 100 * u + s, tempo)))
                .collect()
        })
        .collect();
    let population = plugin.build_population(&users).expect("population");
    let enrolment: Vec<RVec<Event>> = (0..5).map(|s| RVec::from(typing(50, s))).collect();
    plugin.enroll(&population, &enrolment).expect("enrolment")
}

type Slots = Vec<(Arc<PluginInstance>, Option<Vec<u8>>)>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, paths) = match args.split_first() {
        Some((mode, paths)) if !paths.is_empty() && (mode == "keystroke" || mode == "phone") => {
            (mode.as_str(), paths)
        }
        _ => {
            eprintln!("usage: ab_speed keystroke|phone PLUGIN.so [PLUGIN.so ...]");
            std::process::exit(2);
        }
    };
    // Keep every library loaded for as long as its instances live.
    let mut libraries: Vec<PluginLibrary> = Vec::new();
    let load = |path: &Path| -> PluginLibrary {
        PluginLibrary::load(path).unwrap_or_else(|e| {
            eprintln!("{}: {e}", path.display());
            std::process::exit(1)
        })
    };
    let (stream, setups): (Vec<Event>, Vec<Slots>) = if mode == "keystroke" {
        let setups = paths
            .iter()
            .map(|p| {
                let library = load(Path::new(p));
                let plugin = Arc::new(library.instantiate("mode = \"free\"").expect("plugin"));
                libraries.push(library);
                let profile = keystroke_profile(&plugin);
                vec![(plugin, Some(profile))]
            })
            .collect();
        (typing(5_000, 7), setups)
    } else {
        let keystroke_library = plugin_library("habitus-keystroke");
        let keystroke = Arc::new(
            keystroke_library
                .instantiate("mode = \"free\"")
                .expect("keystroke plugin"),
        );
        libraries.push(keystroke_library);
        let keystroke_profile = keystroke_profile(&keystroke);
        let setups = paths
            .iter()
            .map(|p| {
                let library = load(Path::new(p));
                let touch = Arc::new(library.instantiate("").expect("plugin"));
                libraries.push(library);
                let profile = touch_profile(&touch);
                vec![
                    (touch, Some(profile)),
                    (keystroke.clone(), Some(keystroke_profile.clone())),
                ]
            })
            .collect();
        let mut stream: Vec<Event> = swipes(400, 1.0, 99)
            .into_iter()
            .chain(typing(2_500, 7))
            .collect();
        stream.sort_by_key(|e| e.t_us);
        (stream, setups)
    };
    let config = SessionConfig::default();
    let mut best = vec![f64::INFINITY; setups.len()];
    for round in 0..ROUNDS {
        for (k, slots) in setups.iter().enumerate() {
            let start = Instant::now();
            for _ in 0..SESSIONS_PER_ROUND {
                let mut session = Session::new(&config, slots.clone());
                for e in &stream {
                    session.push(*e);
                }
                session.flush();
                std::hint::black_box(session.assess(stream.last().map_or(0, |e| e.t_us)));
            }
            best[k] = best[k].min(start.elapsed().as_secs_f64() / SESSIONS_PER_ROUND as f64);
        }
        eprint!("\rround {}/{ROUNDS}", round + 1);
    }
    eprintln!();
    for (path, seconds) in paths.iter().zip(&best) {
        println!(
            "{path}: {:.0} events/s (best session {:.2} ms, {} events)",
            stream.len() as f64 / seconds,
            seconds * 1e3,
            stream.len()
        );
    }
}
