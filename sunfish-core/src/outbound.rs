//! The outbound policy: every URL the service connects to (event destinations, agents) must be
//! allowed by `outbound.allow`, a list of CIDR blocks and host names. Host names are matched as
//! written (`agent1.lab`, or `*.lab` for any name below `lab`), never resolved first, so an
//! allowed name is an explicit operator decision and an IP literal is checked against the CIDRs.
//! The default allows loopback only.

use std::net::IpAddr;

use ipnet::IpNet;
use url::{Host, Url};

/// One allowed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Net(IpNet),
    Name(String),
    Suffix(String),
}

/// Which hosts the service may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundPolicy {
    rules: Vec<Rule>,
}

impl Default for OutboundPolicy {
    fn default() -> Self {
        Self::loopback()
    }
}

impl OutboundPolicy {
    /// Loopback only: `127.0.0.0/8`, `::1/128`, `localhost`.
    pub fn loopback() -> Self {
        Self::parse(&["127.0.0.0/8", "::1/128", "localhost"]).unwrap_or(OutboundPolicy { rules: Vec::new() })
    }

    /// Builds a policy from entries: CIDR blocks (`10.0.0.0/8`), single addresses, host names,
    /// or `*.suffix` wildcards.
    ///
    /// # Errors
    /// The first entry that is none of those, with the reason.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut rules = Vec::new();
        for e in entries {
            let e = e.as_ref().trim();
            if let Ok(net) = e.parse::<IpNet>() {
                rules.push(Rule::Net(net));
            } else if let Ok(ip) = e.parse::<IpAddr>() {
                rules.push(Rule::Net(IpNet::from(ip)));
            } else if let Some(suffix) = e.strip_prefix("*.") {
                if suffix.is_empty() || suffix.contains('/') {
                    return Err(format!("bad wildcard host {e:?}"));
                }
                rules.push(Rule::Suffix(suffix.to_ascii_lowercase()));
            } else if !e.is_empty() && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
                rules.push(Rule::Name(e.to_ascii_lowercase()));
            } else {
                return Err(format!("{e:?} is neither a CIDR block, an address nor a host name"));
            }
        }
        Ok(OutboundPolicy { rules })
    }

    /// Checks an `http(s)` URL; returns it parsed.
    ///
    /// # Errors
    /// A reason fit for a client: not a URL, not http(s), credentials in the URL, or a host the
    /// policy does not allow.
    pub fn check(&self, url: &str) -> Result<Url, String> {
        let u = Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if u.scheme() != "http" && u.scheme() != "https" {
            return Err(format!("{url:?} must be an http or https URL"));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err("credentials in the URL are not accepted".into());
        }
        let allowed = match u.host() {
            Some(Host::Ipv4(ip)) => self.allows_ip(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.allows_ip(IpAddr::V6(ip)),
            Some(Host::Domain(name)) => self.allows_name(name),
            None => false,
        };
        if allowed {
            Ok(u)
        } else {
            Err(format!("host of {url:?} is not allowed by outbound.allow"))
        }
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        self.rules.iter().any(|r| matches!(r, Rule::Net(n) if n.contains(&ip)))
    }

    fn allows_name(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.rules.iter().any(|r| match r {
            Rule::Name(n) => *n == name,
            Rule::Suffix(s) => name.ends_with(&format!(".{s}")),
            Rule::Net(_) => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default allows loopback and nothing else.
    #[test]
    fn default_is_loopback() {
        let p = OutboundPolicy::default();
        assert!(p.check("http://127.0.0.1:9000/x").is_ok());
        assert!(p.check("http://127.5.5.5/").is_ok());
        assert!(p.check("http://[::1]:80/").is_ok());
        assert!(p.check("http://localhost:8/").is_ok());
        assert!(p.check("http://10.0.0.1/").is_err());
        assert!(p.check("http://example.com/").is_err());
        assert!(p.check("ftp://127.0.0.1/").is_err());
        assert!(p.check("http://u:p@127.0.0.1/").is_err());
        assert!(p.check("not a url").is_err());
    }

    /// CIDRs, names and wildcards.
    #[test]
    fn rules() {
        let p = OutboundPolicy::parse(&["10.1.0.0/16", "agent1.lab", "*.fabric.local"]).unwrap();
        assert!(p.check("https://10.1.2.3/").is_ok());
        assert!(p.check("https://10.2.0.1/").is_err());
        assert!(p.check("http://AGENT1.lab:5000/").is_ok());
        assert!(p.check("http://sw1.fabric.local/").is_ok());
        assert!(p.check("http://fabric.local/").is_err());
        assert!(OutboundPolicy::parse(&["not valid!"]).is_err());
    }
}
