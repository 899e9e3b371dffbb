//! Drift signals over real HTTP: a test receiver (axum on 127.0.0.1:0) registered as a
//! client's back-channel logout URI and as an SSF stream's push endpoint. Ending a session,
//! and behaviour drifting in a live session, must deliver Logout Tokens and CAEP SETs whose
//! signatures verify against the provider's JWKS; receivers that are down or slow must not
//! hold up the end-session request.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

const RECEIVER_TOKEN: &str = "siem-bearer-0123456789abcdef0123456789";
const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const ASSURANCE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/assurance-level-change";
const BCL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

#[derive(Clone, Debug)]
struct Received {
    path: String,
    content_type: String,
    authorization: String,
    body: String,
}

type Log = Arc<Mutex<Vec<Received>>>;

fn record(log: &Log, path: &str, headers: &HeaderMap, body: &Bytes) {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    log.lock().expect("log").push(Received {
        path: path.into(),
        content_type: h("content-type"),
        authorization: h("authorization"),
        body: String::from_utf8_lossy(body).into_owned(),
    });
}

/// The relying party's / receiver's routes: `/bcl` answers 200, `/ssf` 202, `/slow` after
/// 30 s, `/flaky` 503 the first time and 200 afterwards, `/gone` always 410.
fn receiver_app(log: Log) -> axum::Router {
    axum::Router::new()
        .route(
            "/bcl",
            post(|State(l): State<Log>, h: HeaderMap, b: Bytes| async move {
                record(&l, "/bcl", &h, &b);
                StatusCode::OK
            }),
        )
        .route(
            "/ssf",
            post(|State(l): State<Log>, h: HeaderMap, b: Bytes| async move {
                record(&l, "/ssf", &h, &b);
                StatusCode::ACCEPTED
            }),
        )
        .route(
            "/flaky",
            post(|State(l): State<Log>, h: HeaderMap, b: Bytes| async move {
                record(&l, "/flaky", &h, &b);
                let seen = l
                    .lock()
                    .expect("log")
                    .iter()
                    .filter(|r| r.path == "/flaky")
                    .count();
                if seen == 1 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }),
        )
        .route(
            "/gone",
            post(|State(l): State<Log>, h: HeaderMap, b: Bytes| async move {
                record(&l, "/gone", &h, &b);
                StatusCode::GONE
            }),
        )
        .route(
            "/slow",
            post(|State(l): State<Log>, h: HeaderMap, b: Bytes| async move {
                record(&l, "/slow", &h, &b);
                tokio::time::sleep(Duration::from_secs(30)).await;
                StatusCode::OK
            }),
        )
        .with_state(log)
}

/// Runs `serve` on a thread with its own runtime.
fn spawn_server<F: std::future::Future<Output = ()> + Send + 'static>(serve: F) {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(serve);
    });
}

/// The receiver over plain HTTP on a loopback port.
fn receiver() -> (u16, Log) {
    receiver_on(std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
}

/// The receiver over plain HTTP on `listener`.
fn receiver_on(listener: std::net::TcpListener) -> (u16, Log) {
    let log: Log = Arc::default();
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let app = receiver_app(log.clone());
    spawn_server(async move {
        let l = tokio::net::TcpListener::from_std(listener).expect("listener");
        axum::serve(l, app).await.expect("serve");
    });
    (port, log)
}

/// A new CA and a certificate it signed for `127.0.0.1`: (the CA's PEM, the certificate,
/// its key).
fn test_pki(
    ca_name: &str,
) -> (
    String,
    tokio_rustls::rustls::pki_types::CertificateDer<'static>,
    tokio_rustls::rustls::pki_types::PrivateKeyDer<'static>,
) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("certificate");
    let key_der = tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .expect("key DER");
    (ca_cert.pem(), leaf.der().clone(), key_der)
}

