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
//! grpcurl's side is played with the API's descriptor set: a request's
//! JSON is read with the proto3 JSON mapping, as grpcurl reads it, and an
//! answer is written as grpcurl writes it (lowerCamelCase names, 64-bit
//! integers as strings, default values left out, two spaces per level).
//! Ids the service mints (`rsv_…`, `grn_…`) differ on every run: the first
//! place the README shows one binds it to the id the server answered there,
//! and every later use, requests included, stands for that id.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage as _, SerializeOptions,
};
use serde_json::Value;
use tally_core::Timestamp;
use tally_e2e::{Options, TestServer, frame, raw_exchange};
use tonic::transport::Channel;

/// The heading of the section this test plays.
const SECTION: &str = "## Walkthrough with grpcurl";
/// Set to 1 to rewrite the README's outputs from the server's answers.
const BLESS: &str = "TALLY_BLESS_README";
/// The prose names the clock the outputs were recorded at, as
/// ``clock at `2026-11-01T09:00:00Z` ``; the server starts there.
const CLOCK_MARK: &str = "clock at `";
/// The line before the condensed ledger table.
const LEDGER_MARK: &str = "Condensed from the JSON:";
/// The address every command names: the one tallyd listens on by default.
const ADDRESS: &str = "localhost:50051";

#[tokio::test]
async fn the_readme_walkthrough_is_what_a_real_tallyd_answers() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let lines: Vec<&str> = readme.lines().collect();
    let walkthrough = parse(&lines);
    let rate_card = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(&walkthrough.rate_card),
    )
    .expect("the rate card the walkthrough starts the server with");
    let server = TestServer::start_with(Options {
        rate_card,
        start: walkthrough.clock,
        ..Options::default()
    })
    .await;
    let mut session = Session {
        pool: pool(),
        channel: server.channel().await,
        ids: Ids::default(),
    };

    let mut differences = Vec::new();
    let mut rewrites = Vec::new();
    for step in &walkthrough.steps {
        let played = session.play(step, &lines).await;
        differences.extend(played.differences);
        rewrites.extend(played.rewrites);
    }

    if std::env::var(BLESS).is_ok_and(|v| v == "1") {
        // What a rewrite cannot fix (a command the README shows succeeding
        // that fails) still fails the test.
        let unfixable: Vec<_> = differences.iter().filter(|d| !d.blessable).collect();
        assert!(unfixable.is_empty(), "{}", report(&unfixable));
        let blessed = apply(&lines, rewrites, readme.ends_with('\n'));
        if blessed != readme {
            std::fs::write(&path, blessed).expect("README.md rewritten");
            eprintln!("README.md: the walkthrough's outputs were rewritten from tallyd's answers");
        }
    } else {
        let all: Vec<_> = differences.iter().collect();
        assert!(
            all.is_empty(),
            "{}\nIf tallyd is right, rewrite the README's outputs with \
             {BLESS}=1 cargo test -p tally-e2e --test readme",
            report(&all)
        );
    }
}

// ---------------------------------------------------------------------
// The README, read.

/// What the walkthrough section says to do and what it shows.
#[derive(Debug)]
struct Walkthrough {
    /// The `--rate-card` of the command that starts the server, from the
    /// workspace root.
    rate_card: String,
    /// Where the server's clock stands (it does not move).
    clock: Timestamp,
    steps: Vec<Step>,
}

/// One grpcurl command and what the README shows it answer.
#[derive(Debug)]
struct Step {
    /// The command's first line in README.md, from 0.
    line: usize,
    /// `tally.v1.AccountService/Grant`.
    method: String,
    /// The `-d` JSON; none sends an empty message, as grpcurl does.
    request: Option<String>,
    /// A `# "field": value, …` comment after the command: figures of the
    /// answer.
    comment: Option<Comment>,
    shown: Shown,
}

#[derive(Debug)]
struct Comment {
    line: usize,
    /// The text after `#`, trimmed.
    text: String,
}

/// The lines of README.md that show a command's answer.
#[derive(Debug)]
enum Shown {
    /// Nothing: the command must succeed.
    Nothing,
    /// The answer as JSON.
    Answer(Range<usize>),
    /// An `ERROR:` block as grpcurl prints it.
    Error(Range<usize>),
    /// The ledger condensed to a table (ListLedger only).
    Ledger(Range<usize>),
}

