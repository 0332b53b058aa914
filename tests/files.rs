//! End-to-end tests of host-file captures (`vaultctl backup files`, `restore` to a directory and in
//! place, `diff`, `packages diff`) against a fake OKD master built in a scratch directory and
//! captured with `--root`. They run as root, like CI: owners are set and checked, and one test
//! drops to `nobody` to make files unreadable. Run `cargo build --workspace` first.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vault::catalog::Catalog;
use vault::chunker::StreamChunker;
use vault::format::{CaptureStats, FilesInfo, Id, PackType, PathBytes, PayloadKind, SnapshotManifest, Stream};
use vault::ops::packing::{self, ChunkSink, Packer};
use vault::repo::{KeySource, Vault};
use vault_e2e::data::{Rng, is_hex, sha256_hex};
use vault_e2e::{Ctl, Run, n, s, tempdir};

/// Owner and group of the files that do not belong to root.
const UID: u32 = 1234;
const GID: u32 = 2345;
/// The extended attribute set on master-config.yaml and on /etc/origin/master.
const XATTR: &str = "user.vault-test";
/// A file name that is not UTF-8.
const NON_UTF8: &[u8] = b"caf\xe9-\xff.conf";

/// What `--profile master` captures, relative to the root: the runbook's master backup.
const CAPTURED: &[&str] = &[
    "etc/origin",
    "etc/sysconfig/atomic-openshift-master",
    "etc/sysconfig/atomic-openshift-master-api",
    "etc/sysconfig/atomic-openshift-master-controllers",
    "etc/sysconfig/atomic-openshift-node",
    "etc/sysconfig/iptables",
    "etc/sysconfig/docker-network",
    "etc/sysconfig/docker-storage",
    "etc/sysconfig/docker-storage-setup",
    "etc/sysconfig/docker-storage-setup.rpmnew",
    "etc/sysconfig/flanneld",
    "etc/dnsmasq.conf",
    "etc/dnsmasq.d",
    "etc/cni",
    "etc/pki/ca-trust/source/anchors",
];

/// In the fake host but not in the profile: never captured, never restored.
const NOT_CAPTURED: &[&str] = &[
    "etc/hosts",
    "etc/passwd",
    "etc/group",
    "etc/sysconfig/network",
    "etc/pki/tls",
    "etc/origin.bak",
];

/// The runbook's `find ${MYBACKUPDIR} -type f -printf '%P\n'` listing of a master backup (without
/// packages.txt, which vaultctl keeps in the snapshot's tree instead).
const RUNBOOK_FILES: &[&str] = &[
    "etc/sysconfig/atomic-openshift-master",
    "etc/sysconfig/atomic-openshift-master-api",
    "etc/sysconfig/atomic-openshift-master-controllers",
    "etc/sysconfig/atomic-openshift-node",
    "etc/sysconfig/flanneld",
    "etc/sysconfig/iptables",
    "etc/sysconfig/docker-network",
    "etc/sysconfig/docker-storage",
    "etc/sysconfig/docker-storage-setup",
    "etc/sysconfig/docker-storage-setup.rpmnew",
    "etc/origin/master/ca.crt",
    "etc/origin/master/ca.key",
    "etc/origin/master/ca.serial.txt",
    "etc/origin/master/ca-bundle.crt",
    "etc/origin/master/master.proxy-client.crt",
    "etc/origin/master/master.proxy-client.key",
    "etc/origin/master/service-signer.crt",
    "etc/origin/master/service-signer.key",
    "etc/origin/master/serviceaccounts.private.key",
    "etc/origin/master/serviceaccounts.public.key",
    "etc/origin/master/openshift-master.crt",
    "etc/origin/master/openshift-master.key",
    "etc/origin/master/openshift-master.kubeconfig",
    "etc/origin/master/master.server.crt",
    "etc/origin/master/master.server.key",
    "etc/origin/master/master.kubelet-client.crt",
    "etc/origin/master/master.kubelet-client.key",
    "etc/origin/master/admin.crt",
    "etc/origin/master/admin.key",
    "etc/origin/master/admin.kubeconfig",
    "etc/origin/master/etcd.server.crt",
    "etc/origin/master/etcd.server.key",
    "etc/origin/master/master.etcd-client.key",
    "etc/origin/master/master.etcd-client.csr",
    "etc/origin/master/master.etcd-client.crt",
    "etc/origin/master/master.etcd-ca.crt",
    "etc/origin/master/policy.json",
    "etc/origin/master/scheduler.json",
    "etc/origin/master/htpasswd",
    "etc/origin/master/session-secrets.yaml",
    "etc/origin/master/openshift-router.crt",
    "etc/origin/master/openshift-router.key",
    "etc/origin/master/registry.crt",
    "etc/origin/master/registry.key",
    "etc/origin/master/master-config.yaml",
    "etc/origin/generated-configs/master-master-1.example.com/master.server.crt",
    "etc/origin/cloudprovider/openstack.conf",
    "etc/origin/node/system:node:master-0.example.com.crt",
    "etc/origin/node/system:node:master-0.example.com.key",
    "etc/origin/node/ca.crt",
    "etc/origin/node/system:node:master-0.example.com.kubeconfig",
    "etc/origin/node/server.crt",
    "etc/origin/node/server.key",
    "etc/origin/node/node-dnsmasq.conf",
    "etc/origin/node/resolv.conf",
    "etc/origin/node/node-config.yaml",
    "etc/origin/node/flannel.etcd-client.key",
    "etc/origin/node/flannel.etcd-client.csr",
    "etc/origin/node/flannel.etcd-client.crt",
    "etc/origin/node/flannel.etcd-ca.crt",
    "etc/pki/ca-trust/source/anchors/openshift-ca.crt",
    "etc/pki/ca-trust/source/anchors/registry-ca.crt",
    "etc/dnsmasq.conf",
    "etc/dnsmasq.d/origin-dns.conf",
    "etc/dnsmasq.d/origin-upstream-dns.conf",
    "etc/dnsmasq.d/node-dnsmasq.conf",
];

const MASTER_CONFIG: &str = "\
apiVersion: v1
kind: MasterConfig
kubernetesMasterConfig:
  masterCount: 3
  servicesSubnet: 172.30.0.0/16
etcdClientInfo:
  ca: master.etcd-ca.crt
  certFile: master.etcd-client.crt
  keyFile: master.etcd-client.key
  urls:
  - https://master-0.example.com:2379
servingInfo:
  bindAddress: 0.0.0.0:8443
";

// ------------------------------------------------------------------------------------------------
// Scratch vaults

/// A fresh local vault (keys made, initialised) in its own scratch directory.
struct Env {
    tmp: tempfile::TempDir,
    ctl: Ctl,
}

impl Env {
    fn new(label: &str) -> Env {
        let tmp = tempdir(label);
        let repo = tmp.path().join("vault").display().to_string();
        let mut ctl = Ctl::new(&tmp.path().join("ctl"), &repo, vec![]);
        ctl.setup(&[]);
        Env { tmp, ctl }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `backup files --json --root ROOT` plus `args`, with the writer key; the exit code is the
    /// caller's to check.
    fn capture(&self, root: &Path, args: &[&str]) -> Run {
        let root = root.display().to_string();
        let mut all = vec!["backup", "files", "--json", "--root", root.as_str()];
        all.extend_from_slice(args);
        self.ctl.writer(&all)
    }
}

fn arr<'a>(v: &'a Value, field: &str) -> &'a Vec<Value> {
    v[field]
        .as_array()
        .unwrap_or_else(|| panic!("field {field} missing or not an array in {v:#}"))
}

fn text(p: &Path) -> String {
    p.display().to_string()
}

// ------------------------------------------------------------------------------------------------
// Building a fake host

struct Builder {
    root: PathBuf,
    rng: Rng,
}

impl Builder {
    fn new(root: &Path, seed: u64) -> Builder {
        fs::create_dir_all(root).expect("create tree root");
        Builder {
            root: root.to_path_buf(),
            rng: Rng::new(seed),
        }
    }

