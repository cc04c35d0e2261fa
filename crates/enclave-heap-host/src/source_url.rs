//! Source URLs (`--source NAME=URL`): what each scheme means and how its parts are checked.
//!
//! | URL | source |
//! |---|---|
//! | `sim:` / `sim:PROFILE?heap_pages=N&period=D&seed=N&fail=OE_NAME&delay=D&push=D` | simulated enclave |
//! | `oe:///path/enclave.signed?simulate=1&debug=1` | a real enclave this process creates |
//! | `unix:///path/to.sock` | the default enclave of an agent on a Unix socket (`GET /node/memory`) |
//! | `unix:///path/to.sock?enclave=NAME` | enclave `NAME` of that agent (`GET /enclaves/NAME/memory`) |
//! | `unix:///path/to.sock?enclave=*` | every enclave of that agent (`GET /enclaves`), expanded |
//! | `http://host:port/path`, `https://...` | the `/node/memory` JSON at that URL (our agent over TCP, a CCF node); the path `/enclaves` expands to every enclave |
//!
//! Every error names the URL and the part that is wrong, and says what would be accepted.

use std::path::PathBuf;
use std::str::FromStr;

use enclave_heap_sim::{Profile, SimConfig};
use openenclave_sys::{OE_OK, OE_RESULT_NAMES, oe_result_from_name};

use crate::duration::PromDuration;

/// A parsed source URL.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// `sim:...`: a simulated enclave in this process.
    Simulated {
        /// The URL as given.
        url: String,
        /// The simulated enclave's configuration.
        config: SimConfig,
    },
    /// `oe:///path?...`: a real Open Enclave enclave that this process creates.
    OpenEnclave {
        /// The URL as given.
        url: String,
        /// How to create the enclave.
        config: OeEnclaveConfig,
    },
    /// `unix:///path[?enclave=NAME|*]`: an agent on a Unix socket.
    UnixAgent {
        /// The URL as given.
        url: String,
        /// The socket path.
        path: PathBuf,
        /// Which of the agent's enclaves to read.
        select: AgentSelection,
    },
    /// `http(s)://...`: an agent or CCF node serving the `/node/memory` JSON.
    HttpAgent {
        /// The URL as given.
        url: String,
        /// Which enclaves: [`AgentSelection::All`] when the path is `/enclaves`, otherwise the
        /// report at the URL ([`AgentSelection::Default`]).
        select: AgentSelection,
    },
}

/// Which enclaves of an agent a source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentSelection {
    /// The agent's default enclave (`/node/memory`), or the report at an HTTP URL.
    Default,
    /// One named enclave (`/enclaves/NAME/memory`).
    Named(String),
    /// Every enclave the agent serves (`/enclaves`), each exported as `SOURCE/ENCLAVE`.
    All,
}

/// How to create a real enclave (`oe:///path?simulate=1&debug=1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OeEnclaveConfig {
    /// The signed enclave image.
    pub path: PathBuf,
    /// Create it with `OE_ENCLAVE_FLAG_SIMULATE` (no SGX driver needed).
    pub simulate: bool,
    /// Create it with `OE_ENCLAVE_FLAG_DEBUG`.
    pub debug: bool,
}

/// A source URL that cannot be used, with the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("source URL {url:?}: {problem}")]
pub struct SourceUrlError {
    url: String,
    problem: String,
}

impl SourceSpec {
    /// The URL as it was given.
    pub fn url(&self) -> &str {
        match self {
            SourceSpec::Simulated { url, .. }
            | SourceSpec::OpenEnclave { url, .. }
            | SourceSpec::UnixAgent { url, .. }
            | SourceSpec::HttpAgent { url, .. } => url,
        }
    }
}

impl FromStr for SourceSpec {
    type Err = SourceUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let fail = |problem: String| SourceUrlError {
            url: url.to_owned(),
            problem,
        };
        let (scheme, rest) = url.split_once(':').ok_or_else(|| {
            fail("no scheme; expected sim:, oe:///path, unix:///path, http:// or https://".into())
        })?;
        match scheme {
            "sim" => parse_sim(rest)
                .map_err(fail)
                .map(|config| SourceSpec::Simulated {
                    url: url.to_owned(),
                    config,
                }),
            "oe" => parse_oe(rest)
                .map_err(fail)
                .map(|config| SourceSpec::OpenEnclave {
                    url: url.to_owned(),
                    config,
                }),
            "unix" => {
                let (path, query) = split_absolute_path("unix", rest).map_err(fail)?;
                let mut select = AgentSelection::Default;
                for (key, value) in query_pairs(query).map_err(fail)? {
                    match (key, value) {
                        ("enclave", "*") => select = AgentSelection::All,
                        ("enclave", name) if crate::agent_protocol::valid_enclave_name(name) => {
                            select = AgentSelection::Named(name.to_owned());
                        }
                        ("enclave", name) => {
                            return Err(fail(format!(
                                "enclave={name:?}: expected * or a name of 1-64 characters of A-Z a-z 0-9 _ - . :"
                            )));
                        }
                        (other, _) => {
                            return Err(fail(format!(
                                "unknown parameter {other:?}; expected enclave"
                            )));
                        }
                    }
                }
                Ok(SourceSpec::UnixAgent {
                    url: url.to_owned(),
                    path,
                    select,
                })
            }
            "http" | "https" => {
                let after = rest.strip_prefix("//").unwrap_or("");
                let host = after.split(['/', '?']).next().unwrap_or("");
                if host.is_empty() {
                    return Err(fail(format!("expected {scheme}://host:port/path")));
                }
                let path = after[host.len()..].split('?').next().unwrap_or("");
                let select = if path == crate::agent_protocol::ENCLAVES_PATH {
                    AgentSelection::All
                } else {
                    AgentSelection::Default
                };
                Ok(SourceSpec::HttpAgent {
                    url: url.to_owned(),
                    select,
                })
            }
            other => Err(fail(format!(
                "unknown scheme {other:?}; expected sim, oe, unix, http or https"
            ))),
        }
    }
}

