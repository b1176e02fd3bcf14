//! A local three-member etcd cluster's command lines, for the tests and benchmarks that
//! run one in a namespace (`etcd` from Debian's etcd-server).

/// Members of the cluster.
pub const MEMBERS: usize = 3;

/// Member `i`'s (1-based) client URL on `host`: port 2379`i`.
pub fn client_url(host: &str, i: usize) -> String {
    format!("http://{host}:2379{i}")
}

/// Member `i`'s (1-based) peer URL on `host`: port 2380`i`.
pub fn peer_url(host: &str, i: usize) -> String {
    format!("http://{host}:2380{i}")
}

/// Every member's client URL.
pub fn endpoints(host: &str) -> Vec<String> {
    (1..=MEMBERS).map(|i| client_url(host, i)).collect()
}

/// The argv of member `i` (named `m{i}`) of a new cluster on `host`, with its data in
/// `data` and the cluster token `token`.
pub fn member_argv(host: &str, i: usize, data: &std::path::Path, token: &str) -> Vec<String> {
    member_argv_of(host, i, MEMBERS, data, token)
}

/// [`member_argv`] for a cluster of `members` members (1: a single member, as the
/// storm's segment servers use to leave the CPU to the servers).
pub fn member_argv_of(
    host: &str,
    i: usize,
    members: usize,
    data: &std::path::Path,
    token: &str,
) -> Vec<String> {
    let cluster: Vec<String> = (1..=members)
        .map(|m| format!("m{m}={}", peer_url(host, m)))
        .collect();
    let (client, peer) = (client_url(host, i), peer_url(host, i));
    [
        "etcd",
        "--name",
        &format!("m{i}"),
        "--data-dir",
        &data.display().to_string(),
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        &cluster.join(","),
        "--initial-cluster-state",
        "new",
        "--initial-cluster-token",
        token,
    ]
    .map(String::from)
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_member_names_only_itself() {
        let v = member_argv_of("10.9.0.1", 1, 1, std::path::Path::new("/d"), "t");
        let at = |flag: &str| v[v.iter().position(|a| a == flag).unwrap() + 1].clone();
        assert_eq!(at("--initial-cluster"), "m1=http://10.9.0.1:23801");
        assert_eq!(at("--listen-client-urls"), "http://10.9.0.1:23791");
        let three = member_argv("10.9.0.1", 2, std::path::Path::new("/d"), "t");
        let at3 = |flag: &str| three[three.iter().position(|a| a == flag).unwrap() + 1].clone();
        assert_eq!(
            at3("--initial-cluster"),
            "m1=http://10.9.0.1:23801,m2=http://10.9.0.1:23802,m3=http://10.9.0.1:23803"
        );
        assert_eq!(at3("--name"), "m2");
    }
}
