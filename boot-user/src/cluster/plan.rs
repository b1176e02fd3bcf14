//! Pure: the key layout under the prefix, and the etcd transactions that commit one
//! inventory change (no I/O; [`super::etcd`] sends them).
//!
//! | key | value |
//! | --- | --- |
//! | `hosts/{name}` | the host (JSON, the store's and the API's shape) |
//! | `images/{name}` | the image (JSON; metadata only, never file bytes) |
//! | `idx/mac/{mac}`, `idx/ip/{ip}` | the name of the host that holds it: created only if absent |
//! | `meta/serial` | the id of the last server that made a change checked against the whole inventory |
//! | `secrets/token-key` | the boot-token key (hex) every server signs with |
//! | `servers/{id}` | a server's record (JSON, on a lease: gone when the server is) |
//!
//! A change made on the inventory at revision R commits only if nothing it touches was
//! written after R: every host, image and index key it writes is compared with
//! `mod_revision <= R`, a new index key with "absent" (so two servers that give one MAC
//! to two hosts at once cannot both commit), and `meta/serial`, which every change
//! checked against the whole inventory writes, with `mod_revision <= R` too: two such
//! changes never commit on the same base, so what validation saw is what etcd holds.
//! A field-only change ([`field_only`]: `complete` clearing `provision`, a tag edit)
//! compares its host keys alone and leaves `meta/serial` alone: a boot storm's
//! completions never wait on each other, nor on other servers' edits of other hosts.
use std::collections::BTreeMap;

use crate::inventory::{Change, Host, Image, Inventory};

/// The key layout under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

/// What a key under the prefix is.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    Host(&'a str),
    Image(&'a str),
    /// Index, meta, secrets, servers: not part of the inventory itself.
    Other,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    pub fn host(&self, name: &str) -> String {
        format!("{}hosts/{name}", self.prefix)
    }
    pub fn hosts(&self) -> String {
        format!("{}hosts/", self.prefix)
    }
    pub fn image(&self, name: &str) -> String {
        format!("{}images/{name}", self.prefix)
    }
    pub fn images(&self) -> String {
        format!("{}images/", self.prefix)
    }
    pub fn mac(&self, mac: &str) -> String {
        format!("{}idx/mac/{mac}", self.prefix)
    }
    pub fn ip(&self, ip: &str) -> String {
        format!("{}idx/ip/{ip}", self.prefix)
    }
    pub fn serial(&self) -> String {
        format!("{}meta/serial", self.prefix)
    }
    pub fn token_key(&self) -> String {
        format!("{}secrets/token-key", self.prefix)
    }
    pub fn server(&self, id: &str) -> String {
        format!("{}servers/{id}", self.prefix)
    }
    pub fn servers(&self) -> String {
        format!("{}servers/", self.prefix)
    }

    pub fn kind<'a>(&self, key: &'a str) -> Kind<'a> {
        let Some(rest) = key.strip_prefix(self.prefix.as_str()) else {
            return Kind::Other;
        };
        if let Some(n) = rest.strip_prefix("hosts/") {
            Kind::Host(n)
        } else if let Some(n) = rest.strip_prefix("images/") {
            Kind::Image(n)
        } else {
            Kind::Other
        }
    }
}

/// One comparison of an etcd transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// Not written after this revision (true for an absent key too).
    ModAtMost(String, u64),
    /// Absent (created never, or deleted).
    Absent(String),
    /// Last written at exactly this revision (`meta/serial` by the previous part of a
    /// change split over transactions).
    ModIs(String, u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
}

/// One transaction: if every comparison holds, every operation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub cmps: Vec<Cmp>,
    pub ops: Vec<Op>,
}

/// The index keys a host holds: its interfaces' MACs and addresses.
fn index_keys(keys: &Keys, h: &Host) -> Vec<String> {
    let mut out = Vec::new();
    for nic in &h.interfaces {
        if let Some(mac) = nic.mac {
            out.push(keys.mac(&mac.to_string()));
        }
        if let Some(ip) = nic.ip.as_deref() {
            let addr = ip.split('/').next().unwrap_or(ip).trim();
            if !addr.is_empty() {
                out.push(keys.ip(addr));
            }
        }
    }
    out
}