fn parse(lines: &[&str]) -> Walkthrough {
    let start = lines
        .iter()
        .position(|l| *l == SECTION)
        .unwrap_or_else(|| panic!("README.md has no {SECTION:?} section"));
    let end = (start + 1..lines.len())
        .find(|&i| lines[i].starts_with("## "))
        .unwrap_or(lines.len());
    let mut rate_card = None;
    let mut clock = None;
    let mut steps: Vec<Step> = Vec::new();
    let mut i = start + 1;
    while i < end {
        let Some(lang) = lines[i].strip_prefix("```") else {
            if clock.is_none() {
                clock = clock_in(lines[i]);
            }
            i += 1;
            continue;
        };
        let body = block_body(lines, i, end);
        match lang {
            "sh" if lines[body.start].starts_with("cargo run") => {
                let command = lex(lines, body.clone(), false)
                    .into_iter()
                    .next()
                    .expect("the server's command");
                let flag = command.tokens.iter().position(|t| t == "--rate-card");
                rate_card = flag.and_then(|at| command.tokens.get(at + 1).cloned());
            }
            "sh" => {
                let first = steps.len();
                for command in lex(lines, body.clone(), false) {
                    steps.push(step(lines, command, Shown::Nothing));
                }
                assert!(steps.len() > first, "line {}: an empty block", i + 1);
                // What follows the block shows what its last command answers.
                let (shown, next) = shown_after(lines, body.end + 1, end);
                steps.last_mut().expect("a command").shown = shown;
                i = next;
                continue;
            }
            "" if lines[body.start].starts_with("$ ") => {
                // A command and its output in one block.
                let mut commands = lex(lines, body.clone(), true);
                assert!(!commands.is_empty(), "line {}: no command after $", i + 1);
                let command = commands.remove(0);
                let output = command.end..body.end;
                let shown = if lines.get(output.start) == Some(&"ERROR:") {
                    Shown::Error(output)
                } else {
                    Shown::Answer(output)
                };
                steps.push(step(lines, command, shown));
            }
            _ => panic!(
                "README.md line {}: a block the walkthrough test does not know how to play",
                i + 1
            ),
        }
        i = body.end + 1;
    }
    let rate_card = rate_card.expect("the walkthrough starts tallyd with --rate-card FILE");
    let clock = clock.unwrap_or_else(|| {
        panic!("the walkthrough names its clock as {CLOCK_MARK}<RFC 3339 time>`")
    });
    Walkthrough {
        rate_card,
        clock,
        steps,
    }
}

/// The lines inside the fenced block that opens at `open`.
fn block_body(lines: &[&str], open: usize, end: usize) -> Range<usize> {
    let close = (open + 1..end)
        .find(|&j| lines[j] == "```")
        .unwrap_or_else(|| panic!("README.md line {}: a block never closed", open + 1));
    open + 1..close
}

/// What the README shows after a block of commands, from line `from`: a
/// JSON answer, an error, or the condensed ledger; and where to go on.
fn shown_after(lines: &[&str], from: usize, end: usize) -> (Shown, usize) {
    let at = (from..end)
        .find(|&j| !lines[j].trim().is_empty())
        .unwrap_or(end);
    match lines.get(at).copied() {
        Some("```json") => {
            let body = block_body(lines, at, end);
            (Shown::Answer(body.clone()), body.end + 1)
        }
        Some("```") if lines.get(at + 1) == Some(&"ERROR:") => {
            let body = block_body(lines, at, end);
            (Shown::Error(body.clone()), body.end + 1)
        }
        Some(LEDGER_MARK) if lines.get(at + 1) == Some(&"```") => {
            let body = block_body(lines, at + 1, end);
            (Shown::Ledger(body.clone()), body.end + 1)
        }
        _ => (Shown::Nothing, from),
    }
}

fn clock_in(line: &str) -> Option<Timestamp> {
    let (_, rest) = line.split_once(CLOCK_MARK)?;
    let (text, _) = rest.split_once('`')?;
    let time: prost_types::Timestamp = text
        .parse()
        .unwrap_or_else(|e| panic!("the walkthrough's clock {text:?}: {e}"));
    Some(Timestamp::from_millis(
        time.seconds * 1000 + i64::from(time.nanos / 1_000_000),
    ))
}

