//! [`Netgroup`]: the address block a socket peer belongs to (IPv4 /16, IPv6 /32),
//! shared by the control plane's membership caps (backbone-state) and the data
//! plane's handshake pool (p2p-dataplane): pure, no I/O, so it sits here;
//! the unit of per-source caps (as Bitcoin Core's addrman and discv5's table limits
//! group peers): one operator rarely holds addresses in many netgroups, so a cap per
//! netgroup bounds what one operator can take.
//!
//! **Invariant:** always computed from the socket peer address, never from a header
//! or anything the peer says about itself.

use std::fmt;
use std::net::IpAddr;

/// An IPv4 /16 or an IPv6 /32 (IPv4-mapped IPv6 addresses count as IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Netgroup {
    /// The first two octets.
    V4([u8; 2]),
    /// The first four octets.
    V6([u8; 4]),
}

impl Netgroup {
    /// The netgroup of a socket peer address.
    pub fn of(ip: IpAddr) -> Netgroup {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Netgroup::V4([o[0], o[1]])
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Netgroup::of(IpAddr::V4(v4)),
                None => {
                    let o = v6.octets();
                    Netgroup::V6([o[0], o[1], o[2], o[3]])
                }
            },
        }
    }
}

impl fmt::Display for Netgroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Netgroup::V4([a, b]) => write!(f, "{a}.{b}.0.0/16"),
            Netgroup::V6([a, b, c, d]) => write!(
                f,
                "{:x}:{:x}::/32",
                u16::from_be_bytes([*a, *b]),
                u16::from_be_bytes([*c, *d])
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups() {
        let g = |s: &str| Netgroup::of(s.parse().unwrap());
        assert_eq!(g("127.0.0.1"), g("127.0.200.9"));
        assert_ne!(g("127.0.0.1"), g("127.9.9.9"));
        assert_eq!(g("::ffff:10.1.2.3"), g("10.1.9.9"));
        assert_eq!(g("2001:db8:1::1"), g("2001:db8:ffff::2"));
        assert_ne!(g("2001:db8::1"), g("2001:db9::1"));
        assert_eq!(g("127.9.9.9").to_string(), "127.9.0.0/16");
        assert_eq!(g("2001:db8::1").to_string(), "2001:db8::/32");
    }
}
