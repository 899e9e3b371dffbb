//! # habitus-oidc
//!
//! An OpenID Provider that puts behaviour into single sign-on: the login page's collector
//! measures typing rhythm (never the characters) and pointer movement, the Habitus engine
//! scores it with the same plugins as habitusd, and the result becomes the `acr`
//! (`urn:habitus:loa:0|1|2`), `amr` (`rba`) and a namespaced `behavior` claim. When behaviour
//! cannot reach a requested level, TOTP is asked as the step-up factor. See docs/oidc.md.

pub mod behavior;
pub mod config;
pub mod demo;
pub mod keys;
pub mod pages;
pub mod pam;
pub mod provider;
pub mod replay;
pub mod signals;
pub mod step_up;
pub mod store;
pub mod throttle;
pub mod totp;
pub mod upkeep;
pub mod users;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

pub use config::Config;
pub use provider::{router, Provider, Shared};

/// Builds the provider from its configuration: keys, users, the provider database, the
/// installation secrets, the profile store and the plugins. Without plugins the provider
/// still runs, with behaviour reported as `unenrolled` (acr loa:0) and a warning.
pub fn build(config: Config) -> anyhow::Result<Provider> {
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating state directory {}", config.state_dir.display()))?;
    let keys = keys::KeySet::load(&config)?;
    let users = users::UsersFile::load(&config.state_path(&config.users_file))?;
    let db = store::Db::open(&config.state_dir.join("oidc.db"))?;
    let secrets = habitus_engine::Secrets::load_or_create(&config.state_dir.join("secrets"))?;
    let profiles =
        habitus_engine::ProfileStore::open(&config.state_dir.join("profiles.db"), &secrets)?;
    let dirs: Vec<PathBuf> = match &config.plugin_dir {
        Some(d) => vec![d.clone()],
        None => habitus_engine::loader::default_plugin_dirs(),
    };
    let behavior = if config.behavior.plugins.is_empty() {
        None
    } else {
        match behavior::BehaviorEngine::new(&config.behavior, &dirs, profiles, secrets.key_hasher())
        {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("habitus-oidc: warning: behaviour scoring is off: {e}");
                None
            }
        }
    };
    // https:// deliveries need the CA file; a configured https back-channel logout URI
    // without one is a start-up error, an SSF stream's is logged at each delivery.
    let signals_tls = signals::tls_client(&config.state_path(&config.signals.ca_file));
    if let Err(e) = &signals_tls {
        let https_client = config.clients.iter().find(|c| {
            c.backchannel_logout_uri
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
        });
        if let Some(c) = https_client {
            anyhow::bail!(
                "clients.{}: https back-channel logout needs signals.ca_file: {e}",
                c.id
            );
        }
    }
    Ok(Provider::new(
        config,
        keys,
        users,
        db,
        behavior,
        signals_tls,
    ))
}

/// Connections served at once; one more is accepted and closed at once. Each costs a
/// file descriptor, and the usual limit is 1024 per process.
pub const MAX_CONNECTIONS: usize = 512;
/// A request's headers must arrive within this time, and an idle keep-alive connection
/// is closed after it: a client that trickles a request (slowloris) or opens connections
/// and sends nothing cannot hold a connection slot for long.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// After this a connection is closed gracefully (a request in flight is answered first,
/// within [`HEADER_READ_TIMEOUT`] more), whatever it does (a body trickled a byte at a
/// time, a relying party's pooled keep-alive connection).
pub const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(120);

/// Serves `provider` on `listener` until the future is dropped or the process ends.
/// Deliveries a previous run left pending are sent first (in the background).
///
/// Its own accept loop rather than `axum::serve`, which sets no header-read timeout and
/// no connection limit: see [`MAX_CONNECTIONS`], [`HEADER_READ_TIMEOUT`] and
/// [`CONNECTION_LIFETIME`].
pub async fn serve(listener: tokio::net::TcpListener, provider: Shared) -> std::io::Result<()> {
    provider.resume_deliveries();
    let app = router(provider.clone()).merge(demo::router(provider));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted:
                // passing conditions, not a reason to stop serving everyone else.
                eprintln!("habitus-oidc: accepting a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            // An error here is the client's (a malformed request, a reset, a timeout):
            // hyper has answered or closed; nothing to log per connection.
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
                    // Gracefully: a request in flight (a token exchange, a login) is
                    // answered first, then the connection closes; a client still
                    // trickling one gets a few seconds more, not another lifetime.
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(HEADER_READ_TIMEOUT, connection).await;
                }
            }
            drop(slot);
        });
    }
}

/// Convenience for tests and the demo: serve on a background thread with its own runtime.
pub fn spawn(listener: std::net::TcpListener, provider: Shared) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => {
                    if let Err(e) = serve(l, provider).await {
                        eprintln!("habitus-oidc: server stopped: {e}");
                    }
                }
                Err(e) => eprintln!("habitus-oidc: listener: {e}"),
            }
        })
    });
    Ok(())
}

/// Keeps a reference so the type is nameable by callers.
pub type SharedProvider = Arc<Provider>;