fn step(lines: &[&str], command: Lexed, shown: Shown) -> Step {
    let where_ = format!("README.md line {}", command.line + 1);
    assert_eq!(
        command.tokens.first().map(String::as_str),
        Some("grpcurl"),
        "{where_}: {:?}",
        lines[command.line]
    );
    let mut request = None;
    let mut positional = Vec::new();
    let mut tokens = command.tokens.into_iter().skip(1);
    while let Some(token) = tokens.next() {
        match token.as_str() {
            "-plaintext" => {}
            "-d" => request = Some(tokens.next().expect("-d takes the request")),
            flag if flag.starts_with('-') => {
                panic!("{where_}: grpcurl's {flag} is not played by this test")
            }
            _ => positional.push(token),
        }
    }
    let [address, method] = <[String; 2]>::try_from(positional)
        .unwrap_or_else(|p| panic!("{where_}: expected ADDRESS SERVICE/METHOD, got {p:?}"));
    assert_eq!(address, ADDRESS, "{where_}");
    Step {
        line: command.line,
        method,
        request,
        comment: command.comment,
        shown,
    }
}

/// One shell command of a block: its words, the comment at its end (or on
/// the lines after it), and where it starts and ends.
#[derive(Debug)]
struct Lexed {
    tokens: Vec<String>,
    comment: Option<Comment>,
    line: usize,
    /// The line after the command.
    end: usize,
}

/// The commands in `range`, read as a shell reads them: words split on
/// blanks, `'…'` quoting (across lines too), `\` at the end of a line
/// going on to the next, and `#` starting a comment. A comment alone on
/// a line belongs to the command before it. With `prompted`, the block
/// is `$ command` then its output: only the command is read.
fn lex(lines: &[&str], range: Range<usize>, prompted: bool) -> Vec<Lexed> {
    let mut commands: Vec<Lexed> = Vec::new();
    let mut tokens = Vec::new();
    let mut token: Option<String> = None;
    let mut comment = None;
    let mut quoted = false;
    let mut first = None;
    for n in range {
        let mut line = lines[n];
        if prompted && first.is_none() {
            if !commands.is_empty() {
                break;
            }
            line = line.strip_prefix("$ ").unwrap_or(line);
        }
        let mut continued = false;
        for (at, c) in line.char_indices() {
            if quoted {
                if c == '\'' {
                    quoted = false;
                } else {
                    token.get_or_insert_default().push(c);
                }
                continue;
            }
            match c {
                '\'' => {
                    quoted = true;
                    token.get_or_insert_default();
                }
                '\\' if line[at + 1..].trim().is_empty() => {
                    continued = true;
                    break;
                }
                '#' if token.is_none() => {
                    comment = Some(Comment {
                        line: n,
                        text: line[at + 1..].trim().to_owned(),
                    });
                    break;
                }
                c if c.is_whitespace() => tokens.extend(token.take()),
                c => token.get_or_insert_default().push(c),
            }
            if first.is_none() && token.is_some() {
                first = Some(n);
            }
        }
        if quoted {
            token.get_or_insert_default().push('\n');
            continue;
        }
        tokens.extend(token.take());
        if first.is_none() && !tokens.is_empty() {
            first = Some(n);
        }
        if continued {
            continue;
        }
        match first.take() {
            Some(line) => commands.push(Lexed {
                tokens: std::mem::take(&mut tokens),
                comment: comment.take(),
                line,
                end: n + 1,
            }),
            None => {
                if let Some(alone) = comment.take() {
                    let before = commands.last_mut().unwrap_or_else(|| {
                        panic!("README.md line {}: a comment before any command", n + 1)
                    });
                    assert!(
                        before.comment.is_none(),
                        "README.md line {}: a second comment on one command",
                        n + 1
                    );
                    before.comment = Some(alone);
                    before.end = n + 1;
                }
            }
        }
    }
    assert!(!quoted, "an unclosed quote in the walkthrough");
    commands
}

// ---------------------------------------------------------------------
// Playing it.

/// Every message grpcurl could find by reflection: the API, health, and
/// the error details a status carries.
fn pool() -> DescriptorPool {
    let mut pool = DescriptorPool::new();
    for set in [
        tally_api::v1::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_types::pb::FILE_DESCRIPTOR_SET,
    ] {
        pool.decode_file_descriptor_set(set)
            .expect("a descriptor set");
    }
    pool
}

