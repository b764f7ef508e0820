//! Who a request really comes from, behind a reverse proxy.
//!
//! Behind nginx or Caddy every connection comes from the proxy's address, which would put every
//! user under one per-address limit and one line of the log. A proxy says who its client was in
//! `Forwarded: for=…` (RFC 7239) or `X-Forwarded-For`, but anyone can send those headers, so
//! they are read only from a peer in `http.trusted_proxies` (default: loopback), and from the
//! right: each proxy appends the address it got the request from, so the rightmost address that
//! is not itself a trusted proxy is the client. A hop that is not an address (`unknown`, an
//! obfuscated `_name`, garbage) ends the walk: nothing to its left can be trusted, and the last
//! trusted hop stands. `Forwarded` wins over `X-Forwarded-For` when both are present.
//!
//! The same proxies also say which scheme and host the browser used (`proto=` / `host=`, or
//! `X-Forwarded-Proto` / `X-Forwarded-Host`), which the WebSocket's same-origin check needs
//! when TLS ends at the proxy.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

/// The client's address: `peer` itself, unless `peer` is a trusted proxy and its headers name
/// another (see the module docs).
pub(crate) fn client_address(
    peer: SocketAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> SocketAddr {
    if !is_trusted(peer.ip(), trusted) {
        return peer;
    }
    let hops = hops(headers);
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(address) = parse_hop(hop) else {
            break;
        };
        client = address;
        if !is_trusted(address.ip(), trusted) {
            break;
        }
    }
    client
}

/// The scheme (`http`/`https`) and host the browser used, as a trusted proxy reports them;
/// `None` for each that it does not (or when `peer` is not a trusted proxy).
pub(crate) fn proto_and_host(
    peer: SocketAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> (Option<String>, Option<String>) {
    if !is_trusted(peer.ip(), trusted) {
        return (None, None);
    }
    // The element our own proxy added is the last one.
    let last_forwarded = all_values(headers, "forwarded")
        .into_iter()
        .flat_map(|value| split_outside_quotes(&value, ','))
        .last();
    let pair = |name: &str| {
        last_forwarded.as_deref().and_then(|element| {
            split_outside_quotes(element, ';')
                .into_iter()
                .find_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    key.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| unquote(value.trim()).to_ascii_lowercase())
                })
        })
    };
    let last = |header: &str| {
        all_values(headers, header)
            .into_iter()
            .flat_map(|value| {
                value
                    .split(',')
                    .map(|v| v.trim().to_ascii_lowercase())
                    .collect::<Vec<_>>()
            })
            .rfind(|value| !value.is_empty())
    };
    let proto = pair("proto").or_else(|| last("x-forwarded-proto"));
    let host = pair("host").or_else(|| last("x-forwarded-host"));
    (proto, host)
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|net| net.contains(&ip))
}

/// Every value of `name`, in order, as text (values that are not text are skipped).
fn all_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .filter_map(|value| value.to_str().ok())
        .map(str::to_owned)
        .collect()
}

/// The `for=` hops of `Forwarded`, else the addresses of `X-Forwarded-For`, left to right.
fn hops(headers: &HeaderMap) -> Vec<String> {
    let forwarded = all_values(headers, "forwarded");
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|value| split_outside_quotes(value, ','))
            .map(|element| {
                split_outside_quotes(&element, ';')
                    .into_iter()
                    .find_map(|pair| {
                        let (key, value) = pair.split_once('=')?;
                        key.trim()
                            .eq_ignore_ascii_case("for")
                            .then(|| unquote(value.trim()).to_owned())
                    })
                    // An element without `for=` says nothing usable about its hop.
                    .unwrap_or_default()
            })
            .collect();
    }
    all_values(headers, "x-forwarded-for")
        .iter()
        .flat_map(|value| value.split(','))
        .map(|hop| hop.trim().to_owned())
        .collect()
}

/// `text` split at `separator`s that are not inside double quotes.
fn split_outside_quotes(text: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in text.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|value| value.strip_suffix('"'))
        .unwrap_or(value)
}