/// A TCP listener that completes a TLS handshake before handing the connection to axum;
/// failed handshakes are dropped (and counted).
struct TlsListener {
    inner: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    failed_handshakes: Arc<Mutex<u32>>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.inner.accept().await else {
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, addr),
                Err(_) => *self.failed_handshakes.lock().expect("count") += 1,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The receiver over HTTPS with this certificate: (port, log, failed handshakes).
fn tls_receiver(
    cert: tokio_rustls::rustls::pki_types::CertificateDer<'static>,
    key: tokio_rustls::rustls::pki_types::PrivateKeyDer<'static>,
) -> (u16, Log, Arc<Mutex<u32>>) {
    use tokio_rustls::rustls;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("server certificate");
    let log: Log = Arc::default();
    let failed = Arc::new(Mutex::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let app = receiver_app(log.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let failed_handshakes = failed.clone();
    spawn_server(async move {
        let inner = tokio::net::TcpListener::from_std(listener).expect("listener");
        let l = TlsListener {
            inner,
            acceptor,
            failed_handshakes,
        };
        axum::serve(l, app).await.expect("serve");
    });
    (port, log, failed)
}

/// A loopback port nobody listens on.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Binds a port [`dead_port`] gave out earlier. Meanwhile a parallel test's outgoing
/// connection may hold it as its (ephemeral) source port for a moment: retry briefly.
fn bind_again(port: u16) -> std::net::TcpListener {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => return l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("bind 127.0.0.1:{port}: {e}"),
        }
    }
}

fn config(rport: u16, down: u16) -> String {
    config_revoking(rport, down, true)
}

fn config_revoking(rport: u16, down: u16, revoke_on_drift: bool) -> String {
    format!(
        r#"
[signals]
timeout_ms = 1500
retries = 0
revoke_on_drift = {revoke_on_drift}
[[signals.ssf_receivers]]
id = "siem"
token = "{RECEIVER_TOKEN}"
audience = "https://siem.example"
event_subject = "iss_sub"

[[clients]]
id = "rp-bc"
secret = "{SECRET}"
redirect_uris = ["http://127.0.0.1:9/cb"]
backchannel_logout_uri = "http://127.0.0.1:{rport}/bcl"
backchannel_logout_session_required = true

[[clients]]
id = "rp-slow"
secret = "{SECRET}"
redirect_uris = ["http://127.0.0.1:9/cb"]
backchannel_logout_uri = "http://127.0.0.1:{rport}/slow"
id_token_signed_response_alg = "EdDSA"

[[clients]]
id = "rp-down"
secret = "{SECRET}"
redirect_uris = ["http://127.0.0.1:9/cb"]
backchannel_logout_uri = "http://127.0.0.1:{down}/bcl"
{PASSWORD_ONLY_ENROLMENT}"#
    )
}

fn wait_for(log: &Log, what: &str, pred: impl Fn(&[Received]) -> bool) -> Vec<Received> {
    let start = Instant::now();
    loop {
        let got = log.lock().expect("log").clone();
        if pred(&got) {
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{what}: not received; got {got:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Verifies a compact JWS against the provider's published JWKS (ring) and returns
/// (header, claims).
fn verify_jws(issuer: &str, token: &str) -> (Value, Value) {
    let jwks = http("GET", &format!("{issuer}/jwks"), &[], b"").json();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "compact JWS: {token}");
    let dec = |s: &str| URL_SAFE_NO_PAD.decode(s).expect("base64url");
    let header: Value = serde_json::from_slice(&dec(parts[0])).expect("header");
    let claims: Value = serde_json::from_slice(&dec(parts[1])).expect("claims");
    let key = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap_or_else(|| panic!("kid {} not in the JWKS", header["kid"]));
    let message = format!("{}.{}", parts[0], parts[1]);
    let sig = dec(parts[2]);
    let ok = match header["alg"].as_str() {
        Some("EdDSA") => {
            let x = dec(key["x"].as_str().expect("x"));
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, x)
                .verify(message.as_bytes(), &sig)
                .is_ok()
        }
        Some("RS256") => {
            let n = dec(key["n"].as_str().expect("n"));
            let e = dec(key["e"].as_str().expect("e"));
            ring::signature::RsaPublicKeyComponents { n, e }
                .verify(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    message.as_bytes(),
                    &sig,
                )
                .is_ok()
        }
        other => panic!("unexpected alg {other:?}"),
    };
    assert!(ok, "signature verifies against the JWKS");
    (header, claims)
}

fn logout_token_of(r: &Received) -> String {
    assert_eq!(r.content_type, "application/x-www-form-urlencoded");
    url::form_urlencoded::parse(r.body.as_bytes())
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned())
        .expect("logout_token parameter")
}

fn check_logout_token(issuer: &str, r: &Received, client: &str, sid: &str) {
    let (h, c) = verify_jws(issuer, &logout_token_of(r));
    assert_eq!(h["typ"], "logout+jwt");
    assert_eq!(c["iss"], issuer);
    assert_eq!(c["aud"], client);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["sid"], sid);
    assert_eq!(c["events"], json!({BCL_EVENT: {}}));
    assert!(c.get("nonce").is_none(), "a logout token has no nonce");
    assert!(c["jti"].as_str().is_some_and(|j| j.len() >= 20));
    let (iat, exp) = (
        c["iat"].as_i64().expect("iat"),
        c["exp"].as_i64().expect("exp"),
    );
    assert!(exp > iat && exp - iat <= 300, "short-lived: {c}");
}

/// The CAEP SETs received, verified: (event URI, event payload).
fn sets(issuer: &str, got: &[Received]) -> Vec<(String, Value)> {
    got.iter()
        .filter(|r| r.path == "/ssf")
        .map(|r| {
            assert_eq!(r.content_type, "application/secevent+jwt");
            assert_eq!(r.authorization, "Bearer push-secret");
            let (h, c) = verify_jws(issuer, &r.body);
            assert_eq!(h["typ"], "secevent+jwt");
            assert_eq!(c["iss"], issuer);
            assert_eq!(c["aud"], "https://siem.example");
            assert!(c["iat"].is_i64() && c["jti"].is_string());
            assert!(c.get("nonce").is_none() && c.get("sub").is_none());
            assert_eq!(
                c["sub_id"],
                json!({"format": "iss_sub", "iss": issuer, "sub": "alice"})
            );
            let events = c["events"].as_object().expect("events");
            assert_eq!(events.len(), 1, "one event per SET");
            let (k, v) = events.iter().next().expect("event");
            (k.clone(), v.clone())
        })
        .collect()
}

fn stream_request(issuer: &str, method: &str, bearer: Option<&str>, body: &Value) -> Reply {
    let auth = bearer.map(|b| format!("Bearer {b}"));
    let mut hs = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        hs.push(("Authorization", a.as_str()));
    }
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    http(method, &format!("{issuer}/ssf/stream"), &hs, &body)
}

