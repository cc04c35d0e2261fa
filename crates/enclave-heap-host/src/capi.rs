//! The C ABI: lets a C or C++ Open Enclave host run the [agent](crate::agent) by handing it a
//! callback that performs our ECALL.
//!
//! `include/enclave_heap_host.h` declares everything here and is the reference for C callers
//! (threading, ownership, return codes, an example); `tests/capi_header.rs` checks that the two
//! agree (struct layouts, and the exported symbols against the declared functions). The ABI does
//! not depend on the OE SDK: [`enclave_heap_mallinfo_t`] is our own copy of `oe_mallinfo_t`
//! (layout asserted below) and OE results travel as plain `uint32_t`.
//!
//! Every function checks its pointers (NULL gives [`ENCLAVE_HEAP_ERR_NULL`]), copies the strings
//! it is given, checks their UTF-8, and catches panics ([`ENCLAVE_HEAP_ERR_PANIC`]) so none
//! unwinds into C. A failure leaves a message for [`enclave_heap_last_error`] on the calling
//! thread.
//!
//! Each enclave is a `CallbackSource` wrapped in a [`PushFallback`] on a [`PushSlot`] of its
//! own, so [`enclave_heap_agent_push`] (called from the host's OCALL implementation) stands in
//! when the ECALL fails with `OE_OUT_OF_THREADS`.
//!
//! Two things differ from a Rust host and are handled here:
//! - a C host does not ignore `SIGPIPE` as Rust's runtime does, so a client that hangs up
//!   mid-answer would kill it; the agent's threads are therefore started with asynchronous
//!   signals blocked (see `AgentThreadSignals`);
//! - the C side terminates the enclave (and frees the callback's context) once
//!   [`enclave_heap_agent_stop`] or [`enclave_heap_agent_free`] returns, so stopping waits for a
//!   callback still running (an ECALL cannot be cancelled) and lets none start afterwards;
//!   `stop` is separate from `free` so that the enclave's pushes can go on until it is
//!   terminated.
// The C names are the ABI: they keep C's snake_case type names.
#![allow(non_camel_case_types)]

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use openenclave_sys::{OE_UNEXPECTED, oe_mallinfo_t};

use crate::agent::{
    AgentConfig, AgentEnclave, AgentError, AgentServer, AgentSocket, AllowedPeers,
    DEFAULT_AGENT_POLICY,
};
use crate::agent_protocol::valid_enclave_name;
use crate::coalesce::ReadPolicy;
use crate::error::{OeResult, ReadError};
use crate::push::{DEFAULT_PUSH_MAX_AGE, PushFallback, PushSlot};
use crate::snapshot::{HeapSnapshot, SnapshotOrigin};
use crate::source::{HeapSource, SourceKind};

/// Success.
pub const ENCLAVE_HEAP_OK: c_int = 0;
/// A required pointer argument was NULL.
pub const ENCLAVE_HEAP_ERR_NULL: c_int = -1;
/// An argument was invalid: not UTF-8, a bad enclave name or address, a duplicate name, wrong
/// `struct_size`, no listener.
pub const ENCLAVE_HEAP_ERR_INVALID: c_int = -2;
/// The call is not allowed in the agent's state: adding after start, starting twice or after
/// stop, starting with no enclave.
pub const ENCLAVE_HEAP_ERR_STATE: c_int = -3;
/// The agent could not start: the socket or TCP address could not be bound, or its thread not
/// created.
pub const ENCLAVE_HEAP_ERR_START: c_int = -4;
/// No enclave of that name was added.
pub const ENCLAVE_HEAP_ERR_UNKNOWN_ENCLAVE: c_int = -5;
/// An internal error (a Rust panic, caught at the boundary). The agent may be unusable: free it.
pub const ENCLAVE_HEAP_ERR_PANIC: c_int = -6;

/// Our copy of OE's `oe_mallinfo_t`: three `size_t`, same order, same layout, so a host may cast
/// an `enclave_heap_mallinfo_t*` to an `oe_mallinfo_t*` and back.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct enclave_heap_mallinfo_t {
    /// Heap size in bytes (`NumHeapPages` × 4096 with OE's allocators).
    pub max_total_heap_size: usize,
    /// Bytes allocated now.
    pub current_allocated_heap_size: usize,
    /// Peak bytes allocated (OE's dlmalloc: its peak footprint).
    pub peak_allocated_heap_size: usize,
}

