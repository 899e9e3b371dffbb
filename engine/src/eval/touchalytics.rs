//! Touchalytics (Frank et al., IEEE TIFS 2013) on the authors' per-stroke feature matrix
//! `featMat.csv`, through the loaded touch plugin's feature-level entry points.
//!
//! Data: one row per stroke, 34 columns, no header: user id, doc id, then the stroke's
//! features with the phone id at column 13 (see the data set's README). The plugin's
//! stroke vector is the row without user id, doc id and phone id (31 values, the same
//! order). Docs 1–3 (and 6, a week later) are Wikipedia reading (scrolling strokes),
//! docs 4–5 (and 7) an image game (horizontal strokes). Rows are taken in file order,
//! which is recording order within a user's document.
//!
//! Protocol (the paper's §6–7, per stroke type: scrolling = flags 1/3 from the reading
//! documents, horizontal = flags 2/4 from the game documents; strokes of the other
//! type in a document are not used):
//!
//! * **intra-session**: every stroke of docs 1–3 (scrolling) or 4–5 (horizontal) goes to
//!   training or test by a fixed pseudo-random draw (half each);
//! * **inter-session**: train on the other same-day documents of the task, test on one
//!   (scrolling: 3 folds of 2 + 1 documents; horizontal: 2 folds of 1 + 1);
//! * **inter-week**: train on all week-1 documents of the task, test on doc 6 / 7 (users
//!   who have them).
//!
//! A user qualifies for a fold with at least [`MIN_TRAIN`] training strokes and
//! [`STROKES`] test strokes in one document. Decisions on 1 stroke and on 11 consecutive
//! strokes (sliding windows within a test document, the sum of the per-stroke LLRs).
//! Impostors: the test strokes of every other qualifying user — of the **same half** of
//! the users (halves alternate in user-id order). The population prior (standardisation,
//! whitening, reference strokes, calibration) is built from the **training documents of
//! the other half** only: it never sees the user under test, their impostors, or any test
//! document. EER per user, stroke type and fold (the paper's interpolation rule), averaged
//! over folds, then mean and sd over (user, stroke type) pairs. The first half (users 1, 3,
//! 5, … in id order) tuned the plugin's constants; the second is held out, and both are
//! reported.
//!
//! [`Protocol::ClosedSet`] (`Options::closed_set_variant`, reported as separate rows) is
//! the paper's setting instead: every other user's training documents form the
//! population, and every other user is an impostor — their training strokes are then
//! among the negatives. Test documents are never in a population under either protocol.

use std::collections::BTreeMap;
use std::path::Path;

use habitus_plugin::RVec;

use super::continuous::UserStreams;
use super::metrics::mean_sd;
use super::report::{summarise, SubjectScores};
use super::{parallel_map, DetectorResult, EvalError, EvalReport, Progress};
use crate::{PluginInstance, PluginLibrary};

/// Columns of `featMat.csv`.
pub const COLUMNS: usize = 34;
/// Values of the plugin's stroke vector (the row without user, doc and phone id).
pub const STROKE_FEATURES: usize = 31;
/// Strokes per decision in the paper's scenario experiments.
pub const STROKES: usize = 11;
/// Fewest training strokes of a type for a user to be enrolled in a fold.
pub const MIN_TRAIN: usize = 20;
const INTRA_SEED: u64 = 0x7061_7065_7232_3031;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StrokeType {
    /// Up/down (flags 1, 3), from the reading documents.
    Scroll,
    /// Left/right (flags 2, 4), from the game documents.
    Horizontal,
}

impl StrokeType {
    fn week1_docs(self) -> &'static [u32] {
        match self {
            StrokeType::Scroll => &[1, 2, 3],
            StrokeType::Horizontal => &[4, 5],
        }
    }
    fn week2_doc(self) -> u32 {
        match self {
            StrokeType::Scroll => 6,
            StrokeType::Horizontal => 7,
        }
    }
}

/// One stroke (row).
#[derive(Clone, Debug)]
pub struct Stroke {
    pub user: u32,
    pub doc: u32,
    pub phone: u32,
    pub kind: StrokeType,
    /// Row number in the file (1-based), for the intra-session draw and messages.
    pub row: usize,
    pub features: RVec<f64>,
}

