//! The OpenID Provider: shared state, the authorization and token logic, and the axum
//! routes. HTTP details (headers, status codes) stay in the handlers; the logic functions
//! return typed OAuth errors so they can be tested and reused by the demo.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use habitus_plugin::Event;
use openidconnect::core::{
    CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AccessToken, AdditionalClaims, Audience, AuthenticationContextClass,
    AuthenticationMethodReference, EndUserEmail, EndUserName, EndUserUsername, IdToken,
    IdTokenClaims, IssuerUrl, LocalizedClaim, Nonce, StandardClaims, SubjectIdentifier,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::behavior::{self, Batch, BehaviorClaim, BehaviorEngine, LoginLearning, MAX_TX_EVENTS};
use crate::config::{Alg, ClientConfig, Config, PrimaryMethod};
use crate::keys::{core_alg, KeySet};
use crate::pages;
use crate::signals::{self, Revocation};
use crate::store::{Db, RefreshGrant, Rotation, SsoSession};
use crate::throttle::FailureThrottle;
use crate::users::UsersFile;

/// The `behavior` claim's name (namespaced, so it can never collide with a registered one).
pub const BEHAVIOR_CLAIM: &str = "urn:habitus:behavior";
pub const ACR_PREFIX: &str = "urn:habitus:loa:";
const SESSION_COOKIE: &str = "habitus_oidc_session";
/// Binds a login to the browser that opened its page (see [`Provider::authorize`]).
const BROWSER_COOKIE: &str = "habitus_oidc_browser";
/// Marks a browser in which a user signed in before: its password attempts are counted
/// for that browser, apart from the account's, so someone throttling the account from
/// elsewhere does not lock the user out of their own browser (see
/// [`Provider::device_vouches`]).
const DEVICE_COOKIE: &str = "habitus_oidc_device";
const DEVICE_COOKIE_MAX_AGE_S: u64 = 180 * 24 * 3600;
/// `/collect` request bodies larger than this are refused (512 events fit well below).
pub const MAX_COLLECT_BODY: usize = 64 * 1024;
/// Form bodies (authorize, login, token, userinfo, end-session).
const MAX_FORM_BODY: usize = 16 * 1024;
/// Login transactions held at once (oldest expire first; a flood cannot grow memory).
const MAX_TRANSACTIONS: usize = 10_000;
/// Authorization codes held at once (each lives `lifetimes.code_s`, 60 s by default).
const MAX_CODES: usize = 10_000;
const MAX_PASSWORD_ATTEMPTS: u32 = 5;
/// Wrong TOTP codes accepted per user within [`TOTP_FAILURE_WINDOW_S`], across all login
/// transactions (a new transaction is one unauthenticated request away, so the
/// per-transaction limit alone would leave a guesser who knows the password about
/// 3 chances in 10⁶ every five tries). Beyond it, codes are not even checked until the
/// window has passed: RFC 4226 §7.3 / RFC 6238 §5.2 throttling.
const MAX_TOTP_FAILURES: u32 = 10;
const TOTP_FAILURE_WINDOW_S: i64 = 900;
/// Password attempts per account within [`PASSWORD_FAILURE_WINDOW_S`], across all login
/// transactions; beyond them the password is not checked until the window has passed
/// (see [`crate::throttle`]). A success clears the count.
const MAX_PASSWORD_FAILURES: u32 = 10;
const PASSWORD_FAILURE_WINDOW_S: i64 = 900;
/// Accounts whose attempts are counted at once before old entries are dropped (SHA-256
/// digests, ≈ 50 bytes each).
const MAX_THROTTLED_NAMES: usize = 100_000;
/// What a failed or throttled password attempt is told (the same words for both).
const SIGN_IN_FAILED: &str =
    "Wrong user name or password. After 10 failed sign-ins an account is paused for 15 minutes.";
/// How long a login post waits for a password-check slot before it is answered 503.
const PASSWORD_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Password checks run at once: each argon2id verification holds 19 MiB for ≈ 30 ms,
/// and without a bound a burst of wrong-password posts (one blocking thread each, up to
/// 512) exhausted memory. One per core, at least 2 and at most 8; further posts queue
/// in arrival order.
fn password_check_slots() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
}

pub fn acr(loa: u8) -> String {
    format!("{ACR_PREFIX}{loa}")
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// 256 random bits, base64url.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    // The system generator failing is not recoverable for a security service.
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("system random generator");
    URL_SAFE_NO_PAD.encode(b)
}

/// An OAuth / OpenID error (`error` code and description).
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthError {
    pub code: &'static str,
    pub description: String,
}

fn oauth(code: &'static str, description: impl Into<String>) -> OAuthError {
    OAuthError {
        code,
        description: description.into(),
    }
}

/// A refused authorization request: where to send the error (redirect URI and state), if
/// the client and redirect URI were valid, and the error.
pub type AuthorizeError = (Option<(String, Option<String>)>, OAuthError);

/// A validated authorization request.
#[derive(Clone, Debug)]
pub struct AuthRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: String,
    pub scope: String,
    /// Lowest level of assurance that satisfies the request (from `acr_values` or an
    /// essential `acr` claim); 0 when nothing was asked.
    pub required_loa: u8,
    /// The level is essential (`claims` parameter): if it cannot be reached the request
    /// fails instead of returning a lower `acr`.
    pub essential: bool,
    pub max_age: Option<i64>,
    pub prompt_login: bool,
    pub prompt_none: bool,
}

#[derive(Clone, Debug)]
enum Stage {
    Password,
    /// Password verified; behaviour did not reach the requested level (or the user is
    /// still enrolling, see [`Provider::login_password`]); TOTP asked.
    Totp {
        user: String,
        behavior: BehaviorClaim,
        /// What the login teaches the profiles once it completes.
        learning: Option<LoginLearning>,
    },
}

struct LoginTx {
    request: AuthRequest,
    /// The browser that opened the login page (its `habitus_oidc_browser` cookie).
    browser: String,
    expires: i64,
    events: Vec<Event>,
    next_seq: u64,
    last_t_us: u64,
    stage: Stage,
    attempts: u32,
}

struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    sid: String,
    nonce: Option<String>,
    scope: String,
    expires: i64,
    /// Set when redeemed; kept until expiry so a second use can be detected.
    used: bool,
}

/// Everything the handlers share.
pub struct Provider {
    pub config: Config,
    pub keys: KeySet,
    users: UsersFile,
    db: Arc<Mutex<Db>>,
    behavior: Option<BehaviorEngine>,
    txs: Mutex<HashMap<String, LoginTx>>,
    codes: Mutex<HashMap<String, CodeGrant>>,
    totp_used: Mutex<HashMap<String, u64>>,
    /// Wrong TOTP codes per user.
    totp_failures: Mutex<FailureThrottle>,
    /// Password attempts per account.
    password_failures: Mutex<FailureThrottle>,
    /// Password attempts per browser with a device cookie (see [`DEVICE_COOKIE`]): a
    /// table of its own, so that the many browsers a user can make for themselves
    /// cannot crowd accounts' counts out.
    device_failures: Mutex<FailureThrottle>,
    /// Bounds the password checks running at once ([`password_check_slots`]).
    password_checks: Arc<tokio::sync::Semaphore>,
    /// The TLS client of `https://` signal deliveries, or why there is none.
    pub(crate) signals_tls: Result<crate::signals::TlsClient, String>,
    /// Signs collect tokens (see [`Provider::collect_token`]); random per start, so a
    /// restart invalidates them until the relying party's next token response.
    collect_key: ring::hmac::Key,
    /// Signs device cookies; kept in the store so they outlive a restart.
    device_key: ring::hmac::Key,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Additional ID token claims: `sid` and the behaviour claim.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct HabitusClaims {
    pub sid: String,
    #[serde(rename = "urn:habitus:behavior")]
    pub behavior: BehaviorClaim,
}
impl AdditionalClaims for HabitusClaims {}

pub type HabitusIdToken = IdToken<
    HabitusClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub id_token: String,
    pub refresh_token: String,
    pub scope: String,
    /// Lets the relying party's pages post live behaviour for this SSO session to
    /// `/collect` (`Authorization: Bearer …`, or the collector's `data-token`) from any
    /// origin in `collect_origins`; it grants nothing else. Absent when behaviour scoring
    /// is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub habitus_collect_token: Option<String>,
}

/// What `/end_session` answers.
pub enum EndSessionOutcome {
    /// Signed out: redirect to `target` (a registered post-logout URI) or show `page`.
    SignedOut {
        target: Option<String>,
        page: String,
    },
    /// No valid `id_token_hint`: the user is asked to confirm (nothing was ended).
    Confirm(String),
    /// A malformed request (nothing was ended).
    Refused(String),
}

/// Where a finished login goes.
pub enum LoginOutcome {
    Redirect(String),
    Page(String),
    /// An error page (400): the request cannot continue and must not be redirected.
    ErrorPage(String),
    /// An error page (403): the request is not allowed from where it came.
    Refused(String),
    /// Redirect with a new session cookie, and the device cookie of the user.
    SignedIn {
        location: String,
        cookie: String,
        device: String,
    },
}