// The header promises that casting between the two is fine.
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<enclave_heap_mallinfo_t>() == size_of::<oe_mallinfo_t>());
    assert!(align_of::<enclave_heap_mallinfo_t>() == align_of::<oe_mallinfo_t>());
    assert!(
        offset_of!(enclave_heap_mallinfo_t, max_total_heap_size)
            == offset_of!(oe_mallinfo_t, max_total_heap_size)
    );
    assert!(
        offset_of!(enclave_heap_mallinfo_t, current_allocated_heap_size)
            == offset_of!(oe_mallinfo_t, current_allocated_heap_size)
    );
    assert!(
        offset_of!(enclave_heap_mallinfo_t, peak_allocated_heap_size)
            == offset_of!(oe_mallinfo_t, peak_allocated_heap_size)
    );
};

impl From<enclave_heap_mallinfo_t> for oe_mallinfo_t {
    fn from(info: enclave_heap_mallinfo_t) -> Self {
        oe_mallinfo_t {
            max_total_heap_size: info.max_total_heap_size,
            current_allocated_heap_size: info.current_allocated_heap_size,
            peak_allocated_heap_size: info.peak_allocated_heap_size,
        }
    }
}

/// The callback that performs the ECALL: fills `*out` and returns the OE result (`OE_OK` = 0,
/// the ECALL's transport result if it failed, otherwise the enclave's own result).
pub type enclave_heap_read_fn =
    unsafe extern "C" fn(context: *mut c_void, out: *mut enclave_heap_mallinfo_t) -> u32;

/// How the agent serves; see the header for each field. Initialise it with
/// `ENCLAVE_HEAP_AGENT_OPTIONS_INIT`, which sets `struct_size` and `socket_group = -1`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct enclave_heap_agent_options {
    /// `sizeof(enclave_heap_agent_options)` as the caller compiled it.
    pub struct_size: u32,
    /// How long a request waits for a read, in ms; 0: 2000.
    pub timeout_ms: u32,
    /// Minimum time between two reads of one enclave, in ms; 0: 1000.
    pub min_interval_ms: u32,
    /// How old a pushed snapshot may be and still stand in for `OE_OUT_OF_THREADS`, in ms;
    /// 0: 30000.
    pub push_max_age_ms: u32,
    /// Unix socket path (any bytes but NUL), or NULL.
    pub socket_path: *const c_char,
    /// TCP address `IP:port` (UTF-8), or NULL.
    pub tcp_address: *const c_char,
    /// -1: socket mode 0600; 0..=4294967295: that group id and mode 0660.
    pub socket_group: i64,
}

/// An agent, opaque to C: created by [`enclave_heap_agent_new`], freed by
/// [`enclave_heap_agent_free`].
pub struct enclave_heap_agent {
    config: AgentConfig,
    /// Added by `enclave_heap_agent_allow_peer_*` before start; replaces `config.allowed_peers`.
    allowed_peers: Mutex<AllowedPeers>,
    push_max_age: Duration,
    /// Registered enclaves. Written only before start; pushes read it from any thread.
    enclaves: RwLock<Vec<Registered>>,
    /// Where the agent is in its life. Lock order: `lifecycle`, then `enclaves`.
    lifecycle: Mutex<Lifecycle>,
}

/// Created, serving, or stopped for good.
#[derive(Debug)]
enum Lifecycle {
    NotStarted,
    Serving(AgentServer),
    Stopped,
}

struct Registered {
    name: String,
    pushes: Arc<PushSlot>,
    callback: Arc<CallbackSource>,
    source: Arc<dyn HeapSource>,
}

impl fmt::Debug for enclave_heap_agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .enclaves
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|enclave| enclave.name.clone())
            .collect();
        f.debug_struct("enclave_heap_agent")
            .field("config", &self.config)
            .field("push_max_age", &self.push_max_age)
            .field("enclaves", &names)
            .finish_non_exhaustive()
    }
}

/// A C callback as a [`HeapSource`]: each read calls it once with a zeroed struct.
struct CallbackSource {
    read: enclave_heap_read_fn,
    context: *mut c_void,
    /// Held while the callback runs, so calls for one enclave never overlap (the header
    /// promises it, whatever the agent's scheduling); `true` once the agent is freed.
    closed: Mutex<bool>,
}

