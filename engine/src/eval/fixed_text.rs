//! Fixed-text keystroke benchmarks in the CMU layout (Killourhy & Maxion 2009).
//!
//! CSV: `subject, sessionIndex, rep`, then `H.k, DD.k.k', UD.k.k', …, H.last` in seconds.
//! Each row is turned back into the raw KeyDown/KeyUp stream it was measured from and
//! goes through the loaded keystroke plugin, so the benchmark measures the real path.

use std::collections::BTreeMap;
use std::path::Path;

use habitus_plugin::{Event, EventKind, RVec};

use super::report::{summarise, SubjectScores};
use super::{parallel_map, DetectorResult, EvalError, EvalReport, Progress};
use crate::{KeyHasher, PluginLibrary};

/// One subject's repetitions, in session then repetition order.
#[derive(Clone, Debug)]
pub struct Subject {
    pub name: String,
    pub reps: Vec<RVec<Event>>,
}

/// A parsed fixed-text data set.
#[derive(Clone, Debug)]
pub struct FixedTextData {
    pub path: String,
    pub subjects: Vec<Subject>,
    pub keys: usize,
}

/// Stand-in key code for a key name from the CSV header (the data has names, the live
/// path has codes; either way only the keyed hash reaches the plugin).
fn key_code(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The evaluation's key-id secret. Fixed so runs are reproducible; plugins cannot tell.
const EVAL_SECRET: [u8; 16] = *b"habitus-eval-key";

/// Rebuilds the event stream of one row: presses follow DD, releases follow H. `columns`
/// are the timing columns' names (`H.a`, `DD.a.b`, `UD.a.b`, …), for errors.
///
/// A hold or a down-down latency of zero (after rounding to the microsecond) is an
/// error naming its column rather than a guess: the plugin reads the typed order from
/// the times alone, as it must for live input, and two events at one instant carry no
/// order, so such a row would not be the enrolled text (before, the whole evaluation
/// stopped at the first score with "window is not the enrolled text", naming no row).
fn row_events(keys: &[u32], values: &[f64], columns: &[&str]) -> Result<RVec<Event>, String> {
    let n = keys.len();
    let mut events = Vec::with_capacity(2 * n);
    let mut down: i64 = 1_000_000;
    for i in 0..n {
        let hold = values[3 * i];
        let column = |j: usize| format!("column {} ({})", j + 4, columns[j]);
        if !(0.0..60.0).contains(&hold) {
            return Err(format!(
                "hold time {hold} of key {i} is not a duration in seconds ({})",
                column(3 * i)
            ));
        }
        let hold_us = (hold * 1e6).round() as i64;
        if hold_us == 0 {
            return Err(format!(
                "{} is {hold}: a zero hold cannot be ordered (the release would coincide with its press); fix or remove this row",
                column(3 * i)
            ));
        }
        let up = down + hold_us;
        events.push(Event::key(EventKind::KEY_DOWN, down as u64, keys[i]));
        events.push(Event::key(EventKind::KEY_UP, up as u64, keys[i]));
        if i + 1 < n {
            let dd = values[3 * i + 1];
            if !(0.0..600.0).contains(&dd) {
                return Err(format!(
                    "down-down latency {dd} after key {i} is not a duration in seconds ({})",
                    column(3 * i + 1)
                ));
            }
            let dd_us = (dd * 1e6).round() as i64;
            if dd_us == 0 {
                return Err(format!(
                    "{} is {dd}: a zero interval cannot be ordered (two presses at one instant); fix or remove this row",
                    column(3 * i + 1)
                ));
            }
            down += dd_us;
        }
    }
    // Time order; at equal times a release goes first (a key can be pressed again
    // only after it was released).
    events.sort_by_key(|e| (e.t_us, e.kind != EventKind::KEY_UP));
    Ok(events.into())
}

/// Parses a CMU-layout CSV. Errors name the file and the line.
pub fn load(path: &Path) -> Result<FixedTextData, EvalError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::Data {
        path: p.clone(),
        message: format!("cannot read: {e}"),
    })?;
    let mut lines = text.lines().enumerate();
    let (_, header) = lines.next().ok_or_else(|| EvalError::Data {
        path: p.clone(),
        message: "empty file".into(),
    })?;
    let cols: Vec<&str> = header
        .trim_end_matches('\r')
        .split(',')
        .map(str::trim)
        .collect();
    let line_err = |line: usize, message: String| EvalError::Line {
        path: p.clone(),
        line: line + 1,
        message,
    };
    if cols.len() < 7 || cols[0] != "subject" || cols[1] != "sessionIndex" || cols[2] != "rep" {
        return Err(line_err(
            0,
            "header must start with subject,sessionIndex,rep followed by H./DD./UD. columns".into(),
        ));
    }
    let features = &cols[3..];
    if (features.len() + 2) % 3 != 0 {
        return Err(line_err(
            0,
            format!(
                "{} timing columns is not 3n-2 (H, DD, UD per key)",
                features.len()
            ),
        ));
    }
    let mut key_names = Vec::new();
    for (j, c) in features.iter().enumerate() {
        let prefix = ["H.", "DD.", "UD."][j % 3];
        let Some(rest) = c.strip_prefix(prefix) else {
            return Err(line_err(
                0,
                format!("column {} is {c:?}, expected {prefix}*", j + 4),
            ));
        };
        if j % 3 == 0 {
            key_names.push(rest.to_string());
        }
    }
    let hasher = KeyHasher::new(EVAL_SECRET);
    let keys: Vec<u32> = key_names
        .iter()
        .map(|k| hasher.key_id(key_code(k)))
        .collect();
    // Per subject: ((session, rep), events), sorted by (session, rep) afterwards.
    type Reps = Vec<((u32, u32), RVec<Event>)>;
    let mut by_subject: BTreeMap<String, Reps> = BTreeMap::new();
    for (i, raw) in lines {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != cols.len() {
            return Err(line_err(
                i,
                format!("{} fields, header has {}", fields.len(), cols.len()),
            ));
        }
        let session: u32 = fields[1]
            .parse()
            .map_err(|_| line_err(i, format!("sessionIndex {:?} is not a number", fields[1])))?;
        let rep: u32 = fields[2]
            .parse()
            .map_err(|_| line_err(i, format!("rep {:?} is not a number", fields[2])))?;
        let mut values = Vec::with_capacity(features.len());
        for (j, f) in fields[3..].iter().enumerate() {
            values.push(f.parse::<f64>().map_err(|_| {
                line_err(
                    i,
                    format!(
                        "column {} ({}) value {f:?} is not a number",
                        j + 4,
                        features[j]
                    ),
                )
            })?);
        }
        let events = row_events(&keys, &values, features).map_err(|m| line_err(i, m))?;
        by_subject
            .entry(fields[0].to_string())
            .or_default()
            .push(((session, rep), events));
    }
    if by_subject.len() < 3 {
        return Err(EvalError::Data {
            path: p,
            message: format!(
                "{} subjects; a verification benchmark needs at least 3",
                by_subject.len()
            ),
        });
    }
    let subjects = by_subject
        .into_iter()
        .map(|(name, mut reps)| {
            reps.sort_by_key(|(order, _)| *order);
            Subject {
                name,
                reps: reps.into_iter().map(|(_, e)| e).collect(),
            }
        })
        .collect();
    Ok(FixedTextData {
        path: p,
        subjects,
        keys: keys.len(),
    })
}

