//! The deployment material in deploy/, checked as far as a machine without a
//! container engine, a cluster or Azure allows:
//!
//! * every config the Kubernetes manifests and the systemd unit ship parses
//!   with the real loader (`Config::from_toml`);
//! * the Kubernetes manifests parse as YAML and agree with those configs:
//!   DNS and admin ports, probes, secrets, resolv.conf, security context;
//! * the systemd unit carries its hardening and passes the password the way
//!   its config reads it;
//! * the Azure on-change hook script passes `bash -n` (and shellcheck where
//!   installed) and does the right `az` calls against a stand-in `az`;
//! * the Dockerfile builds the crate with everything it embeds, and its
//!   HEALTHCHECK (like the exec probes) is a command line the binary accepts.
//!
//! Run with `cargo test --test integration deploy`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use dns_sidecar::config::{Config, Secrets, DEFAULT_ADMIN_LISTEN};
use serde::Deserialize;
use serde_json::Value;

use crate::support::links::check_links;

// ------------------------------------------------------------------ helpers

fn repo() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::canonicalize(&root).unwrap_or(root)
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dns-sidecar-deploy-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every document of a (multi-document) YAML file, as JSON values.
fn yaml_docs(p: &Path) -> Vec<Value> {
    let text = read(p);
    let mut docs = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
        let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: YAML document {}: {e}", p.display(), i + 1));
        if !v.is_null() {
            docs.push(v);
        }
    }
    docs
}

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Values of the keys named `key` anywhere in a TOML document.
fn toml_strings(text: &str, key: &str) -> BTreeSet<String> {
    fn walk(v: &toml::Value, key: &str, out: &mut BTreeSet<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    match v {
                        toml::Value::String(s) if k == key => {
                            out.insert(s.clone());
                        }
                        _ => walk(v, key, out),
                    }
                }
            }
            toml::Value::Array(a) => a.iter().for_each(|v| walk(v, key, out)),
            _ => {}
        }
    }
    let v: toml::Value = toml::from_str(text).unwrap_or_else(|e| panic!("TOML: {e}"));
    let mut out = BTreeSet::new();
    walk(&v, key, &mut out);
    out
}

/// Whether a TOML document has a key named `key` anywhere.
fn toml_has_key(text: &str, key: &str) -> bool {
    fn walk(v: &toml::Value, key: &str) -> bool {
        match v {
            toml::Value::Table(t) => t.iter().any(|(k, v)| k == key || walk(v, key)),
            toml::Value::Array(a) => a.iter().any(|v| walk(v, key)),
            _ => false,
        }
    }
    walk(&toml::from_str(text).unwrap_or_else(|e| panic!("TOML: {e}")), key)
}

/// Issue 18's credential keys (Microsoft Entra tokens, `password_command`).
const CREDENTIAL_KEYS: [&str; 4] = [
    "entra_identity",
    "entra_client_id",
    "password_command",
    "password_refresh",
];

/// The environment variables a config reads secrets from.
fn secret_envs(text: &str) -> BTreeSet<String> {
    let mut names = toml_strings(text, "password_env");
    names.extend(toml_strings(text, "token_env"));
    names
}

/// Loads a shipped config with the real loader, standing in for what the
/// deployment provides: the secret environment variables it names and the
/// secret files it names (temporary files where the path does not exist
/// here, e.g. /run/credentials/...). The variables are set under names of
/// this test's own (the config text is rewritten to match), so that other
/// tests' child processes never inherit e.g. DNS_SIDECAR_ADMIN_TOKEN.
fn load_config(path: &Path, text: &str) -> Config {
    let mut text = text.to_string();
    for name in secret_envs(&text) {
        let own = format!("DNS_SIDECAR_DEPLOY_TEST_{name}");
        std::env::set_var(&own, "deploy-test-secret");
        text = text.replace(&format!("\"{name}\""), &format!("\"{own}\""));
    }
    let mut files = toml_strings(&text, "password_file");
    files.extend(toml_strings(&text, "token_file"));
    for f in files.into_iter().filter(|f| !Path::new(f).exists()) {
        let dir = temp_dir("secret");
        let stand_in = dir.join(Path::new(&f).file_name().unwrap());
        std::fs::write(&stand_in, "deploy-test-secret\n").unwrap();
        text = text.replace(&format!("\"{f}\""), &format!("{:?}", stand_in.display().to_string()));
    }
    if toml_strings(&text, "entra_identity").contains("workload-identity") {
        // Its token source needs the AZURE_* variables the workload identity
        // webhook injects into the pod: loaded as `check-config` does (they
        // are warned about), rather than set in this process, where other
        // tests' sidecars would inherit them. Nothing else may be missing.
        let (c, warnings) = Config::from_toml_with(path, &text, Secrets::Deferred)
            .unwrap_or_else(|e| panic!("{}: does not load:\n{e}", path.display()));
        for w in warnings {
            assert!(
                w.to_string().contains("AZURE_"),
                "{}: a warning about something else than the webhook's variables: {w}",
                path.display()
            );
        }
        return c;
    }
    Config::from_toml(path, &text).unwrap_or_else(|e| panic!("{}: does not load:\n{e}", path.display()))
}

fn admin_listen(c: &Config) -> SocketAddr {
    c.admin.listen.unwrap_or_else(|| {
        panic!(
            "{}: the manifests probe the admin listener, but [admin] is disabled",
            c.path.display()
        )
    })
}

/// A closed loopback port: connecting to it is refused at once.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a health-check command line (as written in a manifest or the
/// Dockerfile) with the real binary against a closed admin port: it must be
/// accepted by the argument parser and report "not ready" (exit 1), not a
/// usage error (exit 2).
fn assert_health_argv(what: &str, argv: &[String]) {
    assert!(
        argv.first()
            .is_some_and(|p| p.ends_with("/dns-sidecar") || p == "dns-sidecar"),
        "{what}: runs {argv:?}, not dns-sidecar"
    );
    assert!(
        argv.iter().any(|a| a == "health"),
        "{what}: {argv:?} is not `dns-sidecar health`"
    );
    let mut args: Vec<String> = argv[1..].to_vec();
    let addr = format!("127.0.0.1:{}", closed_port());
    match args.iter().position(|a| a == "--admin") {
        Some(i) => args[i + 1] = addr.clone(),
        None => args.push(format!("--admin={addr}")),
    }
    let out = Command::new(env!("CARGO_BIN_EXE_dns-sidecar"))
        .args(&args)
        .env_remove("DNS_SIDECAR_ADMIN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: `dns-sidecar {}` should exit 1 against a closed port; stderr: {err}",
        args.join(" ")
    );
    assert!(err.contains("cannot reach the admin listener"), "{what}: {err}");
}

// --------------------------------------------------------------- Kubernetes

/// One kustomization directory: its generated ConfigMaps (parsed configs),
/// its documents, namespace and image names.
struct Kustomize {
    dir: PathBuf,
    namespace: Option<String>,
    docs: Vec<Value>,
    /// ConfigMap name -> (data key -> (file text, config)).
    configmaps: BTreeMap<String, BTreeMap<String, (String, Config)>>,
    images: BTreeSet<String>,
}

