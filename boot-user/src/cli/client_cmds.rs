//! The client commands: each is one or two API calls and a printout.
use anyhow::Context;
use serde_json::{json, Value};

use super::output::{cell, json_table, table, time_ms};
use super::{AddHost, AddImage, Command, DbCmd, HostCmd, ImageCmd, Select, TagArgs};
use crate::api::client::{encode, Client};
use crate::inventory::load::{self, Kind};
use crate::inventory::{Host, Image};

pub fn run(command: Command, client: Client) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match command {
            Command::Host(cmd) => host(cmd, &client).await,
            Command::Image(cmd) => image(cmd, &client).await,
            Command::Db(cmd) => db(cmd, &client).await,
            Command::Status(j) => status(&client.get("/v1/status").await?, j.json),
            Command::Events { nodeset, json } => {
                let v = client
                    .get(&format!("/v1/events?nodeset={}", encode(&nodeset)))
                    .await?;
                events(&v, json.json)
            }
            Command::Discovered(j) => {
                let v = client.get("/v1/discovered").await?;
                print_list(&v, j.json, discovered_table)
            }
            Command::Serve(_)
            | Command::CheckConfig
            | Command::Bmc(_)
            | Command::User(_)
            | Command::Token(_)
            | Command::TokenKey(_)
            | Command::Cluster(_) => {
                unreachable!("not a client command")
            }
        }
    })
}

fn print_list(v: &Value, as_json: bool, render: impl Fn(&[Value]) -> String) -> anyhow::Result<()> {
    let items = v.as_array().cloned().unwrap_or_default();
    if as_json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        print!("{}", render(&items));
    }
    Ok(())
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `base?nodeset=...&tags=...` for a selection (nothing added for none).
fn select_path(base: &str, sel: &Select) -> String {
    let mut q = Vec::new();
    if let Some(ns) = &sel.nodeset {
        q.push(format!("nodeset={}", encode(ns)));
    }
    if !sel.tags.is_empty() {
        q.push(format!("tags={}", encode(&sel.tags.join(","))));
    }
    if q.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", q.join("&"))
    }
}

/// What a selection names, for messages.
fn describe(sel: &Select) -> String {
    let ns = sel.nodeset.as_deref().unwrap_or(crate::nodeset::ALL);
    if sel.tags.is_empty() {
        ns.to_string()
    } else {
        format!("{ns} with tags {}", sel.tags.join(","))
    }
}

async fn host(cmd: HostCmd, c: &Client) -> anyhow::Result<()> {
    match cmd {
        HostCmd::List { select, json } => {
            let v = c.get(&select_path("/v1/hosts", &select.into())).await?;
            print_list(&v, json.json, host_table)
        }
        HostCmd::Show { name, .. } => {
            print_json(&c.get(&format!("/v1/hosts/{}", encode(&name))).await?)
        }
        HostCmd::Add(a) => {
            let name = a.name.clone();
            c.put(
                &format!("/v1/hosts/{}", encode(&name)),
                serde_json::to_value(new_host(a)?)?,
            )
            .await?;
            println!("host {name} saved");
            Ok(())
        }
        HostCmd::Import { file } => import(c, &file, Kind::Hosts).await,
        HostCmd::Export { select, toml } => {
            let v = c.get(&select_path("/v1/hosts", &select.into())).await?;
            let hosts: Vec<Host> = serde_json::from_value(v)?;
            export(&hosts, &[], toml)
        }
        HostCmd::Delete(sel) => {
            let v = c.delete(&select_path("/v1/hosts", &sel)).await?;
            println!("deleted {}", cell(&v["nodeset"]));
            warn_missing(&v);
            Ok(())
        }
        HostCmd::Provision(sel) => set_provision(c, &sel, "provision").await,
        HostCmd::Unprovision(sel) => set_provision(c, &sel, "unprovision").await,
        HostCmd::Tag(t) => set_tags(c, t, "tag").await,
        HostCmd::Untag(t) => set_tags(c, t, "untag").await,
    }
}

async fn set_provision(c: &Client, sel: &Select, verb: &str) -> anyhow::Result<()> {
    let v = c
        .post(&select_path(&format!("/v1/hosts/{verb}"), sel), None)
        .await?;
    print_changed(&v, verb, &describe(sel));
    Ok(())
}

async fn set_tags(c: &Client, t: TagArgs, verb: &str) -> anyhow::Result<()> {
    let sel = Select {
        nodeset: Some(t.nodeset),
        tags: t.tags,
    };
    let v = c
        .post(
            &select_path(&format!("/v1/hosts/{verb}"), &sel),
            Some(json!({ "tags": t.tag })),
        )
        .await?;
    print_changed(&v, &format!("{verb} {}", t.tag.join(",")), &describe(&sel));
    Ok(())
}

