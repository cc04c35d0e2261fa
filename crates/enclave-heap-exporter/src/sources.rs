//! Turning configured sources into things the collector reads: in-process enclaves (simulated,
//! or created through the OE SDK) read on blocking threads, and agents (Unix socket, HTTP(S),
//! CCF nodes) read with an async client.

use std::sync::Arc;
use std::time::Duration;

use enclave_heap_host::agent_client::AgentReadError;
use enclave_heap_host::agent_client::{AgentClient, AgentClientOptions, AgentEndpoint};
use enclave_heap_host::agent_protocol::{EnclaveEntry, NODE_MEMORY_PATH, enclave_memory_path};
use enclave_heap_host::{
    AgentSelection, OpenError, ReadFailure, SourceOptions, SourceSpec, open_source_with,
};

use crate::collector::{CollectorSource, Listing};
use crate::config::{Config, SourceDefinition};

/// Most enclaves one listing source may expand to; a longer list is an invalid answer (every
/// enclave becomes a set of series, so the cardinality stays bounded).
pub const MAX_LISTED_ENCLAVES: usize = 256;

/// Opens one configured source.
pub fn open(definition: &SourceDefinition, config: &Config) -> Result<CollectorSource, OpenError> {
    let name = definition.name.as_str();
    match &definition.spec {
        SourceSpec::UnixAgent { url, path, select } => {
            let request_path = match select {
                AgentSelection::Default | AgentSelection::All => NODE_MEMORY_PATH.to_owned(),
                AgentSelection::Named(enclave) => enclave_memory_path(enclave),
            };
            let endpoint = AgentEndpoint::Unix {
                socket: path.clone(),
                path: request_path,
            };
            agent(name, url, endpoint, select, config)
        }
        SourceSpec::HttpAgent { url, select } => {
            let uri = url
                .parse()
                .map_err(|_| OpenError::NotInProcess { url: url.clone() })?;
            agent(name, url, AgentEndpoint::Http { url: uri }, select, config)
        }
        spec => {
            let options = SourceOptions {
                push_max_age: config.source_push_max_age,
            };
            Ok(CollectorSource::blocking(
                name,
                open_source_with(spec, &options)?,
            ))
        }
    }
}

fn agent(
    name: &str,
    url: &str,
    endpoint: AgentEndpoint,
    select: &AgentSelection,
    config: &Config,
) -> Result<CollectorSource, OpenError> {
    let options = AgentClientOptions {
        connect_timeout: config.source_timeout.min(Duration::from_secs(1)),
        total_timeout: config.source_timeout,
        ca_file: config.source_ca_file.clone(),
        ..AgentClientOptions::default()
    };
    let client =
        Arc::new(
            AgentClient::new(endpoint, options).map_err(|cause| OpenError::AgentClient {
                url: url.to_owned(),
                cause,
            })?,
        );
    Ok(match select {
        AgentSelection::All => CollectorSource::listing(name, "agent", move || {
            let client = Arc::clone(&client);
            Box::pin(async move { read_listing(&client).await })
        }),
        AgentSelection::Default | AgentSelection::Named(_) => {
            CollectorSource::asynchronous(name, "agent", move || {
                let client = Arc::clone(&client);
                Box::pin(async move {
                    client
                        .get_memory()
                        .await
                        .map(|report| report.to_snapshot())
                        .map_err(ReadFailure::Agent)
                })
            })
        }
    })
}

async fn read_listing(client: &AgentClient) -> Result<Listing, ReadFailure> {
    let list = client.get_list().await?;
    if list.enclaves.len() > MAX_LISTED_ENCLAVES {
        return Err(invalid(format!(
            "the agent lists {} enclaves; at most {MAX_LISTED_ENCLAVES} are exported",
            list.enclaves.len()
        )));
    }
    let mut listing = Vec::with_capacity(list.enclaves.len());
    for entry in list.enclaves {
        let (enclave, outcome) = match entry {
            EnclaveEntry::Memory(report) => (report.enclave.clone(), Ok(report.to_snapshot())),
            // The agent answered this enclave's request with an error report; as a request of
            // its own it would have been a 503.
            EnclaveEntry::Error(report) => (
                report.enclave.clone(),
                Err(ReadFailure::Agent(AgentReadError::Status {
                    status: 503,
                    error: Some(report),
                })),
            ),
        };
        let enclave = enclave
            .filter(|enclave| enclave_heap_host::agent_protocol::valid_enclave_name(enclave))
            .ok_or_else(|| invalid("a listed enclave has no valid name".to_owned()))?;
        if listing.iter().any(|(seen, _)| *seen == enclave) {
            return Err(invalid(format!("enclave {enclave:?} is listed twice")));
        }
        listing.push((enclave, outcome));
    }
    Ok(listing)
}

fn invalid(message: String) -> ReadFailure {
    ReadFailure::Agent(AgentReadError::InvalidResponse(message))
}