    fn dir(&self, rel: impl AsRef<Path>, mode: u32) -> PathBuf {
        let p = self.root.join(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod dir");
        p
    }

    fn file(&self, rel: impl AsRef<Path>, content: &[u8], mode: u32) -> PathBuf {
        let p = self.root.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir parent");
        fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod file");
        p
    }

    fn symlink(&self, rel: &str, target: &str) -> PathBuf {
        let p = self.root.join(rel);
        std::os::unix::fs::symlink(target, &p).unwrap_or_else(|e| panic!("symlink {}: {e}", p.display()));
        p
    }

    /// Plausible content for a runbook file, by its name.
    fn content_for(&mut self, rel: &str) -> Vec<u8> {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let len = 300 + (self.rng.next_u64() % 900) as usize;
        let body = self.rng.alnum(len);
        let pem = |kind: &str| format!("-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n");
        let t = if name == "master-config.yaml" {
            MASTER_CONFIG.to_string()
        } else if name.ends_with(".crt") {
            pem("CERTIFICATE")
        } else if name.ends_with(".key") {
            pem("RSA PRIVATE KEY")
        } else if name.ends_with(".csr") {
            pem("CERTIFICATE REQUEST")
        } else if name.ends_with(".json") {
            format!("{{\"kind\":\"Policy\",\"data\":\"{body}\"}}\n")
        } else if name == "htpasswd" {
            format!("admin:$apr1${}\ndeveloper:$apr1${}\n", &body[..30], &body[30..60])
        } else {
            format!("# {rel}\nOPTIONS=--loglevel=2\nDATA={body}\n")
        };
        t.into_bytes()
    }
}

/// Give every entry below `dir` a distinct mtime with nanoseconds (children before their directory,
/// so setting a child's time cannot disturb it). Symlinks get their own time, not their target's.
fn stamp_times(dir: &Path, counter: &mut i64) {
    let mut children: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    children.sort();
    for p in children {
        if fs::symlink_metadata(&p).expect("lstat").is_dir() {
            stamp_times(&p, counter);
        }
        *counter += 1;
        let t = filetime::FileTime::from_unix_time(
            1_500_000_000 + *counter * 3607,
            ((*counter * 7_919_993 + 123_457) % 1_000_000_000) as u32,
        );
        filetime::set_symlink_file_times(&p, t, t).unwrap_or_else(|e| panic!("set times of {}: {e}", p.display()));
    }
}

/// Whether setting `user.*` extended attributes works on this file system.
struct MasterTree {
    xattr_ok: bool,
}

/// The fake master: every file of the runbook's listing, and the awkward cases: symlinks (relative,
/// absolute, to a directory, dangling, owned by another user), three names of one inode, a non-UTF-8
/// name, 0600 keys, files and a directory owned by 1234:2345, a setgid file, empty directories and an
/// empty file, a multi-chunk file, extended attributes, and a fifo. Also files outside the profile.
fn build_master(root: &Path) -> MasterTree {
    let mut b = Builder::new(root, 7);
    b.dir("etc", 0o755);
    b.file("etc/hosts", b"127.0.0.1 localhost\n10.0.0.10 master-0.example.com\n", 0o644);
    b.file(
        "etc/passwd",
        format!("root:x:0:0:root:/root:/bin/bash\norigin:x:{UID}:{GID}::/var/lib/origin:/sbin/nologin\n").as_bytes(),
        0o644,
    );
    b.file("etc/group", format!("root:x:0:\norigin:x:{GID}:\n").as_bytes(), 0o644);
    b.file("etc/sysconfig/network", b"NETWORKING=yes\n", 0o644);
    b.file("etc/pki/tls/certs/ca-bundle.crt", b"not in the profile\n", 0o644);
    b.file("etc/origin.bak/master-config.yaml", b"an old copy, not in the profile\n", 0o644);

    for rel in RUNBOOK_FILES {
        if *rel == "etc/origin/node/ca.crt" {
            continue; // a hard link, below
        }
        let mode = if rel.ends_with(".key") || rel.ends_with("iptables") {
            0o600
        } else {
            0o644
        };
        let content = b.content_for(rel);
        b.file(rel, &content, mode);
    }
    // directory modes as on a master
    b.dir("etc/origin", 0o755);
    b.dir("etc/origin/master", 0o700);
    b.dir("etc/origin/node", 0o750);
    b.dir("etc/origin/cloudprovider", 0o750);
    b.dir("etc/cni/net.d", 0o755);
    b.file(
        "etc/cni/net.d/80-openshift-network.conf",
        b"{\"cniVersion\":\"0.2.0\",\"name\":\"openshift-sdn\",\"type\":\"openshift-sdn\"}\n",
        0o644,
    );

    // one inode, three names: the CA is also the node's CA and the front proxy's
    let ca = root.join("etc/origin/master/ca.crt");
    fs::hard_link(&ca, root.join("etc/origin/node/ca.crt")).expect("hard link node/ca.crt");
    fs::hard_link(&ca, root.join("etc/origin/master/front-proxy-ca.crt")).expect("hard link front-proxy-ca.crt");

    // symlinks
    b.symlink("etc/origin/node/client-ca.crt", "ca.crt"); // relative, to a file
    b.symlink("etc/origin/master/node", "../node"); // relative, to a directory
    b.symlink("etc/origin/node/master-ca.crt", "/etc/origin/master/ca.crt"); // absolute
    b.symlink("etc/origin/master/ca.crt.retired", "/etc/origin/master/ca.crt.2017"); // dangling
    let owned_link = b.symlink("etc/origin/node/kubeconfig", "system:node:master-0.example.com.kubeconfig");
    std::os::unix::fs::lchown(&owned_link, Some(UID), Some(GID)).expect("lchown symlink");

    // ownership other than root's
    std::os::unix::fs::chown(root.join("etc/origin/master/htpasswd"), Some(UID), Some(GID)).expect("chown");
    fs::set_permissions(root.join("etc/origin/master/htpasswd"), fs::Permissions::from_mode(0o640)).expect("chmod");
    let gen_dir = b.dir("etc/origin/generated-configs", 0o750);
    std::os::unix::fs::chown(&gen_dir, Some(UID), Some(GID)).expect("chown dir");
    std::os::unix::fs::chown(root.join("etc/origin/cloudprovider/openstack.conf"), Some(0), Some(GID)).expect("chown group only");

    // odd names, modes and sizes
    b.file(
        Path::new("etc/origin/master").join(OsStr::from_bytes(NON_UTF8)),
        b"non-UTF-8 name\n",
        0o644,
    );
    b.file("etc/origin/node/sdn-helper.sh", b"#!/bin/sh\nexit 0\n", 0o2755);
    b.file("etc/origin/master/empty.txt", b"", 0o644);
    let big = b.rng.bytes(3 * 1024 * 1024 + 4321);
    b.file("etc/origin/master/big-policy.bin", &big, 0o640);
    b.dir("etc/origin/node/pods", 0o700); // empty directory
    b.dir("etc/origin/master/empty.d", 0o751); // another one

    // a fifo: recorded, not captured
    nix::unistd::mkfifo(
        &root.join("etc/origin/master/audit.fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o620),
    )
    .expect("mkfifo");

    // extended attributes (a file system may refuse user.* attributes: then only that check is skipped)
    let xattr_ok = match xattr::set(root.join("etc/origin/master/master-config.yaml"), XATTR, b"okd\x00\xffvalue") {
        Ok(()) => {
            xattr::set(root.join("etc/origin/master"), XATTR, b"a directory's attribute").expect("xattr on a directory");
            true
        }
        Err(e) => {
            eprintln!("NOTE: this file system refuses user extended attributes ({e}): not checking them");
            false
        }
    };

    stamp_times(root, &mut 0);
    MasterTree { xattr_ok }
}

// ------------------------------------------------------------------------------------------------
// Reading a tree back

/// Everything a restore must reproduce about one entry.
#[derive(Clone, Debug, PartialEq)]
struct Meta {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_nsec: i64,
    size: u64,
    sha256: Option<String>,
    target: Option<PathBuf>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

#[derive(Default, Debug)]
struct Scan {
    entries: BTreeMap<PathBuf, Meta>,
    inodes: BTreeMap<PathBuf, u64>,
}

impl Scan {
    fn get(&self, rel: &str) -> &Meta {
        self.entries
            .get(Path::new(rel))
            .unwrap_or_else(|| panic!("{rel} is not in the scan"))
    }

    fn count(&self, kind: &str) -> u64 {
        self.entries.values().filter(|m| m.kind == kind).count() as u64
    }

    /// Sets of paths that are one inode, among the paths `keep` accepts.
    fn link_groups(&self, keep: &dyn Fn(&Path) -> bool) -> BTreeSet<BTreeSet<PathBuf>> {
        let mut by_inode: BTreeMap<u64, BTreeSet<PathBuf>> = BTreeMap::new();
        for (p, ino) in &self.inodes {
            if keep(p) {
                by_inode.entry(*ino).or_default().insert(p.clone());
            }
        }
        by_inode.into_values().filter(|g| g.len() > 1).collect()
    }
}

/// Scan `roots` (relative to `base`; "" is `base` itself), not following symlinks.
fn scan(base: &Path, roots: &[&str]) -> Scan {
    let mut out = Scan::default();
    for r in roots {
        if fs::symlink_metadata(base.join(r)).is_ok() {
            scan_entry(base, Path::new(r), &mut out);
        }
    }
    out
}

fn scan_entry(base: &Path, rel: &Path, out: &mut Scan) {
    let p = base.join(rel);
    let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let ft = md.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "other"
    };
    let mut xattrs = BTreeMap::new();
    if kind != "symlink" {
        for name in xattr::list(&p).unwrap_or_else(|e| panic!("list xattrs of {}: {e}", p.display())) {
            let value = xattr::get(&p, &name).expect("read xattr").unwrap_or_default();
            xattrs.insert(name.to_string_lossy().into_owned(), value);
        }
    }
    let meta = Meta {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
        mtime_nsec: md.mtime_nsec(),
        size: if kind == "file" { md.len() } else { 0 },
        sha256: (kind == "file").then(|| sha256_hex(&fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))),
        target: (kind == "symlink").then(|| fs::read_link(&p).expect("readlink")),
        xattrs,
    };
    out.entries.insert(rel.to_path_buf(), meta);
    if kind == "file" {
        out.inodes.insert(rel.to_path_buf(), md.ino());
    }
    if kind == "dir" {
        let mut names: Vec<_> = fs::read_dir(&p)
            .unwrap_or_else(|e| panic!("list {}: {e}", p.display()))
            .map(|e| e.expect("dir entry").file_name())
            .collect();
        names.sort();
        for name in names {
            scan_entry(base, &rel.join(name), out);
        }
    }
}

/// Every difference between two scans, over the paths `keep` accepts (content, metadata, hard links).
fn differences(expected: &Scan, actual: &Scan, keep: &dyn Fn(&Path) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for (p, m) in expected.entries.iter().filter(|(p, _)| keep(p)) {
        match actual.entries.get(p) {
            None => out.push(format!("missing: {p:?} ({m:?})")),
            Some(a) if a != m => out.push(format!("differs: {p:?}\n    expected {m:?}\n    got      {a:?}")),
            Some(_) => {}
        }
    }
    for p in actual.entries.keys().filter(|p| keep(p) && !expected.entries.contains_key(*p)) {
        out.push(format!("unexpected: {p:?}"));
    }
    let (a, b) = (expected.link_groups(keep), actual.link_groups(keep));
    if a != b {
        out.push(format!("hard links differ: expected {a:?}, got {b:?}"));
    }
    out
}

fn assert_same(what: &str, expected: &Scan, actual: &Scan, keep: &dyn Fn(&Path) -> bool) {
    let diffs = differences(expected, actual, keep);
    assert!(diffs.is_empty(), "{what}: {} difference(s):\n{}", diffs.len(), diffs.join("\n"));
}

fn everything(_: &Path) -> bool {
    true
}

/// Names of everything below `dir`, recursively (for "nothing was written" checks).
fn all_names(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        out.push(p.clone());
        if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            out.extend(all_names(&p));
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// 1, 2, 5. Capture the master profile, restore to a new directory, compare everything exactly; an
// unchanged second capture stores nothing; the package list matches this host.

#[test]
fn master_profile_capture_restores_every_entry_exactly() {
    let env = Env::new("files-exact");
    let tree = env.path("tree");
    let built = build_master(&tree);
    let original = scan(&tree, CAPTURED);
    for rel in RUNBOOK_FILES {
        assert_eq!(original.get(rel).kind, "file", "{rel}");
    }
    assert!(
        original
            .entries
            .contains_key(&Path::new("etc/origin/master").join(OsStr::from_bytes(NON_UTF8)))
    );
    if built.xattr_ok {
        assert!(original.get("etc/origin/master/master-config.yaml").xattrs.contains_key(XATTR));
    }

    let run = env.capture(&tree, &["--profile", "master", "--tag", "change=CHG-1234"]).code(0);
    let r = run.json();
    let id = s(&r, "id");
    assert!(is_hex(&id, 64), "{r:#}");
    assert_eq!(n(&r, "files"), original.count("file"), "files (hard-linked names included): {r:#}");
    assert_eq!(n(&r, "dirs"), original.count("dir"), "{r:#}");
    assert_eq!(n(&r, "symlinks"), original.count("symlink"), "{r:#}");
    let unique: BTreeMap<u64, u64> = original.inodes.iter().map(|(p, ino)| (*ino, original.entries[p].size)).collect();
    assert_eq!(
        n(&r, "bytes"),
        unique.values().sum::<u64>(),
        "content bytes, each inode once: {r:#}"
    );
    assert!(n(&r, "new_bytes") > 3 * 1024 * 1024, "{r:#}");
    assert!(n(&r, "packs") >= 1 && n(&r, "stored_bytes") > 0, "{r:#}");
    assert_eq!(r["incomplete"], false, "{r:#}");
    assert_eq!(r["missing_patterns"], json!([]), "every profile pattern exists in the tree: {r:#}");
    let skipped = arr(&r, "skipped");
    assert_eq!(skipped.len(), 1, "only the fifo is skipped: {r:#}");
    assert_eq!(s(&skipped[0], "path"), "/etc/origin/master/audit.fifo", "{r:#}");
    assert!(s(&skipped[0], "reason").contains("fifo"), "{r:#}");

    let listed = env.ctl.writer(&["snapshots", "--json"]).ok().json();
    let row = listed
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("snapshot {id} is not listed: {listed:#}"));
    assert_eq!(s(row, "kind"), "files", "{row:#}");

    // restore into a new directory: every entry exactly as it was
    let out = env.path("restored");
    let restored = env.ctl.restorer(&["restore", &id, "--to", &text(&out)]).ok();
    assert!(
        restored.text().contains("audit.fifo"),
        "the fifo that is not recreated is mentioned:\n{restored}"
    );
    let back = scan(&out, CAPTURED);
    let not_fifo = |p: &Path| p != Path::new("etc/origin/master/audit.fifo");
    assert_same("restore --to DIR", &original, &back, &not_fifo);
    if let Some(m) = back.entries.get(Path::new("etc/origin/master/audit.fifo")) {
        assert_eq!(m, original.get("etc/origin/master/audit.fifo"), "a recreated fifo has its metadata");
    }
    let ca_group: BTreeSet<PathBuf> = [
        "etc/origin/master/ca.crt",
        "etc/origin/master/front-proxy-ca.crt",
        "etc/origin/node/ca.crt",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert!(
        back.link_groups(&everything).contains(&ca_group),
        "the CA's three names are one inode in the restore"
    );
    if built.xattr_ok {
        assert_eq!(back.get("etc/origin/master/master-config.yaml").xattrs[XATTR], b"okd\x00\xffvalue");
        assert_eq!(back.get("etc/origin/master").xattrs[XATTR], b"a directory's attribute");
    }
    let key = back.get("etc/origin/master/ca.key");
    assert_eq!((key.mode, key.uid, key.gid), (0o600, 0, 0));
    let owned = back.get("etc/origin/master/htpasswd");
    assert_eq!((owned.mode, owned.uid, owned.gid), (0o640, UID, GID));
    let link = back.get("etc/origin/node/kubeconfig");
    assert_eq!((link.kind, link.uid, link.gid), ("symlink", UID, GID));
    assert_eq!(back.get("etc/origin/node/sdn-helper.sh").mode, 0o2755, "setgid survives the chown");
    assert_eq!(
        back.get("etc/origin/master/ca.crt.retired").target,
        Some(PathBuf::from("/etc/origin/master/ca.crt.2017"))
    );
    let leaked = scan(&out, NOT_CAPTURED);
    assert!(
        leaked.entries.is_empty(),
        "paths outside the profile were restored: {:?}",
        leaked.entries.keys()
    );
    let top: Vec<_> = fs::read_dir(&out)
        .expect("list restore dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(top, vec![OsStr::new("etc").to_os_string()], "only etc/ at the top of the restore");

    // a second capture of the unchanged tree stores nothing new
    let r2 = env.capture(&tree, &["--profile", "master"]).code(0).json();
    assert_ne!(s(&r2, "id"), id, "{r2:#}");
    assert_eq!(n(&r2, "packs"), 0, "unchanged tree: {r2:#}");
    assert_eq!(n(&r2, "new_bytes"), 0, "unchanged tree: {r2:#}");
    assert_eq!(n(&r2, "stored_bytes"), 0, "unchanged tree: {r2:#}");
    assert_eq!(
        n(&r2, "unread_bytes"),
        n(&r2, "bytes"),
        "unchanged files come from the file cache: {r2:#}"
    );
    assert_eq!(n(&r2, "bytes"), n(&r, "bytes"), "{r2:#}");
    assert_eq!(n(&r2, "files"), n(&r, "files"), "{r2:#}");

    // the package list recorded with the snapshot is this host's
    let p = env.ctl.restorer(&["packages", "diff", &id, "--json"]).ok().json();
    assert!(p["diff"]["manager"] == "dpkg" || p["diff"]["manager"] == "rpm", "{p:#}");
    assert_eq!(p["diff"]["missing"], json!([]), "{p:#}");
    assert_eq!(p["diff"]["different"], json!([]), "{p:#}");
    assert_eq!(p["fix"], Value::Null, "{p:#}");
    env.ctl
        .restorer(&["packages", "diff", &id])
        .ok()
        .mentions(&["no packages are missing or different"]);
    // without the package list there is nothing to compare
    let r3 = env.capture(&tree, &["--profile", "master", "--no-packages"]).code(0).json();
    env.ctl
        .restorer(&["packages", "diff", &s(&r3, "id")])
        .failed()
        .mentions(&["holds no package list"]);
}

// ------------------------------------------------------------------------------------------------
// 3, 4. Diff against the live files and between snapshots; in-place restore keeps what it replaces.

/// `diff --json` output as path -> (change, what).
fn changes(v: &Value) -> BTreeMap<String, (String, Vec<String>)> {
    v.as_array()
        .unwrap_or_else(|| panic!("diff --json is not an array: {v:#}"))
        .iter()
        .map(|c| {
            let what = c["what"]
                .as_array()
                .map(|w| w.iter().map(|x| x.as_str().unwrap_or_default().to_string()).collect())
                .unwrap_or_default();
            (s(c, "path"), (s(c, "change"), what))
        })
        .collect()
}

const CFG: &str = "etc/origin/master/master-config.yaml";

#[test]
fn diff_and_in_place_restore_keep_what_they_replace() {
    let env = Env::new("files-inplace");
    let tree = env.path("tree");
    build_master(&tree);
    let original = scan(&tree, CAPTURED);
    let id1 = s(&env.capture(&tree, &["--profile", "master", "--no-packages"]).code(0).json(), "id");

    // break the live host: change master-config.yaml, delete two files, add one
    let cfg = tree.join(CFG);
    fs::write(&cfg, b"broken: true\n").expect("modify");
    fs::remove_file(tree.join("etc/sysconfig/iptables")).expect("delete");
    fs::remove_file(tree.join("etc/origin/node/node-config.yaml")).expect("delete");
    fs::write(tree.join("etc/origin/master/new-file.txt"), b"added after the backup\n").expect("add");
    let expected_changes = |d: &BTreeMap<String, (String, Vec<String>)>, old_to_new: bool| {
        let (added, removed) = if old_to_new { ("added", "removed") } else { ("removed", "added") };
        let got: BTreeMap<&str, &str> = d.iter().map(|(p, (c, _))| (p.as_str(), c.as_str())).collect();
        let want: BTreeMap<&str, &str> = [
            ("/etc/origin/master/master-config.yaml", "changed"),
            ("/etc/sysconfig/iptables", removed),
            ("/etc/origin/node/node-config.yaml", removed),
            ("/etc/origin/master/new-file.txt", added),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want, "{d:#?}");
        let what = &d["/etc/origin/master/master-config.yaml"].1;
        assert!(what.iter().any(|w| w == "content"), "{d:#?}");
    };

    // the snapshot against the live files
    let d = env.ctl.restorer(&["diff", &id1, "--root", &text(&tree), "--json"]).ok().json();
    expected_changes(&changes(&d), true);
    env.ctl.restorer(&["diff", &id1, "--root", &text(&tree)]).ok().mentions(&[
        "M /etc/origin/master/master-config.yaml  (content",
        "- /etc/sysconfig/iptables",
        "- /etc/origin/node/node-config.yaml",
        "+ /etc/origin/master/new-file.txt",
        "4 difference(s)",
    ]);

    // two snapshots against each other, both ways
    let id2 = s(&env.capture(&tree, &["--profile", "master", "--no-packages"]).code(0).json(), "id");
    let d = env.ctl.restorer(&["diff", &id1, &id2, "--json"]).ok().json();
    expected_changes(&changes(&d), true);
    let d = env.ctl.restorer(&["diff", &id2, &id1, "--json"]).ok().json();
    expected_changes(&changes(&d), false);
    let d = env.ctl.restorer(&["diff", &id1, &id1, "--json"]).ok().json();
    assert_eq!(d, json!([]), "a snapshot does not differ from itself");

    // in-place restore of the whole snapshot
    let r = env
        .ctl
        .restorer(&["restore", &id1, "--in-place", "--root", &text(&tree), "--json"])
        .ok()
        .json();
    let moved: BTreeMap<String, String> = arr(&r["restore"], "moved_aside")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap_or_default().to_string(),
                pair[1].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        moved.get("/etc/origin/master/master-config.yaml"),
        Some(&text(&tree.join("etc/origin/master/master-config.yaml.old"))),
        "{r:#}"
    );
    assert!(
        !moved.contains_key("/etc/sysconfig/iptables"),
        "a deleted file has nothing to move aside: {r:#}"
    );
    assert_eq!(
        moved.len(),
        1,
        "only the modified file is replaced; unchanged files stay as they are: {r:#}"
    );
    assert!(r["restore"]["unchanged"].as_u64().unwrap_or(0) > 10, "{r:#}");
    assert!(
        !tree.join("etc/origin/master/ca.key.old").exists(),
        "an unchanged file gets no .old copy"
    );
    assert_eq!(
        fs::read(tree.join("etc/origin/master/master-config.yaml.old")).expect(".old"),
        b"broken: true\n"
    );
    let api = arr(&r["restart"], "services")
        .iter()
        .find(|x| x["service"] == "atomic-openshift-master-api")
        .unwrap_or_else(|| panic!("no restart of atomic-openshift-master-api: {r:#}"));
    assert!(
        arr(api, "triggered_by")
            .iter()
            .any(|p| p == "/etc/origin/master/master-config.yaml"),
        "{api:#}"
    );

    // everything is back exactly; only the .old files and the added file are extra
    let is_extra = |p: &Path| {
        let name = p.file_name().map(|n| n.as_bytes()).unwrap_or_default();
        name.ends_with(b".old") || name.windows(5).any(|w| w == b".old.") || name == b"new-file.txt"
    };
    let now = scan(&tree, CAPTURED);
    assert_same("restore --in-place", &original, &now, &|p| !is_extra(p));
    assert_eq!(
        fs::read(tree.join("etc/origin/master/new-file.txt")).expect("kept"),
        b"added after the backup\n"
    );

    // a second in-place restore keeps the first .old and uses a timestamped name
    fs::write(&cfg, b"broken again\n").expect("modify again");
    let r = env
        .ctl
        .restorer(&[
            "restore",
            &id1,
            "--in-place",
            "--root",
            &text(&tree),
            "/etc/origin/master/master-config.yaml",
        ])
        .ok()
        .mentions(&[
            "kept existing /etc/origin/master/master-config.yaml as",
            "master-config.yaml.old.",
            "systemctl restart atomic-openshift-master-api  # for /etc/origin/master/master-config.yaml",
        ]);
    assert_eq!(
        fs::read(tree.join("etc/origin/master/master-config.yaml.old")).expect(".old"),
        b"broken: true\n"
    );
    let stamped: Vec<PathBuf> = fs::read_dir(tree.join("etc/origin/master"))
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("master-config.yaml.old."))
        })
        .collect();
    assert_eq!(stamped.len(), 1, "{stamped:?}\n{r}");
    assert_eq!(fs::read(&stamped[0]).expect("read"), b"broken again\n");
    let now = scan(&tree, CAPTURED);
    assert_eq!(now.get(CFG), original.get(CFG), "master-config.yaml is back with its metadata");
}

