//! [`Netgroup`]: the address block a socket peer belongs to (IPv4 /16, IPv6 /32),
//! the unit of the membership and peer-book caps. One rule for both planes: the
//! type lives in `vision_chain::netgroup`, where the data plane's handshake pool
//! uses it too.

pub use vision_chain::netgroup::Netgroup;
