//! Token endpoint throughput and latency: refresh-token grants over concurrent keep-alive
//! connections against a real provider on loopback (the whole path: HTTP parsing, client
//! authentication, refresh-token redemption and rotation in SQLite, session lookup, access
//! token and ID token signing).
//!
//! `cargo bench -p habitus-oidc --bench token` (10 s per variant; `HABITUS_BENCH_SECS`,
//! `HABITUS_BENCH_CONNECTIONS` override); `-- --test` is a 1 s smoke run with 4
//! connections (CI). Variants: client `rp-ed` (ID token and access token EdDSA) and client
//! `rp` (ID token RS256, access token EdDSA; RS256 needs `openssl` to generate the key).
//!
//! The load generator runs in the same process on the same cores as the provider, so the
//! figures are a lower bound of what the provider alone does; "per core" divides by all
//! cores of the machine.

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

    fn post_form(&mut self, path: &str, auth: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
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
        let mut body = vec![0; length.expect("Content-Length in the response")];
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
}

/// `connections` threads, each rotating its own refresh token for `duration`.
fn run(port: u16, client: &'static str, tokens: Vec<String>, duration: Duration) -> Outcome {
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{client}:{}", common::SECRET));
    let auth = Arc::new(format!("Basic {basic}"));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = tokens
        .into_iter()
        .map(|mut rt| {
            let (auth, stop) = (auth.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut conn = Connection::open(port);
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let body =
                        common::form(&[("grant_type", "refresh_token"), ("refresh_token", &rt)]);
                    let t0 = Instant::now();
                    let (status, reply) = conn.post_form("/token", &auth, &body);
                    lat.push(t0.elapsed().as_micros() as u64);
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
                    let v: serde_json::Value = serde_json::from_slice(&reply).expect("JSON");
                    rt = v["refresh_token"]
                        .as_str()
                        .expect("rotated token")
                        .to_string();
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("load thread"))
        .collect();
    let elapsed = start.elapsed();
    latencies_us.sort_unstable();
    Outcome {
        requests: latencies_us.len(),
        elapsed,
        latencies_us,
    }
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
    let provider = common::start("");
    println!(
        "token endpoint, refresh_token grant, {connections} keep-alive connections, {secs} s per variant, {cores} cores shared with the load generator"
    );
    for (client, label) in [
        ("rp-ed", "EdDSA ID + access token"),
        ("rp", "RS256 ID token, EdDSA access token"),
    ] {
        let tokens: Vec<String> = (0..connections)
            .map(|i| refresh_token(&provider.issuer, client, i))
            .collect();
        let o = run(provider.port, client, tokens, Duration::from_secs(secs));
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
    }
}