fn create_stream(issuer: &str, rport: u16) -> Value {
    create_stream_at(issuer, &format!("http://127.0.0.1:{rport}/ssf"))
}

fn create_stream_at(issuer: &str, endpoint_url: &str) -> Value {
    let body = json!({
        "delivery": {
            "method": "urn:ietf:rfc:8935",
            "endpoint_url": endpoint_url,
            "authorization_header": "Bearer push-secret",
        },
        "events_requested": [SESSION_REVOKED, ASSURANCE],
        "description": "test receiver",
    });
    let r = stream_request(issuer, "POST", Some(RECEIVER_TOKEN), &body);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

fn cookie_of(r: &Reply) -> String {
    let c = r.header("set-cookie").expect("session cookie");
    c.split(';')
        .next()
        .and_then(|kv| kv.strip_prefix("habitus_oidc_session="))
        .expect("cookie value")
        .to_string()
}

fn sso_code(issuer: &str, client: &str, cookie: &str, pk: &Pkce) -> String {
    let r = authorize(
        issuer,
        &[
            ("response_type", "code"),
            ("client_id", client),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("scope", "openid"),
            ("code_challenge", &pk.challenge),
            ("code_challenge_method", "S256"),
        ],
        Some(cookie),
    );
    assert_eq!(r.status, 303, "SSO reuse: {}", r.text());
    r.location_query()["code"].clone()
}

#[test]
fn discovery_and_stream_configuration() {
    let (rport, _log) = receiver();
    let p = start(&config(rport, dead_port()));
    let issuer = p.issuer.as_str();
    let d = http(
        "GET",
        &format!("{issuer}/.well-known/openid-configuration"),
        &[],
        b"",
    )
    .json();
    assert_eq!(d["backchannel_logout_supported"], true);
    assert_eq!(d["backchannel_logout_session_supported"], true);
    let s = http(
        "GET",
        &format!("{issuer}/.well-known/ssf-configuration"),
        &[],
        b"",
    )
    .json();
    assert_eq!(s["issuer"], issuer);
    assert_eq!(s["jwks_uri"], format!("{issuer}/jwks"));
    assert_eq!(
        s["delivery_methods_supported"],
        json!(["urn:ietf:rfc:8935"])
    );
    assert_eq!(s["configuration_endpoint"], format!("{issuer}/ssf/stream"));
    assert_eq!(s["spec_version"], "1_0");

    let good = json!({"delivery": {"method": "urn:ietf:rfc:8935",
        "endpoint_url": format!("http://127.0.0.1:{rport}/ssf")}});
    // Without, or with a wrong, bearer token: 401, nothing created.
    for bearer in [None, Some("wrong-token-wrong-token-wrong-token-x")] {
        let r = stream_request(issuer, "POST", bearer, &good);
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert_eq!(
            stream_request(issuer, "GET", bearer, &Value::Null).status,
            401
        );
        assert_eq!(
            stream_request(issuer, "DELETE", bearer, &Value::Null).status,
            401
        );
    }
    // Malformed configurations: 400 with a reason.
    for (body, needle) in [
        (json!("not an object"), "malformed"),
        (json!({"events_requested": []}), "delivery"),
        (
            json!({"delivery": {"method": "urn:ietf:rfc:8936", "endpoint_url": "http://127.0.0.1:1/x"}}),
            "push delivery",
        ),
        (
            json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "ftp://siem.example/x"}}),
            "https://",
        ),
        (
            json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "not a url"}}),
            "endpoint_url",
        ),
        (
            json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "http://127.0.0.1:1/x"}, "stream_id": "mine"}),
            "stream_id",
        ),
    ] {
        let r = stream_request(issuer, "POST", Some(RECEIVER_TOKEN), &body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let e = r.json()["error"].as_str().expect("error").to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
    let raw = http(
        "POST",
        &format!("{issuer}/ssf/stream"),
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {RECEIVER_TOKEN}")),
        ],
        b"{\"delivery\":",
    );
    assert_eq!(raw.status, 400);
    assert_eq!(
        stream_request(issuer, "GET", Some(RECEIVER_TOKEN), &Value::Null).status,
        404,
        "nothing was created"
    );

    // Create, read, refuse a second, delete.
    let created = create_stream(issuer, rport);
    assert_eq!(created["iss"], issuer);
    assert_eq!(created["aud"], "https://siem.example");
    assert_eq!(
        created["events_delivered"],
        json!([SESSION_REVOKED, ASSURANCE])
    );
    assert!(created["delivery"].get("authorization_header").is_none());
    let id = created["stream_id"].as_str().expect("stream_id");
    let read = stream_request(issuer, "GET", Some(RECEIVER_TOKEN), &Value::Null);
    assert_eq!(read.status, 200);
    assert_eq!(read.json(), created);
    let again = stream_request(issuer, "POST", Some(RECEIVER_TOKEN), &good);
    assert_eq!(again.status, 409);
    let other = http(
        "GET",
        &format!("{issuer}/ssf/stream?stream_id=other"),
        &[("Authorization", &format!("Bearer {RECEIVER_TOKEN}"))],
        b"",
    );
    assert_eq!(other.status, 404);
    let del = http(
        "DELETE",
        &format!("{issuer}/ssf/stream?stream_id={id}"),
        &[("Authorization", &format!("Bearer {RECEIVER_TOKEN}"))],
        b"",
    );
    assert_eq!(del.status, 204);
    assert_eq!(
        stream_request(issuer, "GET", Some(RECEIVER_TOKEN), &Value::Null).status,
        404
    );
}

