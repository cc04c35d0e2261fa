//! The C entry points called directly, as a C host would: argument checks, state rules, pushes,
//! and an agent answering on a Unix socket.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use openenclave_sys::{OE_ENCLAVE_ABORTING, OE_OUT_OF_THREADS};

use super::*;
use crate::agent_protocol::{ErrorReport, MemoryReport, ReportOrigin};

/// The stand-in ECALL: answers fixed figures, or fails with the result in `result`, after
/// `delay`; counts the calls that started and finished.
#[derive(Default)]
struct FakeEnclave {
    result: AtomicU32,
    delay: Duration,
    calls: AtomicUsize,
    finished: AtomicUsize,
}

unsafe extern "C" fn fake_ecall(context: *mut c_void, out: *mut enclave_heap_mallinfo_t) -> u32 {
    // SAFETY: every test passes a `FakeEnclave` that outlives the agent, and the agent passes a
    // valid `out`.
    let (enclave, out) = unsafe { (&*(context as *const FakeEnclave), &mut *out) };
    enclave.calls.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(enclave.delay);
    *out = enclave_heap_mallinfo_t {
        max_total_heap_size: 64 * 4096,
        current_allocated_heap_size: 1000,
        peak_allocated_heap_size: 2000,
    };
    enclave.finished.fetch_add(1, Ordering::SeqCst);
    enclave.result.load(Ordering::SeqCst)
}

fn context(enclave: &FakeEnclave) -> *mut c_void {
    enclave as *const FakeEnclave as *mut c_void
}

fn options_init() -> enclave_heap_agent_options {
    enclave_heap_agent_options {
        struct_size: size_of::<enclave_heap_agent_options>() as u32,
        timeout_ms: 0,
        min_interval_ms: 0,
        push_max_age_ms: 0,
        socket_path: std::ptr::null(),
        tcp_address: std::ptr::null(),
        socket_group: -1,
    }
}

fn last_error() -> String {
    let message = enclave_heap_last_error();
    assert!(!message.is_null(), "a failed call must leave a message");
    // SAFETY: non-NULL, owned by this thread's slot and not replaced before we copy it.
    unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned()
}

/// An agent on `socket` (not started); `min_interval_ms = 1` so every request reads.
fn new_agent(socket: &Path) -> *mut enclave_heap_agent {
    let path = CString::new(socket.as_os_str().as_bytes()).unwrap();
    let options = enclave_heap_agent_options {
        socket_path: path.as_ptr(),
        min_interval_ms: 1,
        ..options_init()
    };
    // SAFETY: valid options whose string outlives the call.
    let agent = unsafe { enclave_heap_agent_new(&options) };
    assert!(!agent.is_null(), "{}", last_error());
    agent
}

fn add(agent: *mut enclave_heap_agent, name: &str, enclave: &FakeEnclave) -> c_int {
    let name = CString::new(name).unwrap();
    // SAFETY: a live agent, a valid name, and an enclave that outlives the agent in every test.
    unsafe {
        enclave_heap_agent_add_enclave(agent, name.as_ptr(), Some(fake_ecall), context(enclave))
    }
}

fn start(agent: *mut enclave_heap_agent) -> c_int {
    // SAFETY: a live agent.
    unsafe { enclave_heap_agent_start(agent) }
}

fn stop(agent: *mut enclave_heap_agent) -> c_int {
    // SAFETY: a live agent.
    unsafe { enclave_heap_agent_stop(agent) }
}

fn free(agent: *mut enclave_heap_agent) {
    // SAFETY: a live agent, used by nobody else from now on.
    unsafe { enclave_heap_agent_free(agent) }
}

fn push(agent: *mut enclave_heap_agent, name: &str, current: usize) -> c_int {
    let name = CString::new(name).unwrap();
    let info = enclave_heap_mallinfo_t {
        max_total_heap_size: 64 * 4096,
        current_allocated_heap_size: current,
        peak_allocated_heap_size: current + 1,
    };
    // SAFETY: a live agent, a valid name and struct.
    unsafe { enclave_heap_agent_push(agent, name.as_ptr(), &info) }
}