impl Kustomize {
    fn load(dir: &Path) -> Kustomize {
        let k_path = dir.join("kustomization.yaml");
        let k = yaml_docs(&k_path)
            .pop()
            .unwrap_or_else(|| panic!("{} is empty", k_path.display()));
        assert_eq!(s(&k, "/kind"), Some("Kustomization"), "{}", k_path.display());
        let mut docs = Vec::new();
        for r in arr(&k, "/resources") {
            let r = r.as_str().expect("resources are paths");
            docs.extend(yaml_docs(&dir.join(r)));
        }
        let mut configmaps: BTreeMap<String, BTreeMap<String, (String, Config)>> = BTreeMap::new();
        for g in arr(&k, "/configMapGenerator") {
            let name = s(g, "/name").expect("configMapGenerator name").to_string();
            for f in arr(g, "/files") {
                // `file` or `key=file`.
                let f = f.as_str().unwrap();
                let (key, file) = f
                    .split_once('=')
                    .unwrap_or((Path::new(f).file_name().unwrap().to_str().unwrap(), f));
                let path = dir.join(file);
                let text = read(&path);
                if key.ends_with(".toml") {
                    let c = load_config(&path, &text);
                    configmaps
                        .entry(name.clone())
                        .or_default()
                        .insert(key.to_string(), (text, c));
                }
            }
        }
        // ConfigMaps written out in the resources: every *.toml key is a config too.
        for d in docs.iter().filter(|d| s(d, "/kind") == Some("ConfigMap")) {
            let name = s(d, "/metadata/name").unwrap().to_string();
            if let Some(data) = d.pointer("/data").and_then(Value::as_object) {
                for (key, v) in data.iter().filter(|(k, _)| k.ends_with(".toml")) {
                    let text = v.as_str().unwrap().to_string();
                    let c = load_config(&dir.join(format!("{name}/{key}")), &text);
                    configmaps
                        .entry(name.clone())
                        .or_default()
                        .insert(key.clone(), (text, c));
                }
            }
        }
        let images = arr(&k, "/images")
            .iter()
            .filter_map(|i| s(i, "/name"))
            .map(str::to_string)
            .collect();
        Kustomize {
            dir: dir.to_path_buf(),
            namespace: s(&k, "/namespace").map(str::to_string),
            docs,
            configmaps,
            images,
        }
    }

    /// The text of a config in one of this kustomization's ConfigMaps.
    fn config_text(&self, cm: &str, key: &str) -> Option<&str> {
        self.configmaps
            .get(cm)
            .and_then(|m| m.get(key))
            .map(|(t, _)| t.as_str())
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.docs.iter().filter(move |d| s(d, "/kind") == Some(kind))
    }
}

fn kustomizations() -> Vec<Kustomize> {
    let root = deploy("kubernetes");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 2,
        "expected the sidecar and forwarder kustomizations under {}",
        root.display()
    );
    dirs.iter().map(|d| Kustomize::load(d)).collect()
}

/// `selector` (matchLabels or a plain map) selects `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let sel = selector.pointer("/matchLabels").unwrap_or(selector);
    let Some(sel) = sel.as_object() else { return false };
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A container port by name or number, as (port, protocol).
fn container_port(c: &Value, port: &Value) -> Option<(u64, String)> {
    arr(c, "/ports").iter().find_map(|p| {
        let hit = match port {
            Value::String(name) => s(p, "/name") == Some(name.as_str()),
            Value::Number(n) => p.pointer("/containerPort") == Some(&Value::Number(n.clone())),
            _ => false,
        };
        hit.then(|| {
            (
                p["containerPort"].as_u64().unwrap(),
                s(p, "/protocol").unwrap_or("TCP").to_string(),
            )
        })
    })
}

fn strings(v: &[Value]) -> Vec<String> {
    v.iter()
        .map(|a| a.as_str().unwrap_or_else(|| panic!("{a} is not a string")).to_string())
        .collect()
}

/// A fleet-mode config (issue 17): no servers, no aliases, no probe
/// password; it forwards a zone the forwarder tier serves, uncached, to the
/// tier's in-cluster ClusterIP Service on the tier's DNS port.
fn assert_fleet_mode(what: &str, c: &Config, text: &str) {
    assert!(c.servers.is_empty(), "{what}: no aliases but servers: neither or both");
    assert!(
        toml_strings(text, "password_env").is_empty() && toml_strings(text, "password_file").is_empty(),
        "{what}: a fleet-mode sidecar connects to no database and needs no probe password"
    );
    let forwarder = kustomizations()
        .into_iter()
        .find(|k| k.dir.ends_with("forwarder"))
        .expect("kubernetes/forwarder");
    let (_, tier) = forwarder.configmaps.values().flat_map(|m| m.values()).next().unwrap();
    let svc = forwarder
        .of_kind("Service")
        .find(|svc| s(svc, "/spec/type").unwrap_or("ClusterIP") == "ClusterIP")
        .unwrap_or_else(|| panic!("{what}: the forwarder has no ClusterIP Service for in-cluster clients"));
    let ip: std::net::IpAddr = s(svc, "/spec/clusterIP")
        .unwrap_or_else(|| panic!("{what}: pin the tier Service's clusterIP (configs name it by address)"))
        .parse()
        .unwrap();
    let tier_zones: Vec<&str> = tier.zones.iter().map(|z| z.name.as_str()).collect();
    let to_tier: Vec<_> = c
        .forward
        .iter()
        .filter(|f| tier_zones.contains(&f.zone.as_str()))
        .collect();
    assert_eq!(
        to_tier.len(),
        1,
        "{what}: forward the tier's zone ({tier_zones:?}) to the tier, once"
    );
    let f = to_tier[0];
    assert!(!f.cache, "{what}: the alias zone must be forwarded with cache = false");
    let tier_port = tier.dns.listen[0].port();
    assert!(
        f.upstream.servers.iter().all(|a| a.ip() == ip && a.port() == tier_port),
        "{what}: forwards {} to {:?}, the tier Service is {ip}:{tier_port}",
        f.zone.as_str(),
        f.upstream.servers
    );
}

