//! A real Prometheus server scrapes the exporter: the wire format it negotiates (OpenMetrics)
//! parses, and the gauges arrive with the right labels and values.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Exporter, request};

struct Prometheus {
    child: Child,
    address: std::net::SocketAddr,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start_prometheus(target: std::net::SocketAddr) -> Prometheus {
    let dir = std::env::temp_dir().join(format!("ehe-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: enclave-heap\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    // Reserve a free port, release it, and hand it to Prometheus.
    let address = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={address}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the prometheus server is needed for this test: `apt-get install -y prometheus` (Debian)");
    Prometheus {
        child,
        address,
        _dir: TempDir(dir),
    }
}

fn query(prometheus: &Prometheus, promql: &str) -> Option<Vec<Value>> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let address = prometheus.address;
    // Prometheus may not be listening yet; a refused connection is a "not yet".
    std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).ok()?;
    let response = request(
        address,
        "GET",
        &format!("/api/v1/query?query={encoded}"),
        &[],
    );
    if response.status != 200 {
        return None;
    }
    let body: Value = serde_json::from_str(&response.body).ok()?;
    body["data"]["result"].as_array().cloned()
}

fn value(series: &Value) -> f64 {
    series["value"][1].as_str().unwrap().parse().unwrap()
}

#[test]
fn prometheus_scrapes_the_exporter() {
    let exporter = Exporter::start(&[
        "--source",
        "steady=sim:steady?heap_pages=512",
        "--source",
        "leak=sim:leak?heap_pages=512&period=20s",
        "--source",
        "busy=sim:idle?fail=OE_OUT_OF_THREADS",
    ]);
    let prometheus = start_prometheus(exporter.address);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = query(&prometheus, "enclave_heap_up").unwrap_or_default();
        if up.len() == 3 {
            for series in &up {
                let enclave = series["metric"]["enclave"].as_str().unwrap();
                assert_eq!(series["metric"]["job"], "enclave-heap");
                assert_eq!(
                    value(series),
                    if enclave == "busy" { 0.0 } else { 1.0 },
                    "{series}"
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw the exporter's series: {up:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let target_up = query(&prometheus, "up{job=\"enclave-heap\"}").unwrap();
    assert_eq!(
        value(&target_up[0]),
        1.0,
        "the scrape itself failed: {target_up:?}"
    );
    let max = query(&prometheus, "enclave_heap_max_bytes").unwrap();
    assert_eq!(
        max.len(),
        2,
        "no heap gauges for the failing enclave: {max:?}"
    );
    for series in &max {
        assert_eq!(value(series), 512.0 * 4096.0);
    }
    let utilisation = query(
        &prometheus,
        "enclave_heap_allocated_bytes / enclave_heap_max_bytes <= enclave_heap_peak_allocated_bytes / enclave_heap_max_bytes",
    )
    .unwrap();
    assert_eq!(
        utilisation.len(),
        2,
        "allocated <= peak must hold for both: {utilisation:?}"
    );
    let errors = query(
        &prometheus,
        "enclave_heap_read_errors_total{enclave=\"busy\"}",
    )
    .unwrap();
    assert_eq!(errors[0]["metric"]["result"], "OE_OUT_OF_THREADS");
    assert!(value(&errors[0]) >= 1.0);
}
