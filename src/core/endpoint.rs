//! Where bosun may send a credential. A Provider's `spec.endpoint` is checked before any client
//! is built from it, so a refused endpoint is never called:
//!
//! - **Plain `http://`** only to a loopback address (the local simulators), unless the operator
//!   runs with `--allow-plain-http`: a credential never crosses a network in clear text.
//! - **Allowed hosts.** With `--allowed-endpoint-hosts`, only those hosts (exact, or `*.suffix`)
//!   may be called, so a tenant's namespaced Provider cannot point bosun's requests, with its
//!   credential, at cluster-internal addresses. Link-local addresses (`169.254.0.0/16`, where
//!   clouds serve instance metadata, and `fe80::/10`) are refused unless the list names them.

use crate::core::error::ReconcileError;
use crate::core::reason::Reason;
use std::net::IpAddr;

/// The operator's rules for Provider endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// `--allow-plain-http`: `http://` to any host.
    pub allow_plain_http: bool,
    /// `--allowed-endpoint-hosts`: empty means any host.
    pub allowed_hosts: Vec<String>,
}

/// The parts of an endpoint URL the policy looks at.
#[derive(Debug, PartialEq, Eq)]
struct Parsed<'a> {
    scheme: &'a str,
    host: String,
}

/// Splits `scheme://[user@]host[:port][/path]` (pure); `None` when it is not such a URL.
fn parse(endpoint: &str) -> Option<Parsed<'_>> {
    let (scheme, rest) = endpoint.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split_once(']')?.0
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    (!host.is_empty()).then(|| Parsed {
        scheme,
        host: host.trim_end_matches('.').to_ascii_lowercase(),
    })
}

/// The endpoint as messages show it: without a `user:password@` part.
fn shown(endpoint: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let authority = &rest[..end];
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{}", &rest[end..])
        }
        None => endpoint.to_string(),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_link_local(host: &str) -> bool {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_link_local(),
        Ok(IpAddr::V6(ip)) => (ip.segments()[0] & 0xffc0) == 0xfe80,
        Err(_) => false,
    }
}

/// Whether `host` is one of `patterns` (`example.com`, or `*.example.com` for its subdomains).
fn listed(host: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| {
        let p = p.trim().trim_end_matches('.').to_ascii_lowercase();
        match p.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => host == p,
        }
    })
}

