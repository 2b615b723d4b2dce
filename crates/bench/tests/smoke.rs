//! CI smoke test of tally-bench: the real binary drives a real tallyd for a
//! couple of seconds per scenario, on the embedded store and on PostgreSQL
//! (and watch on two tallyd sharing one PostgreSQL database), and must
//! finish with exact balances. No timing is asserted: CI machines
//! are shared and slow; the figures belong in docs/benchmarks.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_tally-bench");

fn admin_url() -> String {
    std::env::var("TALLY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// tallyd of the same build profile: `target/<profile>/tallyd`, beside the
/// folder of this test's executable (`target/<profile>/deps/`). `cargo test
/// --workspace` builds it already (tally-server has integration tests);
/// `cargo test -p tally-bench` may not, so it is built here when missing.
fn tallyd() -> &'static Path {
    static TALLYD: OnceLock<PathBuf> = OnceLock::new();
    TALLYD.get_or_init(|| {
        if let Ok(path) = std::env::var("TALLY_BENCH_TALLYD") {
            return PathBuf::from(path);
        }
        let exe = std::env::current_exe().expect("the test's own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test runs from target/<profile>/deps");
        let tallyd = profile_dir.join(format!("tallyd{}", std::env::consts::EXE_SUFFIX));
        if !tallyd.exists() {
            build_tallyd(profile_dir);
        }
        assert!(
            tallyd.exists(),
            "no tallyd at {} even after building it; set TALLY_BENCH_TALLYD",
            tallyd.display()
        );
        tallyd
    })
}

fn build_tallyd(profile_dir: &Path) {
    let mut command = Command::new(env!("CARGO"));
    command.args(["build", "-p", "tally-server", "--bin", "tallyd"]);
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        command.arg("--release");
    }
    // The target dir this test was built in, whatever CARGO_TARGET_DIR says.
    if let Some(target_dir) = profile_dir.parent() {
        command.env("CARGO_TARGET_DIR", target_dir);
    }
    let status = command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("running cargo build for tallyd");
    assert!(status.success(), "cargo build -p tally-server failed");
}

