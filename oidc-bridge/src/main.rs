//! The `habitus-oidc` command: `serve`, `user add`, `check`, `demo`.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use habitus_oidc::{build, demo, totp, users::UsersFile, Config};

#[derive(Parser)]
#[command(
    name = "habitus-oidc",
    version,
    about = "OpenID Provider with behaviour claims and step-up"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the provider.
    Serve {
        #[arg(
            long,
            short,
            env = "HABITUS_OIDC_CONFIG",
            default_value = "/etc/habitus-oidc/config.toml"
        )]
        config: PathBuf,
    },
    /// Checks a configuration file and exits.
    Check {
        #[arg(long, short, default_value = "/etc/habitus-oidc/config.toml")]
        config: PathBuf,
    },
    /// Manages the users file.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Starts the provider on 127.0.0.1 with a temporary store, a demo user and a demo
    /// relying party at /demo.
    Demo {
        /// Not 0: the issuer URL and the demo client's redirect URI name the port.
        #[arg(long, default_value_t = 8400, value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Adds or replaces a user; reads the password from the first line of standard input.
    Add {
        name: String,
        #[arg(long, default_value = "/etc/habitus-oidc/users.toml")]
        users: PathBuf,
        /// Also create a TOTP secret (printed once, with an otpauth:// URI).
        #[arg(long)]
        totp: bool,
        /// Store no password (`[primary] method = "pam"` checks it): the entry only
        /// holds the TOTP secret, so `--totp` is required.
        #[arg(long, requires = "totp")]
        no_password: bool,
        /// Email address released with the `email` scope.
        #[arg(long)]
        email: Option<String>,
        /// Mark the email address as verified (only if you verified it: relying parties
        /// may create or link accounts by it).
        #[arg(long, requires = "email")]
        email_verified: bool,
    },
}

fn read_password() -> anyhow::Result<String> {
    eprint!("password (one line on stdin): ");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let pw = line.trim_end_matches(['\n', '\r']).to_string();
    anyhow::ensure!(
        pw.len() >= 8,
        "the password must have at least 8 characters"
    );
    Ok(pw)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            let bind = config.bind;
            let provider = Arc::new(build(config)?);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(bind)
                    .await
                    .with_context(|| format!("binding {bind}"))?;
                eprintln!("habitus-oidc: serving {} on {bind}", provider.config.issuer);
                tokio::select! {
                    r = habitus_oidc::serve(listener, provider) => r.context("server"),
                    _ = shutdown_signal() => Ok(()),
                }
            })
        }
        Command::Check { config } => {
            let c = Config::load(&config)?;
            println!("{}: ok ({} client(s))", config.display(), c.clients.len());
            Ok(())
        }
        Command::User {
            command:
                UserCommand::Add {
                    name,
                    users,
                    totp: with_totp,
                    no_password,
                    email,
                    email_verified,
                },
        } => {
            let mut file = UsersFile::load(&users)?;
            let password = if no_password {
                None
            } else {
                Some(read_password()?)
            };
            let secret = if with_totp {
                Some(totp::new_secret().context("random generator")?)
            } else {
                None
            };
            file.set(&name, password.as_deref(), secret.clone())?;
            if email.is_some() {
                file.set_email(&name, email.as_deref(), email_verified)?;
            }
            file.save(&users)?;
            println!("{name}: stored in {}", users.display());
            if let Some(s) = secret {
                println!("TOTP secret: {s}");
                println!("otpauth://totp/habitus-oidc:{name}?secret={s}&issuer=habitus-oidc");
            }
            Ok(())
        }
        Command::Demo { port } => run_demo(port),
    }
}

fn run_demo(port: u16) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("habitus-oidc-demo")
        .tempdir()?;
    let secret = habitus_oidc::provider::random_token();
    let text = demo::config_text(port, dir.path(), &secret, None);
    let config = Config::parse(&text)?;
    let password = habitus_oidc::provider::random_token()[..12].to_string();
    let totp_secret = totp::new_secret().context("random generator")?;
    let mut users = UsersFile::default();
    users.set("demo", Some(&password), Some(totp_secret.clone()))?;
    users.save(&config.state_path(&config.users_file))?;
    let bind = config.bind;
    let provider = Arc::new(build(config)?);
    println!(
        "habitus-oidc demo (state in {}, removed on exit)",
        dir.path().display()
    );
    println!("  open        http://127.0.0.1:{port}/demo");
    println!("  user        demo");
    println!("  password    {password}");
    println!("  TOTP secret {totp_secret}  (step-up factor; add it to an authenticator app)");
    println!("  The first 5 logins enrol your typing rhythm (state \"learning\", acr loa:0);");
    println!("  after that, acr says whether your typing matched. Ctrl-C stops.");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("binding {bind}"))?;
        tokio::select! {
            r = habitus_oidc::serve(listener, provider) => r.context("server"),
            _ = shutdown_signal() => Ok(()),
        }
    })?;
    drop(dir);
    Ok(())
}

/// Ctrl-C or SIGTERM (systemd's stop): return so state is cleaned up (the demo's temporary
/// directory is removed on the way out).
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
