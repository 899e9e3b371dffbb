//! Free-text keystroke benchmark on the Aalto "136M Keystrokes" files (Dhakal et al.
//! 2018), with the TypeNet-style protocol: per participant, enrol on the first `G`
//! sentences, genuine queries = sentences 11-15, impostor queries = sentence 11 of every
//! other test participant; the first 50 keystrokes of each sentence; EER per participant,
//! averaged.
//!
//! Only participant id, section id, press/release times and the key code are read; the
//! text columns are skipped and never stored. Key codes become keyed-hash key ids.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use habitus_plugin::{Event, EventKind, RVec};

use super::report::{summarise, SubjectScores};
use super::{parallel_map, EvalError, EvalReport, Progress};
use crate::{KeyHasher, PluginLibrary};

/// Keystrokes per sentence kept (TypeNet's M).
pub const KEYS_PER_SENTENCE: usize = 50;
/// Sentences per participant in the data set.
pub const SENTENCES: usize = 15;
const GENUINE_FIRST: usize = 10; // sentences 11..15, 0-based 10..15
const IMPOSTOR_SENTENCE: usize = 10; // sentence 11

const EVAL_SECRET: [u8; 16] = *b"habitus-aalto-ky";

#[derive(Clone, Debug)]
pub struct Participant {
    pub id: u64,
    /// `SENTENCES` windows, in test-section order.
    pub sentences: Vec<RVec<Event>>,
}

#[derive(Clone, Debug, Default)]
pub struct AaltoData {
    pub participants: Vec<Participant>,
    /// Participants skipped because they do not have 15 sentences.
    pub skipped_participants: usize,
    /// Keystrokes dropped (release before press, or a time printed without millisecond precision).
    pub dropped_keystrokes: usize,
}

/// Reads one participant file (`<ID>_keystrokes.txt[.gz]`): the first
/// [`KEYS_PER_SENTENCE`] keystrokes of each of the first [`SENTENCES`] test sections, each
/// sentence's times starting at 0. `key_id` turns a key code into the event's key identity
/// (the evaluation uses a keyed hash; replay-file conversion keeps the code, which habitusd
/// hashes on receipt). Returns `None` for a participant with fewer than 15 sentences, and
/// the number of keystrokes dropped.
pub fn read_participant(
    path: &Path,
    key_id: &(dyn Fn(u32) -> u32 + Sync),
) -> Result<(Option<Participant>, usize), EvalError> {
    let p = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| EvalError::Data {
        path: p.clone(),
        message: format!("cannot open: {e}"),
    })?;
    let reader: Box<dyn BufRead> = if p.ends_with(".gz") {
        Box::new(BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let line_err = |line: usize, message: String| EvalError::Line {
        path: p.clone(),
        line,
        message,
    };
    let mut sections: BTreeMap<u64, Vec<(i64, i64, u32)>> = BTreeMap::new();
    let mut participant = None;
    let mut dropped = 0;
    for (i, line) in reader.split(b'\n').enumerate() {
        let raw = line.map_err(|e| line_err(i + 1, format!("cannot read: {e}")))?;
        // Bytes, not str: the text columns may hold anything; we never look at them.
        let raw = raw.strip_suffix(b"\r").unwrap_or(&raw);
        if i == 0 {
            if !raw.starts_with(b"PARTICIPANT_ID\tTEST_SECTION_ID") {
                return Err(line_err(1, "not an Aalto keystrokes file (header must start with PARTICIPANT_ID, TEST_SECTION_ID)".into()));
            }
            continue;
        }
        if raw.is_empty() {
            continue;
        }
        let fields: Vec<&[u8]> = raw.split(|&b| b == b'\t').collect();
        if fields.len() < 9 {
            return Err(line_err(
                i + 1,
                format!("{} tab-separated fields, expected 9", fields.len()),
            ));
        }
        let num = |f: &[u8], what: &str| -> Result<i64, EvalError> {
            std::str::from_utf8(f)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| line_err(i + 1, format!("{what} is not an integer")))
        };
        // The sentence columns could contain tabs: read the fixed columns from both ends.
        let n = fields.len();
        let pid = num(fields[0], "PARTICIPANT_ID")? as u64;
        let section = num(fields[1], "TEST_SECTION_ID")? as u64;
        // A few rows of the original archive hold times printed in floating point
        // ("1.471968e+12"): milliseconds are lost, so the keystroke is dropped and counted.
        let time = |f: &[u8], what: &str| -> Result<Option<i64>, EvalError> {
            match num(f, what) {
                Ok(v) => Ok(Some(v)),
                Err(e) => match std::str::from_utf8(f)
                    .ok()
                    .and_then(|s| s.trim().parse::<f64>().ok())
                {
                    Some(v) if v.is_finite() => Ok(None),
                    _ => Err(e),
                },
            }
        };
        let (Some(press), Some(release)) = (
            time(fields[n - 4], "PRESS_TIME")?,
            time(fields[n - 3], "RELEASE_TIME")?,
        ) else {
            dropped += 1;
            continue;
        };
        let code = num(fields[n - 1], "KEYCODE")?;
        match participant {
            None => participant = Some(pid),
            Some(q) if q != pid => {
                return Err(line_err(
                    i + 1,
                    format!("participant {pid} in the file of participant {q}"),
                ))
            }
            _ => {}
        }
        if release < press {
            dropped += 1;
            continue;
        }
        sections
            .entry(section)
            .or_default()
            .push((press, release, code as u32));
    }
    let Some(id) = participant else {
        return Ok((None, dropped));
    };
    if sections.len() < SENTENCES {
        return Ok((None, dropped));
    }
    let sentences = sections
        .into_values()
        .take(SENTENCES)
        .map(|mut ks| {
            ks.sort_by_key(|&(press, release, _)| (press, release));
            ks.truncate(KEYS_PER_SENTENCE);
            let t0 = ks.first().map(|k| k.0).unwrap_or(0);
            let mut events = Vec::with_capacity(2 * ks.len());
            for (press, release, code) in ks {
                let key = key_id(code);
                events.push(Event::key(
                    EventKind::KEY_DOWN,
                    ((press - t0) * 1000) as u64,
                    key,
                ));
                events.push(Event::key(
                    EventKind::KEY_UP,
                    ((release - t0) * 1000) as u64,
                    key,
                ));
            }
            events.sort_by_key(|e| (e.t_us, e.kind != EventKind::KEY_UP));
            RVec::from(events)
        })
        .collect();
    Ok((Some(Participant { id, sentences }), dropped))
}

