//! The local stack in deploy/compose.yaml hangs together: its services
//! exist, tallyd's telemetry reaches the collector, Prometheus scrapes the
//! collector's exporter, Grafana's data sources point at the stack, and
//! every file it mounts is in the repository.

use std::path::Path;

use serde_json::Value;
use tally_deploy::{deploy_dir, read, str_at, yaml_one};

fn compose() -> Value {
    yaml_one(&deploy_dir().join("compose.yaml"))
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    let service = &compose["services"][name];
    assert!(service.is_object(), "compose has no service {name}");
    service
}

/// A service's environment variable, from the map or the `KEY=value` list.
fn env<'a>(service: &'a Value, name: &str) -> Option<&'a str> {
    let environment = &service["environment"];
    if let Some(value) = environment.get(name) {
        return value.as_str();
    }
    environment
        .as_array()?
        .iter()
        .find_map(|entry| entry.as_str()?.strip_prefix(name)?.strip_prefix('='))
}

/// `scheme://host:port/...` or `host:port` → (host, port).
fn host_port(address: &str) -> (String, u16) {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("no port in {address}"));
    (host.to_owned(), port.parse().expect("a port number"))
}

/// The bind mounts of a service: (path in the repository, path inside).
fn bind_mounts(service: &Value) -> Vec<(std::path::PathBuf, String)> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|volume| {
            let spec = volume.as_str().expect("short volume syntax");
            let mut parts = spec.split(':');
            let source = parts.next()?;
            let target = parts.next()?;
            source
                .starts_with('.')
                .then(|| (deploy_dir().join(source), target.to_owned()))
        })
        .collect()
}

/// Where a path inside the container comes from in the repository.
fn mounted_from(service: &Value, inside: &str) -> std::path::PathBuf {
    for (source, target) in bind_mounts(service) {
        if let Ok(rest) = Path::new(inside).strip_prefix(&target) {
            return if rest.as_os_str().is_empty() {
                source
            } else {
                source.join(rest)
            };
        }
    }
    panic!("nothing is mounted at {inside}");
}

#[test]
fn the_stack_has_its_services() {
    let compose = compose();
    for name in [
        "tallyd",
        "migrate",
        "postgres",
        "otel-collector",
        "prometheus",
        "grafana",
    ] {
        service(&compose, name);
    }
}

#[test]
fn every_mounted_file_is_in_the_repository() {
    let compose = compose();
    for (name, service) in compose["services"].as_object().unwrap() {
        for (source, _) in bind_mounts(service) {
            assert!(
                source.exists(),
                "{name} mounts {}, which does not exist",
                source.display()
            );
        }
        if let Some(build) = service.get("build") {
            let context = deploy_dir().join(str_at(build, "/context"));
            assert!(
                context.join(str_at(build, "/dockerfile")).is_file(),
                "{name}'s Dockerfile"
            );
        }
    }
}

