//! Drift signals: OpenID Connect Back-Channel Logout 1.0 Logout Tokens, and a minimal Shared
//! Signals (SSF 1.0) transmitter pushing CAEP Security Event Tokens per RFC 8935.
//!
//! Delivery never blocks the request that caused it: each token is POSTed from a spawned
//! tokio task with the configured timeout; temporary failures are retried a few times with
//! growing delays (`signals.retries`, `signals.retry_delay_ms`), and every failure is logged
//! (URL without query, the HTTP status or the error). Every delivery is first written to
//! the provider database's outbox and removed when it is done (accepted, refused for good,
//! or given up after its retries): one still pending when the provider stops is sent again
//! after the next start, unless its token has expired by then (a Logout Token lives
//! [`LOGOUT_TOKEN_LIFETIME_S`]), which is logged. A receiver may therefore see a token
//! twice and drops the repeat by `jti` (RFC 8935 §2.3).
//!
//! The HTTP client is a small HTTP/1.1 writer over
//! `tokio::net::TcpStream` (there is no HTTP client crate in the tree), wrapped in TLS
//! (rustls with ring) for `https://` URLs: the server's certificate must chain to a CA of
//! `signals.ca_file` and name the URL's host.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{check_push_url, EventSubject, SsfReceiver};
use crate::provider::{lock, now_unix, random_token, Provider, Shared};
use crate::store::Db;

pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
pub const CAEP_SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
pub const CAEP_ASSURANCE_LEVEL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/assurance-level-change";
/// RFC 8935 push delivery.
pub const PUSH_DELIVERY: &str = "urn:ietf:rfc:8935";
/// Logout Tokens are short-lived: receivers must process them at once.
pub const LOGOUT_TOKEN_LIFETIME_S: i64 = 120;
/// Stream configuration request bodies larger than this are refused.
const MAX_STREAM_BODY: usize = 8 * 1024;
/// The HTTP status line of a delivery answer must arrive within this many bytes.
const MAX_ANSWER_HEAD: usize = 8 * 1024;

pub fn events_supported() -> Vec<&'static str> {
    vec![CAEP_SESSION_REVOKED, CAEP_ASSURANCE_LEVEL_CHANGE]
}

/// Why a session ended (CAEP `initiating_entity` and `reason_admin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// RP-initiated logout (end-session endpoint).
    Logout,
    /// Live behaviour reached the `drift` state (`signals.revoke_on_drift`).
    Drift,
    /// An authorization code was presented twice (RFC 6749 §4.1.2).
    CodeReplay,
}

impl Revocation {
    fn initiating_entity(self) -> &'static str {
        match self {
            Revocation::Logout => "user",
            Revocation::Drift => "policy",
            Revocation::CodeReplay => "system",
        }
    }
    fn reason(self) -> &'static str {
        match self {
            Revocation::Logout => "the user signed out",
            Revocation::Drift => "behaviour drifted from the user's profile",
            Revocation::CodeReplay => "an authorization code was replayed",
        }
    }
}

/// One token to POST: the outbox row (see [`crate::store::OutboxEntry`]).
pub type Delivery = crate::store::OutboxEntry;

/// How deliveries travel: the timeout, and the TLS client for `https://` URLs (or why
/// there is none: the CA file could not be read).
#[derive(Clone)]
pub struct Transport {
    pub timeout: Duration,
    pub tls: Result<TlsClient, String>,
    /// Further attempts after a temporary failure, and the delay before the first.
    pub retries: u32,
    pub retry_delay: Duration,
    /// Where deliveries are kept until done (none: in memory only).
    pub outbox: Option<Arc<Mutex<Db>>>,
}

impl Transport {
    /// Writes `d` to the outbox; `None` when there is none or writing failed (logged: the
    /// delivery is still attempted, it just would not survive a restart).
    fn keep(&self, d: &Delivery) -> Option<i64> {
        let outbox = self.outbox.as_ref()?;
        match lock(outbox).outbox_add(d) {
            Ok(id) => Some(id),
            Err(e) => {
                eprintln!(
                    "habitus-oidc: signals: keeping {} in the outbox: {e}",
                    d.what
                );
                None
            }
        }
    }