#[test]
fn kubernetes_configs_load_with_the_real_loader() {
    let mut n = 0;
    for k in kustomizations() {
        assert!(
            !k.configmaps.is_empty(),
            "{}: no config.toml in any ConfigMap",
            k.dir.display()
        );
        for (cm, keys) in &k.configmaps {
            for (key, (text, c)) in keys {
                n += 1;
                // Same as `dns-sidecar check-config` in the container.
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_dns-sidecar"));
                cmd.arg("check-config").arg(&c.path);
                for name in secret_envs(text) {
                    cmd.env(name, "deploy-test-secret");
                }
                if c.path.is_file() {
                    let out = cmd.output().unwrap();
                    assert!(
                        out.status.success(),
                        "{cm}/{key}: check-config: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                assert!(
                    c.dns.listen.iter().all(|a| a.port() == 53),
                    "{cm}/{key}: clients (resolv.conf, VNet DNS) can only use port 53: {:?}",
                    c.dns.listen
                );
                if c.aliases.is_empty() {
                    // Fleet mode: no aliases of its own, so the alias zone
                    // must reach the tier, uncached.
                    assert_fleet_mode(&format!("{}: {cm}/{key}", k.dir.display()), c, text);
                }
            }
        }
    }
    assert!(n >= 2, "expected at least the sidecar and the forwarder configs");
}

#[test]
fn kubernetes_manifests_agree_with_their_configs() {
    let (mut sidecars, mut forwarders) = (0, 0);
    for k in kustomizations() {
        let deployments: Vec<&Value> = k.of_kind("Deployment").collect();
        assert!(!deployments.is_empty(), "{}: no Deployment", k.dir.display());
        for d in deployments {
            let what = format!(
                "{}: Deployment {}",
                k.dir.display(),
                s(d, "/metadata/name").unwrap_or("?")
            );
            let pod = d
                .pointer("/spec/template/spec")
                .unwrap_or_else(|| panic!("{what}: no pod template"));
            let labels = d
                .pointer("/spec/template/metadata/labels")
                .unwrap_or_else(|| panic!("{what}: pod has no labels"));
            assert!(
                selects(d.pointer("/spec/selector").unwrap(), labels),
                "{what}: selector does not match the pod labels"
            );

            // The dns-sidecar container, a regular or a native sidecar (init) container.
            let mut found: Vec<&Value> = arr(pod, "/containers")
                .iter()
                .chain(arr(pod, "/initContainers"))
                .filter(|c| s(c, "/name") == Some("dns-sidecar"))
                .collect();
            assert_eq!(found.len(), 1, "{what}: expected one container named dns-sidecar");
            let c = found.pop().unwrap();
            if arr(pod, "/initContainers").contains(c) {
                assert_eq!(
                    s(c, "/restartPolicy"),
                    Some("Always"),
                    "{what}: an init container must be a native sidecar (restartPolicy: Always)"
                );
            }

            // Its config: --config PATH, mounted from a ConfigMap of this kustomization.
            let args = strings(arr(c, "/args"));
            let cfg_arg = args
                .iter()
                .position(|a| a == "--config")
                .map(|i| args[i + 1].clone())
                .unwrap_or_else(|| panic!("{what}: args {args:?} lack --config"));
            let cfg_path = Path::new(&cfg_arg);
            let mount_dir = cfg_path.parent().unwrap().to_str().unwrap();
            let mount = arr(c, "/volumeMounts")
                .iter()
                .find(|m| s(m, "/mountPath") == Some(mount_dir))
                .unwrap_or_else(|| panic!("{what}: nothing mounted at {mount_dir}"));
            assert_eq!(
                mount.pointer("/readOnly"),
                Some(&Value::Bool(true)),
                "{what}: mount the config read-only"
            );
            let vol = arr(pod, "/volumes")
                .iter()
                .find(|v| s(v, "/name") == s(mount, "/name"))
                .unwrap_or_else(|| panic!("{what}: no volume for the config mount"));
            let cm =
                s(vol, "/configMap/name").unwrap_or_else(|| panic!("{what}: the config volume is not a ConfigMap"));
            let key = cfg_path.file_name().unwrap().to_str().unwrap();
            let Some((text, cfg)) = k.configmaps.get(cm).and_then(|m| m.get(key)) else {
                assert!(k.config_text(cm, key).is_some(), "{what}: ConfigMap {cm} has no {key}");
                eprintln!("{what}: its config is not loaded yet (issue 18 keys); the checks against it are skipped");
                continue;
            };

            // Image: the one the kustomization rewrites.
            let image = s(c, "/image").unwrap();
            let image_name = image.rsplit_once(':').map_or(image, |(n, _)| n);
            assert!(
                k.images.contains(image_name),
                "{what}: image {image} is not in the kustomization's images {:?}",
                k.images
            );

            // Secrets: every variable the config reads comes from a Secret, never a literal.
            for name in secret_envs(text) {
                let e = arr(c, "/env")
                    .iter()
                    .find(|e| s(e, "/name") == Some(name.as_str()))
                    .unwrap_or_else(|| panic!("{what}: the config reads ${name}, the container does not set it"));
                assert!(
                    e.pointer("/value").is_none(),
                    "{what}: ${name} is a literal; use secretKeyRef"
                );
                assert!(
                    s(e, "/valueFrom/secretKeyRef/name").is_some(),
                    "{what}: ${name} must come from a Secret"
                );
            }

            // Security: non-root, nothing but NET_BIND_SERVICE, read-only root.
            let sc = c
                .pointer("/securityContext")
                .unwrap_or_else(|| panic!("{what}: no securityContext"));
            let uid = sc
                .pointer("/runAsUser")
                .or(pod.pointer("/securityContext/runAsUser"))
                .and_then(Value::as_u64);
            assert!(
                uid.is_some_and(|u| u != 0),
                "{what}: runAsUser must be a non-root uid, got {uid:?}"
            );
            assert_eq!(
                sc.pointer("/runAsNonRoot")
                    .or(pod.pointer("/securityContext/runAsNonRoot")),
                Some(&Value::Bool(true)),
                "{what}: runAsNonRoot"
            );
            assert_eq!(
                sc.pointer("/readOnlyRootFilesystem"),
                Some(&Value::Bool(true)),
                "{what}: readOnlyRootFilesystem"
            );
            assert_eq!(
                strings(arr(sc, "/capabilities/drop")),
                ["ALL"],
                "{what}: drop ALL capabilities"
            );
            // The image's binary has a file capability for port 53: exec fails
            // without NET_BIND_SERVICE in the bounding set.
            assert_eq!(
                strings(arr(sc, "/capabilities/add")),
                ["NET_BIND_SERVICE"],
                "{what}: add back NET_BIND_SERVICE only"
            );
            if sc.pointer("/allowPrivilegeEscalation") == Some(&Value::Bool(false)) {
                // no_new_privs: file capabilities are not granted; the pod's
                // network namespace must allow the bind instead.
                let start = arr(pod, "/securityContext/sysctls")
                    .iter()
                    .find(|x| s(x, "/name") == Some("net.ipv4.ip_unprivileged_port_start"))
                    .and_then(|x| s(x, "/value"))
                    .unwrap_or_else(|| {
                        panic!(
                            "{what}: allowPrivilegeEscalation is false, so set the sysctl \
                        net.ipv4.ip_unprivileged_port_start"
                        )
                    });
                let start: u16 = start.parse().unwrap();
                let lowest = cfg
                    .dns
                    .listen
                    .iter()
                    .map(SocketAddr::port)
                    .chain(cfg.admin.listen.map(|a| a.port()))
                    .min()
                    .unwrap();
                assert!(
                    start <= lowest,
                    "{what}: ip_unprivileged_port_start {start} > port {lowest}"
                );
            }
            for r in [
                "/resources/requests/cpu",
                "/resources/requests/memory",
                "/resources/limits/memory",
            ] {
                assert!(c.pointer(r).is_some(), "{what}: no {r}");
            }

            // Probes: the admin listener of this config, reachable the way the probe reaches it.
            let admin = admin_listen(cfg);
            for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                let p = c
                    .pointer(&format!("/{probe}"))
                    .unwrap_or_else(|| panic!("{what}: no {probe}"));
                if let Some(cmd) = p.pointer("/exec/command") {
                    let argv = strings(cmd.as_array().unwrap());
                    let expected = match argv.iter().position(|a| a == "--admin") {
                        Some(i) => argv[i + 1].parse::<SocketAddr>().unwrap(),
                        None => DEFAULT_ADMIN_LISTEN.parse().unwrap(),
                    };
                    // The client connects to `expected`; a listener on the
                    // unspecified address serves it too.
                    assert!(
                        admin.port() == expected.port() && (admin.ip() == expected.ip() || admin.ip().is_unspecified()),
                        "{what}: {probe} asks {expected}, the admin listener is {admin}"
                    );
                    assert_health_argv(&format!("{what}: {probe}"), &argv);
                } else if let Some(port) = p.pointer("/httpGet/port") {
                    // The kubelet connects to the pod IP.
                    assert!(
                        admin.ip().is_unspecified(),
                        "{what}: {probe} is an HTTP probe, but the admin listener {admin} is not on the pod IP"
                    );
                    let (n, proto) = container_port(c, port)
                        .unwrap_or_else(|| port.as_u64().map(|n| (n, "TCP".into())).expect("probe port"));
                    assert_eq!(
                        (n, proto.as_str()),
                        (u64::from(admin.port()), "TCP"),
                        "{what}: {probe} port"
                    );
                    let path = s(p, "/httpGet/path").unwrap();
                    assert!(["/readyz", "/healthz"].contains(&path), "{what}: {probe} path {path}");
                } else {
                    panic!("{what}: {probe} is neither exec nor httpGet");
                }
            }
            if !admin.ip().is_loopback() {
                assert!(
                    cfg.admin.token.is_some(),
                    "{what}: the admin listener {admin} is reachable from the network; set token_env/token_file so \
                        overrides need a token"
                );
            }

            let loopback_only = cfg.dns.listen.iter().all(|a| a.ip().is_loopback());
            if loopback_only {
                // Sidecar: the pod's only nameserver is the sidecar.
                sidecars += 1;
                assert_eq!(
                    s(pod, "/dnsPolicy"),
                    Some("None"),
                    "{what}: a loopback sidecar needs dnsPolicy None"
                );
                let ns = strings(arr(pod, "/dnsConfig/nameservers"));
                let listen_ips: Vec<String> = cfg.dns.listen.iter().map(|a| a.ip().to_string()).collect();
                assert!(
                    !ns.is_empty() && ns.iter().all(|n| listen_ips.contains(n)),
                    "{what}: nameservers {ns:?} vs listen {listen_ips:?}"
                );
                let up = cfg.upstream.as_ref().unwrap_or_else(|| {
                    panic!("{what}: the pod resolves everything through the sidecar; it needs an [upstream]")
                });
                assert!(
                    up.servers.iter().all(|u| !u.ip().is_loopback()),
                    "{what}: upstream {:?} is on loopback: that is the sidecar itself",
                    up.servers
                );
                let searches = strings(arr(pod, "/dnsConfig/searches"));
                if let Some(nsname) = &k.namespace {
                    assert_eq!(
                        searches.first().map(String::as_str),
                        Some(format!("{nsname}.svc.cluster.local").as_str()),
                        "{what}: the first search domain should be the namespace's"
                    );
                }
            } else {
                // Shared forwarder: DNS on the pod IP, behind a Service.
                forwarders += 1;
                for proto in ["UDP", "TCP"] {
                    assert!(
                        arr(c, "/ports")
                            .iter()
                            .any(|p| p["containerPort"] == 53 && s(p, "/protocol").unwrap_or("TCP") == proto),
                        "{what}: no containerPort 53/{proto}"
                    );
                }
                if let Some(port) = s(d, "/spec/template/metadata/annotations/prometheus.io~1port") {
                    assert_eq!(port, admin.port().to_string(), "{what}: prometheus.io/port");
                }
                assert!(
                    d.pointer("/spec/replicas").and_then(Value::as_u64).unwrap_or(1) >= 2,
                    "{what}: a shared forwarder needs 2+ replicas"
                );
                let anti = pod
                    .pointer("/affinity/podAntiAffinity")
                    .unwrap_or_else(|| panic!("{what}: no pod anti-affinity"));
                assert!(
                    anti.to_string().contains("kubernetes.io/hostname"),
                    "{what}: anti-affinity should spread over nodes"
                );
                let services: Vec<&Value> = k
                    .of_kind("Service")
                    .filter(|svc| selects(svc.pointer("/spec/selector").unwrap(), labels))
                    .collect();
                assert!(!services.is_empty(), "{what}: no Service selects the forwarder");
                for svc in services {
                    for proto in ["UDP", "TCP"] {
                        let p = arr(svc, "/spec/ports")
                            .iter()
                            .find(|p| p["port"] == 53 && s(p, "/protocol").unwrap_or("TCP") == proto)
                            .unwrap_or_else(|| panic!("{what}: the Service lacks port 53/{proto}"));
                        let target = p.pointer("/targetPort").unwrap_or(&p["port"]);
                        assert_eq!(
                            container_port(c, target),
                            Some((53, proto.to_string())),
                            "{what}: Service 53/{proto} targets {target}"
                        );
                    }
                    if s(svc, "/spec/type") == Some("LoadBalancer") {
                        assert_eq!(
                            s(
                                svc,
                                "/metadata/annotations/service.beta.kubernetes.io~1azure-load-balancer-internal"
                            ),
                            Some("true"),
                            "{what}: a forwarder must never get a public load balancer"
                        );
                    }
                }
                assert!(
                    k.of_kind("PodDisruptionBudget")
                        .any(|pdb| selects(pdb.pointer("/spec/selector").unwrap(), labels)),
                    "{what}: no PodDisruptionBudget"
                );
            }
        }
    }
    assert!(
        sidecars >= 1 && forwarders >= 1,
        "expected a sidecar and a forwarder deployment, got {sidecars} and {forwarders}"
    );
}

