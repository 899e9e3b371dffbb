//! Shared by the integration tests: a real provider on an ephemeral loopback port, a tiny
//! HTTP/1.1 client over TcpStream (also usable as openidconnect's HTTP client), synthetic
//! typists and the login steps a browser would perform.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

pub const SECRET: &str = "rp-secret-0123456789";
pub const PASSWORD: &str = "correct horse battery";
pub const TOTP: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// Config lines letting alice (who has TOTP) enrol from password-only logins, for tests
/// about something else: by default an enrolling TOTP user is asked for the code at every
/// login, and a code is accepted once per 30 s step, so five quick enrolment logins
/// could not pass it. `tests/e2e.rs` tests the default.
pub const PASSWORD_ONLY_ENROLMENT: &str = "\n[behavior]\nenrol_with_second_factor = false\n";

/// Builds the keystroke plugin (cargo builds no cdylibs for tests) and returns its directory.
pub fn plugin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_BIN_EXE_habitus-oidc"))
            .parent()
            .expect("target dir")
            .to_path_buf();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-q", "-p", "habitus-keystroke"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("cargo build").success(),
            "building the keystroke plugin"
        );
        dir
    })
    .clone()
}

pub struct TestProvider {
    pub _dir: tempfile::TempDir,
    pub issuer: String,
    pub port: u16,
    pub provider: Arc<habitus_oidc::Provider>,
}

/// A running provider. `extra` is appended to the config (more clients, lifetimes...).
pub fn start(extra: &str) -> TestProvider {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    start_at(extra, listener, format!("http://127.0.0.1:{port}"))
}

/// The test configuration: clients `rp` (RS256) and `rp-ed` (EdDSA), both redirecting to
/// `http://127.0.0.1:9/cb`, the keystroke plugin, state in `state`; `extra` goes before
/// the clients (top-level keys, or tables).
pub fn config_text(issuer: &str, state: &std::path::Path, extra: &str) -> String {
    config_text_with_origins(issuer, state, extra, &[])
}

/// [`config_text`] with more `collect_origins` than `https://app.example`.
pub fn config_text_with_origins(
    issuer: &str,
    state: &std::path::Path,
    extra: &str,
    origins: &[&str],
) -> String {
    let mut all = vec!["https://app.example"];
    all.extend_from_slice(origins);
    format!(
        r#"version = 1
issuer = "{issuer}"
state_dir = {state:?}
plugin_dir = {plugins:?}
collect_origins = {all:?}
{extra}
[[clients]]
id = "rp"
secret = "{SECRET}"
redirect_uris = ["http://127.0.0.1:9/cb"]
post_logout_redirect_uris = ["http://127.0.0.1:9/bye"]

[[clients]]
id = "rp-ed"
secret = "{SECRET}"
redirect_uris = ["http://127.0.0.1:9/cb"]
id_token_signed_response_alg = "EdDSA"
"#,
        state = state.display().to_string(),
        plugins = plugin_dir().display().to_string(),
    )
}

/// A running provider on `listener` that calls itself `issuer` (e.g. the address of a
/// recording proxy in front of it).
pub fn start_at(extra: &str, listener: std::net::TcpListener, issuer: String) -> TestProvider {
    start_at_with_origins(extra, listener, issuer, &[])
}