fn print_changed(v: &Value, verb: &str, what: &str) {
    let changed = v["changed"].as_array().map_or(0, Vec::len);
    match changed {
        0 => println!("{verb}: nothing to change in {what}"),
        n => println!(
            "{verb}: {} ({n} host{})",
            cell(&v["nodeset"]),
            if n == 1 { "" } else { "s" }
        ),
    }
    warn_missing(v);
}

async fn db(cmd: DbCmd, c: &Client) -> anyhow::Result<()> {
    match cmd {
        DbCmd::Dump { output } => {
            let v = c.get("/v1/db/dump").await?;
            let text = serde_json::to_string_pretty(&v)? + "\n";
            match output {
                None => print!("{text}"),
                Some(path) => {
                    // Written beside, then renamed: an interrupted dump never leaves half
                    // a file under the name.
                    let tmp = path.with_extension("partial");
                    std::fs::write(&tmp, &text)
                        .with_context(|| format!("cannot write {}", tmp.display()))?;
                    std::fs::rename(&tmp, &path)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    let n = |k: &str| v[k].as_array().map_or(0, Vec::len);
                    eprintln!(
                        "dumped {} host{} and {} image{} to {}",
                        n("Hosts"),
                        plural(n("Hosts")),
                        n("Images"),
                        plural(n("Images")),
                        path.display()
                    );
                }
            }
            Ok(())
        }
        DbCmd::Restore { file } => {
            // Read here, so that relative image paths resolve against the file; the
            // server validates the whole result before replacing anything.
            let loaded = load::load_file(&file, Kind::Hosts)?;
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            let (nh, ni) = (loaded.hosts.len(), loaded.images.len());
            c.post(
                "/v1/db/restore",
                Some(json!({ "hosts": loaded.hosts, "images": loaded.images })),
            )
            .await?;
            println!(
                "restored {nh} host{} and {ni} image{} from {} (the inventory was replaced)",
                plural(nh),
                plural(ni),
                file.display()
            );
            Ok(())
        }
    }
}

fn warn_missing(v: &Value) {
    if let Some(m) = v["missing"].as_str().filter(|m| !m.is_empty()) {
        eprintln!("warning: no such hosts: {m}");
    }
}

fn new_host(a: AddHost) -> anyhow::Result<Host> {
    let mac = a.mac.parse().with_context(|| format!("host {}", a.name))?;
    let mut h = Host::with_interface(&a.name, mac, Some(&a.ip));
    h.provision = a.provision;
    h.boot_image = a.image.unwrap_or_default();
    h.firmware = a.firmware.unwrap_or_default();
    h.tags = a.tags;
    h.interfaces[0].fqdn = a.fqdn.unwrap_or_default();
    h.interfaces[0].ifname = a.ifname.unwrap_or_default();
    if let Some(ip) = a.bmc_ip {
        h.interfaces.push(crate::inventory::Interface {
            ip: Some(ip),
            bmc: true,
            ..Default::default()
        });
    }
    Ok(h)
}

/// Reads a file here (relative paths resolved against it) and sends its entries.
async fn import(c: &Client, file: &std::path::Path, kind: Kind) -> anyhow::Result<()> {
    let loaded = load::load_file(file, kind)?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let (nh, ni) = (loaded.hosts.len(), loaded.images.len());
    c.post(
        "/v1/hosts",
        Some(json!({ "hosts": loaded.hosts, "images": loaded.images })),
    )
    .await?;
    println!(
        "imported {nh} host{} and {ni} image{} from {}",
        plural(nh),
        plural(ni),
        file.display()
    );
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn export(hosts: &[Host], images: &[Image], toml: bool) -> anyhow::Result<()> {
    if toml {
        print!(
            "{}",
            load::to_toml(hosts, images).map_err(anyhow::Error::msg)?
        );
    } else if images.is_empty() {
        println!("{}", load::hosts_to_json(hosts));
    } else {
        println!("{}", load::images_to_json(images));
    }
    Ok(())
}

fn host_table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .filter_map(|v| serde_json::from_value::<Host>(v.clone()).ok())
        .map(|h| {
            let boot: Vec<_> = h.interfaces.iter().filter(|i| !i.bmc).collect();
            let macs: Vec<String> = boot
                .iter()
                .filter_map(|i| i.mac.map(|m| m.to_string()))
                .collect();
            let ips: Vec<String> = boot.iter().filter_map(|i| i.ip.clone()).collect();
            vec![
                h.name.clone(),
                if h.provision { "yes" } else { "no" }.into(),
                h.boot_image.clone(),
                macs.join(","),
                ips.join(","),
                h.bmc().and_then(|b| b.ip.clone()).unwrap_or_default(),
                h.tags.join(","),
            ]
        })
        .collect();
    table(
        &["NAME", "PROVISION", "IMAGE", "MAC", "IP", "BMC", "TAGS"],
        &rows,
    )
}

