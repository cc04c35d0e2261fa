//! Property tests of the host crate's parsers that see outside input: source URLs
//! (`--source`), Prometheus durations (flags and URLs), and the agent's JSON as a sidecar reads
//! it (memory reports, enclave lists, `to_snapshot`). None may panic on any input; every error
//! names the input; what can round-trip does. The same parsers have cargo-fuzz targets in
//! `fuzz/` (nightly only).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use enclave_heap_host::agent_client::{AgentReadError, parse_enclave_list, parse_memory_report};
use enclave_heap_host::agent_protocol::{EnclaveEntry, MemoryReport, ReportOrigin};
use enclave_heap_host::sim::Profile;
use enclave_heap_host::{PromDuration, SnapshotOrigin, SourceSpec};
use openenclave_sys::OE_RESULT_NAMES;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings that look like source URLs: a plausible scheme, then URL-ish characters, including
/// percent escapes, query separators and non-ASCII.
fn url_like() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "sim:",
            "oe:",
            "oe://",
            "oe:///",
            "unix:",
            "unix://",
            "unix:///",
            "http://",
            "https://",
            "ftp://",
            "",
            ":",
            "sim:leak?",
            "sim:?",
        ]),
        "[a-zA-Z0-9/?&=%:._*~ é-]{0,60}",
    )
        .prop_map(|(scheme, rest)| format!("{scheme}{rest}"))
}

