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

use common::{keystroke_cohort, plugin_library, swipes, touch_profile, typing};
use habitus_engine::{PluginInstance, PluginLibrary, Session, SessionConfig};
use habitus_plugin::Event;

const ROUNDS: usize = 40;
const SESSIONS_PER_ROUND: usize = 5;

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
    let keystroke_library = (mode == "phone").then(|| plugin_library("habitus-keystroke"));
    let mut instance = |path: &Path, config: &str| -> Arc<PluginInstance> {
        let library = PluginLibrary::load(path).unwrap_or_else(|e| {
            eprintln!("{}: {e}", path.display());
            std::process::exit(1)
        });
        let plugin = Arc::new(library.instantiate(config).expect("plugin"));
        libraries.push(library);
        plugin
    };
    let (stream, setups): (Vec<Event>, Vec<Slots>) = if mode == "keystroke" {
        let setups = paths
            .iter()
            .map(|p| {
                let plugin = instance(Path::new(p), "mode = \"free\"");
                let (_, profile) = keystroke_cohort(&plugin);
                vec![(plugin, Some(profile))]
            })
            .collect();
        (typing(5_000, 7), setups)
    } else {
        let keystroke = Arc::new(
            keystroke_library
                .as_ref()
                .expect("loaded for the phone mode")
                .instantiate("mode = \"free\"")
                .expect("keystroke plugin"),
        );
        let (_, keystroke_profile) = keystroke_cohort(&keystroke);
        let setups = paths
            .iter()
            .map(|p| {
                let touch = instance(Path::new(p), "");
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