#[derive(Clone, Debug)]
pub struct TouchalyticsData {
    pub path: String,
    /// Usable strokes, in file order.
    pub strokes: Vec<Stroke>,
    /// Strokes with a NaN or infinite feature value (scored; the plugin imputes them).
    pub strokes_with_missing: usize,
    /// Rows skipped because neither the flag nor the direction gives a stroke type.
    pub skipped_without_direction: usize,
}

impl TouchalyticsData {
    pub fn users(&self) -> Vec<u32> {
        let mut u: Vec<u32> = self.strokes.iter().map(|s| s.user).collect();
        u.sort_unstable();
        u.dedup();
        u
    }
}

fn stroke_type(flag: f64, direction: f64) -> Option<StrokeType> {
    use std::f64::consts::FRAC_PI_4;
    let flag = if [1.0, 2.0, 3.0, 4.0].contains(&flag) {
        flag
    } else if direction.is_finite() {
        // The plugin's quadrants: [-3π/4, -π/4) and [π/4, 3π/4) are up/down.
        let vertical = (-3.0 * FRAC_PI_4..-FRAC_PI_4).contains(&direction)
            || (FRAC_PI_4..3.0 * FRAC_PI_4).contains(&direction);
        if vertical {
            1.0
        } else {
            2.0
        }
    } else {
        return None;
    };
    Some(if flag == 1.0 || flag == 3.0 {
        StrokeType::Scroll
    } else {
        StrokeType::Horizontal
    })
}

/// Reads `featMat.csv` (or the folder holding it). Errors name the file and the line.
pub fn load(path: &Path) -> Result<TouchalyticsData, EvalError> {
    let file = if path.is_dir() {
        path.join("featMat.csv")
    } else {
        path.to_path_buf()
    };
    let p = file.display().to_string();
    let text = std::fs::read_to_string(&file).map_err(|e| EvalError::Data {
        path: p.clone(),
        message: format!("cannot read: {e}"),
    })?;
    let line_err = |line: usize, message: String| EvalError::Line {
        path: p.clone(),
        line,
        message,
    };
    let mut data = TouchalyticsData {
        path: p.clone(),
        strokes: Vec::new(),
        strokes_with_missing: 0,
        skipped_without_direction: 0,
    };
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != COLUMNS {
            return Err(line_err(
                i + 1,
                format!("{} fields, featMat.csv has {COLUMNS}", fields.len()),
            ));
        }
        let mut values = [0.0f64; COLUMNS];
        for (j, f) in fields.iter().enumerate() {
            values[j] = f.parse::<f64>().map_err(|_| {
                line_err(
                    i + 1,
                    format!("column {} value {f:?} is not a number", j + 1),
                )
            })?;
        }
        let label = |j: usize, what: &str, max: f64| -> Result<u32, EvalError> {
            let v = values[j];
            if v.fract() == 0.0 && (1.0..=max).contains(&v) {
                Ok(v as u32)
            } else {
                Err(line_err(
                    i + 1,
                    format!("column {} ({what}) {v} is not an id in 1..={max}", j + 1),
                ))
            }
        };
        let user = label(0, "user id", 1e6)?;
        let doc = label(1, "doc id", 7.0)?;
        let phone = label(12, "phone id", 1e6)?;
        let features: Vec<f64> = values[2..12].iter().chain(&values[13..]).copied().collect();
        debug_assert_eq!(features.len(), STROKE_FEATURES);
        let Some(kind) = stroke_type(values[10], values[11]) else {
            data.skipped_without_direction += 1;
            continue;
        };
        if features.iter().any(|v| !v.is_finite()) {
            data.strokes_with_missing += 1;
        }
        data.strokes.push(Stroke {
            user,
            doc,
            phone,
            kind,
            row: i + 1,
            features: features.into(),
        });
    }
    if data.users().len() < 4 {
        return Err(EvalError::Data {
            path: p,
            message: format!(
                "{} users; the protocol needs at least 4 (two halves of two)",
                data.users().len()
            ),
        });
    }
    Ok(data)
}

/// The three scenarios of the paper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    IntraSession,
    InterSession,
    InterWeek,
}

