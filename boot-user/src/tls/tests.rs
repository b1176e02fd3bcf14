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
