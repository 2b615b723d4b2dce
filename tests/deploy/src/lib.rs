//! Helpers for the checks of `deploy/`: loading its YAML and JSON, the
//! metric catalogue of `docs/metrics.md`, the names a PromQL expression or
//! a SQL query refers to, and the tables the PostgreSQL migrations create.
//! The checks themselves are in `tests/`.

pub mod metrics;
pub mod promql;
pub mod sql;

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/deploy sits two levels below the root")
        .to_path_buf()
}

/// `deploy/` in the repository.
pub fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

/// Reads a file of the repository, with its path in the panic message.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every document of a YAML file (a file may hold several, `---` apart),
/// as JSON values. Duplicate keys are an error; merge keys (`<<`) are
/// expanded, as docker compose does.
pub fn load_yaml(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_saphyr::from_multiple::<Value>(&text).map_err(|e| e.to_string())
}

/// [`load_yaml`], panicking with the file's name on error.
pub fn yaml(path: &Path) -> Vec<Value> {
    load_yaml(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The single document of a YAML file.
pub fn yaml_one(path: &Path) -> Value {
    let mut documents = yaml(path);
    assert_eq!(documents.len(), 1, "{}: one document", path.display());
    documents.remove(0)
}

/// A JSON file.
pub fn json(path: &Path) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files under `dir` (recursively) whose names end with one of `suffixes`,
/// sorted.
pub fn files_with_suffix(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if suffixes
                .iter()
                .any(|suffix| path.to_string_lossy().ends_with(suffix))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The string at `pointer` (RFC 6901, e.g. `/spec/template`), or a panic
/// naming what is missing.
pub fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
}

/// Runs an external validator and returns (success, stdout + stderr), or
/// `None` when it is not installed: then the check says SKIPPED, unless
/// `TALLY_REQUIRE_DEPLOY_VALIDATORS=1` (as in CI), when it fails.
pub fn run_validator(
    program: &str,
    args: &[&str],
    dir: &Path,
    install: &str,
) -> Option<(bool, String)> {
    let output = match std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let required = std::env::var("TALLY_REQUIRE_DEPLOY_VALIDATORS").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{program} is not installed and TALLY_REQUIRE_DEPLOY_VALIDATORS=1 ({install})"
            );
            eprintln!(
                "SKIPPED: {program} is not installed, so `{program} {}` did not run ({install})",
                args.join(" ")
            );
            return None;
        }
        Err(e) => panic!("running {program}: {e}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some((output.status.success(), text))
}
