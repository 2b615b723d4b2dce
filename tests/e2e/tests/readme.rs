//! The README's walkthrough, played as written against a real tallyd: every
//! grpcurl command in it is sent, and every output it shows (the JSON
//! answers, the errors, the condensed ledger, the figures in comments) is
//! compared with what the server answers, so the walkthrough cannot go
//! stale unnoticed.
//!
//! `TALLY_BLESS_README=1 cargo test -p tally-e2e --test readme` rewrites
//! those outputs from the server's answers instead of failing, keeping the
//! prose and the commands.
//!
//! grpcurl's side is played with the API's descriptor set
//! (`readme/grpcurl.rs`): a request's JSON is read with the proto3 JSON
//! mapping, as grpcurl reads it, and an answer is written as grpcurl
//! writes it. What the README shows is compared as JSON values, not text,
//! with the ids the service mints bound on first sight (`readme/ids.rs`).

// The crate root's modules would be looked for beside it, among the other
// tests; these live in readme/ (which cargo does not take for tests).
#[path = "readme/grpcurl.rs"]
mod grpcurl;
#[path = "readme/ids.rs"]
mod ids;
#[path = "readme/session.rs"]
mod session;
#[path = "readme/walkthrough.rs"]
mod walkthrough;

use std::path::PathBuf;

use session::{Difference, Played, Rewrite, Session};
use tally_e2e::{Backend, Options, TestServer};
use walkthrough::Shown;

/// Set to 1 to rewrite the README's outputs from the server's answers.
const BLESS: &str = "TALLY_BLESS_README";

#[tokio::test]
async fn the_readme_walkthrough_is_what_a_real_tallyd_answers() {
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let played = play(&readme, Backend::Embedded).await;
    if std::env::var(BLESS).is_ok_and(|v| v == "1") {
        // What a rewrite cannot fix (a command the README shows succeeding
        // that fails) still fails the test.
        let unfixable: Vec<_> = played.differences.iter().filter(|d| !d.blessable).collect();
        assert!(unfixable.is_empty(), "{}", report(&unfixable));
        let blessed = bless(&readme, played.rewrites);
        if blessed != readme {
            // Renamed into place: the other tests read README.md meanwhile.
            let new = root().join("README.md.blessed");
            std::fs::write(&new, blessed).expect("README.md rewritten");
            std::fs::rename(&new, &path).expect("README.md replaced");
            eprintln!("README.md: the walkthrough's outputs were rewritten from tallyd's answers");
        }
    } else {
        let all: Vec<_> = played.differences.iter().collect();
        assert!(
            all.is_empty(),
            "{}\nIf tallyd is right, rewrite the README's outputs with \
             {BLESS}=1 cargo test -p tally-e2e --test readme",
            report(&all)
        );
    }
}

/// On PostgreSQL the walkthrough reads the same, figure for figure (the
/// README is blessed on the embedded store only).
#[tokio::test]
async fn the_readme_walkthrough_is_what_tallyd_on_postgresql_answers() {
    if std::env::var(BLESS).is_ok_and(|v| v == "1") {
        eprintln!("blessing: README.md is checked on PostgreSQL by the next run without {BLESS}");
        return;
    }
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let played = play(&readme, Backend::Postgres).await;
    let all: Vec<_> = played.differences.iter().collect();
    assert!(all.is_empty(), "on PostgreSQL: {}", report(&all));
}

/// The README with a figure changed in every output it shows: each change
/// is found where it was made, and blessing it gives what blessing the
/// README gives.
#[tokio::test]
async fn a_figure_the_readme_gets_wrong_is_found_and_blessing_restores_it() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let lines: Vec<&str> = readme.lines().collect();
    let mut stale: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    // The line each change should be reported at.
    let mut changed = Vec::new();
    for step in walkthrough::parse(&lines).steps {
        match step.shown {
            Shown::Answer(range) => {
                if let Some(n) = range
                    .clone()
                    .find(|&n| lines[n].contains("Millicredits\": \""))
                {
                    stale[n] = bump(&stale[n]);
                    changed.push(range.start);
                }
            }
            Shown::Error(range) => {
                // The Message line.
                stale[range.start + 2].push_str(" (stale)");
                changed.push(range.start);
            }
            Shown::Ledger(range) => {
                stale[range.end - 1] = bump(&stale[range.end - 1]);
                changed.push(range.end - 1);
            }
            Shown::Nothing => {}
        }
        if let Some(comment) = step.comment {
            stale[comment.line] = bump(&stale[comment.line]);
            changed.push(comment.line);
        }
    }
    assert!(
        changed.len() >= 5,
        "the walkthrough shows outputs: {changed:?}"
    );
    let mut stale = stale.join("\n");
    stale.push('\n');

    let played = play(&stale, Backend::Embedded).await;
    for line in &changed {
        assert!(
            played.differences.iter().any(|d| d.line == *line),
            "the change at README.md line {} went unnoticed: {:#?}",
            line + 1,
            played.differences
        );
    }
    assert!(
        played.differences.iter().all(|d| d.blessable),
        "{:#?}",
        played.differences
    );
    let original = play(&readme, Backend::Embedded).await;
    assert!(
        bless(&stale, played.rewrites) == bless(&readme, original.rewrites),
        "blessing the changed README does not give what blessing README.md gives"
    );
}

/// The line with its last number one more.
fn bump(line: &str) -> String {
    let end = line.rfind(|c: char| c.is_ascii_digit()).expect("a number") + 1;
    let start = line[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |at| at + 1);
    let number: u64 = line[start..end].parse().expect("digits");
    format!("{}{}{}", &line[..start], number + 1, &line[end..])
}

/// The workspace's root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Starts tallyd as the walkthrough says, on `backend`, and plays each
/// command of it.
async fn play(readme: &str, backend: Backend) -> Played {
    let lines: Vec<&str> = readme.lines().collect();
    let walkthrough = walkthrough::parse(&lines);
    let rate_card = std::fs::read_to_string(root().join(&walkthrough.rate_card))
        .expect("the rate card the walkthrough starts the server with");
    let server = TestServer::start_with(Options {
        backend,
        rate_card,
        start: walkthrough.clock,
        ..Options::default()
    })
    .await;
    let mut session = Session::new(server.channel().await);
    if backend == Backend::Postgres {
        session = session.opaque(&["consistencyToken"]);
    }
    let mut all = Played::default();
    for step in &walkthrough.steps {
        let played = session.play(step, &lines).await;
        all.differences.extend(played.differences);
        all.rewrites.extend(played.rewrites);
    }
    all
}

/// The README with each rewrite in place.
fn bless(readme: &str, mut rewrites: Vec<Rewrite>) -> String {
    let mut lines: Vec<String> = readme.lines().map(str::to_owned).collect();
    rewrites.sort_by_key(|r| std::cmp::Reverse(r.lines.start));
    for rewrite in rewrites {
        lines.splice(rewrite.lines, rewrite.text);
    }
    let mut text = lines.join("\n");
    if readme.ends_with('\n') {
        text.push('\n');
    }
    text
}

fn report(differences: &[&Difference]) -> String {
    let mut text = format!(
        "the README's walkthrough and a real tallyd disagree in {} places:\n",
        differences.len()
    );
    for d in differences {
        text.push_str(&format!("README.md line {}: {}\n", d.line + 1, d.what));
    }
    text
}
