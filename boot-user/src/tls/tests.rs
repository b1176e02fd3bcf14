//! Certificates made by openssl (a peer, `testlab::certs`): good pairs load and reload,
//! every bad input is refused with a message naming the key and the file, and a refused
//! reload keeps the certificate in use.
use super::*;

fn fingerprint(path: &Path) -> String {
    let pem = std::fs::read(path).unwrap();
    let leaf = CertificateDer::from_pem_slice(&pem).unwrap();
    let hex: Vec<String> = Sha256::digest(leaf.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    hex.join(":")
}

#[test]
fn load_reload_and_every_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let ca = testlab::certs::Ca::new(dir.path(), "unit CA").unwrap();
    let one = ca.issue("one", &["boot.test"], 0x11).unwrap();
    let two = ca.issue("two", &["boot.test"], 0x22).unwrap();
    let live_cert = dir.path().join("live.pem");
    let live_key = dir.path().join("live.key");
    let put = |i: &testlab::certs::Issued| {
        std::fs::copy(&i.cert, &live_cert).unwrap();
        std::fs::copy(&i.key, &live_key).unwrap();
    };
    put(&one);
    let c = Certificate::load("provision", &live_cert, &live_key).unwrap();
    assert_eq!(
        c.describe(),
        format!(
            "certificate sha256 {} (2 in the chain)",
            fingerprint(&one.cert)
        )
    );

    put(&two);
    assert_eq!(
        c.reload().unwrap(),
        format!(
            "certificate sha256 {} (2 in the chain)",
            fingerprint(&two.cert)
        )
    );

    // Every refusal names the key and the file; the reload keeps what serves.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let cut = dir.path().join("cut.pem");
    let whole = std::fs::read_to_string(&two.cert).unwrap();
    std::fs::write(&cut, &whole[..whole.len() / 3]).unwrap();
    let missing = dir.path().join("missing.pem");
    let d = |p: &Path| p.display().to_string();
    let cases: Vec<(PathBuf, PathBuf, String)> = vec![
        (
            missing.clone(),
            two.key.clone(),
            format!("provision.cert: cannot read {}: No such file", d(&missing)),
        ),
        (
            two.cert.clone(),
            missing.clone(),
            format!("provision.key: cannot read {}: No such file", d(&missing)),
        ),
        (
            garbage.clone(),
            two.key.clone(),
            format!("provision.cert: {} holds no certificate", d(&garbage)),
        ),
        (
            two.cert.clone(),
            garbage.clone(),
            format!("provision.key: {} holds no private key", d(&garbage)),
        ),
        (
            cut.clone(),
            two.key.clone(),
            format!(
                "provision.cert: {} is not a PEM certificate file: no \"-----END CERTIFICATE-----\" line",
                d(&cut)
            ),
        ),
        // The key file given as the certificate: PEM, but no certificate in it.
        (
            two.key.clone(),
            two.key.clone(),
            format!("provision.cert: {} holds no certificate", d(&two.key)),
        ),
        (
            two.cert.clone(),
            one.key.clone(),
            format!(
                "provision.key: {} is not the key of the certificate in {} (provision.cert)",
                d(&one.key),
                d(&two.cert)
            ),
        ),
    ];
    for (cert, key, want) in &cases {
        let e = Certificate::load("provision", cert, key)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(want.as_str()), "want {want:?}, got {e:?}");
        std::fs::copy(cert, &live_cert).ok();
        if cert == &missing {
            std::fs::remove_file(&live_cert).unwrap();
        }
        if key == &missing {
            std::fs::remove_file(&live_key).unwrap();
        } else {
            std::fs::copy(key, &live_key).unwrap();
        }
        let e = c.reload().unwrap_err().to_string();
        assert!(
            e.contains("provision.cert") || e.contains("provision.key"),
            "{e}"
        );
        assert_eq!(
            c.describe(),
            format!(
                "certificate sha256 {} (2 in the chain)",
                fingerprint(&two.cert)
            ),
            "a refused reload keeps the certificate ({want})"
        );
        put(&two);
    }
}

/// The TLS accept loop against hostile clients: one that never says hello and one that
/// speaks plain HTTP are closed (the first within the header timeout), and a real TLS
/// client is served meanwhile, verifying the certificate against the test CA.
#[tokio::test]
async fn silent_and_plain_text_clients_are_closed_and_tls_is_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let ca = testlab::certs::Ca::new(dir.path(), "unit CA").unwrap();
    let one = ca.issue("one", &["127.0.0.1"], 0x31).unwrap();
    let cert = Certificate::load("provision", &one.cert, &one.key).unwrap();
    let limits = crate::http::listen::Limits {
        section: "provision",
        max_connections: 8,
        per_source: 0,
        header_timeout: std::time::Duration::from_secs(1),
        idle_timeout: std::time::Duration::from_secs(1),
    };
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "up" }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::http::listen::serve_tls(
        l,
        app,
        limits,
        cert.acceptor(),
        async {
            let _ = stopped.await;
        },
    ));
    let patience = std::time::Duration::from_secs(20);
    // Closed: read returns 0 (or a reset) before the test runs out of patience.
    let closed = |mut s: tokio::net::TcpStream| async move {
        let mut buf = vec![0u8; 4096];
        tokio::time::timeout(patience, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    };
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();

    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = std::fs::read(ca.cert()).unwrap();
    roots
        .add(CertificateDer::from_pem_slice(&ca_pem).unwrap())
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nup"), "{answer}");

    assert!(
        closed(silent).await,
        "a client that never says hello is closed"
    );
    assert!(
        closed(plain).await,
        "plain HTTP on the TLS listener is closed"
    );
    drop(stop);
    server.await.unwrap().unwrap();
}
