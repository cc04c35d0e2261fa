//! The monitoring layer around the exporter, checked with the real tools: the Grafana dashboards
//! in `grafana/dashboards/` follow the provisioning conventions, and a real Prometheus that scrapes
//! the exporter (with the alert and recording rules of `deploy/prometheus/rules/` loaded) evaluates
//! every dashboard query and every rule without error, the dashboards with data.
//!
//! Grafana itself is not packaged for Debian, so the dashboards are checked structurally and by
//! running their PromQL, with the template variables replaced the way Grafana replaces them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Exporter;

/// The matchers every dashboard selector carries, so the job/instance/enclave pickers apply
/// everywhere.
const MATCHERS: [&str; 3] = [
    r#"job=~"$job""#,
    r#"instance=~"$instance""#,
    r#"enclave=~"$enclave""#,
];
/// Grafana unit ids the dashboards may use (a typo such as `byte` would silently show raw numbers).
const UNITS: &[&str] = &["bytes", "percentunit", "s", "none", "rps", "binBps"];
/// Variables Grafana defines itself.
const GRAFANA_VARIABLES: &[&str] = &["__rate_interval", "__interval", "__range", "__range_s"];
/// The scrape job of the live test; the rules' exporter selector is `job=~"enclave-heap.*"`.
const JOB: &str = "enclave-heap-exporter";
/// The rules file the live test loads when it exists.
const RULES: &str = "deploy/prometheus/rules/enclave-heap.rules.yml";

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Dashboard {
    file: String,
    json: Value,
    text: String,
}

fn dashboards() -> Vec<Dashboard> {
    let directory = repository().join("grafana/dashboards");
    let mut found: Vec<Dashboard> = std::fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("read {}: {error}", directory.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("{} is not valid JSON: {error}", path.display()));
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            Dashboard { file, json, text }
        })
        .collect();
    found.sort_by(|a, b| a.file.cmp(&b.file));
    let files: Vec<&str> = found.iter().map(|d| d.file.as_str()).collect();
    for expected in ["enclave-heap-overview.json", "enclave-heap-detail.json"] {
        assert!(files.contains(&expected), "{expected} missing: {files:?}");
    }
    found
}

/// Every panel, the panels of collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

fn targets(panel: &Value) -> &[Value] {
    panel["targets"].as_array().map_or(&[], Vec::as_slice)
}

fn is_layout(panel: &Value) -> bool {
    matches!(panel["type"].as_str(), Some("row" | "text"))
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_default()
}

fn variable<'a>(dashboard: &'a Value, name: &str) -> Option<&'a Value> {
    dashboard["templating"]["list"]
        .as_array()?
        .iter()
        .find(|variable| variable["name"] == name)
}

/// `$name` and `${name}` references in a query, in order.
fn variable_references(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let (braced, body) = match rest.strip_prefix('{') {
            Some(body) => (true, body),
            None => (false, rest),
        };
        let end = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        names.push(body[..end].to_owned());
        rest = &body[end + usize::from(braced && body[end..].starts_with('}'))..];
    }
    names
}

/// Replaces `$name` references (longest name first is not needed: names end at a non-word char).
fn substitute(expr: &str, values: &BTreeMap<&str, String>) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let body = &rest[at + 1..];
        let end = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        match values.get(&body[..end]) {
            Some(value) => out.push_str(value),
            None => panic!("no test value for ${} in {expr}", &body[..end]),
        }
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