    /// Removes the finished delivery `id` from the outbox.
    fn done(&self, id: Option<i64>) {
        if let (Some(outbox), Some(id)) = (&self.outbox, id) {
            if let Err(e) = lock(outbox).outbox_remove(id) {
                eprintln!("habitus-oidc: signals: removing delivery {id} from the outbox: {e}");
            }
        }
    }
}

pub type TlsClient = std::sync::Arc<tokio_rustls::rustls::ClientConfig>;

/// A TLS client that trusts the CA certificates in the PEM file `ca_file` (TLS 1.2 and
/// 1.3, ring as the crypto provider, no client certificate).
pub fn tls_client(ca_file: &std::path::Path) -> Result<TlsClient, String> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    let name = ca_file.display();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| format!("CA file {name}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("CA file {name}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("CA file {name}: no usable CA certificate"));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// Keeps `deliveries` in the outbox and sends them in the background (tokio tasks; a
/// thread with its own runtime when called outside one). Returns at once.
pub fn dispatch(deliveries: Vec<Delivery>, transport: Transport) {
    let kept = deliveries
        .into_iter()
        .map(|d| (transport.keep(&d), d))
        .collect();
    send(kept, transport);
}

/// Sends deliveries already in the outbox (with their row ids) in the background.
fn send(deliveries: Vec<(Option<i64>, Delivery)>, transport: Transport) {
    if deliveries.is_empty() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            for (id, d) in deliveries {
                h.spawn(deliver(id, d, transport.clone()));
            }
        }
        Err(_) => {
            std::thread::spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(async move {
                        for (id, d) in deliveries {
                            deliver(id, d, transport.clone()).await;
                        }
                    }),
                    Err(e) => eprintln!("habitus-oidc: signals: no runtime: {e}"),
                }
            });
        }
    }
}

/// The URL as logged: no query (it could carry a receiver's secret).
fn loggable(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "(bad URL)".into(),
    }
}

/// Sends one delivery, retrying what may be temporary: no connection, no answer in time,
/// HTTP 5xx or 429. Other answers are final. The same bytes are re-sent, so receivers can
/// drop repeats by `jti` (RFC 8935 §2.3; Logout Tokens carry one too).
/// Then removes it from the outbox (row `id`), whatever the outcome.
async fn deliver(id: Option<i64>, d: Delivery, transport: Transport) {
    attempt(&d, &transport).await;
    transport.done(id);
}

async fn attempt(d: &Delivery, transport: &Transport) {
    let timeout = transport.timeout;
    let ok = |s: u16| {
        if d.push {
            s == 202
        } else {
            (200..300).contains(&s)
        }
    };
    let attempts = transport.retries + 1;
    for attempt in 1..=attempts {
        if attempt > 1 {
            // 1×, 4×, 16× … the configured delay.
            let factor = 4u32.saturating_pow(attempt - 2);
            tokio::time::sleep(transport.retry_delay.saturating_mul(factor)).await;
        }
        let result = tokio::time::timeout(
            timeout,
            post(
                &d.url,
                &d.content_type,
                d.authorization.as_deref(),
                &d.body,
                &transport.tls,
            ),
        )
        .await;
        let (problem, retry) = match result {
            Ok(Ok(status)) if ok(status) => return,
            Ok(Ok(status)) => (
                format!("answered HTTP {status}"),
                status >= 500 || status == 429,
            ),
            Ok(Err(e)) => (e, true),
            Err(_) => (format!("no answer within {} ms", timeout.as_millis()), true),
        };
        let last = !retry || attempt == attempts;
        eprintln!(
            "habitus-oidc: signals: {} to {}: {problem} (attempt {attempt} of {attempts}{})",
            d.what,
            loggable(&d.url),
            if last { "; given up" } else { "" }
        );
        if last {
            return;
        }
    }
}

