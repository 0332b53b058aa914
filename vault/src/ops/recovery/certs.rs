//! A new etcd member's server and peer certificates, issued from the cluster's CA as the OKD 3.x
//! scale-up runbook does with `openssl req` + `openssl ca` (extensions `etcd_v3_ca_server` and
//! `etcd_v3_ca_peer`): the CA is `/etc/etcd/ca/ca.crt` + `ca.key` (an RSA key, as OKD makes it, or an
//! EC key), the certificates go to `/etc/etcd/generated_certs/etcd-NAME/` with a copy of the CA
//! bundle the members trust, ready to be copied to the new host's `/etc/etcd/`.
//!
//! What is issued: subject `CN=NAME`; SANs the IP or DNS name of each of the member's peer and
//! client URLs, and its name; `basicConstraints CA:FALSE`; `keyUsage digitalSignature,
//! keyEncipherment`; `extendedKeyUsage serverAuth, clientAuth` (both certificates: etcd uses the
//! peer certificate as a client too); subject and authority key identifiers; valid five years (as
//! OKD's `openssl.cnf`). The new keys are of the CA's kind: RSA 2048 under an RSA CA, P-256 under
//! an EC one.
//!
//! The directory is written whole or not at all (files in a staging directory, then one rename
//! that never replaces anything); keys are 0600; an existing directory is never replaced: one that
//! already holds this member's certificates from this CA counts as done (a resumed plan), anything
//! else is refused.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use crate::error::{Error, ErrorKind, Result};
use crate::host::{Applied, under_root};
use crate::ops::safe_fs::SafeDir;

/// Where OKD 3.x keeps the etcd CA (`ca.crt`, `ca.key`, `openssl.cnf`).
pub const ETCD_CA_DIR: &str = "/etc/etcd/ca";
/// Where the runbook puts a new member's certificates and `etcd.conf` (`etcd-NAME/`).
pub const GENERATED_CERTS_DIR: &str = "/etc/etcd/generated_certs";
/// The CA bundle etcd members trust, copied beside the new certificates when etcd.conf names none.
pub const TRUSTED_CA: &str = "/etc/etcd/ca.crt";
/// How long issued certificates are valid (OKD's `openssl.cnf`: `default_days = 1825`).
pub const VALID_DAYS: i64 = 1825;

/// The files of an issued member directory, with their modes.
const FILES: [(&str, u32); 5] = [
    ("server.crt", 0o644),
    ("server.key", 0o600),
    ("peer.crt", 0o644),
    ("peer.key", 0o600),
    ("ca.crt", 0o644),
];

/// `/etc/etcd/generated_certs/etcd-NAME`: where a new member's certificates and etcd.conf go.
pub fn member_dir(name: &str) -> PathBuf {
    Path::new(GENERATED_CERTS_DIR).join(format!("etcd-{name}"))
}

/// What to issue, and from where to where (in-host paths). Holds no key: the keys are made when
/// the step runs, so a plan or journal never contains one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRequest {
    /// The member's name (`CN`).
    pub name: String,
    /// IP addresses and DNS names, in order, without duplicates.
    pub sans: Vec<String>,
    /// The CA directory (`/etc/etcd/ca`): `ca.crt` and `ca.key`.
    pub ca_dir: PathBuf,
    /// The CA bundle the members trust (`ETCD_TRUSTED_CA_FILE`), copied as `ca.crt`.
    pub trusted_ca: PathBuf,
    /// Where the files go (`/etc/etcd/generated_certs/etcd-NAME`).
    pub out_dir: PathBuf,
}

impl CertRequest {
    /// The request for member `name` with the given peer and client URLs, from the CA at
    /// [`ETCD_CA_DIR`] into [`member_dir`].
    pub fn new(name: &str, urls: &[String], trusted_ca: &Path) -> Result<CertRequest> {
        Ok(CertRequest {
            name: name.to_string(),
            sans: subject_alt_names(name, urls)?,
            ca_dir: PathBuf::from(ETCD_CA_DIR),
            trusted_ca: trusted_ca.to_path_buf(),
            out_dir: member_dir(name),
        })
    }

    /// One line for a plan.
    pub fn describe(&self) -> String {
        format!(
            "issue server and peer certificates for {} (SANs {}) from the CA in {} into {}/ (keys 0600)",
            self.name,
            self.sans.join(", "),
            self.ca_dir.display(),
            self.out_dir.display()
        )
    }

