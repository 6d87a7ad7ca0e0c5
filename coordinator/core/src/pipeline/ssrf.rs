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
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Loopback,
    Private,
    LinkLocal,
    Multicast,
    Unspecified,
    Broadcast,
    /// 100.64.0.0/10, carrier-grade NAT: private in all but name.
    SharedAddressSpace,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::Multicast => "multicast",
            Self::Unspecified => "unspecified",
            Self::Broadcast => "broadcast",
            Self::SharedAddressSpace => "shared address space",
        }
    }

    /// The rule `ip` breaks, if any.
    pub fn broken_by(ip: IpAddr) -> Option<Self> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => {
                let [a, b, ..] = v4.octets();
                if v4.is_loopback() {
                    Some(Self::Loopback)
                } else if v4.is_private() {
                    Some(Self::Private)
                } else if v4.is_link_local() {
                    Some(Self::LinkLocal)
                } else if v4.is_multicast() {
                    Some(Self::Multicast)
                } else if v4.is_unspecified() || a == 0 {
                    Some(Self::Unspecified)
                } else if v4.is_broadcast() {
                    Some(Self::Broadcast)
                } else if a == 100 && (64..128).contains(&b) {
                    Some(Self::SharedAddressSpace)
                } else {
                    None
                }
            }
            IpAddr::V6(v6) => {
                if v6.is_loopback() {
                    Some(Self::Loopback)
                } else if v6.is_unique_local() {
                    Some(Self::Private)
                } else if v6.is_unicast_link_local() {
                    Some(Self::LinkLocal)
                } else if v6.is_multicast() {
                    Some(Self::Multicast)
                } else if v6.is_unspecified() {
                    Some(Self::Unspecified)
                } else {
                    None
                }
            }
        }
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
    fn internal_addresses_break_a_named_rule() {
        assert_eq!(rule("127.0.0.1"), Some("loopback"));
        assert_eq!(rule("::1"), Some("loopback"));
        assert_eq!(rule("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(rule("10.1.2.3"), Some("private"));
        assert_eq!(rule("172.16.0.1"), Some("private"));
        assert_eq!(rule("192.168.1.1"), Some("private"));
        assert_eq!(rule("fd00::1"), Some("private"));
        assert_eq!(rule("169.254.169.254"), Some("link-local"));
        assert_eq!(rule("fe80::1"), Some("link-local"));
        assert_eq!(rule("224.0.0.1"), Some("multicast"));
        assert_eq!(rule("ff02::1"), Some("multicast"));
        assert_eq!(rule("0.0.0.0"), Some("unspecified"));
        assert_eq!(rule("::"), Some("unspecified"));
        assert_eq!(rule("255.255.255.255"), Some("broadcast"));
        assert_eq!(rule("100.64.0.1"), Some("shared address space"));
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:2800:220:1::1",
            "100.128.0.1",
        ] {
            assert_eq!(rule(ip), None, "{ip}");
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
        assert_eq!(refused.rule, Rule::LinkLocal);
        assert!(refused.to_string().contains("link-local"), "{refused}");
    }
}