/// [`start_at`] with more `collect_origins`.
pub fn start_at_with_origins(
    extra: &str,
    listener: std::net::TcpListener,
    issuer: String,
    origins: &[&str],
) -> TestProvider {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = listener.local_addr().expect("addr").port();
    let text = config_text_with_origins(&issuer, dir.path(), extra, origins);
    let config = habitus_oidc::Config::parse(&text).expect("config");
    let mut users = habitus_oidc::users::UsersFile::default();
    users
        .set("alice", Some(PASSWORD), Some(TOTP.into()))
        .expect("alice");
    users
        .set_email("alice", Some("alice@example.com"), true)
        .expect("alice's email");
    users.set("bob", Some(PASSWORD), None).expect("bob");
    users
        .save(&config.state_path(&config.users_file))
        .expect("save users");
    let provider = Arc::new(habitus_oidc::build(config).expect("build"));
    habitus_oidc::spawn(listener, provider.clone()).expect("spawn");
    TestProvider {
        _dir: dir,
        issuer,
        port,
        provider,
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.text()))
    }
    /// Query parameters of the Location header.
    pub fn location_query(&self) -> HashMap<String, String> {
        let loc = self
            .header("location")
            .unwrap_or_else(|| panic!("no redirect: {} {}", self.status, self.text()));
        let u = url::Url::parse(loc).expect("location URL");
        u.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

/// One HTTP/1.1 request (Connection: close), no redirects followed.
/// The browser the tests play: once the issuer has set its login-binding cookie, a
/// browser sends it with every request to the issuer, and so does [`http`] (a fixed
/// value: the issuer accepts a browser's own cookie and binds its logins to it).
pub const BROWSER_COOKIE: &str = "habitus_oidc_browser=test-browser-0123456789abcdef";

/// One HTTP/1.1 request, from [`BROWSER_COOKIE`]'s browser (the cookie is added to any
/// `Cookie` header given); [`http_exact`] sends only the headers given.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut cookie = BROWSER_COOKIE.to_string();
    let mut hs: Vec<(&str, &str)> = Vec::new();
    for &(k, v) in headers {
        if k.eq_ignore_ascii_case("cookie") {
            cookie = format!("{v}; {BROWSER_COOKIE}");
        } else {
            hs.push((k, v));
        }
    }
    hs.push(("Cookie", &cookie));
    http_exact(method, url, &hs, body)
}

pub fn http_exact(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let u = url::Url::parse(url).expect("url");
    let host = u.host_str().expect("host");
    let port = u.port_or_known_default().expect("port");
    let mut path = u.path().to_string();
    if let Some(q) = u.query() {
        path.push('?');
        path.push_str(q);
    }
    let mut s = TcpStream::connect((host, port)).expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    s.write_all(body).expect("write body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16)
                .unwrap_or(0);
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = out;
    }
    Reply {
        status,
        headers,
        body,
    }
}

/// openidconnect's HTTP client hook, over the same tiny client.
pub fn oidc_http(
    req: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, std::io::Error> {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let hs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = http(
        req.method().as_str(),
        &req.uri().to_string(),
        &hs,
        req.body(),
    );
    let mut b = openidconnect::http::Response::builder().status(r.status);
    for (k, v) in &r.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(r.body).map_err(std::io::Error::other)
}

pub fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
        .into_bytes()
}

pub const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// A typist for a fixed password of `n` positions: per-position habits fixed by `seed`,
/// jitter per login from `login`. Returns collector events (type, t ms, pos).
pub fn typist(n: u32, hold_ms: f64, gap_ms: f64, seed: u64, login: u64) -> Vec<serde_json::Value> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
    let mut rnd = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    let habits: Vec<(f64, f64)> = (0..n)
        .map(|_| (hold_ms * (0.6 + 0.8 * rnd()), gap_ms * (0.5 + rnd())))
        .collect();
    let mut jit_state = login.wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add(seed);
    let mut jitter = move || {
        jit_state = jit_state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        0.93 + 0.14 * ((jit_state >> 33) as f64 / (1u64 << 31) as f64)
    };
    let mut raw: Vec<(f64, bool, u32)> = Vec::new();
    let mut t = 1000.0;
    for (pos, (hold, gap)) in habits.iter().enumerate() {
        raw.push((t, true, pos as u32));
        raw.push((t + hold * jitter(), false, pos as u32));
        t += gap * jitter();
    }
    raw.sort_by(|a, b| a.0.total_cmp(&b.0));
    raw.into_iter()
        .map(|(t, down, pos)| {
            serde_json::json!({"type": if down {"kd"} else {"ku"}, "t": (t * 10.0).round() / 10.0, "pos": pos})
        })
        .collect()
}

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