// ------------------------------------------------------------------------------------------------
// 6. Unreadable and vanished entries are reported, not fatal.

/// uid and gid of `nobody`/`nogroup` on this host.
fn nobody() -> (u32, u32) {
    let id = |file: &str, names: &[&str]| -> u32 {
        let t = fs::read_to_string(file).expect("read account database");
        t.lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| names.contains(&f[0]))
            .and_then(|f| f.get(2)?.parse().ok())
            .unwrap_or(65534)
    };
    (id("/etc/passwd", &["nobody"]), id("/etc/group", &["nogroup", "nobody"]))
}

fn chown_tree(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
    if fs::symlink_metadata(p).expect("lstat").is_dir() {
        for e in fs::read_dir(p).expect("list") {
            chown_tree(&e.expect("entry").path(), uid, gid);
        }
    }
}

/// Run vaultctl as another user (the harness's environment, exactly these arguments).
fn run_as(ctl: &Ctl, uid: u32, gid: u32, args: &[&str]) -> Run {
    let out = ctl
        .command(args)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap_or_else(|e| panic!("cannot run vaultctl {args:?} as {uid}: {e}"));
    Run {
        args: args.iter().map(|a| a.to_string()).collect(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn unreadable_entries_are_reported_and_the_snapshot_is_still_committed() {
    let env = Env::new("files-unreadable");
    let (uid, gid) = nobody();
    fs::set_permissions(env.tmp.path(), fs::Permissions::from_mode(0o755)).expect("open the scratch dir");
    let tree = env.path("tree");
    let b = Builder::new(&tree, 11);
    b.file(CFG, MASTER_CONFIG.as_bytes(), 0o644);
    b.file("etc/origin/master/ca.key", b"-----BEGIN RSA PRIVATE KEY-----\n", 0o600); // root's, 0600
    b.file("etc/origin/master/secret.d/session-secrets.yaml", b"secrets: []\n", 0o644);
    b.dir("etc/origin/master/secret.d", 0o000); // cannot be listed
    b.file("etc/origin/node/node-config.yaml", b"kind: NodeConfig\n", 0o644);
    b.file("etc/sysconfig/atomic-openshift-node", b"OPTIONS=--loglevel=2\n", 0o644);
    stamp_times(&tree, &mut 0);
    // the vault, its keys and the catalog cache belong to the unprivileged user
    chown_tree(&env.ctl.dir, uid, gid);
    chown_tree(Path::new(&env.ctl.repo), uid, gid);

    let wk = text(&env.ctl.writer_key);
    let base = ["--repo", env.ctl.repo.as_str(), "--writer-key", wk.as_str(), "backup", "files"];
    let tree_arg = text(&tree);
    let mut args = base.to_vec();
    args.extend(["--json", "--profile", "master", "--no-packages", "--root", tree_arg.as_str()]);
    let run = run_as(&env.ctl, uid, gid, &args);
    assert_eq!(run.code, Some(7), "an incomplete capture exits 7:\n{run}");
    let r = run.json();
    assert_eq!(r["incomplete"], true, "{r:#}");
    let skipped: BTreeMap<String, String> = arr(&r, "skipped").iter().map(|x| (s(x, "path"), s(x, "reason"))).collect();
    let reason = |p: &str| skipped.get(p).unwrap_or_else(|| panic!("{p} is not reported as skipped: {r:#}"));
    assert!(reason("/etc/origin/master/ca.key").contains("ermission denied"), "{r:#}");
    assert!(reason("/etc/origin/master/secret.d").contains("ermission denied"), "{r:#}");
    assert!(reason("/etc/origin/master/secret.d").contains("cannot list"), "{r:#}");
    assert_eq!(skipped.len(), 2, "{r:#}");
    assert_eq!(n(&r, "files"), 3, "the readable files are captured: {r:#}");
    let id = s(&r, "id");

    // the same as text: exit 7 and the reasons on stderr
    let mut args = base.to_vec();
    args.extend(["--profile", "master", "--no-packages", "--root", tree_arg.as_str()]);
    let run = run_as(&env.ctl, uid, gid, &args);
    assert_eq!(run.code, Some(7), "{run}");
    let run = run.mentions(&[
        "INCOMPLETE",
        "skipped /etc/origin/master/ca.key",
        "skipped /etc/origin/master/secret.d",
    ]);
    assert!(!run.stderr.contains("panicked"), "{run}");

    // the snapshot was committed and restores what could be read
    let listed = env.ctl.writer(&["snapshots", "--json"]).ok().json();
    assert!(
        listed.as_array().is_some_and(|a| a.iter().any(|x| x["id"] == id.as_str())),
        "the incomplete snapshot is listed: {listed:#}"
    );
    let out = env.path("restored");
    env.ctl.restorer(&["restore", &id, "--to", &text(&out)]).ok();
    assert_eq!(fs::read_to_string(out.join(CFG)).expect("restored"), MASTER_CONFIG);
    assert!(out.join("etc/origin/node/node-config.yaml").is_file());
    assert!(out.join("etc/sysconfig/atomic-openshift-node").is_file());
    assert!(!out.join("etc/origin/master/ca.key").exists(), "an unread file is not invented");
    assert!(
        !out.join("etc/origin/master/secret.d").exists(),
        "an unlisted directory is not invented"
    );
}

#[test]
fn a_file_that_vanishes_during_the_capture_is_reported() {
    use nix::errno::Errno;
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

    let env = Env::new("files-vanish");
    let tree = env.path("tree");
    let b = Builder::new(&tree, 13);
    let many = b.dir("etc/origin/master/many", 0o755);
    for i in 0..3000 {
        b.file(format!("etc/origin/master/many/f{i:05}"), format!("file {i}\n").as_bytes(), 0o644);
    }
    let victim = many.join("zz-vanishes");
    let wk = text(&env.ctl.writer_key);
    let tree_arg = text(&tree);
    let mut reported = false;
    for attempt in 1..=5 {
        fs::write(&victim, format!("attempt {attempt}\n")).expect("write victim");
        let watch = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).expect("inotify");
        watch
            .add_watch(&many, AddWatchFlags::IN_OPEN | AddWatchFlags::IN_CLOSE_NOWRITE)
            .expect("watch the directory");
        let mut cap = env.ctl.spawn(
            &format!("vanish-{attempt}"),
            &[
                "--repo",
                env.ctl.repo.as_str(),
                "--writer-key",
                wk.as_str(),
                "backup",
                "files",
                "--json",
                "--no-packages",
                "--path",
                "/etc/origin/master/many",
                "--root",
                tree_arg.as_str(),
            ],
        );
        // Once the capture has closed the directory (or opens a file in it) it has listed it:
        // delete the last entry, which it reaches some 3000 files later. (Files unchanged since
        // the previous attempt come from the file cache and are not opened again.)
        let started = Instant::now();
        let mut deleted = false;
        while !deleted && cap.exited().is_none() {
            match watch.read_events() {
                Ok(events) => {
                    let listed = events.iter().any(|e| match &e.name {
                        None => e.mask.contains(AddWatchFlags::IN_CLOSE_NOWRITE),
                        Some(name) => name.as_bytes().starts_with(b"f"),
                    });
                    if listed {
                        fs::remove_file(&victim).expect("delete victim");
                        deleted = true;
                    }
                }
                Err(Errno::EAGAIN) => std::thread::sleep(Duration::from_micros(200)),
                Err(e) => panic!("inotify: {e}"),
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the capture never opened a file");
        }
        let status = cap.wait_timeout(Duration::from_secs(60)).expect("the capture finishes");
        let (out, err) = (cap.stdout(), cap.stderr());
        assert!(
            matches!(status.code(), Some(0) | Some(7)),
            "a vanishing file must not make the capture fail ({status}):\n{out}\n{err}"
        );
        let r: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}\n{err}"));
        let vanished: Vec<&Value> = arr(&r, "skipped")
            .iter()
            .filter(|x| x["path"] == "/etc/origin/master/many/zz-vanishes")
            .collect();
        assert_eq!(n(&r, "files"), 3001 - vanished.len() as u64, "{r:#}");
        if deleted && !vanished.is_empty() {
            assert!(s(vanished[0], "reason").contains("vanished"), "{r:#}");
            assert_eq!(status.code(), Some(7), "{r:#}");
            assert_eq!(r["incomplete"], true, "{r:#}");
            assert_eq!(arr(&r, "skipped").len(), 1, "{r:#}");
            reported = true;
            break;
        }
        // the capture was faster than the deletion: it must have captured the file whole
        assert_eq!(status.code(), Some(0), "{r:#}");
        assert_eq!(arr(&r, "skipped").len(), 0, "{r:#}");
        eprintln!("attempt {attempt}: the capture read the file before it was deleted; again");
        let _ = fs::remove_file(&victim);
    }
    assert!(reported, "no attempt saw the file vanish during the capture");
}

/// A file rewritten in place while it is captured is either stored as one consistent version or
/// flagged as changed while read (and not put in the file cache); it is never stored torn in
/// silence.
#[test]
fn a_file_rewritten_during_the_capture_is_stored_whole_or_flagged() {
    use std::io::{Seek, SeekFrom, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = Env::new("files-torn");
    let tree = env.path("tree");
    let dir = tree.join("etc/origin/master");
    fs::create_dir_all(&dir).unwrap();
    let busy = dir.join("busy.log");
    const SIZE: usize = 8 << 20;
    fs::write(&busy, vec![b'a'; SIZE]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (busy, stop) = (busy.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().write(true).open(&busy).unwrap();
            let mut round = 0u64;
            while !stop.load(Ordering::SeqCst) {
                round += 1;
                let byte = if round.is_multiple_of(2) { b'a' } else { b'b' };
                f.seek(SeekFrom::Start(0)).unwrap();
                for _ in 0..8 {
                    f.write_all(&vec![byte; SIZE / 8]).unwrap();
                }
            }
        })
    };
    let r = env.capture(&tree, &["--no-packages", "--path", "/etc/origin/master"]);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let r = r.ok().json();
    let flagged = arr(&r, "changed_while_read").iter().any(|p| p == "/etc/origin/master/busy.log");
    let out = env.path("restored");
    env.ctl.restorer(&["restore", &s(&r, "id"), "--to", &text(&out)]).ok();
    let data = fs::read(out.join("etc/origin/master/busy.log")).unwrap();
    assert_eq!(data.len(), SIZE);
    let uniform = data.iter().all(|&b| b == data[0]);
    assert!(uniform || flagged, "stored torn without a flag: {r:#}");
    eprintln!("busy file: uniform {uniform}, flagged {flagged}");
}

// ------------------------------------------------------------------------------------------------
// 7. Safety: paths that could escape the restore target are refused.

#[test]
fn safe_relative_refuses_paths_that_are_not_plain_absolute_paths() {
    use vault::ops::files::safe_relative;
    for bad in [
        &b"/../etc/passwd"[..],
        b"relative/path",
        b"/a/../../b",
        b"/x/../../escape",
        b"/..",
        b"/",
        b"",
        b"etc/passwd",
        b"./etc/passwd",
    ] {
        let err = safe_relative(&PathBytes(bad.to_vec()))
            .expect_err(&format!("{:?} must be refused", String::from_utf8_lossy(bad)))
            .to_string();
        assert!(err.contains("refusing"), "{err}");
    }
    for (good, rel) in [
        (&b"/etc/origin/master/ca.crt"[..], &b"etc/origin/master/ca.crt"[..]),
        (b"//etc//origin/", b"etc/origin"),
        (b"/etc/origin/master/caf\xe9.conf", b"etc/origin/master/caf\xe9.conf"),
        (b"/etc/..hidden/...", b"etc/..hidden/..."),
    ] {
        let got = safe_relative(&PathBytes(good.to_vec())).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        assert_eq!(got.as_os_str().as_bytes(), rel);
    }
}

/// Writes snapshots the way `backup files` does, but with a hand-made tree: content into data
/// packs, the tree JSON into tree packs, then a `files` manifest, all with the writer key.
struct Crafter {
    vault: Vault,
    catalog: Catalog,
    sink: ChunkSink,
    packer: Packer,
    content_ids: Vec<Id>,
    content: Vec<u8>,
}

impl Crafter {
    async fn open(ctl: &Ctl, catalog: &Path) -> Crafter {
        let store = vault::store::Store::open(&ctl.repo, &Default::default()).expect("open store");
        let keys = KeySource {
            writer_key: Some(ctl.writer_key.clone()),
            identity: None,
            trust: Default::default(),
        };
        let vault = Vault::open(store, &keys).await.expect("open vault");
        let mut catalog = Catalog::open(catalog, &vault.config.vault_id).expect("open catalog");
        catalog.sync(&vault).await.expect("sync catalog");
        let (sink, packer) = packing::start(&vault, catalog.known_chunks().expect("known chunks"));
        Crafter {
            vault,
            catalog,
            sink,
            packer,
            content_ids: Vec::new(),
            content: Vec::new(),
        }
    }

    fn chunk(&mut self, pack_type: PackType, data: &[u8]) -> Vec<Id> {
        let mut ids = Vec::new();
        let sink = &mut self.sink;
        let mut sc = StreamChunker::new(self.vault.chunker());
        sc.push(data, &mut |c| ids.push(sink.add(pack_type, c)));
        sc.finish(&mut |c| ids.push(sink.add(pack_type, c)));
        ids
    }

    /// Store a file's content; returns the tree fields that describe it.
    fn file_content(&mut self, data: &[u8]) -> Value {
        let ids = self.chunk(PackType::Data, data);
        self.content_ids.extend_from_slice(&ids);
        self.content.extend_from_slice(data);
        json!({ "size": data.len(), "chunks": ids, "blake3": blake3::hash(data).to_hex().to_string() })
    }

    /// Store the tree and commit the snapshot; returns its ID.
    async fn commit(mut self, tree: &Value) -> String {
        let json = serde_json::to_vec(tree).expect("tree JSON");
        let tree_ids = self.chunk(PackType::Tree, &json);
        let Crafter {
            vault,
            mut catalog,
            sink,
            packer,
            content_ids,
            content,
        } = self;
        drop(sink);
        let (stored, packs) = packer.upload_all(&vault, &mut catalog).await.expect("upload packs");
        let entries = tree["entries"].as_array().map(|a| a.len() as u64).unwrap_or(0);
        let manifest = SnapshotManifest {
            time: chrono::Utc::now(),
            kind: PayloadKind::Files,
            host: "crafted".into(),
            job: "crafted".into(),
            tags: BTreeMap::new(),
            slot: None,
            streams: vec![
                Stream {
                    name: "tree".into(),
                    size: json.len() as u64,
                    sha256: sha256_hex(&json),
                    chunks: tree_ids,
                },
                Stream {
                    name: "content".into(),
                    size: content.len() as u64,
                    sha256: sha256_hex(&content),
                    chunks: content_ids,
                },
            ],
            stats: CaptureStats {
                bytes: content.len() as u64,
                stored_bytes: stored,
                packs,
                ..Default::default()
            },
            etcd_v3: None,
            files: Some(FilesInfo {
                root: "/".into(),
                profile: None,
                files: entries,
                dirs: 0,
                symlinks: 0,
                skipped: 0,
                incomplete: false,
            }),
            etcd_v2: None,
            etcd_datadir: None,
            etcd_v3_delta: None,
            log_head: None,
            previous: None,
        };
        vault::ops::backup::commit(&vault, &mut catalog, &manifest)
            .await
            .expect("commit crafted snapshot")
            .hex()
    }
}

/// Makes one tree entry, storing its content if it has any.
type MakeEntry = fn(&mut Crafter) -> Value;

fn entry(path: &str, kind: &str, extra: Value) -> Value {
    let mut e =
        json!({ "path": path, "kind": kind, "mode": 0o644, "uid": 0, "gid": 0, "mtime": 1_500_000_000, "mtime_nsec": 0, "size": 0 });
    if let (Some(o), Some(x)) = (e.as_object_mut(), extra.as_object()) {
        o.extend(x.clone());
    }
    e
}

#[tokio::test]
async fn crafted_manifests_with_escaping_paths_are_refused() {
    let env = Env::new("files-crafted");
    let jail = env.path("jail");
    fs::create_dir_all(&jail).expect("jail");
    // a file outside every restore target that a crafted hard link would like to reach
    let secret = env.path("secret-outside");
    fs::write(&secret, b"not for the restore\n").expect("secret");
    let cases: [(&str, MakeEntry); 4] = [
        ("/../../escape-1", |c| {
            entry("/../../escape-1", "file", c.file_content(b"escaped 1\n"))
        }),
        ("/x/../../escape-2", |c| {
            entry("/x/../../escape-2", "file", c.file_content(b"escaped 2\n"))
        }),
        ("relative/escape-3", |c| {
            entry("relative/escape-3", "file", c.file_content(b"escaped 3\n"))
        }),
        ("/etc/link-to-secret", |_| {
            entry(
                "/etc/link-to-secret",
                "hardlink",
                json!({ "target": "/../../../../secret-outside" }),
            )
        }),
    ];
    for (i, (label, bad)) in cases.into_iter().enumerate() {
        let mut crafter = Crafter::open(&env.ctl, &env.path("library-catalog.sqlite")).await;
        // legitimate entries first: a refusal must come before anything is written
        let ok = crafter.file_content(b"a legitimate file\n");
        let tree = json!({
            "entries": [
                entry("/etc", "dir", json!({ "mode": 0o755 })),
                entry("/etc/ok.conf", "file", ok),
                bad(&mut crafter),
            ],
            "skipped": [],
        });
        let id = crafter.commit(&tree).await;
        let target = jail.join(format!("case{i}/a/b/target"));
        let run = env.ctl.restorer(&["restore", &id, "--to", &text(&target)]).failed();
        assert!(run.text().contains("refusing"), "{label}: no clear refusal:\n{run}");
        assert!(run.text().contains("nothing was written"), "{label}:\n{run}");
        let written: Vec<PathBuf> = all_names(&target);
        assert!(written.is_empty(), "{label}: written inside the target: {written:?}");
        let escaped: Vec<PathBuf> = all_names(env.tmp.path())
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains("escape")))
            .collect();
        assert!(escaped.is_empty(), "{label}: written outside the target: {escaped:?}");
        assert_eq!(
            fs::metadata(&secret).expect("secret").nlink(),
            1,
            "{label}: the outside file got a new name"
        );
        // in place too
        let root = jail.join(format!("case{i}-root/r"));
        fs::create_dir_all(&root).expect("root");
        env.ctl
            .restorer(&["restore", &id, "--in-place", "--root", &text(&root)])
            .failed()
            .mentions(&["refusing"]);
        assert!(all_names(&root).is_empty(), "{label}: in-place restore wrote something");
        assert_eq!(fs::metadata(&secret).expect("secret").nlink(), 1, "{label}");
    }
}

