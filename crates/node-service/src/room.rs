//! Room for large things the node holds for its clients at once — request bodies
//! being read, answers being written — shared by every client, with one client
//! address's share of it bounded.
//!
//! A [`Room`] is a byte budget (a semaphore of KiB permits) plus what each address
//! holds of it. [`Room::reserve`] takes room before the thing is made or read, or
//! refuses at once ([`Full`]): the caller answers 503 `busy` with `Retry-After`, and
//! nothing waits. A [`Held`] gives its room back when dropped; an answer's is tied to
//! the answer's bytes ([`Held::into_bytes`]), so it is given back when the last byte
//! has left for the socket or the connection closed — not when the handler returned.
//! The host's own loopback (trusted) takes from the room but has no share to exceed.
//!
//! Shares are per address and per netgroup ([`Netgroup`]: IPv4 /16, IPv6 /32), so
//! that taking the room takes addresses in as many networks, not one network's
//! worth of addresses (Bitcoin Core's reasoning for its outbound peers).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vision_chain::netgroup::Netgroup;

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The client address holds its share.
    Address,
    /// The client's network (its netgroup) holds its share.
    Network,
    /// The node holds all the room there is.
    Node,
}

/// What each client address and netgroup holds, in bytes (an entry only while it
/// holds some).
#[derive(Default)]
struct Shares {
    ip: HashMap<IpAddr, usize>,
    group: HashMap<Netgroup, usize>,
}

/// A byte budget shared by every client, with a per-address share. Cheap to clone
/// (the clones are the same room).
#[derive(Clone)]
pub struct Room {
    kib: Arc<Semaphore>,
    total_kib: usize,
    shares: Arc<Mutex<Shares>>,
    per_ip_max: usize,
    per_group_max: usize,
}

fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024).max(1)
}

impl Room {
    /// A room of `total_bytes`, of which one address may hold `per_ip_max_bytes`
    /// and the addresses of one netgroup `per_group_max_bytes` together.
    pub fn new(total_bytes: usize, per_ip_max_bytes: usize, per_group_max_bytes: usize) -> Room {
        let total_kib = kib(total_bytes).min(Semaphore::MAX_PERMITS);
        Room {
            kib: Arc::new(Semaphore::new(total_kib)),
            total_kib,
            shares: Arc::default(),
            per_ip_max: per_ip_max_bytes,
            per_group_max: per_group_max_bytes,
        }
    }

    /// Room for `bytes` for a client at `peer` (`trusted`: no per-address share),
    /// or [`Full`] at once.
    pub fn reserve(&self, peer: IpAddr, trusted: bool, bytes: usize) -> Result<Held, Full> {
        let share = if trusted {
            None
        } else {
            self.take_share(peer, bytes)?;
            Some(peer)
        };
        let need = u32::try_from(kib(bytes)).unwrap_or(u32::MAX);
        match self.kib.clone().try_acquire_many_owned(need) {
            Ok(permit) => Ok(Held {
                room: self.clone(),
                permit: Some(permit),
                share,
                bytes,
            }),
            Err(_) => {
                if let Some(ip) = share {
                    self.give_share(ip, bytes);
                }
                Err(Full::Node)
            }
        }
    }

    /// Bytes of room nobody holds now (within a KiB).
    pub fn free_bytes(&self) -> usize {
        self.kib.available_permits() * 1024
    }

    /// Bytes of room held now (within a KiB).
    pub fn held_bytes(&self) -> usize {
        self.total_kib.saturating_sub(self.kib.available_permits()) * 1024
    }

    fn take_share(&self, ip: IpAddr, bytes: usize) -> Result<(), Full> {
        let mut m = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        let group = Netgroup::of(ip);
        let held = m.ip.get(&ip).copied().unwrap_or(0);
        if held.saturating_add(bytes) > self.per_ip_max {
            return Err(Full::Address);
        }
        let group_held = m.group.get(&group).copied().unwrap_or(0);
        if group_held.saturating_add(bytes) > self.per_group_max {
            return Err(Full::Network);
        }
        m.ip.insert(ip, held + bytes);
        m.group.insert(group, group_held + bytes);
        Ok(())
    }

    fn give_share(&self, ip: IpAddr, bytes: usize) {
        let mut m = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        fn less<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: K, bytes: usize) {
            if let Some(held) = m.get_mut(&k) {
                *held = held.saturating_sub(bytes);
                if *held == 0 {
                    m.remove(&k);
                }
            }
        }
        less(&mut m.ip, ip, bytes);
        less(&mut m.group, Netgroup::of(ip), bytes);
    }

    /// No share held by anyone (tests).
    #[cfg(test)]
    fn shares_empty(&self) -> bool {
        let m = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        m.ip.is_empty() && m.group.is_empty()
    }
}

/// Room held for one thing; given back when dropped.
pub struct Held {
    room: Room,
    permit: Option<OwnedSemaphorePermit>,
    share: Option<IpAddr>,
    bytes: usize,
}

impl Held {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Hold `bytes` instead: shrinking gives the rest back at once; growing takes
    /// more room, or fails with [`Full`] and holds what it held.
    pub fn resize(&mut self, bytes: usize) -> Result<(), Full> {
        let (have, want) = (kib(self.bytes), kib(bytes));
        if bytes > self.bytes {
            if let Some(ip) = self.share {
                self.room.take_share(ip, bytes - self.bytes)?;
            }
            if want > have {
                let more = u32::try_from(want - have).unwrap_or(u32::MAX);
                match self.room.kib.clone().try_acquire_many_owned(more) {
                    Ok(p) => match &mut self.permit {
                        Some(permit) => permit.merge(p),
                        None => self.permit = Some(p),
                    },
                    Err(_) => {
                        if let Some(ip) = self.share {
                            self.room.give_share(ip, bytes - self.bytes);
                        }
                        return Err(Full::Node);
                    }
                }
            }
        } else {
            if let Some(ip) = self.share {
                self.room.give_share(ip, self.bytes - bytes);
            }
            if have > want {
                // Dropping the split-off permits gives them back.
                drop(self.permit.as_mut().and_then(|p| p.split(have - want)));
            }
        }
        self.bytes = bytes;
        Ok(())
    }

