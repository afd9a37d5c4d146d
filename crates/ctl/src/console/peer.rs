//! Who is at the other end of a loopback connection. Browsers scope cookies by host, not
//! port, so another local user's server on another loopback port can be handed the
//! console's cookie; and any local user can connect, hold connection slots, or race the
//! browser for the printed secret. On loopback the console therefore serves only
//! connections whose other end is a socket of its own uid (root's console: root's
//! sockets only), asked of the kernel in one exact `NETLINK_SOCK_DIAG` lookup of the
//! socket whose local address is the peer's and remote address the console's, or, if
//! that cannot be asked, found in its TCP table (`/proc/net/tcp`, `/proc/net/tcp6` for
//! IPv6), read bounded. Only an ESTABLISHED socket counts; anything not found or not
//! understood is a refusal.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};

/// Most bytes of a TCP table read (some 100,000 sockets); a longer table is not
/// searched past this, and a connection not found in it is refused.
const MAX_TABLE: u64 = 16 * 1024 * 1024;

/// ESTABLISHED, the one state trusted: a socket in any other (FIN_WAIT2 or TIME_WAIT
/// after its owner closed it, say) may be an orphan the kernel shows as uid 0 whoever
/// owned it.
const ESTABLISHED: &str = "01";

/// Whether the connection from `peer` to the console's `local` comes from a socket of
/// `uid`. Fails closed: an unreadable table, no line, or a line not understood is `false`.
pub fn owned_by(peer: SocketAddr, local: SocketAddr, uid: u32) -> bool {
    if let Some(answer) = diag_owner(peer, local) {
        return answer == Some(uid);
    }
    let table = match peer.ip() {
        IpAddr::V4(_) => "/proc/net/tcp",
        IpAddr::V6(_) => "/proc/net/tcp6",
    };
    let mut text = String::new();
    let read = std::fs::File::open(table)
        .and_then(|file| file.take(MAX_TABLE + 1).read_to_string(&mut text));
    if let Err(e) = read {
        unreadable(table, &e);
        return false;
    }
    owner(whole_lines(&text, MAX_TABLE), peer, local) == Some(uid)
}

/// `text` up to its last whole line when it is longer than `max` bytes (the read was
/// cut, and a partial last line could name a truncated uid), else all of it.
fn whole_lines(text: &str, max: u64) -> &str {
    if (text.len() as u64) <= max {
        return text;
    }
    let cut = text
        .get(..usize::try_from(max).unwrap_or(usize::MAX))
        .unwrap_or("");
    cut.rfind('\n').map_or("", |end| &cut[..=end])
}

/// Say once on stderr that the peer table cannot be read: every connection is refused.
fn unreadable(table: &str, e: &std::io::Error) {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        let _ = writeln!(
            std::io::stderr(),
            "strata-ctl: cannot read {table} ({e}) to check who connects: every connection is refused"
        );
    }
}

/// The kernel's own answer through `NETLINK_SOCK_DIAG`: one exact lookup of the socket
/// at `peer` connected to `local` (no dump, no privilege needed). `Some(Some(uid))` for
/// an ESTABLISHED socket, `Some(None)` for one in any other state, `None` when the kernel
/// could not be asked or found nothing (then the table is read instead, which fails
/// closed too: the two cases share one error, `ENOENT`).
fn diag_owner(peer: SocketAddr, local: SocketAddr) -> Option<Option<u32>> {
    use rustix::net::{netlink, sockopt, AddressFamily, RecvFlags, SendFlags, SocketFlags};
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_ERROR: u16 = 2;
    const NLM_F_REQUEST: u16 = 1;
    const IPPROTO_TCP: u8 = 6;
    const TCP_ESTABLISHED: u8 = 1;
    let (family, src, dst) = match (peer.ip(), local.ip()) {
        (IpAddr::V4(p), IpAddr::V4(l)) => {
            let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
            src[..4].copy_from_slice(&p.octets());
            dst[..4].copy_from_slice(&l.octets());
            (2u8, src, dst)
        }
        (IpAddr::V6(p), IpAddr::V6(l)) => (10u8, p.octets(), l.octets()),
        _ => return Some(None),
    };
    // nlmsghdr (16 bytes), then inet_diag_req_v2 (56): the socket's own side is `peer`.
    let mut req = Vec::with_capacity(72);
    req.extend_from_slice(&72u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    req.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    req.extend_from_slice(&(1u32 << TCP_ESTABLISHED).to_ne_bytes());
    req.extend_from_slice(&peer.port().to_be_bytes());
    req.extend_from_slice(&local.port().to_be_bytes());
    req.extend_from_slice(&src);
    req.extend_from_slice(&dst);
    req.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    req.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        rustix::net::SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )
    .ok()?;
    sockopt::set_socket_timeout(
        &fd,
        sockopt::Timeout::Recv,
        Some(std::time::Duration::from_secs(2)),
    )
    .ok()?;
    let kernel = netlink::SocketAddrNetlink::new(0, 0);
    rustix::net::sendto(&fd, &req, SendFlags::empty(), &kernel).ok()?;
    let mut buf = [0u8; 1024];
    let (n, _) = rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty()).ok()?;
    let answer = buf.get(..n)?;
    let kind = u16::from_ne_bytes([*answer.get(4)?, *answer.get(5)?]);
    if kind == NLMSG_ERROR || kind != SOCK_DIAG_BY_FAMILY {
        return None;
    }
    // inet_diag_msg after the header: family, state, timer, retrans, the id (48 bytes),
    // expires, rqueue, wqueue, then uid.
    let state = *answer.get(17)?;
    let uid = answer.get(80..84)?;
    if state != TCP_ESTABLISHED {
        return Some(None);
    }
    Some(Some(u32::from_ne_bytes([uid[0], uid[1], uid[2], uid[3]])))
}

