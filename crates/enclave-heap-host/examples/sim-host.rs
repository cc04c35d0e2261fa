//! `sim-host`: a host process with simulated enclaves behind the agent, standing in for an
//! application that owns real enclaves. Tests, the README and the compose demo run it next to an
//! exporter in sidecar mode.
//!
//! ```text
//! cargo run -p enclave-heap-host --example sim-host -- --socket /tmp/heap.sock --profile sawtooth
//! ```
//!
//! The first enclave is built from `--profile`, `--heap-pages`, `--push`, `--fail` and `--delay`
//! as a `sim:` source URL, so it goes through the same parser and `open_source` as the exporter's
//! `--source`; `--extra NAME=SIMURL` adds more. Once every listener is bound it prints one line,
//! `listening socket=PATH tcp=ADDR` (`none` for a listener not asked for), on stdout; logs go
//! to stderr (`RUST_LOG` filters them, default `info`). SIGTERM or SIGINT stops it cleanly: the
//! socket file is removed and it exits 0. Bad flags: one line on stderr, exit 2; a failure to
//! start (socket in use, ...): one line on stderr, exit 1.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use enclave_heap_host::agent::{
    AgentConfig, AgentEnclave, AgentError, AgentServer, AgentSocket, AllowedPeers,
    SocketDirectoryCheck,
};
use enclave_heap_host::sim::Profile;
use enclave_heap_host::{PromDuration, SourceSpec, open_source};
use tokio::signal::unix::{SignalKind, signal};

/// A host process with simulated enclaves, served by the enclave-heap agent.
#[derive(Debug, Parser)]
#[command(name = "sim-host", version)]
struct Flags {
    /// Unix socket to serve the agent on (its directory must exist).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Serve the agent on this TCP address as well (e.g. 127.0.0.1:0).
    #[arg(long, value_name = "ADDR")]
    tcp: Option<SocketAddr>,
    /// Give the socket mode 0660 and this group (a numeric gid), instead of 0600.
    #[arg(long, value_name = "GID")]
    socket_group: Option<u32>,
    /// Serve only socket peers with this uid (checked with SO_PEERCRED); repeatable. With
    /// --allow-gid, a peer matching either list is served. Default: any peer the socket's mode
    /// lets connect.
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uids: Vec<u32>,
    /// Serve only socket peers whose primary group is this gid; repeatable (see --allow-uid).
    #[arg(long = "allow-gid", value_name = "GID")]
    allow_gids: Vec<u32>,
    /// Refuse a socket directory that any user may write to without the sticky bit, instead of
    /// warning about it (a Kubernetes emptyDir is such a directory).
    #[arg(long)]
    strict_socket_dir: bool,
    /// Name of the first enclave (the one `/node/memory` answers for).
    #[arg(long, value_name = "NAME", default_value = "sim")]
    name: String,
    /// Workload of the first enclave: idle, steady, sawtooth, leak or spike [default: steady].
    #[arg(long, value_name = "PROFILE")]
    profile: Option<Profile>,
    /// Heap size of the first enclave in 4 KiB pages, like NumHeapPages [default: 4096].
    #[arg(long, value_name = "N")]
    heap_pages: Option<usize>,
    /// Have the first enclave push a snapshot by "OCALL" this often (e.g. 1s).
    #[arg(long, value_name = "DURATION")]
    push: Option<PromDuration>,
    /// Make every ECALL of the first enclave fail with this OE result (e.g. OE_OUT_OF_THREADS).
    #[arg(long, value_name = "OE_RESULT", value_parser = oe_result_name)]
    fail: Option<String>,
    /// Make every ECALL of the first enclave take this long (e.g. 3s).
    #[arg(long, value_name = "DURATION")]
    delay: Option<PromDuration>,
    /// Another enclave, as NAME=SIMURL (e.g. b=sim:leak?heap_pages=256); repeatable.
    #[arg(long = "extra", value_name = "NAME=SIMURL")]
    extras: Vec<String>,
}

/// Why the host stopped with an error, and so which exit code it gets.
enum Failure {
    /// The flags cannot work: exit 2, as for clap's own errors.
    Usage(anyhow::Error),
    /// Something failed at run time: exit 1.
    Run(anyhow::Error),
}

