//! Throwaway TLS for the temporary etcd: it holds every Secret of the cluster while it runs, so
//! another local user must not be able to read it through its loopback ports. A CA, one
//! certificate for 127.0.0.1 (server and client), made for this replay only; etcd requires client
//! certificates on both its client and peer ports. The keys live in the private work directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::error::{Context, Error, ErrorKind, Result};

pub(super) struct ReplayTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn failed(e: rcgen::Error) -> Error {
    Error::io(format!("cannot make a certificate for the temporary etcd: {e}"))
}

fn write(path: &Path, text: &str) -> Result<()> {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .context(ErrorKind::Io, || format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .context(ErrorKind::Io, || format!("cannot write {}", path.display()))
}

impl ReplayTls {
    pub fn make(dir: &Path) -> Result<ReplayTls> {
        let ca_key = KeyPair::generate().map_err(failed)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "vault replay CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).map_err(failed)?;
        let issuer = Issuer::new(ca, &ca_key);
        let key = KeyPair::generate().map_err(failed)?;
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).map_err(failed)?;
        p.distinguished_name.push(DnType::CommonName, "vault-replay");
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &issuer).map_err(failed)?;
        let t = ReplayTls {
            ca: dir.join("replay-ca.crt"),
            cert: dir.join("replay.crt"),
            key: dir.join("replay.key"),
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        write(&t.ca, &t.ca_pem)?;
        write(&t.cert, &t.cert_pem)?;
        write(&t.key, &t.key_pem)?;
        Ok(t)
    }

    /// etcd's flags for TLS with client certificates on the client and peer ports.
    pub fn etcd_args(&self) -> Vec<std::ffi::OsString> {
        let mut a = Vec::new();
        for (flag, path) in [
            ("--cert-file", &self.cert),
            ("--key-file", &self.key),
            ("--trusted-ca-file", &self.ca),
            ("--peer-cert-file", &self.cert),
            ("--peer-key-file", &self.key),
            ("--peer-trusted-ca-file", &self.ca),
        ] {
            a.push(flag.into());
            a.push(path.into());
        }
        a.push("--client-cert-auth".into());
        a.push("--peer-client-cert-auth".into());
        a
    }

    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions::new().with_tls(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(&self.ca_pem))
                .identity(Identity::from_pem(&self.cert_pem, &self.key_pem)),
        )
    }

    pub fn remove(&self) {
        for p in [&self.ca, &self.cert, &self.key] {
            let _ = fs::remove_file(p);
        }
    }
}
