//! habitus-oidc's hot HTTP endpoints against a real provider on loopback, over concurrent
//! keep-alive connections:
//!
//! * **`/token`**: refresh-token grants (the whole path: HTTP parsing, client
//!   authentication, refresh-token redemption and rotation in SQLite, session lookup,
//!   access token and ID token signing). Variants: client `rp-ed` (ID token and access
//!   token EdDSA) and client `rp` (ID token RS256, access token EdDSA; RS256 needs
//!   `openssl` to generate the key).
//! * **`/collect`**: live-session behaviour batches (one password entry of a genuine typist,
//!   24 key events per batch, each connection its own SSO session of an enrolled user): parsing, validation,
//!   keyed hashing, scoring through the keystroke plugin, the trust model and the session
//!   update. Reported in events/s.
//!
//! `cargo bench -p habitus-oidc --bench http` (10 s per variant; `HABITUS_BENCH_SECS`,
//! `HABITUS_BENCH_CONNECTIONS` override; `-- token-eddsa` (or `token-rs256`, `collect`)
//! runs only the variants named); `-- --test` is a 1 s smoke run with 4 connections (CI).
//!
//! The load generator runs in the same process on the same cores as the provider, so the
//! figures are a lower bound of what the provider alone does; "per core" divides by all
//! cores of the machine. When `wrk` is installed (Debian `wrk`), the `/token` variants are
//! measured a second time by wrk in its own process (2 threads, the same connections, a
//! Lua script that rotates each connection's refresh token), which costs the machine far
//! less than 64 blocking client threads. Not in the smoke run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// One keep-alive HTTP/1.1 connection (responses must carry Content-Length).
struct Connection {
    reader: BufReader<TcpStream>,
    host: String,
}

impl Connection {
    fn open(port: u16) -> Connection {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Connection {
            reader: BufReader::new(stream),
            host: format!("127.0.0.1:{port}"),
        }
    }

    /// POST with one extra header line (`Name: value`) and `content_type`.
    fn post(&mut self, path: &str, extra: &str, content_type: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\n{extra}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let s = self.reader.get_mut();
        s.write_all(head.as_bytes()).expect("write");
        s.write_all(body).expect("write body");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut length = None;
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("header");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                }
            }
        }
        // A 204 has no body and may carry no Content-Length.
        let mut body = vec![0; length.unwrap_or(0)];
        self.reader.read_exact(&mut body).expect("body");
        (status, body)
    }
}

/// A fresh SSO session for `client` (one browser login of bob) and its refresh token.
fn refresh_token(issuer: &str, client: &str, i: u64) -> String {
    let pk = common::pkce();
    let r = common::browser_login(
        issuer,
        client,
        "bob",
        &[],
        common::typist(12, 95.0, 190.0, 2, i),
        &pk,
        "n",
    );
    assert_eq!(r.status, 303, "login: {}", r.text());
    let q = r.location_query();
    let t = common::exchange(issuer, client, &q["code"], &pk);
    assert_eq!(t.status, 200, "exchange: {}", t.text());
    t.json()["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string()
}

struct Outcome {
    requests: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
    /// Each connection's refresh token at the end (to run again with).
    tokens: Vec<String>,
}

/// `tokens.len()` threads, one keep-alive connection and refresh token each, rotating
/// the token for `duration`.
///
/// `pace: None` is a closed loop: each connection sends its next request as soon as the
/// response is in, so the load is whatever the provider sustains. `Some(interval)` is an
/// open loop: each connection sends on a fixed schedule, one request per `interval`
/// (phases spread evenly), and latency counts from the scheduled time, so a response
/// that comes late also delays (and counts against) the requests queued behind it
/// rather than silently lowering the load (no coordinated omission).
fn run(
    port: u16,
    client: &'static str,
    tokens: Vec<String>,
    duration: Duration,
    pace: Option<Duration>,
) -> Outcome {
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{client}:{}", common::SECRET));
    let auth = Arc::new(format!("Basic {basic}"));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let n = tokens.len().max(1) as u32;
    let threads: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, mut rt)| {
            let (auth, stop) = (auth.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut conn = Connection::open(port);
                let mut lat = Vec::new();
                let mut next = pace.map(|p| start + p * i as u32 / n);
                while !stop.load(Ordering::Relaxed) {
                    let body =
                        common::form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]);
                    let t0 = match (next, pace) {
                        (Some(at), Some(p)) => {
                            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                            next = Some(at + p);
                            at
                        }
                        _ => Instant::now(),
                    };
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (status, reply) = conn.post(
                        "/token",
                        &format!("Authorization: {auth}"),
                        "application/x-www-form-urlencoded",
                        &body,
                    );
                    lat.push(t0.elapsed().as_micros() as u64);
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
                    let v: serde_json::Value = serde_json::from_slice(&reply).expect("JSON");
                    rt = v["refresh_token"]
                        .as_str()
                        .expect("rotated token")
                        .to_string();
                }
                (lat, rt)
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us = Vec::new();
    let mut tokens = Vec::new();
    for t in threads {
        let (l, rt) = t.join().expect("load thread");
        latencies_us.extend(l);
        tokens.push(rt);
    }
    let elapsed = start.elapsed();
    latencies_us.sort_unstable();
    Outcome {
        requests: latencies_us.len(),
        elapsed,
        latencies_us,
        tokens,
    }
}