struct Session {
    pool: DescriptorPool,
    channel: Channel,
    ids: Ids,
}

/// One README line range and what it should read.
struct Rewrite {
    lines: Range<usize>,
    text: Vec<String>,
}

#[derive(Debug)]
struct Difference {
    line: usize,
    what: String,
    /// Whether rewriting the README's output would settle it.
    blessable: bool,
}

#[derive(Default)]
struct Played {
    differences: Vec<Difference>,
    rewrites: Vec<Rewrite>,
}

/// What the server answered.
enum Answer {
    Message(DynamicMessage),
    Error(tonic::Status),
}

impl Session {
    async fn play(&mut self, step: &Step, lines: &[&str]) -> Played {
        let mut played = Played::default();
        // (line, what, whether a rewrite settles it)
        let mut out: Vec<(usize, String, bool)> = Vec::new();
        let answer = match self.call(step).await {
            Ok(answer) => Some(answer),
            Err(what) => {
                out.push((step.line, what, false));
                None
            }
        };
        if let Some(answer) = answer {
            self.judge(step, &answer, lines, &mut out, &mut played.rewrites);
        }
        played.differences = out
            .into_iter()
            .map(|(line, what, blessable)| Difference {
                line,
                what: format!("{} ({}): {what}", step.method, step_key(step)),
                blessable,
            })
            .collect();
        played
    }

    /// Compares what the README shows a step answer with `answer`, and
    /// says how the README would show it.
    fn judge(
        &mut self,
        step: &Step,
        answer: &Answer,
        lines: &[&str],
        out: &mut Vec<(usize, String, bool)>,
        rewrites: &mut Vec<Rewrite>,
    ) {
        match (&step.shown, answer) {
            (Shown::Nothing, Answer::Message(_)) => {}
            (Shown::Nothing, Answer::Error(status)) => out.push((
                step.line,
                format!("the README shows it succeed; tallyd answered {status:?}"),
                false,
            )),
            (Shown::Answer(range), Answer::Message(message)) => {
                let (value, text) = self.render(message);
                let shown = lines[range.clone()].join("\n");
                match serde_json::from_str::<Value>(&shown) {
                    Ok(expected) => {
                        let mut found = Vec::new();
                        compare(&expected, &value, "", &mut self.ids, &mut found);
                        out.extend(found.into_iter().map(|d| (range.start, d, true)));
                    }
                    Err(e) => out.push((range.start, format!("not JSON: {e}"), true)),
                }
                rewrites.push(self.rewrite(range, &text));
            }
            (Shown::Error(range), Answer::Error(status)) => {
                let (actual, text) = self.render_error(status);
                match parse_error(&lines[range.clone()]) {
                    Ok(expected) => {
                        let mut found = Vec::new();
                        compare(&expected, &actual, "", &mut self.ids, &mut found);
                        out.extend(found.into_iter().map(|d| (range.start, d, true)));
                    }
                    Err(e) => out.push((range.start, e, true)),
                }
                rewrites.push(self.rewrite(range, &text));
            }
            (Shown::Ledger(range), Answer::Message(message)) => {
                assert!(
                    step.method.ends_with("/ListLedger"),
                    "README.md line {}: a condensed ledger after {}",
                    range.start,
                    step.method
                );
                let table = ledger_table(&self.render(message).0);
                for (n, (shown, actual)) in lines[range.clone()].iter().zip(&table).enumerate() {
                    if words(shown) != words(actual) {
                        out.push((
                            range.start + n,
                            format!(
                                "the README shows\n  {shown}\ntallyd's ledger reads\n  {actual}"
                            ),
                            true,
                        ));
                    }
                }
                if range.len() != table.len() {
                    out.push((
                        range.start,
                        format!(
                            "the README shows {} ledger lines, tallyd's ledger makes {}:\n{}",
                            range.len(),
                            table.len(),
                            table.join("\n")
                        ),
                        true,
                    ));
                }
                rewrites.push(Rewrite {
                    lines: range.clone(),
                    text: table,
                });
            }
            (Shown::Answer(range) | Shown::Ledger(range), Answer::Error(status)) => out.push((
                range.start,
                format!("the README shows an answer; tallyd answered {status:?}"),
                false,
            )),
            (Shown::Error(range), Answer::Message(message)) => out.push((
                range.start,
                format!(
                    "the README shows an error; tallyd answered\n{}",
                    self.render(message).1
                ),
                false,
            )),
        }
        if let Some(comment) = &step.comment {
            match answer {
                Answer::Message(message) => {
                    let (value, _) = self.render(message);
                    let (found, rewrite) = self.check_comment(comment, &value, lines);
                    out.extend(found.into_iter().map(|d| (comment.line, d, true)));
                    rewrites.extend(rewrite);
                }
                Answer::Error(_) => out.push((
                    comment.line,
                    "a comment shows figures of an answer; tallyd answered an error".into(),
                    false,
                )),
            }
        }
    }

