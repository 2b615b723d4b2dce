//! The Kubernetes manifests in deploy/kubernetes hang together, and (when
//! `kubernetes-validate` is installed) match the Kubernetes API schemas.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use tally_deploy::{deploy_dir, files_with_suffix, run_validator, str_at, yaml};

/// The Kubernetes version the manifests are validated against: the oldest
/// operations.md supports.
const KUBERNETES_VERSION: &str = "1.30.0";

fn manifest_files() -> Vec<PathBuf> {
    let files = files_with_suffix(&deploy_dir().join("kubernetes"), &[".yaml", ".yml"]);
    assert!(!files.is_empty(), "no manifests in deploy/kubernetes");
    files
}

/// Every object, by (kind, name).
fn objects() -> BTreeMap<(String, String), Value> {
    let mut found = BTreeMap::new();
    for path in manifest_files() {
        for object in yaml(&path) {
            for field in ["/apiVersion", "/kind", "/metadata/name"] {
                assert!(
                    object
                        .pointer(field)
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty()),
                    "{}: an object without {field}",
                    path.display()
                );
            }
            let key = (
                str_at(&object, "/kind").to_owned(),
                str_at(&object, "/metadata/name").to_owned(),
            );
            assert!(
                found.insert(key.clone(), object).is_none(),
                "{key:?} is defined twice"
            );
        }
    }
    found
}

fn only<'a>(objects: &'a BTreeMap<(String, String), Value>, kind: &str) -> &'a Value {
    let mut of_kind = objects.iter().filter(|((k, _), _)| k == kind);
    let (_, object) = of_kind.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(of_kind.next().is_none(), "one {kind}");
    object
}

fn of_kind<'a>(objects: &'a BTreeMap<(String, String), Value>, kind: &str) -> Vec<&'a Value> {
    objects
        .iter()
        .filter(|((k, _), _)| k == kind)
        .map(|(_, o)| o)
        .collect()
}

/// Whether every `key: value` of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("a selector map");
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn containers(pod_spec: &Value) -> &Vec<Value> {
    pod_spec["containers"].as_array().expect("containers")
}

/// The pod runs as a non-root user and its containers cannot escalate.
fn assert_non_root(what: &str, pod_spec: &Value) {
    let pod = &pod_spec["securityContext"];
    assert_eq!(pod["runAsNonRoot"], true, "{what}: runAsNonRoot");
    assert!(
        pod["runAsUser"].as_u64().is_some_and(|uid| uid != 0),
        "{what}: a non-zero runAsUser"
    );
    for container in containers(pod_spec) {
        let security = &container["securityContext"];
        assert_eq!(
            security["allowPrivilegeEscalation"], false,
            "{what}: no escalation"
        );
        assert_eq!(
            security["readOnlyRootFilesystem"], true,
            "{what}: read-only root"
        );
        assert_eq!(
            security["capabilities"]["drop"][0], "ALL",
            "{what}: drops capabilities"
        );
        assert_ne!(
            security["runAsUser"], 0,
            "{what}: no container runs as root"
        );
    }
}

/// The ConfigMaps and Secrets (name, key) a pod spec reads exist.
fn assert_references_exist(
    what: &str,
    pod_spec: &Value,
    objects: &BTreeMap<(String, String), Value>,
) {
    for container in containers(pod_spec) {
        for source in container["envFrom"].as_array().into_iter().flatten() {
            if let Some(name) = source["configMapRef"]["name"].as_str() {
                assert!(
                    objects.contains_key(&("ConfigMap".into(), name.into())),
                    "{what}: no ConfigMap {name}"
                );
            }
            if let Some(name) = source["secretRef"]["name"].as_str() {
                assert!(
                    objects.contains_key(&("Secret".into(), name.into())),
                    "{what}: no Secret {name}"
                );
            }
        }
        for env in container["env"].as_array().into_iter().flatten() {
            for (kind, reference) in [
                ("Secret", &env["valueFrom"]["secretKeyRef"]),
                ("ConfigMap", &env["valueFrom"]["configMapKeyRef"]),
            ] {
                let Some(name) = reference["name"].as_str() else {
                    continue;
                };
                let key = str_at(reference, "/key");
                let object = objects
                    .get(&(kind.into(), name.into()))
                    .unwrap_or_else(|| panic!("{what}: no {kind} {name}"));
                assert!(
                    object["data"].get(key).is_some() || object["stringData"].get(key).is_some(),
                    "{what}: {kind} {name} has no key {key}"
                );
            }
        }
    }
}