fn host_doc(h: &Host) -> Vec<u8> {
    serde_json::to_vec(h).expect("a host serializes")
}

fn image_doc(i: &Image) -> Vec<u8> {
    serde_json::to_vec(i).expect("an image serializes")
}

/// The transactions that commit `change`, made on `base` at `revision`, each at most
/// `max_ops` operations (and comparisons). All of one entry's keys are in one
/// transaction; images are put first and deleted last, so that each transaction of a
/// split change leaves an inventory whose hosts name images that exist. Every
/// transaction compares and writes `meta/serial` unless `field_only`; the first compares
/// it with `revision`, the next ones with the revision the previous one committed at
/// ([`chain_serial`]).
pub fn plan(
    keys: &Keys,
    base: &Inventory,
    revision: u64,
    change: &Change,
    field_only: bool,
    server: &str,
    max_ops: usize,
) -> Vec<Txn> {
    // Index keys: who holds each before and after.
    let mut before: BTreeMap<String, String> = BTreeMap::new();
    let mut after: BTreeMap<String, String> = BTreeMap::new();
    let touched: Vec<&str> = change
        .put_hosts
        .iter()
        .map(|h| h.name.as_str())
        .chain(change.delete_hosts.iter().map(String::as_str))
        .collect();
    for name in &touched {
        if let Some(h) = base.host(name) {
            for k in index_keys(keys, h) {
                before.insert(k, h.name.clone());
            }
        }
    }
    for h in &change.put_hosts {
        for k in index_keys(keys, h) {
            after.insert(k, h.name.clone());
        }
    }
    // The index operations of each entry, grouped with the entry's own.
    let mut groups: Vec<Txn> = Vec::new();
    for i in &change.put_images {
        groups.push(Txn {
            cmps: vec![Cmp::ModAtMost(keys.image(&i.name), revision)],
            ops: vec![Op::Put(keys.image(&i.name), image_doc(i))],
        });
    }
    let mut seen_idx = std::collections::HashSet::new();
    let mut index_ops = |g: &mut Txn, ks: Vec<String>| {
        for k in ks {
            if !seen_idx.insert(k.clone()) {
                continue;
            }
            match (before.get(&k), after.get(&k)) {
                (None, Some(owner)) => {
                    g.cmps.push(Cmp::Absent(k.clone()));
                    g.ops.push(Op::Put(k, owner.clone().into_bytes()));
                }
                (Some(old), Some(owner)) if old != owner => {
                    g.cmps.push(Cmp::ModAtMost(k.clone(), revision));
                    g.ops.push(Op::Put(k, owner.clone().into_bytes()));
                }
                (Some(_), None) => {
                    g.cmps.push(Cmp::ModAtMost(k.clone(), revision));
                    g.ops.push(Op::Delete(k));
                }
                _ => {}
            }
        }
    };
    for h in &change.put_hosts {
        let mut g = Txn {
            cmps: vec![Cmp::ModAtMost(keys.host(&h.name), revision)],
            ops: vec![Op::Put(keys.host(&h.name), host_doc(h))],
        };
        let mut ks = index_keys(keys, h);
        if let Some(old) = base.host(&h.name) {
            ks.extend(index_keys(keys, old));
        }
        index_ops(&mut g, ks);
        groups.push(g);
    }
    for name in &change.delete_hosts {
        let mut g = Txn {
            cmps: vec![Cmp::ModAtMost(keys.host(name), revision)],
            ops: vec![Op::Delete(keys.host(name))],
        };
        if let Some(old) = base.host(name) {
            index_ops(&mut g, index_keys(keys, old));
        }
        groups.push(g);
    }
    for name in &change.delete_images {
        groups.push(Txn {
            cmps: vec![Cmp::ModAtMost(keys.image(name), revision)],
            ops: vec![Op::Delete(keys.image(name))],
        });
    }
    // Pack the groups, leaving room for `meta/serial`.
    let room = max_ops.saturating_sub(usize::from(!field_only)).max(1);
    let mut out: Vec<Txn> = Vec::new();
    let mut cur = Txn::default();
    for g in groups {
        let fits = cur.ops.len() + g.ops.len() <= room && cur.cmps.len() + g.cmps.len() <= room;
        if !fits && !cur.ops.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.cmps.extend(g.cmps);
        cur.ops.extend(g.ops);
    }
    if !cur.ops.is_empty() {
        out.push(cur);
    }
    if !field_only {
        for t in &mut out {
            t.cmps.push(Cmp::ModAtMost(keys.serial(), revision));
            t.ops
                .push(Op::Put(keys.serial(), server.as_bytes().to_vec()));
        }
    }
    out
}