#[test]
fn restore_does_not_write_through_a_symlink_that_leads_out_of_the_target() {
    let env = Env::new("files-symlink");
    let tree = env.path("tree");
    build_master(&tree);
    let id = s(&env.capture(&tree, &["--profile", "master", "--no-packages"]).code(0).json(), "id");

    // A restore target whose etc is a symlink to `outside`.
    let linked_target = |name: &str, outside: &Path| {
        let target = env.path(name);
        fs::create_dir(&target).expect("target");
        std::os::unix::fs::symlink(outside, target.join("etc")).expect("symlink");
        target
    };
    let refused = |args: &[&str]| {
        env.ctl
            .restorer(args)
            .failed()
            .mentions(&["refusing", "outside the restore target"]);
    };

    // 1. DIR/etc is a symlink to an empty directory elsewhere
    let outside = env.path("outside-empty");
    fs::create_dir(&outside).expect("outside");
    let target = linked_target("target-1", &outside);
    refused(&["restore", &id, "--to", &text(&target)]);
    assert!(
        all_names(&outside).is_empty(),
        "written through the symlink: {:?}",
        all_names(&outside)
    );
    assert_eq!(fs::read_link(target.join("etc")).expect("still a symlink"), outside);
    assert_eq!(all_names(&target), vec![target.join("etc")]);

    // 2. it leads to a directory that already has some of the snapshot's directories (a real /etc
    //    does): nothing there may be created or changed
    let outside = env.path("outside-etc");
    for dir in [
        "cni/net.d",
        "dnsmasq.d",
        "origin/master/empty.d",
        "origin/node/pods",
        "origin/cloudprovider",
    ] {
        fs::create_dir_all(outside.join(dir)).expect("outside dir");
    }
    for dir in ["generated-configs/master-master-1.example.com", "master/many"] {
        fs::create_dir_all(outside.join("origin").join(dir)).expect("outside dir");
    }
    fs::write(outside.join("origin/master/master-config.yaml"), b"the live file outside\n").expect("outside file");
    stamp_times(&outside, &mut 40_000);
    let before = scan(&outside, &[""]);
    let target = linked_target("target-2", &outside);
    refused(&["restore", &id, "--to", &text(&target)]);
    assert_same("the directory behind the symlink", &before, &scan(&outside, &[""]), &everything);

    // 3. only an (empty) directory that exists behind the symlink: its metadata is not touched
    refused(&["restore", &id, "--to", &text(&target), "/etc/origin/node/pods"]);
    assert_same("the directory behind the symlink", &before, &scan(&outside, &[""]), &everything);

    // 4. in place, with a symlinked directory inside the root leading out of it
    let root = env.path("root");
    fs::create_dir_all(root.join("etc")).expect("root");
    std::os::unix::fs::symlink(outside.join("origin"), root.join("etc/origin")).expect("symlink");
    refused(&[
        "restore",
        &id,
        "--in-place",
        "--root",
        &text(&root),
        "/etc/origin/master/master-config.yaml",
    ]);
    assert_same("the directory behind the symlink", &before, &scan(&outside, &[""]), &everything);
}