impl Scenario {
    pub const ALL: [Scenario; 3] = [
        Scenario::IntraSession,
        Scenario::InterSession,
        Scenario::InterWeek,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::IntraSession => "intra-session",
            Scenario::InterSession => "inter-session",
            Scenario::InterWeek => "inter-week",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Scenario::IntraSession => "train/test = a fixed pseudo-random half each of all week-1 strokes of the task",
            Scenario::InterSession => "train on the other same-day documents of the task, test on one (scrolling 3 folds, horizontal 2)",
            Scenario::InterWeek => "train on the week-1 documents, test on doc 6 (scrolling) / 7 (horizontal) 7-14 days later",
        }
    }

    /// `(training docs, test docs, intra)` per fold.
    fn folds(self, kind: StrokeType) -> Vec<(Vec<u32>, Vec<u32>, bool)> {
        let week1 = kind.week1_docs();
        match self {
            Scenario::IntraSession => vec![(week1.to_vec(), week1.to_vec(), true)],
            Scenario::InterSession => week1
                .iter()
                .map(|&test| {
                    let train = week1.iter().copied().filter(|&d| d != test).collect();
                    (train, vec![test], false)
                })
                .collect(),
            Scenario::InterWeek => vec![(week1.to_vec(), vec![kind.week2_doc()], false)],
        }
    }
}

/// Whose strokes a user's population holds, and who their impostors are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// The main variant: the population comes from the training documents of the other
    /// half of the users; impostors are the other users of the user's own half, whose
    /// strokes no model ever saw (an unknown person picks up the phone).
    OpenSet,
    /// The paper's setting (its two-class classifiers learn from other users' strokes):
    /// the population comes from the training documents of *every* other user, and
    /// impostors are every other user's test documents. An impostor's training strokes
    /// are among the user's negatives; no test document is ever in a population (an
    /// insider threat: the people sharing a device, known in advance).
    ClosedSet,
}

impl Protocol {
    /// Whether `other`'s training strokes are in `me`'s population. Never `me`'s own:
    /// they are the genuine class.
    fn in_population(self, me: &UserFold, other: &UserFold) -> bool {
        match self {
            Protocol::OpenSet => other.half != me.half,
            Protocol::ClosedSet => other.user != me.user,
        }
    }

    /// Whether `other`'s test strokes are scored as impostors against `me`.
    fn is_impostor(self, me: &UserFold, other: &UserFold) -> bool {
        match self {
            Protocol::OpenSet => other.half == me.half && other.user != me.user,
            Protocol::ClosedSet => other.user != me.user,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Protocol::OpenSet => "two-fold open set: population prior (standardisation, whitening, reference strokes, calibration) from the training documents of the other half of the users only; impostors = the other users of the same half, never seen in any population",
            Protocol::ClosedSet => "closed set (the paper's setting): population prior from the training documents of every other user, impostors = every other user's test documents (their training documents are among the negatives; no test document is in any population)",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub scenarios: Vec<Scenario>,
    /// Also run inter-session with `device_features = true` (pressure and area).
    pub device_variant: bool,
    /// Also run every scenario under [`Protocol::ClosedSet`] (reported as separate rows).
    pub closed_set_variant: bool,
    /// Only the first N users in id order (a quick subset; `None` = all).
    pub users: Option<usize>,
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            scenarios: Scenario::ALL.to_vec(),
            device_variant: true,
            closed_set_variant: false,
            users: None,
            threads: super::default_threads(),
        }
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn intra_train(row: usize) -> bool {
    splitmix(row as u64 ^ INTRA_SEED) & 1 == 0
}

/// One user's strokes in one fold: training strokes, test strokes grouped by document.
struct UserFold<'a> {
    user: u32,
    phone: u32,
    half: usize,
    train: Vec<&'a Stroke>,
    test: Vec<Vec<&'a Stroke>>,
}

impl UserFold<'_> {
    fn has_window(&self) -> bool {
        self.test.iter().any(|d| d.len() >= STROKES)
    }
}

/// Per-stroke anomaly scores (−LLR) of one user's test strokes, by document.
type DocScores = Vec<Vec<f64>>;

fn windows(docs: &DocScores, n: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for d in docs {
        if n == 1 {
            out.extend_from_slice(d);
        } else if d.len() >= n {
            let mut sum: f64 = d[..n].iter().sum();
            out.push(sum);
            for (entering, leaving) in d[n..].iter().zip(d) {
                sum += entering - leaving;
                out.push(sum);
            }
        }
    }
    out
}

/// Scores of one (user, stroke type, fold): per decision size, per impostor.
struct FoldScores {
    user: u32,
    kind: StrokeType,
    half: usize,
    phone: u32,
    genuine: DocScores,
    /// (impostor's phone, their scores)
    impostors: Vec<(u32, DocScores)>,
}

