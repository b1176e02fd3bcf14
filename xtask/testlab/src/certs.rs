//! A test certificate authority and server certificates it signs, made with the openssl
//! command (a peer), for the TLS tests: RSA 2048 keys (what every TLS client, iPXE
//! included, takes), two days of validity, and serial numbers the test chooses so that
//! a client can tell which certificate it was served.
use std::path::{Path, PathBuf};

use crate::peers;

/// A CA in a directory: `ca.pem` (its certificate, what clients trust) and `ca.key`.
pub struct Ca {
    dir: PathBuf,
}

/// A server certificate: `cert` holds the certificate then the CA's (the chain a
/// server sends), `key` its private key.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The serial number, as lower-case hex without leading zeros.
    pub serial: String,
}

impl Ca {
    /// Makes a CA named `name` in `dir` (created if needed).
    pub fn new(dir: &Path, name: &str) -> Result<Ca, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ca = Ca {
            dir: dir.to_path_buf(),
        };
        crate::run(peers::command("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &ca.path("ca.key"),
            "-out",
            &ca.path("ca.pem"),
            "-subj",
            &format!("/CN={name}"),
            "-days",
            "2",
            "-set_serial",
            "1",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]))?;
        Ok(ca)
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The CA's certificate (for `curl --cacert`).
    pub fn cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server certificate for `names` (DNS names or IP addresses) with `serial`
    /// (hex), written as `{file}.pem` (with the CA's certificate after it) and
    /// `{file}.key` in the CA's directory.
    pub fn issue(&self, file: &str, names: &[&str], serial: u64) -> Result<Issued, String> {
        let alt: Vec<String> = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(_) => format!("IP:{n}"),
                Err(_) => format!("DNS:{n}"),
            })
            .collect();
        let ext = self.dir.join(format!("{file}.ext"));
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
                alt.join(",")
            ),
        )
        .map_err(|e| e.to_string())?;
        let (key, csr, leaf) = (
            self.path(&format!("{file}.key")),
            self.path(&format!("{file}.csr")),
            self.path(&format!("{file}.leaf.pem")),
        );
        crate::run(peers::command("openssl").args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={}", names.first().copied().unwrap_or(file)),
        ]))?;
        crate::run(peers::command("openssl").args([
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &self.path("ca.pem"),
            "-CAkey",
            &self.path("ca.key"),
            "-set_serial",
            &format!("0x{serial:x}"),
            "-days",
            "2",
            "-extfile",
            &ext.display().to_string(),
            "-out",
            &leaf,
        ]))?;
        let mut chain = std::fs::read(&leaf).map_err(|e| e.to_string())?;
        chain.extend(std::fs::read(self.cert()).map_err(|e| e.to_string())?);
        let cert = self.dir.join(format!("{file}.pem"));
        std::fs::write(&cert, chain).map_err(|e| e.to_string())?;
        Ok(Issued {
            cert,
            key: PathBuf::from(key),
            serial: format!("{serial:x}"),
        })
    }
}