/// One HTTP/1.1 POST (`Connection: close`) over TCP, or TLS for `https://`; returns the
/// status.
pub async fn post(
    url: &str,
    content_type: &str,
    authorization: Option<&str>,
    body: &[u8],
    tls: &Result<TlsClient, String>,
) -> Result<u16, String> {
    let u = check_push_url(url)?;
    let host = u.host_str().ok_or("no host")?;
    let port = u.port_or_known_default().ok_or("no port")?;
    let mut target = u.path().to_string();
    if let Some(q) = u.query() {
        target.push('?');
        target.push_str(q);
    }
    let host_header = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let mut head = format!(
        "POST {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: habitus-oidc\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(a) = authorization {
        head.push_str(&format!("Authorization: {a}\r\n"));
    }
    head.push_str("\r\n");
    // IPv6 literals come bracketed from the URL; connect() wants them bare.
    let addr_host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::net::TcpStream::connect((addr_host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if u.scheme() == "https" {
        let config = tls.as_ref().map_err(|e| format!("no TLS client: {e}"))?;
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(addr_host.to_string())
            .map_err(|e| format!("TLS server name {host:?}: {e}"))?;
        let mut stream = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(&mut stream, head.as_bytes(), body).await
    } else {
        let mut stream = tcp;
        exchange(&mut stream, head.as_bytes(), body).await
    }
}

/// Writes the request and reads the answer's status line.
async fn exchange<S>(stream: &mut S, head: &[u8], body: &[u8]) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let send = |e: std::io::Error| format!("send: {e}");
    stream.write_all(head).await.map_err(send)?;
    stream.write_all(body).await.map_err(send)?;
    stream.flush().await.map_err(send)?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        if answer.len() > MAX_ANSWER_HEAD {
            return Err("answer has no status line".into());
        }
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed without an answer".into());
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&answer);
    let mut parts = line.split(' ');
    match (
        parts.next(),
        parts.next().and_then(|s| s.trim().parse().ok()),
    ) {
        (Some(v), Some(status)) if v.starts_with("HTTP/1.") => Ok(status),
        _ => Err("answer is not HTTP/1.x".into()),
    }
}

// ------------------------------------------------------------------ stream configuration

/// What a receiver may send to create its stream (SSF 1.0 §8.1.1; `deny_unknown_fields`:
/// read-only transmitter properties are refused rather than silently ignored).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamRequest {
    delivery: DeliveryRequest,
    #[serde(default)]
    events_requested: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryRequest {
    method: String,
    endpoint_url: String,
    /// Sent as the `Authorization` header of every push (RFC 8935 §2.2 lets the receiver
    /// require one).
    #[serde(default)]
    authorization_header: Option<String>,
}

/// A stream as stored (and, minus the authorization header, as shown).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Stream {
    pub stream_id: String,
    pub endpoint_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_header: Option<String>,
    pub events_requested: Vec<String>,
    pub events_delivered: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn validate_stream(body: &[u8]) -> Result<Stream, String> {
    if body.len() > MAX_STREAM_BODY {
        return Err(format!("stream configuration over {MAX_STREAM_BODY} bytes"));
    }
    let r: StreamRequest =
        serde_json::from_slice(body).map_err(|e| format!("malformed stream configuration: {e}"))?;
    if r.delivery.method != PUSH_DELIVERY {
        return Err(format!(
            "delivery.method {:?}: only push delivery ({PUSH_DELIVERY}) is supported",
            r.delivery.method
        ));
    }
    check_push_url(&r.delivery.endpoint_url).map_err(|e| format!("delivery.endpoint_url {e}"))?;
    if let Some(a) = &r.delivery.authorization_header {
        if a.is_empty() || a.len() > 1024 || !a.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(
                "delivery.authorization_header must be 1-1024 printable ASCII characters".into(),
            );
        }
    }
    let supported = events_supported();
    let requested = match r.events_requested {
        None => supported.iter().map(|s| s.to_string()).collect(),
        Some(v) => {
            if v.len() > 32 || v.iter().any(|e| e.is_empty() || e.len() > 256) {
                return Err("events_requested: at most 32 URIs of 1-256 characters".into());
            }
            v
        }
    };
    let delivered = supported
        .iter()
        .filter(|s| requested.iter().any(|r| r == *s))
        .map(|s| s.to_string())
        .collect();
    if r.description.as_ref().is_some_and(|d| d.len() > 256) {
        return Err("description: at most 256 characters".into());
    }
    Ok(Stream {
        stream_id: random_token(),
        endpoint_url: r.delivery.endpoint_url,
        authorization_header: r.delivery.authorization_header,
        events_requested: requested,
        events_delivered: delivered,
        description: r.description,
    })
}