    /// Pre-flight: the CA loads (its certificate, its key, and they belong together), the bundle
    /// the members trust holds it, and the target directory is free or already done.
    pub fn check(&self, root: &Path) -> Result<String> {
        let ca = Ca::load(root, &self.ca_dir)?;
        self.trusted_bundle(root, &ca)?;
        if self.existing(root)?.is_some() {
            return Ok(format!("{} already holds certificates for {}", self.out_dir.display(), self.name));
        }
        Ok(format!(
            "CA {} ({}) can sign; {} is free",
            ca.subject,
            ca.kind.label(),
            self.out_dir.display()
        ))
    }

    /// Issue the certificates and write the directory. A directory that already holds this
    /// member's certificates from this CA is left as it is ([`Applied::AlreadyDone`]).
    pub fn apply(&self, root: &Path) -> Result<Applied> {
        let shown = self.out_dir.display();
        if let Some(done) = self.existing(root)? {
            return Ok(Applied::AlreadyDone(done));
        }
        let ca = Ca::load(root, &self.ca_dir)?;
        let bundle = self.trusted_bundle(root, &ca)?;
        let server = ca.issue(&self.name, &self.sans)?;
        let peer = ca.issue(&self.name, &self.sans)?;
        let contents: [&[u8]; 5] = [
            server.cert.as_bytes(),
            server.key.as_bytes(),
            peer.cert.as_bytes(),
            peer.key.as_bytes(),
            &bundle,
        ];
        let cannot = |e: io::Error| Error::io(format!("cannot write {shown}")).with_source(e);
        let target = under_root(root, &self.out_dir);
        let parent_path = target.parent().expect("member dir has a parent");
        fs::create_dir_all(parent_path).map_err(cannot)?;
        let parent = SafeDir::open(parent_path)?;
        let name = target.file_name().expect("member dir has a name").to_os_string();
        let staging = staging_name(&name);
        if parent.lstat(&staging).map_err(cannot)?.is_some() {
            remove_staging(&parent, &staging).map_err(cannot)?;
        }
        parent.mkdir(&staging, 0o700).map_err(cannot)?;
        let dir = parent.open_child(&staging).map_err(cannot)?;
        for ((file, mode), content) in FILES.iter().zip(contents) {
            let mut f = dir.create_new(OsStr::new(file), *mode).map_err(cannot)?;
            f.write_all(content).and_then(|_| f.sync_all()).map_err(cannot)?;
        }
        dir.sync().map_err(cannot)?;
        match parent.rename_noreplace(&staging, &parent, &name) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = remove_staging(&parent, &staging);
                return Err(self.occupied("appeared while the certificates were written"));
            }
            Err(e) => return Err(cannot(e)),
        }
        parent.sync().map_err(cannot)?;
        Ok(Applied::Done(format!(
            "issued server and peer certificates for {} (SANs {}) in {shown}/",
            self.name,
            self.sans.join(", ")
        )))
    }

    /// The CA bundle members trust; an error unless it holds the CA's certificate (the new
    /// member's certificates would not be trusted otherwise).
    fn trusted_bundle(&self, root: &Path, ca: &Ca) -> Result<Vec<u8>> {
        let file = under_root(root, &self.trusted_ca);
        let bytes = fs::read(&file).map_err(|e| {
            Error::io(format!("cannot read the trusted CA bundle {}", self.trusted_ca.display()))
                .with_source(e)
                .hint("set ETCD_TRUSTED_CA_FILE in etcd.conf or give --cacert")
        })?;
        if !pem_certificates(&bytes).iter().any(|der| der == &ca.cert_der) {
            return Err(Error::usage(format!(
                "{} does not hold the CA certificate {}/ca.crt ({}): the members would not trust certificates it signs",
                self.trusted_ca.display(),
                self.ca_dir.display(),
                ca.subject
            ))
            .hint("give the CA that signed the members' certificates (--ca-dir), or the bundle they trust (--cacert)"));
        }
        Ok(bytes)
    }

    /// `Some(why)` when the directory already holds what this request would write; `None` when
    /// it does not exist; an error when something else is there.
    fn existing(&self, root: &Path) -> Result<Option<String>> {
        let dir = under_root(root, &self.out_dir);
        match fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("cannot look at {}", self.out_dir.display())).with_source(e)),
            Ok(m) if !m.is_dir() => return Err(self.occupied("is not a directory")),
            Ok(_) => {}
        }
        let ca = Ca::load(root, &self.ca_dir)?;
        for (file, _) in FILES {
            if !dir.join(file).is_file() {
                return Err(self.occupied(&format!("exists without {file}")));
            }
        }
        for cert in ["server.crt", "peer.crt"] {
            let bytes = fs::read(dir.join(cert)).map_err(|e| Error::io(format!("cannot read {cert}")).with_source(e))?;
            let issued = pem_certificates(&bytes)
                .into_iter()
                .next()
                .ok_or_else(|| self.occupied(&format!("has a {cert} that is not a PEM certificate")))?;
            let facts = CertFacts::parse(&issued).map_err(|why| self.occupied(&format!("has a {cert} that {why}")))?;
            if facts.issuer_raw != ca.subject_raw || facts.subject_cn.as_deref() != Some(self.name.as_str()) {
                return Err(self.occupied(&format!(
                    "has a {cert} for {} from {}, not for {} from {}",
                    facts.subject_cn.as_deref().unwrap_or("?"),
                    facts.issuer,
                    self.name,
                    ca.subject
                )));
            }
            if let Some(missing) = self.sans.iter().find(|s| !facts.sans.contains(s)) {
                return Err(self.occupied(&format!("has a {cert} without the SAN {missing}")));
            }
        }
        Ok(Some(format!(
            "{} already holds certificates for {} from {}",
            self.out_dir.display(),
            self.name,
            ca.subject
        )))
    }

    fn occupied(&self, why: &str) -> Error {
        Error::new(ErrorKind::AlreadyExists, format!("{} {why}", self.out_dir.display())).hint(format!(
            "vault never replaces it: move {} aside (or issue without --issue-certs), then run this again",
            self.out_dir.display()
        ))
    }
}