    /// Sends the step's request as grpcurl would and decodes the answer.
    async fn call(&mut self, step: &Step) -> Result<Answer, String> {
        let (service, method) = step
            .method
            .rsplit_once('/')
            .ok_or_else(|| format!("{:?} is not SERVICE/METHOD", step.method))?;
        let method = self
            .pool
            .get_service_by_name(service)
            .and_then(|s| s.methods().find(|m| m.name() == method))
            .ok_or_else(|| format!("no method {} in the API", step.method))?;
        let mut request = match &step.request {
            Some(json) => serde_json::from_str::<Value>(json)
                .map_err(|e| format!("the request is not JSON: {e}"))?,
            None => Value::Object(Default::default()),
        };
        self.ids.substitute(&mut request)?;
        let input = method.input();
        let message = DynamicMessage::deserialize(input.clone(), &request)
            .map_err(|e| format!("grpcurl would refuse the request: {e}"))?;
        let path = format!("/{}", step.method);
        if let Some(fresh) = self.fully_consistent(&input, &request)? {
            // A person types slower than the read side catches up: the
            // same read, fully consistent first, stands in for that pause.
            raw_exchange(self.channel.clone(), &path, frame(&fresh.encode_to_vec())).await;
        }
        let (messages, status) =
            raw_exchange(self.channel.clone(), &path, frame(&message.encode_to_vec())).await;
        if status.code() != tonic::Code::Ok {
            return Ok(Answer::Error(status));
        }
        let [answer] = <[Vec<u8>; 1]>::try_from(messages)
            .map_err(|m| format!("a unary call answered {} messages", m.len()))?;
        DynamicMessage::decode(method.output(), answer.as_slice())
            .map(Answer::Message)
            .map_err(|e| format!("the answer does not decode: {e}"))
    }