impl Provider {
    pub fn new(
        config: Config,
        keys: KeySet,
        users: UsersFile,
        db: Db,
        behavior: Option<BehaviorEngine>,
        signals_tls: Result<crate::signals::TlsClient, String>,
    ) -> Provider {
        let collect_key =
            ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
                .expect("system random generator");
        let device_key = match db.secret("device_cookie") {
            Ok(secret) => ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            Err(e) => {
                eprintln!("habitus-oidc: warning: device cookies will not outlive this run: {e}");
                ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
                    .expect("system random generator")
            }
        };
        let db = Arc::new(Mutex::new(db));
        if let Err(e) = crate::upkeep::start(&db) {
            eprintln!("habitus-oidc: warning: no database upkeep thread: {e}");
        }
        Provider {
            collect_key,
            device_key,
            signals_tls,
            config,
            keys,
            users,
            db,
            behavior,
            txs: Mutex::new(HashMap::new()),
            codes: Mutex::new(HashMap::new()),
            totp_used: Mutex::new(HashMap::new()),
            totp_failures: Mutex::new(FailureThrottle::new(
                MAX_TOTP_FAILURES,
                TOTP_FAILURE_WINDOW_S,
                MAX_THROTTLED_NAMES,
            )),
            password_failures: Mutex::new(FailureThrottle::new(
                MAX_PASSWORD_FAILURES,
                PASSWORD_FAILURE_WINDOW_S,
                MAX_THROTTLED_NAMES,
            )),
            device_failures: Mutex::new(FailureThrottle::new(
                MAX_PASSWORD_FAILURES,
                PASSWORD_FAILURE_WINDOW_S,
                MAX_THROTTLED_NAMES,
            )),
            password_checks: Arc::new(tokio::sync::Semaphore::new(password_check_slots())),
        }
    }

