//! The landing page at `/`: each enclave's allocated, peak and max heap as bars with the numbers,
//! so an operator with only `kubectl port-forward` and a browser sees the state at a glance.
//!
//! Server-rendered HTML and inline CSS: no script, no external assets, nothing to fetch. The
//! figures are read like a scrape (through the same coalesced reads), so opening the page never
//! causes extra ECALLs beyond `--source.min-interval`.

use std::fmt::Write as _;

use crate::build_info;
use crate::collector::SourceReading;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem;color:#1f2328}\
h1{font-size:1.5rem}h2{font-size:1.1rem;margin:0}table{border-collapse:collapse}\
.enclave{border:1px solid #d0d7de;border-radius:6px;padding:1rem;margin:1rem 0}\
.head{display:flex;gap:.75rem;align-items:baseline}\
.badge{font-size:.75rem;padding:.1rem .4rem;border-radius:4px;background:#ddf4ff}\
.sim{background:#ffebe9;color:#82071e;font-weight:bold}\
.down{background:#ffebe9;color:#82071e}\
.bar{position:relative;height:1.5rem;background:#f6f8fa;border:1px solid #d0d7de;border-radius:4px;margin:.5rem 0}\
.alloc{position:absolute;left:0;top:0;bottom:0;background:#54aeff}\
.alloc.warn{background:#d4a72c}.alloc.crit{background:#cf222e}\
.peak{position:absolute;top:-3px;bottom:-3px;width:3px;background:#1f2328}\
.figures td{padding:.1rem .75rem .1rem 0;font-variant-numeric:tabular-nums}\
.legend{font-size:.85rem;color:#57606a}";

/// Renders the page for one set of readings.
pub fn render(readings: &[SourceReading], telemetry_path: &str) -> String {
    let mut page = String::with_capacity(4096);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>Enclave Heap Exporter</title><style>{STYLE}</style></head><body>\
         <h1>Enclave Heap Exporter</h1>\
         <p><a href=\"{path}\">Metrics</a> · <a href=\"/-/healthy\">Health</a> · \
         <a href=\"/-/ready\">Readiness</a></p>\
         <p class=\"legend\">Bar: heap allocated now, as a share of the signed heap size \
         (NumHeapPages × 4096). Black mark: peak (OE's dlmalloc reports its peak footprint).</p>",
        path = escape(telemetry_path),
    );
    for reading in readings {
        enclave(&mut page, reading);
    }
    let _ = writeln!(
        page,
        "<p class=\"legend\">Version {} ({})</p></body></html>",
        escape(build_info::VERSION),
        escape(build_info::REVISION)
    );
    page
}

fn enclave(page: &mut String, reading: &SourceReading) {
    let name = escape(&reading.name);
    let _ = write!(
        page,
        "<section class=\"enclave\" id=\"enclave-{name}\"><div class=\"head\"><h2>{name}</h2>\
         <span class=\"badge{sim}\">{kind}</span>",
        sim = if reading.kind == "simulated" {
            " sim"
        } else {
            ""
        },
        kind = if reading.kind == "simulated" {
            "SIMULATED"
        } else {
            reading.kind
        },
    );
    match &reading.outcome {
        Ok(snapshot) => {
            let max = snapshot.max_total_heap_size;
            let allocated = snapshot.current_allocated_heap_size;
            let peak = snapshot.peak_allocated_heap_size;
            let share = |part: u64| {
                if max == 0 {
                    0.0
                } else {
                    (part as f64 / max as f64 * 100.0).clamp(0.0, 100.0)
                }
            };
            let (allocated_share, peak_share) = (share(allocated), share(peak));
            let level = if allocated_share >= 95.0 {
                " crit"
            } else if allocated_share >= 90.0 {
                " warn"
            } else {
                ""
            };
            let _ = write!(
                page,
                "</div><div class=\"bar\" role=\"img\" aria-label=\"{allocated_share:.1}% allocated, peak {peak_share:.1}%\">\
                 <div class=\"alloc{level}\" style=\"width:{allocated_share:.2}%\"></div>\
                 <div class=\"peak\" style=\"left:calc({peak_share:.2}% - 1px)\"></div></div>\
                 <table class=\"figures\"><tr><td>allocated</td><td>{}</td><td>{allocated_share:.1}%</td></tr>\
                 <tr><td>peak</td><td>{}</td><td>{peak_share:.1}%</td></tr>\
                 <tr><td>max</td><td>{}</td><td>{} pages</td></tr></table>",
                bytes(allocated),
                bytes(peak),
                bytes(max),
                max / 4096,
            );
        }
        Err(failure) => {
            let _ = write!(
                page,
                "<span class=\"badge down\">down</span></div><p>{}</p>",
                escape(&failure.to_string())
            );
        }
    }
    page.push_str("</section>");
}

/// Bytes in binary units with the exact count, e.g. `12.5 MiB (13107200 bytes)`.
fn bytes(count: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if count < 1024 {
        return format!("{count} bytes");
    }
    let mut value = count as f64;
    let mut unit = "bytes";
    for next in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit} ({count} bytes)")
}

fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use enclave_heap_host::{HeapSnapshot, OeResult, ReadError, ReadFailure, SnapshotOrigin};

    use super::*;

    fn reading(
        name: &str,
        kind: &'static str,
        outcome: Result<HeapSnapshot, ReadFailure>,
    ) -> SourceReading {
        SourceReading {
            name: Arc::from(name),
            kind,
            outcome,
        }
    }

    fn snapshot(max: u64, allocated: u64, peak: u64) -> HeapSnapshot {
        HeapSnapshot {
            max_total_heap_size: max,
            current_allocated_heap_size: allocated,
            peak_allocated_heap_size: peak,
            origin: SnapshotOrigin::Ecall,
            taken_at: Instant::now(),
        }
    }

    #[test]
    fn bars_numbers_and_badges() {
        let page = render(
            &[
                reading("app", "agent", Ok(snapshot(1 << 20, 1 << 19, 3 << 18))),
                reading(
                    "full",
                    "simulated",
                    Ok(snapshot(4096 * 16, 4096 * 16, 4096 * 16)),
                ),
                reading(
                    "busy<x>",
                    "openenclave",
                    Err(ReadFailure::Source(ReadError::Ecall(OeResult(6)))),
                ),
            ],
            "/metrics",
        );
        assert!(
            page.contains("<div class=\"alloc\" style=\"width:50.00%\"></div>"),
            "{page}"
        );
        assert!(page.contains("left:calc(75.00% - 1px)"));
        assert!(page.contains("512.0 KiB (524288 bytes)"));
        assert!(page.contains("1.0 MiB (1048576 bytes)</td><td>256 pages"));
        assert!(page.contains("<div class=\"alloc crit\" style=\"width:100.00%\">"));
        assert!(page.contains("<span class=\"badge sim\">SIMULATED</span>"));
        assert!(page.contains("busy&lt;x&gt;"));
        assert!(page.contains("the mallinfo ECALL failed: OE_OUT_OF_THREADS"));
        assert!(!page.contains("<script"));
        assert!(!page.contains("src=\"http"));
    }

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(bytes(24), "24 bytes");
        assert_eq!(bytes(16 * 1024 * 1024), "16.0 MiB (16777216 bytes)");
        assert_eq!(bytes(u64::MAX).split(' ').nth(1), Some("PiB"));
    }
}