/// The Killourhy & Maxion protocol parameters.
#[derive(Clone, Copy, Debug)]
pub struct Protocol {
    /// Genuine training repetitions (the first ones); the rest are genuine tests.
    pub train: usize,
    /// First repetitions of every other subject used as impostor attempts.
    pub impostor_reps: usize,
}

impl Protocol {
    pub const CMU: Protocol = Protocol {
        train: 200,
        impostor_reps: 5,
    };
}

/// Refuses impostor repetitions the data cannot supply: none at all, or more than the
/// subject with the fewest repetitions has (the report would claim "first N reps" of
/// subjects who have fewer).
fn check_impostor_reps(data: &FixedTextData, protocol: Protocol) -> Result<(), EvalError> {
    if protocol.impostor_reps == 0 {
        return Err(EvalError::Protocol(
            "0 impostor repetitions: nothing to tell impostors by; use at least 1".into(),
        ));
    }
    if let Some(fewest) = data.subjects.iter().min_by_key(|s| s.reps.len()) {
        if protocol.impostor_reps > fewest.reps.len() {
            return Err(EvalError::Protocol(format!(
                "{} impostor repetitions per subject asked for, but subject {} has only {} in {}: use at most {}",
                protocol.impostor_reps,
                fewest.name,
                fewest.reps.len(),
                data.path,
                fewest.reps.len()
            )));
        }
    }
    Ok(())
}

/// The detectors `habitus eval` reports: the paper's three references, then ours.
pub const REFERENCE_DETECTORS: [&str; 3] = ["euclidean", "manhattan", "scaled-manhattan"];