fn score_docs(
    plugin: &PluginInstance,
    profile: &[u8],
    docs: &[Vec<&Stroke>],
) -> Result<DocScores, EvalError> {
    docs.iter()
        .map(|d| {
            d.iter()
                .map(|s| {
                    plugin
                        .score_features(profile, &s.features)
                        .map(|sc| -sc.llr)
                        .map_err(EvalError::from)
                })
                .collect()
        })
        .collect()
}

/// Runs every fold of one scenario: the scores of every qualifying (user, type, fold).
fn run_scenario(
    plugin: &PluginInstance,
    data: &TouchalyticsData,
    scenario: Scenario,
    protocol: Protocol,
    threads: usize,
    progress: &dyn Progress,
    label: &str,
) -> Result<Vec<FoldScores>, EvalError> {
    let users = data.users();
    let half_of: BTreeMap<u32, usize> =
        users.iter().enumerate().map(|(i, &u)| (u, i % 2)).collect();
    let mut jobs = Vec::new();
    for kind in [StrokeType::Scroll, StrokeType::Horizontal] {
        for (train_docs, test_docs, intra) in scenario.folds(kind) {
            let mut per_user: BTreeMap<u32, UserFold> = BTreeMap::new();
            for s in data.strokes.iter().filter(|s| s.kind == kind) {
                let is_train = train_docs.contains(&s.doc) && (!intra || intra_train(s.row));
                let is_test = test_docs.contains(&s.doc) && (!intra || !intra_train(s.row));
                if !is_train && !is_test {
                    continue;
                }
                let uf = per_user.entry(s.user).or_insert_with(|| UserFold {
                    user: s.user,
                    phone: s.phone,
                    half: half_of[&s.user],
                    train: Vec::new(),
                    test: vec![Vec::new(); test_docs.len()],
                });
                if is_train {
                    uf.train.push(s);
                }
                if is_test {
                    let at = test_docs.iter().position(|&d| d == s.doc).unwrap_or(0);
                    uf.test[at].push(s);
                }
            }
            jobs.push((kind, per_user));
        }
    }
    let total: usize = jobs
        .iter()
        .map(|(_, pu)| pu.values().filter(|u| u.has_window()).count())
        .sum();
    progress.start(label, total);
    // The training strokes of every user `keep` admits, one list per user.
    // The training strokes of every user `keep` admits, one list per user.
    let population_of = |per_user: &BTreeMap<u32, UserFold>, keep: &dyn Fn(&UserFold) -> bool| {
        let users: Vec<RVec<RVec<f64>>> = per_user
            .values()
            .filter(|u| keep(u) && !u.train.is_empty())
            .map(|u| u.train.iter().map(|s| s.features.clone()).collect())
            .collect();
        plugin.build_population_features(&users)
    };
    let mut out = Vec::new();
    for (kind, per_user) in &jobs {
        let members: Vec<&UserFold> = per_user.values().filter(|u| u.has_window()).collect();
        let enrolled: Vec<&UserFold> = members
            .iter()
            .copied()
            .filter(|u| u.train.len() >= MIN_TRAIN)
            .collect();
        // Open set: every user of a half has the same population, built once per half.
        let mut shared: [Option<Vec<u8>>; 2] = [None, None];
        if protocol == Protocol::OpenSet {
            for (half, population) in shared.iter_mut().enumerate() {
                if let Some(me) = enrolled.iter().find(|u| u.half == half) {
                    *population =
                        Some(population_of(per_user, &|u| protocol.in_population(me, u))?);
                }
            }
        }
        let results = parallel_map(enrolled.len(), threads, |i| {
            let me = enrolled[i];
            let samples: Vec<RVec<f64>> = me.train.iter().map(|s| s.features.clone()).collect();
            let r = (|| -> Result<FoldScores, EvalError> {
                let own;
                let population = match &shared[me.half] {
                    Some(p) => p,
                    None => {
                        own = population_of(per_user, &|u| protocol.in_population(me, u))?;
                        &own
                    }
                };
                let profile = plugin.enroll_features(population, &samples)?;
                let genuine = score_docs(plugin, &profile, &me.test)?;
                let mut impostors = Vec::new();
                for other in members.iter().filter(|o| protocol.is_impostor(me, o)) {
                    impostors.push((other.phone, score_docs(plugin, &profile, &other.test)?));
                }
                Ok(FoldScores {
                    user: me.user,
                    kind: *kind,
                    half: me.half,
                    phone: me.phone,
                    genuine,
                    impostors,
                })
            })();
            progress.advance();
            r
        });
        for _ in enrolled.len()..members.len() {
            progress.advance();
        }
        for r in results {
            out.push(r?);
        }
    }
    progress.finish();
    Ok(out)
}