// SAFETY: the header requires the callback and its context to be usable from any thread (the
// agent's threads call it, not the one that registered it). The context is only ever passed
// back to the callback, never dereferenced here.
unsafe impl Send for CallbackSource {}
// SAFETY: shared use only calls the callback, and `closed` serialises those calls, so the
// callback never runs concurrently for one enclave, as the header promises.
unsafe impl Sync for CallbackSource {}

impl fmt::Debug for CallbackSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackSource")
            .field("read", &(self.read as *const c_void))
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl CallbackSource {
    /// Waits for a call in progress and prevents any later one.
    fn close(&self) {
        *self.closed.lock().unwrap_or_else(PoisonError::into_inner) = true;
    }
}

impl HeapSource for CallbackSource {
    fn kind(&self) -> SourceKind {
        // The callback performs an OE ECALL in this process.
        SourceKind::OpenEnclave
    }

    fn read(&self) -> Result<HeapSnapshot, ReadError> {
        let closed = self.closed.lock().unwrap_or_else(PoisonError::into_inner);
        if *closed {
            // Only reachable by a read that outlived the agent; nobody is waiting for it.
            return Err(ReadError::Ecall(OeResult(OE_UNEXPECTED)));
        }
        let mut info = enclave_heap_mallinfo_t::default();
        // SAFETY: `read` is a non-NULL function pointer the host registered with the signature
        // of `enclave_heap_read_fn`; `info` is a valid, writable struct for the whole call, and
        // `context` is the host's, valid until `enclave_heap_agent_stop` or `_free` returns
        // (both wait for this call and prevent later ones: see `close`). The header forbids unwinding out of the callback.
        let result = unsafe { (self.read)(self.context, &mut info) };
        drop(closed);
        OeResult::check(result).map_err(ReadError::Ecall)?;
        Ok(HeapSnapshot::from_mallinfo(
            &info.into(),
            SnapshotOrigin::Ecall,
        ))
    }
}

/// Shared with the agent (through the push fallback) and kept by the handle, which closes it.
impl HeapSource for Arc<CallbackSource> {
    fn kind(&self) -> SourceKind {
        (**self).kind()
    }

    fn read(&self) -> Result<HeapSnapshot, ReadError> {
        (**self).read()
    }
}

/// Why a call failed: its return code and the message for `enclave_heap_last_error`.
struct Failure {
    code: c_int,
    message: String,
}

impl Failure {
    fn new(code: c_int, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn null(argument: &str) -> Self {
        Self::new(ENCLAVE_HEAP_ERR_NULL, format!("{argument} is NULL"))
    }
}

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(message: String) {
    // An interior NUL would truncate the C string; none of ours has one, but stay total.
    let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // Fails only while the thread's TLS is being torn down; there is nobody to tell then.
    let _ = LAST_ERROR.try_with(|last| *last.borrow_mut() = Some(message));
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Runs one C entry point's body: no panic crosses the boundary, and a failure leaves its
/// message for `enclave_heap_last_error`. `failed` is what C gets on failure (for pointer
/// results, NULL).
fn ffi_boundary<T>(
    failed: impl FnOnce(c_int) -> T,
    body: impl FnOnce() -> Result<T, Failure>,
) -> T {
    // Unwind safety: after a panic the caller is told to free the agent; its locks recover
    // from poisoning, and nothing else is left half-updated that a later call could observe.
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => return value,
        Ok(Err(failure)) => failure,
        Err(payload) => Failure::new(
            ENCLAVE_HEAP_ERR_PANIC,
            format!(
                "internal error (a panic in enclave-heap-host): {}",
                panic_message(payload.as_ref())
            ),
        ),
    };
    // Formatting the message allocates: keep even that from unwinding into C.
    let code = failure.code;
    let _ = catch_unwind(AssertUnwindSafe(|| set_last_error(failure.message)));
    failed(code)
}

/// Runs a body whose result is a return code.
fn ffi_status(body: impl FnOnce() -> Result<(), Failure>) -> c_int {
    ffi_boundary(|code| code, || body().map(|()| ENCLAVE_HEAP_OK))
}

/// Borrows a C string argument for the duration of the call; `None` for NULL.
///
/// # Safety
/// `pointer` is NULL or points to a NUL-terminated string valid for reads during the call.
unsafe fn c_bytes<'a>(pointer: *const c_char) -> Option<&'a [u8]> {
    if pointer.is_null() {
        return None;
    }
    // SAFETY: non-NULL, and the caller guarantees a NUL-terminated string valid for this call.
    Some(unsafe { CStr::from_ptr(pointer) }.to_bytes())
}

/// A required UTF-8 string argument.
///
/// # Safety
/// As for [`c_bytes`].
unsafe fn c_str<'a>(pointer: *const c_char, argument: &str) -> Result<&'a str, Failure> {
    // SAFETY: forwarded from the caller.
    let bytes = unsafe { c_bytes(pointer) }.ok_or_else(|| Failure::null(argument))?;
    std::str::from_utf8(bytes).map_err(|error| {
        Failure::new(
            ENCLAVE_HEAP_ERR_INVALID,
            format!("{argument} is not valid UTF-8: {error}"),
        )
    })
}

/// The agent behind a handle.
///
/// # Safety
/// `agent` is NULL or a handle from `enclave_heap_agent_new` not yet freed.
unsafe fn agent_ref<'a>(
    agent: *const enclave_heap_agent,
) -> Result<&'a enclave_heap_agent, Failure> {
    // SAFETY: the caller guarantees NULL or a live handle; the handle is only shared (all its
    // mutable state is behind locks), so a shared reference is sound while calls overlap.
    unsafe { agent.as_ref() }.ok_or_else(|| Failure::null("agent"))
}

