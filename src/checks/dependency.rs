//! Preflight dependency probes (runbook 1.2): TCP connect, HTTP, DNS, and
//! a Service having ready endpoints. Each returns a pass or a failure with
//! the reason; a dependency that cannot be reached fails.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use regex::Regex;

use super::{Measurement, describe_request_error, fmt_duration, parse_http_url};
use crate::api::checks::{DnsProbe, HttpProbe, TcpProbe};

/// How long one probe may take when the caller has no tighter bound.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The host and port a TCP probe connects to: its `host` and `port`, or
/// its `tcp://host:port` URL. IPv6 literals are returned without brackets.
pub fn tcp_target(probe: &TcpProbe) -> Result<(String, u16), String> {
    match (&probe.url, &probe.host, probe.port) {
        (Some(url), None, None) => {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| format!("tcp url {url:?} is not a valid URL: {e}"))?;
            if parsed.scheme() != "tcp" {
                return Err(format!("tcp url {url:?} must start with tcp://"));
            }
            let host = match parsed.host_str() {
                Some(host) if !host.is_empty() => host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                _ => return Err(format!("tcp url {url:?} names no host")),
            };
            let port = parsed
                .port()
                .ok_or_else(|| format!("tcp url {url:?} names no port"))?;
            Ok((host, port))
        }
        (None, Some(host), Some(port)) if !host.is_empty() && port > 0 => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Ok((host.to_owned(), port))
        }
        _ => Err("tcp sets either url, or host and port".to_owned()),
    }
}

/// Connects to the probe's address within `timeout`, then closes.
pub async fn tcp(probe: &TcpProbe, timeout: Duration) -> Measurement {
    let (host, port) = match tcp_target(probe) {
        Ok(target) => target,
        Err(e) => return Measurement::fail(None, e),
    };
    let what = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let started = Instant::now();
    match tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_stream)) => Measurement::pass(
            None,
            format!("connected to {what} in {}", fmt_duration(started.elapsed())),
        ),
        Ok(Err(e)) => Measurement::fail(None, format!("connecting to {what}: {e}")),
        Err(_) => Measurement::fail(
            None,
            format!(
                "connecting to {what}: no connection within {}",
                fmt_duration(timeout)
            ),
        ),
    }
}

/// Requests the probe's URL; passes on an expected status (any 2xx by
/// default) and, when set, a body matching `expectBody`.
pub async fn http(client: &reqwest::Client, probe: &HttpProbe, timeout: Duration) -> Measurement {
    let url = match parse_http_url(&probe.url) {
        Ok(url) => url,
        Err(e) => return Measurement::fail(None, format!("not requesting: {e}")),
    };
    let body_regex = match probe.expect_body.as_deref().map(Regex::new) {
        None => None,
        Some(Ok(regex)) => Some(regex),
        Some(Err(e)) => {
            return Measurement::fail(None, format!("expectBody does not compile: {e}"));
        }
    };
    let what = format!("GET {}", probe.url);
    let response = match client.get(url).timeout(timeout).send().await {
        Ok(response) => response,
        Err(e) => {
            return Measurement::fail(
                None,
                format!("{what}: {}", describe_request_error(&e, timeout)),
            );
        }
    };
    let status = response.status();
    let value = Some(status.as_u16().to_string());
    let healthy = if probe.expect_status.is_empty() {
        status.is_success()
    } else {
        probe.expect_status.contains(&status.as_u16())
    };
    if !healthy {
        let expected = if probe.expect_status.is_empty() {
            "a 2xx status".to_owned()
        } else {
            format!("{:?}", probe.expect_status)
        };
        return Measurement::fail(
            value,
            format!("{what} answered {}, expected {expected}", status.as_u16()),
        );
    }
    let Some(regex) = body_regex else {
        return Measurement::pass(value, format!("{what} answered {}", status.as_u16()));
    };
    match super::http::read_body(response, timeout).await {
        Ok(body) if regex.is_match(&body) => Measurement::pass(
            value,
            format!("{what} answered {} with a matching body", status.as_u16()),
        ),
        Ok(_) => Measurement::fail(
            value,
            format!(
                "{what} answered {}, but the body does not match /{}/",
                status.as_u16(),
                regex.as_str()
            ),
        ),
        Err(e) => Measurement::fail(value, format!("{what}: {e}")),
    }
}