fn staging_name(name: &OsStr) -> OsString {
    let mut s = OsString::from(".");
    s.push(name);
    s.push(".vault-partial");
    s
}

/// Remove a staging directory an interrupted run left (ours: only the files we write in it).
fn remove_staging(parent: &SafeDir, staging: &OsStr) -> io::Result<()> {
    let dir = parent.open_child(staging)?;
    for (file, _) in FILES {
        match dir.remove_file(OsStr::new(file)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    fs::remove_dir(parent.path().join(staging))
}

/// The SANs for a member: the host of each URL (an IP address or a DNS name) and the member's
/// name when it is a host name or address, in that order, each once.
pub fn subject_alt_names(name: &str, urls: &[String]) -> Result<Vec<String>> {
    let mut sans: Vec<String> = Vec::new();
    let mut add = |s: String| {
        if !sans.contains(&s) {
            sans.push(s);
        }
    };
    for text in urls {
        let url = url::Url::parse(text)
            .map_err(|e| Error::usage(format!("{text:?} is not a URL ({e})")).hint("give URLs as https://HOST:PORT"))?;
        let host = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            None => return Err(Error::usage(format!("{text} has no host")).hint("give URLs as https://HOST:PORT")),
        };
        add(host);
    }
    if name.parse::<IpAddr>().is_ok() || is_dns_name(name) {
        add(name.to_ascii_lowercase());
    }
    Ok(sans)
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    Ec,
}

impl KeyKind {
    fn label(self) -> &'static str {
        match self {
            KeyKind::Rsa => "RSA key",
            KeyKind::Ec => "EC key",
        }
    }
}

/// The CA, loaded: its certificate and key, checked to belong together.
struct Ca {
    cert_der: Vec<u8>,
    subject: String,
    subject_raw: Vec<u8>,
    has_key_id: bool,
    kind: KeyKind,
    key: KeyPair,
}

/// A certificate and its key, PEM.
struct Issued {
    cert: String,
    key: String,
}