/// Which impostors count.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Impostors {
    All,
    SamePhone,
}

struct Summary {
    result: DetectorResult,
    /// Mean EER per half and pairs counted.
    halves: [(f64, usize); 2],
}

fn summarise_scenario(
    folds: &[FoldScores],
    n: usize,
    impostors: Impostors,
    detector: String,
    variant: String,
) -> Option<Summary> {
    // (user, type) -> per-fold subject scores
    let mut pairs: BTreeMap<(u32, StrokeType), (usize, Vec<SubjectScores>)> = BTreeMap::new();
    for f in folds {
        let genuine = windows(&f.genuine, n);
        let impostor: Vec<f64> = f
            .impostors
            .iter()
            .filter(|(phone, _)| impostors == Impostors::All || *phone == f.phone)
            .flat_map(|(_, docs)| windows(docs, n))
            .collect();
        if genuine.is_empty() || impostor.is_empty() {
            continue;
        }
        pairs
            .entry((f.user, f.kind))
            .or_insert_with(|| (f.half, Vec::new()))
            .1
            .push(SubjectScores::new(genuine, impostor));
    }
    if pairs.is_empty() {
        return None;
    }
    let mut halves = [(Vec::new(), 0usize), (Vec::new(), 0usize)];
    let per_pair: Vec<SubjectScores> = pairs
        .into_values()
        .map(|(half, folds)| {
            let k = folds.len() as f64;
            let eer = folds.iter().map(|s| s.eer).sum::<f64>() / k;
            let zm_far = folds.iter().map(|s| s.zm_far).sum::<f64>() / k;
            halves[half].0.push(eer);
            halves[half].1 += 1;
            let mut genuine = Vec::new();
            let mut impostor = Vec::new();
            for s in folds {
                genuine.extend(s.genuine);
                impostor.extend(s.impostor);
            }
            SubjectScores {
                eer,
                zm_far,
                genuine,
                impostor,
            }
        })
        .collect();
    let mut result = summarise(&detector, variant, None, per_pair);
    result.det = thin(&result.det, DET_POINTS);
    let halves = [
        (mean_sd(&halves[0].0).0, halves[0].1),
        (mean_sd(&halves[1].0).0, halves[1].1),
    ];
    Some(Summary { result, halves })
}

/// DET points kept per curve: hundreds of thousands of pooled scores would make a
/// plot of tens of megabytes that looks the same.
const DET_POINTS: usize = 2000;

/// Evenly spaced points of a curve, always keeping its ends.
fn thin(points: &[(f64, f64)], keep: usize) -> Vec<(f64, f64)> {
    if points.len() <= keep || keep < 2 {
        return points.to_vec();
    }
    let last = points.len() - 1;
    (0..keep).map(|i| points[i * last / (keep - 1)]).collect()
}

fn count_label(n: usize) -> String {
    if n == 1 {
        "1 stroke".into()
    } else {
        format!("{n} strokes")
    }
}

