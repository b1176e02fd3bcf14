//! Integration tests: xboot against real peers in private network namespaces.
//! Run as root (the xtask `test` command does so); each test makes and removes its own
//! namespaces and kills only the processes it started.

mod api;
mod bmc;
mod cli;
mod cluster;
mod dhcp;
mod dns;
mod http;
#[allow(dead_code)] // shared helpers: not every test binary configuration uses all of them
mod netns;
mod package;
mod pxe;
mod templates;
mod tftp;
mod tls;
mod udhcpc;
#[allow(dead_code)] // fixture helpers for tests still being written
mod xdp;

#[test]
fn netns_veth_ping() {
    if netns::need_root() {
        return;
    }
    let a = netns::Netns::new("smoke");
    let b = netns::Netns::new("smoke");
    netns::Netns::veth(&a, "va", "192.0.2.1/24", &b, "vb", "192.0.2.2/24");
    let out = a.run(&["ping", "-c1", "-W2", "192.0.2.2"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 received"));
    let name = a.name.clone();
    drop(a);
    let list = netns::run(testlab::peers::command("ip").args(["netns", "list"]));
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&name));
}