/// Every workload's pod spec: Deployments, Jobs and CronJobs.
fn pod_specs(objects: &BTreeMap<(String, String), Value>) -> Vec<(String, &Value)> {
    objects
        .iter()
        .filter_map(|((kind, name), object)| {
            let spec = match kind.as_str() {
                "Deployment" | "Job" => &object["spec"]["template"]["spec"],
                "CronJob" => &object["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                _ => return None,
            };
            Some((format!("{kind} {name}"), spec))
        })
        .collect()
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

#[test]
fn every_object_is_named_and_typed() {
    let objects = objects();
    for kind in [
        "Deployment",
        "CronJob",
        "Service",
        "ConfigMap",
        "Secret",
        "Job",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ] {
        assert!(!of_kind(&objects, kind).is_empty(), "no {kind}");
    }
}

/// A setting of the container: its `env` value, or its ConfigMap's.
fn setting<'a>(
    container: &'a Value,
    objects: &'a BTreeMap<(String, String), Value>,
    name: &str,
) -> Option<&'a str> {
    if let Some(env) = env_value(container, name) {
        return env["value"].as_str();
    }
    container["envFrom"]
        .as_array()?
        .iter()
        .filter_map(|source| source["configMapRef"]["name"].as_str())
        .filter_map(|map| objects.get(&("ConfigMap".to_owned(), map.to_owned())))
        .find_map(|map| map["data"][name].as_str())
}

/// The port of a `host:port` setting.
fn port_of(address: &str) -> u64 {
    address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {address}"))
}

#[test]
fn the_deployment_probes_grpc_health_on_its_plaintext_health_port() {
    let objects = objects();
    let deployment = only(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let tallyd = &containers(pod)[0];
    let port = |name: &str| {
        tallyd["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port {name}"))
    };
    let (grpc, health) = (port("grpc"), port("health"));
    // tallyd listens on every interface: TLS on one, health on the other.
    let listen = setting(tallyd, &objects, "TALLY_LISTEN").expect("TALLY_LISTEN");
    assert_eq!(listen, format!("0.0.0.0:{grpc}"));
    let health_listen =
        setting(tallyd, &objects, "TALLY_HEALTH_LISTEN").expect("TALLY_HEALTH_LISTEN");
    assert_eq!(health_listen, format!("0.0.0.0:{health}"));
    assert_ne!(port_of(listen), port_of(health_listen));
    // The kubelet's gRPC probes cannot do TLS: with TLS on the gRPC port,
    // they must go to the health port.
    assert!(setting(tallyd, &objects, "TALLY_TLS_CERT").is_some());
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let probe_grpc = &tallyd[probe]["grpc"];
        assert_eq!(
            probe_grpc["port"].as_u64(),
            Some(health),
            "{probe} probes gRPC on the health port {health}"
        );
        // The whole server (""), never AccountService: its lag-driven
        // NOT_SERVING is the same on every replica.
        assert!(
            probe_grpc["service"].is_null() || probe_grpc["service"] == "",
            "{probe} checks service \"\", not {}",
            probe_grpc["service"]
        );
    }
}

/// The Secret and key a file path inside `container` comes from: the
/// path's folder is a mounted Secret volume (whole, not a subPath, so that
/// the kubelet updates it in place) holding that key.
fn secret_file<'a>(
    pod: &Value,
    container: &Value,
    objects: &'a BTreeMap<(String, String), Value>,
    path: &str,
) -> (&'a Value, String) {
    let (folder, key) = path.rsplit_once('/').expect("a path");
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"] == folder)
        .unwrap_or_else(|| panic!("nothing is mounted at {folder} for {path}"));
    assert!(mount["subPath"].is_null(), "{folder} is a subPath mount");
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mount's volume");
    let name = volume["secret"]["secretName"]
        .as_str()
        .unwrap_or_else(|| panic!("{folder} is not a Secret"));
    let secret = objects
        .get(&("Secret".to_owned(), name.to_owned()))
        .unwrap_or_else(|| panic!("no Secret {name} (an example in example/)"));
    assert!(
        secret["data"].get(key).is_some() || secret["stringData"].get(key).is_some(),
        "Secret {name} has no {key} for {path}"
    );
    (secret, key.to_owned())
}

