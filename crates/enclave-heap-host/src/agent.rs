//! The agent: serves one host process's enclaves to a sidecar exporter over HTTP/1.1 on a Unix
//! socket (and optionally TCP), in the [`agent_protocol`](crate::agent_protocol) format.
//!
//! The exporter in a sidecar container cannot ECALL into another process's enclave, so the host
//! process that owns the enclave answers for it. [`AgentServer::start`] runs the agent on its own
//! thread with its own small runtime, so a C or C++ host needs nothing but a call to start it
//! (see the C ABI in [`crate::capi`]).
//!
//! Reads follow the exporter's rules (see [`crate::coalesce`]): one read in flight per enclave,
//! at most one per `min_interval`, each request bounded by `timeout`, so a storm of requests
//! never becomes a storm of ECALLs.
//!
//! The socket is created with mode 0600 (0660 when a group is given, owned by that group). It is
//! bound under a temporary name, given its mode and group, then linked into place, so the path
//! never exists with looser permissions and a socket that appears meanwhile is never clobbered. A
//! stale socket left by a dead process (connecting is refused) is replaced; a live one
//! (something answers on it) is an error, and so is one we cannot probe. The file is removed when
//! the agent stops or is dropped, if it is still ours.
//!
//! # Who may connect
//! - **The directory** is checked before binding ([`SocketDirectoryCheck`]). A directory owned by
//!   another user than the agent's (or root) is refused: its owner could replace the socket with
//!   one of their own at any time, so a sidecar would read figures from an impostor. A directory
//!   that others may write to without the sticky bit (`/tmp` has it) allows the same to anyone:
//!   [`SocketDirectoryCheck::Strict`] refuses it, the default [`SocketDirectoryCheck::Owner`]
//!   logs a warning, because that is how Kubernetes creates `emptyDir` volumes (mode 0777, or
//!   2777 with an `fsGroup`), where only the pod's own containers can reach the directory.
//! - **The file mode** (0600, or 0660 and a group) is the first gate: the kernel checks it at
//!   `connect`, against every group of the peer, supplementary ones included.
//! - **The peer's credentials** (`SO_PEERCRED`: the uid and primary gid it connected with) are the
//!   second, optional gate: with [`AgentConfig::allowed_peers`] set, a peer whose uid is not
//!   listed and whose gid is not listed gets `403 Forbidden` and its connection is closed; the
//!   refusal is logged once per (uid, gid), for at most [`MAX_LOGGED_REFUSED_PEERS`] of them. The
//!   lists are empty by default, admitting any peer the file mode admits: `SO_PEERCRED` reports
//!   only the primary group, so a default of "our uid and the socket's group" would refuse the
//!   usual sidecar, which reaches a 0660 socket through a supplementary group (a pod's
//!   `fsGroup`). TCP has no peer credentials, so allowed peers and a TCP listener together are
//!   refused at start.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::oneshot;

use crate::agent_protocol::{
    ENCLAVES_PATH, EnclaveEntry, EnclaveList, ErrorReport, MemoryReport, NODE_MEMORY_PATH,
    ReportOrigin,
};
use crate::coalesce::{Coalescer, ReadPolicy, read_blocking};
use crate::error::ReadFailure;
use crate::http_server::{self, Listener, Peer, ServeOptions, UnixPeer};
use crate::snapshot::{HeapSnapshot, SnapshotOrigin};
use crate::source::HeapSource;

/// Where and how the agent serves.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Unix socket to serve on, if any.
    pub socket: Option<AgentSocket>,
    /// A TCP address to serve on as well, if any (e.g. `127.0.0.1:0`).
    pub tcp: Option<SocketAddr>,
    /// Timeout and minimum interval of enclave reads.
    pub policy: ReadPolicy,
    /// Which peers of the Unix socket are served, by their `SO_PEERCRED` credentials. Empty (the
    /// default): every peer the socket's file mode lets connect.
    pub allowed_peers: AllowedPeers,
    /// How the socket's directory is checked before binding.
    pub socket_directory: SocketDirectoryCheck,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            socket: None,
            tcp: None,
            policy: DEFAULT_AGENT_POLICY,
            allowed_peers: AllowedPeers::default(),
            socket_directory: SocketDirectoryCheck::default(),
        }
    }
}

