//! Resetting TCP sockets by inode through the kernel's sock_diag netlink interface (`SOCK_DESTROY`, what `ss -K`
//! uses), from the agent itself: one dump of the TCP sockets per address family, then a destroy request for each
//! socket whose inode is asked for. A destroyed socket sends a reset to its peer and fails its owner's calls with
//! `ECONNABORTED`. Matching by inode (not by ports) touches exactly the sockets named, never another process's
//! connection that reuses a port. Needs CAP_NET_ADMIN and a kernel built with `CONFIG_INET_DIAG_DESTROY`.
//!
//! Layouts (include/uapi/linux/netlink.h, sock_diag.h, inet_diag.h): `nlmsghdr` is 16 bytes; `inet_diag_req_v2` is
//! family, protocol, ext, pad (1 byte each), states (u32), then the 48-byte `inet_diag_sockid`; `inet_diag_msg` is
//! family, state, timer, retrans (1 byte each), the sockid, then expires, rqueue, wqueue, uid, inode (u32 each).

use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const IPPROTO_TCP: u8 = 6;
const SOCKID_LEN: usize = 48;
const REQ_LEN: usize = 8 + SOCKID_LEN;
/// Offset of `idiag_inode` in `inet_diag_msg`.
const INODE_OFFSET: usize = 4 + SOCKID_LEN + 16;
const DIAG_MSG_MIN: usize = INODE_OFFSET + 4;

#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error("opening a NETLINK_SOCK_DIAG socket: {0}")]
    Open(nix::Error),
    #[error("sending to the kernel's sock_diag: {0}")]
    Send(nix::Error),
    #[error("reading the kernel's sock_diag answer: {0}")]
    Recv(nix::Error),
    #[error("the kernel refused to list TCP sockets: {0}")]
    Dump(nix::Error),
    #[error("malformed sock_diag answer: {0}")]
    Malformed(&'static str),
}

/// What [`destroy_tcp`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Destroyed {
    /// TCP sockets found with an inode asked for.
    pub found: usize,
    /// Of those, destroyed.
    pub destroyed: usize,
    /// The first refusal, if any (e.g. `EPERM` without CAP_NET_ADMIN, `EOPNOTSUPP` without INET_DIAG_DESTROY).
    pub first_error: Option<nix::Error>,
}

/// A TCP socket as the kernel lists it, for choosing which to destroy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagSocket {
    pub inode: u32,
    /// Its remote end (unspecified for a listener). An IPv4 peer of an IPv6 socket shows as the IPv4 address.
    pub remote: std::net::SocketAddr,
}

/// Destroys every TCP socket (IPv4 and IPv6, any state) whose inode is in `inodes`.
pub fn destroy_tcp(inodes: &HashSet<u32>) -> Result<Destroyed, SockDiagError> {
    if inodes.is_empty() {
        return Ok(Destroyed::default());
    }
    destroy_tcp_where(|s| inodes.contains(&s.inode))
}

/// Destroys every TCP socket (IPv4 and IPv6, any state) that `pick` chooses.
pub fn destroy_tcp_where(pick: impl Fn(&DiagSocket) -> bool) -> Result<Destroyed, SockDiagError> {
    let mut done = Destroyed::default();
    let fd = open()?;
    let mut found = Vec::new();
    let mut seq = 0u32;
    for family in [nix::libc::AF_INET as u8, nix::libc::AF_INET6 as u8] {
        seq += 1;
        let req = request(
            SOCK_DIAG_BY_FAMILY,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            family,
            u32::MAX,
            &[0; SOCKID_LEN],
        );
        send(&fd, &req)?;
        dump(&fd, seq, &pick, &mut found)?;
    }
    done.found = found.len();
    for (family, id) in found {
        seq += 1;
        send(
            &fd,
            &request(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, seq, family, 0, &id),
        )?;
        match ack(&fd, seq)? {
            0 => done.destroyed += 1,
            errno => {
                done.first_error.get_or_insert(nix::Error::from_raw(errno));
            }
        }
    }
    Ok(done)
}

/// The remote end named by an `inet_diag_sockid` of `family`.
fn remote(family: u8, id: &[u8; SOCKID_LEN]) -> std::net::SocketAddr {
    let port = u16::from_be_bytes([id[2], id[3]]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&id[20..36]);
    let ip = if family == nix::libc::AF_INET as u8 {
        std::net::IpAddr::from([dst[0], dst[1], dst[2], dst[3]])
    } else {
        let v6 = std::net::Ipv6Addr::from(dst);
        v6.to_ipv4_mapped()
            .map(std::net::IpAddr::V4)
            .unwrap_or(std::net::IpAddr::V6(v6))
    };
    std::net::SocketAddr::new(ip, port)
}