fn milliseconds(value: u32, default: Duration) -> Duration {
    if value == 0 {
        default
    } else {
        Duration::from_millis(u64::from(value))
    }
}

/// Turns C options into an agent configuration.
///
/// # Safety
/// `options` points to a readable `enclave_heap_agent_options` whose string fields are NULL or
/// NUL-terminated strings valid during the call.
unsafe fn agent_from_options(
    options: &enclave_heap_agent_options,
) -> Result<enclave_heap_agent, Failure> {
    // SAFETY: the caller guarantees NULL or a valid NUL-terminated string.
    let socket_path = unsafe { c_bytes(options.socket_path) };
    let tcp = if options.tcp_address.is_null() {
        None
    } else {
        // SAFETY: non-NULL, and the caller guarantees a valid NUL-terminated string.
        let text = unsafe { c_str(options.tcp_address, "options.tcp_address") }?;
        Some(text.parse::<SocketAddr>().map_err(|error| {
            Failure::new(
                ENCLAVE_HEAP_ERR_INVALID,
                format!("options.tcp_address {text:?} is not IP:port ({error})"),
            )
        })?)
    };
    let group = match options.socket_group {
        -1 => None,
        gid => Some(u32::try_from(gid).map_err(|_| {
            Failure::new(
                ENCLAVE_HEAP_ERR_INVALID,
                format!("options.socket_group {gid} is neither -1 nor a group id"),
            )
        })?),
    };
    let socket = match socket_path {
        Some([]) => {
            return Err(Failure::new(
                ENCLAVE_HEAP_ERR_INVALID,
                "options.socket_path is empty",
            ));
        }
        // Unix paths are bytes: no UTF-8 requirement here.
        Some(bytes) => Some(AgentSocket {
            path: PathBuf::from(std::ffi::OsStr::from_bytes(bytes)),
            group,
        }),
        None => None,
    };
    if socket.is_none() && tcp.is_none() {
        return Err(Failure::new(
            ENCLAVE_HEAP_ERR_INVALID,
            "options.socket_path and options.tcp_address are both NULL: the agent needs one \
             to serve on",
        ));
    }
    Ok(enclave_heap_agent {
        config: AgentConfig {
            socket,
            tcp,
            policy: ReadPolicy {
                timeout: milliseconds(options.timeout_ms, DEFAULT_AGENT_POLICY.timeout),
                min_interval: milliseconds(
                    options.min_interval_ms,
                    DEFAULT_AGENT_POLICY.min_interval,
                ),
            },
            ..AgentConfig::default()
        },
        push_max_age: milliseconds(options.push_max_age_ms, DEFAULT_PUSH_MAX_AGE),
        allowed_peers: Mutex::new(AllowedPeers::default()),
        enclaves: RwLock::new(Vec::new()),
        lifecycle: Mutex::new(Lifecycle::NotStarted),
    })
}

