//! The SSRF guard: image URLs come from outside, so the coordinator must not
//! be talked into fetching from its own network (the instance metadata
//! service at 169.254.169.254, a database on 10.x, localhost…).
//!
//! Every address a host name resolves to is checked by the DNS resolver the
//! HTTP client uses, so the check covers every redirect and cannot be
//! dodged by a name that resolves differently the second time (DNS
//! rebinding); URLs that name an IP address directly are checked before the
//! request and at every redirect.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The special-purpose ranges of IANA's IPv4 and IPv6 registries that are
/// not globally reachable, plus multicast and the transition prefixes that
/// can reach private IPv4 (NAT64 `64:ff9b::/96` does inside an AWS VPC;
/// 6to4 and IPv4-compatible addresses embed one): one table, checked in
/// order (a narrower range before the one holding it). IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are checked as
/// their IPv4 address.
const SPECIAL_RANGES: &[(&str, &str)] = &[
    // IPv4 (RFC 6890 and successors)
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
    // IPv6
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible"),
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
];

/// Why an address is refused: the special-purpose range it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub network: IpNet,
    /// What the range is for ("private", "NAT64", …).
    pub name: &'static str,
}

/// [`SPECIAL_RANGES`], parsed once.
fn special_ranges() -> &'static [Rule] {
    static RANGES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
        SPECIAL_RANGES
            .iter()
            .filter_map(|(network, name)| {
                // Each entry is a literal checked by a test; none fails.
                network.parse().ok().map(|network| Rule { network, name })
            })
            .collect()
    });
    &RANGES
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        self.name
    }

    /// The rule `ip` breaks, if any.
    pub fn broken_by(ip: IpAddr) -> Option<Self> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        special_ranges()
            .iter()
            .find(|rule| rule.network.contains(&ip))
            .copied()
    }
}

/// A refused address, as the error a fetch fails with.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "refused to fetch from {host} ({ip}): {rule} addresses are blocked by the SSRF guard (fetch.allow lets a network through)",
    rule = rule.as_str()
)]
pub struct Refused {
    pub host: String,
    pub ip: IpAddr,
    pub rule: Rule,
}

/// The guard: the rules, and the networks let through anyway.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Vec<IpNet>,
}

impl Guard {
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match Rule::broken_by(ip) {
            Some(rule) => Err(Refused {
                host: host.to_owned(),
                ip,
                rule,
            }),
            None => Ok(()),
        }
    }

    /// Checks a URL whose host is an IP address (the resolver never sees
    /// those); names are checked when they resolve.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            _ => return Ok(()),
        };
        self.check(url.host_str().unwrap_or_default(), ip)
    }

    /// The DNS resolver for the HTTP client: the system's, with every
    /// answer checked. One refused address refuses the name, so a name
    /// cannot mix a public address with a private one.
    pub fn resolver(self: &Arc<Self>) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver {
            guard: Arc::clone(self),
        })
    }
}

#[derive(Debug)]
pub struct GuardedResolver {
    guard: Arc<Guard>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = Arc::clone(&self.guard);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for addr in &addrs {
                guard.check(&host, addr.ip())?;
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The [`Refused`] somewhere in an error's chain of causes.
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(refused) = error.downcast_ref::<Refused>() {
            return Some(refused);
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(ip: &str) -> Option<&'static str> {
        Rule::broken_by(ip.parse().expect("an address")).map(Rule::as_str)
    }

    #[test]
    fn every_entry_of_the_table_parses() {
        assert_eq!(special_ranges().len(), SPECIAL_RANGES.len());
    }

    #[test]
    fn internal_addresses_break_a_named_rule() {
        assert_eq!(rule("127.0.0.1"), Some("loopback"));
        assert_eq!(rule("::1"), Some("loopback"));
        assert_eq!(rule("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(rule("10.1.2.3"), Some("private"));
        assert_eq!(rule("172.16.0.1"), Some("private"));
        assert_eq!(rule("192.168.1.1"), Some("private"));
        assert_eq!(rule("fd00::1"), Some("unique local"));
        assert_eq!(rule("169.254.169.254"), Some("link-local"));
        assert_eq!(rule("fe80::1"), Some("link-local"));
        assert_eq!(rule("224.0.0.1"), Some("multicast"));
        assert_eq!(rule("ff02::1"), Some("multicast"));
        assert_eq!(rule("0.0.0.0"), Some("this network"));
        assert_eq!(rule("::"), Some("unspecified"));
        assert_eq!(rule("255.255.255.255"), Some("broadcast"));
        assert_eq!(rule("100.64.0.1"), Some("shared address space"));
    }

    /// Each entry of the table, reached through a URL as a client would
    /// write it: an address inside it is refused, and `check_url` refuses
    /// it before any request.
    #[test]
    fn each_special_range_is_refused_through_a_real_url() {
        let guard = Guard::default();
        for (network, _) in SPECIAL_RANGES {
            let net: IpNet = network.parse().expect("a network");
            // The range's first address, and one inside it.
            let inside = match net {
                IpNet::V4(v4) => {
                    IpAddr::V4((u32::from(v4.network()) | (u32::from(v4.hostmask()) & 1)).into())
                }
                IpNet::V6(v6) => {
                    IpAddr::V6((u128::from(v6.network()) | (u128::from(v6.hostmask()) & 1)).into())
                }
            };
            let url = match inside {
                IpAddr::V4(v4) => format!("http://{v4}/photo.jpg"),
                IpAddr::V6(v6) => format!("http://[{v6}]/photo.jpg"),
            };
            let url = reqwest::Url::parse(&url).expect("a URL");
            let refused = guard.check_url(&url).expect_err(url.as_str());
            assert!(refused.rule.network.contains(&inside), "{url}: {refused}");
        }
    }

    /// The addresses an attacker writes to slip past a string check: hex,
    /// octal and decimal IPv4, and IPv6 forms that embed IPv4.
    #[test]
    fn disguised_addresses_are_refused() {
        let guard = Guard::default();
        for url in [
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://2130706433/",
            "http://0xa9.0xfe.0xa9.0xfe/",
            "http://[::ffff:7f00:1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[64:ff9b::a00:1]/",
            "http://[::a00:1]/",
            "http://198.18.0.1/",
            "http://[2002:a00:1::]/",
            "http://[fec0::1]/",
            "http://192.0.0.8/",
            "http://240.0.0.1/",
        ] {
            let parsed = reqwest::Url::parse(url).expect("a URL");
            assert!(guard.check_url(&parsed).is_err(), "{url} passed");
        }
    }

    #[test]
    fn the_allowlist_lets_a_network_through_and_nothing_else() {
        let guard = Guard::new(vec!["127.0.0.0/8".parse().expect("a network")]);
        assert!(
            guard
                .check("localhost", "127.0.0.1".parse().expect("ip"))
                .is_ok()
        );
        let refused = guard
            .check("metadata", "169.254.169.254".parse().expect("ip"))
            .expect_err("refused");
        assert_eq!(refused.rule.name, "link-local");
        assert!(refused.to_string().contains("link-local"), "{refused}");
    }
}