fn open() -> Result<OwnedFd, SockDiagError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .map_err(SockDiagError::Open)?;
    // The kernel answers at once; a bound on the wait keeps a surprise from stalling the agent.
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(1, 0)).map_err(SockDiagError::Open)?;
    Ok(fd)
}

fn send(fd: &OwnedFd, msg: &[u8]) -> Result<(), SockDiagError> {
    sendto(
        fd.as_raw_fd(),
        msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map(|_| ())
    .map_err(SockDiagError::Send)
}

/// A netlink message carrying an `inet_diag_req_v2` for TCP.
fn request(
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    states: u32,
    id: &[u8; SOCKID_LEN],
) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + REQ_LEN) as u32;
    let mut m = Vec::with_capacity(len as usize);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    m.extend_from_slice(&states.to_ne_bytes());
    m.extend_from_slice(id);
    m
}

/// One netlink message of a received buffer: (type, seq, payload).
fn messages(buf: &[u8]) -> impl Iterator<Item = Result<(u16, u32, &[u8]), SockDiagError>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < NLMSG_HDRLEN {
            return (!rest.is_empty()).then(|| {
                rest = &[];
                Err(SockDiagError::Malformed("truncated message header"))
            });
        }
        let len = u32::from_ne_bytes(rest[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            rest = &[];
            return Some(Err(SockDiagError::Malformed(
                "message length out of bounds",
            )));
        }
        let kind = u16::from_ne_bytes(rest[4..6].try_into().ok()?);
        let seq = u32::from_ne_bytes(rest[8..12].try_into().ok()?);
        let payload = &rest[NLMSG_HDRLEN..len];
        rest = &rest[((len + 3) & !3).min(rest.len())..];
        Some(Ok((kind, seq, payload)))
    })
}

/// The errno of an `nlmsgerr` payload (0: success, an ack).
fn error_code(payload: &[u8]) -> Result<i32, SockDiagError> {
    let raw: [u8; 4] = payload
        .get(0..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(SockDiagError::Malformed("short error message"))?;
    Ok(-i32::from_ne_bytes(raw))
}

/// Reads a dump's answers until its end, keeping (family, sockid) of the sockets `pick` chooses.
fn dump(
    fd: &OwnedFd,
    seq: u32,
    pick: &impl Fn(&DiagSocket) -> bool,
    found: &mut Vec<(u8, [u8; SOCKID_LEN])>,
) -> Result<(), SockDiagError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(SockDiagError::Recv)?;
        if n == 0 {
            return Err(SockDiagError::Malformed("empty answer"));
        }
        if collect(&buf[..n], seq, pick, found)? {
            return Ok(());
        }
    }
}

/// Parses one buffer of a dump's answers; true once the dump is done.
fn collect(
    buf: &[u8],
    seq: u32,
    pick: &impl Fn(&DiagSocket) -> bool,
    found: &mut Vec<(u8, [u8; SOCKID_LEN])>,
) -> Result<bool, SockDiagError> {
    for m in messages(buf) {
        let (kind, got_seq, payload) = m?;
        if got_seq != seq {
            continue;
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => match error_code(payload)? {
                0 => return Ok(true),
                errno => return Err(SockDiagError::Dump(nix::Error::from_raw(errno))),
            },
            SOCK_DIAG_BY_FAMILY => {
                if payload.len() < DIAG_MSG_MIN {
                    return Err(SockDiagError::Malformed("short inet_diag_msg"));
                }
                let inode = u32::from_ne_bytes(
                    payload[INODE_OFFSET..DIAG_MSG_MIN]
                        .try_into()
                        .map_err(|_| SockDiagError::Malformed("inode"))?,
                );
                let id: [u8; SOCKID_LEN] = payload[4..4 + SOCKID_LEN]
                    .try_into()
                    .map_err(|_| SockDiagError::Malformed("sockid"))?;
                let family = payload[0];
                if pick(&DiagSocket {
                    inode,
                    remote: remote(family, &id),
                }) {
                    found.push((family, id));
                }
            }
            _ => {}
        }
    }
    Ok(false)
}