/// Creates an agent (not yet serving). Returns NULL on failure; see `enclave_heap_last_error`.
///
/// # Safety
/// `options` is NULL or points to a readable `enclave_heap_agent_options` whose strings are NULL
/// or NUL-terminated and valid during the call (they are copied).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn enclave_heap_agent_new(
    options: *const enclave_heap_agent_options,
) -> *mut enclave_heap_agent {
    ffi_boundary(
        |_| std::ptr::null_mut(),
        || {
            if options.is_null() {
                return Err(Failure::null("options"));
            }
            // The size field comes first so that a caller compiled against another version of
            // the header is refused before any field it may not have is read.
            // SAFETY: non-NULL and, as the caller guarantees, readable; `struct_size` is at
            // offset 0 in every version of the struct.
            let struct_size = unsafe { std::ptr::addr_of!((*options).struct_size).read() };
            let expected = size_of::<enclave_heap_agent_options>();
            if struct_size as usize != expected {
                return Err(Failure::new(
                    ENCLAVE_HEAP_ERR_INVALID,
                    format!(
                        "options.struct_size is {struct_size}, this library expects {expected}: \
                         initialise the options with ENCLAVE_HEAP_AGENT_OPTIONS_INIT from the \
                         header that matches the library"
                    ),
                ));
            }
            // SAFETY: non-NULL, readable and (as its size says) a whole struct of this version.
            let options = unsafe { &*options };
            // SAFETY: the caller guarantees the options' strings are NULL or valid.
            let agent = unsafe { agent_from_options(options) }?;
            Ok(Box::into_raw(Box::new(agent)))
        },
    )
}

/// Registers an enclave under `name`, read by `read(context, &out)`. Only before start.
///
/// # Safety
/// `agent` is NULL or a live handle; `name` is NULL or a NUL-terminated string valid during the
/// call (it is copied); `read` is NULL or a function with the `enclave_heap_read_fn` signature
/// that never unwinds, and it and `context` stay usable from any thread until
/// `enclave_heap_agent_stop` or `enclave_heap_agent_free` returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn enclave_heap_agent_add_enclave(
    agent: *mut enclave_heap_agent,
    name: *const c_char,
    read: Option<enclave_heap_read_fn>,
    context: *mut c_void,
) -> c_int {
    ffi_status(|| {
        // SAFETY: the caller guarantees NULL or a live handle.
        let agent = unsafe { agent_ref(agent) }?;
        // SAFETY: the caller guarantees NULL or a valid NUL-terminated string.
        let name = unsafe { c_str(name, "name") }?;
        let read = read.ok_or_else(|| Failure::null("read"))?;
        if !valid_enclave_name(name) {
            return Err(Failure::new(
                ENCLAVE_HEAP_ERR_INVALID,
                format!(
                    "enclave name {name:?} must be 1-64 characters of A-Z a-z 0-9 _ - . :, not . or .."
                ),
            ));
        }
        let lifecycle = agent
            .lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !matches!(*lifecycle, Lifecycle::NotStarted) {
            return Err(Failure::new(
                ENCLAVE_HEAP_ERR_STATE,
                format!("cannot add enclave {name:?}: the agent has already started"),
            ));
        }
        let mut enclaves = agent
            .enclaves
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if enclaves.iter().any(|enclave| enclave.name == name) {
            return Err(Failure::new(
                ENCLAVE_HEAP_ERR_INVALID,
                format!("enclave name {name:?} is already added"),
            ));
        }
        let callback = Arc::new(CallbackSource {
            read,
            context,
            closed: Mutex::new(false),
        });
        let pushes = Arc::new(PushSlot::new());
        let source: Arc<dyn HeapSource> = Arc::new(PushFallback::new(
            Arc::clone(&callback),
            Arc::clone(&pushes),
            agent.push_max_age,
        ));
        enclaves.push(Registered {
            name: name.to_owned(),
            pushes,
            callback,
            source,
        });
        Ok(())
    })
}

/// Which list an `enclave_heap_agent_allow_peer_*` call adds to.
enum PeerList {
    Uid,
    Gid,
}