/// The peers of the agent's Unix socket that are served: a peer is admitted when its uid is in
/// `uids` or its gid in `gids`. Both empty: every peer (the file mode still applies).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedPeers {
    /// User ids admitted.
    pub uids: Vec<u32>,
    /// Group ids admitted, compared with the peer's primary group (the only one `SO_PEERCRED`
    /// reports; supplementary groups count for the file mode only).
    pub gids: Vec<u32>,
}

impl AllowedPeers {
    /// True when no list is set and every peer is admitted.
    pub fn is_unrestricted(&self) -> bool {
        self.uids.is_empty() && self.gids.is_empty()
    }

    /// Whether a peer with these credentials is served.
    pub fn admits(&self, peer: &UnixPeer) -> bool {
        self.is_unrestricted() || self.uids.contains(&peer.uid) || self.gids.contains(&peer.gid)
    }
}

/// How the directory of the agent's socket is checked before binding (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SocketDirectoryCheck {
    /// Refuse a directory owned by another user than the agent's or root; warn about one that
    /// others may write to without the sticky bit (a Kubernetes `emptyDir` is one).
    #[default]
    Owner,
    /// Refuse both: for hosts where the directory is shared with other local users.
    Strict,
}

/// At most this many refused (uid, gid) pairs are remembered, so that each is logged once;
/// refusals beyond them are logged at debug level.
pub const MAX_LOGGED_REFUSED_PEERS: usize = 256;

/// The agent's default read policy: answer within 2 s, read each enclave at most once a second.
pub const DEFAULT_AGENT_POLICY: ReadPolicy = ReadPolicy {
    timeout: Duration::from_secs(2),
    min_interval: Duration::from_secs(1),
};

/// The agent's Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSocket {
    /// Path of the socket file. Its directory must exist.
    pub path: PathBuf,
    /// Group allowed to connect: the socket gets mode 0660 and this group. Without it, 0600.
    pub group: Option<u32>,
}

/// One enclave the agent serves.
#[derive(Debug, Clone)]
pub struct AgentEnclave {
    /// Its name in URLs and reports (1-64 characters of `A-Z a-z 0-9 _ - . :`).
    pub name: String,
    /// How to read it.
    pub source: Arc<dyn HeapSource>,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Nothing to serve on.
    #[error("the agent needs a Unix socket path or a TCP address to serve on")]
    NoListener,
    /// Nothing to serve.
    #[error("the agent needs at least one enclave")]
    NoEnclaves,
    /// An enclave name is not usable in a URL path.
    #[error("enclave name {0:?} must be 1-64 characters of A-Z a-z 0-9 _ - . :")]
    EnclaveName(String),
    /// Two enclaves share a name.
    #[error("enclave name {0:?} is used twice")]
    DuplicateEnclave(String),
    /// Another live agent already serves on the socket path.
    #[error("{0}: another process is serving on this socket; stop it or choose another path")]
    SocketInUse(PathBuf),
    /// The socket path exists and is not a socket.
    #[error("{0}: exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// Creating, securing or renaming the socket failed.
    #[error("{path}: {action}: {cause}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// What the OS said.
        cause: io::Error,
    },
    /// The TCP address could not be bound.
    #[error("cannot listen on {address}: {cause}")]
    Tcp {
        /// The address.
        address: SocketAddr,
        /// What the OS said.
        cause: io::Error,
    },
    /// The agent's thread or runtime could not start.
    #[error("cannot start the agent thread: {0}")]
    Thread(io::Error),
    /// The socket's directory would let someone else replace the socket.
    #[error(
        "{directory}: {problem}; put the socket in a directory that only the agent's user (or root) can change"
    )]
    InsecureDirectory {
        /// The directory.
        directory: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Allowed peers were given together with a TCP listener, which has no peer credentials.
    #[error(
        "allowed peer uids/gids need a Unix socket: TCP has no peer credentials to check; serve on TCP without allowed peers, or on the Unix socket only"
    )]
    PeersOverTcp,
}

/// A running agent. Stop it with [`stop`](Self::stop); dropping it stops it too.
#[derive(Debug)]
pub struct AgentServer {
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    socket: Option<OwnedSocket>,
    tcp_address: Option<SocketAddr>,
}

/// The socket file we created, identified by inode so we never remove a successor's. Dropping it
/// removes the file (if still ours), so a start that fails after binding leaves nothing behind.
#[derive(Debug)]
struct OwnedSocket {
    path: PathBuf,
    device: u64,
    inode: u64,
}

struct AgentState {
    enclaves: Vec<ServedEnclave>,
    peers: PeerGate,
}