fn score_all(
    plugin: &crate::PluginInstance,
    profile: &[u8],
    windows: &[RVec<Event>],
) -> Result<Vec<f64>, EvalError> {
    // Anomaly score = -LLR (higher = more impostor-like), as the paper's ROC expects.
    windows
        .iter()
        .map(|w| {
            plugin
                .score(profile, w)
                .map(|s| -s.llr)
                .map_err(EvalError::from)
        })
        .collect()
}

fn evaluate_subject(
    plugin: &crate::PluginInstance,
    population: &[u8],
    data: &FixedTextData,
    s: usize,
    impostors: &[usize],
    protocol: Protocol,
) -> Result<SubjectScores, EvalError> {
    let subject = &data.subjects[s];
    if subject.reps.len() <= protocol.train {
        return Err(EvalError::Protocol(format!(
            "subject {} has {} repetitions, the protocol trains on {}",
            subject.name,
            subject.reps.len(),
            protocol.train
        )));
    }
    let profile = plugin.enroll(population, &subject.reps[..protocol.train])?;
    let genuine = score_all(plugin, &profile, &subject.reps[protocol.train..])?;
    let mut impostor = Vec::new();
    for &o in impostors {
        let reps = &data.subjects[o].reps;
        impostor.extend(score_all(
            plugin,
            &profile,
            &reps[..protocol.impostor_reps.min(reps.len())],
        )?);
    }
    Ok(SubjectScores::new(genuine, impostor))
}

/// One-class protocol (no population data): every other subject is an impostor.
pub fn run_one_class(
    library: &PluginLibrary,
    detector: &str,
    data: &FixedTextData,
    protocol: Protocol,
    threads: usize,
    progress: &dyn Progress,
) -> Result<DetectorResult, EvalError> {
    let plugin = library.instantiate(&format!("mode = \"fixed\"\ndetector = \"{detector}\"\n"))?;
    let n = data.subjects.len();
    progress.start(detector, n);
    let results = parallel_map(n, threads, |s| {
        let others: Vec<usize> = (0..n).filter(|&o| o != s).collect();
        let r = evaluate_subject(&plugin, &[], data, s, &others, protocol);
        progress.advance();
        r
    });
    progress.finish();
    let per_subject = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(summarise(
        detector,
        format!(
            "one-class: trained on the subject's first {} reps only, impostors = first {} reps of all {} other subjects",
            protocol.train,
            protocol.impostor_reps,
            n - 1
        ),
        None,
        per_subject,
    ))
}

/// Two-fold background protocol for detectors that learn a population prior: subjects
/// are split into halves H1/H2 (alternating in sorted order). For subject `s` in one
/// half, fold 1 learns the population from the *other* half and tests against the
/// impostors of its own half; fold 2 swaps them. The population therefore never contains
/// the subject under test or any impostor it is tested against. Per-subject EER and
/// zero-miss FAR are the mean of the two folds.
pub fn run_two_fold(
    library: &PluginLibrary,
    detector: &str,
    data: &FixedTextData,
    protocol: Protocol,
    threads: usize,
    progress: &dyn Progress,
) -> Result<DetectorResult, EvalError> {
    let plugin = library.instantiate(&format!("mode = \"fixed\"\ndetector = \"{detector}\"\n"))?;
    let n = data.subjects.len();
    let half = |i: usize| i % 2;
    let population_of = |members: &[usize]| -> Result<Vec<u8>, EvalError> {
        let users: Vec<RVec<RVec<Event>>> = members
            .iter()
            .map(|&u| data.subjects[u].reps.iter().cloned().collect())
            .collect();
        Ok(plugin.build_population(&users)?)
    };
    // The population of each whole half is shared by all subjects of the other half.
    let whole: Vec<Vec<usize>> = (0..2)
        .map(|h| (0..n).filter(|&i| half(i) == h).collect())
        .collect();
    let whole_population = [population_of(&whole[0])?, population_of(&whole[1])?];
    progress.start(detector, n);
    let results = parallel_map(n, threads, |s| -> Result<SubjectScores, EvalError> {
        let mine: Vec<usize> = whole[half(s)].iter().copied().filter(|&i| i != s).collect();
        let other = &whole[1 - half(s)];
        let fold1 = evaluate_subject(
            &plugin,
            &whole_population[1 - half(s)],
            data,
            s,
            &mine,
            protocol,
        )?;
        let own_population = population_of(&mine)?;
        let fold2 = evaluate_subject(&plugin, &own_population, data, s, other, protocol)?;
        progress.advance();
        let mut impostor = fold1.impostor;
        impostor.extend(fold2.impostor);
        let mut genuine = fold1.genuine;
        genuine.extend(fold2.genuine);
        Ok(SubjectScores {
            eer: 0.5 * (fold1.eer + fold2.eer),
            zm_far: 0.5 * (fold1.zm_far + fold2.zm_far),
            genuine,
            impostor,
        })
    });
    progress.finish();
    let per_subject = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(summarise(
        detector,
        format!(
            "two-fold background: population prior learned only from subjects disjoint from the subject under test and its impostors (halves of {n}, swapped); trained on first {} reps, impostors = first {} reps",
            protocol.train, protocol.impostor_reps
        ),
        None,
        per_subject,
    ))
}

