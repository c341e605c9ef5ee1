//! The host's TCP sockets as /proc shows them: which process holds a port, the sockets of a process (by inode,
//! also while it is being torn down), and whether a port is free.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("port {port} on 127.0.0.1 is already in use{}; stop it or pick other ports", holder.as_ref().map(|h| format!(" by {h}")).unwrap_or_default())]
    PortBusy { port: u16, holder: Option<String> },
}

/// Fails with the port and, where /proc tells, the process holding it.
pub fn check_port_free(port: u16) -> Result<(), Error> {
    match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => {
            drop(l);
            Ok(())
        }
        Err(_) => Err(Error::PortBusy {
            port,
            holder: port_holder(port),
        }),
    }
}

/// `" (held by pid 1234 (java))"` for a `host:port` whose port some process listens on, else empty: for bind
/// errors.
pub fn holder_hint(addr: &str) -> String {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .and_then(port_holder)
        .map(|h| format!(" (held by {h})"))
        .unwrap_or_default()
}

/// `"pid 1234 (java)"` for the process listening on `port`, if /proc shows it.
pub fn port_holder(port: u16) -> Option<String> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if socket_inodes(&entry.path()).any(|inode| inodes.contains(&inode)) {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some(format!("pid {pid} ({})", comm.trim()));
        }
    }
    Some("another process (its owner is not visible from here)".into())
}

/// One TCP socket of a process, by its ports (remote port 0: a listening socket) and its inode.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TcpSocket {
    pub local_port: u16,
    pub remote_port: u16,
    pub inode: String,
}

/// Every TCP socket process `pid` holds, from /proc, also while it is being torn down (see
/// [`process_socket_inodes`]). Empty once its files are closed.
pub fn tcp_sockets(pid: i32) -> Vec<TcpSocket> {
    let inodes = process_socket_inodes(pid);
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut sockets: Vec<TcpSocket> = tcp_tables()
        .iter()
        .flat_map(|t| table_sockets(t, &inodes))
        .collect();
    sockets.sort_unstable();
    sockets.dedup();
    sockets
}

/// The process that holds the other end of a loopback TCP connection this process accepted (`remote` as this side
/// sees it, `local` this side's address): the row of /proc/net/tcp whose local port is `remote`'s and whose remote
/// port is `local`'s, and the process with that socket among its open files. None when /proc does not show it (the
/// peer is on another host, or in another network namespace).
pub fn owner_of_connection(
    remote: std::net::SocketAddr,
    local: std::net::SocketAddr,
) -> Option<u32> {
    let inode = tcp_tables().iter().find_map(|t| {
        tcp_rows(t)
            .find(|r| {
                r.local_port == remote.port() && r.remote_port == local.port() && !r.listening
            })
            .map(|r| r.inode)
    })?;
    holder_of_inode(&inode)
}

/// The pid whose open files include socket `inode`.
fn holder_of_inode(inode: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if socket_inodes(&entry.path()).any(|i| i == inode) {
            return Some(pid);
        }
    }
    None
}

/// The socket inodes among process `pid`'s open files. A killed multi-threaded process's group leader exits
/// first and shows no open files (a zombie) while its other threads still hold them, for a JVM up to a few hundred
/// milliseconds: then they are read through the first thread that still shows them.
pub fn process_socket_inodes(pid: i32) -> std::collections::HashSet<String> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let own: std::collections::HashSet<String> = socket_inodes(&dir).collect();
    if !own.is_empty() {
        return own;
    }
    std::fs::read_dir(dir.join("task"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|t| socket_inodes(&t.path()).collect::<std::collections::HashSet<String>>())
        .find(|s| !s.is_empty())
        .unwrap_or_default()
}

/// Socket inodes listening on `port` (any address), from /proc/net/tcp and tcp6.
fn listening_inodes(port: u16) -> Vec<String> {
    tcp_tables()
        .iter()
        .flat_map(|t| parse_listening(t, port))
        .collect()
}

/// The texts of /proc/net/tcp and tcp6 (a table that cannot be read is left out).
fn tcp_tables() -> Vec<String> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .collect()
}