/// Problems with the selectors and ranges of one query.
fn expr_problems(expr: &str, defined: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    // Every label-matcher block carries the three dashboard matchers.
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let close = open + rest[open..].find('}').expect("unclosed {");
        let block = &rest[open..=close];
        for matcher in MATCHERS {
            if !block.contains(matcher) {
                problems.push(format!("selector {block} lacks {matcher}"));
            }
        }
        rest = &rest[close + 1..];
    }
    // Every metric of ours is selected with such a block (a bare name would escape the pickers).
    for (at, _) in expr.match_indices("enclave_heap_") {
        let name_end = expr[at..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(expr.len(), |end| at + end);
        if !expr[name_end..].starts_with('{') {
            problems.push(format!("{} has no label matchers", &expr[at..name_end]));
        }
    }
    // rate, irate and increase use $__rate_interval (Grafana keeps it at least 4 scrapes long).
    for function in ["rate(", "increase("] {
        for (at, _) in expr.match_indices(function) {
            let open = at + function.len() - 1;
            let mut depth = 0;
            let mut close = expr.len();
            for (offset, c) in expr[open..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            close = open + offset;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let argument = &expr[open..close];
            if !argument.contains("[$__rate_interval]") {
                let call = &expr[at..(close + 1).min(expr.len())];
                problems.push(format!("{call} does not use $__rate_interval"));
            }
        }
    }
    for name in variable_references(expr) {
        if !defined.contains(&name) && !GRAFANA_VARIABLES.contains(&name.as_str()) {
            problems.push(format!("${name} is not a dashboard variable"));
        }
    }
    problems
}

fn datasource_is_the_variable(datasource: &Value) -> bool {
    datasource["uid"] == "${datasource}" && datasource["type"] == "prometheus"
}

fn dashboard_problems(dashboard: &Dashboard) -> Vec<String> {
    let json = &dashboard.json;
    let mut problems = Vec::new();
    let mut problem = |message: String| problems.push(format!("{}: {message}", dashboard.file));

    // Provisioned from files, not imported: no import inputs, no fixed id, a stable uid.
    if json.get("__inputs").is_some() || json.get("__requires").is_some() {
        problem("has import-only __inputs/__requires".into());
    }
    if dashboard.text.contains("${DS_") {
        problem("refers to an import placeholder ${DS_...}".into());
    }
    if !json["id"].is_null() {
        problem(format!("id must be null, is {}", json["id"]));
    }
    let stem = dashboard.file.trim_end_matches(".json");
    if json["uid"] != stem || stem.len() > 40 {
        problem(format!(
            "uid {} must equal the file name {stem} (at most 40 characters) so links stay stable",
            json["uid"]
        ));
    }
    if text(json, "title").is_empty() || text(json, "description").is_empty() {
        problem("needs a title and a description".into());
    }
    if json["schemaVersion"].as_u64().unwrap_or(0) < 36 {
        problem(format!(
            "schemaVersion {} is older than Grafana 9",
            json["schemaVersion"]
        ));
    }

    // Template variables.
    let defined: BTreeSet<String> = json["templating"]["list"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|variable| text(variable, "name").to_owned())
                .collect()
        })
        .unwrap_or_default();
    match variable(json, "datasource") {
        Some(datasource)
            if datasource["type"] == "datasource" && datasource["query"] == "prometheus" => {}
        other => problem(format!(
            "needs a datasource variable of type prometheus: {other:?}"
        )),
    }
    for (name, needs) in [
        ("job", &[][..]),
        ("instance", &[r#"job=~"$job""#][..]),
        (
            "enclave",
            &[r#"job=~"$job""#, r#"instance=~"$instance""#][..],
        ),
    ] {
        let Some(picker) = variable(json, name) else {
            problem(format!("variable {name} missing"));
            continue;
        };
        let query = picker["query"]
            .as_str()
            .or_else(|| picker["query"]["query"].as_str())
            .unwrap_or_default();
        if picker["type"] != "query"
            || picker["multi"] != true
            || picker["includeAll"] != true
            || !datasource_is_the_variable(&picker["datasource"])
            || !query.starts_with("label_values(")
            || needs.iter().any(|matcher| !query.contains(matcher))
        {
            problem(format!(
                "variable {name} must be a multi-select label_values query with All, on \
                 ${{datasource}}, narrowed by {needs:?}: {picker}"
            ));
        }
    }

    // Panels.
    let mut ids = HashSet::new();
    let mut boxes: Vec<(&str, [u64; 4])> = Vec::new();
    for panel in panels(json) {
        let title = text(panel, "title");
        let id = panel["id"].as_u64();
        if id.is_none() || !ids.insert(id) {
            problem(format!(
                "panel {title:?} has a missing or duplicate id {}",
                panel["id"]
            ));
        }
        if title.trim().is_empty() {
            problem(format!("panel {id:?} has no title"));
        }
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|key| grid[key].as_u64().unwrap_or(u64::MAX));
        if w == 0 || h == 0 || x.saturating_add(w) > 24 || y == u64::MAX {
            problem(format!("panel {title:?} has a bad gridPos {grid}"));
        } else {
            for (other, [ox, oy, ow, oh]) in &boxes {
                if x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h {
                    problem(format!("panels {title:?} and {other:?} overlap"));
                }
            }
            boxes.push((title, [x, y, w, h]));
        }
        if is_layout(panel) {
            continue;
        }
        if text(panel, "description").trim().is_empty() {
            problem(format!("panel {title:?} has no description"));
        }
        let unit = text(&panel["fieldConfig"]["defaults"], "unit");
        if !UNITS.contains(&unit) {
            problem(format!(
                "panel {title:?} has unit {unit:?}, expected one of {UNITS:?}"
            ));
        }
        let overrides = panel["fieldConfig"]["overrides"].as_array();
        for property in overrides
            .into_iter()
            .flatten()
            .flat_map(|o| o["properties"].as_array())
            .flatten()
        {
            if property["id"] == "unit" && !UNITS.contains(&text(property, "value")) {
                problem(format!(
                    "panel {title:?} overrides the unit with {}",
                    property["value"]
                ));
            }
        }
        if !datasource_is_the_variable(&panel["datasource"]) {
            problem(format!(
                "panel {title:?} datasource {} is not ${{datasource}}",
                panel["datasource"]
            ));
        }
        if targets(panel).is_empty() {
            problem(format!("panel {title:?} has no query"));
        }
        let mut ref_ids = HashSet::new();
        for target in targets(panel) {
            let ref_id = text(target, "refId");
            if ref_id.is_empty() || !ref_ids.insert(ref_id) {
                problem(format!(
                    "panel {title:?}: missing or duplicate refId {ref_id:?}"
                ));
            }
            if !datasource_is_the_variable(&target["datasource"]) {
                problem(format!(
                    "panel {title:?} query {ref_id}: datasource {} is not ${{datasource}}",
                    target["datasource"]
                ));
            }
            let expr = text(target, "expr");
            if expr.trim().is_empty() {
                problem(format!("panel {title:?} query {ref_id} is empty"));
            }
            for message in expr_problems(expr, &defined) {
                problem(format!("panel {title:?} query {ref_id}: {message}"));
            }
        }
    }
    problems
}

#[test]
fn dashboards_are_provisionable_and_follow_the_conventions() {
    let all = dashboards();
    let problems: Vec<String> = all.iter().flat_map(dashboard_problems).collect();
    assert!(
        problems.is_empty(),
        "dashboard problems:\n  {}",
        problems.join("\n  ")
    );
    let uids: HashSet<&Value> = all.iter().map(|dashboard| &dashboard.json["uid"]).collect();
    assert_eq!(uids.len(), all.len(), "dashboard uids must be unique");
}

#[test]
fn the_convention_checks_catch_what_they_are_for() {
    let defined: BTreeSet<String> = ["job", "instance", "enclave", "window"]
        .map(String::from)
        .into();
    let m = r#"job=~"$job", instance=~"$instance", enclave=~"$enclave""#;
    assert!(
        expr_problems(
            &format!("sum(rate(enclave_heap_read_errors_total{{{m}}}[$__rate_interval]))"),
            &defined
        )
        .is_empty()
    );
    let problems = |expr: &str| expr_problems(expr, &defined).join("; ");
    assert!(
        problems(&format!("rate(enclave_heap_read_errors_total{{{m}}}[5m])"))
            .contains("$__rate_interval")
    );
    assert!(
        problems(&format!("irate(enclave_heap_read_errors_total{{{m}}}[1m])"))
            .contains("$__rate_interval")
    );
    assert!(problems(r#"enclave_heap_up{job=~"$job"}"#).contains(r#"lacks enclave=~"$enclave""#));
    assert!(
        problems(&format!("enclave_heap_up{{{m}}} / enclave_heap_max_bytes"))
            .contains("enclave_heap_max_bytes has no label matchers")
    );
    assert!(
        problems(&format!(
            "max_over_time(enclave_heap_peak_allocated_bytes{{{m}}}[$windw])"
        ))
        .contains("$windw is not")
    );
    assert_eq!(
        variable_references("a[$__rate_interval] ${datasource} $job"),
        ["__rate_interval", "datasource", "job"]
    );
}

#[test]
fn provisioning_files_match_the_compose_mounts() {
    let root = repository().join("grafana/provisioning");
    let datasource = std::fs::read_to_string(root.join("datasources/prometheus.yaml")).unwrap();
    for line in [
        "uid: prometheus",
        "type: prometheus",
        "url: http://prometheus:9090",
    ] {
        assert!(
            datasource.lines().any(|l| l.trim() == line),
            "datasources/prometheus.yaml lacks `{line}`"
        );
    }
    let provider = std::fs::read_to_string(root.join("dashboards/enclave-heap.yaml")).unwrap();
    for line in ["type: file", "path: /var/lib/grafana/dashboards"] {
        assert!(
            provider.lines().any(|l| l.trim() == line),
            "dashboards/enclave-heap.yaml lacks `{line}`"
        );
    }
    // The datasource uid is the dashboards' default choice for the variable.
    for dashboard in dashboards() {
        let current = &variable(&dashboard.json, "datasource").unwrap()["current"]["value"];
        assert_eq!(current, "prometheus", "{}", dashboard.file);
    }
}

// ---------------------------------------------------------------------------------------------
// The live test: a real Prometheus scraping the real exporter.

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Prometheus {
    child: Child,
    address: SocketAddr,
    dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the API answered: `Ok(data)` for `"status": "success"`, `Err(message)` otherwise.
type ApiResult = Result<Value, String>;

impl Prometheus {
    fn start(target: SocketAddr, rules: Option<&Path>) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("ehe-monitoring-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dir = TempDir(dir);
        let rule_files = rules.map_or(String::new(), |rules| {
            format!("rule_files:\n  - '{}'\n", rules.display())
        });
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 {rule_files}scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        // Reserve a free port, release it, and hand it to Prometheus.
        let address = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = std::fs::File::create(dir.0.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run `prometheus` ({error}): this test needs the Prometheus server; \
                     install it with `apt-get install -y prometheus` (Debian/Ubuntu, as .ci/run \
                     does) or put a prometheus 2.x binary on PATH"
                )
            });
        let mut prometheus = Prometheus {
            child,
            address,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = prometheus.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}):\n{}", prometheus.log());
            }
            if get(address, "/-/ready").is_some_and(|(status, _)| status == 200) {
                return prometheus;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after 20 s:\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("prometheus.log")).unwrap_or_default()
    }

    fn api(&self, path: &str) -> ApiResult {
        let (status, body) = get(self.address, path).ok_or("no answer from prometheus")?;
        let body: Value = serde_json::from_str(&body)
            .map_err(|error| format!("HTTP {status}, not JSON ({error}): {body}"))?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!(
                "HTTP {status}: {} {}",
                body["errorType"], body["error"]
            ))
        }
    }

    /// An instant query; `at` pins the evaluation time (Unix seconds) so several answers agree.
    fn query(&self, promql: &str, at: Option<f64>) -> Result<Vec<Value>, String> {
        let time = at.map_or(String::new(), |at| format!("&time={at:.3}"));
        let data = self.api(&format!("/api/v1/query?query={}{time}", encode(promql)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain HTTP/1.0 GET (so the answer is never chunked); `None` if nothing listens yet.
fn get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn value(series: &Value) -> f64 {
    series["value"][1].as_str().unwrap().parse().unwrap()
}

fn label<'a>(series: &'a Value, name: &str) -> &'a str {
    series["metric"][name].as_str().unwrap_or_default()
}

/// `label_values(SELECTOR, LABEL)` as PromQL that returns one series per value.
fn label_values_as_promql(query: &str) -> String {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a label_values query: {query}"));
    let (selector, label) = inner
        .rsplit_once(',')
        .expect("label_values(selector, label)");
    format!("group by ({}) ({})", label.trim(), selector.trim())
}

/// Finds target `ref_id` of the panel titled `title`.
fn dashboard_query<'a>(dashboard: &'a Value, title: &str, ref_id: &str) -> &'a str {
    panels(dashboard)
        .into_iter()
        .find(|panel| panel["title"] == title)
        .and_then(|panel| {
            targets(panel)
                .iter()
                .find(|target| target["refId"] == ref_id)
        })
        .map(|target| text(target, "expr"))
        .unwrap_or_else(|| panic!("no panel {title:?} with query {ref_id}"))
}