/// wrk's Lua script: each of wrk's 2 threads starts with every other token; a request
/// takes a token from its thread's queue, and the response puts the rotated one back.
const WRK_SCRIPT: &str = r#"
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  queue = {}
  for i, t in ipairs(TOKENS) do
    if (i - 1) % 2 == id then table.insert(queue, t) end
  end
end
function request()
  local t = table.remove(queue) or "none"
  return wrk.format("POST", "/token", {
    ["Authorization"] = AUTH,
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, "grant_type=refresh_token&refresh_token=" .. t)
end
function response(status, headers, body)
  local t = body:match('"refresh_token":"([^"]+)"')
  if t then table.insert(queue, t) end
end
"#;

/// The `/token` variant again with wrk as the load generator, if wrk is installed.
/// Returns wrk's summary lines (requests/s, latency percentiles, errors).
fn run_wrk(port: u16, client: &str, tokens: &[String], secs: u64) -> Option<String> {
    let found = std::process::Command::new("wrk")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        return None;
    }
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{client}:{}", common::SECRET));
    let list: Vec<String> = tokens.iter().map(|t| format!("{t:?}")).collect();
    let script = format!(
        "TOKENS = {{{}}}\nAUTH = \"Basic {basic}\"\n{WRK_SCRIPT}",
        list.join(",")
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("refresh.lua");
    std::fs::write(&path, script).expect("wrk script");
    let out = std::process::Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{}", tokens.len() - 8),
            &format!("-d{secs}s"),
        ])
        .args(["--latency", "-s"])
        .arg(&path)
        .arg(format!("http://127.0.0.1:{port}/token"))
        .output()
        .expect("running wrk");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let keep: Vec<&str> = text
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("50%")
                || l.starts_with("99%")
                || l.starts_with("Requests/sec")
                || l.starts_with("Non-2xx")
                || l.starts_with("Socket errors")
                || l.contains("requests in")
        })
        .collect();
    Some(keep.join("\n"))
}

/// Password entries per live batch (24 key events each, 5 s apart). One: the live path
/// scores the last stroke per key position of a batch, so more entries per batch would
/// count events that are accepted but not scored.
const ENTRIES_PER_BATCH: u64 = 1;

/// A genuine login of `user` (enrolled with typist seed 2): its SSO session cookie.
fn session_cookie(issuer: &str, user: &str, i: u64) -> String {
    let pk = common::pkce();
    let r = common::browser_login(
        issuer,
        "rp",
        user,
        &[],
        common::typist(12, 95.0, 190.0, 2, 1000 + i),
        &pk,
        "n",
    );
    assert_eq!(r.status, 303, "login: {}", r.text());
    let c = r.header("set-cookie").expect("session cookie");
    c.split(';').next().expect("cookie").to_string()
}

fn live_batch(seq: u64) -> Vec<u8> {
    let mut events = Vec::new();
    for k in 0..ENTRIES_PER_BATCH {
        for mut e in common::typist(12, 95.0, 190.0, 2, 2000 + seq * ENTRIES_PER_BATCH + k) {
            let t = e["t"].as_f64().unwrap_or(0.0) + 5000.0 * k as f64;
            e["t"] = serde_json::json!(t);
            events.push(e);
        }
    }
    serde_json::json!({"seq": seq, "events": events})
        .to_string()
        .into_bytes()
}