pub fn pkce() -> Pkce {
    let verifier = habitus_oidc::provider::random_token();
    let challenge = URL_SAFE_NO_PAD.encode(habitus_oidc::store::sha256(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

/// GET /authorize with these parameters (plus defaults) and returns the reply.
pub fn authorize(issuer: &str, params: &[(&str, &str)], cookie: Option<&str>) -> Reply {
    let mut u = url::Url::parse(&format!("{issuer}/authorize")).expect("url");
    u.query_pairs_mut().extend_pairs(params);
    let c = cookie.map(|c| format!("habitus_oidc_session={c}"));
    let hs: Vec<(&str, &str)> = c
        .as_deref()
        .map(|c| vec![("Cookie", c)])
        .unwrap_or_default();
    http("GET", u.as_str(), &hs, b"")
}

pub fn tx_of(page: &Reply) -> String {
    let text = page.text();
    let start = text
        .find("name=\"tx\" value=\"")
        .unwrap_or_else(|| panic!("no login form: {} {text}", page.status))
        + 17;
    text[start..start + text[start..].find('"').expect("end")].to_string()
}

pub fn collect(issuer: &str, body: &serde_json::Value) -> Reply {
    http(
        "POST",
        &format!("{issuer}/collect"),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

/// The authorization request of a test login: code flow with PKCE S256 for `client`,
/// redirecting to the registered `http://127.0.0.1:9/cb`.
pub fn auth_params<'a>(
    client: &'a str,
    scope: &'a str,
    nonce: &'a str,
    pk: &'a Pkce,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", "http://127.0.0.1:9/cb"),
        ("scope", scope),
        ("state", "st-1"),
        ("nonce", nonce),
        ("code_challenge", pk.challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
}

/// Opens the login page for `params` (which must be shown) and returns its transaction.
pub fn open_login(issuer: &str, params: &[(&str, &str)]) -> String {
    let page = authorize(issuer, params, None);
    assert_eq!(page.status, 200, "{}", page.text());
    tx_of(&page)
}

/// Submits the login form of transaction `tx`.
pub fn post_login(issuer: &str, tx: &str, user: &str, password: &str) -> Reply {
    http(
        "POST",
        &format!("{issuer}/login"),
        &[FORM],
        &form(&[("tx", tx), ("username", user), ("password", password)]),
    )
}

/// The browser's part of one login: authorize, collector batch, password. Returns the final
/// reply (redirect with code, TOTP page, error...).
pub fn browser_login(
    issuer: &str,
    client: &str,
    user: &str,
    extra: &[(&str, &str)],
    events: Vec<serde_json::Value>,
    pk: &Pkce,
    nonce: &str,
) -> Reply {
    let mut params = auth_params(client, "openid profile", nonce, pk);
    params.extend_from_slice(extra);
    let tx = open_login(issuer, &params);
    if !events.is_empty() {
        let r = collect(
            issuer,
            &serde_json::json!({"tx": tx, "seq": 0, "events": events}),
        );
        assert_eq!(r.status, 204, "{}", r.text());
    }
    post_login(issuer, &tx, user, PASSWORD)
}

pub fn token(issuer: &str, client: &str, pairs: &[(&str, &str)]) -> Reply {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client}:{SECRET}"));
    let auth = format!("Basic {basic}");
    http(
        "POST",
        &format!("{issuer}/token"),
        &[FORM, ("Authorization", &auth)],
        &form(pairs),
    )
}

pub fn exchange(issuer: &str, client: &str, code: &str, pk: &Pkce) -> Reply {
    token(
        issuer,
        client,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("code_verifier", &pk.verifier),
        ],
    )
}

pub fn claims_of(jwt: &str) -> serde_json::Value {
    let part = jwt.split('.').nth(1).expect("claims part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("b64")).expect("json")
}

/// alice's TOTP code for `offset_s` seconds from now (a step ahead is still accepted).
pub fn totp_code(offset_s: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let key = habitus_oidc::totp::decode_base32(TOTP).expect("b32");
    format!("{:06}", habitus_oidc::totp::totp_at(&key, now + offset_s))
}

/// Submits the code form of transaction `tx`.
pub fn post_totp(issuer: &str, tx: &str, code: &str) -> Reply {
    http(
        "POST",
        &format!("{issuer}/login/totp"),
        &[FORM],
        &form(&[("tx", tx), ("code", code)]),
    )
}

/// Enrols `user` with `logins` genuine logins (typist seed 1).
pub fn enrol(issuer: &str, user: &str, logins: u64) {
    for i in 0..logins {
        let pk = pkce();
        let r = browser_login(
            issuer,
            "rp",
            user,
            &[],
            typist(12, 95.0, 190.0, 1, i),
            &pk,
            "n",
        );
        assert_eq!(r.status, 303, "{}", r.text());
        let q = r.location_query();
        let t = exchange(issuer, "rp", &q["code"], &pk);
        assert_eq!(t.status, 200, "{}", t.text());
    }
}
