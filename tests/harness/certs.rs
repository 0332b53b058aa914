//! Real X.509 certificates for TLS tests, made with the `openssl` CLI: a CA, a server
//! certificate for 127.0.0.1/localhost, and a client certificate, all signed by the CA.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Clone, Debug)]
pub struct Certs {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn key(dir: &Path, name: &str) {
    openssl(
        dir,
        &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name],
    );
}

/// Sign `<name>.csr` with the CA using the extensions in `<name>.ext`.
fn sign(dir: &Path, name: &str, subject: &str, ext: &str, serial: &str) {
    sign_with(dir, Path::new("ca.crt"), Path::new("ca.key"), name, subject, ext, serial);
}

/// Make `dir/<name>.key` and `dir/<name>.crt` signed by the CA at `ca_cert`/`ca_key`.
fn sign_with(dir: &Path, ca_cert: &Path, ca_key: &Path, name: &str, subject: &str, ext: &str, serial: &str) {
    key(dir, &format!("{name}.key"));
    std::fs::write(dir.join(format!("{name}.ext")), ext).expect("write extension file");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            subject,
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &ca_cert.display().to_string(),
            "-CAkey",
            &ca_key.display().to_string(),
            "-set_serial",
            serial,
            "-days",
            "2",
            "-sha256",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// Make `dir/ca.key` and the self-signed `dir/ca.crt`.
fn make_ca(dir: &Path) {
    key(dir, "ca.key");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-sha256",
            "-days",
            "2",
            "-subj",
            "/CN=vault-e2e test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "ca.crt",
        ],
    );
}

/// A CA of its own (`ca.crt`, `ca.key` in `dir`), as OKD keeps the etcd CA in `/etc/etcd/ca/`,
/// that issues certificates into other directories.
#[derive(Clone, Debug)]
pub struct Ca {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// Generate the CA into `dir` (created if needed).
    pub fn generate(dir: &Path) -> Ca {
        std::fs::create_dir_all(dir).expect("create CA dir");
        make_ca(dir);
        Ca {
            dir: dir.to_path_buf(),
            cert: dir.join("ca.crt"),
            key: dir.join("ca.key"),
        }
    }

    /// `out/<name>.crt` and `out/<name>.key` for `cn`, good for serving and as a client (etcd's
    /// server and peer certificates are both), with these IP addresses and DNS names as SANs.
    pub fn issue(&self, out: &Path, name: &str, cn: &str, ips: &[&str], dns: &[&str]) -> (PathBuf, PathBuf) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SERIAL: AtomicU64 = AtomicU64::new(0x2000);
        std::fs::create_dir_all(out).expect("create certificate dir");
        let sans: Vec<String> = ips
            .iter()
            .map(|ip| format!("IP:{ip}"))
            .chain(dns.iter().map(|d| format!("DNS:{d}")))
            .collect();
        let ext = format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={}\n",
            sans.join(",")
        );
        let serial = format!("0x{:x}", SERIAL.fetch_add(1, Ordering::Relaxed));
        sign_with(out, &self.cert, &self.key, name, &format!("/CN={cn}"), &ext, &serial);
        for leftover in ["csr", "ext"] {
            let _ = std::fs::remove_file(out.join(format!("{name}.{leftover}")));
        }
        (out.join(format!("{name}.crt")), out.join(format!("{name}.key")))
    }
}

impl Certs {
    /// Generate everything into `dir` (created if needed).
    pub fn generate(dir: &Path) -> Certs {
        std::fs::create_dir_all(dir).expect("create cert dir");
        make_ca(dir);
        // etcd also dials itself with the server certificate (grpc gateway), hence clientAuth too.
        sign(
            dir,
            "server",
            "/CN=localhost",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
            "0x1001",
        );
        sign(
            dir,
            "client",
            "/CN=vault-e2e client",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
            "0x1002",
        );
        Certs {
            dir: dir.to_path_buf(),
            ca: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        }
    }
}
