//! The Kubernetes manifests in `k8s/`: valid for a pinned Kubernetes version (checked with the
//! `kubernetes-validate` tool from PyPI), and consistent with each other and with the config they
//! mount (files listed by the kustomization exist, every secret the config names is provided, the
//! grace period outlasts the drain deadline, the probes hit the telemetry port).
//!
//! Without `kubernetes-validate` on PATH the validation test skips with a message, unless `CI` is
//! set: in CI a missing tool fails the test (`pip install kubernetes-validate==1.37.0`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The Kubernetes version the manifests are validated against.
const KUBERNETES_VERSION: &str = "1.33.0";

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every `k8s/*.yaml`, sorted.
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .unwrap_or_else(|e| panic!("listing k8s/: {e}"))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn manifests_validate_against_pinned_kubernetes() {
    let tool = "kubernetes-validate";
    if Command::new(tool).arg("--version").output().is_err() {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is not installed, and CI must validate k8s/: pip install kubernetes-validate==1.37.0");
        }
        eprintln!(
            "SKIPPED k8s validation: {tool} not on PATH (pip install kubernetes-validate==1.37.0)"
        );
        return;
    }
    let files = manifests();
    assert!(
        files.len() >= 5,
        "expected the k8s manifests, found {files:?}"
    );
    let output = Command::new(tool)
        .args(["--kubernetes-version", KUBERNETES_VERSION, "--strict"])
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{tool} failed ({}):\n{text}",
        output.status
    );
    assert!(!text.contains("ERROR"), "{tool} reported errors:\n{text}");
    // Every manifest except the kustomization (a kustomize file, not an API object) must have been
    // checked against a schema, not skipped for want of one.
    for file in &files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name == "kustomization.yaml" {
            continue;
        }
        assert!(
            text.lines()
                .any(|l| l.contains(name) && l.contains("passed")),
            "{name} was not validated against a schema:\n{text}"
        );
    }
}

/// The indented `- item` lines under a top-level `key:` in a simple YAML file.
fn yaml_list(text: &str, key: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with(&format!("{key}:")) {
            inside = true;
            continue;
        }
        if inside {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if !line.starts_with(' ') {
                break;
            }
            if let Some(item) = trimmed.strip_prefix("- ") {
                items.push(item.trim().to_owned());
            }
        }
    }
    items
}

/// The value after `key:` on the first line that has it (trimmed, quotes removed).
fn yaml_scalar(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        line.trim().strip_prefix(&format!("{key}:")).map(|v| {
            v.split('#')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"')
                .to_owned()
        })
    })
}

fn parse_duration(text: &str) -> Duration {
    let (num, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = num.parse().unwrap_or_else(|_| panic!("duration {text:?}"));
    match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => panic!("duration {text:?}: unknown unit"),
    }
}