#[test]
fn end_session_sends_logout_tokens_and_session_revoked() {
    let (rport, log) = receiver();
    let p = start(&config(rport, dead_port()));
    let issuer = p.issuer.as_str();
    create_stream(issuer, rport);

    // One SSO session, tokens for four clients: rp-bc (receiver up), rp-slow (answers after
    // 30 s), rp-down (nothing listens), rp (no back-channel URI).
    let pk = pkce();
    let r = browser_login(issuer, "rp-bc", "alice", &[], Vec::new(), &pk, "nonce-bc");
    assert_eq!(r.status, 303, "{}", r.text());
    let cookie = cookie_of(&r);
    let t = exchange(issuer, "rp-bc", &r.location_query()["code"], &pk);
    assert_eq!(t.status, 200, "{}", t.text());
    let id_token = t.json()["id_token"].as_str().expect("id_token").to_string();
    let sid = claims_of(&id_token)["sid"]
        .as_str()
        .expect("sid")
        .to_string();
    for client in ["rp-slow", "rp-down", "rp"] {
        let pk = pkce();
        let code = sso_code(issuer, client, &cookie, &pk);
        assert_eq!(exchange(issuer, client, &code, &pk).status, 200);
    }
    assert!(log.lock().expect("log").is_empty(), "nothing sent yet");

    // End the session: the answer does not wait for any receiver.
    let started = Instant::now();
    let out = http(
        "GET",
        &format!("{issuer}/end_session?id_token_hint={id_token}"),
        &[],
        b"",
    );
    let took = started.elapsed();
    assert_eq!(out.status, 200);
    assert!(
        took < Duration::from_millis(1000),
        "end-session took {took:?}"
    );

    let got = wait_for(&log, "logout token and SET", |g| {
        g.iter().any(|r| r.path == "/bcl")
            && g.iter().any(|r| r.path == "/ssf")
            && g.iter().any(|r| r.path == "/slow")
    });
    let bcl: Vec<&Received> = got.iter().filter(|r| r.path == "/bcl").collect();
    assert_eq!(bcl.len(), 1, "only rp-bc at /bcl: {got:#?}");
    check_logout_token(issuer, bcl[0], "rp-bc", &sid);
    // rp-slow's token (EdDSA, its ID token algorithm) arrived too, before it stalled.
    let slow = got.iter().find(|r| r.path == "/slow").expect("slow");
    check_logout_token(issuer, slow, "rp-slow", &sid);
    let (h, _) = verify_jws(issuer, &logout_token_of(slow));
    assert_eq!(h["alg"], "EdDSA");
    let s = sets(issuer, &got);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].0, SESSION_REVOKED);
    assert_eq!(s[0].1["initiating_entity"], "user");
    assert!(s[0].1["event_timestamp"].is_i64());
    // `event_subject = "iss_sub"`: the user is named inside the event too (Okta's shape).
    assert_eq!(
        s[0].1["subject"],
        json!({"user": {"format": "iss_sub", "iss": issuer, "sub": "alice"}})
    );

    // The provider stays responsive while the slow receiver holds its connection, and a
    // second end-session (session already gone) sends nothing more.
    let started = Instant::now();
    let again = http(
        "GET",
        &format!("{issuer}/end_session?id_token_hint={id_token}"),
        &[],
        b"",
    );
    assert_eq!(again.status, 200);
    assert!(started.elapsed() < Duration::from_millis(1000));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(log.lock().expect("log").len(), got.len());
}