/// The whole report.
pub fn run(
    library: &PluginLibrary,
    data: &TouchalyticsData,
    options: &Options,
    progress: &dyn Progress,
) -> Result<EvalReport, EvalError> {
    let subset;
    let data = match options.users {
        Some(n) if n < data.users().len() => {
            let keep = data.users()[..n].to_vec();
            subset = TouchalyticsData {
                strokes: data
                    .strokes
                    .iter()
                    .filter(|s| keep.contains(&s.user))
                    .cloned()
                    .collect(),
                ..data.clone()
            };
            &subset
        }
        _ => data,
    };
    let behaviour = library.instantiate("")?;
    let mut results = Vec::new();
    let mut notes = vec![
        "every stroke vector goes through the loaded touch plugin's feature-level entry points (build_population_features, enroll_features, score_features)".to_string(),
        format!(
            "{} strokes; {} with a NaN or infinite feature value (the plugin imputes at most 8 missing model values per stroke at the population centre); {} rows skipped without flag or direction",
            data.strokes.len(),
            data.strokes_with_missing,
            data.skipped_without_direction
        ),
        match options.users {
            Some(n) => format!("subset: only the first {n} users in id order"),
            None => format!("all {} users", data.users().len()),
        },
        "features: the plugin's behaviour set — phone id, phone orientation, finger orientation and its change are left out as environment cues; pressure and area (device-calibrated) only in the rows marked device features".to_string(),
    ];
    let population_variant = Protocol::OpenSet.describe();
    let mut push = |s: Option<Summary>, notes: &mut Vec<String>| {
        if let Some(s) = s {
            notes.push(format!(
                "{}: tuning half (users 1, 3, 5, … in id order) mean EER {:.4} over {} user×type pairs; held-out half {:.4} over {}",
                s.result.detector, s.halves[0].0, s.halves[0].1, s.halves[1].0, s.halves[1].1
            ));
            results.push(s.result);
        }
    };
    let mut same_phone = Vec::new();
    for &scenario in &options.scenarios {
        let folds = run_scenario(
            &behaviour,
            data,
            scenario,
            Protocol::OpenSet,
            options.threads,
            progress,
            scenario.name(),
        )?;
        for n in [1, STROKES] {
            push(
                summarise_scenario(
                    &folds,
                    n,
                    Impostors::All,
                    format!("{}, {}", scenario.name(), count_label(n)),
                    format!("{}; {population_variant}", scenario.describe()),
                ),
                &mut notes,
            );
            same_phone.push(summarise_scenario(
                &folds,
                n,
                Impostors::SamePhone,
                format!("{}, {}, same-phone impostors", scenario.name(), count_label(n)),
                format!("{}; as above, but only impostors recorded on the same phone model (environment-cue check; pairs without such an impostor left out)", scenario.describe()),
            ));
        }
    }
    for s in same_phone {
        push(s, &mut notes);
    }
    if options.closed_set_variant {
        let closed = Protocol::ClosedSet;
        for &scenario in &options.scenarios {
            let label = format!("{}, closed set", scenario.name());
            let folds = run_scenario(
                &behaviour,
                data,
                scenario,
                closed,
                options.threads,
                progress,
                &label,
            )?;
            for n in [1, STROKES] {
                push(
                    summarise_scenario(
                        &folds,
                        n,
                        Impostors::All,
                        format!("{}, {}, closed set", scenario.name(), count_label(n)),
                        format!("{}; {}", scenario.describe(), closed.describe()),
                    ),
                    &mut notes,
                );
            }
        }
    }
    if options.device_variant && options.scenarios.contains(&Scenario::InterSession) {
        let device = library.instantiate("device_features = true")?;
        let scenario = Scenario::InterSession;
        let folds = run_scenario(
            &device,
            data,
            scenario,
            Protocol::OpenSet,
            options.threads,
            progress,
            "inter-session + device",
        )?;
        for n in [1, STROKES] {
            for (impostors, suffix) in [
                (Impostors::All, ""),
                (Impostors::SamePhone, ", same-phone impostors"),
            ] {
                push(
                    summarise_scenario(
                        &folds,
                        n,
                        impostors,
                        format!(
                            "{}, {} + device features{suffix}",
                            scenario.name(),
                            count_label(n)
                        ),
                        format!("{}; {population_variant}; with mid-stroke pressure and area (device-calibrated: across phone models they identify the phone)", scenario.describe()),
                    ),
                    &mut notes,
                );
            }
        }
    }
    Ok(EvalReport {
        dataset: "Touchalytics (featMat.csv, Frank et al. 2013)".into(),
        protocol: format!(
            "per stroke type (scrolling from reading docs 1-3/6, horizontal from game docs 4-5/7); users with >= {MIN_TRAIN} training strokes and {STROKES} test strokes in one document; decisions on 1 stroke and on {STROKES} consecutive strokes (sum of per-stroke LLRs, sliding windows within a document); EER per user, type and fold by interpolation, averaged over folds; mean and sd over (user, stroke type) pairs; users split into halves by alternating id order, each half scored with a population from the other"
        ),
        results,
        notes,
    })
}