#[test]
fn tallyd_serves_tls_with_api_keys_and_verifies_postgres() {
    let objects = objects();
    let deployment = only(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let tallyd = &containers(pod)[0];
    for name in ["TALLY_TLS_CERT", "TALLY_TLS_KEY", "TALLY_API_KEYS"] {
        let path = setting(tallyd, &objects, name).unwrap_or_else(|| panic!("{name} is set"));
        secret_file(pod, tallyd, &objects, path);
    }
    let (tls, _) = secret_file(
        pod,
        tallyd,
        &objects,
        setting(tallyd, &objects, "TALLY_TLS_CERT").unwrap(),
    );
    assert_eq!(
        tls["type"], "kubernetes.io/tls",
        "cert-manager's Secret type"
    );
    // Every workload reaches PostgreSQL with verify-full and has its CA.
    for (what, pod) in pod_specs(&objects) {
        let container = &containers(pod)[0];
        let url = env_value(container, "TALLY_DATABASE_URL").expect("a database URL");
        let reference = &url["valueFrom"]["secretKeyRef"];
        let secret = &objects[&("Secret".to_owned(), str_at(reference, "/name").to_owned())];
        let url = secret["stringData"][str_at(reference, "/key")]
            .as_str()
            .expect("an example URL");
        assert!(
            url.contains("sslmode=verify-full"),
            "{what} checks PostgreSQL's certificate: {url}"
        );
        let ca = setting(container, &objects, "TALLY_PG_CA_FILE")
            .unwrap_or_else(|| panic!("{what} has TALLY_PG_CA_FILE"));
        secret_file(pod, container, &objects, ca);
    }
}

#[test]
fn the_deployment_shuts_down_within_its_grace_period() {
    let objects = objects();
    let pod = &only(&objects, "Deployment")["spec"]["template"]["spec"];
    let config = only(&objects, "ConfigMap");
    let grace: u64 = str_at(config, "/data/TALLY_SHUTDOWN_GRACE_SECS")
        .parse()
        .unwrap();
    let delay: u64 = str_at(config, "/data/TALLY_SHUTDOWN_DELAY_SECS")
        .parse()
        .unwrap();
    assert!(delay > 0, "a shutdown delay lets endpoints drain first");
    let pause = containers(pod)[0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    let termination = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("a grace period");
    assert!(
        termination > delay + grace + pause,
        "terminationGracePeriodSeconds {termination} must exceed TALLY_SHUTDOWN_DELAY_SECS {delay} + TALLY_SHUTDOWN_GRACE_SECS {grace} + preStop {pause}"
    );
}

#[test]
fn each_replica_has_its_own_telemetry_instance() {
    let objects = objects();
    let pod = &only(&objects, "Deployment")["spec"]["template"]["spec"];
    let attributes = str_at(
        env_value(&containers(pod)[0], "OTEL_RESOURCE_ATTRIBUTES")
            .expect("OTEL_RESOURCE_ATTRIBUTES"),
        "/value",
    );
    assert!(
        attributes.contains("service.instance.id=$(POD_NAME)"),
        "service.instance.id is the pod's name: {attributes}"
    );
    assert!(env_value(&containers(pod)[0], "POD_NAME").is_some());
}

#[test]
fn the_services_select_the_pods() {
    let objects = objects();
    let deployment = only(&objects, "Deployment");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        labels
    ));
    let tallyd = &containers(&deployment["spec"]["template"]["spec"])[0];
    for service in of_kind(&objects, "Service") {
        let name = str_at(service, "/metadata/name");
        assert!(
            selects(&service["spec"]["selector"], labels),
            "Service {name} selects tallyd's pods"
        );
        for port in service["spec"]["ports"].as_array().expect("ports") {
            let target = &port["targetPort"];
            assert!(
                tallyd["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| &p["name"] == target || &p["containerPort"] == target),
                "Service {name}'s targetPort {target} is a container port"
            );
        }
    }
}

#[test]
fn the_configmaps_and_secrets_referenced_exist() {
    let objects = objects();
    let deployment = only(&objects, "Deployment");
    assert_references_exist(
        "Deployment",
        &deployment["spec"]["template"]["spec"],
        &objects,
    );
    let job = only(&objects, "Job");
    assert_references_exist("Job", &job["spec"]["template"]["spec"], &objects);
}

#[test]
fn the_migration_job_runs_tallyd_migrate_from_the_same_image() {
    let objects = objects();
    let job = only(&objects, "Job");
    let pod = &job["spec"]["template"]["spec"];
    let container = &containers(pod)[0];
    let argv: Vec<&str> = ["command", "args"]
        .iter()
        .flat_map(|field| container[*field].as_array().into_iter().flatten())
        .map(|s| s.as_str().expect("string arguments"))
        .collect();
    // The image's entrypoint is tallyd, so `args: [migrate]` runs `tallyd migrate`.
    assert!(
        argv == ["migrate"]
            || argv.ends_with(&["tallyd", "migrate"])
            || argv == ["/usr/local/bin/tallyd", "migrate"],
        "the Job runs `tallyd migrate`, not {argv:?}"
    );
    assert!(["Never", "OnFailure"].contains(&str_at(pod, "/restartPolicy")));
    let deployment = only(&objects, "Deployment");
    let serving = &containers(&deployment["spec"]["template"]["spec"])[0];
    assert_eq!(
        container["image"], serving["image"],
        "the Job migrates to the Deployment's schema"
    );
    assert!(
        env_value(container, "TALLY_DATABASE_URL").is_some(),
        "the Job has a database"
    );
}

#[test]
fn every_workload_runs_the_same_tallyd_image() {
    let objects = objects();
    let images: std::collections::BTreeSet<&str> = pod_specs(&objects)
        .into_iter()
        .flat_map(|(_, pod)| containers(pod).iter().map(|c| str_at(c, "/image")))
        .collect();
    assert_eq!(images.len(), 1, "one image: {images:?}");
}

#[test]
fn the_verify_cronjob_runs_tallyd_verify() {
    let objects = objects();
    let cronjob = only(&objects, "CronJob");
    let pod = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(containers(pod)[0]["args"], serde_json::json!(["verify"]));
    assert_eq!(cronjob["spec"]["concurrencyPolicy"], "Forbid");
    // verify writes a scratch SQLite copy under /tmp; the root is read-only.
    let mounts = containers(pod)[0]["volumeMounts"]
        .as_array()
        .expect("volume mounts");
    assert!(mounts.iter().any(|m| m["mountPath"] == "/tmp"));
}

#[test]
fn the_pdb_and_hpa_target_the_deployment() {
    let objects = objects();
    let deployment = only(&objects, "Deployment");
    let name = str_at(deployment, "/metadata/name");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let pdb = only(&objects, "PodDisruptionBudget");
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], labels));
    assert!(
        pdb["spec"]["minAvailable"].is_number() || pdb["spec"]["maxUnavailable"].is_number(),
        "the PDB bounds disruptions"
    );
    let hpa = only(&objects, "HorizontalPodAutoscaler");
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(target["kind"], "Deployment");
    assert_eq!(target["apiVersion"], "apps/v1");
    assert_eq!(target["name"], name);
    // Two at least, so the PDB lets a node drain without an outage.
    assert!(hpa["spec"]["minReplicas"].as_u64() >= Some(2));
    // CPU utilisation needs CPU requests.
    let tallyd = &containers(&deployment["spec"]["template"]["spec"])[0];
    assert!(tallyd["resources"]["requests"]["cpu"].is_string());
}