impl EndpointPolicy {
    /// Refuses an endpoint bosun may not send `provider`'s credential to, saying what to
    /// change.
    pub fn check(&self, provider: &str, endpoint: &str) -> Result<(), ReconcileError> {
        let refuse = |reason, message: String| Err(ReconcileError::user(reason, message));
        let endpoint = &shown(endpoint);
        let Some(url) = parse(endpoint) else {
            return refuse(
                Reason::EndpointRefused,
                format!("{provider}: spec.endpoint {endpoint:?} is not a URL: use https://<host>[:port][/path]"),
            );
        };
        match url.scheme.to_ascii_lowercase().as_str() {
            "https" => {}
            "http" if self.allow_plain_http || is_loopback(&url.host) => {}
            "http" => {
                return refuse(
                    Reason::EndpointRefused,
                    format!(
                        "{provider}: spec.endpoint {endpoint} is plain http to {}, which is not loopback: bosun never sends a credential in clear text across a network. Use https://, or run the operator with --allow-plain-http",
                        url.host
                    ),
                )
            }
            other => {
                return refuse(
                    Reason::EndpointRefused,
                    format!("{provider}: spec.endpoint {endpoint} uses {other}://: use https://"),
                )
            }
        }
        let named = listed(&url.host, &self.allowed_hosts);
        if !self.allowed_hosts.is_empty() && !named {
            return refuse(
                Reason::EndpointNotAllowed,
                format!(
                    "{provider}: spec.endpoint host {} is not among the operator's --allowed-endpoint-hosts ({}): use one of them, or ask the operator's admin to add it",
                    url.host,
                    self.allowed_hosts.join(", ")
                ),
            );
        }
        if is_link_local(&url.host) && !named {
            return refuse(
                Reason::EndpointNotAllowed,
                format!(
                    "{provider}: spec.endpoint host {} is link-local (where clouds serve instance metadata): bosun does not send credentials there unless --allowed-endpoint-hosts names it",
                    url.host
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(policy: &EndpointPolicy, endpoint: &str) -> String {
        match policy.check("Provider team/p", endpoint) {
            Ok(()) => "ok".into(),
            Err(e) => format!("{}", e.reason()),
        }
    }

    #[test]
    fn urls_split_into_scheme_and_host() {
        let host = |e| parse(e).map(|p| p.host);
        assert_eq!(
            host("https://API.example.com:8443/v1?x=1").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(
            host("http://user:pw@127.0.0.1:18081/api").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(host("http://[::1]:80/").as_deref(), Some("::1"));
        assert_eq!(host("https://example.com.").as_deref(), Some("example.com"));
        assert_eq!(host("example.com"), None);
        assert_eq!(host("https://"), None);
        assert_eq!(host("http://[::1"), None);
    }

    #[test]
    fn endpoints_table() {
        let default = EndpointPolicy::default();
        let plain = EndpointPolicy {
            allow_plain_http: true,
            ..Default::default()
        };
        let listed = EndpointPolicy {
            allowed_hosts: vec!["api.devopness.com".into(), "*.codesphere.com".into()],
            ..Default::default()
        };
        let metadata = EndpointPolicy {
            allowed_hosts: vec!["169.254.169.254".into()],
            ..Default::default()
        };
        let rows = [
            (&default, "https://cloud.codesphere.com/api", "ok"),
            (&default, "http://127.0.0.1:18081/api", "ok"),
            (&default, "http://127.8.0.1:18081/api", "ok"),
            (&default, "http://localhost:18082", "ok"),
            (&default, "http://[::1]:18083", "ok"),
            (&default, "http://10.0.0.7:8080", "EndpointRefused"),
            (&default, "http://api.example.com", "EndpointRefused"),
            (&default, "HTTP://api.example.com", "EndpointRefused"),
            (&default, "ftp://api.example.com", "EndpointRefused"),
            (&default, "api.example.com", "EndpointRefused"),
            (&plain, "http://10.0.0.7:8080", "ok"),
            (
                &default,
                "https://169.254.169.254/latest",
                "EndpointNotAllowed",
            ),
            (
                &plain,
                "http://169.254.169.254/latest",
                "EndpointNotAllowed",
            ),
            (&default, "https://[fe80::1]/", "EndpointNotAllowed"),
            (&metadata, "https://169.254.169.254/latest", "ok"),
            (&listed, "https://api.devopness.com", "ok"),
            (&listed, "https://cloud.codesphere.com/api", "ok"),
            (&listed, "https://codesphere.com", "EndpointNotAllowed"),
            (
                &listed,
                "https://kubernetes.default.svc",
                "EndpointNotAllowed",
            ),
            (
                &listed,
                "https://api.devopness.com.evil.example",
                "EndpointNotAllowed",
            ),
            // Loopback http is still http: the allowlist applies to it too.
            (&listed, "http://127.0.0.1:18081", "EndpointNotAllowed"),
        ];
        for (policy, endpoint, want) in rows {
            assert_eq!(
                verdict(policy, endpoint),
                want,
                "{endpoint} with {policy:?}"
            );
        }
    }

    #[test]
    fn a_refusal_says_what_to_change_and_never_holds_the_credential() {
        let e = EndpointPolicy::default()
            .check("Provider team/p", "http://user:secret@10.0.0.7/api")
            .expect_err("plain http off loopback");
        let text = e.to_string();
        assert!(
            text.contains("Use https://, or run the operator with --allow-plain-http"),
            "{text}"
        );
        assert!(text.contains("Provider team/p"), "{text}");
        assert!(text.contains("http://10.0.0.7/api"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}
