//! Writes a replay file (habitusd's ingest format, one JSON event per line) of simulated
//! scrolling, to try the plugin in a running habitusd without a mouse:
//!
//! ```sh
//! cargo run --example replay -- 1 40 > me.replay       # person 1, 40 windows of 100 wheel events
//! cargo run --example replay -- 1 5 7 > me-later.replay # person 1 again, 5 fresh windows (seed 7)
//! cargo run --example replay -- 2 5 > someone.replay   # somebody else
//! ```

use habitus_plugin::conformance::{Behaviour, Habits, Synthetic};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("arguments: PERSON [WINDOWS] [SEED]"))
        .collect();
    let person = args.first().copied().unwrap_or(1);
    let windows = args.get(1).copied().unwrap_or(40) as usize;
    let seed = args.get(2).copied().unwrap_or(0);
    let synthetic = Synthetic::new(Behaviour::Wheel);
    let events = synthetic.window_of(&Habits::of(person), seed, windows * synthetic.window_events);
    println!("# habitus replay: simulated scrolling of person {person}, seed {seed}");
    for e in events {
        println!(
            r#"{{"t_us":{},"kind":"wheel","x":{},"y":{}}}"#,
            e.t_us, e.x, e.y
        );
    }
}