/// `cookies.len()` threads, each posting live batches to its own session for `duration`.
/// Returns (batches, events, elapsed, latencies).
fn run_collect(port: u16, cookies: Vec<String>, duration: Duration) -> (Outcome, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = cookies
        .into_iter()
        .map(|cookie| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut conn = Connection::open(port);
                let (mut lat, mut events) = (Vec::new(), 0);
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = live_batch(seq);
                    let t0 = Instant::now();
                    let (status, reply) = conn.post(
                        "/collect",
                        &format!("Cookie: {cookie}"),
                        "application/json",
                        &body,
                    );
                    lat.push(t0.elapsed().as_micros() as u64);
                    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&reply));
                    events += 24 * ENTRIES_PER_BATCH as usize;
                    seq += 1;
                }
                (lat, events)
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us = Vec::new();
    let mut events = 0;
    for t in threads {
        let (l, e) = t.join().expect("load thread");
        latencies_us.extend(l);
        events += e;
    }
    let elapsed = start.elapsed();
    latencies_us.sort_unstable();
    (
        Outcome {
            requests: latencies_us.len(),
            elapsed,
            latencies_us,
            tokens: Vec::new(),
        },
        events,
    )
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--test");
    // Like criterion's: `cargo bench --bench http -- token-eddsa` runs the variants whose
    // name contains one of the words (token-eddsa, token-rs256, collect).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let selected =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let env_num = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (secs, connections) = if smoke {
        (1, 4)
    } else {
        (
            env_num("HABITUS_BENCH_SECS", 10),
            env_num("HABITUS_BENCH_CONNECTIONS", 64),
        )
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Sessions are not ended on drift here: the synthetic typist's single password entries
    // are weak evidence and the default trust model would end some sessions mid-run
    // (docs/results.md); the benchmark measures the scoring path, not the policy.
    let provider = common::start("[signals]\nrevoke_on_drift = false\n");
    println!(
        "token endpoint, refresh_token grant, {connections} keep-alive connections, {secs} s per variant, {cores} cores shared with the load generator"
    );
    for (name, client, label) in [
        ("token-eddsa", "rp-ed", "EdDSA ID + access token"),
        ("token-rs256", "rp", "RS256 ID token, EdDSA access token"),
    ] {
        if !selected(name) {
            continue;
        }
        let tokens: Vec<String> = (0..connections)
            .map(|i| refresh_token(&provider.issuer, client, i))
            .collect();
        // Fresh sessions for wrk (the tokens above are rotated by the in-process run),
        // with spares: wrk calls request() once per thread before it connects, and the
        // token taken then is never sent.
        let wrk_tokens: Vec<String> = if smoke {
            Vec::new()
        } else {
            (0..connections + 8)
                .map(|i| refresh_token(&provider.issuer, client, 1000 + i))
                .collect()
        };
        let o = run(
            provider.port,
            client,
            tokens,
            Duration::from_secs(secs),
            None,
        );
        let rate = o.requests as f64 / o.elapsed.as_secs_f64();
        println!(
            "{label:<38} {:>8.0} req/s ({:>6.0} per core)  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  ({} requests)",
            rate,
            rate / cores as f64,
            percentile(&o.latencies_us, 0.50),
            percentile(&o.latencies_us, 0.99),
            percentile(&o.latencies_us, 1.0),
            o.requests
        );
        // The same connections at a fixed offered rate (the goal's 2,000 requests/s per
        // core unless HABITUS_BENCH_RATE says otherwise): latency at a given load. A
        // variant that cannot sustain it (RS256) is offered 70 % of its closed-loop rate
        // instead: beyond capacity an open loop only measures a growing queue.
        let offered = if smoke {
            50
        } else {
            env_num("HABITUS_BENCH_RATE", 2000 * cores as u64).min((rate * 0.7) as u64)
        };
        let interval = Duration::from_secs_f64(connections as f64 / offered.max(1) as f64);
        let p = run(
            provider.port,
            client,
            o.tokens,
            Duration::from_secs(secs),
            Some(interval),
        );
        let achieved = p.requests as f64 / p.elapsed.as_secs_f64();
        println!(
            "  open loop, {offered} req/s offered ({} per core): {achieved:>6.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms",
            offered / cores as u64,
            percentile(&p.latencies_us, 0.50),
            percentile(&p.latencies_us, 0.99),
            percentile(&p.latencies_us, 1.0),
        );
        if !smoke {
            match run_wrk(provider.port, client, &wrk_tokens, secs) {
                Some(summary) => println!(
                    "  the same with wrk as the load generator (2 threads, own process):\n{summary}"
                ),
                None => println!("  (wrk is not installed: no second measurement)"),
            }
        }
    }

    if !selected("collect") {
        return;
    }
    if !selected("token-eddsa") && !selected("token-rs256") {
        // The logins of the token variants enrol bob; without them, five logins do.
        for i in 0..5 {
            refresh_token(&provider.issuer, "rp", 5000 + i);
        }
    }
    // /collect: one SSO session of bob per connection (live state is per session); bob
    // was enrolled by the logins above (typist seed 2).
    let cookies: Vec<String> = (0..connections)
        .map(|i| session_cookie(&provider.issuer, "bob", i))
        .collect();
    let (o, events) = run_collect(provider.port, cookies, Duration::from_secs(secs));
    let secs_f = o.elapsed.as_secs_f64();
    println!(
        "{:<38} {:>8.0} events/s ({:>6.0} per core; {:.0} batches/s of {})  p50 {:>6.2} ms  p99 {:>6.2} ms",
        "/collect, live genuine batches",
        events as f64 / secs_f,
        events as f64 / secs_f / cores as f64,
        o.requests as f64 / secs_f,
        24 * ENTRIES_PER_BATCH,
        percentile(&o.latencies_us, 0.50),
        percentile(&o.latencies_us, 0.99),
    );
}
