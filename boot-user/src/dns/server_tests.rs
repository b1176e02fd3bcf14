//! The socket edge on loopback: its bounds and the forwarder's checks. The upstreams here
//! are sockets of the test's (one silent, one that answers with a wrong ID first): the
//! misbehaviour a real resolver does not show on demand. Forwarding to a real resolver
//! (dnsmasq) is in the integration tests.
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::{Names, Service, Sockets, Stats};
use crate::config::{Config, DnsConfig, Upstreams};
use crate::events::EventLog;
use crate::inventory::{Host, Interface, Inventory};
use crate::state::Shared;

/// How long the test waits for an answer before it fails (a bound against hanging, not
/// a speed assertion).
const WAIT: Duration = Duration::from_secs(20);

struct Running {
    addr: SocketAddr,
    stats: Arc<Stats>,
    shared: Arc<Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn host(name: &str, ip: &str, fqdn: &str) -> Host {
    Host {
        name: name.into(),
        interfaces: vec![Interface {
            ip: Some(ip.into()),
            fqdn: fqdn.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn start(cfg: DnsConfig) -> Running {
    start_on(cfg, "127.0.0.1:0").await
}

async fn start_on(mut cfg: DnsConfig, listen: &str) -> Running {
    cfg.listen = listen.into();
    let inv =
        Inventory::from_parts_unchecked(vec![host("cn1", "10.0.0.1/24", "cn1.lab.test")], vec![]);
    let shared = Shared::new(Config::default(), inv, EventLog::default());
    let (svc, addr) = Service::from_config(Names::Served(shared.clone()), &cfg)
        .unwrap()
        .unwrap();
    let sockets = Sockets::bind(addr).unwrap();
    let addr = sockets.udp.local_addr().unwrap();
    let stats = svc.stats.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(svc.run(sockets, async {
        let _ = rx.await;
    }));
    Running {
        addr,
        stats,
        shared,
        _stop: tx,
    }
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

async fn recv(sock: &UdpSocket) -> Message {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, sock.recv(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

async fn client(server: SocketAddr) -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.connect(server).await.unwrap();
    c
}

async fn tcp_ask(s: &mut TcpStream, id: u16, name: &str) -> std::io::Result<Message> {
    let q = query(id, name);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).await?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await?;
    Ok(Message::from_vec(&buf).unwrap())
}

#[tokio::test]
async fn tcp_connections_over_the_cap_are_closed_and_forwarding_is_capped() {
    // An upstream that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let srv = start(DnsConfig {
        max_tcp_connections: 2,
        max_forwarded: 1,
        forward_timeout_ms: 500,
        forward: Upstreams::One(silent.local_addr().unwrap().to_string()),
        ..Default::default()
    })
    .await;
    let mut a = TcpStream::connect(srv.addr).await.unwrap();
    let mut b = TcpStream::connect(srv.addr).await.unwrap();
    // Accepted in order: the third finds both slots taken and is closed at once.
    let mut c = TcpStream::connect(srv.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(WAIT, c.read(&mut byte)).await.unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    // The two held connections are served.
    for (s, id) in [(&mut a, 1), (&mut b, 2)] {
        let m = tcp_ask(s, id, "cn1.lab.test.").await.unwrap();
        assert_eq!(m.id, id);
        assert_eq!(m.answers.len(), 1);
    }
    assert!(srv.stats.prometheus().contains("kind=\"tcp_refused\"} 1"));
    // One closed: a new connection gets its slot (once the server saw the close).
    drop(a);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut d = TcpStream::connect(srv.addr).await.unwrap();
        if let Ok(m) = tcp_ask(&mut d, 3, "cn1.lab.test.").await {
            assert_eq!(m.answers.len(), 1);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no slot freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Forwarding: the first query holds the only slot until its upstream times out; the
    // second gets SERVFAIL at once; then the first gets SERVFAIL too.
    let u = client(srv.addr).await;
    u.send(&query(10, "a.example.")).await.unwrap();
    u.send(&query(11, "b.example.")).await.unwrap();
    let first = recv(&u).await;
    assert_eq!(
        (first.id, first.response_code),
        (11, ResponseCode::ServFail)
    );
    let second = recv(&u).await;
    assert_eq!(
        (second.id, second.response_code),
        (10, ResponseCode::ServFail)
    );
    let text = srv.stats.prometheus();
    for want in [
        "xboot_dns_errors_total{kind=\"forward_busy\"} 1",
        "xboot_dns_errors_total{kind=\"forward_failed\"} 1",
        "xboot_dns_forwarded_total 1",
        "xboot_dns_answers_total{rcode=\"SERVFAIL\"} 2",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    // The silent upstream got the one forwarded query, under another ID.
    let mut buf = [0u8; 512];
    let n = silent.recv(&mut buf).await.unwrap();
    let fwd = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(fwd.queries[0].name.to_ascii(), "a.example.");
}

#[tokio::test]
async fn forwarded_answers_need_our_id_and_question_and_inventory_swaps_show_at_once() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let srv = start(DnsConfig {
        forward: Upstreams::Many(vec![upstream.local_addr().unwrap().to_string()]),
        ..Default::default()
    })
    .await;
    let u = client(srv.addr).await;
    u.send(&query(77, "www.example.")).await.unwrap();
    let mut buf = [0u8; 512];
    let (n, from) = tokio::time::timeout(WAIT, upstream.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let q = Message::from_vec(&buf[..n]).unwrap();
    let answer = |id: u16, name: &str, ip: [u8; 4]| {
        let mut m = Message::response(id, q.op_code);
        m.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
        m.add_answer(Record::from_rdata(
            Name::from_str(name).unwrap(),
            60,
            RData::A(A(std::net::Ipv4Addr::from(ip))),
        ));
        m.to_vec().unwrap()
    };
    // Forged: a wrong ID, then the right ID for another question; both ignored.
    let wrong_id = q.id.wrapping_add(1);
    upstream
        .send_to(&answer(wrong_id, "www.example.", [192, 0, 2, 66]), from)
        .await
        .unwrap();
    upstream
        .send_to(&answer(q.id, "evil.example.", [192, 0, 2, 67]), from)
        .await
        .unwrap();
    upstream
        .send_to(&answer(q.id, "www.example.", [192, 0, 2, 1]), from)
        .await
        .unwrap();
    let m = recv(&u).await;
    assert_eq!(m.id, 77);
    let RData::A(a) = &m.answers[0].data else {
        panic!("{m:?}")
    };
    assert_eq!(a.0, std::net::Ipv4Addr::new(192, 0, 2, 1));

    // An inventory swap is answered by the next query.
    u.send(&query(78, "cn2.lab.test.")).await.unwrap();
    assert_eq!(recv(&u).await.response_code, ResponseCode::NXDomain);
    srv.shared
        .replace_inventory(Inventory::from_parts_unchecked(
            vec![host("cn2", "10.0.0.2/24", "cn2.lab.test")],
            vec![],
        ));
    u.send(&query(79, "cn2.lab.test.")).await.unwrap();
    let m = recv(&u).await;
    assert_eq!(m.answers.len(), 1, "{m:?}");
    u.send(&query(80, "cn1.lab.test.")).await.unwrap();
    assert_eq!(recv(&u).await.response_code, ResponseCode::NXDomain);

    // Noise is never answered; a broken query gets a FORMERR header.
    u.send(b"\x01\x02").await.unwrap();
    let mut broken = query(81, "cn2.lab.test.");
    broken.truncate(14);
    u.send(&broken).await.unwrap();
    let m = recv(&u).await;
    assert_eq!((m.id, m.response_code), (81, ResponseCode::FormErr));
}

/// Bound to 0.0.0.0, the server answers a query sent to 127.0.0.5 from 127.0.0.5: the
/// client's socket, connected to that address, takes nothing from another.
#[tokio::test]
async fn wildcard_listen_answers_from_the_address_asked() {
    let srv = start_on(DnsConfig::default(), "0.0.0.0:0").await;
    let to = SocketAddr::from(([127, 0, 0, 5], srv.addr.port()));
    let u = client(to).await;
    u.send(&query(5, "cn1.lab.test.")).await.unwrap();
    let m = recv(&u).await;
    assert_eq!((m.id, m.answers.len()), (5, 1));
}

/// A change that touches no name or address (a `complete`, a tag) keeps the tables; one
/// that renames or renumbers a host, or adds one, rebuilds them. Counted, since the
/// answers are the same either way.
#[test]
fn tables_are_rebuilt_only_when_a_name_or_address_changes() {
    use crate::inventory::Change;
    use crate::tftp::root::Roots;
    let hosts: Vec<Host> = (1..=200)
        .map(|i| {
            host(
                &format!("cn{i}"),
                &format!("10.0.{}.{}/16", i / 250, i % 250 + 1),
                &format!("cn{i}.lab.test"),
            )
        })
        .collect();
    let shared = Shared::new(
        Config::default(),
        Inventory::from_parts_unchecked(hosts, vec![]),
        EventLog::default(),
    );
    let cfg = DnsConfig {
        listen: "127.0.0.1:0".into(),
        ..Default::default()
    };
    let (svc, _) = Service::from_config(Names::Served(shared.clone()), &cfg)
        .unwrap()
        .unwrap();
    let first = svc.tables();
    assert_eq!(svc.stats.tables(), (1, 0));
    let change = |edit: &dyn Fn(&mut Host)| {
        let inv = shared.inventory();
        let mut h = inv.host("cn7").unwrap().clone();
        edit(&mut h);
        let c = Change {
            put_hosts: vec![h],
            ..Default::default()
        };
        let next = inv.apply(&c, &Roots::default(), None).unwrap();
        shared.apply_inventory(next, &c);
    };

    change(&|h| h.tags.push("done".into()));
    let kept = svc.tables();
    assert!(Arc::ptr_eq(&first, &kept));
    assert_eq!(svc.stats.tables(), (1, 1));
    assert_eq!(kept.len(), first.len());

    change(&|h| h.interfaces[0].fqdn = "cn7-new.lab.test".into());
    let renamed = svc.tables();
    assert!(!Arc::ptr_eq(&first, &renamed));
    assert_eq!(svc.stats.tables(), (2, 1));

    change(&|h| h.interfaces[0].ip = Some("10.0.9.9/16".into()));
    svc.tables();
    assert_eq!(svc.stats.tables(), (3, 1));

    // A new host is a new name.
    let inv = shared.inventory();
    let c = Change {
        put_hosts: vec![host("cn999", "10.0.8.8/16", "cn999.lab.test")],
        ..Default::default()
    };
    shared.apply_inventory(inv.apply(&c, &Roots::default(), None).unwrap(), &c);
    assert!(svc.tables().len() > renamed.len());
    assert_eq!(svc.stats.tables(), (4, 1));
}
