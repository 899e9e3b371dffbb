//! Continuous evaluation on the CMU streams through the loaded keystroke plugin: a
//! regression guard on the held-out stream metrics (docs/results.md has the figures).

mod common;

use habitus_engine::eval::continuous::{default_grid, two_fold};
use habitus_engine::eval::{fixed_text, Quiet};
use habitus_engine::PluginLibrary;

#[test]
fn cmu_streams_catch_impostors_within_a_few_repetitions() {
    let Some(path) = common::dataset("cmu-keystroke/DSL-StrongPasswordData.csv") else {
        return;
    };
    let library = PluginLibrary::load(&common::library("habitus_keystroke")).unwrap();
    let data = fixed_text::load(&path).unwrap();
    let protocol = fixed_text::Protocol {
        train: 200,
        impostor_reps: 50,
    };
    let users = fixed_text::streams(&library, &data, protocol, 2, &Quiet).unwrap();
    assert_eq!(users.len(), 51);
    // Halves of 26 and 25 subjects: 25 or 24 impostor streams each.
    assert!(users
        .iter()
        .all(|u| u.genuine.len() == 200 && (24..=25).contains(&u.impostors.len())));
    let (folds, m) = two_fold(&users, &default_grid());
    assert_eq!(folds.len(), 2);
    // Measured: ANGA 927, 92.2 % never locked out, ANIA 7.40, undetected 10.7 %.
    assert!(m.ania.is_some_and(|a| a <= 8.5), "{m:?}");
    assert!(m.undetected <= 0.13, "{m:?}");
    assert!(m.users_never_locked_out >= 0.88, "{m:?}");
    assert!(m.genuine_lockouts <= 16, "{m:?}");
}