/// Admits or refuses each request's peer, and logs each refused (uid, gid) once.
struct PeerGate {
    allowed: AllowedPeers,
    refused: Mutex<RefusedPeers>,
}

#[derive(Default)]
struct RefusedPeers {
    logged: HashSet<(u32, u32)>,
    overflow_logged: bool,
}

struct ServedEnclave {
    name: String,
    source: Arc<dyn HeapSource>,
    coalescer: Arc<Coalescer<HeapSnapshot>>,
}

impl AgentServer {
    /// Validates, binds every listener (so errors are reported here, not later), and starts
    /// serving on a thread of its own.
    pub fn start(config: AgentConfig, enclaves: Vec<AgentEnclave>) -> Result<Self, AgentError> {
        if config.socket.is_none() && config.tcp.is_none() {
            return Err(AgentError::NoListener);
        }
        if enclaves.is_empty() {
            return Err(AgentError::NoEnclaves);
        }
        if !config.allowed_peers.is_unrestricted() && config.tcp.is_some() {
            return Err(AgentError::PeersOverTcp);
        }
        let enclave_count = enclaves.len();
        let mut names = HashSet::new();
        for enclave in &enclaves {
            if !crate::agent_protocol::valid_enclave_name(&enclave.name) {
                return Err(AgentError::EnclaveName(enclave.name.clone()));
            }
            if !names.insert(enclave.name.as_str()) {
                return Err(AgentError::DuplicateEnclave(enclave.name.clone()));
            }
        }
        drop(names);
        let tcp = match config.tcp {
            Some(address) => {
                let listener = std::net::TcpListener::bind(address)
                    .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
                    .map_err(|cause| AgentError::Tcp { address, cause })?;
                Some(listener)
            }
            None => None,
        };
        let tcp_address = tcp.as_ref().and_then(|listener| listener.local_addr().ok());
        let (unix, socket) = match &config.socket {
            Some(socket) => {
                check_directory(&socket.path, config.socket_directory)?;
                let (listener, owned) = bind_socket(socket)?;
                (Some(listener), Some(owned))
            }
            None => (None, None),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("enclave-heap-agent")
            .max_blocking_threads(enclave_count * 2)
            .build()
            .map_err(AgentError::Thread)?;
        // Register the listeners with the runtime here, so a failure is reported by `start`
        // instead of leaving the agent silently deaf on one of them.
        let mut listeners = Vec::new();
        {
            let _runtime = runtime.enter();
            if let (Some(tcp), Some(address)) = (tcp, config.tcp) {
                let tcp = tokio::net::TcpListener::from_std(tcp)
                    .map_err(|cause| AgentError::Tcp { address, cause })?;
                listeners.push(Listener::Tcp(tcp));
            }
            if let (Some(unix), Some(owned)) = (unix, &socket) {
                let unix = tokio::net::UnixListener::from_std(unix).map_err(|cause| {
                    AgentError::Socket {
                        path: owned.path.clone(),
                        action: "cannot register the socket with the agent's runtime",
                        cause,
                    }
                })?;
                listeners.push(Listener::Unix(unix));
            }
        }
        let state = Arc::new(AgentState {
            enclaves: enclaves
                .into_iter()
                .map(|enclave| ServedEnclave {
                    name: enclave.name,
                    source: enclave.source,
                    coalescer: Arc::new(Coalescer::new(config.policy)),
                })
                .collect(),
            peers: PeerGate {
                allowed: config.allowed_peers.clone(),
                refused: Mutex::new(RefusedPeers::default()),
            },
        });
        let (shutdown, shutdown_signal) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("enclave-heap-agent".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let handler = move |request| {
                        let state = Arc::clone(&state);
                        async move { route(&state, request).await }
                    };
                    let options = ServeOptions {
                        max_connections: 64,
                        // HTTP/1.1 handles one request at a time per connection, so the
                        // connection cap bounds requests too, and reads are coalesced per enclave.
                        max_requests: 0,
                        header_read_timeout: Duration::from_secs(5),
                        drain_timeout: Duration::from_secs(5),
                        ..ServeOptions::default()
                    };
                    http_server::serve(listeners, handler, options, async {
                        let _ = shutdown_signal.await;
                    })
                    .await;
                });
                // A read stuck in an ECALL cannot be cancelled; do not let it block the host's
                // shutdown.
                runtime.shutdown_timeout(Duration::from_millis(500));
            })
            .map_err(AgentError::Thread)?;
        Ok(Self {
            shutdown: Some(shutdown),
            thread: Some(thread),
            socket,
            tcp_address,
        })
    }

    /// The TCP address actually bound (useful with port 0).
    pub fn tcp_address(&self) -> Option<SocketAddr> {
        self.tcp_address
    }

    /// The Unix socket path served on.
    pub fn socket_path(&self) -> Option<&Path> {
        self.socket.as_ref().map(|socket| socket.path.as_path())
    }

    /// Stops accepting, lets in-flight requests finish (at most 5 s), removes the socket file
    /// and joins the agent's thread.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Dropping it removes the file if it is still ours.
        drop(self.socket.take());
    }
}