fn config() -> toml::Value {
    let path = k8s_dir().join("config/config.toml");
    toml::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn kustomization_names_only_files_that_exist() {
    let dir = k8s_dir();
    let kustomization = read(&dir.join("kustomization.yaml"));
    let resources = yaml_list(&kustomization, "resources");
    assert!(resources.len() >= 4, "resources: {resources:?}");
    for r in &resources {
        assert!(
            dir.join(r).is_file(),
            "kustomization.yaml lists {r}, which does not exist"
        );
    }
    assert!(
        !resources.iter().any(|r| r.contains("secret")),
        "real secrets are created by the operator, never applied from the repo"
    );
    // configMapGenerator `- key=path` entries.
    let generated: Vec<(String, String)> = kustomization
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .filter_map(|item| item.split_once('='))
        .map(|(k, p)| (k.trim().to_owned(), p.trim().to_owned()))
        .collect();
    assert_eq!(
        generated.len(),
        3,
        "configMapGenerator files: {generated:?}"
    );
    let deployment = read(&dir.join("deployment.yaml"));
    for (key, path) in &generated {
        assert!(
            dir.join(path).is_file(),
            "configMapGenerator file {path} does not exist"
        );
        assert!(
            deployment.contains(&format!("key: {key}")),
            "deployment.yaml does not mount ConfigMap key {key}"
        );
    }
    // Templates the config names must be mounted where the config looks for them.
    let config = config();
    for dest in config["destinations"].as_array().expect("destinations") {
        for toggle in ["events", "users"] {
            if let Some(t) = dest
                .get(toggle)
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
            {
                assert!(
                    deployment.contains(&format!("path: {t}")),
                    "config template {t} is not mounted by deployment.yaml"
                );
            }
        }
    }
}

#[test]
fn grace_period_outlasts_the_drain_deadline() {
    let deployment = read(&k8s_dir().join("deployment.yaml"));
    let grace: u64 = yaml_scalar(&deployment, "terminationGracePeriodSeconds")
        .and_then(|v| v.parse().ok())
        .expect("terminationGracePeriodSeconds");
    let config = config();
    let drain = parse_duration(
        config["pipeline"]["drain_timeout"]
            .as_str()
            .expect("pipeline.drain_timeout"),
    );
    // The margin covers the final commit and process exit after the drain deadline.
    assert!(
        Duration::from_secs(grace) >= drain + Duration::from_secs(10),
        "terminationGracePeriodSeconds {grace}s must exceed drain_timeout {drain:?} by 10s"
    );
}

#[test]
fn every_secret_the_config_names_is_provided() {
    let config = config();
    let mut needed = BTreeSet::new();
    for value in config["kafka"]["settings"]
        .as_table()
        .expect("kafka.settings")
        .values()
    {
        if let Some(env) = value.get("env").and_then(|e| e.as_str()) {
            needed.insert(env.to_owned());
        }
    }
    for dest in config["destinations"].as_array().expect("destinations") {
        for h in dest
            .get("headers")
            .and_then(|h| h.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(env) = h.get("value_env").and_then(|e| e.as_str()) {
                needed.insert(env.to_owned());
            }
        }
        let secrets = dest
            .get("signing")
            .and_then(|s| s.get("secrets_env"))
            .and_then(|s| s.as_array());
        for s in secrets.into_iter().flatten() {
            needed.insert(s.as_str().expect("secrets_env entry").to_owned());
        }
    }
    assert!(
        !needed.is_empty(),
        "the example config should show secrets from the environment"
    );
    let deployment = read(&k8s_dir().join("deployment.yaml"));
    let example = read(&k8s_dir().join("secret.example.yaml"));
    for env in &needed {
        assert!(
            deployment.contains(&format!("- name: {env}")),
            "config.toml reads ${env}, which deployment.yaml does not set"
        );
        assert!(
            deployment.contains(&format!("key: {env}")),
            "deployment.yaml sets ${env} without a secretKeyRef of that key"
        );
        assert!(
            example.contains(&format!("{env}:")),
            "secret.example.yaml does not show the key {env}"
        );
    }
}

#[test]
fn probes_and_service_use_the_telemetry_port() {
    let config = config();
    let listen = config["telemetry"]["listen"]
        .as_str()
        .expect("telemetry.listen");
    let port = listen.rsplit(':').next().expect("port in telemetry.listen");
    let dir = k8s_dir();
    let deployment = read(&dir.join("deployment.yaml"));
    let service = read(&dir.join("service.yaml"));
    assert_eq!(
        yaml_scalar(&deployment, "containerPort").as_deref(),
        Some(port)
    );
    assert_eq!(
        yaml_scalar(&service, "prometheus.io/port").as_deref(),
        Some(port)
    );
    for path in ["/healthz", "/readyz"] {
        assert!(
            deployment.contains(&format!("path: {path}")),
            "no probe on {path}"
        );
    }
    assert!(
        listen.starts_with("0.0.0.0:"),
        "in a pod the metrics endpoint must listen on all interfaces, not {listen}"
    );
}