/// Continuous-authentication streams (see [`super::continuous`]), inter-session
/// protocol: per user, every (stroke type, fold) profile scores the user's held-out
/// document stroke by stroke; the genuine stream is all of them in order (scrolling
/// folds, then horizontal); every other user of the same half gives one impostor stream
/// per (stroke type, fold): their strokes of the test document. Populations as in
/// [`run`]: the other half's training documents (never a test document). Users come out
/// in id order.
pub fn streams(
    library: &PluginLibrary,
    data: &TouchalyticsData,
    threads: usize,
    progress: &dyn Progress,
) -> Result<Vec<UserStreams>, EvalError> {
    let plugin = library.instantiate("")?;
    let folds = run_scenario(
        &plugin,
        data,
        Scenario::InterSession,
        Protocol::OpenSet,
        threads,
        progress,
        "touch streams",
    )?;
    let llrs = |docs: &DocScores| -> Vec<f64> { docs.iter().flatten().map(|s| -s).collect() };
    let mut out: BTreeMap<u32, UserStreams> = BTreeMap::new();
    for f in &folds {
        let user = out.entry(f.user).or_insert_with(|| UserStreams {
            user: format!("user {}", f.user),
            ..UserStreams::default()
        });
        user.genuine.extend(llrs(&f.genuine));
        user.impostors.extend(
            f.impostors
                .iter()
                .map(|(_, docs)| llrs(docs))
                .filter(|s| !s.is_empty()),
        );
    }
    Ok(out.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_keep_users_and_impostors_where_they_belong() {
        let fold = |user: u32, half: usize| UserFold {
            user,
            phone: 1,
            half,
            train: Vec::new(),
            test: Vec::new(),
        };
        let users: Vec<UserFold> = (1..=6).map(|u| fold(u, (u as usize - 1) % 2)).collect();
        for me in &users {
            for other in &users {
                for p in [Protocol::OpenSet, Protocol::ClosedSet] {
                    if other.user == me.user {
                        assert!(
                            !p.in_population(me, other),
                            "{p:?}: own strokes as negatives"
                        );
                        assert!(!p.is_impostor(me, other), "{p:?}: own strokes as impostor");
                    }
                }
                // Open set: no impostor was ever seen in the population.
                let open = Protocol::OpenSet;
                assert!(!(open.is_impostor(me, other) && open.in_population(me, other)));
                // Closed set: every impostor's training strokes are negatives.
                let closed = Protocol::ClosedSet;
                if closed.is_impostor(me, other) {
                    assert!(closed.in_population(me, other));
                }
            }
            let impostors = |p: Protocol| users.iter().filter(|o| p.is_impostor(me, o)).count();
            assert_eq!(impostors(Protocol::OpenSet), 2);
            assert_eq!(impostors(Protocol::ClosedSet), 5);
        }
    }

    #[test]
    fn thinning_keeps_the_ends() {
        let curve: Vec<(f64, f64)> = (0..=100).map(|i| (i as f64, -(i as f64))).collect();
        let t = thin(&curve, 5);
        assert_eq!(t.len(), 5);
        assert_eq!(t[0], curve[0]);
        assert_eq!(t[4], curve[100]);
        assert_eq!(thin(&curve[..3], 5).len(), 3);
    }

    #[test]
    fn windows_slide_within_documents() {
        let docs = vec![vec![1.0, 2.0, 3.0], vec![10.0, 20.0], vec![5.0]];
        assert_eq!(windows(&docs, 1).len(), 6);
        assert_eq!(windows(&docs, 2), vec![3.0, 5.0, 30.0]);
        assert!(windows(&docs, 4).is_empty());
    }

    #[test]
    fn stroke_types_from_flag_or_direction() {
        assert_eq!(stroke_type(3.0, 0.0), Some(StrokeType::Scroll));
        assert_eq!(stroke_type(4.0, 0.0), Some(StrokeType::Horizontal));
        assert_eq!(stroke_type(f64::NAN, 1.6), Some(StrokeType::Scroll));
        assert_eq!(stroke_type(f64::NAN, -3.0), Some(StrokeType::Horizontal));
        assert_eq!(stroke_type(f64::NAN, f64::NAN), None);
    }

    #[test]
    fn folds_follow_the_paper() {
        let f = Scenario::InterSession.folds(StrokeType::Scroll);
        assert_eq!(f.len(), 3);
        assert_eq!(f[0], (vec![2, 3], vec![1], false));
        let f = Scenario::InterSession.folds(StrokeType::Horizontal);
        assert_eq!(
            f,
            vec![(vec![5], vec![4], false), (vec![4], vec![5], false)]
        );
        let f = Scenario::InterWeek.folds(StrokeType::Horizontal);
        assert_eq!(f, vec![(vec![4, 5], vec![7], false)]);
        let share = (0..10_000).filter(|&r| intra_train(r)).count();
        assert!((4_800..5_200).contains(&share), "{share}");
    }
}