/// Runs `tally-bench <args>` for a short time and returns its JSON report.
fn bench(name: &str, args: &[&str]) -> Value {
    let json = tempfile::Builder::new()
        .prefix(&format!("tally-bench-{name}-"))
        .suffix(".json")
        .tempfile()
        .expect("temp file");
    let output = Command::new(BENCH)
        .args(args)
        .args(["--duration", "2s", "--warmup", "500ms"])
        .args(["--callers", "8", "--connections", "2"])
        .arg("--tallyd")
        .arg(tallyd())
        .arg("--database-url")
        .arg(admin_url())
        .arg("--json")
        .arg(json.path())
        .output()
        .expect("running tally-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tally-bench {args:?} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("balances: PASS"),
        "no PASS line from tally-bench {args:?}:\n{stdout}\n{stderr}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(json.path()).expect("JSON report"))
            .expect("valid JSON");
    assert_eq!(report["balances_exact"], true, "{name}: {report:#}");
    assert_eq!(report["check"]["exact"], true, "{name}: {report:#}");
    let ops = report["tally"]["ops"].as_u64().expect("tally.ops");
    assert!(ops > 0, "{name}: Tally made no operation: {report:#}");
    let lag = &report["projection_lag"];
    assert!(
        lag["probes"].as_u64().expect("projection_lag.probes") > 0,
        "{name}: no projection lag measured: {report:#}"
    );
    assert!(
        lag["latency_ms"]["max"].as_f64().unwrap() > 0.0,
        "{report:#}"
    );
    assert_eq!(
        report["tally"]["errors"],
        serde_json::json!({}),
        "{name}: Tally answered with errors: {report:#}"
    );
    report
}

fn scenarios(store: &str) {
    let hot = bench(
        &format!("{store}-hot"),
        &[
            "hot",
            "--store",
            store,
            "--history",
            "500",
            "--baseline",
            "none",
        ],
    );
    assert!(hot["history"]["operations"].as_u64().unwrap() > 0);
    bench(
        &format!("{store}-spread"),
        &[
            "spread",
            "--store",
            store,
            "--accounts",
            "100",
            "--baseline",
            "none",
        ],
    );
    bench(
        &format!("{store}-reserve-commit"),
        &[
            "reserve-commit",
            "--store",
            store,
            "--history",
            "200",
            "--history-on-hot",
            "--baseline",
            "none",
        ],
    );
    // Open loop, so the scheduled path runs too.
    let mixed = bench(
        &format!("{store}-mixed"),
        &[
            "mixed",
            "--store",
            store,
            "--accounts",
            "20",
            "--rate",
            "100",
            "--baseline",
            "none",
        ],
    );
    assert_eq!(mixed["mode"], "open");
    assert!(mixed["tally"]["by_kind"].as_object().unwrap().len() >= 4);
    let report = bench(
        &format!("{store}-report"),
        &[
            "report",
            "--store",
            store,
            "--accounts",
            "50",
            "--baseline",
            "none",
        ],
    );
    assert_eq!(report["tally"]["records_per_op"], 500);
    let records = report["tally"]["records_per_sec"].as_f64().unwrap();
    let ops = report["tally"]["ops_per_sec"].as_f64().unwrap();
    assert!(
        (records - ops * 500.0).abs() < 1e-6 * records.max(1.0),
        "{report:#}"
    );
}

#[test]
fn balance_reads_charge_nothing() {
    for store in ["sqlite", "postgres"] {
        let report = bench(
            &format!("{store}-balance"),
            &[
                "balance",
                "--store",
                store,
                "--accounts",
                "50",
                "--baseline",
                "none",
            ],
        );
        assert!(
            report["tally"]["by_kind"]["get-balance"].is_object(),
            "{report:#}"
        );
        // Only the lag probe's own debits were charged.
        let probe = 1_000 * report["projection_lag"]["probes"].as_i64().unwrap();
        assert_eq!(
            report["check"]["consumed_millicredits"].as_i64(),
            Some(probe),
            "{report:#}"
        );
    }
}

#[test]
fn every_scenario_on_the_embedded_store() {
    scenarios("sqlite");
}

#[test]
fn every_scenario_on_postgres() {
    scenarios("postgres");
}

/// Baselines run in the same invocation and every Tally figure gets a ratio
/// to each; the plot is written; the databases are gone afterwards.
#[test]
fn baselines_ratios_and_plot() {
    let plot = tempfile::Builder::new()
        .suffix(".svg")
        .tempfile()
        .expect("temp file");
    let plot_path = plot.path().to_str().expect("utf-8 path");
    let report = bench(
        "baselines",
        &["hot", "--baseline", "naive,echo", "--plot", plot_path],
    );
    for baseline in ["naive", "echo"] {
        assert!(report[baseline]["ops"].as_u64().unwrap() > 0, "{report:#}");
        assert!(
            report["ratios"][baseline]["ops_per_sec"].as_f64().unwrap() > 0.0,
            "{report:#}"
        );
    }
    assert_eq!(report["naive_check"]["exact"], true, "{report:#}");
    let svg = std::fs::read_to_string(plot.path()).expect("plot written");
    assert_eq!(svg.matches("<polyline").count(), 3, "{svg}");

    let pid = report["pid"].as_u64().unwrap();
    assert_eq!(count_databases(pid), 0, "tally-bench left databases behind");
}

fn count_databases(pid: u64) -> i64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL");
        tokio::spawn(connection);
        client
            .query_one(
                "SELECT count(*) FROM pg_database WHERE datname LIKE $1",
                &[&format!("tally_bench_{pid}_%")],
            )
            .await
            .unwrap()
            .get(0)
    })
}

/// The balance scenario's baselines: echo answers GetBalance, naive reads
/// the balance row.
#[test]
fn balance_reads_against_both_baselines() {
    let report = bench(
        "balance-baselines",
        &["balance", "--accounts", "100", "--baseline", "naive,echo"],
    );
    for baseline in ["naive", "echo"] {
        assert!(
            report[baseline]["by_kind"]["get-balance"]["ops"]
                .as_u64()
                .unwrap()
                > 0,
            "{report:#}"
        );
        assert_eq!(
            report[baseline]["errors"],
            serde_json::json!({}),
            "{report:#}"
        );
        assert!(
            report["ratios"][baseline]["ops_per_sec"].as_f64().unwrap() > 0.0,
            "{report:#}"
        );
    }
    assert_eq!(report["naive_check"]["exact"], true, "{report:#}");
}