impl Ca {
    fn load(root: &Path, ca_dir: &Path) -> Result<Ca> {
        let cert_path = ca_dir.join("ca.crt");
        let key_path = ca_dir.join("ca.key");
        let read = |p: &Path| {
            fs::read(under_root(root, p)).map_err(|e| {
                Error::io(format!("cannot read the etcd CA file {}", p.display()))
                    .with_source(e)
                    .hint(format!(
                        "--issue-certs needs the CA that signed the members' certificates ({ETCD_CA_DIR}/ca.crt and ca.key on the first master); run it there, give --ca-dir, or make the certificates yourself and leave out --issue-certs"
                    ))
            })
        };
        let cert_der = pem_certificates(&read(&cert_path)?)
            .into_iter()
            .next()
            .ok_or_else(|| Error::usage(format!("{} holds no PEM certificate", cert_path.display())).hint("check the file"))?;
        let facts = CertFacts::parse(&cert_der).map_err(|why| Error::usage(format!("{}: the certificate {why}", cert_path.display())))?;
        if !facts.is_ca {
            return Err(Error::usage(format!(
                "{} ({}) is not a CA certificate (no basicConstraints CA:TRUE)",
                cert_path.display(),
                facts.subject
            ))
            .hint("give the directory of the CA that signed the members' certificates (--ca-dir)"));
        }
        let key_text = String::from_utf8(read(&key_path)?).map_err(|_| Error::usage(format!("{} is not a PEM key", key_path.display())))?;
        if key_text.contains("ENCRYPTED") {
            return Err(
                Error::usage(format!("{} is encrypted with a passphrase", key_path.display())).hint(format!(
                    "write a decrypted copy (openssl pkey -in {0} -out KEY; chmod 600 KEY) into a directory with ca.crt and give it as --ca-dir",
                    key_path.display()
                )),
            );
        }
        let key = KeyPair::from_pem(&key_text).map_err(|e| {
            Error::usage(format!(
                "{} is not a key vault can sign with ({e}): it takes RSA (2048 to 8192 bits) and EC P-256/P-384/P-521 keys, PEM, unencrypted",
                key_path.display()
            ))
            .hint("issue the certificates with openssl as the runbook does and leave out --issue-certs")
        })?;
        if key.public_key_raw() != facts.public_key.as_slice() {
            return Err(Error::usage(format!(
                "{} does not belong to {} ({})",
                key_path.display(),
                cert_path.display(),
                facts.subject
            ))
            .hint("the CA directory must hold the CA certificate and its own key"));
        }
        let kind = if key.algorithm() == &rcgen::PKCS_RSA_SHA256 {
            KeyKind::Rsa
        } else {
            KeyKind::Ec
        };
        Ok(Ca {
            cert_der,
            subject: facts.subject,
            subject_raw: facts.subject_raw,
            has_key_id: facts.has_key_id,
            kind,
            key,
        })
    }

    /// A new key of the CA's kind and a certificate for it.
    fn issue(&self, name: &str, sans: &[String]) -> Result<Issued> {
        let failed = |e: rcgen::Error| Error::io(format!("cannot issue a certificate for {name}: {e}"));
        let key = match self.kind {
            KeyKind::Rsa => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048),
            KeyKind::Ec => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        }
        .map_err(failed)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => s.clone().try_into().map(SanType::DnsName),
            })
            .collect::<std::result::Result<_, _>>()
            .map_err(failed)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = self.has_key_id;
        let mut serial = crate::crypto::random_bytes::<16>();
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(VALID_DAYS);
        let issuer = Issuer::from_ca_cert_der(&self.cert_der.as_slice().into(), &self.key).map_err(failed)?;
        let cert = params.signed_by(&key, &issuer).map_err(failed)?;
        // Go (etcd) finds a certificate's issuer by comparing the raw names byte for byte
        let facts = CertFacts::parse(cert.der()).map_err(|why| Error::io(format!("the certificate issued {why}")))?;
        if facts.issuer_raw != self.subject_raw {
            return Err(Error::io(format!(
                "the certificate issued for {name} names its issuer differently from the CA's subject ({}), so etcd would not find its CA",
                self.subject
            ))
            .hint("issue the certificates with openssl as the runbook does and leave out --issue-certs"));
        }
        Ok(Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// What vault reads from a certificate.
struct CertFacts {
    subject: String,
    subject_raw: Vec<u8>,
    subject_cn: Option<String>,
    issuer: String,
    issuer_raw: Vec<u8>,
    is_ca: bool,
    has_key_id: bool,
    public_key: Vec<u8>,
    sans: Vec<String>,
}

impl CertFacts {
    fn parse(der: &[u8]) -> std::result::Result<CertFacts, String> {
        let (_, x) = X509Certificate::from_der(der).map_err(|e| format!("cannot be read ({e})"))?;
        let mut sans = Vec::new();
        let mut has_key_id = false;
        for ext in x.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for n in &san.general_names {
                        match n {
                            GeneralName::DNSName(d) => sans.push(d.to_ascii_lowercase()),
                            GeneralName::IPAddress(b) => match b.len() {
                                4 => sans.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string()),
                                16 => sans.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string()),
                                _ => {}
                            },
                            _ => {}
                        }
                    }
                }
                ParsedExtension::SubjectKeyIdentifier(_) => has_key_id = true,
                _ => {}
            }
        }
        let is_ca = x.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca);
        let subject_cn = x
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        Ok(CertFacts {
            subject: x.subject().to_string(),
            subject_raw: x.subject().as_raw().to_vec(),
            subject_cn,
            issuer: x.issuer().to_string(),
            issuer_raw: x.issuer().as_raw().to_vec(),
            is_ca,
            has_key_id,
            public_key: x.public_key().subject_public_key.data.to_vec(),
            sans,
        })
    }
}

