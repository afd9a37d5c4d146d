//! Connection slots: how many connections a server holds, and for whom.
//!
//! Three rules, checked when a connection is accepted (and, over TCP, again once the
//! certificate's name is known):
//! - at most `max_connections` in all, both transports together;
//! - at most `max_connections_per_peer` for one caller: a uid on the Unix socket, an
//!   address (an IPv6 /64, since one host holds a whole one) or a certificate name over
//!   TCP;
//! - `reserved_connections` of the total are for root and the server's own uid only, who
//!   are not held to the per-caller quota. The supervisor probes health as one of these,
//!   so other uids filling the server never make it look dead.
//!
//! Network peers are held apart from local callers, so that nobody who can merely reach
//! the TCP port competes with the local users the Unix socket serves ([`TcpLimits`]):
//! - TCP connections, handshaking or established, hold at most `max` of the total (half
//!   of it by default): whatever TCP peers do, local callers other than root and the
//!   server's own uid keep `max_connections - reserved - tcp max` slots;
//! - a TCP connection whose TLS handshake has not finished (a peer that has not yet shown
//!   a certificate: anyone who can reach the port) also holds a slot of a small pool of
//!   its own, `handshakes` in all and `handshakes_per_addr` for one address. Such peers
//!   therefore hold at most `handshakes` slots, even spread over many addresses, and only
//!   for the (short) handshake deadline.
//!
//! The table holds one entry per caller with a live connection, so it is bounded by the
//! connection limit itself.
//!
//! [`ByteBudget`] counts the same callers' partly received frames in bytes: a frame's
//! declared length is reserved when its header arrives, so holding many connections
//! half-way through large frames cannot make a server hold more than the budget. TCP peers
//! together hold at most a share of it, so that local callers always keep the rest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use strata_proto::{ErrorBody, ErrorCode};

/// Who a slot is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum PeerKey {
    Uid(u32),
    /// A TCP peer's address: IPv4 whole, IPv6 reduced to its /64.
    Addr(IpAddr),
    /// A TCP peer's certificate name, once the handshake has proved it.
    Name(String),
}

impl PeerKey {
    pub(crate) fn addr(ip: IpAddr) -> PeerKey {
        match ip {
            IpAddr::V4(v4) => PeerKey::Addr(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => PeerKey::Addr(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    PeerKey::Addr(IpAddr::V6(bits.into()))
                }
            },
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every slot open to this caller is taken.
    Full { limit: usize },
    /// This caller holds its quota.
    PeerFull { limit: usize },
    /// Frames arriving on every connection already hold the server's byte budget.
    BytesFull { limit: usize },
    /// Frames arriving from this caller hold its byte budget.
    PeerBytesFull { limit: usize },
    /// TCP connections hold their share of the slots.
    TcpFull { limit: usize },
    /// Unfinished TLS handshakes hold their pool.
    HandshakesFull { limit: usize },
    /// Unfinished TLS handshakes from this address hold its part of the pool.
    PeerHandshakesFull { limit: usize },
    /// Frames arriving over TCP hold the TCP share of the byte budget.
    TcpBytesFull { limit: usize },
}

impl Refusal {
    /// The one frame a refused client is told (RESOURCE_EXHAUSTED: a quota, not a dead
    /// server, which a health probe must be able to tell apart).
    pub(crate) fn error(self) -> ErrorBody {
        match self {
            Refusal::Full { limit } => ErrorBody::new(
                ErrorCode::ResourceExhausted,
                "server is at its connection limit; try again later",
            )
            .with_details(serde_json::json!({ "limit": limit })),
            Refusal::PeerFull { limit } => ErrorBody::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "this caller holds {limit} connections, the most one caller may hold; \
                     close one or try again later"
                ),
            )
            .with_details(serde_json::json!({ "limit_per_peer": limit })),
            Refusal::BytesFull { limit } => ErrorBody::new(
                ErrorCode::ResourceExhausted,
                "server holds too many partly received large frames; try again later",
            )
            .with_details(serde_json::json!({ "buffered_bytes_limit": limit })),
            Refusal::PeerBytesFull { limit } => ErrorBody::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "this caller's partly received large frames hold {limit} bytes, the most \
                     one caller may; finish sending them or try again later"
                ),
            )
            .with_details(serde_json::json!({ "buffered_bytes_limit_per_peer": limit })),
            Refusal::TcpFull { limit } => ErrorBody::new(
                ErrorCode::ResourceExhausted,
                "server holds all the tcp connections it takes; try again later",
            )
            .with_details(serde_json::json!({ "tcp_limit": limit })),
            Refusal::HandshakesFull { limit } => ErrorBody::new(
                ErrorCode::ResourceExhausted,
                "server holds all the unfinished tls handshakes it takes; try again later",
            )
            .with_details(serde_json::json!({ "handshake_limit": limit })),
            Refusal::PeerHandshakesFull { limit } => ErrorBody::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "this address holds {limit} unfinished tls handshakes, the most one \
                     address may; try again later"
                ),
            )
            .with_details(serde_json::json!({ "handshake_limit_per_peer": limit })),
            Refusal::TcpBytesFull { limit } => ErrorBody::new(
                ErrorCode::ResourceExhausted,
                "tcp peers' partly received large frames hold their share of the server's \
                 budget; try again later",
            )
            .with_details(serde_json::json!({ "buffered_bytes_limit_tcp": limit })),
        }
    }
}

