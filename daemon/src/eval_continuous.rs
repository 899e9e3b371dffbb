//! `habitus eval continuous`: keystroke, mouse and fused (chimeric) streams through the
//! trust model, with the
//! continuous-authentication metrics of Mondal & Bours (ANGA, ANIA, undetected share,
//! per-user categories), trust parameters tuned on one half of the users and reported on
//! the other.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use habitus_engine::eval::continuous::{
    chimeric, default_grid, optimistic_bound, two_fold, BoundPoint, Fold, StreamMetrics,
    UserStreams,
};
use habitus_engine::eval::{aalto, balabit, fixed_text, touchalytics, Progress};
use habitus_engine::loader::{default_plugin_dirs, find_plugin};
use serde::Serialize;

#[derive(Args)]
pub struct ContinuousArgs {
    /// CMU DSL-StrongPasswordData.csv (one action = one password repetition); "none" to skip.
    #[arg(
        long,
        default_value = "../shared/datasets/cmu-keystroke/DSL-StrongPasswordData.csv"
    )]
    cmu: PathBuf,
    /// Aalto subset folder (one action = one sentence of ≤ 50 keystrokes); "none" to skip.
    #[arg(long, default_value = "../shared/datasets/aalto-136m-subset")]
    aalto: PathBuf,
    /// Balabit mouse folder (one action = one mouse action); "none" to skip. With a
    /// keystroke source, also the fused stream of chimeric users (typing + pointing).
    #[arg(long, default_value = "../shared/datasets/balabit-mouse")]
    balabit: PathBuf,
    /// Touchalytics featMat.csv (one action = one stroke, inter-session protocol); "none"
    /// to skip.
    #[arg(long, default_value = "../shared/datasets/touchalytics/featMat.csv")]
    touchalytics: PathBuf,
    /// Aalto enrolment sentences.
    #[arg(long, default_value_t = 10)]
    gallery: usize,
    /// Aalto impostor streams per participant.
    #[arg(long, default_value_t = 10)]
    impostors: usize,
    /// CMU enrolment repetitions (the rest of each subject's 400 are the genuine stream).
    /// 200 is Killourhy & Maxion's split; 5 matches habitus-oidc, whose profile is built
    /// from the first five logins.
    #[arg(long, default_value_t = 200)]
    cmu_train: usize,
    /// CMU impostor repetitions per impostor stream.
    #[arg(long, default_value_t = 50)]
    impostor_reps: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Also write every source's scored streams (the LLR of each action, per user:
    /// genuine and impostor streams) to this JSON file, to study trust models without
    /// scoring again. LLRs only: no events, no key ids.
    #[arg(long, value_name = "FILE")]
    streams: Option<PathBuf>,
    /// Also print each source's optimistic bound: the trust grid searched on the
    /// reported users themselves (the lock-outs / undetected frontier, and the best
    /// configuration sparing 95 % of the users). Not a result: it shows whether any
    /// choice of trust parameters could meet a goal with these scores.
    #[arg(long)]
    bound: bool,
    /// Plugin directory (default: next to this executable, then /usr/lib/habitus/plugins).
    #[arg(long, value_name = "DIR")]
    plugins: Option<PathBuf>,
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Serialize)]
struct SourceReport {
    source: String,
    action: String,
    folds: Vec<Fold>,
    held_out: StreamMetrics,
    /// `--bound` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    bound: Option<Bound>,
    /// The scored streams, kept for `--streams` only (empty otherwise).
    #[serde(skip)]
    users: Vec<UserStreams>,
}

/// [`optimistic_bound`]'s answer for one source.
#[derive(Serialize)]
struct Bound {
    frontier: Vec<BoundPoint>,
    sparing_95_percent: Option<BoundPoint>,
}

/// Frontier points printed with `--bound`.
const BOUND_POINTS: usize = 8;

fn report(
    source: &str,
    action: &str,
    users: &[UserStreams],
    args: &ContinuousArgs,
) -> SourceReport {
    let grid = default_grid();
    let (folds, held_out) = two_fold(users, &grid);
    let bound = args.bound.then(|| {
        let (frontier, sparing_95_percent) = optimistic_bound(users, &grid, BOUND_POINTS);
        Bound {
            frontier,
            sparing_95_percent,
        }
    });
    SourceReport {
        source: source.into(),
        action: action.into(),
        folds,
        held_out,
        bound,
        // Copied only for `--streams`: the fused Aalto streams hold millions of actions.
        users: if args.streams.is_some() {
            users.to_vec()
        } else {
            Vec::new()
        },
    }
}

