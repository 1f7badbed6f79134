//! Host and port syntax shared by everything that reads addresses from outside
//! (anchor seeds, peer-book entries, node URLs), so that the client and the backbone
//! agree on what an address is.

/// Longest host name accepted (DNS's limit).
pub const MAX_HOST_LEN: usize = 253;

/// Split `host[:port]` (IPv6 in brackets; the host keeps them) and check the host's
/// characters. The port, if any, is returned unparsed.
pub fn split_host_port(s: &str) -> Result<(&str, Option<&str>), &'static str> {
    if let Some(inner) = s.strip_prefix('[') {
        let end = inner.find(']').ok_or("unclosed '[' in IPv6 address")?;
        let ip = &inner[..end];
        if ip.is_empty()
            || !ip
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err("invalid IPv6 address");
        }
        let host = &s[..end + 2];
        let after = &inner[end + 1..];
        return match after {
            "" => Ok((host, None)),
            _ => after
                .strip_prefix(':')
                .map(|p| (host, Some(p)))
                .ok_or("unexpected text after IPv6 address"),
        };
    }
    let (host, port) = match s.split_once(':') {
        Some((_, p)) if p.contains(':') => {
            return Err("IPv6 addresses must be in brackets: [::1]:7070");
        }
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return Err("host is empty or too long");
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        return Err("host has characters a host name cannot have");
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(split_host_port("a.b:70"), Ok(("a.b", Some("70"))));
        assert_eq!(split_host_port("a.b"), Ok(("a.b", None)));
        assert_eq!(split_host_port("[::1]:7070"), Ok(("[::1]", Some("7070"))));
        assert_eq!(split_host_port("[::1]"), Ok(("[::1]", None)));
        for bad in ["", "::1:7070", "[::1", "[zz]:1", "[::1]x", "a b:1", ":80"] {
            assert!(split_host_port(bad).is_err(), "{bad:?}");
        }
    }
}