#[derive(Default)]
struct Held {
    total: usize,
    by_peer: HashMap<PeerKey, usize>,
    /// Of `total`, held by TCP peers (keys [`PeerKey::Addr`]).
    tcp: usize,
    /// Unfinished TLS handshakes, in all and by address.
    handshakes: usize,
    shaking: HashMap<PeerKey, usize>,
}

/// What TCP peers may hold of a server's slots (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpLimits {
    /// TCP connections in all, handshaking or established.
    pub(crate) max: usize,
    /// Unfinished TLS handshakes in all.
    pub(crate) handshakes: usize,
    /// Unfinished TLS handshakes from one address (an IPv6 /64).
    pub(crate) handshakes_per_addr: usize,
}

/// The slot table of one server.
pub(crate) struct Slots {
    max: usize,
    per_peer: usize,
    reserved: usize,
    own_uid: u32,
    tcp: TcpLimits,
    held: Mutex<Held>,
}

/// One admitted connection's slot, given back when dropped (even if the task unwinds).
pub(crate) struct Slot {
    slots: Arc<Slots>,
    key: PeerKey,
    counts_in_total: bool,
}

/// A TCP connection's place in the handshake pool, given back when its handshake ends
/// (dropped), however it ended.
pub(crate) struct Handshake {
    slots: Arc<Slots>,
    key: PeerKey,
}

impl Slots {
    pub(crate) fn new(
        max: usize,
        per_peer: usize,
        reserved: usize,
        own_uid: u32,
        tcp: TcpLimits,
    ) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            per_peer,
            reserved: reserved.min(max),
            own_uid,
            tcp: TcpLimits {
                max: tcp.max.min(max),
                ..tcp
            },
            held: Mutex::new(Held::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // Every update is a pair of counter changes made under the lock; a poisoned table
        // is still consistent.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn privileged(&self, key: &PeerKey) -> bool {
        matches!(key, PeerKey::Uid(uid) if *uid == 0 || *uid == self.own_uid)
    }

    /// A slot for a new connection from `key` (an address counts as a TCP connection,
    /// already past its handshake).
    pub(crate) fn admit(self: &Arc<Self>, key: PeerKey) -> Result<Slot, Refusal> {
        let mut held = self.lock();
        self.take(&mut held, key, true)
    }