fn parse_sim(rest: &str) -> Result<SimConfig, String> {
    let (profile, query) = match rest.split_once('?') {
        Some((profile, query)) => (profile, Some(query)),
        None => (rest, None),
    };
    let mut config = SimConfig::default();
    if !profile.is_empty() {
        config.profile = profile.parse::<Profile>().map_err(|_| {
            format!(
                "unknown profile {profile:?}; expected one of {}",
                Profile::ALL.map(|p| p.to_string()).join(", ")
            )
        })?;
    }
    for (key, value) in query_pairs(query)? {
        match key {
            "heap_pages" => {
                config.heap_pages = value.parse().map_err(|_| {
                    format!("heap_pages={value:?} is not a whole number of 4 KiB pages")
                })?;
            }
            "period" => config.period = duration(key, value)?,
            "seed" => {
                config.seed = value
                    .parse()
                    .map_err(|_| format!("seed={value:?} is not a whole number"))?;
            }
            "fail" => {
                // `OE_RESULT_<n>` names a code without a name (as newer SDKs may return), the
                // way such codes are shown and labelled.
                let unnamed = value
                    .strip_prefix("OE_RESULT_")
                    .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|digits| digits.parse::<u32>().ok());
                let result = oe_result_from_name(value).or(unnamed).ok_or_else(|| {
                    format!(
                        "fail={value:?} is not an OE result name; expected one of {}, or OE_RESULT_<n> for a code without a name",
                        OE_RESULT_NAMES[1..].join(", ")
                    )
                })?;
                if result == OE_OK {
                    return Err("fail=OE_OK is not a failure; leave fail out instead".into());
                }
                config.fail = Some(result);
            }
            "delay" => config.delay = Some(duration(key, value)?),
            "push" => config.push = Some(duration(key, value)?),
            other => {
                return Err(format!(
                    "unknown parameter {other:?}; expected heap_pages, period, seed, fail, delay or push"
                ));
            }
        }
    }
    Ok(config)
}

fn parse_oe(rest: &str) -> Result<OeEnclaveConfig, String> {
    let (path, query) = split_absolute_path("oe", rest)?;
    let mut config = OeEnclaveConfig {
        path,
        simulate: false,
        debug: false,
    };
    for (key, value) in query_pairs(query)? {
        let flag = match value {
            "1" | "true" => true,
            "0" | "false" => false,
            _ => return Err(format!("{key}={value:?}: expected 1, 0, true or false")),
        };
        match key {
            "simulate" => config.simulate = flag,
            "debug" => config.debug = flag,
            other => {
                return Err(format!(
                    "unknown parameter {other:?}; expected simulate or debug"
                ));
            }
        }
    }
    Ok(config)
}

/// Splits `//` + absolute path + optional query, as in `unix:///run/app.sock`.
fn split_absolute_path<'a>(
    scheme: &str,
    rest: &'a str,
) -> Result<(PathBuf, Option<&'a str>), String> {
    let usage =
        || format!("expected {scheme}:///absolute/path (an empty host and an absolute path)");
    let after = rest.strip_prefix("//").ok_or_else(usage)?;
    if !after.starts_with('/') {
        return Err(usage());
    }
    let (path, query) = match after.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (after, None),
    };
    if path.len() < 2 {
        return Err(usage());
    }
    Ok((PathBuf::from(percent_decode(path)?), query))
}

