//! Mouse dynamics on the Balabit Mouse Dynamics Challenge data (Fülöp et al. 2016).
//!
//! Data: `training_files/userN/session_*` (every session the named user's),
//! `test_files/userN/session_*` (sessions *claimed* to be userN, some by other users) and
//! `public_labels.csv` (`filename,is_illegal` for 816 test sessions). Files may be
//! gzip-compressed (`.gz`). Rows become raw pointer events (client timestamp; `Move` and
//! `Drag` → PointerMove, `Pressed`/`Released` → ButtonDown/Up, scroll `Down`/`Up` →
//! Wheel) and go through the loaded mouse plugin unchanged: sentinel coordinates,
//! duplicate timestamps and clock steps are the plugin's to handle (they are counted
//! here for the report).
//!
//! **Challenge protocol** ([`run`]): for each account, a profile is enrolled on the
//! account's training sessions; every *labelled* test session is scored against its
//! claimed account; the metric is the ROC AUC over all labelled sessions pooled (plus the
//! pooled EER). Scores are also computed on runs of 1, 5, 10 and 20 consecutive actions
//! of each session (non-overlapping; the runs carry their session's label), to show how
//! evidence accumulates. Unlabelled test sessions are never read.
//!
//! Two variants of what the profile's population (the impostor class) may contain, both
//! from **training files only**:
//!
//! * **closed set** — all nine other users' training sessions. Balabit's illegal test
//!   sessions were written by users of the same ten, so the model has seen the
//!   impostor's (other) sessions: an insider threat.
//! * **open set** — a model that never saw the impostor. The true author of an illegal
//!   session is not published, so each account also gets nine profiles, each with one
//!   more user left out of its population. An illegal session is scored by the *most
//!   favourable* of the nine (one of them never saw its author, so the score is never
//!   below the exact open-set score); a legal session is scored by each of the nine.
//!   The AUC is therefore a **lower bound** of the exact open-set AUC. (On the
//!   validation protocol, where authors are known, the bound is within 0.005 of the
//!   exact value.)
//!
//! Every variant is reported twice: as scored, and **others discounted** — each run's
//! LLR lowered by the strongest positive LLR the same run gets from the other accounts'
//! profiles ([`crate::others`], what habitusd does with the other users enrolled on a
//! machine). In the open-set variants those profiles are the ones built without the
//! left-out user, so they never saw them either. Every query is therefore scored by
//! every profile.
//!
//! With `open_set = false` only the closed-set profiles are built (ten instead of a
//! hundred: for quick comparisons).
//!
//! **Validation protocol** ([`run_validation`]), training files only, for tuning: in
//! round r (of `rounds`) each user's r-th last training session (name order) is held out
//! and cut into pseudo-sessions of [`VALIDATION_EVENTS`] events; profiles and populations
//! use the user's other training sessions; each pseudo-session is scored against every
//! account; the scores of all rounds are pooled. Here the author is
//! known, so the exact open-set score is also reported (each impostor pseudo-session
//! scored by the profile whose population left its author out, genuine ones by all
//! nine).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use habitus_plugin::{ErrorKind, Event, EventKind, RVec};
use serde::Serialize;

use super::continuous::UserStreams;
use super::metrics::{det_curve, eer};
use super::report::DetectorResult;
use super::{parallel_map, EvalError, EvalReport, Progress};
use crate::others::discount_for_others;
use crate::{HostError, PluginInstance, PluginLibrary};

/// Runs of consecutive actions scored (`None` = the whole session).
pub const ACTION_COUNTS: [Option<usize>; 5] = [Some(1), Some(5), Some(10), Some(20), None];
/// Events per pseudo-session in the validation protocol: about an average test session
/// (2,356,113 rows / 1,611 sessions, from the data set's README; no label involved).
pub const VALIDATION_EVENTS: usize = 1500;
/// Coordinates beyond this are sentinels (the RDP capture writes 65535 off screen).
const SENTINEL: f64 = 32_767.0;

/// One recorded session: its events, the account it is filed under and, for test
/// sessions, whether it is labelled illegal.
#[derive(Clone, Debug)]
pub struct Session {
    pub name: String,
    pub account: usize,
    pub illegal: Option<bool>,
    pub events: RVec<Event>,
}

/// Oddities in the raw rows (passed on to the plugin, which skips or merges them).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct InputCounts {
    pub rows: usize,
    /// Coordinates beyond ±32767 (65535, 65535 when the pointer leaves the screen).
    pub sentinel_coordinates: usize,
    /// Client timestamps earlier than the previous row's.
    pub backwards_times: usize,
    /// Client timestamps equal to the previous row's.
    pub duplicate_times: usize,
}

impl InputCounts {
    fn add(&mut self, o: &InputCounts) {
        self.rows += o.rows;
        self.sentinel_coordinates += o.sentinel_coordinates;
        self.backwards_times += o.backwards_times;
        self.duplicate_times += o.duplicate_times;
    }
}