    /// A slot for a new TCP connection from `ip`, and a place in the handshake pool that
    /// it holds until its TLS handshake ends: both or neither.
    pub(crate) fn admit_tcp(
        self: &Arc<Self>,
        ip: std::net::IpAddr,
    ) -> Result<(Slot, Handshake), Refusal> {
        let key = PeerKey::addr(ip);
        let mut held = self.lock();
        if held.handshakes >= self.tcp.handshakes {
            return Err(Refusal::HandshakesFull {
                limit: self.tcp.handshakes,
            });
        }
        let shaking = held.shaking.get(&key).copied().unwrap_or(0);
        if shaking >= self.tcp.handshakes_per_addr {
            return Err(Refusal::PeerHandshakesFull {
                limit: self.tcp.handshakes_per_addr,
            });
        }
        let slot = self.take(&mut held, key.clone(), true)?;
        held.handshakes += 1;
        held.shaking.insert(key.clone(), shaking + 1);
        let handshake = Handshake {
            slots: Arc::clone(self),
            key,
        };
        Ok((slot, handshake))
    }

    /// Count a TCP connection (already holding its address's slot) against its
    /// certificate name as well.
    pub(crate) fn admit_name(self: &Arc<Self>, name: &str) -> Result<Slot, Refusal> {
        let mut held = self.lock();
        self.take(&mut held, PeerKey::Name(name.to_owned()), false)
    }

    fn take(
        self: &Arc<Self>,
        held: &mut Held,
        key: PeerKey,
        counts_in_total: bool,
    ) -> Result<Slot, Refusal> {
        let privileged = self.privileged(&key);
        if counts_in_total {
            let open_to_caller = if privileged {
                self.max
            } else {
                self.max - self.reserved
            };
            if held.total >= open_to_caller {
                return Err(Refusal::Full {
                    limit: open_to_caller,
                });
            }
            if matches!(key, PeerKey::Addr(_)) && held.tcp >= self.tcp.max {
                return Err(Refusal::TcpFull {
                    limit: self.tcp.max,
                });
            }
        }
        let mine = held.by_peer.get(&key).copied().unwrap_or(0);
        if !privileged && mine >= self.per_peer {
            return Err(Refusal::PeerFull {
                limit: self.per_peer,
            });
        }
        held.by_peer.insert(key.clone(), mine + 1);
        if counts_in_total {
            held.total += 1;
            if matches!(key, PeerKey::Addr(_)) {
                held.tcp += 1;
            }
        }
        Ok(Slot {
            slots: Arc::clone(self),
            key,
            counts_in_total,
        })
    }

    #[cfg(test)]
    fn peers(&self) -> usize {
        self.lock().by_peer.len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.lock();
        if self.counts_in_total {
            held.total -= 1;
            if matches!(self.key, PeerKey::Addr(_)) {
                held.tcp -= 1;
            }
        }
        if let Some(n) = held.by_peer.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.by_peer.remove(&self.key);
            }
        }
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut held = self.slots.lock();
        held.handshakes -= 1;
        if let Some(n) = held.shaking.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.shaking.remove(&self.key);
            }
        }
    }
}

/// Bytes of partly received frames a server holds, for whom: the same callers as the
/// slots, with a total and a per-caller budget (root and the server's own uid held to the
/// total only), and a share of the total that TCP peers together may hold.
pub(crate) struct ByteBudget {
    max: usize,
    per_peer: usize,
    tcp_max: usize,
    own_uid: u32,
    held: Mutex<Held>,
}

/// Bytes reserved for one frame that is arriving; given back when dropped.
pub(crate) struct Reservation {
    budget: Arc<ByteBudget>,
    key: PeerKey,
    bytes: usize,
}

