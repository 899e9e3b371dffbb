//! Step-up for resource servers: RFC 9470 (OAuth 2.0 Step-Up Authentication Challenge).
//!
//! A resource server (an API) that accepts habitus-oidc access tokens puts [`require`] in
//! front of its routes with a [`Guard`]: the token must be a valid access token of this
//! issuer (`typ: at+jwt`, signature by a key of the issuer's JWKS, not expired) whose
//! `acr` is at least the required level and, optionally, whose `auth_time` is recent
//! enough. Otherwise the answer is `401` with
//!
//! ```text
//! WWW-Authenticate: Bearer error="insufficient_user_authentication",
//!   error_description="...", acr_values="urn:habitus:loa:2"[, max_age="300"]
//! ```
//!
//! and the client sends the user back to `/authorize` with those `acr_values` /
//! `max_age`, where habitus-oidc asks for the step-up factor when behaviour cannot reach
//! the level. A missing token gets a plain `Bearer` challenge, an invalid one
//! `error="invalid_token"` (RFC 6750 §3.1).
//!
//! The guard needs only the issuer's public keys ([`PublicKeys::from_jwks`], the document
//! at `/jwks`), so it runs in any process. Access tokens carry `acr` and `auth_time` as
//! they were when the token was issued: a behaviour drift after that shows in the next
//! token (access tokens are short-lived, see `lifetimes.access_token_s`) and, at once,
//! through the drift signals (back-channel logout, CAEP; see docs/oidc.md).
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use habitus_oidc::step_up::{require, Guard, PublicKeys, Requirement};
//! # fn api(jwks: serde_json::Value) -> Result<axum::Router, String> {
//! let guard = Guard::new(
//!     "https://id.example.com",
//!     PublicKeys::from_jwks(&jwks)?,
//!     Requirement { acr: "urn:habitus:loa:2".into(), max_age: Some(300) },
//! )?;
//! Ok(axum::Router::new()
//!     .route("/transfer", axum::routing::post(|| async { "done" }))
//!     .layer(axum::middleware::from_fn_with_state(Arc::new(guard), require)))
//! # }
//! ```

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature;
use serde_json::Value;

/// The levels habitus-oidc issues, weakest first.
pub const LEVELS: [&str; 3] = [
    "urn:habitus:loa:0",
    "urn:habitus:loa:1",
    "urn:habitus:loa:2",
];

fn rank(acr: &str) -> Option<usize> {
    LEVELS.iter().position(|l| *l == acr)
}

enum Key {
    Ed25519(Vec<u8>),
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

/// The issuer's signature verification keys.
pub struct PublicKeys {
    keys: Vec<(String, Key)>,
}

impl PublicKeys {
    /// Reads a JWKS document (`{"keys": [...]}`): Ed25519 (`kty: OKP`, `alg: EdDSA`) and
    /// RSA (`kty: RSA`, `alg: RS256`) signing keys. Other keys are skipped; a document
    /// without any usable key is an error.
    pub fn from_jwks(jwks: &Value) -> Result<PublicKeys, String> {
        let list = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("JWKS: no \"keys\" array")?;
        let b64 = |k: &Value, name: &str| -> Result<Vec<u8>, String> {
            let s = k
                .get(name)
                .and_then(Value::as_str)
                .ok_or(format!("JWKS: key without \"{name}\""))?;
            URL_SAFE_NO_PAD
                .decode(s)
                .map_err(|e| format!("JWKS: \"{name}\" is not base64url: {e}"))
        };
        let mut keys = Vec::new();
        for k in list {
            let kid = k
                .get("kid")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let field = |n: &str| k.get(n).and_then(Value::as_str);
            match (field("kty"), field("alg"), field("crv")) {
                (Some("OKP"), Some("EdDSA") | None, Some("Ed25519")) => {
                    keys.push((kid, Key::Ed25519(b64(k, "x")?)))
                }
                (Some("RSA"), Some("RS256") | None, _) => keys.push((
                    kid,
                    Key::Rsa {
                        n: b64(k, "n")?,
                        e: b64(k, "e")?,
                    },
                )),
                _ => {}
            }
        }
        if keys.is_empty() {
            return Err("JWKS: no Ed25519 or RS256 key".into());
        }
        Ok(PublicKeys { keys })
    }

    /// The claims of a compact JWS with header `typ: at+jwt` signed by one of the keys;
    /// `None` for anything else.
    fn verify_access_token(&self, token: &str) -> Option<Value> {
        if token.len() > 8192 {
            return None;
        }
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
        if header.get("typ").and_then(Value::as_str) != Some("at+jwt") {
            return None;
        }
        let kid = header.get("kid").and_then(Value::as_str)?;
        let alg = header.get("alg").and_then(Value::as_str)?;
        let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
        let message = &token.as_bytes()[..h.len() + 1 + c.len()];
        let ok = self.keys.iter().any(|(k, key)| {
            k == kid
                && match (key, alg) {
                    (Key::Ed25519(x), "EdDSA") => {
                        signature::UnparsedPublicKey::new(&signature::ED25519, x)
                            .verify(message, &sig)
                            .is_ok()
                    }
                    (Key::Rsa { n, e }, "RS256") => signature::RsaPublicKeyComponents { n, e }
                        .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, &sig)
                        .is_ok(),
                    _ => false,
                }
        });
        if !ok {
            return None;
        }
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()
    }
}