/// One HTTP/1.1 GET over the Unix socket: (status, body).
fn get(socket: &Path, path: &str) -> (u16, String) {
    let mut stream = UnixStream::connect(socket).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

#[test]
fn null_arguments_are_errors_not_crashes() {
    let enclave = FakeEnclave::default();
    let name = CString::new("app").unwrap();
    let info = enclave_heap_mallinfo_t::default();
    // SAFETY: NULL is what is being tested; every other argument is valid.
    unsafe {
        assert!(enclave_heap_agent_new(std::ptr::null()).is_null());
        assert_eq!(last_error(), "options is NULL");
        let null = std::ptr::null_mut();
        assert_eq!(
            enclave_heap_agent_add_enclave(
                null,
                name.as_ptr(),
                Some(fake_ecall),
                context(&enclave)
            ),
            ENCLAVE_HEAP_ERR_NULL
        );
        assert_eq!(last_error(), "agent is NULL");
        assert_eq!(enclave_heap_agent_start(null), ENCLAVE_HEAP_ERR_NULL);
        assert_eq!(enclave_heap_agent_stop(null), ENCLAVE_HEAP_ERR_NULL);
        assert_eq!(
            enclave_heap_agent_push(null, name.as_ptr(), &info),
            ENCLAVE_HEAP_ERR_NULL
        );
        enclave_heap_agent_free(null);
    }

    let directory = tempfile::tempdir().unwrap();
    let agent = new_agent(&directory.path().join("agent.sock"));
    // SAFETY: a live agent; NULL in one argument at a time.
    unsafe {
        assert_eq!(
            enclave_heap_agent_add_enclave(
                agent,
                std::ptr::null(),
                Some(fake_ecall),
                context(&enclave)
            ),
            ENCLAVE_HEAP_ERR_NULL
        );
        assert_eq!(last_error(), "name is NULL");
        assert_eq!(
            enclave_heap_agent_add_enclave(agent, name.as_ptr(), None, context(&enclave)),
            ENCLAVE_HEAP_ERR_NULL
        );
        assert_eq!(last_error(), "read is NULL");
        // A NULL context is the host's business.
        assert_eq!(
            enclave_heap_agent_add_enclave(
                agent,
                name.as_ptr(),
                Some(fake_ecall),
                std::ptr::null_mut()
            ),
            ENCLAVE_HEAP_OK
        );
        assert_eq!(
            enclave_heap_agent_push(agent, std::ptr::null(), &info),
            ENCLAVE_HEAP_ERR_NULL
        );
        assert_eq!(
            enclave_heap_agent_push(agent, name.as_ptr(), std::ptr::null()),
            ENCLAVE_HEAP_ERR_NULL
        );
        assert_eq!(last_error(), "info is NULL");
        enclave_heap_agent_free(agent);
    }
}

#[test]
fn options_are_validated() {
    let bad_utf8 = CString::new(vec![b'1', 0xff, b':', b'1']).unwrap();
    let not_an_address = CString::new("localhost:9746").unwrap();
    let empty = CString::new("").unwrap();
    let cases: [(enclave_heap_agent_options, &str); 6] = [
        (options_init(), "both NULL"),
        (
            enclave_heap_agent_options {
                struct_size: 0,
                ..options_init()
            },
            "ENCLAVE_HEAP_AGENT_OPTIONS_INIT",
        ),
        (
            enclave_heap_agent_options {
                tcp_address: bad_utf8.as_ptr(),
                ..options_init()
            },
            "options.tcp_address is not valid UTF-8",
        ),
        (
            enclave_heap_agent_options {
                tcp_address: not_an_address.as_ptr(),
                ..options_init()
            },
            "is not IP:port",
        ),
        (
            enclave_heap_agent_options {
                socket_path: empty.as_ptr(),
                ..options_init()
            },
            "options.socket_path is empty",
        ),
        (
            enclave_heap_agent_options {
                tcp_address: c"127.0.0.1:0".as_ptr(),
                socket_group: -2,
                ..options_init()
            },
            "neither -1 nor a group id",
        ),
    ];
    for (options, message) in cases {
        // SAFETY: valid options whose strings outlive the call.
        let agent = unsafe { enclave_heap_agent_new(&options) };
        assert!(agent.is_null(), "{message}");
        assert!(
            last_error().contains(message),
            "{} !~ {message}",
            last_error()
        );
    }
}

#[test]
fn enclaves_are_added_before_start_under_unique_valid_names() {
    let directory = tempfile::tempdir().unwrap();
    let agent = new_agent(&directory.path().join("agent.sock"));
    let enclave = FakeEnclave::default();
    assert_eq!(start(agent), ENCLAVE_HEAP_ERR_STATE);
    assert!(
        last_error().contains("no enclave added"),
        "{}",
        last_error()
    );
    assert_eq!(add(agent, "app", &enclave), ENCLAVE_HEAP_OK);
    assert_eq!(add(agent, "app", &enclave), ENCLAVE_HEAP_ERR_INVALID);
    assert_eq!(last_error(), "enclave name \"app\" is already added");
    assert_eq!(add(agent, "bad/name", &enclave), ENCLAVE_HEAP_ERR_INVALID);
    assert!(last_error().contains("1-64 characters"), "{}", last_error());
    assert_eq!(add(agent, "..", &enclave), ENCLAVE_HEAP_ERR_INVALID);
    let not_utf8 = CString::new(vec![0xc3, 0x28]).unwrap();
    // SAFETY: a live agent and a NUL-terminated (if not UTF-8) name.
    let added = unsafe {
        enclave_heap_agent_add_enclave(
            agent,
            not_utf8.as_ptr(),
            Some(fake_ecall),
            context(&enclave),
        )
    };
    assert_eq!(added, ENCLAVE_HEAP_ERR_INVALID);
    assert!(
        last_error().starts_with("name is not valid UTF-8"),
        "{}",
        last_error()
    );
    assert_eq!(start(agent), ENCLAVE_HEAP_OK);
    assert_eq!(start(agent), ENCLAVE_HEAP_ERR_STATE);
    assert_eq!(last_error(), "the agent has already started");
    assert_eq!(add(agent, "late", &enclave), ENCLAVE_HEAP_ERR_STATE);
    assert!(last_error().contains("already started"), "{}", last_error());
    free(agent);
}

#[test]
fn serves_the_callback_figures_with_socket_mode_0600_and_removes_the_socket() {
    use std::os::unix::fs::PermissionsExt;
    let directory = tempfile::tempdir().unwrap();
    let socket = directory.path().join("agent.sock");
    let agent = new_agent(&socket);
    let enclave = FakeEnclave::default();
    assert_eq!(add(agent, "app", &enclave), ENCLAVE_HEAP_OK);
    assert_eq!(start(agent), ENCLAVE_HEAP_OK);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let (status, body) = get(&socket, "/node/memory");
    assert_eq!(status, 200, "{body}");
    let report: MemoryReport = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            report.max_total_heap_size,
            report.current_allocated_heap_size,
            report.peak_allocated_heap_size
        ),
        (64 * 4096, 1000, 2000)
    );
    assert_eq!(report.enclave.as_deref(), Some("app"));
    assert_eq!(report.origin, Some(ReportOrigin::Ecall));
    assert_eq!(stop(agent), ENCLAVE_HEAP_OK);
    assert!(!socket.exists(), "stop removes the socket");
    let calls = enclave.calls.load(Ordering::SeqCst);
    assert!(calls >= 1);
    // Stopped for good, but the enclave may still push until the host terminates it.
    assert_eq!(stop(agent), ENCLAVE_HEAP_OK);
    assert_eq!(start(agent), ENCLAVE_HEAP_ERR_STATE);
    assert_eq!(last_error(), "the agent was stopped; create a new one");
    assert_eq!(push(agent, "app", 1), ENCLAVE_HEAP_OK);
    free(agent);
    assert_eq!(enclave.calls.load(Ordering::SeqCst), calls);
}