/// The DER of each `CERTIFICATE` block of a PEM file, in order.
fn pem_certificates(bytes: &[u8]) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(bytes)
        .filter_map(|p| p.ok())
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    fn openssl(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A host tree with an etcd CA made by openssl the way OKD makes it (`/etc/etcd/ca/ca.crt` and
    /// `ca.key`, the bundle `/etc/etcd/ca.crt`); `key_args` make the CA key.
    fn host_with_ca(key_args: &[&str]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let ca = root.path().join("etc/etcd/ca");
        fs::create_dir_all(&ca).unwrap();
        openssl(&ca, key_args);
        openssl(
            &ca,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "30",
                "-subj",
                "/CN=etcd-signer@1700000000",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign",
            ],
        );
        fs::copy(ca.join("ca.crt"), root.path().join("etc/etcd/ca.crt")).unwrap();
        root
    }

    fn request() -> CertRequest {
        let urls = [
            "https://192.168.55.21:2380".to_string(),
            "https://etcd0.example.com:2379".to_string(),
        ];
        CertRequest::new("etcd0.example.com", &urls, Path::new(TRUSTED_CA)).unwrap()
    }

    /// What openssl says of an issued member directory: both certificates verify against the CA
    /// for TLS server and client use, carry the SANs, and each key belongs to its certificate.
    fn check_with_openssl(root: &Path, expect_key: &str) {
        let dir = root.join("etc/etcd/generated_certs/etcd-etcd0.example.com");
        for pair in ["server", "peer"] {
            let crt = format!("{pair}.crt");
            for purpose in ["sslserver", "sslclient"] {
                let out = openssl(&dir, &["verify", "-purpose", purpose, "-CAfile", "ca.crt", &crt]);
                assert_eq!(out.trim(), format!("{crt}: OK"));
            }
            let text = openssl(&dir, &["x509", "-in", &crt, "-noout", "-text"]);
            for want in [
                "Subject: CN = etcd0.example.com",
                "Issuer: CN = etcd-signer@1700000000",
                "IP Address:192.168.55.21, DNS:etcd0.example.com",
                "TLS Web Server Authentication, TLS Web Client Authentication",
                "Digital Signature, Key Encipherment",
                "CA:FALSE",
                "X509v3 Authority Key Identifier",
                expect_key,
            ] {
                assert!(text.contains(want), "{pair}.crt lacks {want:?}:\n{text}");
            }
            let cert_pub = openssl(&dir, &["x509", "-in", &crt, "-noout", "-pubkey"]);
            let key_pub = openssl(&dir, &["pkey", "-in", &format!("{pair}.key"), "-pubout"]);
            assert_eq!(cert_pub, key_pub, "{pair}.key belongs to {pair}.crt");
            let mode = |f: &str| fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&format!("{pair}.key")), 0o600);
            assert_eq!(mode(&crt), 0o644);
        }
        assert_eq!(
            fs::read(dir.join("ca.crt")).unwrap(),
            fs::read(root.join("etc/etcd/ca.crt")).unwrap()
        );
    }

    #[test]
    fn sans_are_the_url_hosts_and_the_name_once_each() {
        let urls = [
            "https://192.168.55.21:2380".to_string(),
            "https://192.168.55.21:2379".to_string(),
            "https://[fd00::1]:2379".to_string(),
            "https://Etcd0.Example.com:2379".to_string(),
        ];
        assert_eq!(
            subject_alt_names("etcd0.example.com", &urls).unwrap(),
            ["192.168.55.21", "fd00::1", "etcd0.example.com"]
        );
        assert_eq!(
            subject_alt_names("10.3.9.222", &urls[..1]).unwrap(),
            ["192.168.55.21", "10.3.9.222"]
        );
        assert_eq!(subject_alt_names("member one", &urls[..1]).unwrap(), ["192.168.55.21"]);
        let e = subject_alt_names("m", &["192.168.55.21:2380".to_string()]).unwrap_err();
        assert!(
            e.to_string().contains("is not a URL") || e.to_string().contains("has no host"),
            "{e}"
        );
        assert_eq!(request().out_dir, Path::new("/etc/etcd/generated_certs/etcd-etcd0.example.com"));
    }

    /// OKD's CA: an RSA key as `openssl req -newkey rsa:...` writes it (PKCS#8), and the older
    /// `openssl genrsa` form (PKCS#1, `BEGIN RSA PRIVATE KEY`).
    #[test]
    fn an_rsa_ca_issues_member_certificates_openssl_verifies() {
        for key_args in [
            &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "ca.key"][..],
            &["genrsa", "-traditional", "-out", "ca.key", "2048"][..],
        ] {
            let root = host_with_ca(key_args);
            let req = request();
            assert!(req.check(root.path()).unwrap().contains("RSA key"));
            let applied = req.apply(root.path()).unwrap();
            assert!(matches!(applied, Applied::Done(_)), "{applied}");
            check_with_openssl(root.path(), "rsaEncryption");
            let again = req.apply(root.path()).unwrap();
            assert!(
                matches!(again, Applied::AlreadyDone(_)),
                "a resumed plan issues nothing twice: {again}"
            );
        }
    }

    #[test]
    fn an_ec_ca_issues_member_certificates_openssl_verifies() {
        let root = host_with_ca(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"]);
        let req = request();
        assert!(matches!(req.apply(root.path()).unwrap(), Applied::Done(_)));
        check_with_openssl(root.path(), "id-ecPublicKey");
        let leftovers: Vec<_> = fs::read_dir(root.path().join("etc/etcd/generated_certs"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["etcd-etcd0.example.com"], "no staging directory is left");
    }

    #[test]
    fn an_occupied_directory_and_a_wrong_ca_are_refused_before_anything_is_written() {
        let root = host_with_ca(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"]);
        let req = request();
        // a directory with something else in it is never replaced
        let dir = root.path().join("etc/etcd/generated_certs/etcd-etcd0.example.com");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("etcd.conf"), "ETCD_NAME=x\n").unwrap();
        let e = req.apply(root.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists);
        assert!(
            e.to_string().contains("exists without server.crt") && e.to_string().contains("move"),
            "{e}"
        );
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();

        // certificates for another member in the place are not taken for done
        let other = CertRequest {
            name: "etcd9".into(),
            ..req.clone()
        };
        other.apply(root.path()).unwrap();
        let e = req.apply(root.path()).unwrap_err();
        assert!(e.to_string().contains("for etcd9"), "{e}");
        fs::remove_dir_all(&dir).unwrap();

        // a key that is not the CA's
        let ca = root.path().join("etc/etcd/ca");
        fs::rename(ca.join("ca.key"), ca.join("ca.key.real")).unwrap();
        openssl(&ca, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"]);
        let e = req.apply(root.path()).unwrap_err();
        assert!(e.to_string().contains("ca.key does not belong to /etc/etcd/ca/ca.crt"), "{e}");
        fs::rename(ca.join("ca.key.real"), ca.join("ca.key")).unwrap();

        // a bundle the members trust that does not hold the CA
        let trusted = root.path().join("etc/etcd/ca.crt");
        fs::rename(&trusted, root.path().join("keep")).unwrap();
        openssl(
            root.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "other.key",
                "-out",
                "etc/etcd/ca.crt",
                "-subj",
                "/CN=other",
            ],
        );
        let e = req.check(root.path()).unwrap_err();
        assert!(e.to_string().contains("does not hold the CA certificate"), "{e}");
        fs::rename(root.path().join("keep"), &trusted).unwrap();

        // no CA on this host
        fs::remove_dir_all(&ca).unwrap();
        let e = req.check(root.path()).unwrap_err();
        assert!(e.to_string().contains("cannot read the etcd CA file /etc/etcd/ca/ca.crt"), "{e}");
        assert!(!root.path().join("etc/etcd/generated_certs/etcd-etcd0.example.com").exists());
    }

    #[test]
    fn an_interrupted_issue_leaves_no_half_directory_and_is_redone() {
        let root = host_with_ca(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"]);
        let staging = root.path().join("etc/etcd/generated_certs/.etcd-etcd0.example.com.vault-partial");
        fs::create_dir_all(&staging).unwrap();
        fs::write(staging.join("server.key"), "half").unwrap();
        request().apply(root.path()).unwrap();
        assert!(!staging.exists());
        check_with_openssl(root.path(), "id-ecPublicKey");
    }
}
