//! Where the HTTP API listens (`http.listen`): a TCP address (`127.0.0.1:8765` by default) or a
//! unix socket (`unix:/run/vaultd/api.sock`) that is never reachable with permissions looser than
//! 0600, replaces only a stale socket, and is removed at a clean shutdown.
//!
//! How the socket comes to be 0600 without a window: `bind(2)` creates the socket file with
//! `0777 & ~umask`, and the umask is process-wide (changing it would race with every other thread
//! that creates files). So the socket is bound inside a fresh private directory (mode 0700, made
//! next to the final path so that both are on one file system), chmod-ed to 0600 there, and only
//! then given its final name with `link(2)`. Until the link nobody but the owner can reach the
//! socket through the private directory; after it, the file is already 0600. `link(2)` is used
//! rather than `rename(2)` because it never replaces anything: if a file appeared at the final
//! path after the stale-socket check, the bind fails instead of clobbering it.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::Rng;
use vault::{Error, ErrorKind, Result};

/// The prefix of a unix socket in `http.listen`.
pub const UNIX_PREFIX: &str = "unix:";

/// The longest path a unix socket address holds on Linux (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Where the API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "{UNIX_PREFIX}{}", p.display()),
        }
    }
}

impl Endpoint {
    /// Parse `http.listen`: `ADDRESS:PORT` or `unix:/ABSOLUTE/PATH`. The error says what is wrong
    /// and what is expected.
    pub fn parse(text: &str) -> std::result::Result<Endpoint, String> {
        let Some(p) = text.strip_prefix(UNIX_PREFIX) else {
            return text.parse::<SocketAddr>().map(Endpoint::Tcp).map_err(|e| {
                format!("{text:?} is not an address and port like 127.0.0.1:8765, nor a unix socket like unix:/run/vaultd/api.sock: {e}")
            });
        };
        let path = Path::new(p);
        if !path.is_absolute() {
            return Err(format!(
                "{text:?}: a unix socket needs an absolute path, like unix:/run/vaultd/api.sock"
            ));
        }
        let parent = match path.parent() {
            Some(parent) if !p.ends_with('/') && path.file_name().is_some() => parent,
            _ => return Err(format!("{text:?} does not name a socket file, like unix:/run/vaultd/api.sock")),
        };
        let longest = p.len().max(temp_socket_path(parent, &temp_suffix()).as_os_str().len());
        if longest > MAX_SOCKET_PATH {
            return Err(format!(
                "{text:?} is too long for a unix socket: the kernel takes paths of up to {MAX_SOCKET_PATH} bytes, and vaultd first binds under a temporary directory next to the socket ({longest} bytes here); choose a shorter path, like unix:/run/vaultd/api.sock"
            ));
        }
        Ok(Endpoint::Unix(path.to_path_buf()))
    }
}

/// The private directory and socket name a unix socket is first bound under.
fn temp_socket_path(parent: &Path, suffix: &str) -> PathBuf {
    parent.join(format!(".vaultd-{suffix}")).join("s")
}

fn temp_suffix() -> String {
    format!("{:08x}", rand::thread_rng().r#gen::<u32>())
}

/// A bound listener, ready for [`serve`].
pub enum Bound {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, SocketFile),
}

/// The socket file of a unix listener. Dropping it removes the file, if it is still the one this
/// process made (a later daemon's socket at the same path is left alone).
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.file_type().is_socket() && m.dev() == self.dev && m.ino() == self.ino);
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!("cannot remove the API socket {}: {e}", self.path.display());
        }
    }
}

/// Bind the listener of `endpoint` (needs a tokio runtime).
pub async fn bind(endpoint: &Endpoint) -> Result<Bound> {
    match endpoint {
        Endpoint::Tcp(addr) => tokio::net::TcpListener::bind(addr).await.map(Bound::Tcp).map_err(|e| {
            Error::usage(format!("cannot listen on {addr} (http.listen)"))
                .with_source(e)
                .hint("is another vaultd or another program using the port? stop it or set another http.listen")
        }),
        Endpoint::Unix(path) => {
            let (listener, file) = bind_unix(path)?;
            Ok(Bound::Unix(listener, file))
        }
    }
}

