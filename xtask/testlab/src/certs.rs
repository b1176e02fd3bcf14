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

    /// The CA's certificate as UEFI's TLS CA store holds it (an `EFI_SIGNATURE_LIST` of
    /// one X.509 entry, the `TlsCaCertificate` variable's format), in `ca.esl`: what
    /// OVMF takes from qemu's `-fw_cfg name=etc/edk2/https/cacerts,file=...`.
    pub fn edk2_cacerts(&self) -> Result<PathBuf, String> {
        let der = self.dir.join("ca.der");
        crate::run(peers::command("openssl").args([
            "x509",
            "-in",
            &self.path("ca.pem"),
            "-outform",
            "DER",
            "-out",
            &der.display().to_string(),
        ]))?;
        let der = std::fs::read(&der).map_err(|e| e.to_string())?;
        // EFI_CERT_X509_GUID a5c059a1-94e4-4aa7-87b5-ab155c2bf072, in EFI_GUID's layout
        // (the first three fields little-endian).
        let x509: [u8; 16] = [
            0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b,
            0xf0, 0x72,
        ];
        let owner = [0x78u8; 16];
        let entry = 16 + der.len();
        let mut list = Vec::with_capacity(28 + entry);
        list.extend(x509);
        list.extend(((28 + entry) as u32).to_le_bytes());
        list.extend(0u32.to_le_bytes());
        list.extend((entry as u32).to_le_bytes());
        list.extend(owner);
        list.extend(der);
        let path = self.dir.join("ca.esl");
        std::fs::write(&path, list).map_err(|e| e.to_string())?;
        Ok(path)
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
