//! habitusd's speed, measured on a real daemon (`cargo bench -p habitus --bench daemon`):
//!
//! * PAM decision latency, p50/p99: a direct socket client doing what pam_habitus.so
//!   does (connect, assess, read), and whole `pamtester` runs under pam_wrapper (which
//!   include starting the pamtester process).
//! * ingest throughput (events/s through the socket into a live, enrolled session);
//! * resident memory with 100 enrolled users with live sessions; idle CPU.
//!
//! `-- --test` (what CI runs) does a tiny run of everything to prove it still works.
//! Figures go to docs/results.md; nothing here asserts a speed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::TestDaemon;
use habitus::pamtest::PamHarness;
use habitus::replay::synthetic_typist;
use habitus_protocol::{
    decode_response, read_frame, write_message, Request, RequestBody, ResponseBody, TrustState,
};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(label: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    println!(
        "{label:<44} n={:<5} p50 {:>8.3} ms   p99 {:>8.3} ms   max {:>8.3} ms",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
}

/// One PAM-style round trip: connect, ask, read, decide.
fn assess_once(socket: &std::path::Path, user: &str) -> bool {
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
    if write_message(
        &mut stream,
        &Request::new(RequestBody::Assess {
            user: user.into(),
            tty: None,
        }),
    )
    .is_err()
    {
        return false;
    }
    match read_frame(&mut stream).map(|f| decode_response(&f)) {
        Ok(Ok(r)) => {
            matches!(r.body, ResponseBody::Assessment(a) if a.state == TrustState::Trusted)
        }
        _ => false,
    }
}

/// (utime + stime) clock ticks and resident kB of a process, from /proc.
fn proc_usage(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks, rss)
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--test");
    let scale = |full: usize, small: usize| if smoke { small } else { full };
    let daemon = TestDaemon::start("");
    let pid = daemon.pid().expect("habitusd pid");
    let (_, rss_empty) = proc_usage(pid);

    // A trusted user to ask about.
    // A long enrolment: the synthetic typist has no per-key habits, so a Trusted verdict
    // needs well-estimated per-key means (see daemon/tests/core.rs).
    daemon.enroll("alice", &synthetic_typist(1500, 90.0, 180.0, 1));
    daemon.session("alice", true);
    daemon.ingest("alice", &synthetic_typist(300, 90.0, 180.0, 2));
    assert!(
        assess_once(&daemon.socket, "alice"),
        "alice should be trusted"
    );

    let n = scale(5000, 50);
    let mut direct = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let trusted = assess_once(&daemon.socket, "alice");
        direct.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(trusted);
    }
    report("decision, direct socket client", direct);

    match PamHarness::new(
        &daemon.path("pam.d"),
        &common::pam_module(),
        &format!("socket={} timeout_ms=300", daemon.socket.display()),
        &[("alice", "pw")],
    ) {
        Ok(h) => {
            let n = scale(300, 5);
            let mut runs = Vec::with_capacity(n);
            for _ in 0..n {
                let out = h.authenticate("alice", "").expect("pamtester");
                assert!(out.success && !out.prompted(), "{}", out.output);
                runs.push(out.elapsed.as_secs_f64() * 1000.0);
            }
            report("pam_authenticate, whole pamtester process", runs);
        }
        Err(e) => println!("pamtester runs skipped: {e}"),
    }

    // Ingest throughput into the live session (scoring, fusion, trust, adaptation).
    let events = synthetic_typist(scale(100_000, 2_000), 90.0, 180.0, 3);
    let t = Instant::now();
    for batch in events.chunks(2000) {
        match daemon.call(RequestBody::Ingest {
            user: "alice".into(),
            events: batch.to_vec(),
        }) {
            Ok(ResponseBody::Done { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{:<44} {:.0} events/s ({} events in {:.2} s, batches of 2000, JSON over the socket)",
        "ingest",
        events.len() as f64 / secs,
        events.len(),
        secs
    );

    // 100 users, each enrolled and with a live session holding evidence.
    let users = scale(100, 5);
    for u in 0..users {
        let name = format!("user{u}");
        daemon.enroll(
            &name,
            &synthetic_typist(500, 80.0 + u as f64, 170.0, 10 + u as u64),
        );
        daemon.ingest(
            &name,
            &synthetic_typist(100, 80.0 + u as f64, 170.0, 500 + u as u64),
        );
    }
    let (_, rss_users) = proc_usage(pid);
    println!(
        "{:<44} {} kB ({} kB before any user)",
        format!("resident memory, {users} enrolled live users"),
        rss_users,
        rss_empty
    );

    let idle = Duration::from_secs(if smoke { 1 } else { 10 });
    let (before, _) = proc_usage(pid);
    std::thread::sleep(idle);
    let (after, _) = proc_usage(pid);
    let hz = 100.0; // USER_HZ on Linux
    println!(
        "{:<44} {:.3} % of one core over {} s",
        "idle CPU",
        (after - before) as f64 / hz / idle.as_secs_f64() * 100.0,
        idle.as_secs()
    );
}
