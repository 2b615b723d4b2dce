//! Every YAML and JSON file in deploy/ parses, and the image definition
//! keeps to its rules: a multi-stage build, a non-root runtime, tallyd as
//! the entrypoint, a context without build output or history.

use tally_deploy::{deploy_dir, files_with_suffix, json, load_yaml, read};

#[test]
fn every_yaml_file_parses() {
    let files = files_with_suffix(&deploy_dir(), &[".yaml", ".yml"]);
    assert!(files.len() >= 10, "found {} YAML files", files.len());
    let mut problems = Vec::new();
    for path in &files {
        match load_yaml(path) {
            Ok(documents) if documents.is_empty() => {
                problems.push(format!("{}: no document", path.display()))
            }
            Ok(documents) => {
                for (i, document) in documents.iter().enumerate() {
                    if !document.is_object() {
                        problems.push(format!("{}: document {i} is not a mapping", path.display()));
                    }
                }
            }
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_broken_yaml_file_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("bad-indent.yaml", "a:\n  b: 1\n c: 2\n"),
        ("duplicate.yaml", "a: 1\na: 2\n"),
        ("second-document.yaml", "a: 1\n---\nb: [1, 2\n"),
    ];
    for (name, text) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        assert!(load_yaml(&path).is_err(), "{name} parsed");
    }
}

#[test]
fn every_json_file_parses() {
    for path in files_with_suffix(&deploy_dir(), &[".json"]) {
        assert!(json(&path).is_object(), "{}", path.display());
    }
}

#[test]
fn the_image_is_multi_stage_and_runs_tallyd_as_non_root() {
    let dockerfile = read(&deploy_dir().join("Dockerfile"));
    let instructions: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let stages = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(stages >= 2, "a build stage and a runtime stage");
    let runtime: Vec<&str> = instructions
        .iter()
        .rev()
        .take_while(|l| !l.starts_with("FROM "))
        .copied()
        .collect();
    let user = runtime
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "runs as {user}");
    assert!(
        runtime
            .iter()
            .any(|l| l.starts_with("ENTRYPOINT") && l.contains("tallyd")),
        "the entrypoint is tallyd"
    );
    assert!(
        dockerfile.contains("cargo build --release --locked -p tally-server"),
        "builds tallyd from the lock file"
    );
    assert!(
        dockerfile.contains("TALLY_LISTEN=0.0.0.0:"),
        "listens on every interface in a container"
    );

    let ignored: Vec<String> = read(&deploy_dir().join("Dockerfile.dockerignore"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    for needed in ["target", ".git"] {
        assert!(
            ignored.iter().any(|l| l == needed),
            "the context leaves out {needed}"
        );
    }
}