/// `key=value` pairs of a query; a key may appear once.
fn query_pairs(query: Option<&str>) -> Result<Vec<(&str, &str)>, String> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for part in query
        .unwrap_or("")
        .split('&')
        .filter(|part| !part.is_empty())
    {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("query part {part:?} is not key=value"))?;
        if pairs.iter().any(|(seen, _)| *seen == key) {
            return Err(format!("parameter {key:?} is given twice"));
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

fn duration(key: &str, value: &str) -> Result<std::time::Duration, String> {
    value
        .parse::<PromDuration>()
        .map(Into::into)
        .map_err(|err| format!("{key}: {err}"))
}

fn percent_decode(input: &str) -> Result<String, String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = input
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("bad percent escape at byte {i} of the path"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the path is not UTF-8 after percent-decoding".into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openenclave_sys::OE_OUT_OF_THREADS;

    use super::*;

    fn sim(url: &str) -> SimConfig {
        match url.parse::<SourceSpec>() {
            Ok(SourceSpec::Simulated { config, .. }) => config,
            other => panic!("{url}: {other:?}"),
        }
    }

    fn error(url: &str) -> String {
        url.parse::<SourceSpec>().unwrap_err().to_string()
    }

    #[test]
    fn sim_defaults_and_parameters() {
        assert_eq!(sim("sim:"), SimConfig::default());
        let config =
            sim("sim:leak?heap_pages=256&period=10s&seed=7&fail=OE_OUT_OF_THREADS&delay=200ms");
        assert_eq!(config.profile, Profile::Leak);
        assert_eq!(config.heap_pages, 256);
        assert_eq!(config.period, Duration::from_secs(10));
        assert_eq!(config.seed, 7);
        assert_eq!(config.fail, Some(OE_OUT_OF_THREADS));
        assert_eq!(config.delay, Some(Duration::from_millis(200)));
        assert_eq!(sim("sim:?heap_pages=64").heap_pages, 64);
        assert_eq!(sim("sim:spike").profile, Profile::Spike);
    }

    #[test]
    fn sim_errors_name_the_bad_part() {
        assert!(error("sim:lek").contains("unknown profile \"lek\"; expected one of idle, steady"));
        assert!(error("sim:?heap_pages=lots").contains("heap_pages=\"lots\""));
        assert!(error("sim:?delay=5").contains("delay: invalid duration \"5\""));
        assert!(error("sim:?fail=OE_NOPE").contains("fail=\"OE_NOPE\" is not an OE result name"));
        assert!(error("sim:?fail=OE_OK").contains("not a failure"));
        assert!(error("sim:?fail=OE_RESULT_0").contains("not a failure"));
        assert!(error("sim:?fail=OE_RESULT_").contains("is not an OE result name"));
        assert!(error("sim:?fail=OE_RESULT_+1").contains("is not an OE result name"));
        assert!(error("sim:?fail=OE_RESULT_99999999999").contains("is not an OE result name"));
        assert_eq!(sim("sim:?fail=OE_RESULT_4242").fail, Some(4242));
        assert_eq!(sim("sim:?fail=OE_RESULT_6").fail, Some(OE_OUT_OF_THREADS));
        assert!(error("sim:?colour=red").contains("unknown parameter \"colour\""));
        assert!(error("sim:?seed=1&seed=2").contains("\"seed\" is given twice"));
        assert!(error("sim:?seed").contains("not key=value"));
    }

    #[test]
    fn oe_urls() {
        let spec: SourceSpec = "oe:///opt/app/enclave.signed?simulate=1&debug=true"
            .parse()
            .unwrap();
        assert_eq!(
            spec,
            SourceSpec::OpenEnclave {
                url: "oe:///opt/app/enclave.signed?simulate=1&debug=true".into(),
                config: OeEnclaveConfig {
                    path: "/opt/app/enclave.signed".into(),
                    simulate: true,
                    debug: true,
                },
            }
        );
        let spec: SourceSpec = "oe:///my%20enclave.signed".parse().unwrap();
        assert!(
            matches!(spec, SourceSpec::OpenEnclave { config, .. } if config.path == std::path::Path::new("/my enclave.signed") && !config.simulate)
        );
        assert!(error("oe://host/enclave").contains("expected oe:///absolute/path"));
        assert!(error("oe:relative").contains("expected oe:///absolute/path"));
        assert!(error("oe:///e?simulate=yes").contains("simulate=\"yes\""));
        assert!(error("oe:///e?sgx=1").contains("unknown parameter \"sgx\""));
        assert!(error("oe:///e%zz").contains("bad percent escape"));
    }

    #[test]
    fn agent_urls_and_unknown_schemes() {
        assert!(
            matches!("unix:///run/app/heap.sock".parse(), Ok(SourceSpec::UnixAgent { path, .. }) if path == std::path::Path::new("/run/app/heap.sock"))
        );
        assert!(matches!(
            "http://127.0.0.1:8080/node/memory".parse(),
            Ok(SourceSpec::HttpAgent { .. })
        ));
        assert!(matches!(
            "https://node:443/node/memory".parse(),
            Ok(SourceSpec::HttpAgent { .. })
        ));
        assert!(error("unix://relative.sock").contains("expected unix:///absolute/path"));
        assert!(error("http:///nohost").contains("expected http://host:port/path"));
        assert!(error("ftp://x").contains("unknown scheme \"ftp\""));
        assert!(error("just-a-name").contains("no scheme"));
    }
}
