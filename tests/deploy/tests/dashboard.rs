//! The Grafana dashboard and the Prometheus alert rules use only metrics
//! and labels that docs/metrics.md lists (so a renamed metric breaks this
//! test, not a dashboard in production), and the dashboard's SQL only
//! tables and columns the migrations create.

use std::collections::BTreeSet;

use serde_json::Value;
use tally_deploy::metrics::Catalogue;
use tally_deploy::{deploy_dir, json, promql, read, repo_root, sql, str_at, yaml_one};

fn dashboard() -> Value {
    json(&deploy_dir().join("grafana/dashboards/tally.json"))
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut found = Vec::new();
    let mut pending: Vec<&Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    while let Some(panel) = pending.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            pending.extend(nested);
        }
        found.push(panel);
    }
    found
}

/// The datasource type of a query: its own, else its panel's.
fn datasource_type<'a>(target: &'a Value, panel: &'a Value) -> &'a str {
    target["datasource"]["type"]
        .as_str()
        .or(panel["datasource"]["type"].as_str())
        .unwrap_or_else(|| panic!("panel {:?} has no datasource", panel["title"]))
}

/// (where, PromQL) of every Prometheus query of the dashboard.
fn dashboard_promql(dashboard: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if datasource_type(target, panel) == "prometheus" {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {:?}: a query without expr", panel["title"]));
                found.push((format!("panel {}", panel["title"]), expr.to_owned()));
            }
        }
    }
    found
}

/// (where, SQL) of every PostgreSQL query of the dashboard, variables
/// included.
fn dashboard_sql(dashboard: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if datasource_type(target, panel).contains("postgres") {
                found.push((
                    format!("panel {}", panel["title"]),
                    str_at(target, "/rawSql").to_owned(),
                ));
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["datasource"]["type"]
            .as_str()
            .is_some_and(|t| t.contains("postgres"))
        {
            found.push((
                format!("variable {}", variable["name"]),
                str_at(variable, "/query").to_owned(),
            ));
        }
    }
    found
}

/// (where, PromQL) of every alert rule.
fn alert_promql() -> Vec<(String, String)> {
    let rules = yaml_one(&deploy_dir().join("prometheus/alerts.yml"));
    let mut found = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .expect("a name");
            found.push((format!("rule {name}"), str_at(rule, "/expr").to_owned()));
        }
    }
    found
}

/// Every problem with the metrics and labels of `queries`.
fn unknown_names(catalogue: &Catalogue, queries: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (place, expr) in queries {
        let found = match promql::references(expr) {
            Ok(found) => found,
            Err(e) => {
                problems.push(format!("{place}: {e} in {expr}"));
                continue;
            }
        };
        if found.metrics.is_empty() {
            problems.push(format!("{place}: no metric in {expr}"));
        }
        for metric in &found.metrics {
            if let Err(e) = catalogue.check_series(metric) {
                problems.push(format!("{place}: {e}"));
            }
        }
        for label in &found.labels {
            if let Err(e) = catalogue.check_label(label) {
                problems.push(format!("{place}: {e}"));
            }
        }
    }
    problems
}