/// `00000000-0000-0000-0000-000000000000`-shaped.
fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A Deployment's dns-sidecar container, and the ConfigMap and key of the
/// config it runs (`--config` mounted from a ConfigMap volume).
fn sidecar_container<'a>(what: &str, d: &'a Value) -> (&'a Value, &'a Value, String, String) {
    let pod = d.pointer("/spec/template/spec").unwrap();
    let c = arr(pod, "/containers")
        .iter()
        .chain(arr(pod, "/initContainers"))
        .find(|c| s(c, "/name") == Some("dns-sidecar"))
        .unwrap_or_else(|| panic!("{what}: no dns-sidecar container"));
    let args = strings(arr(c, "/args"));
    let cfg = args
        .iter()
        .position(|a| a == "--config")
        .map(|i| PathBuf::from(&args[i + 1]))
        .unwrap_or_else(|| panic!("{what}: no --config"));
    let mount = arr(c, "/volumeMounts")
        .iter()
        .find(|m| s(m, "/mountPath").map(Path::new) == cfg.parent())
        .unwrap_or_else(|| panic!("{what}: the config is not mounted"));
    let cm = arr(pod, "/volumes")
        .iter()
        .find(|v| s(v, "/name") == s(mount, "/name"))
        .and_then(|v| s(v, "/configMap/name"))
        .unwrap_or_else(|| panic!("{what}: the config volume is not a ConfigMap"));
    let key = cfg.file_name().unwrap().to_str().unwrap();
    (pod, c, cm.to_string(), key.to_string())
}

