//! `docs/metrics.md` lists exactly the metrics `names.rs` declares, with
//! the Prometheus names the collector will give them.

use std::collections::BTreeMap;

use tally_telemetry::names::{self, Kind};

/// The doc's metric table: OTel name → (Prometheus name, type, unit).
fn documented() -> BTreeMap<String, (String, String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md");
    let doc = std::fs::read_to_string(path).expect("reading docs/metrics.md");
    let unquote = |cell: &str| cell.trim().trim_matches('`').to_owned();
    doc.lines()
        .skip_while(|line| !line.starts_with("| Name | Prometheus |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').collect();
            (
                unquote(cells[1]),
                (unquote(cells[2]), unquote(cells[3]), unquote(cells[4])),
            )
        })
        .collect()
}

#[test]
fn the_doc_lists_every_declared_metric_and_nothing_else() {
    let documented = documented();
    let declared: BTreeMap<String, (String, String, String)> = names::ALL
        .iter()
        .map(|i| {
            let kind = match i.kind {
                Kind::Counter => "counter",
                Kind::Histogram => "histogram",
                Kind::Gauge => "gauge",
            };
            (
                i.name.to_owned(),
                (i.prometheus_name(), kind.to_owned(), i.unit.to_owned()),
            )
        })
        .collect();
    assert_eq!(documented, declared);
    assert_eq!(declared.len(), names::ALL.len(), "a name declared twice");
}

#[test]
fn prometheus_names_follow_the_collector_translation() {
    assert_eq!(
        names::RPC_SERVER_CALL_DURATION.prometheus_name(),
        "rpc_server_call_duration_seconds"
    );
    assert_eq!(
        names::CREDITS_COMMITTED.prometheus_name(),
        "tally_credits_committed_total"
    );
    assert_eq!(
        names::PROJECTION_LAG.prometheus_name(),
        "tally_projection_lag_seconds"
    );
    assert_eq!(
        names::PROJECTION_LAG_EVENTS.prometheus_name(),
        "tally_projection_lag_events"
    );
}