/// Whether `change`, made on `base`, is field-only: it puts hosts `base` has, each
/// differing from its entry there only in what no other entry's validity depends on
/// (`tags`, `firmware`, or `provision` cleared: a host that boots from disk needs no
/// image). Such a change is checked on its hosts alone and committed comparing their
/// keys alone ([`plan`] with `field_only`): it cannot make another entry invalid, nor
/// be made invalid by one, so it needs no `meta/serial`. A name, an interface, a bond,
/// `boot_image` or `provision` set (which relies on an image existing) is not.
pub fn field_only(base: &Inventory, change: &Change) -> bool {
    if !change.delete_hosts.is_empty()
        || !change.put_images.is_empty()
        || !change.delete_images.is_empty()
        || change.put_hosts.is_empty()
    {
        return false;
    }
    change.put_hosts.iter().all(|new| {
        let Some(old) = base.host(&new.name) else {
            return false;
        };
        let mut same = old.clone();
        same.tags.clone_from(&new.tags);
        same.firmware.clone_from(&new.firmware);
        if !new.provision {
            same.provision = false;
        }
        same == *new
    })
}

/// For the second and later transactions of a split change: `meta/serial` must be the
/// previous transaction's write (committed at `previous`).
pub fn chain_serial(keys: &Keys, txn: &mut Txn, previous: u64) {
    let serial = keys.serial();
    for c in &mut txn.cmps {
        if matches!(c, Cmp::ModAtMost(k, _) if *k == serial) {
            *c = Cmp::ModIs(serial.clone(), previous);
        }
    }
}