/// In a vault shared by several masters, `restore latest --in-place` restores this host's newest
/// files snapshot, never another host's newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_latest_in_place_takes_this_hosts_files() {
    let env = Env::new("files-latest-host");
    let tree = env.path("tree");
    fs::create_dir_all(tree.join("etc/app")).expect("tree");
    fs::write(tree.join("etc/app/mine.conf"), b"this host\n").expect("file");
    env.capture(&tree, &["--path", "/etc/app", "--no-packages"]).code(0);
    // A newer files snapshot of another host.
    let mut crafter = Crafter::open(&env.ctl, &env.path("library-catalog.sqlite")).await;
    let other = crafter.file_content(b"another host\n");
    let tree_json = json!({
        "entries": [entry("/etc", "dir", json!({ "mode": 0o755 })), entry("/etc/app", "dir", json!({ "mode": 0o755 })), entry("/etc/app/theirs.conf", "file", other)],
        "skipped": [],
    });
    let theirs = crafter.commit(&tree_json).await;
    let snaps = env.ctl.snapshots();
    assert_eq!(s(snaps.last().unwrap(), "id"), theirs, "the other host's snapshot is the newest");
    let root = env.path("root");
    fs::create_dir_all(&root).expect("root");
    env.ctl.restorer(&["restore", "latest", "--in-place", "--root", &text(&root)]).ok();
    assert_eq!(fs::read(root.join("etc/app/mine.conf")).expect("this host's file"), b"this host\n");
    assert!(!root.join("etc/app/theirs.conf").exists(), "another host's file was restored");
}