#[test]
fn stop_waits_for_a_callback_that_outlived_its_request() {
    let directory = tempfile::tempdir().unwrap();
    let socket = directory.path().join("agent.sock");
    let path = CString::new(socket.as_os_str().as_bytes()).unwrap();
    let options = enclave_heap_agent_options {
        socket_path: path.as_ptr(),
        timeout_ms: 20,
        ..options_init()
    };
    // SAFETY: valid options whose string outlives the call.
    let agent = unsafe { enclave_heap_agent_new(&options) };
    assert!(!agent.is_null(), "{}", last_error());
    // Longer than the agent's own runtime shutdown grace (500 ms), so only the C ABI's wait
    // keeps `stop` from returning while the callback still runs.
    let enclave = FakeEnclave {
        delay: Duration::from_millis(800),
        ..FakeEnclave::default()
    };
    assert_eq!(add(agent, "app", &enclave), ENCLAVE_HEAP_OK);
    assert_eq!(start(agent), ENCLAVE_HEAP_OK);
    let (status, body) = get(&socket, "/node/memory");
    assert_eq!(status, 504, "{body}");
    assert_eq!(enclave.calls.load(Ordering::SeqCst), 1);
    assert_eq!(stop(agent), ENCLAVE_HEAP_OK);
    assert_eq!(
        enclave.finished.load(Ordering::SeqCst),
        1,
        "stop returned while the callback was still running"
    );
    free(agent);
}