#[test]
fn prometheus_evaluates_every_dashboard_query_and_rule() {
    let started = Instant::now();
    let exporter = Exporter::start(&[
        // Fills its 2 MiB heap in 90 s, long after the test is over: a steadily growing enclave
        // for time to exhaustion.
        "--source",
        "leak=sim:leak?heap_pages=512&period=90s",
        "--source",
        "steady=sim:steady?heap_pages=512",
        // Every read fails, so the error panels have data.
        "--source",
        "busy=sim:idle?fail=OE_OUT_OF_THREADS",
    ]);
    let rules = repository().join(RULES);
    let rules = rules.exists().then(|| rules.canonicalize().unwrap());
    let prometheus = Prometheus::start(exporter.address, rules.as_deref());
    let ready = started.elapsed();

    // About 16 s of one-second samples: enough for rates, quantiles and a trend.
    let deadline = Instant::now() + Duration::from_secs(35);
    loop {
        let samples = prometheus
            .query(
                r#"count_over_time(enclave_heap_allocated_bytes{enclave="leak"}[1m])"#,
                None,
            )
            .ok()
            .and_then(|result| result.first().map(value))
            .unwrap_or(0.0);
        if samples >= 16.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus collected only {samples} samples of the leak enclave:\n{}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let collected = started.elapsed();
    // Every query below is evaluated at this one instant, so their answers agree.
    let at: f64 = prometheus
        .api("/api/v1/query?query=time()")
        .map(|data| data["result"][1].as_str().unwrap().parse().unwrap())
        .expect("time()");

    // Grafana's substitutions: "All" as the dashboards' allValue `.*`, and a multi-select of the
    // real values, regex-escaped and quoted for a PromQL string as Grafana does.
    let instance_regex = exporter.address.to_string().replace('.', r"\\.");
    let fixed = [
        ("job", JOB.to_owned()),
        ("window", "5m".to_owned()),
        ("headroom", "25".to_owned()),
        ("trend", "1m".to_owned()),
        ("__rate_interval", "15s".to_owned()),
    ];
    let all: BTreeMap<&str, String> = fixed
        .iter()
        .cloned()
        .chain([("instance", ".*".to_owned()), ("enclave", ".*".to_owned())])
        .collect();
    let selected: BTreeMap<&str, String> = fixed
        .iter()
        .cloned()
        .chain([
            ("instance", format!("({instance_regex})")),
            ("enclave", "(busy|leak|steady)".to_owned()),
        ])
        .collect();

    let dashboards = dashboards();
    let mut failures = Vec::new();
    let mut evaluated = 0;
    for dashboard in &dashboards {
        // The pickers list what the exporter exports.
        for (name, expected) in [
            ("job", vec![JOB]),
            ("instance", vec![]),
            ("enclave", vec!["busy", "leak", "steady"]),
        ] {
            let picker = variable(&dashboard.json, name).unwrap();
            let promql = substitute(&label_values_as_promql(text(picker, "query")), &all);
            match prometheus.query(&promql, Some(at)) {
                Ok(result) => {
                    let mut values: Vec<&str> =
                        result.iter().map(|series| label(series, name)).collect();
                    values.sort_unstable();
                    if values.is_empty() || (!expected.is_empty() && values != expected) {
                        failures.push(format!(
                            "{}: variable {name} ({promql}) lists {values:?}",
                            dashboard.file
                        ));
                    }
                }
                Err(error) => failures.push(format!(
                    "{}: variable {name} ({promql}): {error}",
                    dashboard.file
                )),
            }
        }
        for panel in panels(&dashboard.json) {
            for target in targets(panel) {
                for (how, values) in [("All", &all), ("selected", &selected)] {
                    let promql = substitute(text(target, "expr"), values);
                    evaluated += 1;
                    let place = format!(
                        "{} / {:?} / {} ({how})",
                        dashboard.file,
                        text(panel, "title"),
                        text(target, "refId")
                    );
                    match prometheus.query(&promql, Some(at)) {
                        Ok(result) if result.is_empty() => {
                            failures.push(format!("{place}: no data from\n      {promql}"));
                        }
                        Ok(result) => {
                            if how == "All" {
                                println!("{place}: {} series", result.len());
                            }
                        }
                        Err(error) => {
                            failures.push(format!("{place}: {error}\n      {promql}"));
                        }
                    }
                }
            }
        }
    }

    // The headline numbers for the leaking enclave, from the detail dashboard's own queries.
    let detail = &dashboards
        .iter()
        .find(|d| d.file == "enclave-heap-detail.json")
        .unwrap()
        .json;
    let mut leak = all.clone();
    leak.insert("enclave", "leak".to_owned());
    let number = |title: &str, ref_id: &str| -> f64 {
        let promql = substitute(dashboard_query(detail, title, ref_id), &leak);
        let result = prometheus
            .query(&promql, Some(at))
            .unwrap_or_else(|error| panic!("{promql}: {error}"));
        assert_eq!(
            result.len(),
            1,
            "one series for the leak enclave: {promql} -> {result:?}"
        );
        value(&result[0])
    };
    let allocated = number("Allocated, peak, heap size", "A");
    let peak = number("Allocated, peak, heap size", "B");
    let max = number("Allocated, peak, heap size", "C");
    let exhaustion = number("Time to exhaustion", "A");
    let configured = number("NumHeapPages", "A");
    let recommended = number("NumHeapPages", "B");
    let peak_window = number("Peak over window and recommended heap size", "A");
    println!(
        "leak enclave: allocated {allocated} B, peak {peak} B, max {max} B; time to exhaustion \
         {exhaustion:.1} s (trend 1m); NumHeapPages configured {configured}, recommended \
         {recommended} (peak over 5m {peak_window} B + 25 %)"
    );
    assert!(
        exhaustion.is_finite() && exhaustion > 0.0 && exhaustion < 600.0,
        "the leak fills its heap in 90 s, so time to exhaustion must be a positive number of \
         seconds, not {exhaustion}"
    );
    assert_eq!(configured, 512.0);
    assert!(
        recommended.is_finite() && recommended.fract() == 0.0 && recommended >= 1.0,
        "recommended NumHeapPages must be a whole positive number: {recommended}"
    );
    assert_eq!(
        recommended,
        (peak_window * 1.25 / 4096.0).ceil(),
        "recommended = ceil(peak over window × 1.25 / 4096)"
    );

    // The rules: every rule healthy after several evaluations, and every expression evaluates.
    let mut rule_count = 0;
    if let Some(rules) = &rules {
        let groups = prometheus.api("/api/v1/rules").expect("/api/v1/rules");
        let groups = groups["groups"].as_array().cloned().unwrap_or_default();
        if groups.is_empty() {
            failures.push(format!("{} loaded no rule groups", rules.display()));
        }
        for group in &groups {
            for rule in group["rules"].as_array().into_iter().flatten() {
                rule_count += 1;
                let name = text(rule, "name");
                let place = format!("rule {} / {name}", text(group, "name"));
                if rule["health"] != "ok" {
                    failures.push(format!(
                        "{place}: health {} {}",
                        rule["health"], rule["lastError"]
                    ));
                }
                if let Err(error) = prometheus.query(text(rule, "query"), Some(at)) {
                    failures.push(format!("{place}: {error}"));
                }
            }
        }
        let recorded = prometheus
            .query(
                r#"enclave:enclave_heap_exhaustion:seconds{enclave="leak"}"#,
                Some(at),
            )
            .ok()
            .and_then(|result| result.first().map(value));
        println!(
            "rules: {rule_count} rules in {} groups healthy; recorded \
             enclave:enclave_heap_exhaustion:seconds{{enclave=\"leak\"}} = {recorded:?}",
            groups.len()
        );
    } else {
        println!("no {RULES} yet: rules not checked");
    }

    println!(
        "evaluated {evaluated} dashboard queries and {rule_count} rules; exporter and prometheus \
         ready after {ready:?}, data after {collected:?}, done after {:?}",
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n  {}\nprometheus log:\n{}",
        failures.len(),
        failures.join("\n  "),
        prometheus.log()
    );
}