impl Drop for AgentServer {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

impl Drop for OwnedSocket {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| meta.dev() == self.device && meta.ino() == self.inode);
        if ours {
            if let Err(error) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), %error, "cannot remove the agent socket");
            }
        }
    }
}

impl PeerGate {
    /// `None` for an admitted peer; for any other, the answer to send (403, closing the
    /// connection).
    fn refusal(&self, peer: Option<&Peer>) -> Option<Response<Full<Bytes>>> {
        if self.allowed.is_unrestricted() {
            return None;
        }
        let credentials = match peer {
            Some(Peer::Unix(Some(credentials))) if self.allowed.admits(credentials) => {
                return None;
            }
            Some(Peer::Unix(Some(credentials))) => Some(*credentials),
            // Unreachable with the checks in `start` (no TCP with allowed peers), but a peer
            // that cannot be identified is never admitted.
            _ => None,
        };
        self.log_refusal(credentials);
        let message = match credentials {
            Some(peer) => format!(
                "peer uid {} gid {} may not read this agent: its uid and gid are not among the agent's allowed peers",
                peer.uid, peer.gid
            ),
            None => {
                "the peer's credentials are unknown: this agent serves only allowed uids and gids"
                    .to_owned()
            }
        };
        let mut response = error_response(StatusCode::FORBIDDEN, "forbidden", None, &message);
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        Some(response)
    }

    fn log_refusal(&self, peer: Option<UnixPeer>) {
        let (uid, gid) = peer.map_or((u32::MAX, u32::MAX), |peer| (peer.uid, peer.gid));
        let pid = peer.and_then(|peer| peer.pid);
        let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        if refused.logged.contains(&(uid, gid)) {
            return;
        }
        if refused.logged.len() >= MAX_LOGGED_REFUSED_PEERS {
            if !std::mem::replace(&mut refused.overflow_logged, true) {
                tracing::warn!(
                    limit = MAX_LOGGED_REFUSED_PEERS,
                    "refused peers from many different uids and gids; further ones are logged at debug level"
                );
            }
            tracing::debug!(uid, gid, ?pid, "refused a peer on the agent socket");
            return;
        }
        refused.logged.insert((uid, gid));
        drop(refused);
        match peer {
            Some(_) => tracing::warn!(
                uid,
                gid,
                ?pid,
                allowed_uids = ?self.allowed.uids,
                allowed_gids = ?self.allowed.gids,
                "refused a peer on the agent socket: neither its uid nor its gid is allowed (logged once per uid and gid)"
            ),
            None => tracing::warn!(
                "refused a peer on the agent socket: its credentials could not be read (logged once)"
            ),
        }
    }
}

/// Refuses a socket directory that would let someone else replace the socket (see the module
/// docs). A missing directory is left for `bind` to report.
fn check_directory(path: &Path, check: SocketDirectoryCheck) -> Result<(), AgentError> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let refuse = |problem: String| AgentError::InsecureDirectory {
        directory: directory.to_owned(),
        problem,
    };
    let meta = match std::fs::metadata(directory) {
        Ok(meta) => meta,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(AgentError::Socket {
                path: path.to_owned(),
                action: "cannot inspect the socket's directory",
                cause: error,
            });
        }
    };
    if !meta.is_dir() {
        return Err(refuse("the socket's parent is not a directory".to_owned()));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let our_uid = unsafe { libc::geteuid() };
    if meta.uid() != our_uid && meta.uid() != 0 {
        return Err(refuse(format!(
            "the socket's directory is owned by uid {}, neither the agent's user (uid {our_uid}) nor root, and its owner could replace the socket",
            meta.uid()
        )));
    }
    let mode = meta.mode();
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        match check {
            SocketDirectoryCheck::Strict => {
                return Err(refuse(format!(
                    "the socket's directory (mode {:04o}) may be written by any user and has no sticky bit, so anyone could replace the socket",
                    mode & 0o7777
                )));
            }
            SocketDirectoryCheck::Owner => tracing::warn!(
                directory = %directory.display(),
                mode = format!("{:04o}", mode & 0o7777),
                "the agent socket's directory may be written by any user and has no sticky bit: anyone who can reach it could replace the socket (fine for a Kubernetes emptyDir, which only the pod sees; elsewhere use a private directory)"
            ),
        }
    }
    Ok(())
}