/// `sim:` query values: mostly plausible, sometimes not.
fn sim_parameter() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "heap_pages",
        "period",
        "seed",
        "fail",
        "delay",
        "push",
        "colour",
    ]);
    let value = prop_oneof![
        (0_u64..100_000).prop_map(|n| n.to_string()),
        (0_u64..10_000).prop_map(|n| format!("{n}ms")),
        prop::sample::select(OE_RESULT_NAMES.to_vec()).prop_map(str::to_owned),
        (0_u32..100_000).prop_map(|n| format!("OE_RESULT_{n}")),
        "[ -~]{0,12}",
    ];
    (key, value).prop_map(|(key, value)| format!("{key}={value}"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn source_urls_never_panic_and_errors_name_the_url(url in prop_oneof![any::<String>(), url_like()]) {
        match url.parse::<SourceSpec>() {
            Ok(spec) => prop_assert_eq!(spec.url(), url.as_str()),
            Err(error) => {
                let message = error.to_string();
                prop_assert!(message.contains(&format!("{url:?}")), "{}", message);
            }
        }
    }

    #[test]
    fn sim_urls_with_any_parameters_never_panic(
        profile in prop::sample::select(vec!["", "idle", "steady", "sawtooth", "leak", "spike", "nope"]),
        parameters in prop::collection::vec(sim_parameter(), 0..6),
    ) {
        let url = format!("sim:{profile}?{}", parameters.join("&"));
        match url.parse::<SourceSpec>() {
            Ok(SourceSpec::Simulated { config, .. }) => {
                // Accepted parameters are the ones given.
                if let Some(fail) = config.fail {
                    prop_assert!(fail != 0);
                }
            }
            Ok(other) => prop_assert!(false, "{url} parsed as {other:?}"),
            Err(error) => {
                let message = error.to_string();
                prop_assert!(message.contains(&format!("{url:?}")), "{}", message);
            }
        }
    }

    #[test]
    fn valid_sim_urls_round_trip_their_settings(
        profile in prop::sample::select(Profile::ALL.to_vec()),
        heap_pages in 16_usize..100_000,
        period_ms in 1_u64..10_000_000,
        seed in any::<u64>(),
        fail in prop::option::of(1_u32..100_000),
    ) {
        let period = PromDuration(Duration::from_millis(period_ms));
        let mut url = format!("sim:{profile}?heap_pages={heap_pages}&period={period}&seed={seed}");
        if let Some(code) = fail {
            match OE_RESULT_NAMES.get(code as usize) {
                Some(name) => url.push_str(&format!("&fail={name}")),
                None => url.push_str(&format!("&fail=OE_RESULT_{code}")),
            }
        }
        let Ok(SourceSpec::Simulated { config, .. }) = url.parse::<SourceSpec>() else {
            return Err(TestCaseError::fail(format!("{url} did not parse")));
        };
        prop_assert_eq!(config.profile, profile);
        prop_assert_eq!(config.heap_pages, heap_pages);
        prop_assert_eq!(config.period, period.0);
        prop_assert_eq!(config.seed, seed);
        prop_assert_eq!(config.fail, fail);
    }

    #[test]
    fn durations_never_panic_and_errors_name_the_input(
        input in prop_oneof![any::<String>(), "[0-9ywdhms.+ -]{0,24}"],
    ) {
        if let Err(error) = input.parse::<PromDuration>() {
            prop_assert!(error.to_string().contains(&format!("{input:?}")), "{}", error);
        }
    }

    #[test]
    fn durations_round_trip_through_display(millis in any::<u64>()) {
        let duration = PromDuration(Duration::from_millis(millis));
        let shown = duration.to_string();
        prop_assert_eq!(shown.parse::<PromDuration>(), Ok(duration), "{}", shown);
    }

    #[test]
    fn memory_report_bodies_never_panic(body in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_object().prop_map(String::into_bytes),
    ]) {
        match parse_memory_report(&body) {
            Ok(report) => {
                let snapshot = report.to_snapshot();
                prop_assert_eq!(snapshot.max_total_heap_size, report.max_total_heap_size);
                prop_assert_eq!(snapshot.current_allocated_heap_size, report.current_allocated_heap_size);
                prop_assert_eq!(snapshot.peak_allocated_heap_size, report.peak_allocated_heap_size);
            }
            Err(AgentReadError::InvalidResponse(message)) => {
                prop_assert!(message.chars().count() <= 301, "{}", message);
            }
            Err(other) => prop_assert!(false, "unexpected error kind {other:?}"),
        }
    }

    #[test]
    fn enclave_list_bodies_never_panic(body in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        prop::collection::vec(json_object(), 0..4)
            .prop_map(|entries| format!("{{\"enclaves\":[{}]}}", entries.join(",")).into_bytes()),
    ]) {
        match parse_enclave_list(&body) {
            Ok(list) => {
                for entry in list.enclaves {
                    if let EnclaveEntry::Memory(report) = entry {
                        let _ = report.to_snapshot();
                    }
                }
            }
            Err(AgentReadError::InvalidResponse(message)) => {
                prop_assert!(message.chars().count() <= 301, "{}", message);
            }
            Err(other) => prop_assert!(false, "unexpected error kind {other:?}"),
        }
    }

    #[test]
    fn memory_reports_round_trip_and_any_age_is_safe(
        max in any::<u64>(),
        current in any::<u64>(),
        peak in any::<u64>(),
        origin in prop::option::of(prop::sample::select(vec![ReportOrigin::Ecall, ReportOrigin::OcallPush])),
        age in prop::option::of(0.0_f64..1e6),
        hostile_age in any::<f64>(),
    ) {
        let report = MemoryReport {
            max_total_heap_size: max,
            current_allocated_heap_size: current,
            peak_allocated_heap_size: peak,
            enclave: Some("app".to_owned()),
            origin,
            age_seconds: age,
        };
        let body = serde_json::to_vec(&report).unwrap();
        let parsed = parse_memory_report(&body).unwrap();
        // serde_json (without its float_roundtrip feature) may lose the last bit of a float:
        // the age compares within a relative 1e-12, everything else exactly.
        if let (Some(sent), Some(read)) = (report.age_seconds, parsed.age_seconds) {
            prop_assert!((sent - read).abs() <= sent.abs() * 1e-12, "{} vs {}", sent, read);
        }
        prop_assert_eq!(
            &MemoryReport { age_seconds: report.age_seconds, ..parsed.clone() },
            &report
        );
        let snapshot = parsed.to_snapshot();
        prop_assert_eq!(
            snapshot.origin,
            if origin == Some(ReportOrigin::OcallPush) { SnapshotOrigin::OcallPush } else { SnapshotOrigin::Ecall }
        );
        // NaN, infinities, negatives, subnormals, huge: never a panic, never a date in the future.
        let hostile = MemoryReport { age_seconds: Some(hostile_age), ..report };
        prop_assert!(hostile.to_snapshot().taken_at <= std::time::Instant::now());
    }
}

/// JSON objects with the heap fields (or not), holding numbers of every kind, strings, arrays
/// and nested objects.
fn json_object() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("18446744073709551616".to_owned()),
        Just("1e400".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        "[a-z]{0,8}".prop_map(|s| format!("{s:?}")),
        Just("[1,2,3]".to_owned()),
        Just("{\"nested\":{}}".to_owned()),
    ];
    let key = prop::sample::select(vec![
        "max_total_heap_size",
        "current_allocated_heap_size",
        "peak_allocated_heap_size",
        "age_seconds",
        "origin",
        "enclave",
        "error",
        "message",
        "other",
    ]);
    prop::collection::vec((key, value), 0..8).prop_map(|fields| {
        let fields: Vec<String> = fields
            .into_iter()
            .map(|(key, value)| format!("{key:?}:{value}"))
            .collect();
        format!("{{{}}}", fields.join(","))
    })
}