    /// The provider database (held briefly; never across an await or a delivery).
    pub(crate) fn db(&self) -> std::sync::MutexGuard<'_, Db> {
        lock(&self.db)
    }

    /// The provider database, shared with signal deliveries (their outbox).
    pub(crate) fn db_handle(&self) -> Arc<Mutex<Db>> {
        self.db.clone()
    }

    /// Signal deliveries not yet done (kept in the outbox; see `signals`).
    pub fn pending_deliveries(&self) -> Result<i64, crate::store::DbError> {
        self.db().count("outbox")
    }

    /// Drops the live behaviour state of an ended session.
    pub(crate) fn forget_live(&self, sid: &str) {
        if let Some(engine) = &self.behavior {
            engine.forget_live(sid);
        }
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.config.issuer)
    }

    pub fn discovery(&self) -> serde_json::Value {
        let algs: Vec<&str> = self.keys.algs().iter().map(|a| a.as_str()).collect();
        json!({
            "issuer": self.config.issuer,
            "authorization_endpoint": self.endpoint("/authorize"),
            "token_endpoint": self.endpoint("/token"),
            "userinfo_endpoint": self.endpoint("/userinfo"),
            "jwks_uri": self.endpoint("/jwks"),
            "end_session_endpoint": self.endpoint("/end_session"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr",
                "amr", "sid", "preferred_username", "name", "email", "email_verified", BEHAVIOR_CLAIM],
            "claims_parameter_supported": true,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
            "acr_values_supported": [acr(0), acr(1), acr(2)],
            "prompt_values_supported": ["none", "login"],
            "authorization_response_iss_parameter_supported": true,
            "userinfo_signing_alg_values_supported": [],
            "backchannel_logout_supported": true,
            "backchannel_logout_session_supported": true,
        })
    }

    // ---------------------------------------------------------------- authorization

    /// Checks client and redirect URI first: if either is wrong the user sees an error page
    /// and is never redirected (an open redirector otherwise).
    pub fn validate_authorize(
        &self,
        p: &HashMap<String, String>,
    ) -> Result<AuthRequest, AuthorizeError> {
        let get = |k: &str| p.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let client_id =
            get("client_id").ok_or((None, oauth("invalid_request", "client_id missing")))?;
        let client = self
            .config
            .client(client_id)
            .ok_or((None, oauth("unauthorized_client", "unknown client_id")))?;
        let redirect_uri =
            get("redirect_uri").ok_or((None, oauth("invalid_request", "redirect_uri missing")))?;
        if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
            return Err((
                None,
                oauth(
                    "invalid_request",
                    "redirect_uri is not registered for this client",
                ),
            ));
        }
        let state = get("state").map(str::to_string);
        let back = Some((redirect_uri.to_string(), state.clone()));
        let fail = |code, d: &str| (back.clone(), oauth(code, d));
        for unsupported in ["request", "request_uri", "registration"] {
            if p.contains_key(unsupported) {
                let code = match unsupported {
                    "request" => "request_not_supported",
                    "request_uri" => "request_uri_not_supported",
                    _ => "registration_not_supported",
                };
                return Err(fail(code, "not supported"));
            }
        }
        if get("response_type") != Some("code") {
            return Err(fail("unsupported_response_type", "only response_type=code"));
        }
        if let Some(mode) = get("response_mode") {
            if mode != "query" {
                return Err(fail("invalid_request", "only response_mode=query"));
            }
        }
        let scope = get("scope").unwrap_or("");
        if !scope.split(' ').any(|s| s == "openid") {
            return Err(fail("invalid_scope", "scope must include openid"));
        }
        let code_challenge = get("code_challenge").ok_or_else(|| {
            fail(
                "invalid_request",
                "PKCE is required: code_challenge missing",
            )
        })?;
        if get("code_challenge_method") != Some("S256") {
            return Err(fail(
                "invalid_request",
                "PKCE code_challenge_method must be S256",
            ));
        }
        if code_challenge.len() != 43
            || URL_SAFE_NO_PAD.decode(code_challenge).map(|d| d.len()) != Ok(32)
        {
            return Err(fail(
                "invalid_request",
                "code_challenge is not a base64url SHA-256",
            ));
        }
        let nonce = get("nonce").map(str::to_string);
        if nonce.as_ref().is_some_and(|n| n.len() > 512)
            || state.as_ref().is_some_and(|s| s.len() > 1024)
        {
            return Err(fail("invalid_request", "state or nonce too long"));
        }
        let max_age = match get("max_age") {
            None => None,
            Some(v) => Some(v.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
                fail("invalid_request", "max_age must be a non-negative integer")
            })?),
        };
        let prompts: Vec<&str> = get("prompt")
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .collect();
        let prompt_none = prompts.contains(&"none");
        let prompt_login = prompts.contains(&"login");
        if prompt_none && prompts.len() > 1 {
            return Err(fail("invalid_request", "prompt=none cannot be combined"));
        }
        if prompts
            .iter()
            .any(|p| !matches!(*p, "none" | "login" | "consent" | "select_account"))
        {
            return Err(fail("invalid_request", "unknown prompt value"));
        }
        let mut required_loa = 0;
        let mut essential = false;
        if let Some(values) = get("acr_values") {
            if let Some(l) = values.split(' ').filter_map(parse_loa).min() {
                required_loa = l;
            }
        }
        if let Some(claims) = get("claims") {
            let v: serde_json::Value = serde_json::from_str(claims)
                .map_err(|_| fail("invalid_request", "claims is not JSON"))?;
            if !v.is_object() {
                return Err(fail("invalid_request", "claims must be a JSON object"));
            }
            let acr_req = v.get("id_token").and_then(|t| t.get("acr"));
            if let Some(r) = acr_req.filter(|r| r.is_object()) {
                let mut wanted: Vec<u8> = Vec::new();
                if let Some(s) = r.get("value").and_then(|v| v.as_str()) {
                    wanted.extend(parse_loa(s));
                }
                if let Some(a) = r.get("values").and_then(|v| v.as_array()) {
                    wanted.extend(a.iter().filter_map(|v| v.as_str()).filter_map(parse_loa));
                }
                if let Some(l) = wanted.into_iter().min() {
                    required_loa = required_loa.max(l);
                    essential = r.get("essential").and_then(|e| e.as_bool()) == Some(true);
                }
            }
        }
        Ok(AuthRequest {
            client_id: client_id.to_string(),
            redirect_uri: redirect_uri.to_string(),
            state,
            nonce,
            code_challenge: code_challenge.to_string(),
            scope: scope.to_string(),
            required_loa,
            essential,
            max_age,
            prompt_login,
            prompt_none,
        })
    }

    fn error_redirect(&self, redirect_uri: &str, state: Option<&str>, e: &OAuthError) -> String {
        let mut u = url::Url::parse(redirect_uri)
            .unwrap_or_else(|_| url::Url::parse("about:blank").expect("static URL"));
        {
            let mut q = u.query_pairs_mut();
            q.append_pair("error", e.code);
            q.append_pair("error_description", &e.description);
            if let Some(s) = state {
                q.append_pair("state", s);
            }
            q.append_pair("iss", &self.config.issuer);
        }
        u.to_string()
    }

    /// GET/POST /authorize: returns what the browser should get. `browser` is the
    /// browser's `habitus_oidc_browser` cookie (a new random one when it has none): a
    /// login page shown here can be answered only by a form post carrying the same
    /// cookie. So a login transaction opened by an attacker in their own browser cannot
    /// be completed from the victim's (login CSRF), whatever the browser says about
    /// where a post comes from. The cookie is `SameSite=Lax`: sent on the cross-site
    /// navigation from a relying party to `/authorize` (so a second tab's login keeps
    /// the first one's value), never with another site's form post.
    pub fn authorize(
        &self,
        p: &HashMap<String, String>,
        cookie: Option<&str>,
        browser: &str,
    ) -> LoginOutcome {
        let req = match self.validate_authorize(p) {
            Ok(r) => r,
            Err((None, e)) => {
                return LoginOutcome::ErrorPage(pages::error_page(e.code, &e.description))
            }
            Err((Some((uri, state)), e)) => {
                return LoginOutcome::Redirect(self.error_redirect(&uri, state.as_deref(), &e))
            }
        };
        let now = now_unix();
        // Single sign-on: reuse the browser's session if it satisfies the request.
        if let Some(cookie) = cookie {
            let session = lock(&self.db).session_by_cookie(cookie, now).ok().flatten();
            if let Some(s) = session {
                let fresh = req.max_age.map_or(true, |m| now - s.auth_time <= m);
                let level = parse_loa(&s.acr).unwrap_or(0);
                if !req.prompt_login && fresh && level >= req.required_loa {
                    return LoginOutcome::Redirect(self.issue_code(&req, &s.sid, now));
                }
            }
        }
        if req.prompt_none {
            return LoginOutcome::Redirect(self.error_redirect(
                &req.redirect_uri,
                req.state.as_deref(),
                &oauth("login_required", "no session satisfies the request"),
            ));
        }
        let tx = random_token();
        let mut txs = lock(&self.txs);
        txs.retain(|_, t| t.expires > now);
        if txs.len() >= MAX_TRANSACTIONS {
            // Opening a login page costs nothing, so a flood of them must not lock out the
            // people already signing in: make room by dropping the oldest login nobody has
            // typed into (no events, no attempt), else the oldest with no password attempt
            // yet. Posting a behaviour event costs as little as opening the page, so a
            // flood that does both must not fill the table either (it did: a login with
            // events was never dropped). Only when every slot holds a login past its first
            // password attempt is the new one turned away.
            let idle = txs
                .iter()
                .filter(|(_, t)| t.attempts == 0 && matches!(t.stage, Stage::Password))
                .min_by_key(|(_, t)| (!t.events.is_empty(), t.expires))
                .map(|(k, _)| k.clone());
            if let Some(k) = idle {
                txs.remove(&k);
            }
        }
        if txs.len() >= MAX_TRANSACTIONS {
            return LoginOutcome::ErrorPage(pages::error_page(
                "temporarily_unavailable",
                "too many logins in progress; try again shortly",
            ));
        }
        txs.insert(
            tx.clone(),
            LoginTx {
                request: req,
                browser: browser.to_string(),
                expires: now + self.config.lifetimes.login_s as i64,
                events: Vec::new(),
                next_seq: 0,
                last_t_us: 0,
                stage: Stage::Password,
                attempts: 0,
            },
        );
        LoginOutcome::Page(pages::login_page(&tx, None))
    }

    fn issue_code(&self, req: &AuthRequest, sid: &str, now: i64) -> String {
        let code = random_token();
        let mut codes = lock(&self.codes);
        codes.retain(|_, c| c.expires > now);
        // Bounded: a signed-in browser can ask for codes in a loop (each /authorize with the
        // SSO cookie issues one). The oldest unredeemed code goes first; its client then
        // gets `invalid_grant` and starts again.
        if codes.len() >= MAX_CODES {
            let oldest = codes
                .iter()
                .min_by_key(|(_, c)| c.expires)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                codes.remove(&k);
            }
        }
        codes.insert(
            code.clone(),
            CodeGrant {
                client_id: req.client_id.clone(),
                redirect_uri: req.redirect_uri.clone(),
                code_challenge: req.code_challenge.clone(),
                sid: sid.to_string(),
                nonce: req.nonce.clone(),
                scope: req.scope.clone(),
                expires: now + self.config.lifetimes.code_s as i64,
                used: false,
            },
        );
        let mut u = url::Url::parse(&req.redirect_uri).expect("validated redirect URI");
        {
            let mut q = u.query_pairs_mut();
            q.append_pair("code", &code);
            if let Some(s) = &req.state {
                q.append_pair("state", s);
            }
            q.append_pair("iss", &self.config.issuer);
        }
        u.to_string()
    }

    // ---------------------------------------------------------------- behaviour

    /// POST /collect. `Err((status, message))`: nothing was stored. A batch names its login
    /// transaction (`tx`); without one it belongs to the live SSO session named by the
    /// collect token (`bearer`) or else by the SSO `cookie`.
    /// Blocking (plugins score live batches): call from a blocking thread.
    pub fn collect(
        &self,
        body: &[u8],
        cookie: Option<&str>,
        bearer: Option<&str>,
    ) -> Result<usize, (StatusCode, String)> {
        if body.len() > MAX_COLLECT_BODY {
            return Err((StatusCode::PAYLOAD_TOO_LARGE, "batch too large".into()));
        }
        let batch: Batch = serde_json::from_slice(body)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("malformed batch: {e}")))?;
        let Some(engine) = &self.behavior else {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "behaviour scoring is off".into(),
            ));
        };
        let now = now_unix();
        let Some(tx_id) = &batch.tx else {
            return self.collect_live(engine, &batch, cookie, bearer, now);
        };
        let mut txs = lock(&self.txs);
        let tx = txs
            .get_mut(tx_id)
            .filter(|t| t.expires > now && matches!(t.stage, Stage::Password))
            .ok_or((
                StatusCode::NOT_FOUND,
                "no such login in progress".to_string(),
            ))?;
        if batch.seq != tx.next_seq {
            return Err((
                StatusCode::CONFLICT,
                format!(
                    "batch {} out of sequence (expected {})",
                    batch.seq, tx.next_seq
                ),
            ));
        }
        let events = behavior::convert(&batch.events, tx.last_t_us, engine.hasher())
            .map_err(|e| (StatusCode::BAD_REQUEST, e))?;
        if tx.events.len() + events.len() > MAX_TX_EVENTS {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                "too many events for one login".into(),
            ));
        }
        tx.next_seq += 1;
        tx.last_t_us = events.last().map(|e| e.t_us).unwrap_or(tx.last_t_us);
        let n = events.len();
        tx.events.extend(events);
        Ok(n)
    }

    /// A batch for a live session: scored with the session's running trust; the session's
    /// `acr` and behaviour claim follow, and the signals fire (docs/oidc.md, "Drift
    /// signals").
    fn collect_live(
        &self,
        engine: &BehaviorEngine,
        batch: &Batch,
        cookie: Option<&str>,
        bearer: Option<&str>,
        now: i64,
    ) -> Result<usize, (StatusCode, String)> {
        let session = match (bearer, cookie) {
            (Some(token), _) => {
                let sid = self.sid_of_collect_token(token).ok_or((
                    StatusCode::UNAUTHORIZED,
                    "invalid collect token".to_string(),
                ))?;
                lock(&self.db).session(&sid, now)
            }
            (None, Some(cookie)) => lock(&self.db).session_by_cookie(cookie, now),
            (None, None) => {
                return Err((
                    StatusCode::UNAUTHORIZED,
                    "no tx, no collect token and no session cookie".to_string(),
                ))
            }
        }
        .ok()
        .flatten()
        .ok_or((StatusCode::NOT_FOUND, "no live session".to_string()))?;
        let (n, claim) = engine
            .collect_live(
                &session.sid,
                &session.user,
                batch,
                session.behavior.trust,
                now,
            )
            .map_err(|e| match e {
                behavior::LiveError::OutOfSequence(expected) => (
                    StatusCode::CONFLICT,
                    format!("batch {} out of sequence (expected {expected})", batch.seq),
                ),
                behavior::LiveError::Invalid(m) => (StatusCode::BAD_REQUEST, m),
                behavior::LiveError::Busy => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many live sessions".to_string(),
                ),
            })?;
        let Some(claim) = claim else {
            return Ok(n);
        };
        if claim.state == "drift" && self.config.signals.revoke_on_drift {
            eprintln!(
                "habitus-oidc: behaviour drift: ending a session of {}",
                session.user
            );
            self.revoke_session(&session.sid, Revocation::Drift);
            return Ok(n);
        }
        let previous = parse_loa(&session.acr).unwrap_or(0);
        let current = claim.loa();
        if let Err(e) = lock(&self.db).update_session_behavior(&session.sid, &acr(current), &claim)
        {
            eprintln!("habitus-oidc: error: {e}");
            return Ok(n);
        }
        if current != previous {
            self.assurance_changed(
                &session.user,
                &acr(previous),
                &acr(current),
                current > previous,
            );
        }
        Ok(n)
    }

    /// Is `origin` allowed to post to /collect?
    pub fn collect_origin_allowed(&self, origin: &str) -> bool {
        let own = url::Url::parse(&self.config.issuer)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        origin == own || self.config.collect_origins.iter().any(|o| o == origin)
    }

    // ---------------------------------------------------------------- login

    /// A new device cookie value for `user` (see [`DEVICE_COOKIE`]): their name, a
    /// random id for this browser, the time it was issued, and an HMAC of the three
    /// under the store's device key.
    fn device_cookie_for(&self, user: &str, now: i64) -> String {
        let id = random_token();
        let tag = ring::hmac::sign(&self.device_key, device_message(user, &id, now).as_bytes());
        format!(
            "v2.{}.{id}.{now}.{}",
            URL_SAFE_NO_PAD.encode(user.as_bytes()),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// The browser id of `cookie` if it is a device cookie this provider gave, within
    /// [`DEVICE_COOKIE_MAX_AGE_S`] of `now`, to a browser in which `user` (exactly)
    /// signed in.
    fn device_vouches(&self, cookie: &str, user: &str, now: i64) -> Option<String> {
        let parts: Vec<&str> = cookie.split('.').collect();
        let ["v2", name, id, issued, tag] = parts[..] else {
            return None;
        };
        let issued: i64 = issued.parse().ok()?;
        let age = now.checked_sub(issued)?;
        if !(-300..=DEVICE_COOKIE_MAX_AGE_S as i64).contains(&age) {
            return None;
        }
        let name = URL_SAFE_NO_PAD.decode(name).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        (name == user.as_bytes()
            && ring::hmac::verify(
                &self.device_key,
                device_message(user, id, issued).as_bytes(),
                &tag,
            )
            .is_ok())
        .then(|| id.to_string())
    }

    /// The key `user`'s password attempts are counted under, or `None` for a name that
    /// can never sign in (nothing to protect; counting invented names would let a flood
    /// of them crowd real accounts' counts out of the table). Users file: the exact
    /// name, as the file compares names. PAM: the account NSS resolves the name to (uid
    /// and its own name), so that the spellings a directory takes for one account
    /// (`Bob`, `bob@EXAMPLE`) share one count; a name NSS does not know (a stack that
    /// signs in users without a passwd entry, such as pam_radius) is counted by its
    /// exact spelling.
    fn account_key(&self, user: &str) -> Option<String> {
        match self.config.primary.method {
            PrimaryMethod::UsersFile => self
                .users
                .users
                .contains_key(user)
                .then(|| format!("user:{user}")),
            PrimaryMethod::Pam if !crate::users::valid_user_name(user) => None,
            PrimaryMethod::Pam => Some(match crate::pam::account_of(user) {
                Some((uid, own)) => format!("account:{uid}:{own}"),
                None => format!("name:{user}"),
            }),
        }
    }

    /// POST /login (password). Blocking (argon2, plugins): call from a blocking thread.
    /// `device`: the browser's device cookies, if it sent any.
    pub fn login_password(
        &self,
        tx_id: &str,
        browser: Option<&str>,
        device: &[String],
        user: &str,
        password: &str,
    ) -> LoginOutcome {
        let now = now_unix();
        let (events, req) = {
            let mut txs = lock(&self.txs);
            let Some(tx) = txs.get_mut(tx_id).filter(|t| t.expires > now) else {
                return LoginOutcome::ErrorPage(pages::error_page(
                    "login_expired",
                    "this login page has expired; go back to the application and start again",
                ));
            };
            if let Some(refused) = other_browser(tx, browser) {
                return refused;
            }
            if !matches!(tx.stage, Stage::Password) {
                return LoginOutcome::ErrorPage(pages::error_page(
                    "invalid_request",
                    "password already given",
                ));
            }
            tx.attempts += 1;
            if tx.attempts > MAX_PASSWORD_ATTEMPTS {
                let req = tx.request.clone();
                txs.remove(tx_id);
                return LoginOutcome::Redirect(self.error_redirect(
                    &req.redirect_uri,
                    req.state.as_deref(),
                    &oauth("access_denied", "too many failed attempts"),
                ));
            }
            (std::mem::take(&mut tx.events), tx.request.clone())
        };
        // Attempts are counted per account, except in a browser where this user signed
        // in before: there per browser, so a throttled account stays open to its owner.
        // Each attempt is counted before it is checked, so parallel posts cannot race
        // past the limit.
        let counted = match device
            .iter()
            .find_map(|d| self.device_vouches(d, user, now))
        {
            Some(id) => Some((&self.device_failures, id)),
            None => self
                .account_key(user)
                .map(|key| (&self.password_failures, key)),
        };
        let allowed = match &counted {
            Some((table, key)) => lock(table).attempt(key, now).is_ok(),
            None => true,
        };
        // A throttled attempt is checked all the same, so that it takes as long as any
        // other, but its outcome is ignored (a guess now tells nothing), and it is
        // answered exactly like a wrong password: neither the pause nor which names are
        // accounts can be told from the answer or its timing.
        let passed = self.primary_authentication(user, password);
        if !allowed || !passed {
            // Behaviour of a failed attempt is discarded, and the collector starts over.
            if let Some(tx) = lock(&self.txs).get_mut(tx_id) {
                tx.last_t_us = 0;
                // The re-rendered page runs a new collector, which numbers from 0.
                tx.next_seq = 0;
            }
            return LoginOutcome::Page(pages::login_page(tx_id, Some(SIGN_IN_FAILED)));
        };
        if let Some((table, key)) = &counted {
            lock(table).succeeded(key);
        }
        let has_totp = self.users.users.get(user).is_some_and(|u| u.totp.is_some());
        let (behavior, learning) = match &self.behavior {
            Some(engine) => {
                let (claim, learning) = engine.assess_login(user, &events, now);
                (claim, Some(learning))
            }
            None => (
                BehaviorClaim {
                    trust: None,
                    state: "unenrolled".into(),
                    modalities: Vec::new(),
                    evaluated_at: now,
                },
                None,
            ),
        };
        drop(events);
        let loa = behavior.loa();
        // A user who has a second factor enrols only from logins that passed it: the
        // password alone does not prove whose rhythm is being learned.
        let enrolling = learning.as_ref().is_some_and(|l| l.enrols());
        let prove_enrolment =
            has_totp && enrolling && self.config.behavior.enrol_with_second_factor;
        if loa >= req.required_loa && !prove_enrolment {
            return self.finish_login(tx_id, user, behavior, false, learning);
        }
        if has_totp {
            if let Some(tx) = lock(&self.txs).get_mut(tx_id) {
                tx.stage = Stage::Totp {
                    user: user.to_string(),
                    behavior,
                    learning,
                };
                tx.attempts = 0;
            }
            return LoginOutcome::Page(pages::totp_page(tx_id, None));
        }
        if req.essential {
            lock(&self.txs).remove(tx_id);
            return LoginOutcome::Redirect(self.error_redirect(
                &req.redirect_uri,
                req.state.as_deref(),
                &oauth(
                    "unmet_authentication_requirements",
                    "behaviour did not reach the requested level and the user has no step-up factor",
                ),
            ));
        }
        // acr_values are voluntary: sign in at the level reached.
        self.finish_login(tx_id, user, behavior, false, learning)
    }

    /// The password check: the users file's argon2id hash, or the PAM stack. A PAM
    /// failure's reason goes to the log only; the page says "wrong user name or password"
    /// whatever it was.
    fn primary_authentication(&self, user: &str, password: &str) -> bool {
        match self.config.primary.method {
            PrimaryMethod::UsersFile => self.users.verify(user, password).is_some(),
            PrimaryMethod::Pam => {
                // PAM user names become `sub` and store keys like any other.
                if !crate::users::valid_user_name(user) {
                    return false;
                }
                match crate::pam::authenticate(&self.config.primary.pam_service, user, password) {
                    Ok(()) => true,
                    Err(e) => {
                        // Without the name: a password typed into the user field by
                        // mistake would otherwise land in the log. The PAM stack logs
                        // failed users itself, under its own rules.
                        eprintln!("habitus-oidc: a PAM login was refused: {e}");
                        false
                    }
                }
            }
        }
    }

    /// POST /login/totp.
    pub fn login_totp(&self, tx_id: &str, browser: Option<&str>, code: &str) -> LoginOutcome {
        let now = now_unix();
        let (user, behavior, learning) = {
            let mut txs = lock(&self.txs);
            let Some(tx) = txs.get_mut(tx_id).filter(|t| t.expires > now) else {
                return LoginOutcome::ErrorPage(pages::error_page(
                    "login_expired",
                    "this login page has expired",
                ));
            };
            if let Some(refused) = other_browser(tx, browser) {
                return refused;
            }
            let Stage::Totp {
                user,
                behavior,
                learning,
            } = tx.stage.clone()
            else {
                return LoginOutcome::ErrorPage(pages::error_page(
                    "invalid_request",
                    "no code was asked",
                ));
            };
            tx.attempts += 1;
            if tx.attempts > MAX_PASSWORD_ATTEMPTS {
                let req = tx.request.clone();
                txs.remove(tx_id);
                return LoginOutcome::Redirect(self.error_redirect(
                    &req.redirect_uri,
                    req.state.as_deref(),
                    &oauth("access_denied", "too many failed attempts"),
                ));
            }
            (user, behavior, learning)
        };
        let throttled = lock(&self.totp_failures).attempt(&user, now).is_err();
        if throttled {
            return LoginOutcome::Page(pages::totp_page(
                tx_id,
                Some("Too many wrong codes for this account; wait 15 minutes and try again."),
            ));
        }
        let secret = self.users.users.get(&user).and_then(|u| u.totp.clone());
        let step = secret.and_then(|s| crate::totp::verify(&s, code, now as u64));
        let fresh = step.filter(|step| {
            let mut used = lock(&self.totp_used);
            // A code is accepted once per user (RFC 6238 §5.2).
            if used.get(&user).is_some_and(|last| *last >= *step) {
                false
            } else {
                used.insert(user.clone(), *step);
                true
            }
        });
        if fresh.is_none() {
            return LoginOutcome::Page(pages::totp_page(
                tx_id,
                Some("Wrong or already used code."),
            ));
        }
        lock(&self.totp_failures).succeeded(&user);
        self.finish_login(tx_id, &user, behavior, true, learning)
    }

    fn finish_login(
        &self,
        tx_id: &str,
        user: &str,
        behavior: BehaviorClaim,
        otp: bool,
        learning: Option<LoginLearning>,
    ) -> LoginOutcome {
        let now = now_unix();
        let Some(tx) = lock(&self.txs).remove(tx_id) else {
            return LoginOutcome::ErrorPage(pages::error_page(
                "login_expired",
                "this login page has expired",
            ));
        };
        let loa = if otp { 2 } else { behavior.loa() };
        let mut amr = vec!["pwd".to_string()];
        if !behavior.modalities.is_empty() {
            amr.push("rba".into());
        }
        if otp {
            amr.push("otp".into());
            amr.push("mfa".into());
        }
        let session = SsoSession {
            sid: random_token(),
            user: user.to_string(),
            auth_time: now,
            acr: acr(loa),
            amr,
            behavior,
            expires: now + self.config.lifetimes.session_s as i64,
        };
        let cookie = random_token();
        if let Err(e) = lock(&self.db).put_session(&session, &cookie) {
            eprintln!("habitus-oidc: error: {e}");
            return LoginOutcome::ErrorPage(pages::error_page(
                "server_error",
                "could not store the session",
            ));
        }
        // Only a completed login teaches the profiles (see `BehaviorEngine::assess_login`).
        if let (Some(engine), Some(learning)) = (&self.behavior, learning) {
            engine.commit_login(learning, now);
        }
        let location = self.issue_code(&tx.request, &session.sid, now);
        LoginOutcome::SignedIn {
            location,
            cookie,
            device: self.device_cookie_for(user, now),
        }
    }

    // ---------------------------------------------------------------- tokens

    /// Authenticates the client of a token request.
    fn client_auth(
        &self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Result<&ClientConfig, OAuthError> {
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| auth_param(v, "Basic"));
        let (id, secret) = match (basic, form.get("client_secret")) {
            (Some(_), Some(_)) => {
                return Err(oauth(
                    "invalid_request",
                    "use one client authentication method",
                ))
            }
            (Some(b), None) => {
                let raw = STANDARD
                    .decode(b.trim())
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok())
                    .ok_or_else(|| oauth("invalid_client", "malformed Basic credentials"))?;
                let (i, s) = raw
                    .split_once(':')
                    .ok_or_else(|| oauth("invalid_client", "malformed Basic credentials"))?;
                // RFC 6749 §2.3.1: both parts are form-urlencoded.
                let dec = |v: &str| {
                    url::form_urlencoded::parse(format!("x={v}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                (dec(i), dec(s))
            }
            (None, Some(s)) => (
                form.get("client_id").cloned().unwrap_or_default(),
                s.clone(),
            ),
            (None, None) => return Err(oauth("invalid_client", "client authentication required")),
        };
        if let (Some(form_id), true) = (form.get("client_id"), basic.is_some()) {
            if *form_id != id {
                return Err(oauth(
                    "invalid_request",
                    "client_id does not match the credentials",
                ));
            }
        }
        let client = self.config.client(&id);
        let expected = client
            .map(|c| c.secret.as_bytes())
            .unwrap_or(b"\0no client\0");
        let ok = crate::store::ct_eq(expected, secret.as_bytes());
        match client {
            Some(c) if ok => Ok(c),
            _ => Err(oauth("invalid_client", "unknown client or wrong secret")),
        }
    }

    /// POST /token.
    pub fn token(
        &self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Result<TokenResponse, OAuthError> {
        let client = self.client_auth(headers, form)?;
        let now = now_unix();
        match form.get("grant_type").map(String::as_str) {
            Some("authorization_code") => {
                let code = form
                    .get("code")
                    .ok_or_else(|| oauth("invalid_request", "code missing"))?;
                let verifier = form
                    .get("code_verifier")
                    .ok_or_else(|| oauth("invalid_request", "PKCE code_verifier missing"))?;
                let redirect_uri = form
                    .get("redirect_uri")
                    .ok_or_else(|| oauth("invalid_request", "redirect_uri missing"))?;
                let grant = {
                    let mut codes = lock(&self.codes);
                    let Some(g) = codes.get_mut(code.as_str()) else {
                        return Err(oauth("invalid_grant", "unknown or expired code"));
                    };
                    // Another client presenting a leaked code is refused before the replay
                    // rule, so it cannot end the rightful client's session with it.
                    if g.client_id != client.id {
                        return Err(oauth("invalid_grant", "code was issued to another client"));
                    }
                    if g.used {
                        // RFC 6749 §4.1.2: a replayed code revokes what it produced.
                        let sid = g.sid.clone();
                        drop(codes);
                        self.revoke_session(&sid, Revocation::CodeReplay);
                        return Err(oauth(
                            "invalid_grant",
                            "code already used; its tokens are revoked",
                        ));
                    }
                    if g.expires <= now {
                        return Err(oauth("invalid_grant", "code expired"));
                    }
                    // A request that fails these checks (a mistyped redirect_uri, a wrong
                    // verifier) issued nothing: the code is dropped, so it stays single
                    // use, but a later presentation is "unknown", not a replay that would
                    // end the whole session and every relying party's tokens with it.
                    let digest = URL_SAFE_NO_PAD.encode(crate::store::sha256(verifier.as_bytes()));
                    let failed = if *redirect_uri != g.redirect_uri {
                        Some("redirect_uri differs from the authorization request")
                    } else if verifier.len() < 43
                        || verifier.len() > 128
                        || !verifier.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
                        })
                    {
                        Some("malformed code_verifier")
                    } else if !crate::store::ct_eq(digest.as_bytes(), g.code_challenge.as_bytes()) {
                        Some("PKCE verification failed")
                    } else {
                        None
                    };
                    if let Some(why) = failed {
                        codes.remove(code.as_str());
                        return Err(oauth("invalid_grant", why));
                    }
                    g.used = true;
                    (g.sid.clone(), g.nonce.clone(), g.scope.clone())
                };
                let (sid, nonce, scope) = grant;
                let grant = RefreshGrant {
                    sid,
                    client: client.id.clone(),
                    scope,
                };
                let lifetime = self.config.lifetimes.refresh_token_s as i64;
                let (session, refresh) = lock(&self.db)
                    .issue_refresh(&grant, now, lifetime)
                    .map_err(|e| oauth("server_error", e.to_string()))?
                    .ok_or_else(|| oauth("invalid_grant", "the session has ended"))?;
                self.sign_tokens(client, &session, &grant.scope, nonce, refresh, now)
            }
            Some("refresh_token") => {
                let rt = form
                    .get("refresh_token")
                    .ok_or_else(|| oauth("invalid_request", "refresh_token missing"))?;
                let lifetime = self.config.lifetimes.refresh_token_s as i64;
                let rotation = lock(&self.db)
                    .rotate_refresh(rt, &client.id, now, lifetime)
                    .map_err(|e| oauth("server_error", e.to_string()))?;
                match rotation {
                    Rotation::Rotated {
                        grant,
                        session,
                        token,
                    } => self.sign_tokens(client, &session, &grant.scope, None, token, now),
                    Rotation::OtherClient => Err(oauth(
                        "invalid_grant",
                        "refresh token was issued to another client",
                    )),
                    Rotation::SessionEnded => Err(oauth("invalid_grant", "the session has ended")),
                    Rotation::Unknown | Rotation::Replayed | Rotation::Expired => Err(oauth(
                        "invalid_grant",
                        "unknown, used or expired refresh token",
                    )),
                }
            }
            Some(_) => Err(oauth(
                "unsupported_grant_type",
                "authorization_code or refresh_token",
            )),
            None => Err(oauth("invalid_request", "grant_type missing")),
        }
    }

    /// The token response for `session`: a signed access token and ID token beside
    /// `refresh`, which the caller has already stored (in the same transaction that
    /// checked the grant, so the database is locked once per token request).
    fn sign_tokens(
        &self,
        client: &ClientConfig,
        session: &SsoSession,
        scope: &str,
        nonce: Option<String>,
        refresh: String,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let l = &self.config.lifetimes;
        let access_alg = if self.keys.signer(Alg::EdDSA).is_ok() {
            Alg::EdDSA
        } else {
            Alg::RS256
        };
        let at = self
            .keys
            .sign_jwt(
                access_alg,
                "at+jwt",
                &json!({
                    "iss": self.config.issuer, "sub": session.user, "aud": self.endpoint("/userinfo"),
                    "client_id": client.id, "sid": session.sid, "scope": scope,
                    // For resource servers' step-up checks (RFC 9470; `step_up`).
                    "acr": session.acr, "auth_time": session.auth_time,
                    "iat": now, "exp": now + l.access_token_s as i64, "jti": random_token(),
                }),
            )
            .map_err(|e| oauth("server_error", e))?;
        let id_token = self
            .id_token(client, session, scope, nonce, &at, now)
            .map_err(|e| oauth("server_error", e))?;
        Ok(TokenResponse {
            access_token: at,
            token_type: "Bearer",
            expires_in: l.access_token_s,
            id_token,
            refresh_token: refresh,
            scope: scope.to_string(),
            habitus_collect_token: self
                .behavior
                .as_ref()
                .map(|_| self.collect_token(&session.sid)),
        })
    }

    /// `hc1.<sid>.<HMAC-SHA256(sid)>`: names an SSO session for `/collect` only. It is
    /// checked in constant time and then the session must still be live, so ending the
    /// session (or a restart) ends the token.
    pub fn collect_token(&self, sid: &str) -> String {
        let tag = ring::hmac::sign(&self.collect_key, format!("collect:{sid}").as_bytes());
        format!("hc1.{sid}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The `sid` a collect token names, if its signature holds.
    fn sid_of_collect_token(&self, token: &str) -> Option<String> {
        let rest = token.strip_prefix("hc1.")?;
        let (sid, tag) = rest.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        ring::hmac::verify(&self.collect_key, format!("collect:{sid}").as_bytes(), &tag).ok()?;
        Some(sid.to_string())
    }

    fn id_token(
        &self,
        client: &ClientConfig,
        s: &SsoSession,
        scope: &str,
        nonce: Option<String>,
        access_token: &str,
        now: i64,
    ) -> Result<String, String> {
        let ts = |t: i64| chrono::DateTime::from_timestamp(t, 0).unwrap_or_default();
        let issuer = IssuerUrl::new(self.config.issuer.clone()).map_err(|e| e.to_string())?;
        let mut standard = StandardClaims::new(SubjectIdentifier::new(s.user.clone()));
        if scope.split(' ').any(|x| x == "profile") {
            standard = standard.set_preferred_username(Some(EndUserUsername::new(s.user.clone())));
            if let Some(name) = self.users.users.get(&s.user).and_then(|u| u.name.clone()) {
                standard = standard.set_name(Some(LocalizedClaim::from(EndUserName::new(name))));
            }
        }
        if let Some((email, verified)) = self.email_of(&s.user, scope) {
            standard = standard
                .set_email(Some(EndUserEmail::new(email)))
                .set_email_verified(Some(verified));
        }
        let claims = IdTokenClaims::new(
            issuer,
            vec![Audience::new(client.id.clone())],
            ts(now + self.config.lifetimes.id_token_s as i64),
            ts(now),
            standard,
            HabitusClaims {
                sid: s.sid.clone(),
                behavior: s.behavior.clone(),
            },
        )
        .set_auth_time(Some(ts(s.auth_time)))
        .set_nonce(nonce.map(Nonce::new))
        .set_auth_context_ref(Some(AuthenticationContextClass::new(s.acr.clone())))
        .set_auth_method_refs(Some(
            s.amr
                .iter()
                .cloned()
                .map(AuthenticationMethodReference::new)
                .collect(),
        ));
        let alg = client.id_token_signed_response_alg;
        let key = self.keys.signer(alg).map_err(|e| e.to_string())?;
        let token: HabitusIdToken = IdToken::new(
            claims,
            key,
            core_alg(alg),
            Some(&AccessToken::new(access_token.to_string())),
            None,
        )
        .map_err(|e| e.to_string())?;
        Ok(token.to_string())
    }

    /// GET/POST /userinfo: the claims of a valid access token's live session.
    pub fn userinfo(&self, access_token: &str) -> Result<serde_json::Value, OAuthError> {
        let now = now_unix();
        let invalid = || oauth("invalid_token", "the access token is invalid or expired");
        let claims = self
            .keys
            .verify_jwt(access_token, Some("at+jwt"))
            .ok_or_else(invalid)?;
        if claims.get("iss").and_then(|v| v.as_str()) != Some(self.config.issuer.as_str())
            || claims
                .get("exp")
                .and_then(|v| v.as_i64())
                .map_or(true, |e| e <= now)
        {
            return Err(invalid());
        }
        let sid = claims
            .get("sid")
            .and_then(|v| v.as_str())
            .ok_or_else(invalid)?;
        let session = lock(&self.db)
            .session(sid, now)
            .ok()
            .flatten()
            .ok_or_else(invalid)?;
        let mut out = json!({
            "sub": session.user,
            BEHAVIOR_CLAIM: session.behavior,
        });
        let scope = claims.get("scope").and_then(|v| v.as_str()).unwrap_or("");
        if scope.split(' ').any(|x| x == "profile") {
            out["preferred_username"] = session.user.clone().into();
            if let Some(name) = self
                .users
                .users
                .get(&session.user)
                .and_then(|u| u.name.clone())
            {
                out["name"] = name.into();
            }
        }
        if let Some((email, verified)) = self.email_of(&session.user, scope) {
            out["email"] = email.into();
            out["email_verified"] = verified.into();
        }
        Ok(out)
    }

    /// `email` and `email_verified` of `user` when `scope` holds `email` and the users
    /// file has an address for the user.
    /// `user`'s address from the users file, if it is marked verified.
    pub(crate) fn verified_email(&self, user: &str) -> Option<&str> {
        let u = self.users.users.get(user)?;
        u.email.as_deref().filter(|_| u.email_verified)
    }

    fn email_of(&self, user: &str, scope: &str) -> Option<(String, bool)> {
        if !scope.split(' ').any(|x| x == "email") {
            return None;
        }
        let u = self.users.users.get(user)?;
        Some((u.email.clone()?, u.email_verified))
    }

    /// GET/POST /end_session: ends the session named by the hint or the cookie.
    pub fn end_session(
        &self,
        p: &HashMap<String, String>,
        cookie: Option<&str>,
        confirmed: bool,
    ) -> EndSessionOutcome {
        let now = now_unix();
        let hint = p
            .get("id_token_hint")
            .and_then(|t| self.verify_own_id_token(t));
        if p.contains_key("id_token_hint") && hint.is_none() {
            return EndSessionOutcome::Refused(pages::error_page(
                "invalid_request",
                "id_token_hint is not an ID token of this provider",
            ));
        }
        let audience: Vec<String> = match hint.as_ref().and_then(|c| c.get("aud")) {
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        // RP-Initiated Logout §2: with both, the client must be the hint's audience.
        if let (Some(c), Some(_)) = (p.get("client_id"), &hint) {
            if !audience.contains(c) {
                return EndSessionOutcome::Refused(pages::error_page(
                    "invalid_request",
                    "client_id is not the audience of the id_token_hint",
                ));
            }
        }
        // Without a hint, nothing shows the request comes from a relying party of this
        // session: a bare link on any site would sign the user out. Ask first.
        if hint.is_none() && !confirmed {
            let keep: Vec<(&str, &str)> = ["client_id", "post_logout_redirect_uri", "state"]
                .iter()
                .filter_map(|k| p.get(*k).map(|v| (*k, v.as_str())))
                .collect();
            return EndSessionOutcome::Confirm(pages::end_session_confirm_page(&keep));
        }
        let mut sid = hint
            .as_ref()
            .and_then(|c| c.get("sid")?.as_str().map(str::to_string));
        if sid.is_none() {
            if let Some(c) = cookie {
                sid = lock(&self.db)
                    .session_by_cookie(c, now)
                    .ok()
                    .flatten()
                    .map(|s| s.sid);
            }
        }
        if let Some(sid) = &sid {
            self.revoke_session(sid, Revocation::Logout);
        }
        let client_id = p
            .get("client_id")
            .cloned()
            .or_else(|| audience.first().cloned());
        let target = p.get("post_logout_redirect_uri").and_then(|uri| {
            let client = self.config.client(client_id.as_deref()?)?;
            client
                .post_logout_redirect_uris
                .iter()
                .any(|u| u == uri)
                .then(|| {
                    let mut u = url::Url::parse(uri).ok()?;
                    if let Some(s) = p.get("state") {
                        u.query_pairs_mut().append_pair("state", s);
                    }
                    Some(u.to_string())
                })?
        });
        EndSessionOutcome::SignedOut {
            target,
            page: pages::signed_out_page(),
        }
    }

    /// Claims of an ID token we signed (expiry not checked: hints may be expired).
    fn verify_own_id_token(&self, token: &str) -> Option<serde_json::Value> {
        let claims = self.keys.verify_jwt(token, None)?;
        (claims.get("iss")?.as_str()? == self.config.issuer).then_some(claims)
    }
}

fn parse_loa(s: &str) -> Option<u8> {
    s.strip_prefix(ACR_PREFIX)?.parse().ok().filter(|l| *l <= 2)
}

// -------------------------------------------------------------------- HTTP layer

pub type Shared = Arc<Provider>;

pub fn router(provider: Shared) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route(
            "/authorize",
            get(authorize_get).post(authorize_post).layer(form_limit()),
        )
        .route("/login", post(login).layer(form_limit()))
        .route("/login/totp", post(login_totp).layer(form_limit()))
        .route("/collect", post(collect).options(collect_preflight))
        .route("/collector.js", get(collector_js))
        .route("/token", post(token).layer(form_limit()))
        .route(
            "/userinfo",
            get(userinfo).post(userinfo).layer(form_limit()),
        )
        .route(
            "/end_session",
            get(end_session_get)
                .post(end_session_post)
                .layer(form_limit()),
        )
        .route(
            "/.well-known/ssf-configuration",
            get(signals::ssf_configuration),
        )
        .route(
            "/ssf/stream",
            post(signals::stream_create)
                .get(signals::stream_get)
                .delete(signals::stream_delete),
        )
        // The largest body any route takes; form routes have their own, tighter limit
        // (the innermost limit is the one applied).
        .layer(axum::extract::DefaultBodyLimit::max(MAX_COLLECT_BODY))
        .with_state(provider)
}

/// [`MAX_FORM_BODY`] for a route that takes a form.
fn form_limit() -> axum::extract::DefaultBodyLimit {
    axum::extract::DefaultBodyLimit::max(MAX_FORM_BODY)
}

fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

fn html(body: String) -> Response {
    let mut r = no_store(Html(body).into_response());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // No referrer to other sites. `same-origin` rather than `no-referrer`: with the
    // latter, browsers send `Origin: null` with our own form posts, and the login forms
    // need their real origin (see `cross_site_form_refused`).
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

fn cookie_value(p: &Provider, headers: &HeaderMap) -> Option<String> {
    named_cookies(headers, &cookie_name(p, SESSION_COOKIE)).next()
}

/// The name a cookie is set and read under: on an https issuer `__Host-` + `base`. A
/// browser keeps a `__Host-` cookie only when it was set over https by this very host,
/// with `Secure`, `Path=/` and no `Domain` (as [`set_cookie`] sets them), so a sibling
/// domain (`evil.example.com` beside `sso.example.com`) can neither plant nor shadow the
/// session or the login binding. An http issuer (a demo, a test) cannot use the prefix.
fn cookie_name(p: &Provider, base: &str) -> String {
    if https_issuer(p) {
        format!("__Host-{base}")
    } else {
        base.to_string()
    }
}

fn https_issuer(p: &Provider) -> bool {
    p.config.issuer.starts_with("https://")
}

/// Every value of cookie `name`, in the order the request gives them.
fn named_cookies<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = String> + 'a {
    let prefix = format!("{name}=");
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |c| c.trim().strip_prefix(prefix.as_str()).map(str::to_string))
}

/// A login form posted by another browser than the one that opened the login page
/// (no cookie, or another one): refused, and the login itself is left as it was, so a
/// forged post cannot cancel or use up the real user's attempts.
fn other_browser(tx: &LoginTx, browser: Option<&str>) -> Option<LoginOutcome> {
    let same = browser.is_some_and(|b| crate::store::ct_eq(b.as_bytes(), tx.browser.as_bytes()));
    (!same).then(|| {
        LoginOutcome::Refused(pages::error_page(
            "invalid_request",
            "this login was started in another browser, or this browser did not keep its cookie; start again from the application",
        ))
    })
}

/// The device cookies of a plausible shape that were sent, every one (a cookie planted
/// under a narrower path comes first and must not hide the real one); each is checked
/// by [`Provider::device_vouches`].
fn device_cookies(p: &Provider, headers: &HeaderMap) -> Vec<String> {
    named_cookies(headers, &cookie_name(p, DEVICE_COOKIE))
        .filter(|v| {
            (1..=300).contains(&v.len())
                && v.starts_with("v2.")
                && v.split('.').count() == 5
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        })
        .take(32)
        .collect()
}

/// What a device cookie's tag is computed over.
fn device_message(user: &str, id: &str, issued: i64) -> String {
    format!("device:{user}\n{id}\n{issued}")
}

/// The browser cookie: the first well-formed one (a malformed cookie of the same name,
/// say one planted by a sibling domain, must not hide the real one).
fn browser_cookie(p: &Provider, headers: &HeaderMap) -> Option<String> {
    named_cookies(headers, &cookie_name(p, BROWSER_COOKIE)).find(|v| {
        (20..=64).contains(&v.len())
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

fn outcome(p: &Provider, o: LoginOutcome) -> Response {
    match o {
        LoginOutcome::Page(body) => html(body),
        LoginOutcome::ErrorPage(body) => {
            let mut r = html(body);
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r
        }
        LoginOutcome::Refused(body) => {
            let mut r = html(body);
            *r.status_mut() = StatusCode::FORBIDDEN;
            r
        }
        LoginOutcome::Redirect(to) => no_store(Redirect::to(&to).into_response()),
        LoginOutcome::SignedIn {
            location,
            cookie,
            device,
        } => {
            let mut r = no_store(Redirect::to(&location).into_response());
            set_cookie(
                p,
                &mut r,
                SESSION_COOKIE,
                &cookie,
                p.config.lifetimes.session_s,
            );
            set_cookie(p, &mut r, DEVICE_COOKIE, &device, DEVICE_COOKIE_MAX_AGE_S);
            r
        }
    }
}

/// Adds `Set-Cookie: name=value` (HttpOnly, SameSite=Lax, whole site; `Secure` and the
/// `__Host-` prefix on an https issuer, see [`cookie_name`]) lasting `max_age_s` (0
/// removes it).
fn set_cookie(p: &Provider, r: &mut Response, base: &str, value: &str, max_age_s: u64) {
    let name = cookie_name(p, base);
    let secure = if https_issuer(p) { "; Secure" } else { "" };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_s}{secure}"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

async fn discovery(State(p): State<Shared>) -> Response {
    Json(p.discovery()).into_response()
}

async fn jwks(State(p): State<Shared>) -> Response {
    let mut r = Json(p.keys.jwks()).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    r
}

async fn authorize_get(
    State(p): State<Shared>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    match parse_params(q.unwrap_or_default().as_bytes()) {
        Ok(q) => authorize_reply(&p, &headers, &q),
        Err(e) => invalid_request_page(&e),
    }
}

async fn authorize_post(State(p): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    match parse_form(&headers, &body) {
        Ok(q) => authorize_reply(&p, &headers, &q),
        Err(e) => invalid_request_page(&e.description),
    }
}

/// A request that cannot be read as one: a 400 error page. For `/authorize` never a
/// redirect (which `redirect_uri` was meant is not known).
fn invalid_request_page(why: &str) -> Response {
    let mut r = html(pages::error_page("invalid_request", why));
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r
}

/// `/authorize`, and with a login page the browser cookie its form must come back with
/// (the browser's own if it has one, so logins in several tabs all stay valid).
fn authorize_reply(p: &Provider, headers: &HeaderMap, q: &HashMap<String, String>) -> Response {
    let browser = browser_cookie(p, headers).unwrap_or_else(random_token);
    let o = p.authorize(q, cookie_value(p, headers).as_deref(), &browser);
    let login_page = matches!(o, LoginOutcome::Page(_));
    let mut r = outcome(p, o);
    if login_page {
        set_cookie(
            p,
            &mut r,
            BROWSER_COOKIE,
            &browser,
            p.config.lifetimes.login_s,
        );
    }
    r
}

/// One of our pages' forms, read like every other form ([`parse_form`]: a repeated or
/// non-UTF-8 field is refused); the error says what is wrong with it.
fn our_form<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, String> {
    let fields = parse_form(headers, body).map_err(|e| e.description)?;
    let fields: serde_json::Map<String, serde_json::Value> = fields
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| format!("the form is incomplete: {e}"))
}

#[derive(Deserialize)]
struct LoginForm {
    tx: String,
    username: String,
    password: String,
}

/// Our forms (login, code, sign-out confirmation) are posted only from the issuer's own
/// pages. A browser posting a login form from another site is login CSRF: that site
/// would sign the victim's browser in as the attacker (the SSO cookie then answers every relying party with the attacker's
/// account). Browsers send `Origin` with every form POST (our pages' referrer policy
/// keeps it their real origin; another site can make it `null`, which is refused too)
/// and, where supported, `Sec-Fetch-Site`. A request with neither is not a browser's.
fn cross_site_form_refused(p: &Provider, headers: &HeaderMap) -> Option<Response> {
    let own = url::Url::parse(&p.config.issuer)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let origin_ok = headers
        .get(header::ORIGIN)
        .map_or(true, |o| o.to_str().is_ok_and(|o| o == own));
    let site_ok = headers
        .get("sec-fetch-site")
        .map_or(true, |s| matches!(s.to_str(), Ok("same-origin" | "none")));
    if origin_ok && site_ok {
        return None;
    }
    let mut r = html(pages::error_page(
        "invalid_request",
        "this login form was posted from another site; start again from the application",
    ));
    *r.status_mut() = StatusCode::FORBIDDEN;
    Some(r)
}

async fn login(State(p): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = cross_site_form_refused(&p, &headers) {
        return refused;
    }
    let f: LoginForm = match our_form(&headers, &body) {
        Ok(f) => f,
        Err(why) => return invalid_request_page(&why),
    };
    let p2 = p.clone();
    let browser = browser_cookie(&p, &headers);
    let device = device_cookies(&p, &headers);
    // Argon2 checks (the users file) are bounded; PAM's are not: a failed PAM login
    // sleeps through its fail delay (≈ 2 s) holding little memory, and a handful of
    // wrong passwords would otherwise keep every slot and turn real users away.
    let slot = match p.config.primary.method {
        PrimaryMethod::Pam => None,
        PrimaryMethod::UsersFile => {
            let permit = p.password_checks.clone().acquire_owned();
            let Ok(Ok(permit)) = tokio::time::timeout(PASSWORD_CHECK_WAIT, permit).await else {
                // Nothing of the login was touched: the same form can be posted again.
                let mut r = html(pages::error_page(
                    "temporarily_unavailable",
                    "too many sign-ins are being checked right now; go back and post the form again in a moment",
                ));
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return r;
            };
            Some(permit)
        }
    };
    match tokio::task::spawn_blocking(move || {
        // The permit goes with the check: a client that hangs up drops this handler,
        // not the Argon2 work already running, which must keep its slot until done.
        let _slot = slot;
        p2.login_password(&f.tx, browser.as_deref(), &device, &f.username, &f.password)
    })
    .await
    {
        Ok(o) => outcome(&p, o),
        Err(_) => html(pages::error_page("server_error", "login failed")),
    }
}

#[derive(Deserialize)]
struct TotpForm {
    tx: String,
    code: String,
}

async fn login_totp(State(p): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = cross_site_form_refused(&p, &headers) {
        return refused;
    }
    let f: TotpForm = match our_form(&headers, &body) {
        Ok(f) => f,
        Err(why) => return invalid_request_page(&why),
    };
    let p2 = p.clone();
    // Blocking: a completed login may build a profile (enrolment) or adapt one.
    let browser = browser_cookie(&p, &headers);
    match tokio::task::spawn_blocking(move || p2.login_totp(&f.tx, browser.as_deref(), &f.code))
        .await
    {
        Ok(o) => outcome(&p, o),
        Err(_) => html(pages::error_page("server_error", "login failed")),
    }
}

fn cors(p: &Provider, headers: &HeaderMap, r: &mut Response) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true; // not a cross-origin browser request
    };
    if !p.collect_origin_allowed(origin) {
        return false;
    }
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    // Relying-party pages send the SSO cookie with live-session batches.
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    true
}

async fn collect_preflight(State(p): State<Shared>, headers: HeaderMap) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    if !cors(&p, &headers, &mut r) {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Authorization"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    r
}

async fn collect(State(p): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut probe = StatusCode::NO_CONTENT.into_response();
    if !cors(&p, &headers, &mut probe) {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"error": "origin not allowed"})),
        )
            .into_response();
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !(ct.starts_with("application/json") || ct.starts_with("text/plain")) {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Json(json!({"error": "send JSON"})),
        )
            .into_response();
    }
    let cookie = cookie_value(&p, &headers);
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| auth_param(v, "Bearer"))
        .map(str::to_string);
    let p2 = p.clone();
    let result = tokio::task::spawn_blocking(move || {
        p2.collect(&body, cookie.as_deref(), bearer.as_deref())
    })
    .await
    .unwrap_or_else(|_| {
        Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            "collect failed".to_string(),
        ))
    });
    let mut r = match result {
        Ok(n) => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            if let Ok(v) = HeaderValue::from_str(&n.to_string()) {
                r.headers_mut().insert("x-habitus-accepted", v);
            }
            r
        }
        Err((status, message)) => (status, Json(json!({"error": message}))).into_response(),
    };
    for (k, v) in probe.headers() {
        r.headers_mut().insert(k, v.clone());
    }
    r
}

