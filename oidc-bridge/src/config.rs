//! The provider's configuration: one strict, versioned TOML file.
//!
//! Unknown keys are refused (`deny_unknown_fields`) so a typo never silently falls back to a
//! default, and every value is checked on load with a message naming the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use habitus_engine::SessionConfig;
use serde::{Deserialize, Serialize};

/// The configuration format this build reads.
pub const CONFIG_VERSION: u32 = 1;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Must be 1.
    pub version: u32,
    /// The issuer URL (`iss`): https, or http on a loopback host (tests, demo). No query,
    /// no fragment, no trailing slash.
    pub issuer: String,
    /// Address to listen on.
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// Keys, the profile store, the provider database and the installation secrets.
    pub state_dir: PathBuf,
    /// Users file (see `users.rs`); relative paths are relative to `state_dir`. With
    /// `[primary] method = "pam"` it holds only the optional TOTP secrets and names.
    #[serde(default = "default_users_file")]
    pub users_file: PathBuf,
    /// How the password on the login page is checked.
    #[serde(default)]
    pub primary: PrimaryConfig,
    /// Directory of modality plugins (default: next to the executable, then
    /// `/usr/lib/habitus/plugins`).
    #[serde(default)]
    pub plugin_dir: Option<PathBuf>,
    #[serde(default)]
    pub lifetimes: Lifetimes,
    /// Origins (`scheme://host[:port]`) allowed to post behaviour to `/collect` from their
    /// own pages (CORS). The provider's own origin is always allowed.
    #[serde(default)]
    pub collect_origins: Vec<String>,
    /// Signing keys. Per algorithm, the first listed key signs; every key is published in
    /// the JWKS, so rotation is: add the new key first, keep the old one listed for as long
    /// as tokens signed with it live, then remove it. Empty: generated keys in
    /// `state_dir/keys` (Ed25519 always; RSA-2048 if `openssl` is available).
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    pub clients: Vec<ClientConfig>,
    #[serde(default)]
    pub behavior: BehaviorConfig,
    /// Drift signals: back-channel logout delivery and the Shared Signals transmitter.
    #[serde(default)]
    pub signals: SignalsConfig,
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8400))
}