fn main() -> ExitCode {
    let flags = match Flags::try_parse() {
        Ok(flags) => flags,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                error.exit();
            }
            // clap's message is several lines; its first says what is wrong.
            let rendered = error.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "sim-host: {} (see --help)",
                first.strip_prefix("error: ").unwrap_or(first)
            );
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(error)) => {
            eprintln!("sim-host: {error:#}");
            ExitCode::from(2)
        }
        Err(Failure::Run(error)) => {
            eprintln!("sim-host: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(flags: Flags) -> Result<(), Failure> {
    if flags.socket.is_none() && flags.tcp.is_none() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "nothing to serve on: give --socket PATH, --tcp ADDR or both"
        )));
    }
    let mut specs = vec![(flags.name.clone(), first_enclave_url(&flags))];
    for extra in &flags.extras {
        let (name, url) = extra.split_once('=').ok_or_else(|| {
            Failure::Usage(anyhow::anyhow!(
                "--extra {extra:?}: expected NAME=SIMURL, e.g. b=sim:leak?heap_pages=256"
            ))
        })?;
        specs.push((name.to_owned(), url.to_owned()));
    }
    let mut enclaves = Vec::with_capacity(specs.len());
    for (name, url) in specs {
        let spec: SourceSpec = url
            .parse()
            .with_context(|| format!("enclave {name:?}"))
            .map_err(Failure::Usage)?;
        let SourceSpec::Simulated { config, .. } = &spec else {
            return Err(Failure::Usage(anyhow::anyhow!(
                "enclave {name:?}: {url:?} is not a sim: URL; sim-host only hosts simulated enclaves"
            )));
        };
        // Reject a bad configuration as a usage error before starting anything.
        config
            .validate()
            .with_context(|| format!("enclave {name:?} ({url})"))
            .map_err(Failure::Usage)?;
        let source = open_source(&spec)
            .with_context(|| format!("enclave {name:?}"))
            .map_err(Failure::Run)?;
        tracing::info!(enclave = %name, %url, "started a simulated enclave");
        enclaves.push(AgentEnclave { name, source });
    }

    // A runtime just for the signals, registered before the agent announces itself so that a
    // signal sent right after the `listening` line is never fatal.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal runtime")
        .map_err(Failure::Run)?;
    let (mut terminate, mut interrupt) = runtime
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })
        .context("cannot install the SIGTERM and SIGINT handlers")
        .map_err(Failure::Run)?;

    let config = AgentConfig {
        socket: flags.socket.map(|path| AgentSocket {
            path,
            group: flags.socket_group,
        }),
        tcp: flags.tcp,
        allowed_peers: AllowedPeers {
            uids: flags.allow_uids,
            gids: flags.allow_gids,
        },
        socket_directory: if flags.strict_socket_dir {
            SocketDirectoryCheck::Strict
        } else {
            SocketDirectoryCheck::Owner
        },
        ..AgentConfig::default()
    };
    let server = AgentServer::start(config, enclaves).map_err(|error| match error {
        AgentError::NoListener
        | AgentError::NoEnclaves
        | AgentError::EnclaveName(_)
        | AgentError::DuplicateEnclave(_)
        | AgentError::PeersOverTcp => Failure::Usage(error.into()),
        // AgentError's message already includes its OS error: do not chain it a second time.
        other => Failure::Run(anyhow::anyhow!("cannot start the agent: {other}")),
    })?;
    let socket = server
        .socket_path()
        .map_or_else(|| "none".to_owned(), |path| path.display().to_string());
    let tcp = server
        .tcp_address()
        .map_or_else(|| "none".to_owned(), |address| address.to_string());
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening socket={socket} tcp={tcp}")
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")
        .map_err(Failure::Run)?;
    drop(stdout);
    tracing::info!(%socket, %tcp, "agent serving; SIGTERM or SIGINT stops it");

    let signal_name = runtime.block_on(async {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    });
    tracing::info!(signal = signal_name, "stopping the agent");
    server.stop();
    tracing::info!("stopped");
    Ok(())
}

/// The `sim:` URL of the first enclave, from its flags; values were checked by their parsers, so
/// none can add a query parameter of its own.
fn first_enclave_url(flags: &Flags) -> String {
    let mut query = Vec::new();
    if let Some(heap_pages) = flags.heap_pages {
        query.push(format!("heap_pages={heap_pages}"));
    }
    if let Some(push) = flags.push {
        query.push(format!("push={push}"));
    }
    if let Some(fail) = &flags.fail {
        query.push(format!("fail={fail}"));
    }
    if let Some(delay) = flags.delay {
        query.push(format!("delay={delay}"));
    }
    let profile = flags.profile.map(|profile| profile.to_string());
    let mut url = format!("sim:{}", profile.as_deref().unwrap_or(""));
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    url
}

/// Accepts what looks like an OE result name; the `sim:` parser then checks that it is one.
fn oe_result_name(value: &str) -> Result<String, String> {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        Ok(value.to_owned())
    } else {
        Err("expected an OE result name such as OE_OUT_OF_THREADS".to_owned())
    }
}