/// An impostor's rhythm at login, stepped up with TOTP: a loa:2 session of alice for
/// `rp-bc`. Returns (cookie, sid, access token).
fn stepped_up_session(issuer: &str) -> (String, String, String) {
    let pk = pkce();
    let r = browser_login(
        issuer,
        "rp-bc",
        "alice",
        &[("acr_values", "urn:habitus:loa:2")],
        typist(12, 150.0, 330.0, 77, 1),
        &pk,
        "n",
    );
    assert_eq!(r.status, 200, "TOTP page expected: {}", r.text());
    let tx = tx_of(&r);
    let code = totp_code(0);
    let ok = post_totp(issuer, &tx, &code);
    assert_eq!(ok.status, 303, "{}", ok.text());
    let cookie = cookie_of(&ok);
    let t = exchange(issuer, "rp-bc", &ok.location_query()["code"], &pk).json();
    let id_claims = claims_of(t["id_token"].as_str().expect("id_token"));
    assert_eq!(id_claims["acr"], "urn:habitus:loa:2");
    let sid = id_claims["sid"].as_str().expect("sid").to_string();
    let at = t["access_token"].as_str().expect("at").to_string();

    (cookie, sid, at)
}

/// POSTs one live batch (an impostor's password entry) for the session `cookie`.
fn live_batch(issuer: &str, seq: u64, login: u64, cookie: Option<&str>) -> Reply {
    let c = cookie.map(|c| format!("habitus_oidc_session={c}"));
    let mut hs = vec![("Content-Type", "application/json")];
    if let Some(c) = &c {
        hs.push(("Cookie", c.as_str()));
    }
    let body = json!({"seq": seq, "events": typist(12, 150.0, 330.0, 77, login)});
    http(
        "POST",
        &format!("{issuer}/collect"),
        &hs,
        body.to_string().as_bytes(),
    )
}

