//! Replay files: recorded behaviour in the ingest event format, one JSON event per line.
//!
//! ```text
//! # habitus replay: participant 1002 of the Aalto 136M data set, sentences 1-10
//! {"t_us":0,"kind":"key_down","code":72}
//! {"t_us":96000,"kind":"key_up","code":72}
//! ```
//!
//! Blank lines and lines starting with `#` are skipped. Times are microseconds on any
//! clock; habitusd aligns them to its own. Key codes are plain codes (habitusd hashes
//! them on receipt): a replay file of real typing is as sensitive as a keylogger's, so
//! convert only benchmark data or your own.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use habitus_plugin::EventKind;
use habitus_protocol::{WireEvent, WireEventKind};

/// The latest time habitusd accepts (2^53 µs, 285 years; its core refuses later ones).
pub const MAX_T_US: u64 = 1 << 53;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    // `error`, not `source`: the message already shows it, and as a source it would be
    // printed a second time by every `{:#}` chain.
    #[error("cannot read replay file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}: no events")]
    Empty { path: String },
}

/// Reads a replay file; every malformed line is an error naming it (nothing half-read).
pub fn read(path: &Path) -> Result<Vec<WireEvent>, ReplayError> {
    let p = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|error| ReplayError::Read {
        path: p.clone(),
        error,
    })?;
    let mut events: Vec<WireEvent> = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|error| ReplayError::Read {
            path: p.clone(),
            error,
        })?;
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let e: WireEvent = serde_json::from_str(text).map_err(|e| ReplayError::Line {
            path: p.clone(),
            line: i + 1,
            message: e.to_string(),
        })?;
        // habitusd refuses a batch holding such an event: found here, before anything is
        // sent, a file is either taken whole or not at all.
        if e.t_us > MAX_T_US {
            return Err(ReplayError::Line {
                path: p.clone(),
                line: i + 1,
                message: format!(
                    "time {} is out of range (at most 2^53 = {MAX_T_US} microseconds)",
                    e.t_us
                ),
            });
        }
        if let Some(prev) = events.last() {
            if e.t_us < prev.t_us {
                return Err(ReplayError::Line {
                    path: p.clone(),
                    line: i + 1,
                    message: format!("time goes back ({} after {})", e.t_us, prev.t_us),
                });
            }
        }
        events.push(e);
    }
    if events.is_empty() {
        return Err(ReplayError::Empty { path: p });
    }
    Ok(events)
}

/// Writes a replay file with a comment header.
pub fn write(path: &Path, header: &str, events: &[WireEvent]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for line in header.lines() {
        writeln!(out, "# {line}")?;
    }
    for e in events {
        let json = serde_json::to_string(e).map_err(std::io::Error::other)?;
        writeln!(out, "{json}")?;
    }
    out.flush()
}

/// Sentences (each starting at time 0, key field = key code) laid end to end with a
/// 2-second pause between them, as wire events.
pub fn from_sentences<'a>(
    sentences: impl IntoIterator<Item = &'a [habitus_plugin::Event]>,
) -> Vec<WireEvent> {
    let mut out = Vec::new();
    let mut base = 0u64;
    for s in sentences {
        let mut end = base;
        for e in s {
            let kind = if e.kind == EventKind::KEY_DOWN {
                WireEventKind::KeyDown
            } else if e.kind == EventKind::KEY_UP {
                WireEventKind::KeyUp
            } else {
                continue;
            };
            let t = base + e.t_us;
            end = end.max(t);
            out.push(WireEvent::key(kind, t, e.key));
        }
        base = end + 2_000_000;
    }
    out
}

/// Sentences `range` (0-based) of the Aalto participant file `file`, laid end to end.
pub fn from_aalto(file: &Path, range: std::ops::Range<usize>) -> anyhow::Result<Vec<WireEvent>> {
    use habitus_engine::eval::aalto;
    let (participant, _) = aalto::read_participant(file, &|code| code)?;
    let Some(p) = participant else {
        anyhow::bail!(
            "{}: fewer than {} sentences",
            file.display(),
            aalto::SENTENCES
        );
    };
    let Some(sentences) = p.sentences.get(range.clone()) else {
        anyhow::bail!("sentences {range:?} out of range");
    };
    Ok(from_sentences(sentences.iter().map(|s| s.as_slice())))
}