#[test]
fn pods_run_as_non_root() {
    let objects = objects();
    let workloads = pod_specs(&objects);
    assert!(workloads.len() >= 2);
    for (what, pod) in workloads {
        assert_non_root(&what, pod);
    }
}

/// Runs `kubernetes-validate --strict` over every manifest. When it is not
/// installed the test says so and passes, unless
/// TALLY_REQUIRE_DEPLOY_VALIDATORS=1 (as in CI), when it fails.
#[test]
fn the_manifests_match_the_kubernetes_schemas() {
    let files = manifest_files();
    let expected_objects: usize = files.iter().map(|f| yaml(f).len()).sum();
    let mut args = vec!["--strict", "--kubernetes-version", KUBERNETES_VERSION];
    args.extend(files.iter().map(|f| f.to_str().expect("a UTF-8 path")));
    let Some((ok, text)) = run_validator(
        "kubernetes-validate",
        &args,
        &deploy_dir(),
        "pip install kubernetes-validate",
    ) else {
        return;
    };
    assert!(ok, "kubernetes-validate failed:\n{text}");
    // An unknown kind is only a warning with exit code 0: refuse it too.
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("WARN") || l.starts_with("ERROR"))
        .collect();
    assert!(complaints.is_empty(), "kubernetes-validate:\n{text}");
    let passed = text
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    assert_eq!(passed, expected_objects, "every object validated:\n{text}");
}

/// `kubectl apply -f deploy/kubernetes/` (not recursive) must never
/// overwrite the real Secret with the example's placeholder passwords.
#[test]
fn applying_the_folder_leaves_secrets_alone() {
    let dir = deploy_dir().join("kubernetes");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            for object in yaml(&path) {
                assert_ne!(
                    object["kind"],
                    "Secret",
                    "{} holds a Secret: keep examples in a subfolder",
                    path.display()
                );
            }
        }
    }
}
