//! The example C host (`examples/c-host/main.c`), compiled with the system C compiler from the
//! header and the static library only, run as a process and asked over its Unix socket, as the
//! sidecar exporter asks it.
//!
//! The static library is the one cargo built for this test run: integration tests need the
//! crate's library, and cargo builds every `crate-type` of it in that one rustc run, into
//! `target/<profile>/deps/` beside the test binary. For staticlib and cdylib crate types cargo
//! leaves the hash out of the file name (`deps/libenclave_heap_host.a`), and it copies them up
//! to `target/<profile>/` only when the library itself is what was asked for (`cargo build
//! --lib`), never for `cargo test`: so the test looks in `deps/`, where the copy is always the
//! one matching this test binary. (`cargo test --lib` alone does not build it, but then this
//! test does not run either.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use enclave_heap_host::agent_protocol::{MemoryReport, ReportOrigin};

/// What the Rust standard library inside the static library needs from the system, as
/// `cargo rustc -p enclave-heap-host --lib --crate-type staticlib -- --print native-static-libs`
/// prints it on Linux/glibc (also in examples/c-host/Makefile).
const NATIVE_STATIC_LIBS: [&str; 7] = [
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>/deps/libenclave_heap_host.a`, beside this test's own binary.
fn static_library() -> PathBuf {
    let test_binary = std::env::current_exe().unwrap();
    let library = test_binary.with_file_name("libenclave_heap_host.a");
    assert!(
        library.is_file(),
        "{} is missing: cargo builds it with this test (crate-type staticlib in Cargo.toml)",
        library.display()
    );
    library
}

/// Compiles the example once per test run: `cc -I include main.c libenclave_heap_host.a ...`.
fn c_host() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let binary = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-host-example");
        let output = Command::new("cc")
            .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
            .arg(crate_dir().join("include"))
            .arg(crate_dir().join("examples/c-host/main.c"))
            .arg(static_library())
            .args(NATIVE_STATIC_LIBS)
            .arg("-o")
            .arg(&binary)
            .output()
            .expect("cannot run `cc` (install gcc, e.g. `apt-get install build-essential`)");
        assert!(
            output.status.success(),
            "compiling the C host failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        binary
    })
}

/// A running C host; killed if a test fails before it exits.
struct RunningHost {
    child: Child,
    stdout: BufReader<ChildStdout>,
    socket: PathBuf,
    /// The figures it says it reports: (max, current, peak, pushed current).
    figures: [u64; 4],
    _directory: tempfile::TempDir,
}

impl RunningHost {
    fn start(extra: &[&str]) -> Self {
        let directory = tempfile::tempdir().unwrap();
        let socket = directory.path().join("agent.sock");
        let mut child = Command::new(c_host())
            .arg(&socket)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.starts_with("c-host: serving"), "c-host said {line:?}");
        let figure = |key: &str| -> u64 {
            let start = line.find(&format!(" {key}=")).unwrap() + key.len() + 2;
            let digits: String = line[start..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().unwrap()
        };
        let figures = [
            figure("max_total_heap_size"),
            figure("current_allocated_heap_size"),
            figure("peak_allocated_heap_size"),
            figure("pushed_current"),
        ];
        Self {
            child,
            stdout,
            socket,
            figures,
            _directory: directory,
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        let mut stream = UnixStream::connect(&self.socket).unwrap();
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

    fn memory(&self, path: &str) -> MemoryReport {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Sends SIGTERM and waits for the exit (a guard against hangs, not a timing check).
    fn terminate(&mut self) -> (ExitStatus, String) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid, which it keeps until we reap it below.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "c-host ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        (status, rest)
    }
}

impl Drop for RunningHost {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn c_host_serves_its_enclave_on_a_0600_socket_and_exits_cleanly_on_sigterm() {
    let mut host = RunningHost::start(&[]);
    let [max, current, peak, _] = host.figures;

    let mode = std::fs::metadata(&host.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");

    let report = host.memory("/node/memory");
    assert_eq!(
        (
            report.max_total_heap_size,
            report.current_allocated_heap_size,
            report.peak_allocated_heap_size
        ),
        (max, current, peak)
    );
    assert_eq!(report.enclave.as_deref(), Some("app"));
    assert_eq!(report.origin, Some(ReportOrigin::Ecall));
    assert_eq!(
        host.memory("/enclaves/app/memory")
            .current_allocated_heap_size,
        current
    );

    let (status, rest) = host.terminate();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(rest.contains("c-host: stopped on signal 15"), "{rest:?}");
    assert!(!host.socket.exists(), "the socket file was left behind");
}

#[test]
fn c_host_serves_the_push_when_the_ecall_is_out_of_threads() {
    let mut host = RunningHost::start(&["--busy"]);
    let [max, _, _, pushed_current] = host.figures;
    let report = host.memory("/node/memory");
    assert_eq!(report.origin, Some(ReportOrigin::OcallPush));
    assert_eq!(report.max_total_heap_size, max);
    assert_eq!(report.current_allocated_heap_size, pushed_current);
    assert_eq!(host.terminate().0.code(), Some(0));
}

/// A C host, unlike a Rust program, does not ignore SIGPIPE: without the signal mask the C ABI
/// gives the agent's threads, answering a client that already hung up kills the host. (Whether
/// hyper writes before it sees the hang-up is a race; 200 tries lose it every time here.)
#[test]
fn a_client_that_hangs_up_does_not_kill_the_c_host() {
    let mut host = RunningHost::start(&[]);
    // A first read fills the cache, so later answers are written at once, into closed sockets.
    host.memory("/node/memory");
    for _ in 0..200 {
        // Once the host is dead, connecting fails: the assertion below says why.
        let Ok(mut stream) = UnixStream::connect(&host.socket) else {
            break;
        };
        let _ = stream.write_all(b"GET /node/memory HTTP/1.1\r\nHost: agent\r\n\r\n");
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        host.child.try_wait().unwrap().is_none(),
        "c-host died: {:?}",
        host.child.try_wait()
    );
    host.memory("/node/memory");
    assert_eq!(host.terminate().0.code(), Some(0));
}
