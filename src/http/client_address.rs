//! Who is asking: the peer address, or behind a trusted load balancer the client it forwarded.

use std::net::IpAddr;

use actix_web::HttpRequest;

/// The client's address: the peer's, unless the peer is a trusted proxy, in which case the
/// last `X-Forwarded-For` entry that is not a trusted proxy (entries left of it could be
/// written by the client, so they are never believed).
pub fn client_address(req: &HttpRequest, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let peer = req.peer_addr().map(|a| a.ip())?;
    if !trusted_proxies.contains(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|entry| entry.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|address| !trusted_proxies.contains(address))
            .unwrap_or(peer),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn request(peer: &str, forwarded: Option<&str>) -> HttpRequest {
        let mut builder = TestRequest::default().peer_addr(format!("{peer}:4000").parse().unwrap());
        if let Some(value) = forwarded {
            builder = builder.insert_header(("x-forwarded-for", value));
        }
        builder.to_http_request()
    }

    #[test]
    fn a_trusted_proxy_speaks_for_its_client_and_no_one_else_does() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let direct = request("203.0.113.9", Some("198.51.100.7"));
        assert_eq!(
            client_address(&direct, &[proxy]),
            Some("203.0.113.9".parse().unwrap())
        );
        // The client wrote the first entry itself; the proxy appended the real one.
        let proxied = request("10.0.0.1", Some("1.2.3.4, 198.51.100.7"));
        assert_eq!(
            client_address(&proxied, &[proxy]),
            Some("198.51.100.7".parse().unwrap())
        );
        let bare = request("10.0.0.1", None);
        assert_eq!(client_address(&bare, &[proxy]), Some(proxy));
    }
}
