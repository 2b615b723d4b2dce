//! The alert rules, checked by Prometheus' own tool when it is installed
//! (Debian's `prometheus` package has `promtool`): the rules load, and
//! `deploy/prometheus/alerts.test.yml` (synthetic series, expected alerts)
//! passes. Without promtool this says so and passes: the names in the
//! rules are checked either way by `dashboard.rs`.

use tally_deploy::{deploy_dir, run_validator};

fn promtool(args: &[&str]) -> Option<(bool, String)> {
    run_validator(
        "promtool",
        args,
        &deploy_dir().join("prometheus"),
        "apt-get install prometheus",
    )
}

#[test]
fn the_alert_rules_load() {
    if let Some((ok, text)) = promtool(&["check", "rules", "alerts.yml"]) {
        assert!(ok, "{text}");
    }
}

#[test]
fn the_alert_rules_fire_when_they_should() {
    if let Some((ok, text)) = promtool(&["test", "rules", "alerts.test.yml"]) {
        assert!(ok, "{text}");
    }
}

/// The dashboard's queries parse with Prometheus' own parser: each becomes
/// a recording rule (Grafana's variables replaced by sample values) in a
/// scratch rules file for `promtool check rules`.
#[test]
fn the_dashboard_queries_parse() {
    let dashboard = tally_deploy::json(&deploy_dir().join("grafana/dashboards/tally.json"));
    let mut exprs = Vec::new();
    let mut pending = vec![&dashboard];
    while let Some(node) = pending.pop() {
        for panel in node["panels"].as_array().into_iter().flatten() {
            pending.push(panel);
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    exprs.push(expr.to_owned());
                }
            }
        }
    }
    assert!(!exprs.is_empty());
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let concrete = expr
            .replace("$__rate_interval", "5m")
            .replace("$__range", "1d")
            .replace("$__interval", "1m")
            .replace("$action", ".*");
        assert!(
            !concrete.contains('$'),
            "a Grafana variable to replace in {expr}"
        );
        let quoted = serde_json::to_string(&concrete).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-rules.yml");
    std::fs::write(&path, rules).unwrap();
    if let Some((ok, text)) = promtool(&["check", "rules", path.to_str().unwrap()]) {
        assert!(ok, "{text}");
    }
}