/// Loads every `*_keystrokes.txt[.gz]` under `dir` (or `dir/keystrokes`).
pub fn load(dir: &Path, threads: usize, progress: &dyn Progress) -> Result<AaltoData, EvalError> {
    let sub = dir.join("keystrokes");
    let dir = if sub.is_dir() { sub } else { dir.to_path_buf() };
    let entries = std::fs::read_dir(&dir).map_err(|e| EvalError::Data {
        path: dir.display().to_string(),
        message: format!("cannot read directory: {e}"),
    })?;
    let mut files: Vec<std::path::PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.ends_with("_keystrokes.txt") || n.ends_with("_keystrokes.txt.gz")
            })
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(EvalError::Data {
            path: dir.display().to_string(),
            message: "no *_keystrokes.txt(.gz) files".into(),
        });
    }
    let hasher = KeyHasher::new(EVAL_SECRET);
    progress.start("loading", files.len());
    let loaded = parallel_map(files.len(), threads, |i| {
        let r = read_participant(&files[i], &|code| hasher.key_id(code));
        progress.advance();
        r
    });
    progress.finish();
    let mut data = AaltoData::default();
    for r in loaded {
        let (p, dropped) = r?;
        data.dropped_keystrokes += dropped;
        match p {
            Some(p) => data.participants.push(p),
            None => data.skipped_participants += 1,
        }
    }
    data.participants.sort_by_key(|p| p.id);
    if data.participants.len() < 6 {
        return Err(EvalError::Data {
            path: dir.display().to_string(),
            message: format!(
                "{} usable participants; the protocol needs at least 6",
                data.participants.len()
            ),
        });
    }
    Ok(data)
}