/// Most keystrokes `habitus replay synthetic` writes: a million is days of typing
/// (and 2 million events, about 100 MB of replay file).
pub const MAX_SYNTHETIC_KEYSTROKES: usize = 1_000_000;
/// Largest mean hold or gap accepted, ms: a minute.
pub const MAX_SYNTHETIC_MS: f64 = 60_000.0;

/// Checks [`synthetic_typist`]'s arguments: a keystroke count that fits in memory, and
/// holds and gaps of at least 1 ms (so every release comes after its press) and at
/// most a minute (so the file's times stay far below habitusd's 2^53 µs).
pub fn check_synthetic(keystrokes: usize, hold_ms: f64, gap_ms: f64) -> Result<(), String> {
    if !(1..=MAX_SYNTHETIC_KEYSTROKES).contains(&keystrokes) {
        return Err(format!(
            "--keystrokes {keystrokes}: must be 1 to {MAX_SYNTHETIC_KEYSTROKES}"
        ));
    }
    for (name, ms) in [("--hold-ms", hold_ms), ("--gap-ms", gap_ms)] {
        // `contains` is false for NaN too.
        if !(1.0..=MAX_SYNTHETIC_MS).contains(&ms) {
            return Err(format!(
                "{name} {ms:?}: must be a number of milliseconds from 1 to {MAX_SYNTHETIC_MS}"
            ));
        }
    }
    // The latest time written: every gap and the last hold at their +25 % jitter.
    let last_us = 1.25e3 * (gap_ms * keystrokes as f64 + hold_ms);
    if last_us >= MAX_T_US as f64 {
        return Err(format!(
            "{keystrokes} keystrokes of {gap_ms} ms would last past 2^53 microseconds"
        ));
    }
    Ok(())
}

/// A synthetic typist for demos when no data set is at hand: `hold_ms` and `gap_ms` are
/// the person's habits (each key drawn from 30 letters), ±25 % jitter, deterministic in
/// `seed`. Not a benchmark: real typing is far less regular.
pub fn synthetic_typist(keystrokes: usize, hold_ms: f64, gap_ms: f64, seed: u64) -> Vec<WireEvent> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    let mut events = Vec::with_capacity(2 * keystrokes);
    let mut t = 0u64;
    for _ in 0..keystrokes {
        let code = 16 + (next() * 30.0) as u32; // evdev KEY_Q..: letters
        let hold = (hold_ms * (0.75 + 0.5 * next()) * 1000.0) as u64;
        events.push(WireEvent::key(WireEventKind::KeyDown, t, code));
        events.push(WireEvent::key(WireEventKind::KeyUp, t + hold, code));
        t += (gap_ms * (0.75 + 0.5 * next()) * 1000.0) as u64;
    }
    events.sort_by_key(|e| (e.t_us, e.kind != WireEventKind::KeyUp));
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let events = synthetic_typist(20, 90.0, 180.0, 1);
        write(&path, "test\nsecond line", &events).unwrap();
        assert_eq!(read(&path).unwrap(), events);

        std::fs::write(&path, "# c\n{\"t_us\":5,\"kind\":\"key_down\",\"code\":3}\n{\"t_us\":1,\"kind\":\"key_up\",\"code\":3}\n").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.ends_with(":3: time goes back (1 after 5)"), "{e}");

        std::fs::write(&path, "{\"t_us\":5,\"kind\":\"key_press\"}\n").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains(":1: unknown variant"), "{e}");

        // Found before anything is sent (habitusd would refuse it mid-file).
        std::fs::write(&path, "{\"t_us\":5,\"kind\":\"key_down\",\"code\":3}\n{\"t_us\":9007199254740993,\"kind\":\"key_up\",\"code\":3}\n").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.ends_with(":2: time 9007199254740993 is out of range (at most 2^53 = 9007199254740992 microseconds)"), "{e}");

        std::fs::write(&path, "# nothing\n\n").unwrap();
        assert!(read(&path).unwrap_err().to_string().ends_with("no events"));
        let e = anyhow::Error::from(read(&dir.path().join("absent")).unwrap_err());
        let e = format!("{e:#}");
        assert!(e.contains("cannot read"), "{e}");
        assert_eq!(e.matches("os error 2").count(), 1, "{e}");
    }
}
