//! Addresses of the form `unix:/path` or `tcp:host:port`, and listening on them.

use std::path::PathBuf;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

#[derive(Debug, Error)]
pub enum Error {
    #[error("address {0:?} must be unix:/path or tcp:host:port")]
    Syntax(String),
    #[error("cannot listen on {addr}: {source}{hint}")]
    Bind {
        addr: String,
        hint: String,
        #[source]
        source: std::io::Error,
    },
}

impl std::str::FromStr for Endpoint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(Error::Syntax(s.into()));
            }
            Ok(Endpoint::Unix(PathBuf::from(p)))
        } else if let Some(hp) = s.strip_prefix("tcp:") {
            match hp.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {
                    Ok(Endpoint::Tcp(hp.to_string()))
                }
                _ => Err(Error::Syntax(s.into())),
            }
        } else {
            Err(Error::Syntax(s.into()))
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(hp) => write!(f, "tcp:{hp}"),
        }
    }
}

/// A connected byte stream of either kind.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Who is on the other end of an accepted connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A Unix socket peer, with the credentials the kernel vouches for (SO_PEERCRED).
    Unix { pid: Option<u32>, uid: u32 },
    /// A TCP peer.
    Tcp {
        remote: std::net::SocketAddr,
        local: std::net::SocketAddr,
    },
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Unix { pid: Some(p), uid } => write!(f, "unix peer pid {p} uid {uid}"),
            Peer::Unix { pid: None, uid } => write!(f, "unix peer uid {uid}"),
            Peer::Tcp { remote, .. } => write!(f, "{remote}"),
        }
    }
}

/// Who may use a Unix socket: its mode and, optionally, its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketAccess {
    pub mode: u32,
    pub gid: Option<u32>,
}

impl Default for SocketAccess {
    /// Owner only.
    fn default() -> Self {
        SocketAccess {
            mode: 0o600,
            gid: None,
        }
    }
}

/// A bound listener.
pub enum Listener {
    Unix(tokio::net::UnixListener, PathBuf),
    Tcp(tokio::net::TcpListener),
}

impl Listener {
    /// Binds, owner only (see [`Listener::bind_with`]).
    pub async fn bind(ep: &Endpoint) -> Result<Listener, Error> {
        Self::bind_with(ep, SocketAccess::default()).await
    }

    /// Binds. A Unix socket gets `access` (mode, group); a directory created for it is 0700, or 0750 with the
    /// group when the socket is shared with a group. A stale socket file from an earlier run is replaced; one that
    /// another process still serves is not.
    pub async fn bind_with(ep: &Endpoint, access: SocketAccess) -> Result<Listener, Error> {
        let bind_err = |source: std::io::Error, hint: String| Error::Bind {
            addr: ep.to_string(),
            hint,
            source,
        };
        match ep {
            Endpoint::Unix(path) => {
                use std::os::unix::fs::PermissionsExt;
                if let Some(dir) = path.parent() {
                    if !dir.exists() {
                        std::fs::create_dir_all(dir).map_err(|e| {
                            bind_err(
                                e,
                                format!("; cannot create the directory {}", dir.display()),
                            )
                        })?;
                        let dir_mode = if access.gid.is_some() { 0o750 } else { 0o700 };
                        let _ = std::fs::set_permissions(
                            dir,
                            std::fs::Permissions::from_mode(dir_mode),
                        );
                        if let Some(gid) = access.gid {
                            let _ = std::os::unix::fs::chown(dir, None, Some(gid));
                        }
                    }
                }
                if path.exists() {
                    // Only replace a socket nobody answers on.
                    if std::os::unix::net::UnixStream::connect(path).is_ok() {
                        return Err(bind_err(
                            std::io::Error::new(
                                std::io::ErrorKind::AddrInUse,
                                "another process serves this socket",
                            ),
                            "; is another agent running?".into(),
                        ));
                    }
                    let _ = std::fs::remove_file(path);
                }
                let l = tokio::net::UnixListener::bind(path).map_err(|e| {
                    let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                        format!(
                            "; the agent's user may not create files in {} (run it as a user that may, or choose \
                             another listen path)",
                            path.parent().map(|d| d.display().to_string()).unwrap_or_default()
                        )
                    } else {
                        String::new()
                    };
                    bind_err(e, hint)
                })?;
                if let Some(gid) = access.gid {
                    std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| {
                        bind_err(e, format!("; cannot give the socket to group {gid}"))
                    })?;
                }
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode))
                    .map_err(|e| bind_err(e, String::new()))?;
                Ok(Listener::Unix(l, path.clone()))
            }
            Endpoint::Tcp(hp) => {
                let l = tokio::net::TcpListener::bind(hp).await.map_err(|e| {
                    let port = hp.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
                    let hint = port
                        .and_then(super::sockets::port_holder)
                        .map(|h| format!(" (held by {h})"))
                        .unwrap_or_default();
                    bind_err(e, hint)
                })?;
                Ok(Listener::Tcp(l))
            }
        }
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn endpoint(&self) -> Endpoint {
        match self {
            Listener::Unix(_, p) => Endpoint::Unix(p.clone()),
            Listener::Tcp(l) => Endpoint::Tcp(
                l.local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| "?".into()),
            ),
        }
    }

    pub async fn accept(&self) -> std::io::Result<(Box<dyn Stream>, Peer)> {
        match self {
            Listener::Unix(l, _) => {
                let (s, _) = l.accept().await?;
                let cred = s.peer_cred()?;
                let peer = Peer::Unix {
                    pid: cred.pid().and_then(|p| u32::try_from(p).ok()),
                    uid: cred.uid(),
                };
                Ok((Box::new(s), peer))
            }
            Listener::Tcp(l) => {
                let (s, remote) = l.accept().await?;
                let _ = s.set_nodelay(true);
                let local = s.local_addr()?;
                Ok((Box::new(s), Peer::Tcp { remote, local }))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds() {
        assert_eq!(
            "unix:/a/b.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/a/b.sock".into())
        );
        assert_eq!(
            "tcp:127.0.0.1:80".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp("127.0.0.1:80".into())
        );
        for bad in ["", "unix:", "tcp:nohost", "tcp:h:port", "http://x"] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn unix_sockets_are_owner_only_and_stale_ones_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let ep = Endpoint::Unix(d.path().join("run/x.sock"));
        let l = Listener::bind(&ep).await.unwrap();
        let Endpoint::Unix(p) = l.endpoint() else {
            panic!()
        };
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            Listener::bind(&ep).await.is_err(),
            "a live socket is not taken over"
        );
        drop(l);
        std::fs::write(&p, b"").unwrap(); // a stale leftover
        Listener::bind(&ep).await.unwrap();
    }
}