#[test]
fn behaviour_drift_in_a_live_session_revokes_it() {
    let (rport, log) = receiver();
    let p = start(&config(rport, dead_port()));
    let issuer = p.issuer.as_str();
    enrol(issuer, "alice", 5);
    create_stream(issuer, rport);

    let (cookie, sid, at) = stepped_up_session(issuer);
    let live = |seq: u64, login: u64, cookie: Option<&str>| live_batch(issuer, seq, login, cookie);

    assert_eq!(live(0, 10, None).status, 401);
    assert_eq!(live(0, 10, Some("not-a-session")).status, 404);
    assert_eq!(live(5, 10, Some(&cookie)).status, 409, "seq starts at 0");

    // The impostor keeps typing: trust falls, the level drops, then drift ends the session.
    let mut revoked_at = None;
    for seq in 0..12u64 {
        let r = live(seq, 20 + seq, Some(&cookie));
        if r.status == 404 {
            revoked_at = Some(seq);
            break;
        }
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let revoked_at = revoked_at.expect("drift revoked the session");
    assert!(
        revoked_at >= 2,
        "a single window does not revoke: {revoked_at}"
    );

    let got = wait_for(&log, "logout token and session-revoked", |g| {
        g.iter().any(|r| r.path == "/bcl")
            && g.iter().any(|r| {
                r.path == "/ssf" && r.body.len() > 10 && {
                    let c = claims_of(&r.body);
                    c["events"].get(SESSION_REVOKED).is_some()
                }
            })
    });
    let bcl: Vec<&Received> = got.iter().filter(|r| r.path == "/bcl").collect();
    assert_eq!(bcl.len(), 1);
    check_logout_token(issuer, bcl[0], "rp-bc", &sid);
    let s = sets(issuer, &got);
    let change = s
        .iter()
        .find(|(e, _)| e == ASSURANCE)
        .unwrap_or_else(|| panic!("assurance-level-change: {s:?}"));
    assert_eq!(change.1["previous_level"], "urn:habitus:loa:2");
    assert_eq!(change.1["current_level"], "urn:habitus:loa:1");
    assert_eq!(change.1["change_direction"], "decrease");
    assert!(change.1["namespace"].is_string() && change.1["event_timestamp"].is_i64());
    let revoked = s
        .iter()
        .find(|(e, _)| e == SESSION_REVOKED)
        .expect("session-revoked");
    assert_eq!(revoked.1["initiating_entity"], "policy");

    // The session's tokens stop working.
    let ui = http(
        "GET",
        &format!("{issuer}/userinfo"),
        &[("Authorization", &format!("Bearer {at}"))],
        b"",
    );
    assert_eq!(ui.status, 401);
}

#[test]
fn behaviour_drift_without_revocation_lowers_the_level_and_keeps_the_session() {
    let (rport, log) = receiver();
    // The default: revoke_on_drift = false.
    assert!(!habitus_oidc::config::SignalsConfig::default().revoke_on_drift);
    let p = start(&config_revoking(rport, dead_port(), false));
    let issuer = p.issuer.as_str();
    enrol(issuer, "alice", 5);
    create_stream(issuer, rport);
    let (cookie, _sid, at) = stepped_up_session(issuer);
    let behaviour = || {
        let ui = http(
            "GET",
            &format!("{issuer}/userinfo"),
            &[("Authorization", &format!("Bearer {at}"))],
            b"",
        );
        assert_eq!(ui.status, 200, "{}", ui.text());
        ui.json()
    };
    let login_trust = behaviour()["urn:habitus:behavior"]["trust"]
        .as_f64()
        .expect("the login was scored");

    // Live trust continues from the login's, not from 100: after one window of alice's
    // own rhythm it is at most the login's plus max_reward (1).
    let genuine = json!({"seq": 0, "events": typist(12, 95.0, 190.0, 1, 500)});
    let r = http(
        "POST",
        &format!("{issuer}/collect"),
        &[
            ("Content-Type", "application/json"),
            ("Cookie", &format!("habitus_oidc_session={cookie}")),
        ],
        genuine.to_string().as_bytes(),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let first = behaviour()["urn:habitus:behavior"]["trust"]
        .as_f64()
        .expect("scored");
    eprintln!("login trust {login_trust}, after one genuine live window {first}");
    assert!(
        login_trust < 99.0,
        "the impostor's login lost trust: {login_trust}"
    );
    assert!(first <= login_trust + 1.0, "{login_trust} → {first}");

    // The impostor keeps typing: every batch is taken, the session stays.
    for seq in 1..13u64 {
        let r = live_batch(issuer, seq, 20 + seq, Some(&cookie));
        assert_eq!(r.status, 204, "batch {seq}: {}", r.text());
    }
    let claims = behaviour();
    assert_eq!(claims["urn:habitus:behavior"]["state"], "drift", "{claims}");

    // Relying parties heard that the level went down to loa:0, and nothing was revoked.
    let got = wait_for(&log, "assurance-level-change to loa:0", |g| {
        sets(issuer, g)
            .iter()
            .any(|(e, c)| e == ASSURANCE && c["current_level"] == "urn:habitus:loa:0")
    });
    std::thread::sleep(Duration::from_millis(300));
    let got_now = log.lock().expect("log").clone();
    assert!(got_now.len() >= got.len());
    assert!(!got_now.iter().any(|r| r.path == "/bcl"), "no logout token");
    assert!(
        !sets(issuer, &got_now)
            .iter()
            .any(|(e, _)| e == SESSION_REVOKED),
        "no session-revoked"
    );
}

/// One SSO session of alice with tokens for `first` and then (SSO) `second`, ended at the
/// end-session endpoint. Returns its `sid`.
fn session_of_two_clients_ended(issuer: &str, first: &str, second: &str) -> String {
    let pk = pkce();
    let r = browser_login(issuer, first, "alice", &[], Vec::new(), &pk, "n");
    assert_eq!(r.status, 303, "{}", r.text());
    let cookie = cookie_of(&r);
    let t = exchange(issuer, first, &r.location_query()["code"], &pk).json();
    let id_token = t["id_token"].as_str().expect("id_token").to_string();
    let sid = claims_of(&id_token)["sid"]
        .as_str()
        .expect("sid")
        .to_string();
    let pk = pkce();
    let code = sso_code(issuer, second, &cookie, &pk);
    assert_eq!(exchange(issuer, second, &code, &pk).status, 200);
    let out = http(
        "GET",
        &format!("{issuer}/end_session?id_token_hint={id_token}"),
        &[],
        b"",
    );
    assert_eq!(out.status, 200);
    sid
}

#[test]
fn https_deliveries_verify_the_receivers_certificate() {
    let (ca_pem, cert, key) = test_pki("habitus test CA");
    // A receiver whose certificate chains to a CA the provider was not told to trust.
    let (_, rogue_cert, rogue_key) = test_pki("someone else's CA");
    let (port, log, _) = tls_receiver(cert, key);
    let (rogue_port, rogue_log, rogue_failed) = tls_receiver(rogue_cert, rogue_key);
    let pki = tempfile::tempdir().expect("tempdir");
    let ca_file = pki.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).expect("CA file");
    let extra = format!(
        r#"
[signals]
timeout_ms = 3000
ca_file = {ca:?}
[[signals.ssf_receivers]]
id = "siem"
token = "{RECEIVER_TOKEN}"
audience = "https://siem.example"

[[clients]]
id = "rp-tls"
secret = "{SECRET}"
redirect_uris = ["http://127.0.0.1:9/cb"]
backchannel_logout_uri = "https://127.0.0.1:{port}/bcl"

[[clients]]
id = "rp-rogue"
secret = "{SECRET}"
redirect_uris = ["http://127.0.0.1:9/cb"]
backchannel_logout_uri = "https://127.0.0.1:{rogue_port}/bcl"
"#,
        ca = ca_file.display().to_string()
    );
    let p = start(&extra);
    let issuer = p.issuer.as_str();
    create_stream_at(issuer, &format!("https://127.0.0.1:{port}/ssf"));

    // One SSO session with tokens for both clients, then end it.
    let sid = session_of_two_clients_ended(issuer, "rp-tls", "rp-rogue");

    // Over TLS to the trusted receiver: the Logout Token and the SET, both verified.
    let got = wait_for(&log, "logout token and SET over https", |g| {
        g.iter().any(|r| r.path == "/bcl") && g.iter().any(|r| r.path == "/ssf")
    });
    let bcl: Vec<&Received> = got.iter().filter(|r| r.path == "/bcl").collect();
    assert_eq!(bcl.len(), 1, "{got:#?}");
    check_logout_token(issuer, bcl[0], "rp-tls", &sid);
    let s = sets(issuer, &got);
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].0, SESSION_REVOKED);
    assert!(
        s[0].1.get("subject").is_none(),
        "no event_subject: sub_id only"
    );

    // The untrusted receiver saw a TLS handshake that the provider abandoned, and no
    // request: the Logout Token was not sent to a server it could not authenticate.
    let start = Instant::now();
    while *rogue_failed.lock().expect("count") == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "no handshake");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(rogue_log.lock().expect("log").is_empty());
}

