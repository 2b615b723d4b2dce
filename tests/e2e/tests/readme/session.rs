//! One grpcurl command played: the request sent, the answer rendered as
//! grpcurl prints it, compared with what the README shows, and the
//! README's lines as the answer would have them.

use std::ops::Range;

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage as _};
use serde_json::Value;
use tally_e2e::{frame, raw_exchange};
use tonic::transport::Channel;

use super::grpcurl::{Shape, go_code, parse_error, pool, to_json, write_json};
use super::ids::{Ids, compare};
use super::walkthrough::{Comment, Shown, Step};

/// A grpcurl user's session with one server: what the README's ids stand
/// for so far.
pub struct Session {
    pool: DescriptorPool,
    channel: Channel,
    ids: Ids,
    /// Fields whose values are the store's own (checked for presence only).
    opaque: Vec<&'static str>,
}

/// README lines, and what they would read if they showed the answer.
pub struct Rewrite {
    pub lines: Range<usize>,
    pub text: Vec<String>,
}

/// A place where the README and the server disagree.
#[derive(Debug)]
pub struct Difference {
    /// The README's line, from 0.
    pub line: usize,
    pub what: String,
    /// Whether rewriting the README's output would settle it.
    pub blessable: bool,
}

/// What playing a step found, and how to bless it.
#[derive(Default)]
pub struct Played {
    pub differences: Vec<Difference>,
    pub rewrites: Vec<Rewrite>,
}

/// What the server answered.
enum Answer {
    Message(DynamicMessage),
    Error(tonic::Status),
}

impl Session {
    pub fn new(channel: Channel) -> Session {
        Session {
            pool: pool(),
            channel,
            ids: Ids::default(),
            opaque: Vec::new(),
        }
    }

    /// Compares the `names` fields for presence only: their values depend
    /// on the store (consistency tokens carry PostgreSQL's positions).
    pub fn opaque(mut self, names: &[&'static str]) -> Session {
        self.opaque.extend(names);
        self
    }

    /// [`compare`], leaving the opaque fields' values out.
    fn compare(&mut self, expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
        let (mut expected, mut actual) = (expected.clone(), actual.clone());
        for name in &self.opaque {
            for value in [&mut expected, &mut actual] {
                blank(value, name);
            }
        }
        compare(&expected, &actual, path, &mut self.ids, out);
    }

    /// Sends one step's command and judges the answer against `lines`,
    /// README.md's.
    pub async fn play(&mut self, step: &Step, lines: &[&str]) -> Played {
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
                        self.compare(&expected, &value, "", &mut found);
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
                        self.compare(&expected, &actual, "", &mut found);
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
            self.compare(expected, actual, &format!(".{name}"), &mut found);
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

/// `value` with every `name` field's value made null.
fn blank(value: &mut Value, name: &str) {
    match value {
        Value::Object(fields) => {
            for (field, value) in fields.iter_mut() {
                if field == name {
                    *value = Value::Null;
                } else {
                    blank(value, name);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| blank(v, name)),
        _ => {}
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

/// The ledger condensed: one line per entry, its sequence, kind, amount,
/// available before and after, key and note.
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
        "note",
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
            text(entry, "note", ""),
        ]);
    }
    let width = |column: usize| rows.iter().map(|r| r[column].len()).max().unwrap_or(0);
    let [seq, kind, amount, before, after, key] = [0, 1, 2, 3, 4, 5].map(width);
    rows.iter()
        .map(|[s, k, a, b, f, i, note]| {
            format!(
                "{s:<seq$}  {k:<kind$}  {a:>amount$}  {b:>before$} -> {f:>after$}  {i:<key$}  {note}"
            )
            .trim_end()
            .to_owned()
        })
        .collect()
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}