/// The socket inodes among the open files of the process whose /proc directory is `proc_dir`.
fn socket_inodes(proc_dir: &Path) -> impl Iterator<Item = String> {
    std::fs::read_dir(proc_dir.join("fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()
                .and_then(|s| s.strip_prefix("socket:["))
                .and_then(|s| s.strip_suffix(']'))
                .map(str::to_string)
        })
}

/// One row of a /proc/net/tcp table.
struct TcpRow {
    local_port: u16,
    remote_port: u16,
    listening: bool,
    inode: String,
}

fn tcp_rows(table: &str) -> impl Iterator<Item = TcpRow> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // local_address is field 1 ("0100007F:1F90"), rem_address field 2, st field 3 ("0A" = LISTEN), inode
        // field 9.
        let port = |i: usize| u16::from_str_radix(f.get(i)?.rsplit(':').next()?, 16).ok();
        Some(TcpRow {
            local_port: port(1)?,
            remote_port: port(2)?,
            listening: *f.get(3)? == "0A",
            inode: f.get(9)?.to_string(),
        })
    })
}

/// The sockets of one /proc/net/tcp table whose inode is among `inodes`.
fn table_sockets(table: &str, inodes: &std::collections::HashSet<String>) -> Vec<TcpSocket> {
    tcp_rows(table)
        .filter(|r| inodes.contains(&r.inode))
        .map(|r| TcpSocket {
            local_port: r.local_port,
            remote_port: r.remote_port,
            inode: r.inode,
        })
        .collect()
}

fn parse_listening(table: &str, port: u16) -> Vec<String> {
    tcp_rows(table)
        .filter(|r| r.listening && r.local_port == port)
        .map(|r| r.inode)
        .collect()
}

/// Held by unit tests that open TCP connections from ephemeral ports and by the one that expects a port it has
/// just released to be free: a connection of another test could take that port in between.
#[cfg(test)]
pub(crate) static EPHEMERAL_PORTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_s_tcp_ports_come_from_its_socket_inodes() {
        let _ports = EPHEMERAL_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0
   1: 0100007F:9C40 0100007F:17E3 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0 20 4 30 10 -1
   2: 0100007F:9C41 0100007F:17E3 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0 20 4 30 10 -1
";
        let mine: std::collections::HashSet<String> =
            ["111", "333"].iter().map(|s| s.to_string()).collect();
        let ports: Vec<u16> = table_sockets(table, &mine)
            .iter()
            .map(|s| s.local_port)
            .collect();
        assert_eq!(ports, vec![8080, 40001]);
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(tcp_sockets(std::process::id() as i32)
            .iter()
            .any(|s| s.local_port == port));
    }

    #[test]
    fn a_process_s_tcp_sockets_name_both_ports() {
        let _ports = EPHEMERAL_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let local = c.local_addr().unwrap().port();
        let mine = tcp_sockets(std::process::id() as i32);
        for want in [(port, 0), (local, port)] {
            assert!(
                mine.iter()
                    .any(|s| (s.local_port, s.remote_port) == want && !s.inode.is_empty()),
                "{want:?} not in {mine:?}"
            );
        }
        assert!(tcp_sockets(i32::MAX).is_empty(), "no such process");
    }

    #[test]
    fn the_owner_of_a_loopback_connection_is_found() {
        let _ports = EPHEMERAL_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (accepted, remote) = l.accept().unwrap();
        let local = accepted.local_addr().unwrap();
        assert_eq!(owner_of_connection(remote, local), Some(std::process::id()));
        drop(c);
        let nobody: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(owner_of_connection(nobody, local), None);
    }

    #[test]
    fn parses_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F91 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(parse_listening(table, 8081), vec!["12345".to_string()]);
        assert!(parse_listening(table, 8080).is_empty());
    }

    #[test]
    fn busy_port_names_this_process() {
        let _ports = EPHEMERAL_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let err = check_port_free(port).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&port.to_string()), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(l);
        check_port_free(port).unwrap();
    }
}