impl Provider {
    /// `/.well-known/ssf-configuration`.
    pub fn ssf_configuration(&self) -> serde_json::Value {
        let issuer = &self.config.issuer;
        json!({
            "spec_version": "1_0",
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/jwks"),
            "delivery_methods_supported": [PUSH_DELIVERY],
            "configuration_endpoint": format!("{issuer}/ssf/stream"),
            "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6750"}],
            "default_subjects": "ALL",
        })
    }

    /// The stream configuration as the receiver sees it.
    fn stream_view(&self, receiver: &SsfReceiver, s: &Stream) -> serde_json::Value {
        let mut v = json!({
            "stream_id": s.stream_id,
            "iss": self.config.issuer,
            "aud": receiver.audience(),
            "delivery": {"method": PUSH_DELIVERY, "endpoint_url": s.endpoint_url},
            "events_supported": events_supported(),
            "events_requested": s.events_requested,
            "events_delivered": s.events_delivered,
        });
        if let Some(d) = &s.description {
            v["description"] = d.clone().into();
        }
        v
    }

    /// The receiver whose bearer token `headers` carry.
    fn ssf_receiver(&self, headers: &HeaderMap) -> Option<&SsfReceiver> {
        let token = headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?
            .trim();
        // Every receiver is compared, so timing does not tell which one matched.
        let mut found = None;
        for r in &self.config.signals.ssf_receivers {
            if crate::store::ct_eq(r.token.as_bytes(), token.as_bytes()) {
                found = Some(r);
            }
        }
        found
    }

    fn streams(&self) -> Vec<(SsfReceiver, Stream)> {
        let rows = match self.db().streams() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("habitus-oidc: signals: reading streams: {e}");
                return Vec::new();
            }
        };
        rows.into_iter()
            .filter_map(|(rid, text)| {
                let r = self
                    .config
                    .signals
                    .ssf_receivers
                    .iter()
                    .find(|r| r.id == rid)?;
                let s: Stream = serde_json::from_str(&text).ok()?;
                Some((r.clone(), s))
            })
            .collect()
    }

    fn set_alg(&self) -> crate::config::Alg {
        if self.keys.signer(crate::config::Alg::EdDSA).is_ok() {
            crate::config::Alg::EdDSA
        } else {
            crate::config::Alg::RS256
        }
    }

    /// A SET (`typ: secevent+jwt`) for every stream that asked for `event`.
    fn set_deliveries(&self, user: &str, event: &str, payload: serde_json::Value) -> Vec<Delivery> {
        let now = now_unix();
        let mut out = Vec::new();
        let sub_id = json!({"format": "iss_sub", "iss": self.config.issuer, "sub": user});
        let email = self.verified_email(user);
        for (receiver, stream) in self.streams() {
            if !stream.events_delivered.iter().any(|e| e == event) {
                continue;
            }
            let payload =
                match event_payload(receiver.event_subject, &sub_id, user, email, &payload) {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!(
                            "habitus-oidc: signals: SET {} for stream of {} not sent: {e}",
                            short_event(event),
                            receiver.id
                        );
                        continue;
                    }
                };
            let claims = json!({
                "iss": self.config.issuer,
                "aud": receiver.audience(),
                "iat": now,
                "jti": random_token(),
                "sub_id": sub_id,
                "events": {event: payload},
            });
            match self.keys.sign_jwt(self.set_alg(), "secevent+jwt", &claims) {
                Ok(jwt) => out.push(Delivery {
                    url: stream.endpoint_url.clone(),
                    content_type: "application/secevent+jwt".into(),
                    authorization: stream.authorization_header.clone(),
                    body: jwt.into_bytes(),
                    push: true,
                    what: format!("SET {} for stream of {}", short_event(event), receiver.id),
                    expires: None,
                }),
                Err(e) => eprintln!("habitus-oidc: signals: signing a SET: {e}"),
            }
        }
        out
    }

    /// Logout Tokens for the clients in `clients` that registered a back-channel URI.
    fn logout_deliveries(&self, clients: &[String], user: &str, sid: &str) -> Vec<Delivery> {
        let now = now_unix();
        let mut out = Vec::new();
        for id in clients {
            let Some(c) = self.config.client(id) else {
                continue;
            };
            let Some(uri) = &c.backchannel_logout_uri else {
                continue;
            };
            let claims = json!({
                "iss": self.config.issuer,
                "aud": c.id,
                "iat": now,
                "exp": now + LOGOUT_TOKEN_LIFETIME_S,
                "jti": random_token(),
                "sub": user,
                "sid": sid,
                "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
            });
            match self
                .keys
                .sign_jwt(c.id_token_signed_response_alg, "logout+jwt", &claims)
            {
                Ok(jwt) => out.push(Delivery {
                    url: uri.clone(),
                    content_type: "application/x-www-form-urlencoded".into(),
                    authorization: None,
                    body: url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("logout_token", &jwt)
                        .finish()
                        .into_bytes(),
                    push: false,
                    what: format!("logout token for client {}", c.id),
                    expires: Some(now + LOGOUT_TOKEN_LIFETIME_S),
                }),
                Err(e) => eprintln!(
                    "habitus-oidc: signals: signing a logout token for {}: {e}",
                    c.id
                ),
            }
        }
        out
    }

    fn transport(&self) -> Transport {
        Transport {
            timeout: Duration::from_millis(self.config.signals.timeout_ms),
            tls: self.signals_tls.clone(),
            retries: self.config.signals.retries,
            retry_delay: Duration::from_millis(self.config.signals.retry_delay_ms),
            outbox: Some(self.db_handle()),
        }
    }

    /// Sends the deliveries a previous run left in the outbox (it stopped while they were
    /// pending). Expired ones are dropped and logged. Call once, inside the runtime, when
    /// serving starts.
    pub fn resume_deliveries(&self) {
        let taken = self.db().outbox_take_pending(now_unix());
        let (pending, expired) = match taken {
            Ok(t) => t,
            Err(e) => {
                eprintln!("habitus-oidc: signals: reading the outbox: {e}");
                return;
            }
        };
        for d in &expired {
            eprintln!(
                "habitus-oidc: signals: {} to {}: expired while the provider was stopped; dropped",
                d.what,
                loggable(&d.url)
            );
        }
        if !pending.is_empty() {
            eprintln!(
                "habitus-oidc: signals: resending {} deliveries left pending by the last run",
                pending.len()
            );
        }
        send(
            pending.into_iter().map(|(id, d)| (Some(id), d)).collect(),
            self.transport(),
        );
    }

    /// Ends session `sid` (and its refresh tokens), then tells the clients that received
    /// tokens in it (back-channel logout) and the SSF streams (CAEP `session-revoked`).
    /// Nothing is sent for a session that had already ended.
    pub fn revoke_session(&self, sid: &str, why: Revocation) {
        let now = now_unix();
        let (session, clients) = {
            let db = self.db();
            let session = db.session(sid, now).ok().flatten();
            let clients = db.session_clients(sid).unwrap_or_default();
            if let Err(e) = db.end_session(sid) {
                eprintln!("habitus-oidc: error: ending a session: {e}");
            }
            (session, clients)
        };
        self.forget_live(sid);
        let Some(session) = session else {
            return;
        };
        let mut out = self.logout_deliveries(&clients, &session.user, sid);
        out.extend(self.set_deliveries(
            &session.user,
            CAEP_SESSION_REVOKED,
            json!({
                "event_timestamp": now,
                "initiating_entity": why.initiating_entity(),
                "reason_admin": {"en": why.reason()},
            }),
        ));
        dispatch(out, self.transport());
    }

    /// CAEP `assurance-level-change` for a live session whose `acr` moved.
    pub fn assurance_changed(&self, user: &str, previous: &str, current: &str, up: bool) {
        let out = self.set_deliveries(
            user,
            CAEP_ASSURANCE_LEVEL_CHANGE,
            json!({
                "event_timestamp": now_unix(),
                "namespace": "Custom",
                "previous_level": previous,
                "current_level": current,
                "change_direction": if up { "increase" } else { "decrease" },
                "initiating_entity": "policy",
            }),
        );
        dispatch(out, self.transport());
    }
}