/// What a file outside every restore target looks like: content, mode, links.
fn outside_state(p: &Path) -> (Vec<u8>, u32, u64) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    (fs::read(p).expect("read"), m.mode(), m.nlink())
}

/// A writer (W and the recipients only) can craft a tree whose shape, not its paths, would lead a
/// restore outside its target: a path listed twice (a 04777 directory, then a symlink by the same
/// name to a file outside: restoring the directory's mode last would chmod that file), entries
/// below a symlink entry, and hard links to a symlink or through one. Each is refused before
/// anything is written, to a directory and in place, and nothing outside changes.
#[tokio::test]
async fn crafted_tree_shapes_that_would_lead_outside_the_target_are_refused() {
    let env = Env::new("files-crafted-shapes");
    let victim = env.path("victim.key");
    fs::write(&victim, b"-----BEGIN RSA PRIVATE KEY-----\n").expect("victim");
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).expect("chmod victim");
    let outside = env.path("outside-dir");
    fs::create_dir(&outside).expect("outside dir");
    fs::write(outside.join("secret"), b"outside\n").expect("outside file");
    let victim_arg = text(&victim);
    let outside_arg = text(&outside);
    let before = (outside_state(&victim), outside_state(&outside.join("secret")), all_names(&outside));
    type Shape = Box<dyn Fn(&mut Crafter) -> Vec<Value>>;
    let cases: Vec<(&str, Shape)> = vec![
        (
            "a directory, then a symlink by the same name",
            Box::new(move |_| {
                vec![
                    entry("/etc/d", "dir", json!({ "mode": 0o4777 })),
                    entry("/etc/d", "symlink", json!({ "target": victim_arg })),
                ]
            }),
        ),
        (
            "a file listed twice",
            Box::new(|c| {
                let a = c.file_content(b"first\n");
                let b = c.file_content(b"second\n");
                vec![entry("/etc/twice.conf", "file", a), entry("//etc//twice.conf", "file", b)]
            }),
        ),
        (
            "a file below a symlink entry",
            Box::new({
                let outside_arg = outside_arg.clone();
                move |c| {
                    let planted = c.file_content(b"planted\n");
                    vec![
                        entry("/etc/s", "symlink", json!({ "target": outside_arg })),
                        entry("/etc/s/planted", "file", planted),
                    ]
                }
            }),
        ),
        (
            "a directory below a symlink entry",
            Box::new({
                let outside_arg = outside_arg.clone();
                move |_| {
                    vec![
                        entry("/etc/s", "symlink", json!({ "target": outside_arg })),
                        entry("/etc/s/sub", "dir", json!({ "mode": 0o777 })),
                    ]
                }
            }),
        ),
        (
            "a hard link through a symlink entry",
            Box::new({
                let outside_arg = outside_arg.clone();
                move |_| {
                    vec![
                        entry("/etc/s", "symlink", json!({ "target": outside_arg })),
                        entry("/etc/h", "hardlink", json!({ "target": "/etc/s/secret" })),
                    ]
                }
            }),
        ),
        (
            "a hard link to a symlink entry",
            Box::new({
                let victim_arg = text(&victim);
                move |_| {
                    vec![
                        entry("/etc/l", "symlink", json!({ "target": victim_arg })),
                        entry("/etc/h", "hardlink", json!({ "target": "/etc/l" })),
                    ]
                }
            }),
        ),
    ];
    for (i, (label, shape)) in cases.into_iter().enumerate() {
        let mut crafter = Crafter::open(&env.ctl, &env.path("library-catalog.sqlite")).await;
        // legitimate entries first: the refusal must come before anything is written
        let ok = crafter.file_content(b"a legitimate file\n");
        let mut entries = vec![entry("/etc", "dir", json!({ "mode": 0o755 })), entry("/etc/ok.conf", "file", ok)];
        entries.extend(shape(&mut crafter));
        let id = crafter.commit(&json!({ "entries": entries, "skipped": [] })).await;
        let target = env.path(&format!("target-{i}"));
        let run = env.ctl.restorer(&["restore", &id, "--to", &text(&target)]).failed();
        assert!(run.text().contains("refusing"), "{label}: no clear refusal:\n{run}");
        assert!(run.text().contains("nothing was written"), "{label}:\n{run}");
        assert!(all_names(&target).is_empty(), "{label}: written: {:?}", all_names(&target));
        let root = env.path(&format!("root-{i}"));
        fs::create_dir_all(&root).expect("root");
        env.ctl
            .restorer(&["restore", &id, "--in-place", "--root", &text(&root)])
            .failed()
            .mentions(&["refusing", "nothing was written"]);
        assert!(
            all_names(&root).is_empty(),
            "{label}: in-place restore wrote {:?}",
            all_names(&root)
        );
        let after = (outside_state(&victim), outside_state(&outside.join("secret")), all_names(&outside));
        assert_eq!(after, before, "{label}: something outside the target changed");
    }
}

