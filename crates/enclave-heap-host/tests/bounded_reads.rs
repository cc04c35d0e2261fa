//! One read in flight per source, however many requests arrive and however long a read hangs:
//! the agent (and through the same `Coalescer`, the exporter) answers a storm of requests for an
//! enclave whose "ECALL" never returns with timeouts, while exactly one read runs; when it finally
//! returns, the next request starts exactly one new read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use enclave_heap_host::agent::{AgentConfig, AgentEnclave, AgentServer, AgentSocket};
use enclave_heap_host::coalesce::ReadPolicy;
use enclave_heap_host::{HeapSnapshot, HeapSource, ReadError, SnapshotOrigin, SourceKind};

/// Test double: every read blocks until the test opens the gate, like an ECALL that hangs;
/// counts reads started and the most ever running at once.
#[derive(Debug, Default)]
struct HangingSource {
    open: Mutex<bool>,
    opened: Condvar,
    started: AtomicUsize,
    running: AtomicUsize,
    most_running: AtomicUsize,
}

impl HangingSource {
    fn open_gate(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl HeapSource for HangingSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Simulated
    }

    fn read(&self) -> Result<HeapSnapshot, ReadError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(now, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        while !*open {
            // Bounded, so a failing test cannot leave a thread behind forever.
            let (guard, timeout) = self
                .opened
                .wait_timeout(open, Duration::from_secs(30))
                .unwrap();
            open = guard;
            if timeout.timed_out() {
                break;
            }
        }
        drop(open);
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(HeapSnapshot::from_mallinfo(
            &openenclave_sys::oe_mallinfo_t {
                max_total_heap_size: 65536,
                current_allocated_heap_size: 24,
                peak_allocated_heap_size: 24,
            },
            SnapshotOrigin::Ecall,
        ))
    }
}

fn status(socket: &Path) -> u16 {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /node/memory HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap()
}

#[test]
fn a_hung_read_is_the_only_read_whatever_the_request_load() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let source = Arc::new(HangingSource::default());
    let agent = AgentServer::start(
        AgentConfig {
            socket: Some(AgentSocket {
                path: socket.clone(),
                group: None,
            }),
            policy: ReadPolicy {
                timeout: Duration::from_millis(200),
                min_interval: Duration::ZERO,
            },
            ..AgentConfig::default()
        },
        vec![AgentEnclave {
            name: "app".to_owned(),
            source: Arc::clone(&source) as Arc<dyn HeapSource>,
        }],
    )
    .unwrap();
    for round in 0..3 {
        let statuses: Vec<u16> = std::thread::scope(|scope| {
            let requests: Vec<_> = (0..40).map(|_| scope.spawn(|| status(&socket))).collect();
            requests.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert!(
            statuses.iter().all(|&status| status == 504),
            "round {round}: {statuses:?}"
        );
        assert_eq!(source.started.load(Ordering::SeqCst), 1, "round {round}");
        assert_eq!(source.most_running.load(Ordering::SeqCst), 1);
    }
    // The "ECALL" returns at last: the next request starts one new read, which succeeds.
    source.open_gate();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while source.running.load(Ordering::SeqCst) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the read never returned"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(status(&socket), 200);
    assert_eq!(source.started.load(Ordering::SeqCst), 2);
    assert_eq!(source.most_running.load(Ordering::SeqCst), 1);
    agent.stop();
}
