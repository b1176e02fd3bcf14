//! `xboot cluster status`: the servers of the cluster (their records under `servers/`),
//! their segments, the hosts each serves (those of its segments) of the inventory's, the
//! revision each has applied against the revision of etcd's inventory, and how long ago
//! each wrote its record.
use etcd_client::{GetOptions, SortOrder, SortTarget};
use serde::Serialize;

use super::plan::Keys;
use crate::config::cluster::ClusterConfig;

#[derive(Debug, Serialize)]
pub struct Status {
    /// etcd's revision now.
    pub revision: u64,
    /// The last revision that changed a host or an image (or deleted one).
    pub inventory_revision: u64,
    pub hosts: u64,
    pub images: u64,
    pub servers: Vec<serde_json::Value>,
}

/// Reads the cluster's status from etcd.
pub async fn read(cfg: &ClusterConfig) -> Result<Status, String> {
    let keys = Keys::new(&cfg.prefix);
    let mut client = super::connect(cfg).await?;
    let err = |e: etcd_client::Error| format!("etcd: {e}");
    // The newest write of each part of the inventory (deletions bump `meta/serial`).
    let mut inventory_revision = 0;
    let mut counts = [0u64; 2];
    for (i, prefix) in [keys.hosts(), keys.images()].into_iter().enumerate() {
        let newest = client
            .get(
                prefix.clone(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_keys_only()
                        .with_sort(SortTarget::Mod, SortOrder::Descend)
                        .with_limit(1),
                ),
            )
            .await
            .map_err(err)?;
        counts[i] = newest.count() as u64;
        if let Some(kv) = newest.kvs().first() {
            inventory_revision = inventory_revision.max(kv.mod_revision() as u64);
        }
    }
    let serial = client.get(keys.serial(), None).await.map_err(err)?;
    if let Some(kv) = serial.kvs().first() {
        inventory_revision = inventory_revision.max(kv.mod_revision() as u64);
    }
    let servers = client
        .get(keys.servers(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(err)?;
    let revision = servers.header().map_or(0, |h| h.revision()) as u64;
    let now = crate::http::token::now_secs();
    let servers = servers
        .kvs()
        .iter()
        .filter_map(|kv| serde_json::from_slice::<serde_json::Value>(kv.value()).ok())
        .map(|mut s| {
            let applied = s["applied_revision"].as_u64().unwrap_or(0);
            let updated = s["updated"].as_u64().unwrap_or(0);
            s["current"] = (applied >= inventory_revision).into();
            s["age_secs"] = now.saturating_sub(updated).into();
            s
        })
        .collect();
    Ok(Status {
        revision,
        inventory_revision,
        hosts: counts[0],
        images: counts[1],
        servers,
    })
}

/// The status as text: one line for etcd, one per server.
pub fn render(s: &Status) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "etcd revision {}, inventory revision {} ({} hosts, {} images), {} servers\n",
        s.revision,
        s.inventory_revision,
        s.hosts,
        s.images,
        s.servers.len()
    );
    let _ = writeln!(
        out,
        "{:<20} {:<20} {:>10} {:>13} {:<8} {:>6}  PROBLEM",
        "SERVER", "SEGMENTS", "APPLIED", "HOSTS", "STATE", "AGE"
    );
    for v in &s.servers {
        let segs: Vec<&str> = v["segments"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s["name"].as_str()).collect())
            .unwrap_or_default();
        let state = if v["current"].as_bool() == Some(true) {
            "current"
        } else {
            "behind"
        };
        let _ = writeln!(
            out,
            "{:<20} {:<20} {:>10} {:>13} {:<8} {:>5}s  {}",
            v["id"].as_str().unwrap_or("?"),
            if segs.is_empty() {
                "-".to_string()
            } else {
                segs.join(",")
            },
            v["applied_revision"].as_u64().unwrap_or(0),
            served(v),
            state,
            v["age_secs"].as_u64().unwrap_or(0),
            v["problem"].as_str().unwrap_or("")
        );
    }
    out
}

/// The HOSTS column: the hosts a server serves, and of how many when its segments
/// leave some out (`12/40`).
fn served(v: &serde_json::Value) -> String {
    let hosts = v["hosts"].as_u64().unwrap_or(0);
    match v["etcd_hosts"].as_u64() {
        Some(all) if all != hosts => format!("{hosts}/{all}"),
        _ => hosts.to_string(),
    }
}

/// `xboot cluster status [--json]` with the `[cluster]` section of `cfg`.
pub fn run(cfg: &ClusterConfig, json: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let s = rt.block_on(read(cfg)).map_err(|e| anyhow::anyhow!(e))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", render(&s));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_status_names_each_server_and_whether_it_is_current() {
        let s = super::Status {
            revision: 40,
            inventory_revision: 35,
            hosts: 2,
            images: 1,
            servers: vec![
                serde_json::json!({"id": "a1", "segments": [{"name": "A"}], "applied_revision": 40,
                    "hosts": 2, "etcd_hosts": 3, "current": true, "age_secs": 1}),
                serde_json::json!({"id": "b1", "segments": [], "applied_revision": 30,
                    "hosts": 1, "current": false, "age_secs": 9, "problem": "etcd watch: gone"}),
            ],
        };
        let text = super::render(&s);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0]
            .starts_with("etcd revision 40, inventory revision 35 (2 hosts, 1 images), 2 servers"));
        assert!(
            lines[2].starts_with("a1")
                && lines[2].contains(" A ")
                && lines[2].contains(" 2/3 ")
                && lines[2].contains("current"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains("behind") && lines[3].ends_with("etcd watch: gone"),
            "{}",
            lines[3]
        );
    }
}