fn print_bound(bound: &Bound) -> Result<()> {
    let line = |p: &BoundPoint| {
        let m = &p.metrics;
        let t = &p.trust;
        format!(
            "{} lock-outs (ANGA {}), never locked out {:.1} %, undetected {:.1} %, ANIA {}  [A={} B={} C={} D={}]",
            m.genuine_lockouts,
            m.anga.map(|a| format!("{a:.0}")).unwrap_or_else(|| "∞".into()),
            100.0 * m.users_never_locked_out,
            100.0 * m.undetected,
            m.ania.map(|a| format!("{a:.2}")).unwrap_or_else(|| "-".into()),
            t.threshold,
            t.width,
            t.max_reward,
            t.max_penalty
        )
    };
    outln!("  optimistic bound (trust grid searched on these same users; not a result):");
    for p in &bound.frontier {
        outln!("    {}", line(p));
    }
    match &bound.sparing_95_percent {
        Some(p) => outln!("    sparing >= 95 % of users: {}", line(p)),
        None => outln!("    no configuration spares 95 % of the users"),
    }
    Ok(())
}

/// The `--streams` file: one entry per source.
#[derive(Serialize)]
struct StreamsFile<'a> {
    source: &'a str,
    action: &'a str,
    users: &'a [UserStreams],
}

fn print(r: &SourceReport) -> Result<()> {
    let m = &r.held_out;
    outln!("{} (one action = {})", r.source, r.action);
    for (i, f) in r.folds.iter().enumerate() {
        let t = &f.trust;
        outln!(
            "  half {}: trust tuned on the other half: A={} B={} C={} D={}",
            i + 1,
            t.threshold,
            t.width,
            t.max_reward,
            t.max_penalty
        );
    }
    outln!(
        "  held out, {} users: ANGA {} ({} genuine actions, {} wrongful lock-outs); users never locked out {:.1} %",
        m.users,
        m.anga.map(|a| format!("{a:.0}")).unwrap_or_else(|| "∞".into()),
        m.genuine_actions,
        m.genuine_lockouts,
        100.0 * m.users_never_locked_out
    );
    outln!(
        "  ANIA {} over {} impostor streams; undetected {:.1} %; users +/+ {}, +/- {}, -/+ {}, -/- {}",
        m.ania.map(|a| format!("{a:.2}")).unwrap_or_else(|| "-".into()),
        m.impostor_streams,
        100.0 * m.undetected,
        m.categories.plus_plus,
        m.categories.plus_minus,
        m.categories.minus_plus,
        m.categories.minus_minus
    );
    if let Some(bound) = &r.bound {
        print_bound(bound)?;
    }
    Ok(())
}

/// Refuses arguments whose report would mean nothing, before any data is read.
fn check(args: &ContinuousArgs) -> Result<()> {
    let used = |p: &PathBuf| p.as_os_str() != "none";
    if ![&args.cmu, &args.aalto, &args.balabit, &args.touchalytics]
        .into_iter()
        .any(used)
    {
        anyhow::bail!(
            "--cmu, --aalto, --balabit and --touchalytics are all \"none\": nothing to evaluate"
        );
    }
    if used(&args.aalto) && args.impostors == 0 {
        anyhow::bail!(
            "--impostors 0: no impostor streams to detect; use at least 1 (or --aalto none)"
        );
    }
    if used(&args.cmu) && args.impostor_reps == 0 {
        anyhow::bail!(
            "--impostor-reps 0: no impostor streams to detect; use at least 1 (or --cmu none)"
        );
    }
    Ok(())
}