/// Whether etcd's failure of a request (`error`: the client's error text) says the
/// request was refused before it was proposed, so that it can never commit: no
/// connection was made, or etcd refused it up front (no leader, overloaded, too large,
/// not allowed, out of space). Any other failure, a timeout above all ("etcdserver:
/// request timed out", the client's own deadline, a connection lost mid-request, a
/// leader change), may have been proposed and committed later: etcd keeps a proposal
/// it did not answer in time. Unknown texts count as maybe committed, the safe side.
///
/// Why not make a late write fail by construction instead: etcd compares revisions and
/// values, not time; a compare on a lease (a key that expires) does not hold either,
/// since a new leader renews every lease when it takes over, which is the moment a
/// proposal kept through a quorum loss commits.
pub fn refused_before_proposal(error: &str) -> bool {
    const REFUSED: &[&str] = &[
        // The client never reached a member.
        "tcp connect error",
        "error trying to connect",
        "connection refused",
        "dns error",
        "no route to host",
        "network is unreachable",
        // etcd refused it before proposing it.
        "etcdserver: no leader",
        "etcdserver: too many requests",
        "etcdserver: request is too large",
        "etcdserver: too many operations in txn request",
        "etcdserver: duplicate key given in txn request",
        "etcdserver: not capable",
        "etcdserver: unhealthy cluster",
        "etcdserver: permission denied",
        "etcdserver: invalid auth token",
        "etcdserver: authentication failed",
        "etcdserver: user name is empty",
        "etcdserver: mvcc: database space exceeded",
        "etcdserver: no space",
        "etcdserver: corrupt cluster",
    ];
    let e = error.to_ascii_lowercase();
    REFUSED.iter().any(|r| e.contains(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_before_a_proposal_are_sure_refusals() {
        // (error text as etcd-client shows it, refused before any proposal)
        let rows = [
            (
                r#"grpc request error: status: Unavailable, message: "etcdserver: no leader""#,
                true,
            ),
            (
                "grpc request error: status: Unavailable, message: \"tcp connect error: \
                 Connection refused (os error 111)\"",
                true,
            ),
            (
                r#"grpc request error: status: ResourceExhausted, message: "etcdserver: mvcc: database space exceeded""#,
                true,
            ),
            (
                r#"grpc request error: status: Unavailable, message: "etcdserver: request timed out""#,
                false,
            ),
            (
                r#"grpc request error: status: Unavailable, message: "etcdserver: request timed out, possibly due to previous leader failure""#,
                false,
            ),
            (
                r#"grpc request error: status: Cancelled, message: "Timeout expired""#,
                false,
            ),
            (
                r#"grpc request error: status: Unavailable, message: "etcdserver: leader changed""#,
                false,
            ),
            ("transport error: connection reset by peer", false),
            ("something never seen", false),
        ];
        for (text, refused) in rows {
            assert_eq!(refused_before_proposal(text), refused, "{text}");
        }
    }
    use crate::inventory::{Interface, Mac};

    fn host(name: &str, mac: &str, ip: &str) -> Host {
        Host {
            name: name.into(),
            interfaces: vec![Interface {
                mac: Some(mac.parse::<Mac>().unwrap()),
                ip: Some(ip.into()),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn base() -> Inventory {
        Inventory::from_parts_unchecked(
            vec![
                host("cn1", "02:00:00:00:00:01", "10.0.0.1/24"),
                host("cn2", "02:00:00:00:00:02", "10.0.0.2/24"),
            ],
            vec![],
        )
    }

    const P: &str = "/x/";

    #[test]
    fn a_new_host_creates_its_index_keys_only_if_absent() {
        let keys = Keys::new(P);
        let change = Change {
            put_hosts: vec![host("cn3", "02:00:00:00:00:03", "10.0.0.3/24")],
            ..Default::default()
        };
        let txns = plan(&keys, &base(), 7, &change, false, "s1", 128);
        assert_eq!(txns.len(), 1);
        let t = &txns[0];
        assert_eq!(
            t.cmps,
            vec![
                Cmp::ModAtMost("/x/hosts/cn3".into(), 7),
                Cmp::Absent("/x/idx/mac/02:00:00:00:00:03".into()),
                Cmp::Absent("/x/idx/ip/10.0.0.3".into()),
                Cmp::ModAtMost("/x/meta/serial".into(), 7),
            ]
        );
        assert_eq!(t.ops.len(), 4);
        assert_eq!(
            t.ops[1],
            Op::Put("/x/idx/mac/02:00:00:00:00:03".into(), b"cn3".to_vec())
        );
        assert_eq!(t.ops[3], Op::Put("/x/meta/serial".into(), b"s1".to_vec()));
    }

    #[test]
    fn a_mac_moved_between_hosts_is_one_put_and_a_deleted_host_frees_its_keys() {
        let keys = Keys::new(P);
        // cn1's MAC goes to cn2 (which gives up its own), cn1 is deleted.
        let change = Change {
            put_hosts: vec![host("cn2", "02:00:00:00:00:01", "10.0.0.2/24")],
            delete_hosts: vec!["cn1".into()],
            ..Default::default()
        };
        let txns = plan(&keys, &base(), 9, &change, false, "s1", 128);
        let t = &txns[0];
        let mac1 = "/x/idx/mac/02:00:00:00:00:01".to_string();
        let mac2 = "/x/idx/mac/02:00:00:00:00:02".to_string();
        assert!(t.ops.contains(&Op::Put(mac1.clone(), b"cn2".to_vec())));
        assert!(t.ops.contains(&Op::Delete(mac2)));
        assert!(t.ops.contains(&Op::Delete("/x/idx/ip/10.0.0.1".into())));
        assert!(t.ops.contains(&Op::Delete("/x/hosts/cn1".into())));
        // Every key is written once (etcd refuses a key twice in one transaction).
        let mut written: Vec<&String> = t
            .ops
            .iter()
            .map(|o| match o {
                Op::Put(k, _) | Op::Delete(k) => k,
            })
            .collect();
        let n = written.len();
        written.sort();
        written.dedup();
        assert_eq!(written.len(), n, "{:#?}", t.ops);
        assert!(t.cmps.contains(&Cmp::ModAtMost(mac1, 9)));
        // cn2's address is unchanged: not touched.
        assert!(!t.cmps.iter().any(|c| format!("{c:?}").contains("10.0.0.2")));
    }

    #[test]
    fn a_field_only_change_compares_its_host_alone() {
        let keys = Keys::new(P);
        let mut done = base().host("cn1").unwrap().clone();
        done.provision = false;
        let change = Change {
            put_hosts: vec![done],
            ..Default::default()
        };
        let txns = plan(&keys, &base(), 3, &change, true, "s1", 128);
        assert_eq!(txns[0].cmps, vec![Cmp::ModAtMost("/x/hosts/cn1".into(), 3)]);
        assert_eq!(txns[0].ops.len(), 1);
    }

    #[test]
    fn a_big_change_is_split_with_images_first_and_serial_chained() {
        let keys = Keys::new(P);
        let hosts: Vec<Host> = (10..60)
            .map(|i| {
                host(
                    &format!("n{i}"),
                    &format!("02:00:00:00:01:{i:02x}"),
                    &format!("10.1.0.{i}/16"),
                )
            })
            .collect();
        let change = Change {
            put_hosts: hosts,
            put_images: vec![Image {
                name: "img".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let txns = plan(&keys, &base(), 5, &change, false, "s1", 16);
        // 1 image + 50 hosts x 3 ops, 15 ops per transaction (one is the serial's).
        assert!(txns.len() >= 11, "{}", txns.len());
        assert_eq!(
            txns[0].ops[0],
            Op::Put("/x/images/img".into(), image_doc(&change.put_images[0]))
        );
        for t in &txns {
            assert!(t.ops.len() <= 16 && t.cmps.len() <= 16);
            assert_eq!(
                t.ops.last(),
                Some(&Op::Put("/x/meta/serial".into(), b"s1".to_vec()))
            );
        }
        let total: usize = txns.iter().map(|t| t.ops.len() - 1).sum();
        assert_eq!(total, 1 + 50 * 3);
        let mut second = txns[1].clone();
        chain_serial(&keys, &mut second, 42);
        assert!(second
            .cmps
            .contains(&Cmp::ModIs("/x/meta/serial".into(), 42)));
        assert!(!second
            .cmps
            .contains(&Cmp::ModAtMost("/x/meta/serial".into(), 5)));
    }

    #[test]
    fn only_changes_no_other_entry_depends_on_are_field_only() {
        let b = base();
        let put = |h: Host| Change {
            put_hosts: vec![h],
            ..Default::default()
        };
        let cn1 = b.host("cn1").unwrap().clone();
        let mut tagged = cn1.clone();
        tagged.tags = vec!["gpu".into()];
        tagged.firmware = "ipxe.efi".into();
        assert!(field_only(&b, &put(tagged.clone())));
        let mut done = cn1.clone();
        done.provision = false;
        assert!(field_only(&b, &put(done.clone())));
        // Provisioning again relies on an image; not field-only.
        let mut again = done.clone();
        again.provision = true;
        assert!(!field_only(
            &Inventory::from_parts_unchecked(vec![done], vec![]),
            &put(again)
        ));
        let mut moved = cn1.clone();
        moved.interfaces[0].ip = Some("10.0.0.9/24".into());
        assert!(!field_only(&b, &put(moved)));
        let mut image = cn1.clone();
        image.boot_image = "img".into();
        assert!(!field_only(&b, &put(image)));
        // A new host, a deletion, an image: never.
        assert!(!field_only(
            &b,
            &put(host("cn3", "02:00:00:00:00:03", "10.0.0.3/24"))
        ));
        let mut del = put(tagged);
        del.delete_hosts.push("cn2".into());
        assert!(!field_only(&b, &del));
        assert!(!field_only(&b, &Change::default()));
    }

    #[test]
    fn keys_are_classified_under_the_prefix_only() {
        let keys = Keys::new(P);
        assert_eq!(keys.kind("/x/hosts/cn1"), Kind::Host("cn1"));
        assert_eq!(keys.kind("/x/images/a/b"), Kind::Image("a/b"));
        assert_eq!(keys.kind("/x/idx/mac/02:00:00:00:00:01"), Kind::Other);
        assert_eq!(keys.kind("/y/hosts/cn1"), Kind::Other);
    }
}
