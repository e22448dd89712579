//! The Kubernetes manifest (`deploy/kubernetes/flowd.yaml`) against flowd
//! itself: its config passes `flowd check-config`, its arguments are ones
//! flowd accepts, its port is the one the config listens on, and it grants
//! exactly the capabilities of the systemd unit. (No cluster runs here: this
//! checks what can be checked without one.)

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use flowd_tests::flowd_bin;
use serde_json::Value;

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// The manifest's documents, through a real YAML parser (python3-yaml).
fn documents() -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(deploy("kubernetes/flowd.yaml"))
        .output()
        .expect("run python3 (Debian packages python3 and python3-yaml)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("manifest as JSON")
}

fn kind<'a>(docs: &'a [Value], k: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == k)
        .unwrap_or_else(|| panic!("no {k} in the manifest"))
}

#[test]
fn kubernetes_manifest_matches_flowd() {
    let docs = documents();
    let config = kind(&docs, "ConfigMap")["data"]["flowd.toml"]
        .as_str()
        .expect("flowd.toml in the ConfigMap");
    let tmp = flowd_tests::TempDir::new("flowd-k8s");
    let dir = tmp.path().to_path_buf();
    let file = dir.join("flowd.toml");
    std::fs::write(&file, config).unwrap();
    let out = Command::new(flowd_bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run flowd check-config");
    assert!(
        out.status.success(),
        "the ConfigMap's flowd.toml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let listen = config
        .lines()
        .find_map(|l| l.strip_prefix("listen = "))
        .expect("listen in the ConfigMap")
        .trim_matches('"')
        .to_owned();

    let ds = kind(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let c = &pod["containers"][0];
    // `flowd run` and each of its flags as `flowd run --help` lists them.
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args.first(), Some(&"run"));
    let help = Command::new(flowd_bin())
        .args(["run", "--help"])
        .output()
        .expect("flowd run --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(help.contains(flag), "flowd run has no {flag}:\n{help}");
    }
    let port = c["ports"][0]["containerPort"].as_u64().unwrap();
    assert!(
        listen.ends_with(&format!(":{port}")),
        "container port {port} vs listen {listen}"
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(mounts.contains(&"/sys/fs/bpf"), "{mounts:?}");
    assert!(config.contains("pin_path = \"/sys/fs/bpf/flowd\""));

    let caps: BTreeSet<String> = c["securityContext"]["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| format!("CAP_{}", v.as_str().unwrap()))
        .collect();
    let unit = std::fs::read_to_string(deploy("flowd.service")).unwrap();
    let ambient: BTreeSet<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities in flowd.service")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        caps, ambient,
        "the pod and the systemd unit grant the same capabilities"
    );

    let svc = kind(&docs, "Service");
    assert_eq!(svc["spec"]["ports"][0]["port"].as_u64(), Some(port));
    assert_eq!(
        svc["spec"]["selector"],
        ds["spec"]["selector"]["matchLabels"]
    );
}
