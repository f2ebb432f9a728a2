//! Where an operator webhook may point. An admin registers the URL, but Hilot makes the request
//! from inside the deployment: left unchecked, one admin token (or a stolen one) could aim Hilot
//! at the cloud metadata service, PostgreSQL, Redis or another internal service, and read the
//! answers' status codes from the delivery log. Unless the operator allows it, an endpoint must
//! be reached at a public address: checked when it is registered (an address or `localhost`),
//! again before each delivery, and in the DNS answers the connection uses, so a name that
//! resolves (or is re-pointed, as in DNS rebinding) to an internal address is never connected to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Why a webhook URL is refused.
pub const NOT_PUBLIC: &str =
    "must not point at a loopback, private, link-local or otherwise internal address";

/// Whether the address is reachable on the public internet: not loopback, private, shared
/// (carrier-grade NAT), link-local (the metadata service), unspecified, broadcast, multicast,
/// documentation or reserved. IPv4 addresses mapped or translated into IPv6 are judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // 64:ff9b::/96, NAT64: the IPv4 address in its last 32 bits.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return is_public_v4(Ipv4Addr::new(a, b, c, d));
            }
            // 2002::/16, 6to4: the IPv4 address in bits 16 to 48.
            if s[0] == 0x2002 {
                let [a, b] = s[1].to_be_bytes();
                let [c, d] = s[2].to_be_bytes();
                return is_public_v4(Ipv4Addr::new(a, b, c, d));
            }
            !(v6.is_unspecified()
                || (s[0] == 0x2001 && s[1] == 0) // Teredo, 2001::/32 (an IPv4 address inside)
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local, fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local, fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation, 2001:db8::/32
                || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated), ::/96
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || a == 0 // "this network", 0.0.0.0/8
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || (a == 100 && (b & 0xc0) == 64) // shared address space, 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments, 192.0.0.0/24
        || (a == 198 && (b & 0xfe) == 18) // benchmarking, 198.18.0.0/15
        || a >= 240) // reserved, 240.0.0.0/4
}

/// Whether a URL's host is acceptable before any lookup: an address must be public, and
/// `localhost` (and its subdomains) never resolve anywhere else.
pub fn host_may_be_public(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(v4)) => is_public(IpAddr::V4(v4)),
        Some(Host::Ipv6(v6)) => is_public(IpAddr::V6(v6)),
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name != "localhost" && !name.ends_with(".localhost")
        }
        None => false,
    }
}

/// A name whose every address is internal.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves only to internal addresses")]
pub struct ResolvesInternally(pub String);

/// The system resolver with internal addresses taken out of every answer: the resolver of the
/// webhook client, so the address checked is the address connected to.
pub struct PublicAddressesOnly;

impl Resolve for PublicAddressesOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = found.filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(ResolvesInternally(host)) as _);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// Whether `error`, or any error it wraps, is a refused internal address.
pub fn is_internal_address_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<ResolvesInternally>() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().unwrap())
    }

    #[test]
    fn internal_addresses_are_not_public() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.0.170",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
            "2001:db8::1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(!public(internal), "{internal}");
        }
        for outside in [
            "8.8.8.8",
            "203.177.1.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(public(outside), "{outside}");
        }
    }

    #[test]
    fn hosts_are_judged_before_any_lookup() {
        for refused in [
            "http://127.0.0.1:8080/hook",
            "http://2130706433/hook",
            "http://0x7f.1/hook",
            "http://[::1]/hook",
            "http://localhost/hook",
            "http://LOCALHOST./hook",
            "http://api.localhost/hook",
            "http://169.254.169.254/latest/meta-data",
        ] {
            assert!(
                !host_may_be_public(&Url::parse(refused).unwrap()),
                "{refused}"
            );
        }
        for allowed in ["https://hooks.example.com/x", "http://8.8.8.8/x"] {
            assert!(
                host_may_be_public(&Url::parse(allowed).unwrap()),
                "{allowed}"
            );
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_an_internal_address_is_never_connected_to() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = reqwest::Client::builder()
            .dns_resolver(std::sync::Arc::new(PublicAddressesOnly))
            .build()
            .unwrap();
        let error = client
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .expect_err("connected to localhost");
        assert!(is_internal_address_error(&error), "{error:?}");
        // Nothing reached the listener.
        let accepted =
            tokio::time::timeout(std::time::Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err());
    }
}