/// Distinguishes the temporary names of agents started at the same time in one process.
static TEMPORARY_SOCKETS: AtomicU64 = AtomicU64::new(0);

/// Binds `socket.path` with its final mode and group from the first moment it exists.
fn bind_socket(
    socket: &AgentSocket,
) -> Result<(std::os::unix::net::UnixListener, OwnedSocket), AgentError> {
    let path = &socket.path;
    let fail = |action, cause| AgentError::Socket {
        path: path.clone(),
        action,
        cause,
    };
    let stale = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(AgentError::SocketInUse(path.clone())),
                // Nobody answers: a stale socket from a process that did not clean up.
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => true,
                Err(error) if error.kind() == io::ErrorKind::NotFound => false,
                // E.g. another user's 0600 socket: it may well be live, so leave it alone.
                Err(error) => {
                    return Err(fail(
                        "cannot tell whether the existing socket is still served",
                        error,
                    ));
                }
            }
        }
        Ok(_) => return Err(AgentError::NotASocket(path.clone())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => false,
        Err(error) => return Err(fail("cannot inspect the socket path", error)),
    };
    let file_name = path.file_name().ok_or_else(|| {
        fail(
            "no file name in the socket path",
            io::ErrorKind::InvalidInput.into(),
        )
    })?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(file_name);
    temporary_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        TEMPORARY_SOCKETS.fetch_add(1, Ordering::Relaxed)
    ));
    let temporary = path.with_file_name(temporary_name);
    let listener = std::os::unix::net::UnixListener::bind(&temporary).map_err(|error| {
        let action = match error.kind() {
            io::ErrorKind::NotFound => "cannot bind the socket: its directory does not exist",
            io::ErrorKind::PermissionDenied => {
                "cannot bind the socket: no permission to create files in its directory"
            }
            io::ErrorKind::InvalidInput => {
                "cannot bind the socket: the path plus the agent's temporary suffix is too long for a Unix socket"
            }
            _ => "cannot bind the socket",
        };
        fail(action, error)
    })?;
    let secure = || -> io::Result<std::fs::Metadata> {
        let mode = if socket.group.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))?;
        if let Some(group) = socket.group {
            std::os::unix::fs::lchown(&temporary, None, Some(group))?;
        }
        listener.set_nonblocking(true)?;
        std::fs::symlink_metadata(&temporary)
    };
    let placed = secure()
        .map_err(|error| fail("cannot set the socket's mode or group", error))
        .and_then(|meta| {
            if stale {
                tracing::info!(path = %path.display(), "replacing a stale agent socket");
                match std::fs::remove_file(path) {
                    Err(error) if error.kind() != io::ErrorKind::NotFound => {
                        return Err(fail("cannot remove the stale socket", error));
                    }
                    _ => {}
                }
            }
            // A link, unlike a rename, fails instead of replacing a socket that another agent
            // put in place since we looked.
            match std::fs::hard_link(&temporary, path) {
                Ok(()) => Ok(meta),
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    Err(AgentError::SocketInUse(path.clone()))
                }
                Err(error) => Err(fail("cannot move the socket into place", error)),
            }
        });
    // The listener stays bound to the inode, whatever names it has.
    let _ = std::fs::remove_file(&temporary);
    let meta = placed?;
    Ok((
        listener,
        OwnedSocket {
            path: path.clone(),
            device: meta.dev(),
            inode: meta.ino(),
        },
    ))
}