#[test]
fn the_dashboard_uses_only_exported_metrics_and_labels() {
    let catalogue = Catalogue::load();
    let dashboard = dashboard();
    let queries = dashboard_promql(&dashboard);
    assert!(
        queries.len() >= 10,
        "the dashboard has its Prometheus panels"
    );
    let mut problems = unknown_names(&catalogue, &queries);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["datasource"]["type"] != "prometheus" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .expect("a variable query");
        let found = promql::variable_references(query).unwrap();
        let checks = found
            .metrics
            .iter()
            .map(|m| catalogue.check_series(m))
            .chain(found.labels.iter().map(|l| catalogue.check_label(l)));
        for result in checks {
            if let Err(e) = result {
                problems.push(format!("variable {}: {e}", variable["name"]));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_alert_rules_use_only_exported_metrics_and_labels() {
    let catalogue = Catalogue::load();
    let queries = alert_promql();
    assert!(!queries.is_empty());
    let problems = unknown_names(&catalogue, &queries);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_wrong_name_is_caught() {
    // The check itself: a misspelt metric, a histogram without its suffix,
    // the member label that metrics deliberately lack.
    let catalogue = Catalogue::load();
    for wrong in [
        "sum(rate(tally_credit_committed_total[5m]))",
        "histogram_quantile(0.99, rate(rpc_server_call_duration_seconds[5m]))",
        "sum by (tally_member) (rate(tally_credits_committed_total[5m]))",
        "sum(rate(tally_credits_committed_total{member_id=\"alice\"}[5m]))",
    ] {
        let problems = unknown_names(&catalogue, &[("test".into(), wrong.into())]);
        assert!(!problems.is_empty(), "{wrong} passed");
    }
}

#[test]
fn the_dashboard_shows_what_the_issue_asks_for() {
    let dashboard = dashboard();
    let mut used = BTreeSet::new();
    for (_, expr) in dashboard_promql(&dashboard) {
        used.extend(promql::references(&expr).unwrap().metrics);
    }
    for needed in [
        "tally_credits_committed_total", // usage by action, daily usage
        "tally_refusals_total",          // refusals
        "rpc_server_call_duration_seconds_bucket", // latency
        "rpc_server_call_duration_seconds_count", // calls and errors
        "tally_projection_lag_seconds",  // projection lag
        "tally_projection_lag_events",
        "tally_store_append_duration_seconds_bucket", // append latency
        "tally_store_append_batch_size_bucket",       // batch size
        "db_client_connection_pending_requests",      // pool
        "db_client_connection_count",
    ] {
        assert!(used.contains(needed), "no panel shows {needed}");
    }
    let sql: Vec<String> = dashboard_sql(&dashboard)
        .into_iter()
        .map(|(_, q)| q)
        .collect();
    assert!(
        sql.iter()
            .any(|q| q.contains("usage_daily") && q.contains("member_id")),
        "usage by member comes from usage_daily"
    );
}

#[test]
fn the_dashboard_sql_reads_tables_and_columns_that_exist() {
    let schema = sql::migrations_schema();
    let dashboard = dashboard();
    let queries = dashboard_sql(&dashboard);
    assert!(
        queries.len() >= 3,
        "the dashboard has its PostgreSQL panels"
    );
    let mut problems = Vec::new();
    for (place, query) in &queries {
        if let Err(e) = sql::check_query(&schema, query) {
            problems.push(format!("{place}: {e}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // And the check catches a wrong one.
    assert!(sql::check_query(&schema, "SELECT member FROM usage_daily").is_err());
    assert!(sql::check_query(&schema, "SELECT member_id FROM daily_usage").is_err());
}

#[test]
fn the_dashboard_refers_to_provisioned_datasources() {
    let provisioned =
        yaml_one(&deploy_dir().join("grafana/provisioning/datasources/datasources.yaml"));
    let known: BTreeSet<(String, String)> = provisioned["datasources"]
        .as_array()
        .expect("datasources")
        .iter()
        .map(|d| (str_at(d, "/uid").to_owned(), str_at(d, "/type").to_owned()))
        .collect();
    let dashboard = dashboard();
    let mut seen = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        assert!(
            ids.insert(panel["id"].as_u64().expect("a panel id")),
            "panel ids are unique: {}",
            panel["id"]
        );
        let mut refs = vec![&panel["datasource"]];
        refs.extend(
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| &t["datasource"]),
        );
        for datasource in refs.into_iter().filter(|d| !d.is_null()) {
            seen.insert((
                str_at(datasource, "/uid").to_owned(),
                str_at(datasource, "/type").to_owned(),
            ));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let datasource = &variable["datasource"];
        seen.insert((
            str_at(datasource, "/uid").to_owned(),
            str_at(datasource, "/type").to_owned(),
        ));
    }
    let unknown: Vec<_> = seen.difference(&known).collect();
    assert!(unknown.is_empty(), "not provisioned: {unknown:?}");
}

#[test]
fn every_alert_has_a_runbook_in_operations_md() {
    let operations = read(&repo_root().join("docs/operations.md"));
    let rules = yaml_one(&deploy_dir().join("prometheus/alerts.yml"));
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = str_at(rule, "/alert");
            assert!(
                operations
                    .lines()
                    .any(|l| l.starts_with('#') && l.trim_start_matches('#').trim() == name),
                "docs/operations.md has no heading for {name}"
            );
            assert_eq!(
                str_at(rule, "/annotations/runbook"),
                format!("docs/operations.md#{}", name.to_ascii_lowercase()),
                "{name}'s runbook link"
            );
            assert!(
                rule["labels"]["severity"].is_string(),
                "{name} has a severity"
            );
        }
    }
}

/// The Prometheus column of docs/metrics.md is what the collector's
/// exporter makes of each instrument (dots to underscores, `_seconds` for
/// a unit of seconds, `_total` for counters), so the names the dashboard
/// and alerts are checked against are the names Prometheus will have.
#[test]
fn the_documented_prometheus_names_follow_the_exporters_rules() {
    let catalogue = Catalogue::load();
    for metric in catalogue.metrics.values() {
        assert_eq!(
            metric.prometheus_name,
            tally_deploy::metrics::translated_name(&metric.otel_name, metric.kind, &metric.unit),
            "{}",
            metric.otel_name
        );
    }
}
