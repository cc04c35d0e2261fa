//! The landing page in a real browser: headless Chromium renders it and takes a screenshot
//! (written to `target/tmp/landing-page.png`), and the rendered DOM has a bar per enclave.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Exporter, wait_with_timeout};

fn chromium() -> PathBuf {
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(output) = Command::new("which").arg(candidate).output() {
            if output.status.success() {
                return PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
            }
        }
    }
    panic!("headless Chromium is needed for this test: `apt-get install -y chromium` (Debian)");
}

/// Runs Chromium headless with `args` on `url`; returns stdout. Bounded to 60 s.
fn run_chromium(profile: &Path, args: &[&str], url: &str) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        use std::io::Read as _;
        let _ = std::io::BufReader::new(stdout).read_to_string(&mut text);
        text
    });
    let status = wait_with_timeout(&mut child, Duration::from_secs(60));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("chromium did not finish within 60 s");
    }
    reader.join().unwrap()
}

#[test]
fn the_landing_page_renders_bars_in_chromium() {
    let exporter = Exporter::start(&[
        "--source",
        "app=sim:sawtooth?heap_pages=1024&period=20s",
        "--source",
        "leaky=sim:leak?heap_pages=512&period=10s",
        "--source",
        "busy=sim:idle?fail=OE_OUT_OF_THREADS",
    ]);
    // Let the workloads allocate something worth drawing.
    std::thread::sleep(Duration::from_secs(2));
    let url = format!("http://{}/", exporter.address);
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let profile = out.join(format!("chromium-profile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);

    let dom = run_chromium(&profile, &["--dump-dom"], &url);
    for name in ["app", "leaky", "busy"] {
        assert!(
            dom.contains(&format!("id=\"enclave-{name}\"")),
            "no section for {name}:\n{dom}"
        );
    }
    assert_eq!(
        dom.matches("class=\"bar\"").count(),
        2,
        "two enclaves are up:\n{dom}"
    );
    assert!(dom.contains("SIMULATED"));
    assert!(dom.contains("OE_OUT_OF_THREADS"));

    let screenshot = out.join("landing-page.png");
    let _ = std::fs::remove_file(&screenshot);
    run_chromium(
        &profile,
        &[
            "--window-size=1000,900",
            &format!("--screenshot={}", screenshot.display()),
        ],
        &url,
    );
    let png = std::fs::read(&screenshot)
        .unwrap_or_else(|err| panic!("no screenshot at {}: {err}", screenshot.display()));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1000, 900));
    assert!(
        png.len() > 10_000,
        "suspiciously small screenshot: {} bytes",
        png.len()
    );
    println!("landing page screenshot: {}", screenshot.display());
    let _ = std::fs::remove_dir_all(&profile);
}