/// Serve `app` on a bound listener until `shutdown` completes; a unix socket file is removed then.
pub async fn serve(bound: Bound, app: axum::Router, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
    match bound {
        Bound::Tcp(l) => axum::serve(l, app).with_graceful_shutdown(shutdown).await,
        Bound::Unix(l, file) => {
            let served = axum::serve(l, app).with_graceful_shutdown(shutdown).await;
            drop(file);
            served
        }
    }
}

fn socket_error(path: &Path, what: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("cannot listen on unix socket {} (http.listen): {what}", path.display()),
    )
}

/// Remove a stale socket at `path` (one nothing answers on). Anything else there is refused.
fn clear_stale(path: &Path) -> Result<()> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(socket_error(path, "cannot look at what is there").with_source(e)),
    };
    let ft = md.file_type();
    if !ft.is_socket() {
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_symlink() {
            "a symbolic link"
        } else if ft.is_file() {
            "a regular file"
        } else {
            "a special file"
        };
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "cannot listen on unix socket {} (http.listen): it exists and is {what}, not a socket; vaultd replaces only a stale socket",
                path.display()
            ),
        )
        .hint("remove it if it is left over, or set another http.listen"));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "cannot listen on unix socket {} (http.listen): another process answers on it",
                path.display()
            ),
        )
        .hint("is another vaultd running with this config? stop it, or set another http.listen")),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Ok(()) => tracing::info!("removed the stale socket {} of a daemon that did not stop cleanly", path.display()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(socket_error(path, "cannot remove the stale socket there").with_source(e)),
            }
            Ok(())
        }
        Err(e) => Err(socket_error(path, "cannot tell whether the socket there is in use").with_source(e)),
    }
}

