//! Base URL normalisation: `host`, `host:port` and `http://host:port[/]` all become
//! `http://host:port`.

use vision_wire::DEFAULT_HTTP_PORT;
use vision_wire::addr::split_host_port;

use crate::ClientError;

/// Longest base URL accepted, in bytes.
pub const MAX_BASE_URL_LEN: usize = 512;

fn invalid(url: &str, reason: &str) -> ClientError {
    let shown: String = url.chars().take(80).collect();
    ClientError::InvalidUrl {
        url: shown,
        reason: reason.to_string(),
    }
}

/// Normalise a node address into the base URL every call uses: `http://host:port`.
///
/// Accepts `host`, `host:port`, `http://host`, `http://host:port`, each with an
/// optional trailing `/`, and bracketed IPv6 (`[::1]:7070`). A missing port is the
/// control-plane default, 7070. Refuses other schemes (`https://`: this client is
/// built without TLS), paths, queries, user info, whitespace, port 0 and over-long
/// input, with [`ClientError::InvalidUrl`].
///
/// ```
/// use control_plane_client::normalize_base_url;
/// assert_eq!(normalize_base_url("1.2.3.4:7070").unwrap(), "http://1.2.3.4:7070");
/// assert_eq!(normalize_base_url("http://node.example/").unwrap(), "http://node.example:7070");
/// assert!(normalize_base_url("https://node.example").is_err());
/// ```
pub fn normalize_base_url(input: &str) -> Result<String, ClientError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(invalid(input, "empty address"));
    }
    if s.len() > MAX_BASE_URL_LEN {
        return Err(invalid(input, "address too long"));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            input,
            "address contains whitespace or control characters",
        ));
    }
    let rest = match s.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("http://") => &s[7..],
        _ => s,
    };
    if rest.contains("://") {
        return Err(invalid(
            input,
            "only http:// is supported (no TLS in this client)",
        ));
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err(invalid(input, "a base URL has no path, query or fragment"));
    }
    if rest.contains('@') {
        return Err(invalid(input, "user info is not supported"));
    }
    let (host, port) = split_host_port(rest).map_err(|r| invalid(input, r))?;
    let port = match port {
        None => DEFAULT_HTTP_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(invalid(input, "port must be 1..=65535")),
            Ok(p) => p,
        },
    };
    Ok(format!("http://{host}:{port}"))
}

/// Longest path prefix of a mirror URL, in bytes.
pub const MAX_MIRROR_PATH_LEN: usize = 128;

/// Normalise a sync mirror's address (`--sync-mirror`): any plain HTTP server or
/// cache in front of a node, so unlike [`normalize_base_url`] a path prefix is
/// allowed and a missing port is HTTP's own, 80.
///
/// Accepts `host`, `host:port`, `http://host[:port]`, each with an optional path
/// prefix (`http://cdn.example/vision`) and trailing `/`. The result is
/// `http://host:port[/prefix]`, to which a route (`/api/block/{hash}`) is
/// appended. Refuses other schemes, queries, fragments, user info, `..` segments,
/// characters outside a URL path's unreserved set and over-long input, with
/// [`ClientError::InvalidUrl`].
///
/// ```
/// use control_plane_client::normalize_mirror_url;
/// assert_eq!(normalize_mirror_url("cdn.example").unwrap(), "http://cdn.example:80");
/// assert_eq!(normalize_mirror_url("http://127.0.0.1:8080/v/").unwrap(), "http://127.0.0.1:8080/v");
/// assert!(normalize_mirror_url("https://cdn.example").is_err());
/// ```
pub fn normalize_mirror_url(input: &str) -> Result<String, ClientError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(invalid(input, "empty address"));
    }
    if s.len() > MAX_BASE_URL_LEN {
        return Err(invalid(input, "address too long"));
    }
    let rest = match s.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("http://") => &s[7..],
        _ => s,
    };
    if rest.contains("://") {
        return Err(invalid(
            input,
            "only http:// is supported (no TLS in this client)",
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if rest.contains(['?', '#']) {
        return Err(invalid(input, "a mirror URL has no query or fragment"));
    }
    let path = path.trim_end_matches('/');
    if path.len() > MAX_MIRROR_PATH_LEN {
        return Err(invalid(input, "path prefix too long"));
    }
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~/%+".contains(&b))
    {
        return Err(invalid(
            input,
            "the path prefix may hold only letters, digits and -._~/%+",
        ));
    }
    if path.split('/').any(|seg| seg == "..") {
        return Err(invalid(input, "the path prefix may not hold `..`"));
    }
    let (_, port) = split_host_port(authority).map_err(|r| invalid(input, r))?;
    let with_port = match port {
        Some(_) => authority.to_string(),
        None => format!("{authority}:80"),
    };
    let base = normalize_base_url(&with_port).map_err(|e| match e {
        ClientError::InvalidUrl { reason, .. } => invalid(input, &reason),
        other => other,
    })?;
    Ok(format!("{base}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        for (i, o) in [
            ("1.2.3.4", "http://1.2.3.4:7070"),
            ("1.2.3.4:7070", "http://1.2.3.4:7070"),
            ("http://1.2.3.4:7071", "http://1.2.3.4:7071"),
            ("HTTP://Node.example:80/", "http://Node.example:80"),
            (" localhost:9 ", "http://localhost:9"),
            ("[::1]:7070", "http://[::1]:7070"),
            ("[::1]", "http://[::1]:7070"),
        ] {
            assert_eq!(normalize_base_url(i).unwrap(), o, "{i}");
        }
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "   ",
            "https://a:1",
            "ftp://a",
            "a:0",
            "a:65536",
            "a:x",
            "a b:1",
            "a:1/api",
            "a:1?x",
            "u@a:1",
            "::1",
            "[::1",
            "[zz]:1",
            "a\u{0}b",
            ":7070",
        ] {
            assert!(normalize_base_url(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_base_url(&"a".repeat(600)).is_err());
    }

    #[test]
    fn mirror_urls_take_a_path_prefix_and_default_to_port_80() {
        for (i, o) in [
            ("cdn.example", "http://cdn.example:80"),
            ("127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
            (
                "HTTP://cdn.example/vision/main/",
                "http://cdn.example:80/vision/main",
            ),
            ("[::1]", "http://[::1]:80"),
            ("http://[::1]:81/a-b_c.d~e", "http://[::1]:81/a-b_c.d~e"),
        ] {
            assert_eq!(normalize_mirror_url(i).unwrap(), o, "{i}");
        }
        for bad in [
            "",
            "https://a",
            "a:0",
            "a:1?x",
            "a:1/p?q",
            "a/#f",
            "u@a:1",
            "a:1/../x",
            "a:1/p q",
            "a:1/p\u{0}",
            "a:1/\"x",
        ] {
            assert!(normalize_mirror_url(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_mirror_url(&format!("a:1/{}", "p".repeat(200))).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_is_idempotent(s in "\\PC{0,40}") {
            if let Ok(n) = normalize_base_url(&s) {
                proptest::prop_assert_eq!(normalize_base_url(&n).unwrap(), n);
            }
            if let Ok(n) = normalize_mirror_url(&s) {
                proptest::prop_assert_eq!(normalize_mirror_url(&n).unwrap(), n);
            }
        }
    }
}