/// Resolves the probe's name (with the system resolver) within `timeout`.
/// The value is the addresses found.
pub async fn dns(probe: &DnsProbe, timeout: Duration) -> Measurement {
    let name = probe.name.trim_end_matches('.');
    if name.is_empty() {
        return Measurement::fail(None, "dns name is empty");
    }
    // lookup_host needs a port; it plays no part in resolution.
    let lookup = tokio::net::lookup_host((name, 0));
    match tokio::time::timeout(timeout, lookup).await {
        Ok(Ok(addresses)) => {
            let addresses: BTreeSet<String> = addresses.map(|a| a.ip().to_string()).collect();
            if addresses.is_empty() {
                Measurement::fail(None, format!("resolving {name}: no addresses"))
            } else {
                let list: Vec<String> = addresses.into_iter().collect();
                let list = list.join(", ");
                Measurement::pass(Some(list.clone()), format!("{name} resolves to {list}"))
            }
        }
        Ok(Err(e)) => Measurement::fail(None, format!("resolving {name}: {e}")),
        Err(_) => Measurement::fail(
            None,
            format!(
                "resolving {name}: no answer within {}",
                fmt_duration(timeout)
            ),
        ),
    }
}

/// Whether a Service's EndpointSlices hold at least `min_ready` ready
/// endpoints. Pure. An endpoint whose `ready` condition is unset counts as
/// ready, as the EndpointSlice API defines; an endpoint listed in two
/// slices (while they are being rebalanced) counts once, by its first
/// address.
pub fn service_ready(service: &str, slices: &[EndpointSlice], min_ready: u32) -> Measurement {
    let ready: BTreeSet<&str> = slices
        .iter()
        .flat_map(|slice| slice.endpoints.iter().flatten())
        .filter(|endpoint| {
            endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true)
        })
        .filter_map(|endpoint| endpoint.addresses.first().map(String::as_str))
        .collect();
    let count = u32::try_from(ready.len()).unwrap_or(u32::MAX);
    let value = Some(count.to_string());
    if count >= min_ready {
        Measurement::pass(
            value,
            format!("Service {service} has {count} ready endpoints (needs {min_ready})"),
        )
    } else {
        Measurement::fail(
            value,
            format!("Service {service} has {count} ready endpoints, needs {min_ready}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Outcome;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};

    fn tcp_probe(url: Option<&str>, host: Option<&str>, port: Option<u16>) -> TcpProbe {
        TcpProbe {
            url: url.map(Into::into),
            host: host.map(Into::into),
            port,
        }
    }

    #[test]
    fn tcp_targets_from_url_or_host_and_port() {
        assert_eq!(
            tcp_target(&tcp_probe(Some("tcp://db.prod:5432"), None, None)),
            Ok(("db.prod".into(), 5432))
        );
        assert_eq!(
            tcp_target(&tcp_probe(Some("tcp://[::1]:6379"), None, None)),
            Ok(("::1".into(), 6379))
        );
        assert_eq!(
            tcp_target(&tcp_probe(None, Some("10.0.0.1"), Some(80))),
            Ok(("10.0.0.1".into(), 80))
        );
        assert!(tcp_target(&tcp_probe(Some("http://db:5432"), None, None)).is_err());
        assert!(
            tcp_target(&tcp_probe(Some("tcp://db"), None, None))
                .unwrap_err()
                .contains("no port")
        );
        assert!(tcp_target(&tcp_probe(None, Some("db"), None)).is_err());
        assert!(tcp_target(&tcp_probe(Some("tcp://db:1"), Some("db"), Some(1))).is_err());
    }

    fn endpoint(address: &str, ready: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec![address.to_owned()],
            conditions: Some(EndpointConditions {
                ready,
                ..EndpointConditions::default()
            }),
            ..Endpoint::default()
        }
    }

    fn slice(endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: Some(endpoints),
            ..EndpointSlice::default()
        }
    }

    #[test]
    fn counts_ready_endpoints_once() {
        let slices = [
            slice(vec![
                endpoint("10.0.0.1", Some(true)),
                endpoint("10.0.0.2", None),
            ]),
            slice(vec![
                endpoint("10.0.0.2", Some(true)),
                endpoint("10.0.0.3", Some(false)),
            ]),
        ];
        let m = service_ready("db", &slices, 2);
        assert_eq!(m.outcome, Outcome::Pass, "{}", m.message);
        assert_eq!(m.value.as_deref(), Some("2"));
        let m = service_ready("db", &slices, 3);
        assert_eq!(m.outcome, Outcome::Fail);
        assert_eq!(m.message, "Service db has 2 ready endpoints, needs 3");
        assert_eq!(service_ready("db", &[], 1).outcome, Outcome::Fail);
    }

    #[tokio::test]
    async fn dns_resolves_localhost_and_fails_on_nonsense() {
        let m = dns(
            &DnsProbe {
                name: "localhost".into(),
            },
            DEFAULT_TIMEOUT,
        )
        .await;
        assert_eq!(m.outcome, Outcome::Pass, "{}", m.message);
        let m = dns(
            &DnsProbe {
                name: "no-such-host.invalid".into(),
            },
            DEFAULT_TIMEOUT,
        )
        .await;
        assert_eq!(m.outcome, Outcome::Fail, "{}", m.message);
        assert!(
            m.message.starts_with("resolving no-such-host.invalid"),
            "{}",
            m.message
        );
    }
}