    /// For a read that asks no consistency, the same read asking full
    /// consistency.
    fn fully_consistent(
        &self,
        input: &MessageDescriptor,
        request: &Value,
    ) -> Result<Option<DynamicMessage>, String> {
        if input.get_field_by_name("consistency").is_none() || request.get("consistency").is_some()
        {
            return Ok(None);
        }
        let mut fresh = request.clone();
        fresh["consistency"] = serde_json::json!({ "fullyConsistent": true });
        DynamicMessage::deserialize(input.clone(), &fresh)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// The answer as JSON, and as grpcurl prints it.
    fn render(&self, message: &DynamicMessage) -> (Value, String) {
        let value = to_json(message);
        let mut text = String::new();
        write_json(
            &mut text,
            &value,
            &Shape::Message(message.descriptor()),
            0,
            &self.pool,
        );
        (value, text)
    }

    /// An error as JSON (code, message, details), and as grpcurl prints it.
    fn render_error(&self, status: &tonic::Status) -> (Value, String) {
        let code = go_code(status.code());
        let mut text = format!("ERROR:\n  Code: {code}\n  Message: {}\n", status.message());
        let details = self.details(status);
        if !details.is_empty() {
            text.push_str("  Details:\n");
        }
        let mut values = Vec::new();
        for (n, detail) in details.iter().enumerate() {
            let prefix = format!("  {})", n + 1);
            let value = to_json(detail);
            let mut json = String::new();
            let shape = Shape::Message(detail.descriptor());
            write_json(&mut json, &value, &shape, 0, &self.pool);
            for (i, line) in json.lines().enumerate() {
                let lead = if i == 0 {
                    prefix.clone()
                } else {
                    " ".repeat(prefix.len())
                };
                text.push_str(&format!("{lead}\t{line}\n"));
            }
            values.push(value);
        }
        let value =
            serde_json::json!({ "code": code, "message": status.message(), "details": values });
        (value, text.trim_end().to_owned())
    }

    /// The `google.protobuf.Any` details of a status.
    fn details(&self, status: &tonic::Status) -> Vec<DynamicMessage> {
        if status.details().is_empty() {
            return Vec::new();
        }
        let rpc_status = self
            .pool
            .get_message_by_name("google.rpc.Status")
            .expect("google.rpc.Status");
        let decoded = DynamicMessage::decode(rpc_status, status.details())
            .expect("grpc-status-details-bin is a google.rpc.Status");
        let details = decoded.get_field_by_name("details").expect("details");
        details
            .as_list()
            .expect("a list")
            .iter()
            .map(|any| any.as_message().expect("an Any").clone())
            .collect()
    }

    /// Compares the figures a comment shows with the answer's; a rewrite
    /// of the comment with the answer's figures under the same names.
    fn check_comment(
        &mut self,
        comment: &Comment,
        answer: &Value,
        lines: &[&str],
    ) -> (Vec<String>, Option<Rewrite>) {
        let shown = match serde_json::from_str::<Figures>(&format!("{{{}}}", comment.text)) {
            Ok(Figures(shown)) => shown,
            Err(e) => {
                return (
                    vec![format!(
                        "the comment is not \"field\": value, … ({e}): {}",
                        comment.text
                    )],
                    None,
                );
            }
        };
        let mut found = Vec::new();
        let mut figures = Vec::new();
        for (name, expected) in &shown {
            let actual = answer.get(name).unwrap_or(&Value::Null);
            compare(
                expected,
                actual,
                &format!(".{name}"),
                &mut self.ids,
                &mut found,
            );
            if !actual.is_null() {
                figures.push(format!("{}: {actual}", Value::from(name.as_str())));
            }
        }
        let line = lines[comment.line];
        let at = line.rfind('#').expect("the comment's #");
        let text = self
            .ids
            .to_readme(&format!("{}# {}", &line[..at], figures.join(", ")));
        let rewrite = (!figures.is_empty()).then(|| Rewrite {
            lines: comment.line..comment.line + 1,
            text: vec![text],
        });
        (found, rewrite)
    }

    fn rewrite(&self, range: &Range<usize>, text: &str) -> Rewrite {
        Rewrite {
            lines: range.clone(),
            text: self
                .ids
                .to_readme(text)
                .lines()
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// A comment's `"field": value` pairs, in the README's order (a
/// `serde_json::Map` would sort them).
struct Figures(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Figures {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = Figures;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"field\": value pairs")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Figures, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(Figures(pairs))
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

fn step_key(step: &Step) -> String {
    step.request
        .as_deref()
        .and_then(|r| serde_json::from_str::<Value>(r).ok())
        .and_then(|r| {
            r.get("idempotency_key")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .map_or_else(|| "no key".into(), |key| format!("key {key}"))
}

/// A message in the proto3 JSON mapping, as grpcurl writes it.
fn to_json(message: &DynamicMessage) -> Value {
    message
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .expect("a message serializes")
}

/// grpc-go's name of a code, which grpcurl prints.
fn go_code(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// An `ERROR:` block as JSON (code, message, details), read back from
/// grpcurl's layout: each detail after `N)` and a tab, its JSON going on
/// over the indented lines below.
fn parse_error(lines: &[&str]) -> Result<Value, String> {
    let mut rest = lines.iter();
    if rest.next() != Some(&"ERROR:") {
        return Err("an error block starts with ERROR:".into());
    }
    let field = |line: Option<&&str>, name: &str| {
        line.and_then(|l| l.strip_prefix(&format!("  {name}: ")))
            .map(str::to_owned)
            .ok_or_else(|| format!("an error block's {name} line"))
    };
    let code = field(rest.next(), "Code")?;
    let message = field(rest.next(), "Message")?;
    let mut details: Vec<String> = Vec::new();
    if let Some(line) = rest.next() {
        if *line != "  Details:" {
            return Err(format!("after Message, {line:?}"));
        }
        for line in rest {
            let numbered = line
                .trim_start()
                .split_once(")\t")
                .filter(|(n, _)| n.parse::<usize>().is_ok());
            match numbered {
                Some((_, json)) => details.push(json.to_owned()),
                None => details
                    .last_mut()
                    .ok_or("details start with 1)")?
                    .push_str(line.trim_start()),
            }
        }
    }
    let details = details
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).map_err(|e| format!("a detail: {e}: {d}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(serde_json::json!({ "code": code, "message": message, "details": details }))
}

/// The ledger condensed: one line per entry, its sequence, kind, amount,
/// available before and after, and key.
fn ledger_table(answer: &Value) -> Vec<String> {
    let text = |entry: &Value, name: &str, default: &str| {
        entry
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_owned()
    };
    let header = [
        "seq",
        "kind",
        "amount",
        "available before",
        "after",
        "idempotency key",
    ]
    .map(str::to_owned);
    let mut rows = vec![header];
    for entry in answer["entries"].as_array().into_iter().flatten() {
        rows.push([
            text(entry, "sequence", "0"),
            text(entry, "kind", ""),
            text(entry, "amountMillicredits", "0"),
            text(entry, "availableBeforeMillicredits", "0"),
            text(entry, "availableAfterMillicredits", "0"),
            text(entry, "idempotencyKey", ""),
        ]);
    }
    let width = |column: usize| rows.iter().map(|r| r[column].len()).max().unwrap_or(0);
    let [seq, kind, amount, before, after] = [0, 1, 2, 3, 4].map(width);
    rows.iter()
        .map(|[s, k, a, b, f, key]| {
            format!("{s:<seq$}  {k:<kind$}  {a:>amount$}  {b:>before$} -> {f:>after$}  {key}")
                .trim_end()
                .to_owned()
        })
        .collect()
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

// ---------------------------------------------------------------------
// Ids the service mints.

/// The README's ids and the server's ids they stand for.
#[derive(Default)]
struct Ids {
    actual: BTreeMap<String, String>,
}

/// `rsv_` or `grn_` (any three letters) and a 128-bit hex id.
fn minted(text: &str) -> Option<&str> {
    let (prefix, hex) = text.split_once('_')?;
    let fits = prefix.len() == 3
        && prefix.bytes().all(|b| b.is_ascii_lowercase())
        && hex.len() == 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit());
    fits.then_some(prefix)
}

impl Ids {
    /// Puts the server's ids in place of the README's in a request.
    fn substitute(&self, value: &mut Value) -> Result<(), String> {
        match value {
            Value::String(text) if minted(text).is_some() => {
                *text = self.actual.get(text.as_str()).cloned().ok_or_else(|| {
                    format!("the request names {text}, which no earlier output shows")
                })?;
            }
            Value::Array(items) => items.iter_mut().try_for_each(|v| self.substitute(v))?,
            Value::Object(fields) => fields.values_mut().try_for_each(|v| self.substitute(v))?,
            _ => {}
        }
        Ok(())
    }

    /// Puts the README's ids in place of the server's in an output.
    fn to_readme(&self, text: &str) -> String {
        self.actual
            .iter()
            .fold(text.to_owned(), |text, (readme, actual)| {
                text.replace(actual.as_str(), readme)
            })
    }
}

/// Every difference between what the README shows and the answer, by
/// path. A README id not seen before binds to the id at the same place.
fn compare(expected: &Value, actual: &Value, path: &str, ids: &mut Ids, out: &mut Vec<String>) {
    let here = if path.is_empty() { "the answer" } else { path };
    match (expected, actual) {
        (Value::String(shown), _) if minted(shown).is_some() => {
            let bound = ids.actual.get(shown).cloned();
            match (bound, actual.as_str()) {
                (Some(id), Some(answered)) if id == answered => {}
                (None, Some(answered)) if minted(answered) == minted(shown) => {
                    ids.actual.insert(shown.clone(), answered.to_owned());
                }
                (bound, _) => out.push(format!(
                    "{here}: the README shows {shown}{}, tallyd answered {actual}",
                    bound.map_or_else(String::new, |id| format!(" (here {id})"))
                )),
            }
        }
        (Value::Object(shown), Value::Object(answered)) => {
            for (name, value) in shown {
                let at = format!("{path}.{name}");
                match answered.get(name) {
                    Some(answer) => compare(value, answer, &at, ids, out),
                    None => out.push(format!(
                        "{at}: the README shows {value}, tallyd's answer has none"
                    )),
                }
            }
            for (name, value) in answered {
                if !shown.contains_key(name) {
                    out.push(format!(
                        "{path}.{name}: tallyd answered {value}, the README shows none"
                    ));
                }
            }
        }
        (Value::Array(shown), Value::Array(answered)) => {
            for (n, (s, a)) in shown.iter().zip(answered).enumerate() {
                compare(s, a, &format!("{path}[{n}]"), ids, out);
            }
            if shown.len() != answered.len() {
                out.push(format!(
                    "{here}: the README shows {} items, tallyd answered {}",
                    shown.len(),
                    answered.len()
                ));
            }
        }
        _ if expected == actual => {}
        _ => out.push(format!(
            "{here}: the README shows {expected}, tallyd answered {actual}"
        )),
    }
}

// ---------------------------------------------------------------------
// grpcurl's layout.

/// What a JSON value is in the message it came from: which decides the
/// order of an object's names.
enum Shape {
    Message(MessageDescriptor),
    /// A map field, with its values' message if they are messages.
    Map(Option<MessageDescriptor>),
    Other,
}

/// Writes `value` as grpcurl prints it (protojson, re-indented by Go's
/// json.Indent with two spaces): a message's fields in the order the proto
/// declares them, an Any's `@type` first, map keys sorted.
fn write_json(out: &mut String, value: &Value, shape: &Shape, depth: usize, pool: &DescriptorPool) {
    let indent = |depth: usize| "  ".repeat(depth);
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            let ordered = ordered(fields, shape, pool);
            out.push_str("{\n");
            for (i, (name, value, shape)) in ordered.iter().enumerate() {
                out.push_str(&format!("{}{}: ", indent(depth + 1), Value::from(*name)));
                write_json(out, value, shape, depth + 1, pool);
                out.push_str(if i + 1 < ordered.len() { ",\n" } else { "\n" });
            }
            out.push_str(&indent(depth));
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&indent(depth + 1));
                write_json(out, item, shape, depth + 1, pool);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&indent(depth));
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// An object's names in grpcurl's order, each with the shape of its value.
fn ordered<'a>(
    fields: &'a serde_json::Map<String, Value>,
    shape: &Shape,
    pool: &DescriptorPool,
) -> Vec<(&'a str, &'a Value, Shape)> {
    let message = match shape {
        Shape::Message(m) if m.full_name() == "google.protobuf.Any" => fields
            .get("@type")
            .and_then(Value::as_str)
            .and_then(|url| url.rsplit_once('/'))
            .and_then(|(_, name)| pool.get_message_by_name(name)),
        Shape::Message(m) => Some(m.clone()),
        Shape::Map(values) => {
            // serde_json's map keeps its keys sorted.
            return fields
                .iter()
                .map(|(k, v)| {
                    let shape = values.clone().map_or(Shape::Other, Shape::Message);
                    (k.as_str(), v, shape)
                })
                .collect();
        }
        Shape::Other => None,
    };
    let mut order: Vec<(String, Shape)> = vec![("@type".to_owned(), Shape::Other)];
    if let Some(message) = &message {
        for declared in &message.descriptor_proto().field {
            let field = message
                .get_field_by_name(declared.name())
                .expect("a declared field");
            let kind = field.kind();
            let inner = kind.as_message().cloned();
            let shape = if field.is_map() {
                let value = inner.expect("a map entry").map_entry_value_field();
                Shape::Map(value.kind().as_message().cloned())
            } else {
                inner.map_or(Shape::Other, Shape::Message)
            };
            order.push((field.json_name().to_owned(), shape));
        }
    }
    let mut out: Vec<(&str, &Value, Shape)> = Vec::new();
    for (name, shape) in order {
        if let Some((name, value)) = fields.get_key_value(&name) {
            out.push((name.as_str(), value, shape));
        }
    }
    // Anything the descriptor did not name (none expected), last.
    for (name, value) in fields {
        if !out.iter().any(|(n, _, _)| *n == name) {
            out.push((name.as_str(), value, Shape::Other));
        }
    }
    out
}

/// The README with each rewrite in place.
fn apply(lines: &[&str], mut rewrites: Vec<Rewrite>, newline_at_end: bool) -> String {
    let mut lines: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    rewrites.sort_by_key(|r| std::cmp::Reverse(r.lines.start));
    for rewrite in rewrites {
        lines.splice(rewrite.lines, rewrite.text);
    }
    let mut text = lines.join("\n");
    if newline_at_end {
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