async fn route(state: &AgentState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if let Some(refusal) = state.peers.refusal(request.extensions().get::<Peer>()) {
        return refusal;
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            None,
            "only GET and HEAD are supported",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let path = request.uri().path();
    let response = if path == NODE_MEMORY_PATH {
        // The default enclave: the first registered, so a single-enclave host is CCF-compatible.
        match state.enclaves.first() {
            Some(enclave) => memory_response(enclave).await,
            None => error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                None,
                "no enclaves are registered",
            ),
        }
    } else if path == ENCLAVES_PATH {
        list_response(state).await
    } else if let Some(name) = path
        .strip_prefix(ENCLAVES_PATH)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.strip_suffix("/memory"))
    {
        match state.enclaves.iter().find(|enclave| enclave.name == name) {
            Some(enclave) => memory_response(enclave).await,
            None => error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                None,
                "no enclave of that name; GET /enclaves lists them",
            ),
        }
    } else if path == "/-/healthy" {
        json_response(StatusCode::OK, b"{\"status\":\"healthy\"}".to_vec())
    } else {
        error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            None,
            "paths: /node/memory, /enclaves, /enclaves/{name}/memory",
        )
    };
    // For HEAD, hyper sends the headers (Content-Length included) and leaves the body out.
    response
}

/// Starts (or joins) a read of `enclave` at once, not when the future is first polled, so that
/// reads begun one after the other run concurrently.
fn read(enclave: &ServedEnclave) -> impl Future<Output = Result<HeapSnapshot, ReadFailure>> + '_ {
    let source = Arc::clone(&enclave.source);
    let name = enclave.name.clone();
    let pending = enclave.coalescer.begin(
        move || read_blocking(source),
        move |report| {
            if let Err(failure) = report.outcome {
                tracing::debug!(enclave = %name, %failure, "read failed");
            }
        },
    );
    pending.wait(|failure| tracing::warn!(enclave = %enclave.name, %failure, "read timed out"))
}

fn report(name: &str, snapshot: &HeapSnapshot) -> MemoryReport {
    MemoryReport {
        max_total_heap_size: snapshot.max_total_heap_size,
        current_allocated_heap_size: snapshot.current_allocated_heap_size,
        peak_allocated_heap_size: snapshot.peak_allocated_heap_size,
        enclave: Some(name.to_owned()),
        origin: Some(match snapshot.origin {
            SnapshotOrigin::Ecall => ReportOrigin::Ecall,
            SnapshotOrigin::OcallPush => ReportOrigin::OcallPush,
        }),
        age_seconds: Some(snapshot.taken_at.elapsed().as_secs_f64()),
    }
}

fn failure_report(name: &str, failure: &ReadFailure) -> (StatusCode, ErrorReport) {
    let status = match failure {
        ReadFailure::Source(_) => StatusCode::SERVICE_UNAVAILABLE,
        ReadFailure::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        ReadFailure::Panicked(_) => StatusCode::INTERNAL_SERVER_ERROR,
        // An agent re-serving another agent: the upstream failed.
        ReadFailure::Agent(_) => StatusCode::BAD_GATEWAY,
    };
    (
        status,
        ErrorReport {
            error: failure.result_label(),
            enclave: Some(name.to_owned()),
            message: Some(failure.to_string()),
        },
    )
}

async fn memory_response(enclave: &ServedEnclave) -> Response<Full<Bytes>> {
    match read(enclave).await {
        Ok(snapshot) => json(StatusCode::OK, &report(&enclave.name, &snapshot)),
        Err(failure) => {
            let (status, body) = failure_report(&enclave.name, &failure);
            json(status, &body)
        }
    }
}

async fn list_response(state: &AgentState) -> Response<Full<Bytes>> {
    // Start every read before waiting for any, so enclaves are read concurrently.
    let mut entries = Vec::with_capacity(state.enclaves.len());
    let reads: Vec<_> = state
        .enclaves
        .iter()
        .map(|enclave| (enclave, read(enclave)))
        .collect();
    for (enclave, read) in reads {
        entries.push(match read.await {
            Ok(snapshot) => EnclaveEntry::Memory(report(&enclave.name, &snapshot)),
            Err(failure) => EnclaveEntry::Error(failure_report(&enclave.name, &failure).1),
        });
    }
    json(StatusCode::OK, &EnclaveList { enclaves: entries })
}

fn error_response(
    status: StatusCode,
    error: &str,
    enclave: Option<&str>,
    message: &str,
) -> Response<Full<Bytes>> {
    json(
        status,
        &ErrorReport {
            error: error.to_owned(),
            enclave: enclave.map(str::to_owned),
            message: Some(message.to_owned()),
        },
    )
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(body) {
        Ok(bytes) => json_response(status, bytes),
        Err(_) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            b"{\"error\":\"encoding\"}".to_vec(),
        ),
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