/// Runs the protocol for each gallery size. Participants are split into two halves
/// (alternating in id order); each half is tested with the population prior learned from
/// the other half only, and the per-participant EERs of both halves are averaged.
pub fn run(
    library: &PluginLibrary,
    data: &AaltoData,
    galleries: &[usize],
    threads: usize,
    progress: &dyn Progress,
) -> Result<EvalReport, EvalError> {
    let plugin = library.instantiate("mode = \"free\"\n")?;
    let n = data.participants.len();
    let halves: Vec<Vec<usize>> = (0..2)
        .map(|h| (0..n).filter(|i| i % 2 == h).collect())
        .collect();
    let mut populations = Vec::new();
    for h in 0..2 {
        let users: Vec<RVec<RVec<Event>>> = halves[1 - h]
            .iter()
            .map(|&u| data.participants[u].sentences.iter().cloned().collect())
            .collect();
        populations.push(plugin.build_population(&users)?);
    }
    let mut results = Vec::new();
    for &g in galleries {
        if g == 0 || g > GENUINE_FIRST {
            return Err(EvalError::Protocol(format!(
                "gallery size {g} must be within 1..={GENUINE_FIRST} (sentences 11-15 are the genuine queries)"
            )));
        }
        progress.start(&format!("G={g}"), n);
        let scores = parallel_map(n, threads, |p| -> Result<SubjectScores, EvalError> {
            let h = p % 2;
            let me = &data.participants[p];
            let profile = plugin.enroll(&populations[h], &me.sentences[..g])?;
            let score = |w: &RVec<Event>| plugin.score(&profile, w).map(|s| -s.llr);
            let genuine = me.sentences[GENUINE_FIRST..]
                .iter()
                .map(score)
                .collect::<Result<Vec<_>, _>>()?;
            let impostor = halves[h]
                .iter()
                .filter(|&&o| o != p)
                .map(|&o| score(&data.participants[o].sentences[IMPOSTOR_SENTENCE]))
                .collect::<Result<Vec<_>, _>>()?;
            progress.advance();
            Ok(SubjectScores::new(genuine, impostor))
        });
        progress.finish();
        let scores = scores.into_iter().collect::<Result<Vec<_>, _>>()?;
        results.push(summarise(
            &format!("habitus G={g}"),
            "two-fold: population prior learned on the other half of the participants".into(),
            Some(g),
            scores,
        ));
    }
    Ok(EvalReport {
        dataset: "aalto".into(),
        protocol: format!(
            "TypeNet-style: {n} participants, first {KEYS_PER_SENTENCE} keystrokes per sentence, gallery = sentences 1..G, genuine = sentences 11-15, impostors = sentence 11 of every other participant of the same half; EER per participant, averaged"
        ),
        results,
        notes: vec![
            format!(
                "{} participants skipped (fewer than {SENTENCES} sentences); {} keystrokes dropped (release before press, or times without millisecond precision)",
                data.skipped_participants, data.dropped_keystrokes
            ),
            "population prior (variances, per-id means, combiners, S-norm cohort and calibration) learned only on the half of participants not under test".into(),
        ],
    })
}

/// Action streams for the continuous evaluation: each participant enrolled from
/// sentences 1..`gallery`; genuine stream = sentences 11-15; impostor streams = all 15
/// sentences of each of the next `impostors` participants of the same half (the
/// population prior comes from the other half only).
pub fn streams(
    library: &PluginLibrary,
    data: &AaltoData,
    gallery: usize,
    impostors: usize,
    threads: usize,
    progress: &dyn Progress,
) -> Result<Vec<super::continuous::UserStreams>, EvalError> {
    if gallery == 0 || gallery > GENUINE_FIRST {
        return Err(EvalError::Protocol(format!(
            "gallery size {gallery} must be within 1..={GENUINE_FIRST}"
        )));
    }
    let plugin = library.instantiate("mode = \"free\"\n")?;
    let n = data.participants.len();
    let halves: Vec<Vec<usize>> = (0..2)
        .map(|h| (0..n).filter(|i| i % 2 == h).collect())
        .collect();
    let mut populations = Vec::new();
    for h in 0..2 {
        let users: Vec<RVec<RVec<Event>>> = halves[1 - h]
            .iter()
            .map(|&u| data.participants[u].sentences.iter().cloned().collect())
            .collect();
        populations.push(plugin.build_population(&users)?);
    }
    progress.start("Aalto streams", n);
    let results = parallel_map(
        n,
        threads,
        |p| -> Result<super::continuous::UserStreams, EvalError> {
            let h = p % 2;
            let me = &data.participants[p];
            let profile = plugin.enroll(&populations[h], &me.sentences[..gallery])?;
            let llrs = |ws: &[RVec<Event>]| -> Result<Vec<f64>, EvalError> {
                ws.iter()
                    .map(|w| {
                        plugin
                            .score(&profile, w)
                            .map(|s| s.llr)
                            .map_err(EvalError::from)
                    })
                    .collect()
            };
            let genuine = llrs(&me.sentences[GENUINE_FIRST..])?;
            let mine = &halves[h];
            let at = mine.iter().position(|&q| q == p).unwrap_or(0);
            let mut streams = Vec::new();
            for k in 1..=impostors.min(mine.len().saturating_sub(1)) {
                let o = mine[(at + k) % mine.len()];
                streams.push(llrs(&data.participants[o].sentences)?);
            }
            progress.advance();
            Ok(super::continuous::UserStreams {
                user: me.id.to_string(),
                genuine,
                impostors: streams,
            })
        },
    );
    progress.finish();
    results.into_iter().collect()
}