#[derive(Clone, Debug)]
pub struct BalabitData {
    /// Account names (`user7`, …) in numeric order.
    pub users: Vec<String>,
    /// Training sessions per account, in file-name order.
    pub training: Vec<Vec<Session>>,
    /// Labelled test sessions.
    pub test: Vec<Session>,
    /// Test sessions without a public label (not read).
    pub unlabelled: usize,
    /// Labels naming no test file.
    pub labels_without_file: usize,
    pub training_input: InputCounts,
    pub test_input: InputCounts,
}

fn data_err(path: &Path, message: impl Into<String>) -> EvalError {
    EvalError::Data {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn open_text(path: &Path) -> Result<Box<dyn BufRead>, EvalError> {
    let file =
        std::fs::File::open(path).map_err(|e| data_err(path, format!("cannot open: {e}")))?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    })
}

/// `session_123` from `session_123` or `session_123.gz`.
fn session_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    name.strip_suffix(".gz").unwrap_or(&name).to_string()
}

/// Reads one session file into events. Errors name the file and line.
pub fn read_session(path: &Path) -> Result<(RVec<Event>, InputCounts), EvalError> {
    let p = path.display().to_string();
    let line_err = |line: usize, message: String| EvalError::Line {
        path: p.clone(),
        line,
        message,
    };
    let mut events = Vec::new();
    let mut counts = InputCounts::default();
    let mut last_t: Option<f64> = None;
    for (i, line) in open_text(path)?.lines().enumerate() {
        let line = line.map_err(|e| line_err(i + 1, format!("cannot read: {e}")))?;
        let line = line.trim_end_matches('\r');
        if i == 0 {
            if !line.starts_with("record timestamp,client timestamp,button,state,x,y") {
                return Err(line_err(
                    1,
                    "not a Balabit session (header must be: record timestamp,client timestamp,button,state,x,y)".into(),
                ));
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 6 {
            return Err(line_err(
                i + 1,
                format!("{} comma-separated fields, expected 6", f.len()),
            ));
        }
        let t: f64 = f[1]
            .trim()
            .parse()
            .ok()
            .filter(|t: &f64| t.is_finite() && *t >= 0.0 && *t < 1e9)
            .ok_or_else(|| {
                line_err(
                    i + 1,
                    format!("client timestamp {:?} is not a time in seconds", f[1]),
                )
            })?;
        let num = |s: &str, what: &str| -> Result<f64, EvalError> {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| line_err(i + 1, format!("{what} {s:?} is not a number")))
        };
        let (x, y) = (num(f[4], "x")?, num(f[5], "y")?);
        counts.rows += 1;
        if x.abs() > SENTINEL || y.abs() > SENTINEL {
            counts.sentinel_coordinates += 1;
        }
        match last_t {
            Some(l) if t < l => counts.backwards_times += 1,
            Some(l) if t == l => counts.duplicate_times += 1,
            _ => {}
        }
        last_t = Some(t);
        let t_us = (t * 1e6).round() as u64;
        let button = |name: &str| match name {
            "Left" => Some(1),
            "Middle" => Some(2),
            "Right" => Some(3),
            "XButton" => Some(4),
            _ => None,
        };
        let event = match (f[2].trim(), f[3].trim()) {
            ("NoButton", "Move") | ("NoButton", "Drag") => {
                Event::at(EventKind::POINTER_MOVE, t_us, x as f32, y as f32)
            }
            (b, state @ ("Pressed" | "Released")) if button(b).is_some() => {
                let kind = if state == "Pressed" {
                    EventKind::BUTTON_DOWN
                } else {
                    EventKind::BUTTON_UP
                };
                Event {
                    pointer: button(b).unwrap_or(0),
                    ..Event::at(kind, t_us, x as f32, y as f32)
                }
            }
            // Wheel events carry deltas, not positions: one notch down or up.
            ("Scroll", "Down") => Event::at(EventKind::WHEEL, t_us, 0.0, -1.0),
            ("Scroll", "Up") => Event::at(EventKind::WHEEL, t_us, 0.0, 1.0),
            (b, s) => return Err(line_err(i + 1, format!("unknown button/state {b:?}/{s:?}"))),
        };
        events.push(event);
    }
    Ok((events.into(), counts))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| data_err(dir, format!("cannot read directory: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

fn user_number(name: &str) -> u64 {
    name.trim_start_matches("user").parse().unwrap_or(u64::MAX)
}

/// Reads `public_labels.csv`: session name → illegal.
fn read_labels(path: &Path) -> Result<HashMap<String, bool>, EvalError> {
    let mut labels = HashMap::new();
    for (i, line) in open_text(path)?.lines().enumerate() {
        let line = line.map_err(|e| data_err(path, format!("cannot read: {e}")))?;
        let line = line.trim();
        if i == 0 {
            if line != "filename,is_illegal" {
                return Err(EvalError::Line {
                    path: path.display().to_string(),
                    line: 1,
                    message: "header must be filename,is_illegal".into(),
                });
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let (name, label) = line.split_once(',').unwrap_or((line, ""));
        let illegal = match label.trim() {
            "0" => false,
            "1" => true,
            other => {
                return Err(EvalError::Line {
                    path: path.display().to_string(),
                    line: i + 1,
                    message: format!("is_illegal {other:?} is not 0 or 1"),
                })
            }
        };
        labels.insert(name.trim().to_string(), illegal);
    }
    Ok(labels)
}

/// Loads the training sessions and the labelled test sessions under `dir`.
pub fn load(dir: &Path, threads: usize, progress: &dyn Progress) -> Result<BalabitData, EvalError> {
    let labels = read_labels(&dir.join("public_labels.csv"))?;
    let train_dir = dir.join("training_files");
    let mut users: Vec<String> = sorted_entries(&train_dir)?
        .iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
        .collect();
    users.sort_by_key(|u| (user_number(u), u.clone()));
    if users.len() < 3 {
        return Err(data_err(
            &train_dir,
            format!(
                "{} user folders; the protocol needs at least 3",
                users.len()
            ),
        ));
    }
    // (path, account, label, training?)
    let mut files: Vec<(PathBuf, usize, Option<bool>, bool)> = Vec::new();
    let mut unlabelled = 0;
    let mut labelled_found = 0;
    for (u, user) in users.iter().enumerate() {
        for p in sorted_entries(&train_dir.join(user))? {
            files.push((p, u, None, true));
        }
        let test_dir = dir.join("test_files").join(user);
        if !test_dir.is_dir() {
            continue;
        }
        for p in sorted_entries(&test_dir)? {
            match labels.get(&session_name(&p)) {
                Some(&illegal) => {
                    labelled_found += 1;
                    files.push((p, u, Some(illegal), false));
                }
                None => unlabelled += 1,
            }
        }
    }
    progress.start("reading sessions", files.len());
    let read = parallel_map(files.len(), threads, |i| {
        let r = read_session(&files[i].0);
        progress.advance();
        r
    });
    progress.finish();
    let mut data = BalabitData {
        training: vec![Vec::new(); users.len()],
        users,
        test: Vec::new(),
        unlabelled,
        labels_without_file: labels.len().saturating_sub(labelled_found),
        training_input: InputCounts::default(),
        test_input: InputCounts::default(),
    };
    for ((path, account, illegal, training), r) in files.into_iter().zip(read) {
        let (events, counts) = r?;
        let session = Session {
            name: session_name(&path),
            account,
            illegal,
            events,
        };
        if training {
            data.training_input.add(&counts);
            data.training[account].push(session);
        } else {
            data.test_input.add(&counts);
            data.test.push(session);
        }
    }
    if let Some(u) = data.training.iter().position(|t| t.is_empty()) {
        return Err(data_err(
            &train_dir.join(&data.users[u]),
            "no training sessions",
        ));
    }
    if !data.test.iter().any(|s| s.illegal == Some(true))
        || !data.test.iter().any(|s| s.illegal == Some(false))
    {
        return Err(data_err(
            dir,
            "the labelled test sessions need both legal and illegal ones",
        ));
    }
    Ok(data)
}

/// One row of the result table.
#[derive(Clone, Debug, Serialize)]
pub struct BalabitRow {
    /// [`CLOSED_SET`], [`OPEN_SET`] or [`EXACT_OPEN_SET`].
    pub variant: String,
    /// Consecutive actions per scored run: `1`, `5`, `10`, `20` or `all`.
    pub actions: String,
    /// Scored runs (sessions for `all`).
    pub genuine: usize,
    pub impostor: usize,
    /// ROC AUC, illegal (impostor) vs legal, all runs pooled.
    pub auc: f64,
    /// Pooled equal error rate.
    pub eer: f64,
    /// The mean over accounts of each account's own AUC (its legal against its illegal
    /// runs; accounts lacking either are left out). Beside the pooled AUC it shows how
    /// much is lost because different accounts' scores are not on one scale.
    pub auc_per_account: f64,
    /// Log-likelihood-ratio cost of the scores as LLRs (bits; 0 perfect, 1 = no
    /// information, above 1 = miscalibrated): how far the plugin's LLRs can be taken at
    /// face value.
    pub cllr: f64,
    /// Pooled DET points `(false alarm, miss)` for plotting (not in JSON).
    #[serde(skip)]
    pub det: Vec<(f64, f64)>,
}

/// Everything `habitus eval balabit` measured.
#[derive(Clone, Debug, Serialize)]
pub struct BalabitReport {
    pub dataset: String,
    pub protocol: String,
    pub rows: Vec<BalabitRow>,
    /// Scored sessions without any usable action (scored LLR 0: no opinion).
    pub sessions_without_actions: usize,
    pub actions_per_session_median: f64,
    pub notes: Vec<String>,
}

impl BalabitReport {
    /// The whole-session rows as DET curves (for `--plot`).
    pub fn det_report(&self) -> EvalReport {
        let results = self
            .rows
            .iter()
            .filter(|r| r.actions == "all" || r.actions == "10")
            .map(|r| DetectorResult {
                detector: format!("{}, {} actions", r.variant, r.actions),
                variant: format!("AUC {:.4}", r.auc),
                eer_mean: r.eer,
                eer_sd: 0.0,
                zero_miss_far_mean: f64::NAN,
                zero_miss_far_sd: 0.0,
                subjects: 0,
                gallery: None,
                per_subject_eer: Vec::new(),
                det: r.det.clone(),
            })
            .collect();
        EvalReport {
            dataset: self.dataset.clone(),
            protocol: self.protocol.clone(),
            results,
            notes: self.notes.clone(),
        }
    }
}

/// ROC AUC: the probability that an impostor's anomaly score is above a genuine one's
/// (ties count half). Inputs are anomaly scores (higher = more impostor-like).
pub fn auc(genuine: &[f64], impostor: &[f64]) -> f64 {
    if genuine.is_empty() || impostor.is_empty() {
        return f64::NAN;
    }
    let mut all: Vec<(f64, bool)> = genuine
        .iter()
        .map(|&x| (x, false))
        .chain(impostor.iter().map(|&x| (x, true)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Mann-Whitney U from mid-ranks.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let mid = (i + j + 1) as f64 / 2.0; // ranks i+1 ..= j
        rank_sum += mid * all[i..j].iter().filter(|e| e.1).count() as f64;
        i = j;
    }
    let (ni, ng) = (impostor.len() as f64, genuine.len() as f64);
    (rank_sum - ni * (ni + 1.0) / 2.0) / (ni * ng)
}

/// Log-likelihood-ratio cost (Brümmer): mean of `log2(1 + e^-llr)` over genuine scores
/// and of `log2(1 + e^llr)` over impostor scores, averaged over the two classes.
pub fn cllr(genuine_llr: &[f64], impostor_llr: &[f64]) -> f64 {
    let cost = |z: f64| {
        // log2(1 + e^-z), stable for large |z|
        (if z > 0.0 {
            (-z).exp().ln_1p()
        } else {
            -z + z.exp().ln_1p()
        }) / std::f64::consts::LN_2
    };
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    0.5 * (mean(genuine_llr.iter().map(|&l| cost(l)).collect())
        + mean(impostor_llr.iter().map(|&l| cost(-l)).collect()))
}

/// A scored item: the account it is claimed for, its true class, its feature vector
/// (action vectors concatenated; empty = no actions) and, when known, its author.
struct Query<'a> {
    account: usize,
    illegal: bool,
    author: Option<usize>,
    features: &'a [f64],
}

/// A profile to build: the account and the population users left out besides it.
#[derive(Clone, Copy)]
struct Job {
    account: usize,
    left_out: Option<usize>,
}

/// The plugin's feature vectors of each session (empty when it has no actions).
fn extract_all(
    plugin: &PluginInstance,
    sessions: &[&[Event]],
    threads: usize,
    progress: &dyn Progress,
) -> Result<Vec<Vec<f64>>, EvalError> {
    progress.start("segmenting", sessions.len());
    let out = parallel_map(sessions.len(), threads, |i| {
        let r = match plugin.extract(sessions[i]) {
            Ok(f) => Ok(f),
            Err(HostError::Plugin { error, .. }) if error.kind == ErrorKind::NOT_ENOUGH_DATA => {
                Ok(Vec::new())
            }
            Err(e) => Err(EvalError::from(e)),
        };
        progress.advance();
        r
    });
    progress.finish();
    out.into_iter().collect()
}

/// The plugin's feature vectors of every session: training sessions (account by account,
/// in `data.training` order) and labelled test sessions (in `data.test` order).
struct SessionFeatures {
    train: Vec<Vec<f64>>,
    test: Vec<Vec<f64>>,
}

impl SessionFeatures {
    fn extract(
        plugin: &PluginInstance,
        data: &BalabitData,
        threads: usize,
        progress: &dyn Progress,
    ) -> Result<SessionFeatures, EvalError> {
        let train_events: Vec<&[Event]> = data
            .training
            .iter()
            .flatten()
            .map(|s| &s.events[..])
            .collect();
        let test_events: Vec<&[Event]> = data.test.iter().map(|s| &s.events[..]).collect();
        Ok(SessionFeatures {
            train: extract_all(plugin, &train_events, threads, progress)?,
            test: extract_all(plugin, &test_events, threads, progress)?,
        })
    }

    /// Training feature vectors grouped by account.
    fn train_by_account(&self, data: &BalabitData) -> Vec<Vec<&[f64]>> {
        let mut out: Vec<Vec<&[f64]>> = vec![Vec::new(); data.users.len()];
        for (s, f) in data.training.iter().flatten().zip(&self.train) {
            out[s.account].push(f);
        }
        out
    }
}

/// Per job: the enrolled profile.
fn build_profiles(
    plugin: &PluginInstance,
    train: &[Vec<&[f64]>],
    jobs: &[Job],
    threads: usize,
    progress: &dyn Progress,
) -> Result<Vec<Vec<u8>>, EvalError> {
    progress.start("enrolling", jobs.len());
    let out = parallel_map(jobs.len(), threads, |j| -> Result<Vec<u8>, EvalError> {
        let job = jobs[j];
        let users: Vec<RVec<RVec<f64>>> = (0..train.len())
            .filter(|&u| u != job.account && Some(u) != job.left_out)
            .map(|u| {
                train[u]
                    .iter()
                    .filter(|f| !f.is_empty())
                    .map(|f| RVec::from(f.to_vec()))
                    .collect()
            })
            .collect();
        let population = plugin.build_population_features(&users)?;
        let own: Vec<RVec<f64>> = train[job.account]
            .iter()
            .filter(|f| !f.is_empty())
            .map(|f| RVec::from(f.to_vec()))
            .collect();
        let profile = plugin.enroll_features(&population, &own)?;
        progress.advance();
        Ok(profile)
    });
    progress.finish();
    out.into_iter().collect()
}

/// Scores of one query against one profile: per entry of [`ACTION_COUNTS`], the LLR of
/// each run of consecutive actions.
fn score_runs(
    plugin: &PluginInstance,
    profile: &[u8],
    features: &[f64],
    per_action: usize,
) -> Result<Vec<Vec<f64>>, EvalError> {
    let n = features.len() / per_action;
    let mut out = Vec::with_capacity(ACTION_COUNTS.len());
    for k in ACTION_COUNTS {
        let mut runs = Vec::new();
        match k {
            None => runs.push(plugin.score_features(profile, features)?.llr),
            Some(k) => {
                for r in 0..n / k {
                    let run = &features[r * k * per_action..(r + 1) * k * per_action];
                    runs.push(plugin.score_features(profile, run)?.llr);
                }
            }
        }
        out.push(runs);
    }
    Ok(out)
}

fn row(p: &Pooled) -> BalabitRow {
    let (variant, k, genuine_llr, impostor_llr) = (p.variant, p.actions, &p.genuine, &p.impostor);
    let anomaly = |llr: &[f64]| -> Vec<f64> { llr.iter().map(|x| -x).collect() };
    let g = anomaly(genuine_llr);
    let i = anomaly(impostor_llr);
    let account_aucs: Vec<f64> = p
        .per_account
        .iter()
        .filter(|(g, i)| !g.is_empty() && !i.is_empty())
        .map(|(g, i)| auc(&anomaly(g), &anomaly(i)))
        .collect();
    let (e, det) = if g.is_empty() || i.is_empty() {
        (f64::NAN, Vec::new())
    } else {
        (eer(&g, &i), det_curve(&g, &i))
    };
    BalabitRow {
        variant: variant.to_string(),
        actions: k.map_or("all".to_string(), |k| k.to_string()),
        genuine: g.len(),
        impostor: i.len(),
        auc: auc(&g, &i),
        eer: e,
        auc_per_account: account_aucs.iter().sum::<f64>() / account_aucs.len() as f64,
        cllr: cllr(genuine_llr, impostor_llr),
        det,
    }
}

pub const CLOSED_SET: &str = "closed set";
pub const OPEN_SET: &str = "open set, lower bound (author unknown)";
pub const EXACT_OPEN_SET: &str = "open set, exact (author known)";
/// The same three variants with every score discounted by the other accounts' profiles
/// ([`crate::others`]): what habitusd does on a machine where those users are enrolled.
pub const CLOSED_SET_OTHERS: &str = "closed set, others discounted";
pub const OPEN_SET_OTHERS: &str = "open set, lower bound, others discounted";
pub const EXACT_OPEN_SET_OTHERS: &str = "open set, exact, others discounted";

/// Builds every profile, scores every query, and summarises per variant and run length.
fn evaluate(
    plugin: &PluginInstance,
    train: &[Vec<&[f64]>],
    queries: &[Query],
    open_set: bool,
    threads: usize,
    progress: &dyn Progress,
) -> Result<Vec<Pooled>, EvalError> {
    let per_action = plugin.descriptor().feature_names.len().max(1);
    let users = train.len();
    let mut jobs = Vec::new();
    for account in 0..users {
        jobs.push(Job {
            account,
            left_out: None,
        });
        for v in (0..users).filter(|&v| open_set && v != account) {
            jobs.push(Job {
                account,
                left_out: Some(v),
            });
        }
    }
    let profiles = build_profiles(plugin, train, &jobs, threads, progress)?;
    // The distinct feature vectors among the queries (validation scores each
    // pseudo-session against every account) ...
    let mut distinct: Vec<&[f64]> = Vec::new();
    let mut index: HashMap<(usize, usize), usize> = HashMap::new();
    let vector_of: Vec<usize> = queries
        .iter()
        .map(|q| {
            *index
                .entry((q.features.as_ptr() as usize, q.features.len()))
                .or_insert_with(|| {
                    distinct.push(q.features);
                    distinct.len() - 1
                })
        })
        .collect();
    // ... each scored by every profile, so that a query's score can be set beside the
    // other accounts' scores of the same runs. One job's profile at a time: the
    // plugin's decoded-profile cache then serves every vector.
    progress.start("scoring", jobs.len());
    let table = parallel_map(
        jobs.len(),
        threads,
        |j| -> Result<Vec<Vec<Vec<f64>>>, EvalError> {
            let r = distinct
                .iter()
                .map(|f| score_runs(plugin, &profiles[j], f, per_action))
                .collect();
            progress.advance();
            r
        },
    );
    progress.finish();
    let table = table.into_iter().collect::<Result<Vec<_>, _>>()?;
    let job_index: HashMap<(usize, Option<usize>), usize> = jobs
        .iter()
        .enumerate()
        .map(|(j, job)| ((job.account, job.left_out), j))
        .collect();
    // The runs of query `q` (run length `c`) scored by `account`'s profile whose
    // population left `left_out` out; with `others`, discounted by the other accounts'
    // profiles built the same way (never the left-out user's: it stays unknown).
    let runs = |q: usize, account: usize, left_out: Option<usize>, c: usize, others: bool| {
        let own = &table[job_index[&(account, left_out)]][vector_of[q]][c];
        if !others {
            return own.clone();
        }
        let cohort: Vec<&Vec<f64>> = (0..users)
            .filter(|&v| v != account && Some(v) != left_out)
            .map(|v| &table[job_index[&(v, left_out)]][vector_of[q]][c])
            .collect();
        own.iter()
            .enumerate()
            .map(|(r, &llr)| discount_for_others(llr, cohort.iter().map(|o| o[r])))
            .collect::<Vec<f64>>()
    };
    let exact = queries.iter().all(|q| q.author.is_some());
    let mut variants: Vec<(&'static str, bool)> = vec![(CLOSED_SET, false)];
    if open_set {
        variants.push((OPEN_SET, false));
        if exact {
            variants.push((EXACT_OPEN_SET, false));
        }
    }
    variants.push((CLOSED_SET_OTHERS, true));
    if open_set {
        variants.push((OPEN_SET_OTHERS, true));
        if exact {
            variants.push((EXACT_OPEN_SET_OTHERS, true));
        }
    }
    let mut pooled = Vec::new();
    for (variant, others) in variants {
        let closed_variant = variant == CLOSED_SET || variant == CLOSED_SET_OTHERS;
        let exact_variant = variant == EXACT_OPEN_SET || variant == EXACT_OPEN_SET_OTHERS;
        for (c, &k) in ACTION_COUNTS.iter().enumerate() {
            let (mut gen, mut imp) = (Vec::new(), Vec::new());
            let mut per_account = Vec::new();
            for account in 0..users {
                let (gen_before, imp_before) = (gen.len(), imp.len());
                let others_of: Vec<usize> = (0..users).filter(|&v| v != account).collect();
                for (qi, q) in queries.iter().enumerate() {
                    if q.account != account {
                        continue;
                    }
                    let target = if q.illegal { &mut imp } else { &mut gen };
                    match (closed_variant, exact_variant, q.illegal, q.author) {
                        (true, _, _, _) => target.extend(runs(qi, account, None, c, others)),
                        // The author is known: the profile that never saw them.
                        (_, true, true, Some(a)) => {
                            target.extend(runs(qi, account, Some(a), c, others))
                        }
                        // Unknown author: the most favourable of the nine profiles, one
                        // of which never saw them, so never below the exact score.
                        (_, _, true, _) => {
                            let each: Vec<Vec<f64>> = others_of
                                .iter()
                                .map(|&v| runs(qi, account, Some(v), c, others))
                                .collect();
                            let n = each.first().map_or(0, Vec::len);
                            target.extend((0..n).map(|r| {
                                each.iter().map(|e| e[r]).fold(f64::NEG_INFINITY, f64::max)
                            }));
                        }
                        // A legal session is scored by each of the nine profiles.
                        (_, _, false, _) => {
                            for &v in &others_of {
                                target.extend(runs(qi, account, Some(v), c, others));
                            }
                        }
                    }
                }
                per_account.push((gen[gen_before..].to_vec(), imp[imp_before..].to_vec()));
            }
            pooled.push(Pooled {
                variant,
                actions: k,
                genuine: gen,
                impostor: imp,
                per_account,
            });
        }
    }
    Ok(pooled)
}

/// The LLRs of one variant and run length, legal (`genuine`) and illegal sessions pooled.
struct Pooled {
    variant: &'static str,
    actions: Option<usize>,
    genuine: Vec<f64>,
    impostor: Vec<f64>,
    /// The same runs by claimed account: `(legal, illegal)`.
    per_account: Vec<(Vec<f64>, Vec<f64>)>,
}

fn rows_of(pooled: &[Pooled]) -> Vec<BalabitRow> {
    pooled.iter().map(row).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The challenge protocol on the labelled test sessions (see the module docs).
pub fn run(
    library: &PluginLibrary,
    data: &BalabitData,
    config: &str,
    open_set: bool,
    threads: usize,
    progress: &dyn Progress,
) -> Result<BalabitReport, EvalError> {
    let plugin = library.instantiate(config)?;
    let per_action = plugin.descriptor().feature_names.len().max(1);
    let features = SessionFeatures::extract(&plugin, data, threads, progress)?;
    let (train_features, test_features) = (&features.train, &features.test);
    let train = features.train_by_account(data);
    let queries: Vec<Query> = data
        .test
        .iter()
        .zip(test_features)
        .map(|(s, f)| Query {
            account: s.account,
            illegal: s.illegal == Some(true),
            author: None,
            features: f,
        })
        .collect();
    let without = test_features.iter().filter(|f| f.is_empty()).count();
    let train_without = train_features.iter().filter(|f| f.is_empty()).count();
    let actions_median = median(
        test_features
            .iter()
            .map(|f| (f.len() / per_action) as f64)
            .collect(),
    );
    let train_actions: usize = train_features.iter().map(|f| f.len() / per_action).sum();
    let rows = rows_of(&evaluate(
        &plugin, &train, &queries, open_set, threads, progress,
    )?);
    let (legal, illegal) = (
        data.test
            .iter()
            .filter(|s| s.illegal == Some(false))
            .count(),
        data.test.iter().filter(|s| s.illegal == Some(true)).count(),
    );
    Ok(BalabitReport {
        dataset: "Balabit Mouse Dynamics Challenge (public labels)".into(),
        protocol: format!(
            "per account: profile enrolled on its training sessions, population = other users' training sessions (closed set: all others; open set lower bound: one profile per further user left out, an illegal session scored by the most favourable of them, a legal one by each); {} labelled test sessions ({legal} legal, {illegal} illegal) scored against their claimed account; AUC and EER pooled over all sessions, and over runs of 1/5/10/20 consecutive actions",
            data.test.len()
        ),
        rows,
        sessions_without_actions: without,
        actions_per_session_median: actions_median,
        notes: vec![
            format!(
                "{} training sessions ({train_actions} actions, {train_without} without actions) for {} accounts; test sessions never used for training, calibration or tuning; {} unlabelled test sessions not read; {} labels without a file",
                train_features.len(),
                data.users.len(),
                data.unlabelled,
                data.labels_without_file
            ),
            format!(
                "{without} labelled test sessions have no usable action: scored LLR 0 (no opinion), kept in the pooled AUC/EER"
            ),
            format!(
                "raw rows, training / test: {} / {}; sentinel coordinates {} / {}, duplicate timestamps {} / {}, clock going backwards {} / {} (the plugin skips, merges or restarts at them)",
                data.training_input.rows,
                data.test_input.rows,
                data.training_input.sentinel_coordinates,
                data.test_input.sentinel_coordinates,
                data.training_input.duplicate_times,
                data.test_input.duplicate_times,
                data.training_input.backwards_times,
                data.test_input.backwards_times
            ),
            "runs of k actions: non-overlapping consecutive actions of a session, each scored on its own and carrying the session's label; sessions shorter than k contribute no run".into(),
            "features exclude absolute coordinates and screen extent (environment, not behaviour)".into(),
            config_note(config),
        ],
    })
}

/// Which plugin settings the figures are for (a variant must be named beside its
/// numbers).
fn config_note(config: &str) -> String {
    let settings: Vec<&str> = config
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if settings.is_empty() {
        "mouse plugin configuration: its defaults".into()
    } else {
        format!("mouse plugin configuration: {}", settings.join("; "))
    }
}

/// The training-only validation protocol (see the module docs): used to choose the
/// plugin's hyper-parameters without touching a test session.
pub fn run_validation(
    library: &PluginLibrary,
    data: &BalabitData,
    config: &str,
    open_set: bool,
    rounds: usize,
    threads: usize,
    progress: &dyn Progress,
) -> Result<BalabitReport, EvalError> {
    let plugin = library.instantiate(config)?;
    let per_action = plugin.descriptor().feature_names.len().max(1);
    let users = data.users.len();
    if let Some(u) = data.training.iter().position(|t| t.len() <= rounds) {
        return Err(EvalError::Protocol(format!(
            "{} has {} training session(s); {rounds} validation round(s) hold out one each and leave at least one",
            data.users[u],
            data.training[u].len()
        )));
    }
    let sessions: Vec<&[Event]> = data
        .training
        .iter()
        .flatten()
        .map(|s| &s.events[..])
        .collect();
    let features = extract_all(&plugin, &sessions, threads, progress)?;
    // features of user u's session i
    let mut index = Vec::new();
    let mut at = 0;
    for t in &data.training {
        index.push((at..at + t.len()).collect::<Vec<usize>>());
        at += t.len();
    }
    let mut pooled: Vec<Pooled> = Vec::new();
    let (mut held_total, mut without, mut actions) = (0, 0, Vec::new());
    for round in 0..rounds {
        let mut train: Vec<Vec<&[f64]>> = vec![Vec::new(); users];
        let mut held: Vec<&[Event]> = Vec::new();
        let mut held_owner = Vec::new();
        for (u, sessions) in data.training.iter().enumerate() {
            let out = sessions.len() - 1 - round;
            for (i, &f) in index[u].iter().enumerate() {
                if i != out {
                    train[u].push(&features[f]);
                }
            }
            for chunk in sessions[out].events.chunks_exact(VALIDATION_EVENTS) {
                held.push(chunk);
                held_owner.push(u);
            }
        }
        let held_features = extract_all(&plugin, &held, threads, progress)?;
        held_total += held.len();
        without += held_features.iter().filter(|f| f.is_empty()).count();
        actions.extend(held_features.iter().map(|f| (f.len() / per_action) as f64));
        let mut queries = Vec::new();
        for account in 0..users {
            for (&author, f) in held_owner.iter().zip(&held_features) {
                queries.push(Query {
                    account,
                    illegal: author != account,
                    author: Some(author),
                    features: f,
                });
            }
        }
        let this = evaluate(&plugin, &train, &queries, open_set, threads, progress)?;
        if pooled.is_empty() {
            pooled = this;
        } else {
            for (p, t) in pooled.iter_mut().zip(this) {
                p.genuine.extend(t.genuine);
                p.impostor.extend(t.impostor);
                for (pa, ta) in p.per_account.iter_mut().zip(t.per_account) {
                    pa.0.extend(ta.0);
                    pa.1.extend(ta.1);
                }
            }
        }
    }
    Ok(BalabitReport {
        dataset: "Balabit Mouse Dynamics Challenge (validation on training files)".into(),
        protocol: format!(
            "training files only, {rounds} round(s): in round r each user's r-th last training session is held out and cut into pseudo-sessions of {VALIDATION_EVENTS} events ({held_total} in all), each scored against every account; profiles and populations from the user's other training sessions; scores of all rounds pooled"
        ),
        rows: rows_of(&pooled),
        sessions_without_actions: without,
        actions_per_session_median: median(actions),
        notes: vec![
            "for choosing hyper-parameters: no test session is read".into(),
            config_note(config),
        ],
    })
}

/// Continuous-authentication streams (see [`super::continuous`]), closed set: per
/// account, the profile enrolled on its training sessions (population: the other
/// accounts' training sessions) scores every action of the account's labelled test
/// sessions, one action at a time, in order. The genuine stream is the legal sessions'
/// actions one session after the other (file-name order); every illegal session is one
/// impostor stream. Sessions without actions add nothing.
pub fn streams(
    library: &PluginLibrary,
    data: &BalabitData,
    config: &str,
    threads: usize,
    progress: &dyn Progress,
) -> Result<Vec<UserStreams>, EvalError> {
    let plugin = library.instantiate(config)?;
    let per_action = plugin.descriptor().feature_names.len().max(1);
    let features = SessionFeatures::extract(&plugin, data, threads, progress)?;
    let train = features.train_by_account(data);
    let jobs: Vec<Job> = (0..data.users.len())
        .map(|account| Job {
            account,
            left_out: None,
        })
        .collect();
    let profiles = build_profiles(&plugin, &train, &jobs, threads, progress)?;
    progress.start("scoring actions", jobs.len());
    let out = parallel_map(jobs.len(), threads, |a| -> Result<UserStreams, EvalError> {
        let mut user = UserStreams {
            user: data.users[a].clone(),
            ..UserStreams::default()
        };
        for (s, f) in data.test.iter().zip(&features.test) {
            if s.account != a || f.is_empty() {
                continue;
            }
            let llrs = f
                .chunks_exact(per_action)
                .map(|action| Ok(plugin.score_features(&profiles[a], action)?.llr))
                .collect::<Result<Vec<f64>, EvalError>>()?;
            if s.illegal == Some(true) {
                user.impostors.push(llrs);
            } else {
                user.genuine.extend(llrs);
            }
        }
        progress.advance();
        Ok(user)
    });
    progress.finish();
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_half() {
        assert_eq!(auc(&[0.0, 1.0], &[2.0, 3.0]), 1.0);
        assert_eq!(auc(&[2.0, 3.0], &[0.0, 1.0]), 0.0);
        assert_eq!(auc(&[1.0], &[1.0]), 0.5);
        // genuine 1,2,3; impostor 2,4: pairs won 1(vs1)+1(vs2)... = (1 + 0.5 + 0) + 3 = 4.5 of 6
        assert!((auc(&[1.0, 2.0, 3.0], &[2.0, 4.0]) - 4.5 / 6.0).abs() < 1e-12);
        assert!(auc(&[], &[1.0]).is_nan());
    }

    #[test]
    fn per_account_auc_ignores_scales_between_accounts() {
        // Each account separates its own sessions perfectly, but account 1's scores sit
        // lower: pooled, some of its legal runs fall below account 0's illegal ones.
        let p = Pooled {
            variant: CLOSED_SET,
            actions: None,
            genuine: vec![5.0, 6.0, 1.0, 2.0],
            impostor: vec![3.0, 4.0, -1.0, 0.0],
            per_account: vec![
                (vec![5.0, 6.0], vec![3.0, 4.0]),
                (vec![1.0, 2.0], vec![-1.0, 0.0]),
                // No illegal session: left out of the mean.
                (vec![9.0], vec![]),
            ],
        };
        let r = row(&p);
        assert_eq!(r.auc_per_account, 1.0);
        assert!((r.auc - 12.0 / 16.0).abs() < 1e-12, "{}", r.auc);
    }

    #[test]
    fn cllr_is_one_bit_for_no_information() {
        assert!((cllr(&[0.0], &[0.0]) - 1.0).abs() < 1e-12);
        assert!(cllr(&[20.0], &[-20.0]) < 1e-8);
        assert!(cllr(&[-5.0], &[5.0]) > 5.0);
    }
}