fn default_users_file() -> PathBuf {
    PathBuf::from("users.toml")
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lifetimes {
    /// Authorization codes (single use).
    pub code_s: u64,
    pub access_token_s: u64,
    pub id_token_s: u64,
    pub refresh_token_s: u64,
    /// The browser's single sign-on session (cookie) and the `sid` it names.
    pub session_s: u64,
    /// How long a login page may be left open.
    pub login_s: u64,
}

impl Default for Lifetimes {
    fn default() -> Lifetimes {
        Lifetimes {
            code_s: 60,
            access_token_s: 300,
            id_token_s: 300,
            refresh_token_s: 30 * 86_400,
            session_s: 8 * 3600,
            login_s: 600,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Alg {
    EdDSA,
    RS256,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::RS256 => "RS256",
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub kid: String,
    pub alg: Alg,
    /// PKCS#8 private key, DER or PEM ("-----BEGIN PRIVATE KEY-----"); relative to
    /// `state_dir`. Must not be readable by group or others.
    pub file: PathBuf,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub id: String,
    /// Shared secret (`client_secret_basic` or `client_secret_post`). Compared in constant
    /// time. Keep the file 0600.
    pub secret: String,
    /// Exact-match redirect URIs.
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// ID token signing algorithm; OpenID Connect's default is RS256.
    #[serde(default = "default_alg")]
    pub id_token_signed_response_alg: Alg,
    /// OpenID Connect Back-Channel Logout 1.0: where Logout Tokens are POSTed when a
    /// session this client received tokens in ends. `https://` (verified against
    /// `signals.ca_file`) or `http://`; no fragment.
    #[serde(default)]
    pub backchannel_logout_uri: Option<String>,
    /// The client needs `sid` in Logout Tokens. Always honoured: every Logout Token
    /// carries both `sub` and `sid`.
    #[serde(default)]
    pub backchannel_logout_session_required: bool,
}

fn default_alg() -> Alg {
    Alg::RS256
}

/// Primary authentication: the password, always asked before behaviour counts.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrimaryConfig {
    /// `users-file`: argon2id hashes in `users_file` (the embedded default). `pam`: the
    /// system's accounts through the PAM service `pam_service` (see docs/oidc.md for
    /// the caveats: root for pam_unix, failure delays, expired passwords refused).
    pub method: PrimaryMethod,
    /// The PAM service (`/etc/pam.d/<name>`) used when `method = "pam"`.
    pub pam_service: String,
}

impl Default for PrimaryConfig {
    fn default() -> PrimaryConfig {
        PrimaryConfig {
            method: PrimaryMethod::UsersFile,
            pam_service: "habitus-oidc".to_string(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PrimaryMethod {
    UsersFile,
    Pam,
}

/// Which modality plugins score the collector's events, and how enrolment runs.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BehaviorConfig {
    /// Plugins by descriptor name.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Engine session settings (trust model, fusion, thresholds) for each login.
    pub session: SessionConfig,
    /// Template updates applied per user, plugin and UTC day at most.
    pub adapt_max_per_day: u32,
    /// Users with a TOTP secret are asked for it at every login until their profile is
    /// built, and only logins that pass it are learned from (default `true`). Without
    /// it, someone who knows only the password could enrol the profile with their own
    /// rhythm (through logins to relying parties that ask for no level) and then pass
    /// as the user where `loa:2` is required, without ever giving the code. Users
    /// without TOTP enrol from any completed login either way: for them the password
    /// is the only proof there is.
    pub enrol_with_second_factor: bool,
}

impl Default for BehaviorConfig {
    fn default() -> BehaviorConfig {
        let mut plugins = BTreeMap::new();
        plugins.insert(
            "keystroke".to_string(),
            PluginConfig {
                // The password is typed the same way at every login: fixed-text mode,
                // one password entry per window (see docs/oidc.md, "collector").
                config: "mode = \"fixed\"".to_string(),
                window: WindowKind::Login,
                enrol_windows: 5,
            },
        );
        BehaviorConfig {
            plugins,
            session: SessionConfig::default(),
            adapt_max_per_day: 4,
            enrol_with_second_factor: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The plugin's own TOML settings, passed through verbatim.
    #[serde(default)]
    pub config: String,
    /// `login`: all of one login's events for this plugin form one window (a password
    /// entry); `events`: windows of `session.window_events` events.
    #[serde(default = "default_window")]
    pub window: WindowKind,
    /// Windows collected before the profile is built (the first logins: `learning`).
    #[serde(default = "default_enrol")]
    pub enrol_windows: u32,
}

fn default_window() -> WindowKind {
    WindowKind::Events
}

fn default_enrol() -> u32 {
    5
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WindowKind {
    Login,
    Events,
}

/// Drift signals (docs/oidc.md, "Drift signals").
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalsConfig {
    /// Connect + send + answer, per delivery attempt (Logout Token or SET), in
    /// milliseconds.
    pub timeout_ms: u64,
    /// Further attempts after a temporary failure (no connection, no answer in time,
    /// HTTP 5xx or 429); 0..=5.
    pub retries: u32,
    /// Delay before the first retry; each further retry waits 4 times longer. 100..=60000.
    pub retry_delay_ms: u64,
    /// End the SSO session when live behaviour (post-login `/collect`) reaches the
    /// `drift` state: back-channel logout and CAEP `session-revoked` follow. Off by
    /// default: with profiles built from the first five logins, re-typed passwords are
    /// weak evidence, and a genuine user's live session would be ended about every 35
    /// entries (`habitus eval continuous --cmu-train 5`, docs/results.md). Drift still
    /// lowers the session's `acr` and sends `assurance-level-change`.
    pub revoke_on_drift: bool,
    /// Shared Signals receivers allowed to configure a stream (one stream each).
    pub ssf_receivers: Vec<SsfReceiver>,
    /// PEM file of the CA certificates that `https://` delivery URLs must chain to
    /// (relative paths are relative to `state_dir`). Default: Debian's system bundle.
    pub ca_file: PathBuf,
}

impl Default for SignalsConfig {
    fn default() -> SignalsConfig {
        SignalsConfig {
            timeout_ms: 5000,
            retries: 2,
            retry_delay_ms: 2000,
            revoke_on_drift: false,
            ssf_receivers: Vec::new(),
            ca_file: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SsfReceiver {
    /// Names the receiver (and its stream) in logs.
    pub id: String,
    /// Bearer token the receiver presents to the stream configuration endpoint; at least
    /// 32 characters, compared in constant time. Keep the file 0600.
    pub token: String,
    /// `aud` of the SETs sent to this receiver (default: `id`).
    #[serde(default)]
    pub audience: Option<String>,
    /// Also names the user inside each event, as `subject: {"user": …}`, for receivers
    /// that require it there (Okta's does); the SET's `sub_id` stays. `iss_sub`: the
    /// same `iss` and `sub` as `sub_id`. `email`: the user's *verified* address from the
    /// users file; a SET about a user without one is not sent to this receiver (logged),
    /// because a receiver resolving users by email would otherwise act on whoever has
    /// that address. Default: unset (SSF 1.0: `sub_id` only).
    #[serde(default)]
    pub event_subject: Option<EventSubject>,
}

/// How an event names its user inside the event (`SsfReceiver::event_subject`).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EventSubject {
    IssSub,
    Email,
}

impl SsfReceiver {
    pub fn audience(&self) -> &str {
        self.audience.as_deref().unwrap_or(&self.id)
    }
}

/// A delivery URL: `https://host[:port]/path` (TLS, verified against `signals.ca_file`)
/// or `http://…` (for loopback or a private network), no fragment, no userinfo.
pub fn check_push_url(uri: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(uri).map_err(|e| format!("{uri:?} is not a URL: {e}"))?;
    if u.scheme() != "https" && u.scheme() != "http" {
        return Err(format!(
            "{uri:?}: only https:// and http:// delivery URLs are supported"
        ));
    }
    if !matches!(u.host_str(), Some(h) if !h.is_empty()) {
        return Err(format!("{uri:?}: no host"));
    }
    if u.fragment().is_some() || !u.username().is_empty() || u.password().is_some() {
        return Err(format!("{uri:?}: no fragment or user:password allowed"));
    }
    Ok(u)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("configuration {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            ConfigError::Invalid { message, .. } => ConfigError::Invalid {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: PathBuf::new(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.version != CONFIG_VERSION {
            return Err(format!(
                "version = {}: this habitus-oidc reads version {CONFIG_VERSION}",
                self.version
            ));
        }
        let issuer = url::Url::parse(&self.issuer)
            .map_err(|e| format!("issuer {:?} is not a URL: {e}", self.issuer))?;
        let loopback = matches!(issuer.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        if issuer.scheme() != "https" && !(issuer.scheme() == "http" && loopback) {
            return Err("issuer must be https (http only on a loopback host)".into());
        }
        if issuer.query().is_some() || issuer.fragment().is_some() || self.issuer.ends_with('/') {
            return Err("issuer must have no query, fragment or trailing slash".into());
        }
        if !crate::pam::valid_service_name(&self.primary.pam_service) {
            return Err(format!(
                "primary.pam_service {:?}: use a file name of /etc/pam.d (a-z A-Z 0-9 . _ -)",
                self.primary.pam_service
            ));
        }
        let l = &self.lifetimes;
        for (name, v, max) in [
            ("code_s", l.code_s, 600),
            ("access_token_s", l.access_token_s, 86_400),
            ("id_token_s", l.id_token_s, 86_400),
            ("refresh_token_s", l.refresh_token_s, 365 * 86_400),
            ("session_s", l.session_s, 30 * 86_400),
            ("login_s", l.login_s, 3600),
        ] {
            if v == 0 || v > max {
                return Err(format!("lifetimes.{name} = {v}: must be 1..={max}"));
            }
        }
        for origin in &self.collect_origins {
            let u = url::Url::parse(origin)
                .map_err(|e| format!("collect_origins: {origin:?} is not an origin: {e}"))?;
            if u.origin().ascii_serialization() != *origin {
                return Err(format!(
                    "collect_origins: {origin:?} must be exactly scheme://host[:port]"
                ));
            }
        }
        let mut kids = std::collections::BTreeSet::new();
        for k in &self.keys {
            if k.kid.is_empty() || k.kid.len() > 64 || !k.kid.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(format!(
                    "keys: kid {:?} must be 1-64 printable ASCII",
                    k.kid
                ));
            }
            if !kids.insert(&k.kid) {
                return Err(format!("keys: kid {:?} listed twice", k.kid));
            }
        }
        if self.clients.is_empty() {
            return Err("no [[clients]]: nobody could use this provider".into());
        }
        let mut ids = std::collections::BTreeSet::new();
        for c in &self.clients {
            if c.id.is_empty() || c.id.len() > 128 || !c.id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "clients: id {:?} must be 1-128 printable ASCII",
                    c.id
                ));
            }
            if !ids.insert(&c.id) {
                return Err(format!("clients: id {:?} listed twice", c.id));
            }
            if c.secret.len() < 16 {
                return Err(format!(
                    "clients.{}: secret must be at least 16 characters",
                    c.id
                ));
            }
            if c.redirect_uris.is_empty() {
                return Err(format!("clients.{}: no redirect_uris", c.id));
            }
            for uri in c.redirect_uris.iter().chain(&c.post_logout_redirect_uris) {
                let u = url::Url::parse(uri)
                    .map_err(|e| format!("clients.{}: {uri:?} is not a URL: {e}", c.id))?;
                if u.fragment().is_some() {
                    return Err(format!(
                        "clients.{}: {uri:?} must not have a fragment",
                        c.id
                    ));
                }
                redirect_uri_scheme_allowed(&u)
                    .map_err(|why| format!("clients.{}: {uri:?} {why}", c.id))?;
            }
            if let Some(uri) = &c.backchannel_logout_uri {
                check_push_url(uri)
                    .map_err(|e| format!("clients.{}: backchannel_logout_uri {e}", c.id))?;
            } else if c.backchannel_logout_session_required {
                return Err(format!(
                    "clients.{}: backchannel_logout_session_required without backchannel_logout_uri",
                    c.id
                ));
            }
        }
        let sig = &self.signals;
        if !(100..=60_000).contains(&sig.timeout_ms) {
            return Err(format!(
                "signals.timeout_ms = {}: must be 100..=60000",
                sig.timeout_ms
            ));
        }
        if sig.retries > 5 {
            return Err(format!("signals.retries = {}: must be 0..=5", sig.retries));
        }
        if !(100..=60_000).contains(&sig.retry_delay_ms) {
            return Err(format!(
                "signals.retry_delay_ms = {}: must be 100..=60000",
                sig.retry_delay_ms
            ));
        }
        let mut rids = std::collections::BTreeSet::new();
        for r in &sig.ssf_receivers {
            if r.id.is_empty() || r.id.len() > 128 || !r.id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "signals.ssf_receivers: id {:?} must be 1-128 printable ASCII",
                    r.id
                ));
            }
            if !rids.insert(&r.id) {
                return Err(format!("signals.ssf_receivers: id {:?} listed twice", r.id));
            }
            if r.token.len() < 32 || !r.token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "signals.ssf_receivers.{}: token must be at least 32 printable ASCII characters",
                    r.id
                ));
            }
            if r.audience.as_deref() == Some("") {
                return Err(format!(
                    "signals.ssf_receivers.{}: audience must not be empty",
                    r.id
                ));
            }
        }
        for (name, p) in &self.behavior.plugins {
            if p.enrol_windows < 2 {
                return Err(format!(
                    "behavior.plugins.{name}.enrol_windows must be at least 2"
                ));
            }
        }
        if self.behavior.session.other_users != 0 {
            // The bridge scores one login's keystrokes for the user who claims it; it
            // has no other users' sessions to compare with.
            return Err(format!(
                "[behavior.session]: other_users = {}: habitus-oidc does not compare logins with other users' profiles (a habitusd setting); remove it",
                self.behavior.session.other_users
            ));
        }
        self.behavior
            .session
            .validate()
            .map_err(|e| format!("[behavior.session]: {e}"))
    }

    /// `p` relative to the state directory unless absolute.
    pub fn state_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.state_dir.join(p)
        }
    }

    pub fn client(&self, id: &str) -> Option<&ClientConfig> {
        self.clients.iter().find(|c| c.id == id)
    }
}