/// A private directory next to the socket; removed with whatever is left in it when dropped.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create(parent: &Path) -> io::Result<PrivateDir> {
        let mut tries = 0;
        loop {
            let dir = temp_socket_path(parent, &temp_suffix())
                .parent()
                .expect("the temporary socket is in a directory")
                .to_path_buf();
            // The umask can only take permissions away from 0700, never add any.
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let d = PrivateDir(dir);
                    std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o700))?;
                    return Ok(d);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 10 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bind_unix(path: &Path) -> Result<(tokio::net::UnixListener, SocketFile)> {
    let parent = path.parent().ok_or_else(|| socket_error(path, "it names no file"))?;
    if !parent.is_dir() {
        return Err(socket_error(path, format!("its directory {} does not exist", parent.display()))
            .hint("create it (under systemd, RuntimeDirectory=vaultd creates /run/vaultd)"));
    }
    clear_stale(path)?;
    let private = PrivateDir::create(parent)
        .map_err(|e| socket_error(path, format!("cannot create a private directory in {}", parent.display())).with_source(e))?;
    let temp = private.0.join("s");
    let listener =
        tokio::net::UnixListener::bind(&temp).map_err(|e| socket_error(path, format!("cannot bind {}", temp.display())).with_source(e))?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| socket_error(path, format!("cannot make {} private", temp.display())).with_source(e))?;
    let md = std::fs::symlink_metadata(&temp).map_err(|e| socket_error(path, format!("cannot stat {}", temp.display())).with_source(e))?;
    std::fs::hard_link(&temp, path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "cannot listen on unix socket {} (http.listen): something else created it meanwhile",
                    path.display()
                ),
            )
            .hint("is another vaultd starting with this config? stop it, or set another http.listen")
        } else {
            socket_error(path, format!("cannot link {} into place", temp.display())).with_source(e)
        }
    })?;
    let file = SocketFile {
        path: path.to_path_buf(),
        dev: md.dev(),
        ino: md.ino(),
    };
    // The listener keeps working through its final name; the private directory goes.
    drop(private);
    Ok((listener, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// GET /healthz-like round trip: the listener accepts through the final path.
    async fn answers(path: &Path, listener: &tokio::net::UnixListener) -> bool {
        let client = tokio::net::UnixStream::connect(path);
        let (c, a) = tokio::join!(client, listener.accept());
        c.is_ok() && a.is_ok()
    }

    fn unix(path: &Path) -> Endpoint {
        Endpoint::parse(&format!("unix:{}", path.display())).unwrap()
    }

    #[tokio::test]
    async fn the_socket_is_0600_and_removed_when_dropped_and_nothing_is_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        // A lax directory: what bind(2) would create there by default is reachable by all.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.path().join("api.sock");
        let Bound::Unix(listener, file) = bind(&unix(&path)).await.unwrap() else {
            panic!("not unix")
        };
        assert_eq!(mode(&path), 0o600);
        assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_socket());
        assert!(answers(&path, &listener).await);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["api.sock"], "the private directory was left behind");
        assert_eq!(file.path(), path);
        drop(file);
        assert!(!path.exists(), "the socket was not removed");
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        // A daemon that was killed: its socket file stays, nothing answers.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let stale_ino = std::fs::symlink_metadata(&path).unwrap().ino();
        let Bound::Unix(listener, file) = bind(&unix(&path)).await.unwrap() else {
            panic!("not unix")
        };
        assert_ne!(std::fs::symlink_metadata(&path).unwrap().ino(), stale_ino);
        assert_eq!(mode(&path), 0o600);
        assert!(answers(&path, &listener).await);

        // A second daemon on the same path while the first one answers: refused, and the first
        // one's socket is untouched.
        let e = bind(&unix(&path)).await.err().expect("a second bind succeeded");
        assert_eq!(e.kind, ErrorKind::AlreadyExists);
        assert!(e.to_string().contains("another process answers"), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert!(answers(&path, &listener).await);

        // A socket that is not ours any more is not removed when ours is dropped.
        std::fs::remove_file(&path).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        drop(file);
        assert!(path.exists(), "another daemon's socket was removed");
    }

    #[tokio::test]
    async fn a_file_a_directory_or_a_symlink_at_the_path_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file.sock");
        std::fs::write(&file, "keep me").unwrap();
        let sub = dir.path().join("dir.sock");
        std::fs::create_dir(&sub).unwrap();
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        for (path, what) in [(&file, "a regular file"), (&sub, "a directory"), (&link, "a symbolic link")] {
            let e = bind(&unix(path)).await.err().expect("bind succeeded");
            let text = e.to_string();
            assert!(text.contains(what) && text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("hint:"), "{text}");
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
        assert!(sub.is_dir());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        // No directory to put it in.
        let e = bind(&unix(&dir.path().join("none/api.sock"))).await.err().unwrap();
        assert!(
            e.to_string().contains("does not exist") && e.to_string().contains("RuntimeDirectory"),
            "{e}"
        );
    }

    #[test]
    fn listen_values_are_parsed() {
        assert_eq!(
            Endpoint::parse("127.0.0.1:8765"),
            Ok(Endpoint::Tcp("127.0.0.1:8765".parse().unwrap()))
        );
        let e = Endpoint::parse("unix:/run/vaultd/api.sock").unwrap();
        assert_eq!(e, Endpoint::Unix(PathBuf::from("/run/vaultd/api.sock")));
        assert_eq!(e.to_string(), "unix:/run/vaultd/api.sock");
        for bad in ["localhost", "unix:api.sock", "unix:", "unix:/run/vaultd/", "unix:/"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        assert!(Endpoint::parse("unix:relative").unwrap_err().contains("absolute"));
        let long = format!("unix:/{}/api.sock", "d".repeat(90));
        assert!(Endpoint::parse(&long).unwrap_err().contains("too long"));
        let longest_ok = format!("unix:/{}/api.sock", "d".repeat(107 - 20));
        assert!(Endpoint::parse(&longest_ok).is_ok(), "{longest_ok}");
    }
}