async fn collector_js() -> Response {
    let mut r = (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        pages::COLLECTOR_JS,
    )
        .into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    r
}

fn oauth_error_response(e: &OAuthError) -> Response {
    let status = match e.code {
        "invalid_client" => StatusCode::UNAUTHORIZED,
        "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut r = no_store(
        (
            status,
            Json(json!({"error": e.code, "error_description": e.description})),
        )
            .into_response(),
    );
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"habitus-oidc\""),
        );
    }
    r
}

/// The credentials of an `Authorization` header of `scheme` (compared without regard
/// to case, RFC 7235 §2.1: `BASIC`, `bearer` are the same schemes).
fn auth_param<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = header.split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then(|| rest.trim_start())
}

/// Form bodies parsed by hand so a malformed body is an OAuth error, not a bare 4xx, and a
/// repeated parameter is refused (RFC 6749 §3.1).
fn parse_form(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(oauth(
            "invalid_request",
            "send application/x-www-form-urlencoded",
        ));
    }
    parse_params(body).map_err(|e| oauth("invalid_request", e))
}

/// `application/x-www-form-urlencoded` parameters (a query string or a form body). A
/// repeated parameter is refused (RFC 6749 §3.1: which one counts would be a guess),
/// and so is one that is not UTF-8 once decoded (`state=%FF` would otherwise come back
/// altered, and the relying party's check fail for a reason it cannot see).
fn parse_params(raw: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for pair in raw.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[..0]),
        };
        let k = decode_component(k).ok_or("a parameter name is not UTF-8")?;
        let v = decode_component(v).ok_or_else(|| format!("parameter {k} is not UTF-8"))?;
        if out.contains_key(&k) {
            return Err(format!("repeated parameter {k}"));
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// One form-encoded component: `+` is a space, `%XX` a byte (a `%` not followed by two
/// hex digits stands for itself, as browsers send it); `None` when not UTF-8.
fn decode_component(raw: &[u8]) -> Option<String> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let escaped = match raw.get(i..i + 3) {
            Some([b'%', h, l]) => hex(*h).zip(hex(*l)).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match (raw[i], escaped) {
            (_, Some(b)) => {
                bytes.push(b);
                i += 3;
            }
            (b'+', None) => {
                bytes.push(b' ');
                i += 1;
            }
            (b, None) => {
                bytes.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(bytes).ok()
}

async fn token(State(p): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let result = parse_form(&headers, &body).and_then(|form| p.token(&headers, &form));
    match result {
        Ok(t) => no_store(Json(t).into_response()),
        Err(e) => oauth_error_response(&e),
    }
}

async fn userinfo(
    State(p): State<Shared>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| auth_param(v, "Bearer"))
        .map(str::to_string);
    // RFC 6750 §2.2: the token may come in a form-encoded POST body instead.
    let form_token = if method == Method::POST && !body.is_empty() {
        match parse_form(&headers, &body) {
            Ok(f) => f.get("access_token").cloned(),
            Err(e) => {
                return bearer_error(StatusCode::BAD_REQUEST, "invalid_request", &e.description)
            }
        }
    } else {
        None
    };
    let token = match (bearer, form_token) {
        (Some(_), Some(_)) => {
            return bearer_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "one access token, one method",
            )
        }
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => {
            let mut r = StatusCode::UNAUTHORIZED.into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    };
    match p.userinfo(&token) {
        Ok(v) => no_store(Json(v).into_response()),
        Err(e) => bearer_error(StatusCode::UNAUTHORIZED, e.code, &e.description),
    }
}

fn bearer_error(status: StatusCode, code: &str, description: &str) -> Response {
    let mut r = no_store(
        (
            status,
            Json(json!({"error": code, "error_description": description})),
        )
            .into_response(),
    );
    let v = format!(
        "Bearer error=\"{code}\", error_description=\"{}\"",
        description.replace('"', "'")
    );
    if let Ok(v) = HeaderValue::from_str(&v) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

fn end_session_response(
    p: &Provider,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    confirmed: bool,
) -> Response {
    let (target, page) = match p.end_session(q, cookie_value(p, headers).as_deref(), confirmed) {
        EndSessionOutcome::SignedOut { target, page } => (target, page),
        EndSessionOutcome::Confirm(page) => return html(page),
        EndSessionOutcome::Refused(page) => {
            let mut r = html(page);
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return r;
        }
    };
    let mut r = match target {
        Some(to) => no_store(Redirect::to(&to).into_response()),
        None => html(page),
    };
    set_cookie(p, &mut r, SESSION_COOKIE, "", 0);
    r
}

async fn end_session_get(
    State(p): State<Shared>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    match parse_params(q.unwrap_or_default().as_bytes()) {
        Ok(q) => end_session_response(&p, &q, &headers, false),
        Err(e) => invalid_request_page(&e),
    }
}

async fn end_session_post(State(p): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    match parse_form(&headers, &body) {
        Ok(q) => {
            // The confirmation form is ours: a post from another site confirms nothing.
            let confirmed = q.get("confirm").is_some_and(|c| c == "yes")
                && cross_site_form_refused(&p, &headers).is_none();
            end_session_response(&p, &q, &headers, confirmed)
        }
        Err(e) => invalid_request_page(&e.description),
    }
}