#[test]
fn tallyd_listens_everywhere_after_migrating() {
    let compose = compose();
    let tallyd = service(&compose, "tallyd");
    let (host, port) = host_port(env(tallyd, "TALLY_LISTEN").expect("TALLY_LISTEN"));
    assert_eq!(
        host, "0.0.0.0",
        "in a container tallyd listens on every interface"
    );
    assert!(
        tallyd["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().ends_with(&format!(":{port}"))),
        "the gRPC port is published"
    );
    assert_eq!(
        tallyd["depends_on"]["migrate"]["condition"], "service_completed_successfully",
        "tallyd starts after the migration"
    );
    let migrate = service(&compose, "migrate");
    assert_eq!(migrate["command"][0], "migrate");
    assert_eq!(migrate["image"], tallyd["image"]);
    let database =
        |service: &Value| host_port(env(service, "TALLY_DATABASE_URL").expect("a database URL"));
    assert_eq!(database(tallyd), database(migrate));
    assert!(
        compose["services"].get(database(tallyd).0).is_some(),
        "the database is a service"
    );
}

#[test]
fn tallyd_exports_to_the_collector_which_prometheus_scrapes() {
    let compose = compose();
    let tallyd = service(&compose, "tallyd");
    let collector = service(&compose, "otel-collector");

    // tallyd → the collector's OTLP/gRPC receiver.
    let endpoint = env(tallyd, "OTEL_EXPORTER_OTLP_ENDPOINT").expect("OTEL_EXPORTER_OTLP_ENDPOINT");
    let (host, port) = host_port(endpoint);
    assert_eq!(host, "otel-collector");
    let config_arg = collector["command"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("--config="))
        .expect("the collector's --config");
    let config = yaml_one(&mounted_from(collector, config_arg));
    let (_, grpc_port) = host_port(str_at(&config, "/receivers/otlp/protocols/grpc/endpoint"));
    assert_eq!(
        port, grpc_port,
        "tallyd sends to the collector's OTLP/gRPC port"
    );
    assert!(env(tallyd, "OTEL_SERVICE_NAME").is_some());
    assert!(
        env(tallyd, "OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.instance.id=")),
        "tallyd names its instance"
    );

    // The metrics pipeline ends in the Prometheus exporter, traces somewhere.
    let pipelines = &config["service"]["pipelines"];
    assert!(
        pipelines["metrics"]["receivers"]
            .as_array()
            .unwrap()
            .contains(&"otlp".into())
    );
    assert!(
        pipelines["metrics"]["exporters"]
            .as_array()
            .unwrap()
            .contains(&"prometheus".into())
    );
    assert!(
        pipelines["traces"]["receivers"]
            .as_array()
            .unwrap()
            .contains(&"otlp".into())
    );
    for (_, pipeline) in pipelines.as_object().unwrap() {
        for stage in ["receivers", "processors", "exporters"] {
            for component in pipeline[stage].as_array().into_iter().flatten() {
                assert!(
                    config[stage].get(component.as_str().unwrap()).is_some(),
                    "the pipeline uses {stage} {component}, which is not configured"
                );
            }
        }
    }
    let (_, exporter_port) = host_port(str_at(&config, "/exporters/prometheus/endpoint"));

    // Prometheus scrapes that port on the collector, keeping tallyd's
    // job/instance labels.
    let prometheus = service(&compose, "prometheus");
    let config_arg = prometheus["command"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("--config.file="))
        .expect("prometheus's --config.file");
    let scrape = yaml_one(&mounted_from(prometheus, config_arg));
    let job = scrape["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["job_name"] == "otel-collector")
        .expect("a scrape job for the collector");
    assert_eq!(job["honor_labels"], true);
    let targets: Vec<(String, u16)> = job["static_configs"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| host_port(t.as_str().unwrap()))
        .collect();
    assert_eq!(targets, [("otel-collector".to_owned(), exporter_port)]);

    // And loads the alert rules from the repository's file.
    for rule_file in scrape["rule_files"].as_array().expect("rule_files") {
        let source = mounted_from(prometheus, rule_file.as_str().unwrap());
        assert_eq!(
            source.canonicalize().unwrap(),
            deploy_dir()
                .join("prometheus/alerts.yml")
                .canonicalize()
                .unwrap()
        );
    }
}

#[test]
fn grafana_is_provisioned_from_the_repository() {
    let compose = compose();
    let grafana = service(&compose, "grafana");
    let provisioning = mounted_from(grafana, "/etc/grafana/provisioning");
    let datasources = yaml_one(&provisioning.join("datasources/datasources.yaml"));
    for datasource in datasources["datasources"].as_array().unwrap() {
        let (host, _) = host_port(str_at(datasource, "/url"));
        assert!(
            compose["services"].get(&host).is_some(),
            "datasource host {host} is a service"
        );
    }
    let providers = yaml_one(&provisioning.join("dashboards/dashboards.yaml"));
    for provider in providers["providers"].as_array().unwrap() {
        let folder = mounted_from(grafana, str_at(provider, "/options/path"));
        assert!(
            folder.join("tally.json").is_file(),
            "the dashboard is in {}",
            folder.display()
        );
    }
}

#[test]
fn the_database_roles_are_created_by_the_init_script() {
    let compose = compose();
    let postgres = service(&compose, "postgres");
    let init = mounted_from(postgres, "/docker-entrypoint-initdb.d");
    let script: String = std::fs::read_dir(&init)
        .unwrap()
        .map(|entry| read(&entry.unwrap().path()))
        .collect();
    let user = |url: &str| {
        let rest = url.split_once("://").unwrap().1;
        rest.split([':', '@']).next().unwrap().to_owned()
    };
    let mut roles = vec![
        user(env(service(&compose, "tallyd"), "TALLY_DATABASE_URL").unwrap()),
        user(env(service(&compose, "migrate"), "TALLY_DATABASE_URL").unwrap()),
        "tally_app".to_owned(),
    ];
    let datasources =
        yaml_one(&deploy_dir().join("grafana/provisioning/datasources/datasources.yaml"));
    roles.extend(
        datasources["datasources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["user"].as_str().map(str::to_owned)),
    );
    for role in roles {
        assert!(
            script.contains(&format!("CREATE ROLE {role} ")),
            "the init script creates {role}"
        );
    }
    // The service's role joins tally_app, the migrations' least privilege.
    let app = user(env(service(&compose, "tallyd"), "TALLY_DATABASE_URL").unwrap());
    let creates_app = script
        .lines()
        .find(|l| l.contains(&format!("CREATE ROLE {app} ")))
        .unwrap();
    assert!(creates_app.contains("IN ROLE tally_app"), "{creates_app}");
}

/// Where a service mounts the named volume `volume`, if it does.
fn volume_mount(service: &Value, volume: &str) -> Option<String> {
    service["volumes"]
        .as_array()?
        .iter()
        .filter_map(|v| v.as_str())
        .find_map(|spec| {
            let mut parts = spec.split(':');
            (parts.next()? == volume).then(|| parts.next().map(str::to_owned))?
        })
}

#[test]
fn tallyd_serves_tls_with_api_keys_and_verifies_postgres() {
    let compose = compose();
    assert!(
        compose["volumes"].get("tls").is_some(),
        "a `tls` volume for the certificates"
    );
    // The certs service writes into the volume, with the script from the
    // repository, before PostgreSQL (and so tallyd) starts.
    let certs = service(&compose, "certs");
    let written = volume_mount(certs, "tls").expect("certs mounts the tls volume");
    let entrypoint: Vec<&str> = certs["entrypoint"]
        .as_array()
        .expect("an entrypoint")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(entrypoint.last(), Some(&written.as_str()));
    let script_path = entrypoint
        .iter()
        .find(|a| a.ends_with(".sh"))
        .expect("a script");
    let script = read(&mounted_from(certs, script_path));
    let postgres = service(&compose, "postgres");
    assert_eq!(
        postgres["depends_on"]["certs"]["condition"],
        "service_completed_successfully"
    );

    // What a file under the volume is called in the script, once checked
    // that `service` mounts the volume where the path says.
    let made = |service: &Value, path: &str| {
        let mount = volume_mount(service, "tls").expect("mounts the tls volume");
        let name = Path::new(path)
            .strip_prefix(&mount)
            .unwrap_or_else(|_| panic!("{path} is not under {mount}"))
            .to_str()
            .unwrap()
            .to_owned();
        assert!(script.contains(&name), "the script makes no {name}");
        name
    };

    // tallyd: TLS with the script's certificate, and API keys from the
    // repository.
    let tallyd = service(&compose, "tallyd");
    for name in ["TALLY_TLS_CERT", "TALLY_TLS_KEY"] {
        made(
            tallyd,
            env(tallyd, name).unwrap_or_else(|| panic!("{name}")),
        );
    }
    let keys = read(&mounted_from(
        tallyd,
        env(tallyd, "TALLY_API_KEYS").expect("TALLY_API_KEYS"),
    ));
    assert!(
        keys.contains("[[key]]") && keys.contains("sha256 = "),
        "{keys}"
    );

    // PostgreSQL serves TLS with the script's certificate for its service
    // name; tallyd and the migration check it (verify-full, the CA).
    let command: Vec<&str> = postgres["command"]
        .as_array()
        .expect("postgres's command")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(command.contains(&"ssl=on"), "{command:?}");
    for setting in ["ssl_cert_file=", "ssl_key_file="] {
        let path = command
            .iter()
            .find_map(|a| a.strip_prefix(setting))
            .unwrap_or_else(|| panic!("no {setting}"));
        made(postgres, path);
    }
    assert!(
        script.contains("DNS:postgres"),
        "the certificate names postgres"
    );
    for name in ["tallyd", "migrate"] {
        let client = service(&compose, name);
        let url = env(client, "TALLY_DATABASE_URL").unwrap();
        assert!(url.contains("sslmode=verify-full"), "{name}: {url}");
        assert_eq!(host_port(url).0, "postgres");
        made(
            client,
            env(client, "TALLY_PG_CA_FILE").expect("TALLY_PG_CA_FILE"),
        );
    }
}