/// One hop: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:4711`
/// (the port, when absent, is 0); anything else is `None`.
fn parse_hop(hop: &str) -> Option<SocketAddr> {
    let hop = hop.trim();
    if let Some(rest) = hop.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let ip: std::net::Ipv6Addr = ip.parse().ok()?;
        let port = match after {
            "" => 0,
            port => port.strip_prefix(':')?.parse().ok()?,
        };
        return Some(SocketAddr::new(IpAddr::V6(ip), port));
    }
    if let Ok(address) = hop.parse::<SocketAddr>() {
        return Some(address);
    }
    hop.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                HeaderValue::from_str(value).expect("a header value"),
            );
        }
        map
    }

    fn loopback() -> Vec<IpNet> {
        vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn hops_of_every_form_parse() {
        for (hop, expected) in [
            ("192.0.2.1", "192.0.2.1:0"),
            ("192.0.2.1:4711", "192.0.2.1:4711"),
            ("2001:db8::1", "[2001:db8::1]:0"),
            ("[2001:db8::1]", "[2001:db8::1]:0"),
            ("[2001:db8::1]:4711", "[2001:db8::1]:4711"),
            (" 10.0.0.1 ", "10.0.0.1:0"),
        ] {
            assert_eq!(parse_hop(hop), Some(addr(expected)), "{hop}");
        }
        for garbage in [
            "",
            "unknown",
            "_hidden",
            "[2001:db8::1",
            "[2001:db8::1]4711",
            "[192.0.2.1]",
            "192.0.2.1:port",
            "300.1.1.1",
            "<script>",
        ] {
            assert_eq!(parse_hop(garbage), None, "{garbage}");
        }
    }

    #[test]
    fn x_forwarded_for_from_a_trusted_proxy_names_the_rightmost_untrusted_hop() {
        let peer = addr("127.0.0.1:50000");
        let trusted = loopback();
        let map = headers(&[("x-forwarded-for", "198.51.100.7, 203.0.113.9")]);
        assert_eq!(client_address(peer, &map, &trusted), addr("203.0.113.9:0"));
        // Proxies of our own on the way are skipped.
        let map = headers(&[
            ("x-forwarded-for", "198.51.100.7, 203.0.113.9"),
            ("x-forwarded-for", "127.0.0.2"),
        ]);
        assert_eq!(client_address(peer, &map, &trusted), addr("203.0.113.9:0"));
        // Every hop trusted: the leftmost stands.
        let map = headers(&[("x-forwarded-for", "127.0.0.5, 127.0.0.2")]);
        assert_eq!(client_address(peer, &map, &trusted), addr("127.0.0.5:0"));
        // Garbage ends the walk: nothing left of it is believed.
        let map = headers(&[("x-forwarded-for", "198.51.100.7, garbage")]);
        assert_eq!(client_address(peer, &map, &trusted), peer);
        let map = headers(&[("x-forwarded-for", "198.51.100.7, garbage, 127.0.0.3")]);
        assert_eq!(client_address(peer, &map, &trusted), addr("127.0.0.3:0"));
        let map = headers(&[("x-forwarded-for", "")]);
        assert_eq!(client_address(peer, &map, &trusted), peer);
        let map = headers(&[("x-forwarded-for", "2001:db8::7")]);
        assert_eq!(
            client_address(peer, &map, &trusted),
            addr("[2001:db8::7]:0")
        );
    }

    #[test]
    fn forwarded_for_parses_quotes_ipv6_and_ports_and_wins_over_x_forwarded_for() {
        let peer = addr("[::1]:50000");
        let trusted = loopback();
        let map = headers(&[
            (
                "forwarded",
                r#"for=192.0.2.43;proto=http, for="[2001:db8:cafe::17]:4711";proto=https;host=chat.example.org"#,
            ),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        assert_eq!(
            client_address(peer, &map, &trusted),
            addr("[2001:db8:cafe::17]:4711")
        );
        assert_eq!(
            proto_and_host(peer, &map, &trusted),
            (
                Some("https".to_owned()),
                Some("chat.example.org".to_owned())
            )
        );
        let map = headers(&[("forwarded", "For=192.0.2.43, for=unknown")]);
        assert_eq!(client_address(peer, &map, &trusted), peer);
        let map = headers(&[("forwarded", "for=192.0.2.43, by=127.0.0.1")]);
        assert_eq!(
            client_address(peer, &map, &trusted),
            peer,
            "an element without for="
        );
        let map = headers(&[("forwarded", r#"for="_gazonk""#)]);
        assert_eq!(client_address(peer, &map, &trusted), peer);
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let peer = addr("192.0.2.200:50000");
        let map = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("forwarded", "for=198.51.100.8;proto=https"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(client_address(peer, &map, &loopback()), peer);
        assert_eq!(proto_and_host(peer, &map, &loopback()), (None, None));
        // Nothing trusted at all.
        let loopback_peer = addr("127.0.0.1:1");
        assert_eq!(client_address(loopback_peer, &map, &[]), loopback_peer);
    }

    #[test]
    fn x_forwarded_proto_and_host_are_read_from_a_trusted_proxy() {
        let peer = addr("127.0.0.1:50000");
        let map = headers(&[
            ("x-forwarded-proto", "HTTPS"),
            ("x-forwarded-host", "Chat.Example.org"),
        ]);
        assert_eq!(
            proto_and_host(peer, &map, &loopback()),
            (
                Some("https".to_owned()),
                Some("chat.example.org".to_owned())
            )
        );
    }
}