/// Adds `id` to the agent's allowed peer uids or gids. Only before start.
///
/// # Safety
/// `agent` is NULL or a live handle.
unsafe fn allow_peer(agent: *mut enclave_heap_agent, list: PeerList, id: u32) -> c_int {
    ffi_status(|| {
        // SAFETY: the caller guarantees NULL or a live handle.
        let agent = unsafe { agent_ref(agent) }?;
        let lifecycle = agent
            .lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !matches!(*lifecycle, Lifecycle::NotStarted) {
            return Err(Failure::new(
                ENCLAVE_HEAP_ERR_STATE,
                "allowed peers can only be added before the agent starts",
            ));
        }
        let mut allowed = agent
            .allowed_peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let ids = match list {
            PeerList::Uid => &mut allowed.uids,
            PeerList::Gid => &mut allowed.gids,
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
        Ok(())
    })
}

/// Serves socket peers whose uid (`SO_PEERCRED`) is `uid`; with any uid or gid allowed, other
/// peers get 403. Only before start.
///
/// # Safety
/// `agent` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn enclave_heap_agent_allow_peer_uid(
    agent: *mut enclave_heap_agent,
    uid: u32,
) -> c_int {
    // SAFETY: passed on under the same contract.
    unsafe { allow_peer(agent, PeerList::Uid, uid) }
}

/// Serves socket peers whose primary gid (`SO_PEERCRED`) is `gid`. Only before start.
///
/// # Safety
/// `agent` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn enclave_heap_agent_allow_peer_gid(
    agent: *mut enclave_heap_agent,
    gid: u32,
) -> c_int {
    // SAFETY: passed on under the same contract.
    unsafe { allow_peer(agent, PeerList::Gid, gid) }
}

/// Blocks asynchronous signals in the calling thread while it lives, so threads spawned
/// meanwhile (the agent's thread, which then spawns the blocking threads that run the
/// callbacks) inherit the mask; restores the previous mask when dropped.
///
/// Why: a C host does not ignore `SIGPIPE` as Rust's runtime does, and a client hanging up
/// mid-answer makes the agent's write raise it; and a host that waits for `SIGTERM` with
/// `sigwait` or a handler expects it on its own threads. The synchronous signals a fault raises
/// (`SIGSEGV`, `SIGBUS`, `SIGFPE`, `SIGILL`, `SIGTRAP`, `SIGSYS`, `SIGABRT`) stay unblocked: OE's
/// host runtime handles enclave exceptions through them on the thread that made the ECALL.
struct AgentThreadSignals {
    previous: libc::sigset_t,
}

impl AgentThreadSignals {
    fn block() -> Option<Self> {
        // SAFETY: sigset_t is plain data that sigemptyset/sigfillset initialise; every pointer
        // passed points to a local that lives through the call; pthread_sigmask only changes
        // the calling thread's mask.
        unsafe {
            let mut blocked: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut blocked);
            for synchronous in [
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGFPE,
                libc::SIGILL,
                libc::SIGTRAP,
                libc::SIGSYS,
                libc::SIGABRT,
            ] {
                libc::sigdelset(&mut blocked, synchronous);
            }
            libc::sigemptyset(&mut previous);
            (libc::pthread_sigmask(libc::SIG_BLOCK, &blocked, &mut previous) == 0)
                .then_some(Self { previous })
        }
    }
}

impl Drop for AgentThreadSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `block` on this same thread (the guard is not
        // Send: it holds no pointer, but it never leaves `enclave_heap_agent_start`'s frame).
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut());
        }
    }
}

/// Binds the socket and/or TCP address and starts serving on the agent's own thread.
///
/// # Safety
/// `agent` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn enclave_heap_agent_start(agent: *mut enclave_heap_agent) -> c_int {
    ffi_status(|| {
        // SAFETY: the caller guarantees NULL or a live handle.
        let agent = unsafe { agent_ref(agent) }?;
        let mut lifecycle = agent
            .lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *lifecycle {
            Lifecycle::NotStarted => {}
            Lifecycle::Serving(_) => {
                return Err(Failure::new(
                    ENCLAVE_HEAP_ERR_STATE,
                    "the agent has already started",
                ));
            }
            Lifecycle::Stopped => {
                return Err(Failure::new(
                    ENCLAVE_HEAP_ERR_STATE,
                    "the agent was stopped; create a new one",
                ));
            }
        }
        let enclaves: Vec<AgentEnclave> = agent
            .enclaves
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|enclave| AgentEnclave {
                name: enclave.name.clone(),
                source: Arc::clone(&enclave.source),
            })
            .collect();
        if enclaves.is_empty() {
            return Err(Failure::new(
                ENCLAVE_HEAP_ERR_STATE,
                "no enclave added: call enclave_heap_agent_add_enclave before starting",
            ));
        }
        let config = AgentConfig {
            allowed_peers: agent
                .allowed_peers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            ..agent.config.clone()
        };
        let signals = AgentThreadSignals::block();
        let started = AgentServer::start(config, enclaves);
        drop(signals);
        let code = |error: &AgentError| match error {
            AgentError::NoListener
            | AgentError::EnclaveName(_)
            | AgentError::DuplicateEnclave(_)
            | AgentError::PeersOverTcp => ENCLAVE_HEAP_ERR_INVALID,
            AgentError::NoEnclaves => ENCLAVE_HEAP_ERR_STATE,
            _ => ENCLAVE_HEAP_ERR_START,
        };
        let server = started.map_err(|error| Failure::new(code(&error), error.to_string()))?;
        *lifecycle = Lifecycle::Serving(server);
        Ok(())
    })
}