/// An event's payload for a receiver: `payload`, with `subject.user` added if the
/// receiver wants the user named inside the event (`SsfReceiver::event_subject`).
/// `sub_id`: the SET's subject identifier; `email`: `user`'s verified address, if any.
fn event_payload(
    mode: Option<EventSubject>,
    sub_id: &serde_json::Value,
    user: &str,
    email: Option<&str>,
    payload: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let subject = match mode {
        None => return Ok(payload.clone()),
        Some(EventSubject::IssSub) => sub_id.clone(),
        Some(EventSubject::Email) => match email {
            Some(e) => json!({"format": "email", "email": e}),
            None => {
                return Err(format!(
                    "the receiver names users by email and {user} has no verified address"
                ))
            }
        },
    };
    let mut out = payload.clone();
    match out.as_object_mut() {
        Some(o) => {
            o.insert("subject".into(), json!({ "user": subject }));
            Ok(out)
        }
        None => Err("an event payload must be a JSON object".into()),
    }
}

fn short_event(event: &str) -> &str {
    event.rsplit('/').next().unwrap_or(event)
}

// ------------------------------------------------------------------ HTTP handlers

fn ssf_error(status: StatusCode, message: &str) -> Response {
    let mut r = (status, Json(json!({"error": message}))).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

pub async fn ssf_configuration(State(p): State<Shared>) -> Response {
    Json(p.ssf_configuration()).into_response()
}

#[derive(Deserialize)]
pub struct StreamQuery {
    stream_id: Option<String>,
}

fn unauthorised() -> Response {
    ssf_error(
        StatusCode::UNAUTHORIZED,
        "a receiver's bearer token is required",
    )
}

/// The receiver's stored stream, or the error to answer (status, message).
fn stored_stream(
    p: &Provider,
    r: &SsfReceiver,
    q: &StreamQuery,
) -> Result<Stream, (StatusCode, String)> {
    let not_found = || (StatusCode::NOT_FOUND, "no such stream".to_string());
    let text = p
        .db()
        .stream(&r.id)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .ok_or_else(not_found)?;
    let s: Stream = serde_json::from_str(&text).map_err(|_| not_found())?;
    if q.stream_id.as_ref().is_some_and(|id| *id != s.stream_id) {
        return Err(not_found());
    }
    Ok(s)
}

pub async fn stream_create(State(p): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(r) = p.ssf_receiver(&headers) else {
        return unauthorised();
    };
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        return ssf_error(StatusCode::BAD_REQUEST, "send application/json");
    }
    let stream = match validate_stream(&body) {
        Ok(s) => s,
        Err(e) => return ssf_error(StatusCode::BAD_REQUEST, &e),
    };
    let text = serde_json::to_string(&stream).unwrap_or_default();
    match p.db().create_stream(&r.id, &text) {
        Ok(true) => {
            eprintln!("habitus-oidc: signals: stream created for {}", r.id);
            let mut resp = (StatusCode::CREATED, Json(p.stream_view(r, &stream))).into_response();
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Ok(false) => ssf_error(
            StatusCode::CONFLICT,
            "this receiver already has a stream; DELETE it first",
        ),
        Err(e) => ssf_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

pub async fn stream_get(
    State(p): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Response {
    let Some(r) = p.ssf_receiver(&headers) else {
        return unauthorised();
    };
    match stored_stream(&p, r, &q) {
        Ok(s) => {
            let mut resp = Json(p.stream_view(r, &s)).into_response();
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err((status, m)) => ssf_error(status, &m),
    }
}

pub async fn stream_delete(
    State(p): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Response {
    let Some(r) = p.ssf_receiver(&headers) else {
        return unauthorised();
    };
    if let Err((status, m)) = stored_stream(&p, r, &q) {
        return ssf_error(status, &m);
    }
    match p.db().delete_stream(&r.id) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => ssf_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_their_user_inside_when_the_receiver_asks() {
        let base = json!({"event_timestamp": 5});
        let iss = "https://id.example";
        let sub_id = json!({"format": "iss_sub", "iss": iss, "sub": "alice"});
        assert_eq!(
            event_payload(None, &sub_id, "alice", Some("a@x"), &base),
            Ok(base.clone())
        );
        assert_eq!(
            event_payload(Some(EventSubject::IssSub), &sub_id, "alice", None, &base),
            Ok(json!({"event_timestamp": 5,
                "subject": {"user": {"format": "iss_sub", "iss": iss, "sub": "alice"}}}))
        );
        assert_eq!(
            event_payload(
                Some(EventSubject::Email),
                &sub_id,
                "alice",
                Some("a@x"),
                &base
            ),
            Ok(json!({"event_timestamp": 5,
                "subject": {"user": {"format": "email", "email": "a@x"}}}))
        );
        let err = event_payload(Some(EventSubject::Email), &sub_id, "bob", None, &base)
            .expect_err("no verified address: not sent");
        assert!(err.contains("bob has no verified address"), "{err}");
        assert!(event_payload(Some(EventSubject::IssSub), &sub_id, "a", None, &json!(1)).is_err());
    }

    #[test]
    fn stream_requests_are_checked() {
        let ok = json!({"delivery": {"method": PUSH_DELIVERY, "endpoint_url": "http://127.0.0.1:9/ssf"},
            "events_requested": [CAEP_SESSION_REVOKED, "urn:example:unknown"]});
        let s = validate_stream(ok.to_string().as_bytes()).expect("valid");
        assert_eq!(s.events_delivered, vec![CAEP_SESSION_REVOKED.to_string()]);
        for (body, needle) in [
            ("not json".to_string(), "malformed"),
            (json!({"delivery": {"method": "urn:ietf:rfc:8936", "endpoint_url": "http://a/"}}).to_string(), "push"),
            (json!({"delivery": {"method": PUSH_DELIVERY, "endpoint_url": "ftp://a/"}}).to_string(), "https://"),
            (json!({"delivery": {"method": PUSH_DELIVERY}}).to_string(), "endpoint_url"),
            (json!({"delivery": {"method": PUSH_DELIVERY, "endpoint_url": "http://a/"}, "iss": "x"}).to_string(), "iss"),
            (json!({"delivery": {"method": PUSH_DELIVERY, "endpoint_url": "http://a/", "authorization_header": "a\r\nb"}}).to_string(), "authorization_header"),
        ] {
            let e = validate_stream(body.as_bytes()).expect_err(&body);
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