impl ByteBudget {
    pub(crate) fn new(
        max: usize,
        per_peer: usize,
        tcp_max: usize,
        own_uid: u32,
    ) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            max,
            per_peer,
            tcp_max: tcp_max.min(max),
            own_uid,
            held: Mutex::new(Held::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserve `bytes` for `key`, or say which budget it would exceed.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        key: &PeerKey,
        bytes: usize,
    ) -> Result<Reservation, Refusal> {
        let privileged = matches!(key, PeerKey::Uid(uid) if *uid == 0 || *uid == self.own_uid);
        let mut held = self.lock();
        if held.total + bytes > self.max {
            return Err(Refusal::BytesFull { limit: self.max });
        }
        let tcp = matches!(key, PeerKey::Addr(_));
        if tcp && held.tcp + bytes > self.tcp_max {
            return Err(Refusal::TcpBytesFull {
                limit: self.tcp_max,
            });
        }
        let mine = held.by_peer.get(key).copied().unwrap_or(0);
        if !privileged && mine + bytes > self.per_peer {
            return Err(Refusal::PeerBytesFull {
                limit: self.per_peer,
            });
        }
        held.by_peer.insert(key.clone(), mine + bytes);
        held.total += bytes;
        if tcp {
            held.tcp += bytes;
        }
        Ok(Reservation {
            budget: Arc::clone(self),
            key: key.clone(),
            bytes,
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut held = self.budget.lock();
        held.total -= self.bytes;
        if matches!(self.key, PeerKey::Addr(_)) {
            held.tcp -= self.bytes;
        }
        if let Some(n) = held.by_peer.get_mut(&self.key) {
            *n -= self.bytes;
            if *n == 0 {
                held.by_peer.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: u32 = 990;

    /// TCP held to the total and the per-caller quota only.
    const NO_TCP_CAP: TcpLimits = TcpLimits {
        max: usize::MAX,
        handshakes: usize::MAX,
        handshakes_per_addr: usize::MAX,
    };

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn take_n(slots: &Arc<Slots>, key: PeerKey, n: usize) -> Vec<Slot> {
        (0..n)
            .map(|i| {
                slots
                    .admit(key.clone())
                    .unwrap_or_else(|r| panic!("{i}: {r:?}"))
            })
            .collect()
    }

    #[test]
    fn a_caller_may_hold_its_quota_and_not_one_more() {
        let slots = Slots::new(100, 3, 0, OWN, NO_TCP_CAP);
        let held = take_n(&slots, PeerKey::Uid(1000), 3);
        assert_eq!(
            slots.admit(PeerKey::Uid(1000)).err(),
            Some(Refusal::PeerFull { limit: 3 })
        );
        // Another caller has a quota of its own.
        let _other = take_n(&slots, PeerKey::Uid(1001), 3);
        drop(held);
        let _again = take_n(&slots, PeerKey::Uid(1000), 3);
    }

    #[test]
    fn the_reserve_is_for_root_and_the_servers_own_uid() {
        let slots = Slots::new(6, 2, 2, OWN, NO_TCP_CAP);
        let _a = take_n(&slots, PeerKey::Uid(1), 2);
        let _b = take_n(&slots, PeerKey::Uid(2), 2);
        assert_eq!(
            slots.admit(PeerKey::Uid(3)).err(),
            Some(Refusal::Full { limit: 4 })
        );
        assert_eq!(
            slots
                .admit(PeerKey::addr("10.0.0.1".parse().unwrap()))
                .err(),
            Some(Refusal::Full { limit: 4 })
        );
        let _root = slots.admit(PeerKey::Uid(0)).unwrap();
        let _own = slots.admit(PeerKey::Uid(OWN)).unwrap();
        assert_eq!(
            slots.admit(PeerKey::Uid(0)).err(),
            Some(Refusal::Full { limit: 6 })
        );
    }

    #[test]
    fn privileged_uids_are_held_to_the_total_only() {
        let slots = Slots::new(5, 1, 1, OWN, NO_TCP_CAP);
        let _root = take_n(&slots, PeerKey::Uid(0), 3);
        let _own = take_n(&slots, PeerKey::Uid(OWN), 2);
        assert!(slots.admit(PeerKey::Uid(0)).is_err());
    }

    #[test]
    fn a_name_is_counted_without_taking_another_slot() {
        let slots = Slots::new(3, 2, 0, OWN, NO_TCP_CAP);
        let a1 = slots
            .admit(PeerKey::addr("10.0.0.1".parse().unwrap()))
            .unwrap();
        let a2 = slots
            .admit(PeerKey::addr("10.0.0.2".parse().unwrap()))
            .unwrap();
        let n1 = slots.admit_name("node-a").unwrap();
        let n2 = slots.admit_name("node-a").unwrap();
        assert_eq!(
            slots.admit_name("node-a").err(),
            Some(Refusal::PeerFull { limit: 2 })
        );
        // The names took no slot from the total of 3.
        let _a3 = slots
            .admit(PeerKey::addr("10.0.0.3".parse().unwrap()))
            .unwrap();
        drop((a1, a2, n1, n2));
    }

    #[test]
    fn ipv6_peers_are_counted_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a = PeerKey::addr("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = PeerKey::addr("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = PeerKey::addr("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            PeerKey::addr("::ffff:10.1.2.3".parse().unwrap()),
            PeerKey::addr("10.1.2.3".parse().unwrap())
        );
    }

    #[test]
    fn the_table_forgets_callers_that_left() {
        let slots = Slots::new(2000, 2000, 0, OWN, NO_TCP_CAP);
        let held: Vec<Slot> = (0..1000)
            .map(|uid| slots.admit(PeerKey::Uid(5000 + uid)).unwrap())
            .collect();
        assert_eq!(slots.peers(), 1000);
        drop(held);
        assert_eq!(slots.peers(), 0);
        assert_eq!(slots.lock().total, 0);
    }

    #[test]
    fn frame_bytes_are_budgeted_per_caller_and_in_all() {
        let budget = ByteBudget::new(10, 4, 10, OWN);
        let a = PeerKey::Uid(1000);
        let at_quota = budget.reserve(&a, 4).unwrap();
        assert_eq!(
            budget.reserve(&a, 1).err(),
            Some(Refusal::PeerBytesFull { limit: 4 })
        );
        let _b = budget.reserve(&PeerKey::Uid(1001), 4).unwrap();
        // Root is held to the total only: 2 bytes are left of 10.
        let _root = budget.reserve(&PeerKey::Uid(0), 2).unwrap();
        assert_eq!(
            budget.reserve(&PeerKey::Uid(0), 1).err(),
            Some(Refusal::BytesFull { limit: 10 })
        );
        drop(at_quota);
        let _again = budget.reserve(&a, 4).unwrap();
        assert_eq!(budget.lock().by_peer.len(), 3);
    }

    #[test]
    fn refusals_are_resource_exhausted() {
        for r in [
            Refusal::Full { limit: 1 },
            Refusal::PeerFull { limit: 1 },
            Refusal::BytesFull { limit: 1 },
            Refusal::PeerBytesFull { limit: 1 },
            Refusal::TcpFull { limit: 1 },
            Refusal::HandshakesFull { limit: 1 },
            Refusal::PeerHandshakesFull { limit: 1 },
            Refusal::TcpBytesFull { limit: 1 },
        ] {
            assert_eq!(r.error().code, ErrorCode::ResourceExhausted);
            assert!(r.error().details.is_object());
        }
    }

    #[test]
    fn tcp_connections_hold_at_most_their_share_of_the_slots() {
        let tcp = TcpLimits {
            max: 4,
            handshakes: 100,
            handshakes_per_addr: 100,
        };
        let slots = Slots::new(10, 10, 2, OWN, tcp);
        // At the bound: 4 TCP connections, from several addresses, handshaking or not.
        let mut held: Vec<(Slot, Handshake)> = (1..=3)
            .map(|i| slots.admit_tcp(ip(&format!("10.0.0.{i}"))).unwrap())
            .collect();
        let done = slots.admit(PeerKey::addr(ip("10.0.0.4"))).unwrap();
        // One past it, from a new address or an old one.
        for addr in ["10.0.0.5", "10.0.0.1"] {
            assert_eq!(
                slots.admit_tcp(ip(addr)).err(),
                Some(Refusal::TcpFull { limit: 4 })
            );
        }
        assert_eq!(
            slots.admit(PeerKey::addr(ip("10.0.0.5"))).err(),
            Some(Refusal::TcpFull { limit: 4 })
        );
        // The rest is the local callers': 10 - 2 reserved - 4 TCP.
        let _local = take_n(&slots, PeerKey::Uid(1000), 4);
        assert_eq!(
            slots.admit(PeerKey::Uid(1001)).err(),
            Some(Refusal::Full { limit: 8 })
        );
        // A TCP connection that leaves gives its share back.
        held.pop();
        drop(done);
        let _again = slots.admit_tcp(ip("10.0.0.9")).unwrap();
        assert_eq!(slots.lock().tcp, 3);
    }

    #[test]
    fn unfinished_handshakes_have_a_small_pool_and_a_part_per_address() {
        let tcp = TcpLimits {
            max: 100,
            handshakes: 4,
            handshakes_per_addr: 2,
        };
        let slots = Slots::new(100, 100, 0, OWN, tcp);
        // At the bound per address: 2 from A; one past it refused.
        let a1 = slots.admit_tcp(ip("10.0.0.1")).unwrap();
        let _a2 = slots.admit_tcp(ip("10.0.0.1")).unwrap();
        assert_eq!(
            slots.admit_tcp(ip("10.0.0.1")).err(),
            Some(Refusal::PeerHandshakesFull { limit: 2 })
        );
        // IPv6 addresses of one /64 are one address here too.
        let _b1 = slots.admit_tcp(ip("2001:db8::1")).unwrap();
        let _b2 = slots.admit_tcp(ip("2001:db8::2")).unwrap();
        // At the bound in all (4); one past it, from a new address, refused.
        assert_eq!(
            slots.admit_tcp(ip("10.0.0.3")).err(),
            Some(Refusal::HandshakesFull { limit: 4 })
        );
        // A refusal takes nothing: 4 slots are held, as before.
        assert_eq!(slots.lock().total, 4);
        // A's first handshake finishes: the connection keeps its slot, the pool a place.
        let (a1_slot, a1_handshake) = a1;
        drop(a1_handshake);
        let _c = slots.admit_tcp(ip("10.0.0.3")).unwrap();
        assert_eq!(slots.lock().total, 5);
        assert_eq!(slots.lock().handshakes, 4);
        drop(a1_slot);
        assert_eq!(slots.lock().total, 4);
    }

    #[test]
    fn tcp_peers_hold_at_most_their_share_of_the_byte_budget() {
        let budget = ByteBudget::new(10, 8, 5, OWN);
        let (a, b) = (PeerKey::addr(ip("10.0.0.1")), PeerKey::addr(ip("10.0.0.2")));
        let _a = budget.reserve(&a, 3).unwrap();
        // At the TCP share (5), from another address; one byte past it refused.
        let b_at = budget.reserve(&b, 2).unwrap();
        assert_eq!(
            budget.reserve(&b, 1).err(),
            Some(Refusal::TcpBytesFull { limit: 5 })
        );
        assert_eq!(
            budget.reserve(&PeerKey::addr(ip("10.0.0.3")), 1).err(),
            Some(Refusal::TcpBytesFull { limit: 5 })
        );
        // The other half is the local callers', whatever TCP peers hold.
        let _local = budget.reserve(&PeerKey::Uid(1000), 5).unwrap();
        drop(b_at);
        let _b = budget.reserve(&b, 2).unwrap();
        assert_eq!(budget.lock().tcp, 5);
    }
}
