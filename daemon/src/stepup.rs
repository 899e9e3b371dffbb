//! `habitus eval stepup`: what the PAM step-up decision does over many people.
//!
//! For each of the first `users` Aalto participants (in id order): enrol from sentences
//! 1–10 through habitusd's core (the real enrolment path: windows of the configured
//! size, the configured plugin settings, the store), then open a fresh session and
//! replay sentences 11–15 of (a) the same person and (b) each of `impostors` other
//! participants typing as them. After each replay the verdict pam_habitus.so would
//! see is recorded: only `Trusted` skips the strong factor.
//!
//! * **skip rate** (genuine sessions that skip the step-up): convenience;
//! * **false-skip rate** (impostor sessions that skip it): the security cost.
//!
//! Nothing is fitted here: the run uses the daemon's configuration as given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use habitus_engine::eval::{aalto, Progress};
use habitus_engine::{PluginLibrary, ProfileStore, Secrets};
use habitus_protocol::{RequestBody, ResponseBody, TrustState, WireEvent};
use serde::Serialize;

use crate::config::Config;
use crate::core::{Core, ModalityPlugin};
use crate::peer::Peer;

#[derive(Debug, Default, Serialize)]
pub struct StepUpReport {
    pub users: usize,
    pub genuine_sessions: usize,
    pub genuine_skipped: usize,
    pub impostor_sessions: usize,
    pub impostor_skipped: usize,
    /// Final state counts, genuine and impostor.
    pub genuine_states: BTreeMap<String, usize>,
    pub impostor_states: BTreeMap<String, usize>,
    /// Whether a population model (built from participants outside the evaluated
    /// ones) was installed before enrolment.
    pub population_users: usize,
}

impl StepUpReport {
    pub fn skip_rate(&self) -> f64 {
        self.genuine_skipped as f64 / self.genuine_sessions.max(1) as f64
    }
    pub fn false_skip_rate(&self) -> f64 {
        self.impostor_skipped as f64 / self.impostor_sessions.max(1) as f64
    }
}

struct Person {
    enrol: Vec<WireEvent>,
    live: Vec<WireEvent>,
}

fn load_people(files: &[PathBuf], wanted: usize, progress: &dyn Progress) -> Result<Vec<Person>> {
    let mut people = Vec::new();
    progress.start("loading", wanted);
    for f in files {
        if people.len() == wanted {
            break;
        }
        let (p, _) = aalto::read_participant(f, &|code| code)?;
        let Some(p) = p else { continue };
        let sentences = |r: std::ops::Range<usize>| {
            crate::replay::from_sentences(p.sentences[r].iter().map(|s| s.as_slice()))
        };
        people.push(Person {
            enrol: sentences(0..10),
            live: sentences(10..15),
        });
        progress.advance();
    }
    progress.finish();
    Ok(people)
}

fn state_name(s: TrustState) -> String {
    format!("{s:?}")
}

/// Which participants play which part.
#[derive(Clone, Copy, Debug)]
pub struct Protocol {
    /// Participant files passed over first (to hold out a tuning set).
    pub skip: usize,
    /// Participants enrolled and tested.
    pub users: usize,
    /// Other participants typing into each user's session.
    pub impostors: usize,
    /// Further participants building the population model (0: none).
    pub population: usize,
}

/// Runs the step-up evaluation on participants `skip..skip + users` (files in id
/// order). `population`: how many further participants (after
/// the evaluated ones) build the plugin's population model; 0 for none, as a fresh
/// installation has.
pub fn run(
    data: &Path,
    plugin_dir: &Path,
    config: Config,
    protocol: Protocol,
    progress: &dyn Progress,
) -> Result<StepUpReport> {
    let Protocol {
        skip,
        users,
        impostors,
        population,
    } = protocol;
    if users < 2 || impostors == 0 || impostors >= users {
        bail!("need at least 2 users and 1 <= impostors < users");
    }
    let files = crate::population::aalto_files(data)?;
    let files = files.get(skip..).unwrap_or_default();
    let people = load_people(files, users + population, progress)?;
    if people.len() < users + population {
        bail!(
            "{} usable participants; {} needed",
            people.len(),
            users + population
        );
    }
    let work = crate::scratch::ScratchDir::new("habitus-stepup")?;
    let secrets = Secrets::load_or_create(&work.0.join("secrets.key"))?;
    let mut store = ProfileStore::open(&work.0.join("profiles.sqlite"), &secrets)?;
    let hasher = secrets.key_hasher();

    let mut plugins = Vec::new();
    for (name, pc) in &config.plugins {
        let library = PluginLibrary::load(&plugin_dir.join(format!("libhabitus_{name}.so")))?;
        let instance = Arc::new(library.instantiate(&pc.settings)?);
        let window_events = config
            .session
            .window_events
            .get(name)
            .copied()
            .unwrap_or(50);
        if population > 0 {
            let others: Vec<Vec<WireEvent>> = people[users..]
                .iter()
                .map(|p| p.enrol.iter().chain(&p.live).copied().collect())
                .collect();
            let blob = crate::population::build(&instance, &others, &hasher, window_events)?;
            store.put_population(name, &blob)?;
        }
        plugins.push(ModalityPlugin {
            name: name.clone(),
            instance,
            window_events,
            enrol_windows: pc.enrol_windows,
        });
    }
    let mut core = Core::new(config, plugins, store, hasher);
    let root = Peer::root();
    let ask = |core: &mut Core, body: RequestBody| -> Result<ResponseBody> {
        match core.handle(&root, body).body {
            ResponseBody::Error { kind, message } => bail!("{kind:?}: {message}"),
            body => Ok(body),
        }
    };
    let mut report = StepUpReport {
        users,
        population_users: population,
        ..StepUpReport::default()
    };
    progress.start("sessions", users);
    for u in 0..users {
        let user = format!("p{u}");
        ask(
            &mut core,
            RequestBody::Enroll {
                user: user.clone(),
                events: people[u].enrol.clone(),
            },
        )?;
        let typists = std::iter::once(u).chain((1..=impostors).map(|k| (u + k) % users));
        for typist in typists {
            let open = RequestBody::SessionOpen {
                user: user.clone(),
                service: "eval".into(),
                tty: None,
                rhost: None,
            };
            ask(&mut core, open)?;
            ask(
                &mut core,
                RequestBody::Ingest {
                    user: user.clone(),
                    events: people[typist].live.clone(),
                },
            )?;
            let state = match ask(
                &mut core,
                RequestBody::Assess {
                    user: user.clone(),
                    tty: None,
                },
            )? {
                ResponseBody::Assessment(a) => a.state,
                other => bail!("unexpected reply {other:?}"),
            };
            let skipped = state == TrustState::Trusted;
            if typist == u {
                report.genuine_sessions += 1;
                report.genuine_skipped += skipped as usize;
                *report.genuine_states.entry(state_name(state)).or_default() += 1;
            } else {
                report.impostor_sessions += 1;
                report.impostor_skipped += skipped as usize;
                *report.impostor_states.entry(state_name(state)).or_default() += 1;
            }
            ask(
                &mut core,
                RequestBody::SessionClose {
                    user: user.clone(),
                    service: "eval".into(),
                    tty: None,
                },
            )?;
        }
        progress.advance();
    }
    progress.finish();
    Ok(report)
}