/// Waits for the ack of request `seq`: its errno (0 when done).
fn ack(fd: &OwnedFd, seq: u32) -> Result<i32, SockDiagError> {
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(SockDiagError::Recv)?;
        if n == 0 {
            return Err(SockDiagError::Malformed("empty answer"));
        }
        for m in messages(&buf[..n]) {
            let (kind, got_seq, payload) = m?;
            if got_seq == seq && kind == NLMSG_ERROR {
                return error_code(payload);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag_msg(seq: u32, family: u8, inode: u32, marker: u8) -> Vec<u8> {
        let mut payload = vec![family, 1, 0, 0];
        payload.extend_from_slice(&[marker; SOCKID_LEN]);
        payload.extend_from_slice(&[0u8; 16]);
        payload.extend_from_slice(&inode.to_ne_bytes());
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&payload);
        m
    }

    fn done(seq: u32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&20u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&0i32.to_ne_bytes());
        m
    }

    #[test]
    fn a_dump_keeps_the_sockets_asked_for_until_done() {
        let inodes: HashSet<u32> = [7, 9].into();
        let mut buf = diag_msg(1, 10, 7, 0xaa);
        buf.extend(diag_msg(1, 10, 8, 0xbb));
        buf.extend(diag_msg(2, 10, 9, 0xcc)); // another request's answer
        let mut found = Vec::new();
        assert!(!collect(
            &buf,
            1,
            &|d: &DiagSocket| inodes.contains(&d.inode),
            &mut found
        )
        .unwrap());
        assert_eq!(found, vec![(10, [0xaa; SOCKID_LEN])]);
        assert!(collect(&done(1), 1, &|_: &DiagSocket| true, &mut found).unwrap());
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        let full = diag_msg(1, 2, 7, 1);
        for cut in [1, 10, NLMSG_HDRLEN, NLMSG_HDRLEN + 10, full.len() - 1] {
            let mut buf = full[..cut].to_vec();
            if cut >= 4 {
                // keep the header's claimed length: the buffer ends early
                buf[0..4].copy_from_slice(&(full.len() as u32).to_ne_bytes());
            }
            let r = collect(&buf, 1, &|_: &DiagSocket| true, &mut Vec::new());
            assert!(
                matches!(r, Err(SockDiagError::Malformed(_))),
                "cut {cut}: {r:?}"
            );
        }
        // A message claiming less than its header.
        let mut short = full.clone();
        short[0..4].copy_from_slice(&4u32.to_ne_bytes());
        assert!(collect(&short, 1, &|_: &DiagSocket| true, &mut Vec::new()).is_err());
        // A well-formed message too short for an inet_diag_msg.
        let mut tiny = done(1);
        tiny[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        assert!(matches!(
            collect(&tiny, 1, &|_: &DiagSocket| true, &mut Vec::new()),
            Err(SockDiagError::Malformed("short inet_diag_msg"))
        ));
    }

    #[test]
    fn a_dump_refused_by_the_kernel_is_an_error() {
        let mut m = done(3);
        m[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m[16..20].copy_from_slice(&(-nix::libc::EPERM).to_ne_bytes());
        let r = collect(&m, 3, &|_: &DiagSocket| true, &mut Vec::new());
        assert!(
            matches!(r, Err(SockDiagError::Dump(nix::Error::EPERM))),
            "{r:?}"
        );
    }

    #[test]
    fn remote_ends_of_both_families() {
        let mut id = [0u8; SOCKID_LEN];
        id[2..4].copy_from_slice(&6123u16.to_be_bytes());
        id[20..24].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(
            remote(nix::libc::AF_INET as u8, &id),
            "10.1.2.3:6123".parse().unwrap()
        );
        // An IPv4 peer of a dual-stack (IPv6) socket, as Java opens them: ::ffff:10.1.2.3.
        id[20..36].copy_from_slice(
            &std::net::Ipv4Addr::new(10, 1, 2, 3)
                .to_ipv6_mapped()
                .octets(),
        );
        assert_eq!(
            remote(nix::libc::AF_INET6 as u8, &id),
            "10.1.2.3:6123".parse().unwrap()
        );
        id[20..36].copy_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        assert_eq!(
            remote(nix::libc::AF_INET6 as u8, &id),
            "[::1]:6123".parse().unwrap()
        );
    }

    /// A real connection picked by its remote end is reset (needs CAP_NET_ADMIN, as in CI); its other end, whose
    /// remote is the client's port, and a listener are not picked.
    #[test]
    fn a_connection_picked_by_its_remote_end_is_reset() {
        use std::io::Read;
        let _ports = crate::host::sockets::EPHEMERAL_PORTS
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let mut client = std::net::TcpStream::connect(target).unwrap();
        let (mut server_side, _) = listener.accept().unwrap();
        let d = destroy_tcp_where(|s| s.remote == target).unwrap();
        assert_eq!((d.found, d.destroyed, d.first_error), (1, 1, None));
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let err = client.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted, "{err}");
        server_side
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let err = server_side.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionReset,
            "the peer heard a reset: {err}"
        );
        // The listener was not picked and still accepts.
        let _again = std::net::TcpStream::connect(target).unwrap();
        listener.accept().unwrap();
    }

    #[test]
    fn nothing_asked_for_needs_no_socket() {
        assert_eq!(destroy_tcp(&HashSet::new()).unwrap(), Destroyed::default());
    }
}