/// The uid of the socket at `peer` connected to `local`, from a TCP table's text.
pub fn owner(table: &str, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let (want_local, want_remote) = (hex(peer)?, hex(local)?);
    let mut found = None;
    for line in table.lines().skip(1) {
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid ...
        let fields: Vec<&str> = line.split_whitespace().take(8).collect();
        let [_, l, r, state, _, _, _, uid] = fields.as_slice() else {
            continue;
        };
        if !l.eq_ignore_ascii_case(&want_local) || !r.eq_ignore_ascii_case(&want_remote) {
            continue;
        }
        if *state != ESTABLISHED {
            return None;
        }
        let uid: u32 = uid.parse().ok()?;
        // The same pair twice (it should not be): both must agree.
        if found.is_some_and(|f| f != uid) {
            return None;
        }
        found = Some(uid);
    }
    found
}

/// An address as the TCP table writes it: the address's 32-bit words each in the
/// host's byte order, in hex, then `:` and the port in hex.
fn hex(addr: SocketAddr) -> Option<String> {
    let words: Vec<u32> = match addr.ip() {
        IpAddr::V4(ip) => vec![u32::from_ne_bytes(ip.octets())],
        IpAddr::V6(ip) => ip
            .octets()
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    };
    let mut out = String::with_capacity(40);
    for w in words {
        out.push_str(&format!("{w:08X}"));
    }
    out.push_str(&format!(":{:04X}", addr.port()));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1092 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:C350 0100007F:1092 01 00000000:00000000 00:00000000 00000000 65534        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:C351 0100007F:1092 06 00000000:00000000 03:00000F9B 00000000     0        0 0 3 0000000000000000
   3: 0100007F:1092 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:C352 0100007F:1092 05 00000000:00000000 02:00000F9B 00000000     0        0 0 2 0000000000000000 20 4 30 10 -1
   5: 0100007F:C353 0100007F:1092 08 00000000:00000000 00:00000000 00000000     0        0 0 2 0000000000000000 20 4 30 10 -1
";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_peers_line_names_its_uid_and_anything_else_is_none() {
        let console = addr("127.0.0.1:4242");
        assert_eq!(hex(console).unwrap(), "0100007F:1092");
        assert_eq!(owner(TABLE, addr("127.0.0.1:50000"), console), Some(65534));
        // TIME_WAIT lines say uid 0 whoever it was: not trusted.
        assert_eq!(owner(TABLE, addr("127.0.0.1:50001"), console), None);
        // Nor any state but ESTABLISHED: an orphaned FIN_WAIT2 (a client that sent and
        // closed) shows uid 0 too, and CLOSE_WAIT is no live peer.
        assert_eq!(owner(TABLE, addr("127.0.0.1:50002"), console), None);
        assert_eq!(owner(TABLE, addr("127.0.0.1:50003"), console), None);
        // Not in the table, or to another port: refused.
        assert_eq!(owner(TABLE, addr("127.0.0.1:50004"), console), None);
        assert_eq!(
            owner(TABLE, addr("127.0.0.1:50000"), addr("127.0.0.1:4243")),
            None
        );
        assert_eq!(owner("", addr("127.0.0.1:50000"), console), None);
        let garbled = TABLE.replace("65534", "x");
        assert_eq!(owner(&garbled, addr("127.0.0.1:50000"), console), None);
    }

    #[test]
    fn a_cut_read_drops_its_partial_last_line() {
        // tcp6 lines are unpadded: a line cut inside its uid would name another uid.
        let line = "   1: 0100007F:C350 0100007F:1092 01 00000000:00000000 00:00000000 00000000 65534 0 2\n";
        let table = format!("header\n{line}");
        let cut_at = table.find("65534").unwrap() + 2;
        let text = &table[..=cut_at];
        let kept = whole_lines(text, cut_at as u64);
        assert_eq!(kept, "header\n");
        let console = addr("127.0.0.1:4242");
        assert_eq!(owner(kept, addr("127.0.0.1:50000"), console), None);
        // Not cut: all of it.
        assert_eq!(whole_lines(&table, table.len() as u64), table);
    }

    #[test]
    fn ipv6_addresses_are_written_word_by_word() {
        let v6 = hex(addr("[::1]:4242")).unwrap();
        let one = format!("{:08X}", u32::from_ne_bytes([0, 0, 0, 1]));
        assert_eq!(v6, format!("{}{one}:1092", "0".repeat(24)));
    }

    #[test]
    fn a_real_connection_of_this_process_is_found_as_its_own() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(local).unwrap();
        let (_accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let me = rustix::process::geteuid().as_raw();
        // The kernel's exact lookup answers, and agrees with the table.
        assert_eq!(diag_owner(peer, local), Some(Some(me)));
        assert_eq!(diag_owner(local, peer), Some(Some(me)));
        let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
        assert_eq!(owner(&text, peer, local), Some(me));
        assert!(owned_by(peer, local, me));
        assert!(!owned_by(peer, local, me.wrapping_add(1)));
        // Closed by its owner (FIN_WAIT1/2 from close() on, possibly orphaned as uid 0):
        // no longer anyone's.
        drop(client);
        assert!(!owned_by(peer, local, me));
        assert!(!owned_by(peer, local, 0));
    }
}