#[test]
fn a_push_stands_in_when_the_ecall_is_out_of_threads() {
    let directory = tempfile::tempdir().unwrap();
    let socket = directory.path().join("agent.sock");
    let agent = new_agent(&socket);
    let enclave = FakeEnclave {
        result: AtomicU32::new(OE_OUT_OF_THREADS),
        ..FakeEnclave::default()
    };
    assert_eq!(add(agent, "app", &enclave), ENCLAVE_HEAP_OK);
    // Pushes work before start; an unknown name is refused.
    assert_eq!(push(agent, "app", 5000), ENCLAVE_HEAP_OK);
    assert_eq!(push(agent, "other", 1), ENCLAVE_HEAP_ERR_UNKNOWN_ENCLAVE);
    assert_eq!(last_error(), "no enclave named \"other\" was added");
    assert_eq!(start(agent), ENCLAVE_HEAP_OK);

    let (status, body) = get(&socket, "/enclaves/app/memory");
    assert_eq!(status, 200, "{body}");
    let report: MemoryReport = serde_json::from_str(&body).unwrap();
    assert_eq!(report.current_allocated_heap_size, 5000);
    assert_eq!(report.peak_allocated_heap_size, 5001);
    assert_eq!(report.origin, Some(ReportOrigin::OcallPush));

    // Pushes after start are seen too (min_interval is 1 ms, so this is a fresh read).
    assert_eq!(push(agent, "app", 7000), ENCLAVE_HEAP_OK);
    std::thread::sleep(Duration::from_millis(5));
    let (_, body) = get(&socket, "/node/memory");
    let report: MemoryReport = serde_json::from_str(&body).unwrap();
    assert_eq!(report.current_allocated_heap_size, 7000);
    assert!(body.contains("\"origin\":\"ocall_push\""), "{body}");

    // Any other failure is reported as is, push or not.
    enclave.result.store(OE_ENCLAVE_ABORTING, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(5));
    let (status, body) = get(&socket, "/node/memory");
    assert_eq!(status, 503, "{body}");
    let error: ErrorReport = serde_json::from_str(&body).unwrap();
    assert_eq!(error.error, "OE_ENCLAVE_ABORTING");
    free(agent);
}

