//! The walkthrough section of README.md, read: the commands, the rate card
//! and clock the server starts with, and where each output is shown.

use std::ops::Range;

use tally_core::Timestamp;

/// The heading of the section this test plays.
const SECTION: &str = "## Walkthrough with grpcurl";
/// The prose names the clock the outputs were recorded at, as
/// ``clock at `2026-11-01T09:00:00Z` ``; the server starts there.
const CLOCK_MARK: &str = "clock at `";
/// The line before the condensed ledger table.
const LEDGER_MARK: &str = "Condensed from the JSON:";
/// The address every command names: the one tallyd listens on by default.
const ADDRESS: &str = "localhost:50051";

/// What the walkthrough section says to do and what it shows.
#[derive(Debug)]
pub struct Walkthrough {
    /// The `--rate-card` of the command that starts the server, from the
    /// workspace root.
    pub rate_card: String,
    /// Where the server's clock stands (it does not move).
    pub clock: Timestamp,
    pub steps: Vec<Step>,
}

/// One grpcurl command and what the README shows it answer.
#[derive(Debug)]
pub struct Step {
    /// The command's first line in README.md, from 0.
    pub line: usize,
    /// `tally.v1.AccountService/Grant`.
    pub method: String,
    /// The `-d` JSON; none sends an empty message, as grpcurl does.
    pub request: Option<String>,
    /// A `# "field": value, …` comment after the command: figures of the
    /// answer.
    pub comment: Option<Comment>,
    pub shown: Shown,
}

#[derive(Debug)]
pub struct Comment {
    pub line: usize,
    /// The text after `#`, trimmed.
    pub text: String,
}

/// The lines of README.md that show a command's answer.
#[derive(Debug)]
pub enum Shown {
    /// Nothing: the command must succeed.
    Nothing,
    /// The answer as JSON.
    Answer(Range<usize>),
    /// An `ERROR:` block as grpcurl prints it.
    Error(Range<usize>),
    /// The ledger condensed to a table (ListLedger only).
    Ledger(Range<usize>),
}

pub fn parse(lines: &[&str]) -> Walkthrough {
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