#[test]
fn https_back_channel_logout_without_a_ca_file_is_a_start_up_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_text(
        "http://127.0.0.1:1",
        dir.path(),
        &format!(
            r#"[signals]
ca_file = "no-such-ca.pem"
[[clients]]
id = "rp-tls"
secret = "{SECRET}"
redirect_uris = ["http://127.0.0.1:9/cb"]
backchannel_logout_uri = "https://rp.example/bcl"
"#
        ),
    );
    let config = habitus_oidc::Config::parse(&text).expect("the file itself is valid");
    let e = habitus_oidc::build(config)
        .err()
        .expect("no CA file")
        .to_string();
    assert!(
        e.contains("rp-tls") && e.contains("signals.ca_file") && e.contains("no-such-ca.pem"),
        "{e}"
    );
}

#[test]
fn temporary_failures_are_retried_and_final_answers_are_not() {
    let (rport, log) = receiver();
    let extra = format!(
        r#"
[signals]
timeout_ms = 1500
retries = 2
retry_delay_ms = 100

[[clients]]
id = "rp-flaky"
secret = "{SECRET}"
redirect_uris = ["http://127.0.0.1:9/cb"]
backchannel_logout_uri = "http://127.0.0.1:{rport}/flaky"

[[clients]]
id = "rp-gone"
secret = "{SECRET}"
redirect_uris = ["http://127.0.0.1:9/cb"]
backchannel_logout_uri = "http://127.0.0.1:{rport}/gone"
"#
    );
    let p = start(&extra);
    let issuer = p.issuer.as_str();
    let sid = session_of_two_clients_ended(issuer, "rp-flaky", "rp-gone");

    // 503 then, 100 ms later, the same Logout Token again, accepted.
    let got = wait_for(&log, "the retried logout token", |g| {
        g.iter().filter(|r| r.path == "/flaky").count() >= 2
    });
    let flaky: Vec<&Received> = got.iter().filter(|r| r.path == "/flaky").collect();
    assert_eq!(flaky[0].body, flaky[1].body, "the same token is re-sent");
    check_logout_token(issuer, flaky[1], "rp-flaky", &sid);
    // 410 is final: one attempt, even after the retry delays (100 and 400 ms) have passed.
    std::thread::sleep(Duration::from_millis(1200));
    let got = log.lock().expect("log").clone();
    assert_eq!(
        got.iter().filter(|r| r.path == "/gone").count(),
        1,
        "{got:#?}"
    );
    assert_eq!(
        got.iter().filter(|r| r.path == "/flaky").count(),
        2,
        "{got:#?}"
    );
}

