//! `xboot events NODESET` in cluster mode: the event logs of every server for those
//! hosts, merged by time, each event naming its server. The servers are those whose
//! records etcd holds (what `xboot cluster status` lists); this one is asked on its
//! unix socket, the others on the API address their record publishes (`api`: their
//! `api.listen`), with `--token`. A server that cannot be asked is named in the error
//! after the events of the others are printed.
use serde_json::Value;

use super::output::{cell, table, time_ms};
use crate::api::client::{encode, Client, Endpoint};
use crate::config::cluster::ClusterConfig;

/// One server's events, or why they could not be read.
pub type Fetched = (String, Result<Vec<Value>, String>);

/// Merges the servers' events by time (then server id), each given a `server` field.
pub fn merge(per_server: &[Fetched]) -> Vec<Value> {
    let mut all: Vec<Value> = per_server
        .iter()
        .filter_map(|(id, r)| r.as_ref().ok().map(|evs| (id, evs)))
        .flat_map(|(id, evs)| {
            evs.iter().map(move |e| {
                let mut e = e.clone();
                if let Some(o) = e.as_object_mut() {
                    o.insert("server".into(), Value::String(id.clone()));
                }
                e
            })
        })
        .collect();
    // Stable: one server's events keep their order at equal times.
    all.sort_by(|a, b| {
        let t = |v: &Value| v["time_ms"].as_u64().unwrap_or(0);
        t(a).cmp(&t(b))
            .then_with(|| a["server"].as_str().cmp(&b["server"].as_str()))
    });
    all
}

/// The merged events as a table.
pub fn render(events: &[Value]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                time_ms(e["time_ms"].as_u64().unwrap_or(0)),
                cell(&e["server"]),
                cell(&e["host"]),
                cell(&e["kind"]),
                cell(&e["detail"]),
            ]
        })
        .collect();
    table(&["TIME", "SERVER", "HOST", "EVENT", "DETAIL"], &rows)
}

/// Asks every server of the cluster for the events of `nodeset`; `local` is how this
/// server (`cluster.server_id`) is reached.
pub async fn fetch(
    cluster: &ClusterConfig,
    nodeset: &str,
    local: Endpoint,
    token: Option<String>,
) -> anyhow::Result<Vec<Fetched>> {
    let status = crate::cluster::status::read(cluster)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the servers' records from etcd: {e}"))?;
    let me = cluster.server_id();
    let path = format!("/v1/events?nodeset={}", encode(nodeset));
    let asks = status.servers.iter().map(|record| {
        let id = record["id"].as_str().unwrap_or("?").to_string();
        let endpoint = if id == me {
            Some(local.clone())
        } else {
            record["api"].as_str().map(|addr| Endpoint::Tcp {
                addr: addr.to_string(),
                token: token.clone(),
            })
        };
        let path = path.clone();
        async move {
            let Some(endpoint) = endpoint else {
                return (
                    id,
                    Err("its record publishes no API address (it has no api.listen)".into()),
                );
            };
            let at = endpoint.to_string();
            let r = match Client::new(endpoint).get(&path).await {
                Ok(Value::Array(evs)) => Ok(evs),
                Ok(other) => Err(format!("{at}: not a list of events: {other}")),
                Err(e) => Err(format!("{at}: {e}")),
            };
            (id, r)
        }
    });
    Ok(futures::future::join_all(asks).await)
}

/// `xboot events NODESET` across the cluster: prints the merged events, then fails
/// naming every server whose events are missing.
pub fn run(
    cluster: &ClusterConfig,
    nodeset: &str,
    local: Endpoint,
    token: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let fetched = rt.block_on(fetch(cluster, nodeset, local, token))?;
    let merged = merge(&fetched);
    if json {
        println!("{}", serde_json::to_string_pretty(&merged)?);
    } else {
        print!("{}", render(&merged));
    }
    let missing: Vec<String> = fetched
        .iter()
        .filter_map(|(id, r)| r.as_ref().err().map(|e| format!("{id} ({e})")))
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "the events of {} of {} servers are missing: {}",
            missing.len(),
            fetched.len(),
            missing.join("; ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_merge_by_time_naming_their_server() {
        let fetched: Vec<Fetched> = vec![
            (
                "s2".into(),
                Ok(vec![
                    json!({"time_ms": 1000, "host": "cn1", "kind": "dhcp_offer", "detail": "a"}),
                    json!({"time_ms": 3000, "host": "cn1", "kind": "kernel", "detail": "b"}),
                ]),
            ),
            ("s3".into(), Err("unreachable".into())),
            (
                "s1".into(),
                Ok(vec![
                    json!({"time_ms": 1000, "host": "cn1", "kind": "dhcp_offer", "detail": "c"}),
                    json!({"time_ms": 2000, "host": "cn2", "kind": "tftp", "detail": "d"}),
                ]),
            ),
        ];
        let m = merge(&fetched);
        let order: Vec<(&str, &str)> = m
            .iter()
            .map(|e| (e["server"].as_str().unwrap(), e["detail"].as_str().unwrap()))
            .collect();
        assert_eq!(order, [("s1", "c"), ("s2", "a"), ("s1", "d"), ("s2", "b")]);
        let t = render(&m);
        assert_eq!(
            t.lines().nth(3).unwrap(),
            "1970-01-01T00:00:02.000Z  s1      cn2   tftp        d"
        );
    }
}