/// Where a browser may be sent back to (RFC 9700 §2.1, RFC 8252 §7): `https`, `http`
/// only to this machine's loopback (a native app's local listener, a test), or an app's
/// private-use scheme (reverse domain name, `com.example.app:/cb`). Anything else
/// (`javascript:`, `data:`, plain `http` across the network, a wildcard host that
/// exact matching would never match) is a configuration mistake, refused at start-up.
fn redirect_uri_scheme_allowed(u: &url::Url) -> Result<(), &'static str> {
    if u.as_str().contains('*') {
        return Err("must not contain '*' (redirect URIs are matched exactly, no wildcards)");
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not carry a user name or password");
    }
    match u.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match u.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err("uses http to another machine: use https (http is for loopback only)")
            }
        }
        scheme if scheme.contains('.') => Ok(()),
        _ => Err("must be https, http to loopback, or an app's reverse-domain scheme"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
version = 1
issuer = "http://127.0.0.1:8400"
state_dir = "/tmp/x"
[[clients]]
id = "rp"
secret = "0123456789abcdef"
redirect_uris = ["http://127.0.0.1:9000/cb"]
"#;

    #[test]
    fn redirect_uris_of_the_allowed_kinds_load() {
        for uri in [
            "https://rp.example/cb",
            "http://127.0.0.1:9000/cb",
            "http://[::1]:8080/cb",
            "http://localhost/cb",
            "com.example.app:/oauth2redirect",
        ] {
            let text = MINIMAL.replace("http://127.0.0.1:9000/cb", uri);
            assert!(Config::parse(&text).is_ok(), "{uri}");
        }
    }

    #[test]
    fn minimal_config_loads_with_defaults() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert_eq!(c.lifetimes.code_s, 60);
        assert_eq!(c.clients[0].id_token_signed_response_alg, Alg::RS256);
        assert!(c.behavior.plugins.contains_key("keystroke"));
    }

    #[test]
    fn bad_configs_name_the_problem() {
        for (edit, needle) in [
            (MINIMAL.replace("version = 1", "version = 2"), "version"),
            (
                MINIMAL.replace("http://127.0.0.1:8400", "http://example.com"),
                "https",
            ),
            (MINIMAL.replace("0123456789abcdef", "short"), "secret"),
            (format!("{MINIMAL}\ntypo = 1"), "typo"),
            (MINIMAL.replace("issuer", "isuer"), "isuer"),
            (
                format!("{MINIMAL}\ncollect_origins = [\"https://a.example/path\"]"),
                "collect_origins",
            ),
            (
                format!("{MINIMAL}backchannel_logout_uri = \"https://user:pw@rp.example/bcl\""),
                "user:password",
            ),
            (
                format!("{MINIMAL}backchannel_logout_uri = \"ftp://rp.example/bcl\""),
                "only https:// and http://",
            ),
            (
                format!("{MINIMAL}backchannel_logout_session_required = true"),
                "without backchannel_logout_uri",
            ),
            (
                MINIMAL.replace(
                    "[[clients]]",
                    "[[signals.ssf_receivers]]\nid = \"siem\"\ntoken = \"short\"\n[[clients]]",
                ),
                "token",
            ),
            (
                MINIMAL.replace(
                    "[[clients]]",
                    "[[signals.ssf_receivers]]\nid = \"okta\"\ntoken = \"0123456789abcdef0123456789abcdef\"\nevent_subject = \"upn\"\n[[clients]]",
                ),
                "upn",
            ),
            (
                MINIMAL.replace("[[clients]]", "[signals]\ntimeout_ms = 0\n[[clients]]"),
                "timeout_ms",
            ),
            (
                format!("{MINIMAL}\n[behavior.session]\nidle_reset_s = 0.0"),
                "[behavior.session]: session.idle_reset_s",
            ),
            (
                format!("{MINIMAL}\n[behavior.session]\nother_users = 4"),
                "does not compare logins with other users",
            ),
            (
                MINIMAL.replace("[[clients]]", "[signals]\nretries = 9\n[[clients]]"),
                "signals.retries",
            ),
            (
                MINIMAL.replace("[[clients]]", "[signals]\nretry_delay_ms = 5\n[[clients]]"),
                "retry_delay_ms",
            ),
            (
                MINIMAL.replace("http://127.0.0.1:9000/cb", "javascript:alert(1)//"),
                "must be https",
            ),
            (
                MINIMAL.replace("http://127.0.0.1:9000/cb", "data:text/html,x"),
                "must be https",
            ),
            (
                MINIMAL.replace("http://127.0.0.1:9000/cb", "http://rp.example.com/cb"),
                "http is for loopback only",
            ),
            (
                MINIMAL.replace("http://127.0.0.1:9000/cb", "https://*.example.com/cb"),
                "no wildcards",
            ),
            (
                MINIMAL.replace("http://127.0.0.1:9000/cb", "https://u:p@rp.example/cb"),
                "user name or password",
            ),
        ] {
            let e = Config::parse(&edit).expect_err(&edit).to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