/// A restore that fails midway leaves no temporary file (the old code left the plaintext written
/// so far, mode 0644, beside the file it was restoring). The snapshot's file is the content of an
/// earlier one (stored in its pack) plus new content in a pack of its own, which is then deleted:
/// the restore writes the first part, then fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_that_fails_midway_leaves_no_partial_file() {
    let env = Env::new("files-midway");
    let mut rng = Rng::new(17);
    let first = rng.bytes(1 << 20);
    let mut whole = first.clone();
    whole.extend(rng.bytes(1 << 20));
    // a 0600 key's content fields
    let key = |content: &Value| {
        let mut fields = content.as_object().expect("fields").clone();
        fields.insert("mode".into(), json!(0o600));
        Value::Object(fields)
    };
    let dirs = || {
        vec![
            entry("/etc", "dir", json!({ "mode": 0o755 })),
            entry("/etc/pki", "dir", json!({ "mode": 0o700 })),
        ]
    };
    let mut crafter = Crafter::open(&env.ctl, &env.path("library-catalog.sqlite")).await;
    let mut entries = dirs();
    let content = crafter.file_content(&first);
    entries.push(entry("/etc/pki/ca.key", "file", key(&content)));
    crafter.commit(&json!({ "entries": entries, "skipped": [] })).await;

    let mut crafter = Crafter::open(&env.ctl, &env.path("library-catalog.sqlite")).await;
    let content = crafter.file_content(&whole);
    let last_chunk: Id =
        serde_json::from_value(content["chunks"].as_array().and_then(|c| c.last()).expect("chunks").clone()).expect("chunk id");
    let mut entries = dirs();
    entries.push(entry("/etc/pki/ca.key", "file", key(&content)));
    let id = crafter.commit(&json!({ "entries": entries, "skipped": [] })).await;

    // delete the pack that holds the new content (not the first part's, which is older)
    let located = Crafter::open(&env.ctl, &env.path("library-catalog.sqlite")).await;
    let (pack, _) = located.catalog.chunk_locations(&last_chunk).expect("locate")[0];
    let first_chunk: Id = serde_json::from_value(content["chunks"][0].clone()).expect("chunk id");
    let (first_pack, _) = located.catalog.chunk_locations(&first_chunk).expect("locate")[0];
    assert_ne!(pack, first_pack, "the first part must come from another pack");
    drop(located);
    fs::remove_file(Path::new(&env.ctl.repo).join(vault::format::pack_name(&pack))).expect("delete the pack");

    let target = env.path("target");
    env.ctl.restorer(&["restore", &id, "--to", &text(&target)]).failed();
    let left: Vec<PathBuf> = all_names(&target)
        .into_iter()
        .filter(|p| !fs::symlink_metadata(p).expect("lstat").is_dir())
        .collect();
    assert!(left.is_empty(), "a failed restore left files behind: {left:?}");
    // the same in place, over an existing file: it stays as it was
    let root = env.path("root");
    fs::create_dir_all(root.join("etc/pki")).expect("root");
    fs::write(root.join("etc/pki/ca.key"), b"the live key\n").expect("live key");
    env.ctl.restorer(&["restore", &id, "--in-place", "--root", &text(&root)]).failed();
    let names: Vec<PathBuf> = all_names(&root.join("etc/pki"));
    assert_eq!(names, vec![root.join("etc/pki/ca.key")], "{names:?}");
    assert_eq!(fs::read(root.join("etc/pki/ca.key")).expect("live key"), b"the live key\n");
}