/// The Microsoft Entra variants (deploy/azure/README.md): the probe's
/// password is a token from the managed identity or from workload identity,
/// so no database password is in any Secret, file or variable, and the pod
/// carries what the token source needs: for workload identity the pod label
/// the webhook selects on and a service account annotated with the
/// identity's client id; for a managed identity on AKS nodes the client id
/// in the config (nodes carry several identities). Password variants carry
/// no workload identity label.
#[test]
fn entra_variants_carry_no_password_and_their_identity_wiring() {
    let mut seen: BTreeSet<(String, bool)> = BTreeSet::new();
    for k in kustomizations() {
        for d in k.of_kind("Deployment") {
            let what = format!(
                "{}: Deployment {}",
                k.dir.display(),
                s(d, "/metadata/name").unwrap_or("?")
            );
            let (pod, c, cm, key) = sidecar_container(&what, d);
            let text = k
                .config_text(&cm, &key)
                .unwrap_or_else(|| panic!("{what}: ConfigMap {cm} has no {key}"));
            let wi_label = s(d, "/spec/template/metadata/labels/azure.workload.identity~1use");
            let sources: Vec<String> = toml_strings(text, "entra_identity").into_iter().collect();
            let Some(source) = sources.first() else {
                assert_eq!(
                    wi_label, None,
                    "{what}: a password variant with the workload identity label"
                );
                continue;
            };
            assert_eq!(sources.len(), 1, "{what}: one token source per deployment: {sources:?}");
            for k in ["password_env", "password_file", "password_command"] {
                assert!(!toml_has_key(text, k), "{what}: an Entra variant with {k}");
            }
            assert!(
                !toml_strings(text, "user").is_empty(),
                "{what}: the probe's role (the principal's name)"
            );
            // Secrets: only the admin token the config names.
            let tokens = toml_strings(text, "token_env");
            for e in arr(c, "/env")
                .iter()
                .filter(|e| e.pointer("/valueFrom/secretKeyRef").is_some())
            {
                let name = s(e, "/name").unwrap();
                assert!(
                    tokens.contains(name),
                    "{what}: ${name} from a Secret, in a variant without passwords"
                );
            }
            assert!(arr(c, "/envFrom").is_empty(), "{what}: envFrom");
            for m in arr(c, "/volumeMounts") {
                let v = arr(pod, "/volumes")
                    .iter()
                    .find(|v| s(v, "/name") == s(m, "/name"))
                    .unwrap();
                assert!(
                    v.pointer("/secret").is_none() && !v.to_string().contains("\"secret\""),
                    "{what}: mounts a Secret ({v}) in a variant without passwords"
                );
            }
            let client_ids = toml_strings(text, "entra_client_id");
            assert!(
                client_ids.iter().all(|c| is_guid(c)),
                "{what}: entra_client_id {client_ids:?}"
            );
            match source.as_str() {
                "workload-identity" => {
                    assert_eq!(
                        wi_label,
                        Some("true"),
                        "{what}: the webhook injects the token only into pods labelled azure.workload.identity/use"
                    );
                    let sa = s(pod, "/serviceAccountName").unwrap_or_else(|| {
                        panic!("{what}: no serviceAccountName (the federated credential's subject)")
                    });
                    let account = k
                        .of_kind("ServiceAccount")
                        .find(|a| s(a, "/metadata/name") == Some(sa))
                        .unwrap_or_else(|| panic!("{what}: no ServiceAccount {sa} in the kustomization"));
                    let id =
                        s(account, "/metadata/annotations/azure.workload.identity~1client-id").unwrap_or_else(|| {
                            panic!("{what}: ServiceAccount {sa} lacks azure.workload.identity/client-id")
                        });
                    assert!(is_guid(id), "{what}: client-id {id:?}");
                    let skipped = s(
                        d,
                        "/spec/template/metadata/annotations/azure.workload.identity~1skip-containers",
                    )
                    .unwrap_or_default();
                    assert!(
                        !skipped.split(';').any(|c| c.trim() == "dns-sidecar"),
                        "{what}: the webhook skips the dns-sidecar container"
                    );
                }
                "managed-identity" => {
                    assert_eq!(
                        wi_label, None,
                        "{what}: managed identity with the workload identity label"
                    );
                    assert_eq!(
                        client_ids.len(),
                        1,
                        "{what}: AKS nodes carry several identities; name the user-assigned one by entra_client_id"
                    );
                    assert_ne!(
                        pod.pointer("/hostNetwork"),
                        Some(&Value::Bool(true)),
                        "{what}: hostNetwork"
                    );
                }
                other => panic!("{what}: entra_identity = {other:?}"),
            }
            let sidecar = toml::from_str::<toml::Value>(text).unwrap()["dns"]["listen"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a.as_str().unwrap().starts_with("127."));
            seen.insert((source.clone(), sidecar));
        }
    }
    for source in ["managed-identity", "workload-identity"] {
        for sidecar in [true, false] {
            assert!(
                seen.contains(&(source.to_string(), sidecar)),
                "no {source} variant of the {}: {seen:?}",
                if sidecar { "sidecar" } else { "forwarder" }
            );
        }
    }
}

// ------------------------------------------------------------------ systemd

/// (section, key, value) for every assignment in a unit file.
fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

#[test]
fn systemd_unit_is_hardened_and_matches_its_config() {
    let unit_path = deploy("systemd/dns-sidecar.service");
    let entries = unit_entries(&read(&unit_path));
    let service: Vec<(&str, &str)> = entries
        .iter()
        .filter(|(s, _, _)| s == "Service")
        .map(|(_, k, v)| (k.as_str(), v.as_str()))
        .collect();
    let all = |key: &str| -> Vec<&str> { service.iter().filter(|(k, _)| *k == key).map(|(_, v)| *v).collect() };
    let one = |key: &str| -> &str {
        let v = all(key);
        assert_eq!(v.len(), 1, "{}: expected one {key}=, got {v:?}", unit_path.display());
        v[0]
    };
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
    ] {
        assert_eq!(one(key), value, "{}: {key}", unit_path.display());
    }
    assert!(
        !all("RestrictAddressFamilies").is_empty() && !all("SystemCallFilter").is_empty(),
        "address family and system call filters"
    );

    // Environment=DNS_SIDECAR_CONFIG=..., used by ExecStartPre/ExecStart/ExecReload.
    let config_path = all("Environment")
        .iter()
        .find_map(|e| e.strip_prefix("DNS_SIDECAR_CONFIG="))
        .expect("Environment=DNS_SIDECAR_CONFIG=")
        .to_string();
    assert!(
        one("ExecStart").contains("dns-sidecar run --config ${DNS_SIDECAR_CONFIG}"),
        "ExecStart"
    );
    // --strict: the credential must be there too, as `run` needs it.
    assert!(
        one("ExecStartPre").contains("dns-sidecar check-config --strict ${DNS_SIDECAR_CONFIG}"),
        "ExecStartPre checks the config and its secrets"
    );
    let reload = all("ExecReload");
    assert_eq!(reload.len(), 2, "ExecReload: check, then signal: {reload:?}");
    assert!(
        reload[0].contains("check-config --strict"),
        "the first ExecReload checks the config and its secrets: {reload:?}"
    );
    assert_eq!(reload[1], "/bin/kill -HUP $MAINPID", "SIGHUP reloads");

    // LoadCredential=NAME:PATH -> the config reads /run/credentials/<unit>/NAME.
    let (cred, source) = one("LoadCredential").split_once(':').expect("LoadCredential=NAME:PATH");
    assert!(source.starts_with('/'), "LoadCredential source {source}");
    let unit_name = unit_path.file_name().unwrap().to_str().unwrap();
    let example = deploy("systemd/config.toml");
    let text = read(&example);
    assert_eq!(
        toml_strings(&text, "password_file").into_iter().collect::<Vec<_>>(),
        [format!("/run/credentials/{unit_name}/{cred}")],
        "{}: password_file must be the unit's credential",
        example.display()
    );
    assert!(
        secret_envs(&text).is_empty(),
        "{}: under systemd the password comes from the credential, not the environment",
        example.display()
    );
    let c = load_config(&example, &text);
    assert!(c.dns.listen.iter().all(|a| a.port() == 53), "{:?}", c.dns.listen);
    assert_eq!(config_path, "/etc/dns-sidecar/config.toml");
}