#[test]
fn start_failures_are_reported_and_the_agent_can_retry() {
    let directory = tempfile::tempdir().unwrap();
    let missing = directory.path().join("missing-dir").join("agent.sock");
    let agent = new_agent(&missing);
    let enclave = FakeEnclave::default();
    assert_eq!(add(agent, "app", &enclave), ENCLAVE_HEAP_OK);
    assert_eq!(start(agent), ENCLAVE_HEAP_ERR_START);
    assert!(
        last_error().contains("cannot bind the socket"),
        "{}",
        last_error()
    );
    std::fs::create_dir(missing.parent().unwrap()).unwrap();
    assert_eq!(start(agent), ENCLAVE_HEAP_OK);
    free(agent);
}

#[test]
fn last_error_is_per_thread() {
    // SAFETY: NULL options are refused.
    assert!(unsafe { enclave_heap_agent_new(std::ptr::null()) }.is_null());
    assert_eq!(last_error(), "options is NULL");
    std::thread::spawn(|| assert!(enclave_heap_last_error().is_null()))
        .join()
        .unwrap();
}

#[test]
fn a_panic_becomes_an_error_code_and_a_message() {
    let code = ffi_status(|| panic!("boom"));
    assert_eq!(code, ENCLAVE_HEAP_ERR_PANIC);
    assert_eq!(
        last_error(),
        "internal error (a panic in enclave-heap-host): boom"
    );
    let pointer: *mut enclave_heap_agent = ffi_boundary(
        |_| std::ptr::null_mut(),
        || panic!("{}", String::from("formatted")),
    );
    assert!(pointer.is_null());
    assert!(last_error().ends_with("formatted"), "{}", last_error());
}

#[test]
fn allowed_peer_ids_gate_the_socket_and_are_set_before_start_only() {
    // SAFETY: NULL is a documented argument; the call only reports it.
    let null = unsafe { enclave_heap_agent_allow_peer_uid(std::ptr::null_mut(), 0) };
    assert_eq!(null, ENCLAVE_HEAP_ERR_NULL);
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let directory = tempfile::tempdir().unwrap();
    let enclave = FakeEnclave::default();
    for (allowed_uid, allowed_gid, status) in [
        (uid.wrapping_add(4242), gid.wrapping_add(4242), 403),
        (uid.wrapping_add(4242), gid, 200),
        (uid, gid.wrapping_add(4242), 200),
    ] {
        let socket = directory.path().join("agent.sock");
        let agent = new_agent(&socket);
        // SAFETY: a live agent.
        unsafe {
            assert_eq!(
                enclave_heap_agent_allow_peer_uid(agent, allowed_uid),
                ENCLAVE_HEAP_OK
            );
            assert_eq!(
                enclave_heap_agent_allow_peer_gid(agent, allowed_gid),
                ENCLAVE_HEAP_OK
            );
        }
        assert_eq!(add(agent, "app", &enclave), ENCLAVE_HEAP_OK);
        assert_eq!(start(agent), ENCLAVE_HEAP_OK);
        let (answer, body) = get(&socket, "/node/memory");
        assert_eq!(answer, status, "{body}");
        // SAFETY: a live agent.
        let late = unsafe { enclave_heap_agent_allow_peer_uid(agent, uid) };
        assert_eq!(late, ENCLAVE_HEAP_ERR_STATE);
        free(agent);
    }

    // Allowed peers need the Unix socket only.
    let tcp = CString::new("127.0.0.1:0").unwrap();
    let path = CString::new(directory.path().join("both.sock").as_os_str().as_bytes()).unwrap();
    let options = enclave_heap_agent_options {
        socket_path: path.as_ptr(),
        tcp_address: tcp.as_ptr(),
        ..options_init()
    };
    // SAFETY: valid options whose strings outlive the call; then a live agent.
    unsafe {
        let agent = enclave_heap_agent_new(&options);
        assert!(!agent.is_null(), "{}", last_error());
        assert_eq!(
            enclave_heap_agent_allow_peer_gid(agent, gid),
            ENCLAVE_HEAP_OK
        );
        assert_eq!(add(agent, "app", &enclave), ENCLAVE_HEAP_OK);
        assert_eq!(start(agent), ENCLAVE_HEAP_ERR_INVALID);
        assert!(
            last_error().contains("TCP has no peer credentials"),
            "{}",
            last_error()
        );
        free(agent);
    }
}