    /// `body` as [`Bytes`] that hold this room (resized to the body's length) until
    /// the last reference to them is dropped: hyper drops an answer's bytes when it
    /// has written them to the socket or the connection closed.
    pub fn into_bytes(mut self, body: Vec<u8>) -> Result<Bytes, Full> {
        self.resize(body.len())?;
        Ok(Bytes::from_owner(HeldBytes { body, _held: self }))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(ip) = self.share {
            self.room.give_share(ip, self.bytes);
        }
    }
}

/// Bytes that keep their room while they live.
struct HeldBytes {
    body: Vec<u8>,
    _held: Held,
}

impl AsRef<[u8]> for HeldBytes {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn an_address_holds_at_most_its_share_and_gets_it_back() {
        let room = Room::new(100 * MIB, 10 * MIB, usize::MAX);
        let a = room.reserve(ip(1), false, 6 * MIB).unwrap();
        assert_eq!(
            room.reserve(ip(1), false, 5 * MIB).err(),
            Some(Full::Address)
        );
        // Another address is not held back by the first one's share.
        let b = room.reserve(ip(2), false, 6 * MIB).unwrap();
        drop(a);
        let a2 = room.reserve(ip(1), false, 10 * MIB).unwrap();
        assert_eq!(room.held_bytes(), 16 * MIB);
        drop((a2, b));
        assert_eq!(room.held_bytes(), 0);
        assert!(room.shares_empty());
    }

    #[test]
    fn a_network_holds_at_most_its_share_over_all_its_addresses() {
        let room = Room::new(100 * MIB, 10 * MIB, 15 * MIB);
        let a = room.reserve(ip(1), false, 10 * MIB).unwrap();
        let _b = room.reserve(ip(2), false, 5 * MIB).unwrap();
        // 10.0.0.3 holds nothing, but 10.0/16 holds its 15 MiB.
        assert_eq!(room.reserve(ip(3), false, MIB).err(), Some(Full::Network));
        // Another network is not held back; nor is a trusted client.
        let other = IpAddr::from([10, 1, 0, 1]);
        let _c = room.reserve(other, false, 10 * MIB).unwrap();
        let _t = room.reserve(ip(4), true, 10 * MIB).unwrap();
        drop(a);
        let _d = room.reserve(ip(3), false, 10 * MIB).unwrap();
    }

    #[test]
    fn the_node_refuses_past_its_room_and_a_refusal_holds_nothing() {
        let room = Room::new(10 * MIB, 10 * MIB, usize::MAX);
        let held: Vec<_> = (0..5)
            .map(|i| room.reserve(ip(i), false, 2 * MIB).unwrap())
            .collect();
        assert_eq!(room.reserve(ip(9), false, 1).err(), Some(Full::Node));
        // Trusted clients take from the same room.
        assert_eq!(room.reserve(ip(9), true, 1).err(), Some(Full::Node));
        // The refused address kept no share.
        assert!(!room.shares.lock().unwrap().ip.contains_key(&ip(9)));
        drop(held);
        assert_eq!(room.free_bytes(), 10 * MIB);
    }

    #[test]
    fn shrinking_gives_room_back_and_growing_takes_it_or_fails_cleanly() {
        let room = Room::new(10 * MIB, 8 * MIB, usize::MAX);
        let mut h = room.reserve(ip(1), false, 8 * MIB).unwrap();
        h.resize(MIB).unwrap();
        assert_eq!(room.held_bytes(), MIB);
        let other = room.reserve(ip(1), false, 7 * MIB).unwrap();
        // Past the address's share: refused, still holding its 1 MiB.
        assert_eq!(h.resize(2 * MIB).err(), Some(Full::Address));
        assert_eq!(h.bytes(), MIB);
        drop(other);
        // Past the node's room (trusted: no share to exceed).
        let mut t = room.reserve(ip(2), true, MIB).unwrap();
        assert_eq!(t.resize(11 * MIB).err(), Some(Full::Node));
        assert_eq!(room.held_bytes(), 2 * MIB);
        t.resize(9 * MIB).unwrap();
        assert_eq!(room.held_bytes(), 10 * MIB);
        drop((h, t));
        assert_eq!(room.held_bytes(), 0);
        assert!(room.shares_empty());
    }

    #[test]
    fn bytes_keep_their_room_until_the_last_clone_is_dropped() {
        let room = Room::new(10 * MIB, 10 * MIB, usize::MAX);
        let h = room.reserve(ip(1), false, 4 * MIB).unwrap();
        let body = h.into_bytes(vec![7u8; 3 * MIB]).unwrap();
        assert_eq!(room.held_bytes(), 3 * MIB);
        let part = body.slice(MIB..);
        drop(body);
        assert_eq!(room.held_bytes(), 3 * MIB, "a slice still holds the bytes");
        assert_eq!(part.len(), 2 * MIB);
        assert!(part.iter().all(|&b| b == 7));
        drop(part);
        assert_eq!(room.held_bytes(), 0);
        assert!(room.shares_empty());
    }
}
