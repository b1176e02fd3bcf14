//! `xboot token-key rotate|show`: the boot-token keyring of the server of `--config`.
//! Standalone it is `state_dir/token.key` (the running server reads it again within a
//! second of a change); in cluster mode it is etcd's (`cluster::keyring`), which every
//! server follows by watch.
use std::path::Path;

use clap::Subcommand;

use super::output::{table, time_ms};
use super::JsonFlag;
use crate::config::Config;
use crate::http::token::{self, Keyring};

/// Default `--activate-in` standalone: past the server's one-second read of the file.
const ACTIVATE_STANDALONE: u64 = 2;
/// Default `--activate-in` in cluster mode: time for every server's watch to deliver
/// the new ring before any server signs with it.
const ACTIVATE_CLUSTER: u64 = 5;

#[derive(Debug, Subcommand)]
pub enum TokenKeyCmd {
    /// Adds a new signing key. Tokens of the keys before stay valid until they expire
    /// (the retired key is accepted provision.token_ttl, plus a grace, after the new one
    /// starts signing), then are refused naming the retired key.
    Rotate {
        /// Seconds until the new key signs (it is accepted at once) [default: 2, in
        /// cluster mode 5: every server must have it before any signs with it].
        #[arg(long, value_name = "SECS")]
        activate_in: Option<u64>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// The keys of the ring: id, created, signing from, state, valid until.
    Show(JsonFlag),
}

pub fn run(cmd: TokenKeyCmd, config: Option<&Path>) -> anyhow::Result<()> {
    let path = config
        .ok_or_else(|| anyhow::anyhow!("xboot token-key needs --config FILE (or XBOOT_CONFIG)"))?;
    let cfg = Config::load(path)?;
    if cfg
        .provision
        .secret
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        anyhow::bail!(
            "{}: provision.secret is set, so the boot-token key is derived from it and not \
             rotated: change the secret to change the key (every URL handed out before \
             is refused then), or remove it to use a keyring in state_dir",
            path.display()
        );
    }
    let ttl = cfg.provision.token_ttl;
    let file = cfg.state_dir().join(token::KEY_FILE);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (ring, json) = match (cmd, &cfg.cluster) {
        (TokenKeyCmd::Rotate { activate_in, json }, Some(c)) => {
            let delay = activate_in.unwrap_or(ACTIVATE_CLUSTER);
            let ring = rt
                .block_on(crate::cluster::keyring::rotate(c, delay, ttl))
                .map_err(|e| anyhow::anyhow!("cannot rotate the cluster's keyring: {e}"))?;
            (ring, json)
        }
        (TokenKeyCmd::Rotate { activate_in, json }, None) => {
            let delay = activate_in.unwrap_or(ACTIVATE_STANDALONE);
            (token::rotate_file(&file, delay, ttl)?, json)
        }
        (TokenKeyCmd::Show(json), Some(c)) => (
            rt.block_on(crate::cluster::keyring::read(c))
                .map_err(|e| anyhow::anyhow!("cannot read the cluster's keyring: {e}"))?,
            json,
        ),
        (TokenKeyCmd::Show(json), None) => (token::read_ring(&file)?, json),
    };
    print!("{}", render(&ring, token::now_secs(), ttl, json.json)?);
    Ok(())
}

/// The ring's keys at `now`, as a table or JSON.
fn render(ring: &Keyring, now: u64, ttl: u64, json: bool) -> anyhow::Result<String> {
    let status = ring.status(now, ttl);
    if json {
        return Ok(serde_json::to_string_pretty(&status)? + "\n");
    }
    let when = |t: u64| {
        if t == 0 {
            "-".to_string()
        } else {
            time_ms(t * 1000)
        }
    };
    let rows: Vec<Vec<String>> = status
        .iter()
        .map(|s| {
            vec![
                s.kid.clone(),
                when(s.created),
                when(s.active_from),
                s.state.to_string(),
                s.valid_until.map_or("-".into(), &when),
            ]
        })
        .collect();
    Ok(table(
        &["KEY", "CREATED", "SIGNS FROM", "STATE", "VALID UNTIL"],
        &rows,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_each_key_and_state() {
        let ring = Keyring::generate(1_000).rotate(2_000, 5, 60).unwrap();
        let out = render(&ring, 2_001, 60, false).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[1].contains("signing"), "{out}");
        assert!(
            lines[2].contains("pending") && lines[2].ends_with('-'),
            "{out}"
        );
        assert!(lines[2].contains("1970-01-01T00:33:25"), "{out}");
        let v: serde_json::Value =
            serde_json::from_str(&render(&ring, 2_050, 60, true).unwrap()).unwrap();
        assert_eq!(v[0]["state"], "retired");
        assert_eq!(v[0]["valid_until"], 2_005 + 60 + token::ROTATION_GRACE_SECS);
    }
}
