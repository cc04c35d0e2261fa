//! Whatever a client sends on a connection, through the shared serving loop's per-connection
//! path (`http_server::serve_connection`: hyper's parser, the body and request limits, the
//! deadlines) over an in-memory stream: the connection ends with an answer or a close, within a
//! bounded time, and never panics.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use enclave_heap_host::http_server::{Peer, ServeOptions, serve_connection};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

async fn handler(request: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = format!("{} {}\n", request.method(), request.uri().path());
    Response::new(Full::new(Bytes::from(body)))
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let options = ServeOptions {
            header_read_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(200),
            max_requests: 1,
            ..ServeOptions::default()
        };
        let serving = tokio::spawn(serve_connection(server, Peer::Unix(None), handler, options));
        let (mut read, mut write) = tokio::io::split(client);
        let _ = write.write_all(data).await;
        let _ = write.shutdown().await;
        let mut answer = Vec::new();
        let ended =
            tokio::time::timeout(Duration::from_secs(5), read.read_to_end(&mut answer)).await;
        assert!(ended.is_ok(), "the connection neither answered nor closed");
        if !answer.is_empty() {
            assert!(
                answer.starts_with(b"HTTP/1."),
                "{:?}",
                String::from_utf8_lossy(&answer)
            );
        }
        // The connection task ends by itself (an error is a normal way to end).
        let finished = tokio::time::timeout(Duration::from_secs(5), serving).await;
        assert!(
            matches!(finished, Ok(Ok(_))),
            "the connection task did not end cleanly"
        );
    });
});