/// Records a snapshot the enclave `name` pushed (from the host's OCALL implementation).
///
/// # Safety
/// `agent` is NULL or a live handle; `name` is NULL or a NUL-terminated string valid during the
/// call; `info` is NULL or points to a readable `enclave_heap_mallinfo_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn enclave_heap_agent_push(
    agent: *mut enclave_heap_agent,
    name: *const c_char,
    info: *const enclave_heap_mallinfo_t,
) -> c_int {
    ffi_status(|| {
        // SAFETY: the caller guarantees NULL or a live handle.
        let agent = unsafe { agent_ref(agent) }?;
        // SAFETY: the caller guarantees NULL or a valid NUL-terminated string.
        let name = unsafe { c_str(name, "name") }?;
        // SAFETY: the caller guarantees NULL or a pointer to a readable struct; it is copied.
        let info = unsafe { info.as_ref() }
            .copied()
            .ok_or_else(|| Failure::null("info"))?;
        let enclaves = agent
            .enclaves
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let enclave = enclaves
            .iter()
            .find(|enclave| enclave.name == name)
            .ok_or_else(|| {
                Failure::new(
                    ENCLAVE_HEAP_ERR_UNKNOWN_ENCLAVE,
                    format!("no enclave named {name:?} was added"),
                )
            })?;
        enclave.pushes.push(&info.into());
        Ok(())
    })
}

impl enclave_heap_agent {
    /// Stops serving for good and waits for a callback still running; idempotent.
    fn stop(&self) {
        let mut lifecycle = self
            .lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Lifecycle::Serving(server) = std::mem::replace(&mut *lifecycle, Lifecycle::Stopped) {
            // Stops accepting, drains, removes the socket and joins the agent's thread.
            server.stop();
        }
        // A read stuck in its ECALL outlives the server, and the host may free its context or
        // terminate the enclave as soon as we return: wait for it, and refuse any later call.
        for enclave in self
            .enclaves
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            enclave.callback.close();
        }
    }
}

/// Stops serving (drains requests, removes the socket) and waits for a callback still running;
/// pushes are still accepted. Final and idempotent.
///
/// # Safety
/// `agent` is NULL or a live handle, and this is not called from inside one of its callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn enclave_heap_agent_stop(agent: *mut enclave_heap_agent) -> c_int {
    ffi_status(|| {
        // SAFETY: the caller guarantees NULL or a live handle.
        let agent = unsafe { agent_ref(agent) }?;
        agent.stop();
        Ok(())
    })
}

/// Stops the agent as [`enclave_heap_agent_stop`] does and frees the handle. NULL is a no-op.
///
/// # Safety
/// `agent` is NULL or a live handle that no other thread is using or will use, and this is not
/// called from inside one of its callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn enclave_heap_agent_free(agent: *mut enclave_heap_agent) {
    if agent.is_null() {
        return;
    }
    // SAFETY: a live handle from `enclave_heap_agent_new` (a `Box::into_raw`), used by nobody
    // else from now on, as the caller guarantees; this takes the ownership back exactly once.
    let agent = unsafe { Box::from_raw(agent) };
    ffi_boundary(
        |_| (),
        || {
            agent.stop();
            drop(agent);
            Ok(())
        },
    );
}

/// The message of the last failed call on this thread, or NULL if none failed yet.
///
/// The string belongs to the library and stays valid until the next failing call on the same
/// thread.
#[unsafe(no_mangle)]
pub extern "C" fn enclave_heap_last_error() -> *const c_char {
    catch_unwind(|| {
        LAST_ERROR
            .try_with(|last| {
                last.borrow()
                    .as_ref()
                    .map_or(std::ptr::null(), |message| message.as_ptr())
            })
            .unwrap_or(std::ptr::null())
    })
    .unwrap_or(std::ptr::null())
}

#[cfg(test)]
mod tests;