#[test]
fn deliveries_pending_when_the_provider_stops_are_sent_after_the_next_start() {
    // The receiver is down, and the retry would come a minute later: the Logout Token is
    // still pending when this first run is abandoned (as if the process had stopped).
    let down = dead_port();
    let extra = format!(
        r#"
[signals]
timeout_ms = 1500
retries = 1
retry_delay_ms = 60000

[[clients]]
id = "rp-later"
secret = "{SECRET}"
redirect_uris = ["http://127.0.0.1:9/cb"]
backchannel_logout_uri = "http://127.0.0.1:{down}/bcl"
"#
    );
    let first = start(&extra);
    let issuer = first.issuer.clone();
    let sid = session_of_two_clients_ended(&issuer, "rp-later", "rp");
    assert_eq!(first.provider.pending_deliveries().expect("outbox"), 1);

    // The receiver comes up; a second run on the same state directory sends the token.
    let (_, log) = receiver_on(bind_again(down));
    let config = habitus_oidc::Config::parse(&config_text(&issuer, first._dir.path(), &extra))
        .expect("config");
    let second = Arc::new(habitus_oidc::build(config).expect("second run"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    habitus_oidc::spawn(listener, second.clone()).expect("spawn");
    let got = wait_for(&log, "the logout token left pending", |g| !g.is_empty());
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].path, "/bcl");
    check_logout_token(&issuer, &got[0], "rp-later", &sid);
    // Delivered, so no longer pending.
    let deadline = Instant::now() + Duration::from_secs(10);
    while second.pending_deliveries().expect("outbox") != 0 {
        assert!(
            Instant::now() < deadline,
            "the delivered token stays in the outbox"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn collect_token_feeds_the_live_session_from_an_allowed_origin() {
    let p = start(PASSWORD_ONLY_ENROLMENT);
    let issuer = p.issuer.as_str();
    enrol(issuer, "alice", 5);
    let pk = pkce();
    let r = browser_login(
        issuer,
        "rp",
        "alice",
        &[],
        typist(12, 95.0, 190.0, 1, 300),
        &pk,
        "n",
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let t = exchange(issuer, "rp", &r.location_query()["code"], &pk).json();
    let token = t["habitus_collect_token"]
        .as_str()
        .expect("the token response carries a collect token")
        .to_string();
    let id_token = t["id_token"].as_str().expect("id_token").to_string();
    let access_token = t["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let origin = ("Origin", "https://app.example");

    // The relying party's page (another origin, no cookie) may send the token.
    let pre = http(
        "OPTIONS",
        &format!("{issuer}/collect"),
        &[
            origin,
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
        b"",
    );
    assert_eq!(pre.status, 204, "{}", pre.text());
    let allowed = pre.header("access-control-allow-headers").unwrap_or("");
    assert!(allowed.contains("Authorization"), "{allowed}");
    let live = |seq: u64, bearer: &str| {
        let auth = format!("Bearer {bearer}");
        let body = json!({"seq": seq, "events": typist(12, 95.0, 190.0, 1, 400 + seq)});
        http(
            "POST",
            &format!("{issuer}/collect"),
            &[
                origin,
                ("Content-Type", "application/json"),
                ("Authorization", auth.as_str()),
            ],
            body.to_string().as_bytes(),
        )
    };
    let r = live(0, &token);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    // Taken into the session's live state: the same sequence number again is refused,
    // the next one is accepted.
    assert_eq!(live(0, &token).status, 409);
    assert_eq!(live(1, &token).status, 204);

    // Every page (load, tab, relying party) runs its own collector numbering from 0: with
    // a page id, each page has its own sequence, and a repeat within a page is refused.
    let paged = |seq: u64, page: &str, login: u64| {
        let body = json!({"seq": seq, "page": page,
                          "events": typist(12, 95.0, 190.0, 1, 600 + login)});
        http(
            "POST",
            &format!("{issuer}/collect"),
            &[
                origin,
                ("Content-Type", "application/json"),
                ("Authorization", format!("Bearer {token}").as_str()),
            ],
            body.to_string().as_bytes(),
        )
    };
    assert_eq!(paged(0, "page-a", 0).status, 204);
    assert_eq!(
        paged(0, "page-b", 1).status,
        204,
        "a second page starts at 0"
    );
    assert_eq!(paged(0, "page-a", 2).status, 409, "a repeat within page a");
    assert_eq!(paged(1, "page-a", 3).status, 204);
    assert_eq!(paged(1, "page-b", 4).status, 204);
    let r = paged(0, &"p".repeat(65), 5);
    assert_eq!(r.status, 400, "an overlong page id: {}", r.text());

    // Other bearers are not collect tokens: a tampered one, the access token.
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    for bad in [tampered.as_str(), access_token.as_str(), "hc1.x", ""] {
        let r = live(2, bad);
        assert_eq!(r.status, 401, "{bad:?}: {}", r.text());
    }

    // Ending the session ends the token.
    let out = http(
        "GET",
        &format!("{issuer}/end_session?id_token_hint={id_token}"),
        &[],
        b"",
    );
    assert_eq!(out.status, 200);
    assert_eq!(live(2, &token).status, 404);
}
