//! Bad input over real HTTP: the right OAuth error or 4xx, nothing stored, no panic.

mod common;

use common::*;

fn base(pk: &Pkce) -> Vec<(&'static str, &str)> {
    vec![
        ("response_type", "code"),
        ("client_id", "rp"),
        ("redirect_uri", "http://127.0.0.1:9/cb"),
        ("scope", "openid"),
        ("state", "s"),
        ("code_challenge", pk.challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
}

fn without<'a>(v: &[(&'static str, &'a str)], key: &str) -> Vec<(&'static str, &'a str)> {
    v.iter().filter(|(k, _)| *k != key).cloned().collect()
}

fn with<'a>(
    v: &[(&'static str, &'a str)],
    key: &'static str,
    value: &'a str,
) -> Vec<(&'static str, &'a str)> {
    let mut v = without(v, key);
    v.push((key, value));
    v
}

#[test]
fn authorize_errors() {
    let p = start("");
    let pk = pkce();
    let b = base(&pk);
    // Unknown client or unregistered redirect URI: an error page, never a redirect.
    for params in [
        with(&b, "client_id", "nobody"),
        with(&b, "redirect_uri", "http://127.0.0.1:9/cb/other"),
        with(&b, "redirect_uri", "http://127.0.0.1:9/CB"),
        without(&b, "client_id"),
    ] {
        let r = authorize(&p.issuer, &params, None);
        assert_eq!(r.status, 400, "{params:?}");
        assert!(r.header("location").is_none());
    }
    // A repeated parameter (which one counts would be a guess) or one that is not UTF-8
    // (it would come back altered): an error page too, whatever the method.
    let query = |extra: &str| {
        let mut u = url::Url::parse(&format!("{}/authorize", p.issuer)).expect("url");
        u.query_pairs_mut().extend_pairs(&b);
        format!("{u}&{extra}")
    };
    for (extra, needle) in [
        ("client_id=rp-ed", "repeated parameter client_id"),
        ("state=b", "repeated parameter state"),
        ("nonce=%FF%FE", "parameter nonce is not UTF-8"),
        ("%C3%28=x", "not UTF-8"),
    ] {
        let r = http("GET", &query(extra), &[], b"");
        assert_eq!(r.status, 400, "{extra}: {}", r.text());
        assert!(r.header("location").is_none(), "{extra}");
        assert!(r.text().contains(needle), "{extra}: {}", r.text());
        let body = query(extra).split_once('?').expect("query").1.to_string();
        let r = http(
            "POST",
            &format!("{}/authorize", p.issuer),
            &[FORM],
            body.as_bytes(),
        );
        assert_eq!(r.status, 400, "POST {extra}: {}", r.text());
        assert!(r.text().contains(needle), "POST {extra}: {}", r.text());
    }
    // Escapes decode as before: `+` is a space, a stray `%` stands for itself.
    let r = http("GET", &query("nonce=a+b%25%zz"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    // Everything else: redirected back with the OAuth error and the state.
    for (params, error) in [
        (without(&b, "code_challenge"), "invalid_request"),
        (
            with(&b, "code_challenge_method", "plain"),
            "invalid_request",
        ),
        (without(&b, "code_challenge_method"), "invalid_request"),
        (with(&b, "code_challenge", "short"), "invalid_request"),
        (
            with(&b, "response_type", "token"),
            "unsupported_response_type",
        ),
        (with(&b, "scope", "profile"), "invalid_scope"),
        (with(&b, "max_age", "-1"), "invalid_request"),
        (with(&b, "claims", "{not json"), "invalid_request"),
        (with(&b, "request", "eyJ..."), "request_not_supported"),
        (with(&b, "prompt", "none"), "login_required"),
    ] {
        let r = authorize(&p.issuer, &params, None);
        assert_eq!(r.status, 303, "{params:?}: {}", r.text());
        let q = r.location_query();
        assert_eq!(q["error"], error, "{params:?}");
        assert_eq!(q["state"], "s");
        assert_eq!(q["iss"], p.issuer);
    }
}

#[test]
fn token_errors() {
    let p = start("");
    let issuer = p.issuer.as_str();
    let pk = pkce();
    let r = browser_login(issuer, "rp", "alice", &[], Vec::new(), &pk, "n");
    let code = r.location_query()["code"].clone();
    let session = r
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .and_then(|c| c.strip_prefix("habitus_oidc_session="))
        .expect("session cookie")
        .to_string();
    let grant = |verifier: &str, redirect: &str| {
        vec![
            ("grant_type".to_string(), "authorization_code".to_string()),
            ("code".to_string(), code.clone()),
            ("redirect_uri".to_string(), redirect.to_string()),
            ("code_verifier".to_string(), verifier.to_string()),
        ]
    };
    let send = |client: &str, pairs: Vec<(String, String)>| {
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        token(issuer, client, &pairs)
    };
    // Unknown client / wrong secret: 401 invalid_client.
    let r = send("nobody", grant(&pk.verifier, "http://127.0.0.1:9/cb"));
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let r = http(
        "POST",
        &format!("{issuer}/token"),
        &[FORM],
        &form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "rp"),
            ("client_secret", "wrong-secret-0123456789"),
        ]),
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(r.header("www-authenticate").is_some());
    // Both methods at once: invalid_request.
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("rp:{SECRET}"),
    );
    let r = http(
        "POST",
        &format!("{issuer}/token"),
        &[FORM, ("Authorization", &format!("Basic {basic}"))],
        &form(&[
            ("grant_type", "authorization_code"),
            ("client_secret", SECRET),
        ]),
    );
    assert_eq!(r.json()["error"], "invalid_request");
    // Not a form: invalid_request.
    let r = http(
        "POST",
        &format!("{issuer}/token"),
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("invalid_request"))
    );
    // Wrong verifier, missing verifier, wrong redirect URI: invalid_grant / invalid_request.
    let other = pkce();
    let r = send("rp", grant(&other.verifier, "http://127.0.0.1:9/cb"));
    assert_eq!(r.json()["error"], "invalid_grant");
    // (the code was consumed by that attempt: PKCE failure burns it, like any redemption)
    let r = send("rp", grant(&pk.verifier, "http://127.0.0.1:9/cb"));
    assert_eq!(
        r.json()["error"],
        "invalid_grant",
        "a code is single use even after a failure"
    );
    // ... but as an unknown code, not a replay: the failed attempt issued nothing, so
    // the SSO session (and every relying party's tokens) lives on.
    assert!(
        r.json()["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("unknown")),
        "{}",
        r.text()
    );
    let silent_pk = pkce();
    let mut silent = auth_params("rp", "openid", "n", &silent_pk);
    silent.push(("prompt", "none"));
    let again = authorize(issuer, &silent, Some(&session));
    assert!(
        again.location_query().contains_key("code"),
        "the session was ended: {:?}",
        again.location_query()
    );

    let pk = pkce();
    let r = browser_login(issuer, "rp", "alice", &[], Vec::new(), &pk, "n");
    let code = r.location_query()["code"].clone();
    let r = token(
        issuer,
        "rp",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
        ],
    );
    assert_eq!(
        r.json()["error"],
        "invalid_request",
        "missing code_verifier"
    );
    let r = token(
        issuer,
        "rp-ed",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("code_verifier", &pk.verifier),
        ],
    );
    assert_eq!(r.json()["error"], "invalid_grant", "code of another client");
    let r = token(
        issuer,
        "rp",
        &[("grant_type", "password"), ("username", "alice")],
    );
    assert_eq!(r.json()["error"], "unsupported_grant_type");
    let r = token(
        issuer,
        "rp",
        &[
            ("grant_type", "authorization_code"),
            ("code", "nonsense"),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("code_verifier", &pk.verifier),
        ],
    );
    assert_eq!(r.json()["error"], "invalid_grant");
    let r = token(
        issuer,
        "rp",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code", &code),
        ],
    );
    assert_eq!(r.json()["error"], "invalid_request", "repeated parameter");

    // Authentication schemes are case-insensitive (RFC 7235 §2.1).
    let pk = pkce();
    let r = browser_login(issuer, "rp", "alice", &[], Vec::new(), &pk, "n");
    let code = r.location_query()["code"].clone();
    let r = http(
        "POST",
        &format!("{issuer}/token"),
        &[FORM, ("Authorization", &format!("BASIC {basic}"))],
        &form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("code_verifier", &pk.verifier),
        ]),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let access = r.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let r = http(
        "GET",
        &format!("{issuer}/userinfo"),
        &[("Authorization", &format!("bEaReR {access}"))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn expired_code() {
    let p = start("[lifetimes]\ncode_s = 1\n");
    let pk = pkce();
    let r = browser_login(&p.issuer, "rp", "alice", &[], Vec::new(), &pk, "n");
    let code = r.location_query()["code"].clone();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = exchange(&p.issuer, "rp", &code, &pk);
    assert_eq!(r.json()["error"], "invalid_grant");
    assert!(r.json()["error_description"]
        .as_str()
        .unwrap_or("")
        .contains("expired"));
}

#[test]
fn collect_errors_store_nothing() {
    let p = start("");
    let issuer = p.issuer.as_str();
    let pk = pkce();
    let page = authorize(issuer, &base(&pk), None);
    let tx = tx_of(&page);
    let good = typist(8, 90.0, 180.0, 1, 1);
    let batch = |seq: u64, events: &serde_json::Value| serde_json::json!({"tx": tx, "seq": seq, "events": events});
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"{not json".to_vec(), 400),
        (serde_json::json!({"tx": tx, "seq": 0}).to_string().into_bytes(), 400),
        (serde_json::json!({"tx": tx, "seq": 0, "events": good, "extra": 1}).to_string().into_bytes(), 400),
        (batch(0, &serde_json::json!([{"type": "kd", "t": 5.0, "pos": 0}, {"type": "ku", "t": 4.0, "pos": 0}])).to_string().into_bytes(), 400),
        (batch(0, &serde_json::json!([{"type": "kd", "t": 5.0, "pos": 0, "key": "a"}])).to_string().into_bytes(), 400),
        (batch(0, &serde_json::json!([{"type": "kd", "t": -1.0, "pos": 0}])).to_string().into_bytes(), 400),
        (batch(0, &serde_json::json!([{"type": "pm", "t": 1.0, "x": 1e30, "y": 0}])).to_string().into_bytes(), 400),
        (batch(0, &serde_json::json!([])).to_string().into_bytes(), 400),
        (batch(1, &serde_json::json!(good)).to_string().into_bytes(), 409),
        (serde_json::json!({"tx": "someone-else", "seq": 0, "events": good}).to_string().into_bytes(), 404),
        (vec![b' '; 70 * 1024], 413),
    ];
    for (body, status) in cases {
        let r = http(
            "POST",
            &format!("{issuer}/collect"),
            &[("Content-Type", "application/json")],
            &body,
        );
        assert_eq!(
            r.status,
            status,
            "{}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
    }
    // Too many events in one (small enough) batch.
    let many: Vec<serde_json::Value> = (0..600)
        .map(|i| serde_json::json!({"type": "pm", "t": i, "x": 1, "y": 1}))
        .collect();
    let r = collect(issuer, &batch(0, &serde_json::json!(many)));
    assert_eq!(r.status, 400);
    // A foreign origin is refused; an allow-listed one gets CORS headers.
    let body = batch(0, &serde_json::json!(good)).to_string();
    let r = http(
        "POST",
        &format!("{issuer}/collect"),
        &[
            ("Content-Type", "application/json"),
            ("Origin", "https://evil.example"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 403);
    let r = http(
        "OPTIONS",
        &format!("{issuer}/collect"),
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    // Nothing was stored: seq 0 is still expected and accepts the whole good batch.
    let r = http(
        "POST",
        &format!("{issuer}/collect"),
        &[
            ("Content-Type", "application/json"),
            ("Origin", "https://app.example"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("x-habitus-accepted"), Some("16"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    // Replaying it: out of sequence.
    let r = http(
        "POST",
        &format!("{issuer}/collect"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 409);
    // Earlier timestamps than what the login already holds: refused.
    let r = collect(
        issuer,
        &batch(1, &serde_json::json!([{"type": "kd", "t": 1.0, "pos": 0}])),
    );
    assert_eq!(r.status, 400);
    // After the login completes, the transaction is gone: its batches are refused
    // (bob: he has no TOTP, so his enrolment login completes without a code).
    let r = http(
        "POST",
        &format!("{issuer}/login"),
        &[FORM],
        &form(&[("tx", &tx), ("username", "bob"), ("password", PASSWORD)]),
    );
    assert_eq!(r.status, 303);
    let r = collect(
        issuer,
        &batch(1, &serde_json::json!(typist(8, 90.0, 180.0, 1, 2))),
    );
    assert_eq!(r.status, 404);
    // A wrong password keeps the login page; a wrong content type is refused.
    let r = http(
        "POST",
        &format!("{issuer}/collect"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"a=b",
    );
    assert_eq!(r.status, 415);
}

#[test]
fn wrong_password_and_unknown_user() {
    let p = start("");
    let pk = pkce();
    let page = authorize(&p.issuer, &base(&pk), None);
    let tx = tx_of(&page);
    for (user, pw) in [("alice", "wrong"), ("mallory", PASSWORD)] {
        let r = http(
            "POST",
            &format!("{}/login", p.issuer),
            &[FORM],
            &form(&[("tx", &tx), ("username", user), ("password", pw)]),
        );
        assert_eq!(r.status, 200);
        assert!(r.text().contains("Wrong user name or password"));
    }
    let r = http(
        "POST",
        &format!("{}/login", p.issuer),
        &[FORM],
        &form(&[
            ("tx", "no-such-tx"),
            ("username", "alice"),
            ("password", PASSWORD),
        ]),
    );
    assert_eq!(r.status, 400);
}

#[test]
fn a_flood_of_login_pages_does_not_lock_out_people_signing_in() {
    let p = start("");
    let issuer = p.issuer.as_str();
    let pk = pkce();
    let params = auth_params("rp", "openid", "n", &pk);
    // bob opens the login page and starts typing.
    let tx = open_login(issuer, &params);
    let r = collect(
        issuer,
        &serde_json::json!({"tx": tx, "seq": 0, "events": typist(12, 95.0, 190.0, 1, 0)}),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    // Someone opens login pages in a loop, well past the table's 10,000 slots.
    let q: std::collections::HashMap<String, String> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for i in 0..10_500 {
        let o = p
            .provider
            .authorize(&q, None, &habitus_oidc::provider::random_token());
        assert!(
            matches!(o, habitus_oidc::provider::LoginOutcome::Page(_)),
            "login page {i} was refused"
        );
    }
    // A new visitor still gets a login page, and bob's login (in use) survived.
    assert_eq!(authorize(issuer, &params, None).status, 200);
    let r = post_login(issuer, &tx, "bob", PASSWORD);
    assert_eq!(r.status, 303, "{}", r.text());

    // A flood that also posts one behaviour event into each login it opens (as cheap as
    // opening the page) does not fill the table either: such logins make room for new
    // ones, oldest first, until they reach a password attempt.
    for i in 0..10_500 {
        let page = match p
            .provider
            .authorize(&q, None, &habitus_oidc::provider::random_token())
        {
            habitus_oidc::provider::LoginOutcome::Page(page) => page,
            _ => panic!("login page {i} was refused"),
        };
        let start = page.find("name=\"tx\" value=\"").expect("tx field") + 17;
        let tx = &page[start..start + page[start..].find('"').expect("tx end")];
        let batch = serde_json::json!({"tx": tx, "seq": 0, "events": [{"type": "pm", "t": 1, "x": 1, "y": 1}]});
        p.provider
            .collect(batch.to_string().as_bytes(), None, None)
            .unwrap_or_else(|e| panic!("event {i} refused: {e:?}"));
    }
    let tx = open_login(issuer, &params);
    let r = post_login(issuer, &tx, "bob", PASSWORD);
    assert_eq!(r.status, 303, "{}", r.text());
}

/// A client that trickles a request's headers (slowloris) or connects and sends nothing
/// loses the connection after `HEADER_READ_TIMEOUT`, and past `MAX_CONNECTIONS` open
/// connections a new one is closed at once, while the issuer keeps answering others
/// once those are gone.
#[test]
fn slow_and_idle_connections_are_closed_and_bounded() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let p = start("");
    let addr = format!("127.0.0.1:{}", p.port);
    let closed_within = |s: &mut TcpStream, limit: Duration| {
        s.set_read_timeout(Some(limit)).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Some(started.elapsed()),
                Ok(_) => continue, // a 408 answer, then the close
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Some(started.elapsed())
                }
                Err(_) => return None, // still open at the limit
            }
        }
    };
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /jwks HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut silent = TcpStream::connect(&addr).unwrap();
    let limit = habitus_oidc::HEADER_READ_TIMEOUT + Duration::from_secs(5);
    assert!(
        closed_within(&mut slow, limit).is_some(),
        "slow headers kept open"
    );
    assert!(
        closed_within(&mut silent, limit).is_some(),
        "silent client kept open"
    );

    // Fill every connection slot (the server shares this process's descriptors: room
    // for both ends is needed).
    let needed = 2 * habitus_oidc::MAX_CONNECTIONS as u64 + 100;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    // Other tests of this binary run at the same time and hold descriptors too: as many
    // as the hard limit allows, not just enough for this test.
    if lim.rlim_max < needed {
        eprintln!(
            "skipping the connection limit: RLIMIT_NOFILE hard limit {} < {needed}",
            lim.rlim_max
        );
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    }
    let held: Vec<TcpStream> = (0..habitus_oidc::MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    // Let the server accept them all before the extra one.
    std::thread::sleep(Duration::from_millis(500));
    let mut extra = TcpStream::connect(&addr).unwrap();
    let _ = extra.write_all(b"GET /jwks HTTP/1.1\r\nHost: x\r\n\r\n");
    let waited = closed_within(&mut extra, Duration::from_secs(3));
    assert!(waited.is_some(), "a connection past the limit was served");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let r = http("GET", &format!("{}/jwks", p.issuer), &[], b"");
    assert_eq!(r.status, 200);
}

/// Form routes take at most 16 KiB (`/collect` batches up to 64 KiB), and a malformed
/// end-session form is a 400, not a page that looks like success.
#[test]
fn form_bodies_are_bounded_and_malformed_ones_refused() {
    let p = start("");
    let issuer = p.issuer.as_str();
    let padding = "x".repeat(20 * 1024);
    let big = form(&[("grant_type", "refresh_token"), ("padding", &padding)]);
    assert!(big.len() > 16 * 1024 && big.len() < 64 * 1024);
    for path in [
        "/token",
        "/login",
        "/login/totp",
        "/authorize",
        "/end_session",
        "/userinfo",
    ] {
        let r = http("POST", &format!("{issuer}{path}"), &[FORM], &big);
        assert_eq!(r.status, 413, "{path}: {}", r.text());
    }
    // The same size is still a batch /collect reads (and refuses for its content).
    let batch =
        format!("{{\"tx\": \"nope\", \"seq\": 0, \"events\": [], \"padding\": \"{padding}\"}}");
    let r = http(
        "POST",
        &format!("{issuer}/collect"),
        &[("Content-Type", "application/json")],
        batch.as_bytes(),
    );
    assert_ne!(r.status, 413, "{}", r.text());
    let r = http(
        "POST",
        &format!("{issuer}/end_session"),
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

/// The login forms are read like every other form: a repeated or missing field is a
/// 400 page naming the problem (it was axum's bare 422 text).
#[test]
fn login_forms_with_repeated_or_missing_fields_are_refused_with_a_page() {
    let p = start("");
    let issuer = p.issuer.as_str();
    let pk = pkce();
    let tx = open_login(issuer, &auth_params("rp", "openid", "n", &pk));
    for (path, body, needle) in [
        (
            "/login",
            form(&[
                ("tx", &tx),
                ("username", "bob"),
                ("username", "alice"),
                ("password", PASSWORD),
            ]),
            "repeated parameter username",
        ),
        (
            "/login",
            form(&[("tx", &tx), ("username", "bob")]),
            "missing field `password`",
        ),
        ("/login/totp", form(&[("tx", &tx)]), "missing field `code`"),
    ] {
        let r = http("POST", &format!("{issuer}{path}"), &[FORM], &body);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.text().contains(needle), "{path}: {}", r.text());
    }
    // Nothing was counted: the real post still signs in.
    let r = post_login(issuer, &tx, "bob", PASSWORD);
    assert_eq!(r.status, 303, "{}", r.text());
}