pub fn run(args: ContinuousArgs, progress: &dyn Progress) -> Result<()> {
    check(&args)?;
    let threads = args
        .threads
        .unwrap_or_else(habitus_engine::eval::default_threads);
    let mut reports = Vec::new();
    let dirs = match &args.plugins {
        Some(d) => vec![d.clone()],
        None => default_plugin_dirs(),
    };
    let library = find_plugin(&dirs, "keystroke").map_err(anyhow::Error::msg)?;
    // The mouse streams come first: the fused streams pair each keystroke source with them.
    let mouse = if args.balabit.as_os_str() != "none" {
        if !args.balabit.join("training_files").is_dir() {
            anyhow::bail!(
                "{}: no Balabit data (training_files/ missing); pass --balabit DIR or --balabit none",
                args.balabit.display()
            );
        }
        let library = find_plugin(&dirs, "mouse").map_err(anyhow::Error::msg)?;
        let data = balabit::load(&args.balabit, threads, progress)?;
        let users = balabit::streams(&library, &data, "", threads, progress)?;
        reports.push(report(
            "Balabit: profile per account from its training sessions (population: the other accounts' training sessions); genuine = the account's legal labelled test sessions in order; impostors = its illegal labelled test sessions, one stream each",
            "one mouse action (move, point-and-click or drag-and-drop)",
            &users,
            &args,
        ));
        Some(users)
    } else {
        None
    };
    if args.cmu.as_os_str() != "none" {
        let data = fixed_text::load(&args.cmu).with_context(|| "loading the CMU data")?;
        let protocol = fixed_text::Protocol {
            train: args.cmu_train,
            impostor_reps: args.impostor_reps,
        };
        let users = fixed_text::streams(&library, &data, protocol, threads, progress)?;
        reports.push(report(
            &format!(
                "CMU: enrol reps 1-{} (habitus detector, population from the other half); genuine = reps {}-400; impostors = first {} reps of each other subject of the same half",
                args.cmu_train,
                args.cmu_train + 1,
                args.impostor_reps
            ),
            "one password repetition",
            &users,
            &args,
        ));
        if let Some(mouse) = &mouse {
            reports.push(report(
                "CMU + Balabit, fused: chimeric users (CMU subject i with a Balabit account of the same half), keystroke and mouse actions interleaved in proportion",
                "one password repetition or one mouse action",
                &chimeric(&users, mouse),
                &args,
            ));
        }
    }
    if args.aalto.as_os_str() != "none" {
        let data = aalto::load(&args.aalto, threads, progress)?;
        let users = aalto::streams(
            &library,
            &data,
            args.gallery,
            args.impostors,
            threads,
            progress,
        )?;
        // A half holds fewer participants than may be asked for: say what was used.
        let used = users.iter().map(|u| u.impostors.len()).max().unwrap_or(0);
        let impostors = if used < args.impostors {
            format!("{used} (of {} asked: all a half holds)", args.impostors)
        } else {
            used.to_string()
        };
        reports.push(report(
            &format!(
                "Aalto: enrol sentences 1-{}; genuine = sentences 11-15; impostors = all 15 sentences of {impostors} other participants of the same half",
                args.gallery
            ),
            "one sentence (first 50 keystrokes)",
            &users,
            &args,
        ));
        if let Some(mouse) = &mouse {
            reports.push(report(
                "Aalto + Balabit, fused: chimeric users (Aalto participant i with a Balabit account of the same half), keystroke and mouse actions interleaved in proportion",
                "one sentence or one mouse action",
                &chimeric(&users, mouse),
                &args,
            ));
        }
    }
    if args.touchalytics.as_os_str() != "none" {
        let library = find_plugin(&dirs, "touch").map_err(anyhow::Error::msg)?;
        let data = touchalytics::load(&args.touchalytics)?;
        let users = touchalytics::streams(&library, &data, threads, progress)?;
        reports.push(report(
            "Touchalytics: inter-session, profile per (user, stroke type, fold) from the other same-day documents (population: the other half's training documents); genuine = the held-out documents' strokes in order; impostors = each other user of the same half, one stream per fold",
            "one stroke (scrolling or horizontal)",
            &users,
            &args,
        ));
    }
    if let Some(path) = &args.streams {
        let files: Vec<StreamsFile> = reports
            .iter()
            .map(|r| StreamsFile {
                source: &r.source,
                action: &r.action,
                users: &r.users,
            })
            .collect();
        let text = serde_json::to_string(&files)?;
        std::fs::write(path, text)
            .with_context(|| format!("writing the streams to {}", path.display()))?;
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        outln!("Continuous authentication (Mondal & Bours metrics); trust parameters tuned on one half of the users, reported on the other\n");
        for r in &reports {
            print(r)?;
            outln!();
        }
    }
    Ok(())
}