/// The whole report: the reference detectors (one-class, as in the paper) and `habitus`
/// both with its population prior (two-fold) and without any (one-class).
pub fn run(
    library: &PluginLibrary,
    dataset: &str,
    data: &FixedTextData,
    protocol: Protocol,
    threads: usize,
    progress: &dyn Progress,
) -> Result<EvalReport, EvalError> {
    check_impostor_reps(data, protocol)?;
    let mut results = Vec::new();
    for d in REFERENCE_DETECTORS {
        results.push(run_one_class(
            library, d, data, protocol, threads, progress,
        )?);
    }
    results.push(run_two_fold(
        library, "habitus", data, protocol, threads, progress,
    )?);
    let mut no_population = run_one_class(library, "habitus", data, protocol, threads, progress)?;
    no_population.detector = "habitus (no population)".into();
    no_population.variant = format!("built-in prior only; {}", no_population.variant);
    results.push(no_population);
    Ok(EvalReport {
        dataset: dataset.to_string(),
        protocol: format!(
            "Killourhy & Maxion 2009: {} subjects, train on reps 1-{}, genuine test = the rest, impostors = first {} reps of other subjects; EER by interpolation per subject, mean and sd over subjects",
            data.subjects.len(),
            protocol.train,
            protocol.impostor_reps
        ),
        results,
        notes: vec![
            "every row is rebuilt into KeyDown/KeyUp events and scored by the loaded keystroke plugin over the ABI".into(),
            "habitus: its population prior is learned only from subjects other than the one under test and other than its test impostors (two-fold background split)".into(),
        ],
    })
}

/// Action streams for the continuous evaluation (`habitus` detector): for each subject,
/// the LLR of every held-out genuine repetition (after the first `protocol.train`), in
/// order, and one stream per other subject of the *same* half made of that subject's
/// first `impostor_reps` repetitions. The population prior comes from the other half, so
/// it never contains the subject or its impostors.
pub fn streams(
    library: &PluginLibrary,
    data: &FixedTextData,
    protocol: Protocol,
    threads: usize,
    progress: &dyn Progress,
) -> Result<Vec<super::continuous::UserStreams>, EvalError> {
    check_impostor_reps(data, protocol)?;
    let plugin = library.instantiate("mode = \"fixed\"\ndetector = \"habitus\"\n")?;
    let n = data.subjects.len();
    let halves: Vec<Vec<usize>> = (0..2)
        .map(|h| (0..n).filter(|&i| i % 2 == h).collect())
        .collect();
    let mut populations = Vec::new();
    for h in 0..2 {
        let users: Vec<RVec<RVec<Event>>> = halves[1 - h]
            .iter()
            .map(|&u| data.subjects[u].reps.iter().cloned().collect())
            .collect();
        populations.push(plugin.build_population(&users)?);
    }
    progress.start("CMU streams", n);
    let results = parallel_map(
        n,
        threads,
        |s| -> Result<super::continuous::UserStreams, EvalError> {
            let subject = &data.subjects[s];
            if subject.reps.len() <= protocol.train {
                return Err(EvalError::Protocol(format!(
                    "subject {} has {} repetitions, the protocol trains on {}",
                    subject.name,
                    subject.reps.len(),
                    protocol.train
                )));
            }
            let profile = plugin.enroll(&populations[s % 2], &subject.reps[..protocol.train])?;
            let llrs = |reps: &[RVec<Event>]| -> Result<Vec<f64>, EvalError> {
                Ok(score_all(&plugin, &profile, reps)?
                    .into_iter()
                    .map(|a| -a)
                    .collect())
            };
            let genuine = llrs(&subject.reps[protocol.train..])?;
            let mut impostors = Vec::new();
            for &o in halves[s % 2].iter().filter(|&&o| o != s) {
                let reps = &data.subjects[o].reps;
                impostors.push(llrs(&reps[..protocol.impostor_reps.min(reps.len())])?);
            }
            progress.advance();
            Ok(super::continuous::UserStreams {
                user: subject.name.clone(),
                genuine,
                impostors,
            })
        },
    );
    progress.finish();
    results.into_iter().collect()
}
