//! `xboot user add|list|delete` and `xboot token create|list|revoke`: the API accounts.
//!
//! They work on the store directly when no server holds it (so that the first account
//! exists before `xboot serve` opens a TCP listener), and through the running server's
//! API otherwise (its unix socket, or `--api` with an admin token).
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::api::accounts::{Accounts, Role};
use crate::api::client::{encode, Client};
use crate::inventory::{Store, StoreError};

#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// State directory holding the store [default: state_dir of --config]; used when no
    /// server runs (else the server's API is asked).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Add an API user; the password is read from stdin (a prompt on a terminal).
    Add {
        name: String,
        /// read-only, operator or admin.
        #[arg(long, default_value = "read-only")]
        role: String,
        /// Change the password and role of an existing user.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List API users.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete an API user (and revoke its sign-in tokens).
    Delete {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create an API token and print it (shown once: only its hash is kept).
    Create {
        /// read-only, operator or admin.
        #[arg(long, default_value = "read-only")]
        role: String,
        /// A label: who or what uses the token.
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime (`8h`, `30d`); absent or `infinite`: never expires.
        #[arg(long, default_value = "")]
        expire: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List API tokens (ids, roles, expiry; never the secrets).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a token by its id (as `token list` shows it).
    Revoke {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where the accounts are: the store itself, or a server's API.
enum Target {
    Local(Accounts),
    Remote(Client),
}

fn target(
    store: &StoreArgs,
    config: Option<&std::path::Path>,
    remote: bool,
    client: Client,
) -> anyhow::Result<Target> {
    if remote {
        return Ok(Target::Remote(client));
    }
    let dir = match (&store.state_dir, config) {
        (Some(d), _) => d.clone(),
        (None, Some(c)) => crate::config::Config::load(c)?.state_dir(),
        (None, None) => return Ok(Target::Remote(client)),
    };
    match Store::open(&dir) {
        Ok(s) => Ok(Target::Local(Accounts::load(Some(Arc::new(s)))?)),
        Err(StoreError::InUse { .. }) => Ok(Target::Remote(client)),
        Err(e) => Err(e.into()),
    }
}

fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let saved = if tty {
        eprint!("Password: ");
        use nix::sys::termios;
        let t = termios::tcgetattr(&stdin)?;
        let mut quiet = t.clone();
        quiet.local_flags.remove(termios::LocalFlags::ECHO);
        termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &quiet)?;
        Some(t)
    } else {
        None
    };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &t);
        eprintln!();
    }
    read?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        anyhow::bail!("no password given on stdin");
    }
    Ok(password)
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f))
}

pub fn run_user(
    cmd: UserCmd,
    config: Option<&std::path::Path>,
    remote: bool,
    client: Client,
) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Add {
            name,
            role,
            replace,
            store,
        } => {
            let role: Role = role.parse()?;
            let target = target(&store, config, remote, client)?;
            let password = read_password()?;
            match target {
                Target::Local(a) => {
                    a.add_user(&name, &password, role, replace)?;
                }
                Target::Remote(c) => {
                    let body = json!({"username": name, "password": password,
                                      "role": role.as_str(), "replace": replace});
                    block_on(c.post("/v1/users", Some(body)))??;
                }
            }
            println!("user {name} saved (role {role})");
        }
        UserCmd::List { store } => {
            let users = match target(&store, config, remote, client)? {
                Target::Local(a) => serde_json::to_value(a.users())?,
                Target::Remote(c) => block_on(c.get("/v1/users"))??,
            };
            for u in users.as_array().into_iter().flatten() {
                println!(
                    "{}\t{}",
                    u["username"].as_str().unwrap_or(""),
                    u["role"].as_str().unwrap_or("")
                );
            }
        }
        UserCmd::Delete { name, store } => {
            match target(&store, config, remote, client)? {
                Target::Local(a) => a.delete_user(&name)?,
                Target::Remote(c) => {
                    block_on(c.delete(&format!("/v1/users/{}", encode(&name))))??;
                }
            }
            println!("user {name} deleted");
        }
    }
    Ok(())
}

pub fn run_token(
    cmd: TokenCmd,
    config: Option<&std::path::Path>,
    remote: bool,
    client: Client,
) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create {
            role,
            name,
            expire,
            store,
        } => {
            let role: Role = role.parse()?;
            let ttl = crate::api::accounts::parse_ttl(&expire)?;
            let (token, info): (String, Value) = match target(&store, config, remote, client)? {
                Target::Local(a) => {
                    let (t, info) = a.create_token(&name, role, ttl, None)?;
                    (t, serde_json::to_value(info)?)
                }
                Target::Remote(c) => {
                    let body = json!({"name": name, "role": role.as_str(), "expire": expire});
                    let v = block_on(c.post("/v1/tokens", Some(body)))??;
                    (
                        v["token"].as_str().unwrap_or_default().to_string(),
                        v["info"].clone(),
                    )
                }
            };
            println!("{token}");
            eprintln!(
                "token {} ({}), role {}{}: shown once, keep it safe",
                info["id"].as_str().unwrap_or(""),
                info["name"].as_str().unwrap_or(""),
                info["role"].as_str().unwrap_or(""),
                match info["expires"].as_u64() {
                    Some(e) => format!(
                        ", expires {}",
                        httpdate::fmt_http_date(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs(e)
                        )
                    ),
                    None => ", never expires".into(),
                }
            );
        }
        TokenCmd::List { store } => {
            let tokens = match target(&store, config, remote, client)? {
                Target::Local(a) => serde_json::to_value(a.tokens())?,
                Target::Remote(c) => block_on(c.get("/v1/tokens"))??,
            };
            for t in tokens.as_array().into_iter().flatten() {
                println!(
                    "{}\t{}\t{}\t{}",
                    t["id"].as_str().unwrap_or(""),
                    t["role"].as_str().unwrap_or(""),
                    t["name"].as_str().unwrap_or(""),
                    t["expires"]
                        .as_u64()
                        .map_or("never".to_string(), |e| httpdate::fmt_http_date(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs(e)
                        ))
                );
            }
        }
        TokenCmd::Revoke { id, store } => {
            match target(&store, config, remote, client)? {
                Target::Local(a) => {
                    a.revoke_token(&id)?;
                }
                Target::Remote(c) => {
                    block_on(c.delete(&format!("/v1/tokens/{}", encode(&id))))??;
                }
            }
            println!("token {id} revoked");
        }
    }
    Ok(())
}