/// What a route asks of the user's authentication.
#[derive(Clone, Debug)]
pub struct Requirement {
    /// The weakest acceptable level (one of [`LEVELS`]).
    pub acr: String,
    /// If set: the user must have authenticated at most this many seconds ago.
    pub max_age: Option<u64>,
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No bearer token.
    Missing,
    /// Malformed, forged, foreign or expired token.
    Invalid(&'static str),
    /// A good token, but the authentication behind it is too weak or too old.
    Insufficient(String),
}

/// The claims of the accepted access token, for the handlers behind [`require`].
#[derive(Clone, Debug)]
pub struct AccessClaims(pub Value);

/// Checks access tokens against one [`Requirement`].
pub struct Guard {
    issuer: String,
    keys: PublicKeys,
    requirement: Requirement,
}

impl Guard {
    pub fn new(issuer: &str, keys: PublicKeys, requirement: Requirement) -> Result<Guard, String> {
        if rank(&requirement.acr).is_none() {
            return Err(format!(
                "unknown acr {:?}: expected one of {}",
                requirement.acr,
                LEVELS.join(", ")
            ));
        }
        Ok(Guard {
            issuer: issuer.trim_end_matches('/').to_string(),
            keys,
            requirement,
        })
    }

    /// The verdict on a request's `Authorization` header value at time `now` (Unix s).
    pub fn check(&self, authorization: Option<&str>, now: i64) -> Result<Value, Denied> {
        let token = authorization
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Denied::Missing)?;
        let claims = self.keys.verify_access_token(token).ok_or(Denied::Invalid(
            "the access token is malformed or its signature is not the issuer's",
        ))?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(Denied::Invalid("the access token is from another issuer"));
        }
        if claims
            .get("exp")
            .and_then(Value::as_i64)
            .map_or(true, |exp| exp <= now)
        {
            return Err(Denied::Invalid("the access token has expired"));
        }
        // Fail safe: a token without a known acr counts as the weakest level.
        let have = claims
            .get("acr")
            .and_then(Value::as_str)
            .and_then(rank)
            .unwrap_or(0);
        let need = rank(&self.requirement.acr).unwrap_or(LEVELS.len() - 1);
        if have < need {
            return Err(Denied::Insufficient(format!(
                "this resource needs {}; the token has {}",
                self.requirement.acr, LEVELS[have]
            )));
        }
        if let Some(max_age) = self.requirement.max_age {
            let auth_time = claims.get("auth_time").and_then(Value::as_i64);
            if auth_time.map_or(true, |t| now - t > max_age as i64) {
                return Err(Denied::Insufficient(format!(
                    "this resource needs an authentication within the last {max_age} s"
                )));
            }
        }
        Ok(claims)
    }

    /// The `401` answer for a refusal, with its `WWW-Authenticate` challenge.
    pub fn challenge(&self, denied: &Denied) -> Response {
        let value = match denied {
            Denied::Missing => "Bearer".to_string(),
            Denied::Invalid(why) => {
                format!("Bearer error=\"invalid_token\", error_description=\"{why}\"")
            }
            Denied::Insufficient(why) => {
                let mut v = format!(
                    "Bearer error=\"insufficient_user_authentication\", error_description=\"{why}\", acr_values=\"{}\"",
                    self.requirement.acr
                );
                if let Some(m) = self.requirement.max_age {
                    v.push_str(&format!(", max_age=\"{m}\""));
                }
                v
            }
        };
        let mut r = StatusCode::UNAUTHORIZED.into_response();
        // The values above hold only ASCII we wrote; a failure here would be our bug,
        // and the answer is still a 401.
        if let Ok(h) = HeaderValue::from_str(&value) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, h);
        }
        r
    }
}

/// axum middleware (`axum::middleware::from_fn_with_state(Arc<Guard>, require)`): passes
/// requests whose token satisfies the guard, with [`AccessClaims`] in the request's
/// extensions; answers every other with the RFC 9470 / RFC 6750 challenge.
pub async fn require(State(guard): State<Arc<Guard>>, mut req: Request, next: Next) -> Response {
    let now = chrono::Utc::now().timestamp();
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match guard.check(auth, now) {
        Ok(claims) => {
            req.extensions_mut().insert(AccessClaims(claims));
            next.run(req).await
        }
        Err(denied) => guard.challenge(&denied),
    }
}