/// The VM variant with a managed identity: the drop-in clears the unit's
/// password credential (systemd would not start without its file), and the
/// config differs from config.toml only in [probe]'s credential: the
/// instance metadata service needs no secret on disk.
#[test]
fn systemd_managed_identity_variant_keeps_no_secret_on_disk() {
    let unit = deploy("systemd/dns-sidecar.service");
    let dropin = deploy("systemd/dns-sidecar.service.d/managed-identity.conf");
    assert_eq!(
        dropin.parent().unwrap().file_name().unwrap().to_str().unwrap(),
        format!("{}.d", unit.file_name().unwrap().to_str().unwrap()),
        "a drop-in directory of the unit"
    );
    let entries = unit_entries(&read(&dropin));
    let creds: Vec<&str> = entries
        .iter()
        .filter(|(sec, k, _)| sec == "Service" && k == "LoadCredential")
        .map(|(_, _, v)| v.as_str())
        .collect();
    assert_eq!(
        creds,
        [""],
        "{}: an empty LoadCredential= (reset), nothing else",
        dropin.display()
    );
    assert!(
        entries.iter().all(|(sec, _, _)| sec == "Service"),
        "{}: [Service] only",
        dropin.display()
    );

    let path = deploy("systemd/config-managed-identity.toml");
    let text = read(&path);
    assert_eq!(
        toml_strings(&text, "entra_identity").into_iter().collect::<Vec<_>>(),
        ["managed-identity"]
    );
    for key in ["password_env", "password_file", "password_command", "token_file"] {
        assert!(
            !toml_has_key(&text, key),
            "{}: {key}: no secret on disk",
            path.display()
        );
    }
    assert!(
        secret_envs(&text).is_empty(),
        "{}: no secret in the environment",
        path.display()
    );
    let ids = toml_strings(&text, "entra_client_id");
    assert!(
        ids.iter().all(|i| is_guid(i)),
        "{}: entra_client_id {ids:?}",
        path.display()
    );
    let without_credential = |text: &str| -> toml::Value {
        let mut v: toml::Value = toml::from_str(text).unwrap();
        let probe = v.get_mut("probe").and_then(toml::Value::as_table_mut).expect("[probe]");
        for key in [
            "user",
            "password_file",
            "password_env",
            "password_command",
            "entra_identity",
            "entra_client_id",
        ] {
            probe.remove(key);
        }
        v
    };
    assert_eq!(
        without_credential(&text),
        without_credential(&read(&deploy("systemd/config.toml"))),
        "{}: everything but [probe]'s credential as in config.toml",
        path.display()
    );
    let c = load_config(&path, &text);
    assert!(c.dns.listen.iter().all(|a| a.port() == 53), "{:?}", c.dns.listen);
    let out = Command::new(env!("CARGO_BIN_EXE_dns-sidecar"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// -------------------------------------------------------------------- Azure

fn run_hook(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let script = deploy("azure/sync-private-dns-cname.sh");
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new(&script);
    cmd.args(args).env("PATH", path).env("AZ_LOG", dir.join("az.log"));
    for v in [
        "DNS_SIDECAR_ALIAS",
        "DNS_SIDECAR_NEW_TARGET",
        "DNS_SIDECAR_OLD_TARGET",
        "DNS_SIDECAR_NEW_SERVER",
        "DNS_SIDECAR_OLD_SERVER",
        "DNS_SIDECAR_REASON",
        "FAKE_CURRENT",
        "FAKE_FAIL",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn take_az_log(dir: &Path) -> Vec<String> {
    let p = dir.join("az.log");
    let log = std::fs::read_to_string(&p).unwrap_or_default();
    let _ = std::fs::remove_file(&p);
    log.lines().map(str::to_string).collect()
}

#[test]
fn azure_hook_script_updates_the_private_dns_cname() {
    let script = deploy("azure/sync-private-dns-cname.sh");
    use std::os::unix::fs::PermissionsExt;
    assert!(
        std::fs::metadata(&script).unwrap().permissions().mode() & 0o111 != 0,
        "{} must be executable (on_change runs it directly)",
        script.display()
    );
    let syntax = Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    match Command::new("shellcheck").arg(&script).output() {
        Ok(out) => assert!(
            out.status.success(),
            "shellcheck:\n{}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(_) => eprintln!("shellcheck not installed; skipped (apt-get install shellcheck)"),
    }

    // The script reads only variables the sidecar sets (src/hook.rs).
    let hook_rs = read(&repo().join("dns-sidecar/src/hook.rs"));
    let text = read(&script);
    for var in [
        "DNS_SIDECAR_ALIAS",
        "DNS_SIDECAR_NEW_TARGET",
        "DNS_SIDECAR_NEW_SERVER",
        "DNS_SIDECAR_OLD_SERVER",
        "DNS_SIDECAR_REASON",
    ] {
        if text.contains(&format!("${{{var}")) {
            assert!(
                hook_rs.contains(&format!("\"{var}\"")),
                "the script reads {var}, which src/hook.rs does not set"
            );
        }
    }

    // A stand-in `az` that records its arguments.
    let dir = temp_dir("az");
    let az = dir.join("az");
    std::fs::write(
        &az,
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"$AZ_LOG\"\ncase \"$*\" in\n  *\" show \"*) [ -n \"$FAKE_CURRENT\" ] || \
            { echo 'ResourceNotFound' >&2; exit 3; }; printf '%s\\n' \"$FAKE_CURRENT\" ;;\n  *set-record*) [ \
                -z \"$FAKE_FAIL\" ] || { echo 'simulated failure' >&2; exit 1; } ;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    let change = [
        ("DNS_SIDECAR_ALIAS", "prod.db.internal"),
        (
            "DNS_SIDECAR_NEW_TARGET",
            "pg-prod-westus2.privatelink.postgres.database.azure.com",
        ),
        ("DNS_SIDECAR_NEW_SERVER", "westus2"),
        (
            "DNS_SIDECAR_OLD_TARGET",
            "pg-prod-eastus.privatelink.postgres.database.azure.com",
        ),
        ("DNS_SIDECAR_OLD_SERVER", "eastus"),
        ("DNS_SIDECAR_REASON", "eastus is in recovery"),
    ];
    let args = ["--resource-group", "rg-dns", "--zone-name", "db.internal"];

    // A change: look, then set the record (record set name = alias minus zone).
    let (code, _, err) = run_hook(&dir, &args, &change);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        take_az_log(&dir),
        [
            "network private-dns record-set cname show --resource-group rg-dns --zone-name db.internal --name prod \
                --query cnameRecord.cname --output tsv",
            "network private-dns record-set cname set-record --resource-group rg-dns --zone-name db.internal \
                --record-set-name prod --cname pg-prod-westus2.privatelink.postgres.database.azure.com --output none",
        ]
    );
    assert!(
        err.contains("eastus -> westus2") && err.contains("eastus is in recovery"),
        "{err}"
    );

    // Already right (another instance did it): no update.
    let mut env = change.to_vec();
    env.push((
        "FAKE_CURRENT",
        "PG-prod-westus2.privatelink.postgres.database.azure.com.",
    ));
    let (code, _, err) = run_hook(&dir, &args, &env);
    assert_eq!(code, 0, "{err}");
    assert_eq!(take_az_log(&dir).len(), 1, "only the lookup");
    assert!(err.contains("nothing to do"), "{err}");

    // The update fails: exit 1 with a clear message (the sidecar logs stderr).
    let mut env = change.to_vec();
    env.push(("FAKE_FAIL", "1"));
    let (code, _, err) = run_hook(&dir, &[&args[..], &["--attempts", "1"]].concat(), &env);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("NOT updated"), "{err}");
    let _ = take_az_log(&dir);

    // Not run as a hook, or misconfigured: exit 2 naming what is missing.
    let (code, _, err) = run_hook(&dir, &args, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("DNS_SIDECAR_ALIAS is not set"), "{err}");
    let (code, _, err) = run_hook(&dir, &["--zone-name", "db.internal"], &change);
    assert_eq!(code, 2);
    assert!(err.contains("--resource-group"), "{err}");
    let (code, _, err) = run_hook(
        &dir,
        &["--resource-group", "rg", "--zone-name", "other.internal"],
        &change,
    );
    assert_eq!(code, 2);
    assert!(err.contains("not inside zone"), "{err}");
    assert!(take_az_log(&dir).is_empty(), "no az call on usage errors");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn azure_resolver_rule_matches_the_forwarder_zone() {
    let default = |param: &str| bicep_default("azure/resolver.bicep", param);
    let forwarder = kustomizations()
        .into_iter()
        .find(|k| k.dir.ends_with("forwarder"))
        .expect("kubernetes/forwarder");
    let (_, cfg) = forwarder.configmaps.values().flat_map(|m| m.values()).next().unwrap();
    let zones: Vec<String> = cfg
        .zones
        .iter()
        .map(|z| format!("{}.", z.name.as_str().trim_end_matches('.')))
        .collect();
    assert!(
        zones.contains(&default("aliasZone")),
        "resolver.bicep forwards {} but the forwarder serves {zones:?}",
        default("aliasZone")
    );
    let port: u16 = default("sidecarPort").parse().unwrap();
    assert!(cfg.dns.listen.iter().all(|a| a.port() == port));
}

// ---------------------------------------------------------------- the docs

/// Every relative link of the deploy docs (`[text](path#anchor)`) names a
/// file that exists and, with an anchor, a heading of it.
#[test]
fn deploy_docs_links_resolve() {
    let mut n = 0;
    for doc in ["README.md", "azure/README.md"] {
        let path = deploy(doc);
        n += check_links(doc, &path, &read(&path));
    }
    assert!(n >= 20, "only {n} links");
}

/// The deploy docs' TOML examples are TOML, and use only keys the shipped
/// configs or the loader's tables know (a typo in a documented key would
/// otherwise only show when a user copies it).
#[test]
fn deploy_docs_toml_examples_parse() {
    let mut n = 0;
    for doc in ["README.md", "azure/README.md"] {
        for b in crate::readme::blocks(&read(&deploy(doc)))
            .iter()
            .filter(|b| b.lang == "toml")
        {
            let v: toml::Value = toml::from_str(&b.text).unwrap_or_else(|e| panic!("{doc}:{}: not TOML: {e}", b.line));
            if let Some(probe) = v.get("probe").and_then(toml::Value::as_table) {
                for key in probe.keys() {
                    assert!(
                        CREDENTIAL_KEYS.contains(&key.as_str())
                            || read(&repo().join("README.md")).contains(&format!("`{key}`")),
                        "{doc}:{}: [probe] {key} is not a documented key",
                        b.line
                    );
                }
            }
            n += 1;
        }
    }
    assert!(n >= 3, "only {n} TOML examples");
}

/// The `param NAME TYPE = 'default'` of a Bicep file.
fn bicep_default(file: &str, param: &str) -> String {
    let bicep = read(&deploy(file));
    let line = bicep
        .lines()
        .find(|l| l.starts_with(&format!("param {param} ")))
        .unwrap_or_else(|| panic!("{file}: no param {param}"));
    line.split_once('=')
        .unwrap_or_else(|| panic!("{file}: param {param} has no default"))
        .1
        .trim()
        .trim_matches('\'')
        .to_string()
}

#[test]
fn azure_tier_ruleset_for_vms_matches_the_forwarder_tier() {
    // forwarding-ruleset.bicep: the rule for VMs, added to an existing
    // resolver. Same zone as the tier serves, and as resolver.bicep and the
    // CoreDNS block (pods) route.
    let file = "azure/forwarding-ruleset.bicep";
    let forwarder = kustomizations()
        .into_iter()
        .find(|k| k.dir.ends_with("forwarder"))
        .expect("kubernetes/forwarder");
    let (_, cfg) = forwarder.configmaps.values().flat_map(|m| m.values()).next().unwrap();
    let zones: Vec<String> = cfg
        .zones
        .iter()
        .map(|z| format!("{}.", z.name.as_str().trim_end_matches('.')))
        .collect();
    let zone = bicep_default(file, "aliasZone");
    assert!(
        zones.contains(&zone),
        "{file} forwards {zone}, the tier serves {zones:?}"
    );
    assert_eq!(zone, bicep_default("azure/resolver.bicep", "aliasZone"));
    let port: u16 = bicep_default(file, "tierPort").parse().unwrap();
    assert!(cfg.dns.listen.iter().all(|a| a.port() == port));
    let bicep = read(&deploy(file));
    // The rule targets the tier's addresses (a parameter without a default:
    // the internal LB IP or VMs), on that port, for every linked VNet.
    for needle in [
        "domainName: aliasZone",
        "targetDnsServers: [for ip in tierAddresses:",
        "port: tierPort",
        "param outboundEndpointId string\n",
        "param tierAddresses array\n",
        "virtualNetworkLinks@",
    ] {
        assert!(bicep.contains(needle), "{file}: lacks `{needle}`");
    }
    // Balanced braces and brackets: a cheap stand-in for `bicep build`,
    // which is not packaged for Debian.
    for (open, close) in [('{', '}'), ('[', ']'), ('(', ')')] {
        assert_eq!(
            bicep.matches(open).count(),
            bicep.matches(close).count(),
            "{file}: unbalanced {open}{close}"
        );
    }
}

// ------------------------------------------------------------------- Docker

/// Dockerfile instructions with continuation lines joined: (INSTRUCTION, rest).
fn dockerfile() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in read(&deploy("Dockerfile")).lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if t.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        if let Some(part) = t.strip_suffix('\\') {
            cur.push_str(part);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let (ins, rest) = cur.split_once(char::is_whitespace).unwrap_or((&cur, ""));
        out.push((ins.to_uppercase(), rest.trim().to_string()));
        cur.clear();
    }
    out
}

#[test]
fn dockerfile_builds_what_the_manifests_run() {
    let ins = dockerfile();
    let args: BTreeMap<&str, &str> = ins
        .iter()
        .filter(|(i, _)| i == "ARG")
        .filter_map(|(_, r)| r.split_once('='))
        .collect();
    let froms: Vec<usize> = ins
        .iter()
        .enumerate()
        .filter(|(_, (i, _))| i == "FROM")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(froms.len(), 2, "multi-stage: a build and a runtime stage");
    let (build, runtime) = (&ins[froms[0]..froms[1]], &ins[froms[1]..]);
    let image = |rest: &str| -> String {
        let name = rest.split_whitespace().next().unwrap();
        match name.strip_prefix("${").and_then(|n| n.strip_suffix('}')) {
            Some(arg) => args
                .get(arg)
                .unwrap_or_else(|| panic!("ARG {arg} has no default"))
                .to_string(),
            None => name.to_string(),
        }
    };
    assert!(image(&build[0].1).starts_with("rust:"), "build stage: {}", build[0].1);
    let rt_image = image(&runtime[0].1);
    let run = |stage: &[(String, String)]| {
        stage
            .iter()
            .filter(|(i, _)| i == "RUN")
            .map(|(_, r)| r.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    };

    // Build stage: the locked release build, with everything the crate reads from outside dns-sidecar/.
    assert!(
        run(build).contains("cargo build --release --locked -p dns-sidecar"),
        "build stage RUN"
    );
    let copied: Vec<String> = build
        .iter()
        .filter(|(i, _)| i == "COPY")
        .flat_map(|(_, r)| {
            r.split_whitespace()
                .rev()
                .skip(1)
                .map(|p| p.trim_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut needed = BTreeSet::from([
        "Cargo.toml".to_string(),
        "Cargo.lock".to_string(),
        "dns-sidecar".to_string(),
    ]);
    // cargo loads every workspace member's manifest, even for `-p dns-sidecar`.
    let workspace: toml::Value = toml::from_str(&read(&repo().join("Cargo.toml"))).unwrap();
    for m in workspace["workspace"]["members"].as_array().unwrap() {
        needed.insert(m.as_str().unwrap().split('/').next().unwrap().to_string());
    }
    let src = repo().join("dns-sidecar/src");
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension() != Some(std::ffi::OsStr::new("rs")) {
                continue;
            }
            let text = read(&p);
            for macro_ in ["include_str!(\"", "include_bytes!(\""] {
                for part in text.split(macro_).skip(1) {
                    let rel = part.split('"').next().unwrap();
                    let target = p.parent().unwrap().join(rel);
                    let target =
                        std::fs::canonicalize(&target).unwrap_or_else(|e| panic!("{}: {rel}: {e}", p.display()));
                    let top = target
                        .strip_prefix(repo())
                        .unwrap()
                        .components()
                        .next()
                        .unwrap()
                        .as_os_str()
                        .to_str()
                        .unwrap()
                        .to_string();
                    needed.insert(top);
                }
            }
        }
    }
    for n in &needed {
        assert!(
            copied.contains(n),
            "the build stage must COPY {n} (the crate needs it); it copies {copied:?}"
        );
    }
    // BuildKit's per-Dockerfile ignore file is an allow-list: it must let in
    // everything the build copies.
    let ignore_path = deploy("Dockerfile.dockerignore");
    if ignore_path.is_file() {
        let ignore = read(&ignore_path);
        let lines: Vec<&str> = ignore
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if lines.contains(&"*") {
            for c in &copied {
                assert!(
                    lines.contains(&format!("!{c}").as_str()) || lines.contains(&format!("!{c}/").as_str()),
                    "{}: excludes {c}, which the build copies",
                    ignore_path.display()
                );
            }
        }
    }

    // Runtime stage: OpenSSL and CA certificates for native-tls, a non-root user, port 53.
    assert!(
        rt_image.starts_with("debian:bookworm") || rt_image.contains("distroless"),
        "runtime image {rt_image}"
    );
    let rt_run = run(runtime);
    if rt_image.starts_with("debian:") {
        for pkg in ["libssl3", "ca-certificates"] {
            assert!(
                rt_run.contains(pkg),
                "the runtime stage must install {pkg} (native-tls links OpenSSL dynamically)"
            );
        }
    }
    assert!(
        rt_run.contains("setcap cap_net_bind_service=+ep /usr/local/bin/dns-sidecar"),
        "file capability for port 53"
    );
    let last = |name: &str| {
        runtime
            .iter()
            .rev()
            .find(|(i, _)| i == name)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("runtime stage has no {name}"))
    };
    let user = last("USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("USER {user}: use a numeric uid so runAsNonRoot can check it"));
    assert_ne!(uid, 0, "USER must not be root");
    for k in kustomizations() {
        for d in k.of_kind("Deployment") {
            let pod = &d["spec"]["template"]["spec"];
            for c in arr(pod, "/containers")
                .iter()
                .chain(arr(pod, "/initContainers"))
                .filter(|c| s(c, "/name") == Some("dns-sidecar"))
            {
                assert_eq!(
                    c.pointer("/securityContext/runAsUser").and_then(Value::as_u64),
                    Some(u64::from(uid)),
                    "{}: runAsUser vs the image's USER",
                    k.dir.display()
                );
            }
        }
    }
    let exposed: BTreeSet<String> = runtime
        .iter()
        .filter(|(i, _)| i == "EXPOSE")
        .flat_map(|(_, r)| r.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    for p in ["53/udp", "53/tcp", "9153/tcp"] {
        assert!(exposed.contains(p), "EXPOSE {p}");
    }
    assert!(
        runtime
            .iter()
            .any(|(i, r)| i == "ENV" && r.contains("DNS_SIDECAR_CONFIG=/etc/dns-sidecar/config.toml")),
        "ENV DNS_SIDECAR_CONFIG"
    );
    let entrypoint: Vec<String> = serde_json::from_str(&last("ENTRYPOINT")).expect("ENTRYPOINT in exec form");
    assert_eq!(entrypoint, ["/usr/local/bin/dns-sidecar"]);

    // HEALTHCHECK: exec form, `dns-sidecar health`, accepted by the binary.
    let hc = last("HEALTHCHECK");
    let cmd = hc
        .split_once("CMD")
        .unwrap_or_else(|| panic!("HEALTHCHECK {hc}"))
        .1
        .trim();
    let argv: Vec<String> = serde_json::from_str(cmd)
        .unwrap_or_else(|e| panic!("HEALTHCHECK CMD must be in exec form (a JSON array, no shell involved): {e}"));
    assert_eq!(argv[0], entrypoint[0]);
    assert_health_argv("Dockerfile HEALTHCHECK", &argv);
}