async fn image(cmd: ImageCmd, c: &Client) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::List(j) => print_list(&c.get("/v1/images").await?, j.json, image_table),
        ImageCmd::Show { name } => {
            print_json(&c.get(&format!("/v1/images/{}", encode(&name))).await?)
        }
        ImageCmd::Add(a) => {
            let name = a.name.clone();
            c.put(
                &format!("/v1/images/{}", encode(&name)),
                serde_json::to_value(new_image(a)?)?,
            )
            .await?;
            println!("image {name} saved");
            Ok(())
        }
        ImageCmd::Import { file } => import(c, &file, Kind::Images).await,
        ImageCmd::Export { toml } => {
            let images: Vec<Image> = serde_json::from_value(c.get("/v1/images").await?)?;
            if toml {
                export(&[], &images, true)
            } else {
                println!("{}", load::images_to_json(&images));
                Ok(())
            }
        }
        ImageCmd::Delete { name } => {
            c.delete(&format!("/v1/images/{}", encode(&name))).await?;
            println!("image {name} deleted");
            Ok(())
        }
    }
}

fn new_image(a: AddImage) -> anyhow::Result<Image> {
    let abs = |p: &std::path::Path| -> anyhow::Result<String> {
        Ok(std::path::absolute(p)?.display().to_string())
    };
    Ok(Image {
        name: a.name,
        kernel: abs(&a.kernel)?,
        initrd: a
            .initrd
            .iter()
            .map(|p| abs(p))
            .collect::<anyhow::Result<_>>()?,
        liveimg: a
            .liveimg
            .as_deref()
            .map(abs)
            .transpose()?
            .unwrap_or_default(),
        cmdline: a.cmdline,
        ..Default::default()
    })
}

fn image_table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|v| {
            vec![
                cell(&v["name"]),
                cell(&v["kernel"]),
                cell(&v["initrd"]),
                cell(&v["liveimg"]),
            ]
        })
        .collect();
    table(&["NAME", "KERNEL", "INITRD", "LIVEIMG"], &rows)
}

fn status(v: &Value, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return print_json(v);
    }
    for key in [
        "version",
        "uptime_secs",
        "hosts",
        "provisioned",
        "images",
        "inventory_generation",
        "store",
    ] {
        println!("{key}: {}", cell(&v[key]));
    }
    let mut lines = Vec::new();
    flatten("", &v["counters"], &mut lines);
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// `a.b: value` lines of nested JSON objects.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, val, out);
            }
        }
        Value::Null => {}
        other => out.push(format!("{prefix}: {}", cell(other))),
    }
}

/// The DHCP service's unknown MACs; any other shape as a generic table.
fn discovered_table(items: &[Value]) -> String {
    if !items
        .iter()
        .all(|i| i.get("mac").is_some() && i.get("last_seen_ms").is_some())
    {
        return json_table(items);
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            vec![
                cell(&i["mac"]),
                cell(&i["count"]),
                time_ms(i["last_seen_ms"].as_u64().unwrap_or(0)),
                cell(&i["interface"]),
                cell(&i["kind"]),
                cell(&i["hostname"]),
                cell(&i["vendor_class"]),
            ]
        })
        .collect();
    table(
        &[
            "MAC",
            "COUNT",
            "LAST SEEN",
            "INTERFACE",
            "KIND",
            "HOSTNAME",
            "VENDOR CLASS",
        ],
        &rows,
    )
}

fn events(v: &Value, as_json: bool) -> anyhow::Result<()> {
    print_list(v, as_json, |items| {
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|e| {
                vec![
                    time_ms(e["time_ms"].as_u64().unwrap_or(0)),
                    cell(&e["host"]),
                    cell(&e["kind"]),
                    cell(&e["detail"]),
                ]
            })
            .collect();
        table(&["TIME", "HOST", "EVENT", "DETAIL"], &rows)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovered_and_counters_printouts() {
        let d = json!([{"mac": "de:ad:be:ef:00:01", "first_seen_ms": 0, "last_seen_ms": 1000,
            "count": 3, "interface": "eth1", "kind": "bios", "hostname": null, "vendor_class": "PXEClient"}]);
        let t = discovered_table(d.as_array().unwrap());
        assert_eq!(
            t.lines().nth(1).unwrap(),
            "de:ad:be:ef:00:01  3      1970-01-01T00:00:01.000Z  eth1       bios            PXEClient"
        );
        let mut lines = vec![];
        flatten(
            "",
            &json!({"dhcp": {"acks": 2, "naks": 0}, "tftp": 5}),
            &mut lines,
        );
        assert_eq!(lines, ["dhcp.acks: 2", "dhcp.naks: 0", "tftp: 5"]);
    }
}
