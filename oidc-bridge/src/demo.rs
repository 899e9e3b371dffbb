//! `habitus-oidc demo`: the provider on 127.0.0.1 with a temporary store, a demo user and a
//! demo relying party (`/demo`) served by the same binary. The relying party runs the real
//! code flow with PKCE against the provider's own endpoints and shows the decoded ID token
//! and the live behaviour claim from /userinfo.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;

use crate::pages::escape;
use crate::provider::{random_token, Shared};

pub const DEMO_CLIENT: &str = "habitus-demo";

struct Demo {
    provider: Shared,
    /// state -> (PKCE verifier, nonce)
    pending: Mutex<HashMap<String, (String, String)>>,
}

pub fn router(provider: Shared) -> Router {
    let demo = Arc::new(Demo {
        provider,
        pending: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/demo", get(start))
        .route("/demo/callback", get(callback))
        .with_state(demo)
}

fn client_of(p: &Shared) -> Option<&crate::config::ClientConfig> {
    p.config.client(DEMO_CLIENT)
}

async fn start(State(d): State<Arc<Demo>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(client) = client_of(&d.provider) else {
        return (
            axum::http::StatusCode::NOT_FOUND,
            "no demo client configured",
        )
            .into_response();
    };
    let verifier = random_token();
    let challenge = URL_SAFE_NO_PAD.encode(crate::store::sha256(verifier.as_bytes()));
    let state = random_token();
    let nonce = random_token();
    if let Ok(mut p) = d.pending.lock() {
        if p.len() > 1000 {
            p.clear();
        }
        p.insert(state.clone(), (verifier, nonce.clone()));
    }
    let mut u = match url::Url::parse(&format!("{}/authorize", d.provider.config.issuer)) {
        Ok(u) => u,
        Err(_) => {
            return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "bad issuer").into_response()
        }
    };
    {
        let mut qp = u.query_pairs_mut();
        qp.append_pair("response_type", "code")
            .append_pair("client_id", &client.id)
            .append_pair("redirect_uri", &client.redirect_uris[0])
            .append_pair("scope", "openid profile")
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(a) = q.get("acr") {
            qp.append_pair("acr_values", a);
        }
        if q.contains_key("login") {
            qp.append_pair("prompt", "login");
        }
    }
    Redirect::to(u.as_str()).into_response()
}

fn decode_part(jwt: &str, i: usize) -> serde_json::Value {
    jwt.split('.')
        .nth(i)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

async fn callback(
    State(d): State<Arc<Demo>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let p = d.provider.clone();
    let Some(client) = client_of(&p).cloned() else {
        return (axum::http::StatusCode::NOT_FOUND, "no demo client").into_response();
    };
    if let Some(e) = q.get("error") {
        return Html(format!(
            "<h1>Demo relying party</h1><p>The provider answered <code>{}</code>: {}</p><p><a href=\"/demo\">Try again</a></p>",
            escape(e),
            escape(q.get("error_description").map(String::as_str).unwrap_or(""))
        ))
        .into_response();
    }
    let pending = q
        .get("state")
        .and_then(|s| d.pending.lock().ok()?.remove(s));
    let (Some(code), Some((verifier, nonce))) = (q.get("code"), pending) else {
        return Html(
            "<p>Unknown or replayed state. <a href=\"/demo\">Start again</a></p>".to_string(),
        )
        .into_response();
    };
    // The token request, exactly as a confidential client sends it (client_secret_basic).
    let mut headers = HeaderMap::new();
    let basic = STANDARD.encode(format!("{}:{}", client.id, client.secret));
    if let Ok(v) = HeaderValue::from_str(&format!("Basic {basic}")) {
        headers.insert(header::AUTHORIZATION, v);
    }
    let form: HashMap<String, String> = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", client.redirect_uris[0].as_str()),
        ("code_verifier", verifier.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let tokens = match p.token(&headers, &form) {
        Ok(t) => t,
        Err(e) => {
            return Html(format!(
                "<p>Token error {}: {}</p>",
                escape(e.code),
                escape(&e.description)
            ))
            .into_response()
        }
    };
    let header_json = decode_part(&tokens.id_token, 0);
    let claims = decode_part(&tokens.id_token, 1);
    let nonce_ok = claims.get("nonce").and_then(|n| n.as_str()) == Some(nonce.as_str());
    let userinfo = p.userinfo(&tokens.access_token).unwrap_or_default();
    let pretty =
        |v: &serde_json::Value| escape(&serde_json::to_string_pretty(v).unwrap_or_default());
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>Demo relying party</title>\
<style>body{{font-family:sans-serif;max-width:48em;margin:2em auto}}pre{{background:#f4f4f4;padding:.6em}}</style>\
<h1>Signed in as {sub}</h1><p><b>acr</b> {acr} &middot; <b>amr</b> {amr} &middot; nonce {nonce}</p>\
<h2>ID token header</h2><pre>{h}</pre><h2>ID token claims</h2><pre>{c}</pre>\
<h2>Live behaviour (userinfo)</h2><pre>{u}</pre>\
<p><a href=\"/demo?login\">Sign in again</a> &middot; <a href=\"/demo?acr=urn:habitus:loa:2&amp;login\">Sign in asking for loa:2 (step-up unless behaviour is verified)</a> &middot; \
<a href=\"/end_session?id_token_hint={idt}&amp;post_logout_redirect_uri={plo}\">Sign out</a></p>",
        sub = escape(claims.get("sub").and_then(|s| s.as_str()).unwrap_or("?")),
        acr = escape(claims.get("acr").and_then(|s| s.as_str()).unwrap_or("?")),
        amr = escape(&claims.get("amr").map(|a| a.to_string()).unwrap_or_default()),
        nonce = if nonce_ok { "verified" } else { "MISMATCH" },
        h = pretty(&header_json),
        c = pretty(&claims),
        u = pretty(&userinfo),
        idt = escape(&tokens.id_token),
        plo = escape(&url::form_urlencoded::byte_serialize(
            client.post_logout_redirect_uris.first().map(String::as_str).unwrap_or("").as_bytes()
        ).collect::<String>()),
    ))
    .into_response()
}

/// The demo's configuration for a provider on `port` with state in `dir`.
pub fn config_text(
    port: u16,
    dir: &std::path::Path,
    secret: &str,
    plugin_dir: Option<&std::path::Path>,
) -> String {
    let plugin_line = plugin_dir
        .map(|d| format!("plugin_dir = {:?}\n", d.display().to_string()))
        .unwrap_or_default();
    format!(
        r#"version = 1
issuer = "http://127.0.0.1:{port}"
bind = "127.0.0.1:{port}"
state_dir = {dir:?}
{plugin_line}
[[clients]]
id = "{DEMO_CLIENT}"
secret = "{secret}"
redirect_uris = ["http://127.0.0.1:{port}/demo/callback"]
post_logout_redirect_uris = ["http://127.0.0.1:{port}/demo"]
id_token_signed_response_alg = "EdDSA"

# A demo on one's own machine: the first logins enrol without the TOTP code. A real
# deployment keeps the default (true): see docs/oidc.md, "Scoring and enrolment".
[behavior]
enrol_with_second_factor = false
"#,
        dir = dir.display().to_string(),
    )
}
