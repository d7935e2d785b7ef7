//! Who may call the HTTP intake: an allowlist of networks (`http_allowed_networks`), checked
//! against the client's address, which behind proxies (`http_trusted_proxy_hops`) is read from
//! `X-Forwarded-For`.
//!
//! The address chain is every `X-Forwarded-For` entry in order, then the connection's peer.
//! With N trusted hops, the client is the entry N places left of the peer (the address the
//! outermost trusted proxy saw). With 0 the client is the peer and the header is ignored. A
//! chain shorter than that, or an entry that is not an IP address, is refused: the request did
//! not come through the proxies. Only the proxies may reach the port when N > 0 (a direct
//! caller could otherwise write the header itself): say so in the network policy.

use std::net::IpAddr;

use ipnet::IpNet;

/// The parsed allowlist and proxy depth.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    networks: Vec<IpNet>,
    trusted_hops: usize,
}

impl Allowlist {
    /// From the setting's entries (CIDRs or single addresses); each bad entry is named by its
    /// position.
    pub fn new(entries: &[String], trusted_hops: u32) -> Result<Self, Vec<String>> {
        let mut networks = Vec::new();
        let mut errors = Vec::new();
        for (n, entry) in entries.iter().enumerate() {
            let entry = entry.trim();
            match entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
            {
                Ok(net) => networks.push(net.trunc()),
                Err(_) => errors.push(format!(
                    "entry {} (`{entry}`) is neither a network (`10.0.0.0/8`) nor an address",
                    n + 1
                )),
            }
        }
        if errors.is_empty() {
            Ok(Self {
                networks,
                trusted_hops: trusted_hops as usize,
            })
        } else {
            Err(errors)
        }
    }

    /// The client address of a request from `peer` carrying the `X-Forwarded-For` values
    /// `forwarded`, or why there is none.
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        forwarded: impl Iterator<Item = &'a str>,
    ) -> Result<IpAddr, String> {
        if self.trusted_hops == 0 {
            return Ok(peer);
        }
        let mut chain: Vec<&str> = forwarded
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .collect();
        let peer = peer.to_string();
        chain.push(&peer);
        let Some(index) = chain.len().checked_sub(1 + self.trusted_hops) else {
            return Err(format!(
                "X-Forwarded-For names {} address(es), fewer than the {} trusted proxy hop(s)",
                chain.len() - 1,
                self.trusted_hops
            ));
        };
        let entry = chain[index];
        entry
            .parse()
            .map_err(|_| format!("X-Forwarded-For entry `{entry}` is not an IP address"))
    }

    /// Whether `client` may call: on a listed network, or any address when none is listed.
    pub fn allows(&self, client: IpAddr) -> bool {
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        self.networks.is_empty() || self.networks.iter().any(|net| net.contains(&client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn list(entries: &[&str], hops: u32) -> Allowlist {
        Allowlist::new(
            &entries.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            hops,
        )
        .expect("valid")
    }

    #[test]
    fn networks_and_addresses_match_and_bad_entries_are_named() {
        let l = list(&["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"], 0);
        assert!(l.allows(ip("10.1.2.3")));
        assert!(l.allows(ip("192.168.1.7")));
        assert!(!l.allows(ip("192.168.1.8")));
        assert!(l.allows(ip("2001:db8::1")));
        assert!(
            l.allows(ip("::ffff:10.9.9.9")),
            "IPv4-mapped IPv6 is the IPv4 address"
        );
        assert!(!l.allows(ip("127.0.0.1")));
        assert!(list(&[], 0).allows(ip("127.0.0.1")), "no list: everyone");
        let errors = Allowlist::new(&["10.0.0.0/8".into(), "ten".into()], 0).expect_err("bad");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("entry 2"), "{errors:?}");
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_read_from_the_right_of_the_chain() {
        let peer = ip("10.0.0.2");
        assert_eq!(
            list(&[], 0).client(peer, ["6.6.6.6"].into_iter()),
            Ok(peer),
            "header ignored"
        );
        let one = list(&[], 1);
        assert_eq!(
            one.client(peer, ["6.6.6.6, 203.0.113.9"].into_iter()),
            Ok(ip("203.0.113.9"))
        );
        assert_eq!(
            list(&[], 2).client(peer, ["203.0.113.9", "10.0.0.1"].into_iter()),
            Ok(ip("203.0.113.9")),
            "several header lines are one chain"
        );
        assert!(
            one.client(peer, std::iter::empty()).is_err(),
            "not through the proxy"
        );
        assert!(one.client(peer, ["unknown"].into_iter()).is_err());
    }
}