/// Two tallyd on one PostgreSQL database: every Debit answered on A reaches
/// the watches on B, and the shared database is gone afterwards.
#[test]
fn watch_across_two_replicas() {
    let report = bench(
        "watch",
        &[
            "watch",
            "--accounts",
            "20",
            "--rate",
            "100",
            "--grace",
            "10s",
        ],
    );
    assert_eq!(report["scenario"], "watch");
    assert_eq!(report["mode"], "open");
    let watch = &report["watch"];
    let delivered = watch["delivered"].as_u64().expect("watch.delivered");
    assert!(delivered > 0, "{report:#}");
    assert_eq!(watch["missing"], 0, "{report:#}");
    assert_eq!(watch["answered"].as_u64().unwrap(), delivered, "{report:#}");
    assert_eq!(watch["watchers"], 20, "{report:#}");
    let latency = &watch["latency_ms"];
    for percentile in ["p50", "p90", "p99", "p999", "max"] {
        assert!(latency[percentile].as_f64().unwrap() > 0.0, "{report:#}");
    }
    assert!(
        latency["p50"].as_f64().unwrap() <= latency["max"].as_f64().unwrap(),
        "{report:#}"
    );
    let pid = report["pid"].as_u64().unwrap();
    assert_eq!(count_databases(pid), 0, "tally-bench left databases behind");
}

/// Two replicas cannot share the embedded store: refused before anything
/// starts, with exit code 2.
#[test]
fn watch_refuses_the_embedded_store() {
    let output = Command::new(BENCH)
        .args(["watch", "--store", "sqlite", "--duration", "1s"])
        .output()
        .expect("running tally-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--store postgres"), "{stderr}");
}

#[test]
fn memory_per_cached_account() {
    let json = tempfile::NamedTempFile::new().expect("temp file");
    let output = Command::new(BENCH)
        .args(["memory", "--steps", "200,400", "--callers", "8"])
        .arg("--tallyd")
        .arg(tallyd())
        .arg("--json")
        .arg(json.path())
        .output()
        .expect("running tally-bench");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(json.path()).unwrap()).unwrap();
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert!(steps[1]["rss_bytes"].as_u64().unwrap() > 0);
}

/// SIGTERM (what `timeout` and a CI job's end send) in the middle of a
/// run: tally-bench stops, says why, and leaves no database behind.
#[test]
fn sigterm_mid_run_leaves_no_database_behind() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut child = Command::new(BENCH)
        .args(["hot", "--store", "postgres", "--baseline", "none"])
        .args(["--duration", "120s", "--warmup", "0s"])
        .args(["--callers", "4", "--connections", "1"])
        .arg("--tallyd")
        .arg(tallyd())
        .arg("--database-url")
        .arg(admin_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running tally-bench");
    let pid = u64::from(child.id());
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let read = stdout.read_line(&mut line).expect("tally-bench's stdout");
        assert!(read > 0, "tally-bench ended before measuring:\n{seen}");
        seen.push_str(&line);
        if line.contains("measuring") {
            break;
        }
    }
    assert!(
        count_databases(pid) > 0,
        "the run's database exists while it measures"
    );
    let tallyds = children_named(pid, "tallyd");
    assert_eq!(tallyds.len(), 1, "the run's tallyd is running");

    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let output = child.wait_with_output().expect("tally-bench exits");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    assert_eq!(count_databases(pid), 0, "tally-bench left databases behind");
    for tallyd in tallyds {
        assert!(
            !std::path::Path::new(&format!("/proc/{tallyd}")).exists(),
            "tally-bench left its tallyd {tallyd} running"
        );
    }
}

/// The pids of `parent`'s children whose command is `name` (Linux /proc).
fn children_named(parent: u64, name: &str) -> Vec<u64> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split at ')'.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map(|(_, comm)| comm);
        let ppid = tail
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u64>().ok());
        if comm == Some(name) && ppid == Some(parent) {
            children.extend(
                entry
                    .file_name()
                    .to_str()
                    .and_then(|p| p.parse::<u64>().ok()),
            );
        }
    }
    children
}
