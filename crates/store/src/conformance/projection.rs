//! Projections: writes land with their checkpoint or not at all, one commit
//! per generation, reads in one snapshot, one lock holder.

use std::sync::Arc;

use tokio::sync::Barrier;

use super::{Harness, events, request};
use crate::{
    CheckpointMove, CommitOutcome, EventStore, LogPosition, ProjectionCheckpoint, ProjectionCommit,
    ProjectionStore, SqlRow, SqlStatement, SqlValue,
};

const NAME: &str = "conformance";

const INSERT_STATE: &str = "INSERT INTO projection_account_states \
     (account_id, projection, version, state) VALUES ($1, $2, $3, $4)";

/// Increments by `$3`; used twice to check that one commit's statements
/// run in order and that a read sees both tables at one instant.
const BUMP_STATE: &str = "INSERT INTO projection_account_states \
     (account_id, projection, version, state) VALUES ($1, $2, $3, 'bumped') \
     ON CONFLICT (account_id, projection) \
     DO UPDATE SET version = projection_account_states.version + excluded.version";

const SELECT_STATES: &str = "SELECT account_id, projection, version, state \
     FROM projection_account_states ORDER BY account_id, projection";

fn insert_state(account: &str, version: Option<i64>, state: Option<&str>) -> SqlStatement {
    SqlStatement::new(
        INSERT_STATE,
        vec![
            SqlValue::text(account),
            SqlValue::text(NAME),
            SqlValue::Int(version),
            SqlValue::Text(state.map(str::to_owned)),
        ],
    )
}

fn bump(account: &str, projection: &str, by: i64) -> SqlStatement {
    SqlStatement::new(
        BUMP_STATE,
        vec![
            SqlValue::text(account),
            SqlValue::text(projection),
            SqlValue::int(by),
        ],
    )
}

fn commit(
    expected_generation: u64,
    position: Option<LogPosition>,
    statements: Vec<SqlStatement>,
) -> ProjectionCommit {
    ProjectionCommit::single(
        NAME,
        expected_generation,
        position,
        7,
        1_000 + expected_generation as i64,
        statements,
    )
}

async fn states<S: ProjectionStore>(store: &S) -> Vec<SqlRow> {
    store
        .query_projection(vec![SqlStatement::new(SELECT_STATES, vec![])])
        .await
        .expect("query_projection")
        .remove(0)
}

fn state_row(account: &str, version: i64, state: &str) -> SqlRow {
    vec![
        SqlValue::text(account),
        SqlValue::text(NAME),
        SqlValue::int(version),
        SqlValue::text(state),
    ]
}

/// A projection starts with no checkpoint; a commit writes its rows and
/// moves the checkpoint to exactly what it named; values round-trip,
/// extremes and non-ASCII text included.
pub async fn projection_commit_writes_rows_with_checkpoint<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    assert_eq!(
        store.projection_checkpoint(NAME).await.expect("checkpoint"),
        ProjectionCheckpoint::default()
    );
    let outcome = store
        .commit_projection(commit(
            0,
            Some(LogPosition::new(3, 42)),
            vec![
                insert_state("a", Some(i64::MAX), Some("zürich ✓")),
                insert_state("b", Some(i64::MIN), Some("")),
            ],
        ))
        .await
        .expect("commit");
    assert_eq!(outcome, CommitOutcome::Committed { generation: 1 });
    assert_eq!(
        store.projection_checkpoint(NAME).await.expect("checkpoint"),
        ProjectionCheckpoint {
            position: Some(LogPosition::new(3, 42)),
            generation: 1,
            schema_version: 7,
            updated_at_ms: 1_000,
        }
    );
    assert_eq!(
        states(&store).await,
        vec![
            state_row("a", i64::MAX, "zürich ✓"),
            state_row("b", i64::MIN, ""),
        ]
    );
    // Another projection's checkpoint is its own.
    assert_eq!(
        store
            .projection_checkpoint("other")
            .await
            .expect("checkpoint"),
        ProjectionCheckpoint::default()
    );
    // NULL comes back as NULL, and parameters bind by number.
    let rows = store
        .query_projection(vec![SqlStatement::new(
            "SELECT account_id, version FROM projection_account_states \
             WHERE version > $2 AND account_id <> $1 ORDER BY account_id",
            vec![SqlValue::text("b"), SqlValue::int(0)],
        )])
        .await
        .expect("query");
    assert_eq!(
        rows,
        vec![vec![vec![SqlValue::text("a"), SqlValue::int(i64::MAX)]]]
    );
}

/// A commit at a generation that has moved on writes nothing, and says
/// where the generation is.
pub async fn stale_generation_writes_nothing<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    store
        .commit_projection(commit(
            0,
            Some(LogPosition::new(0, 1)),
            vec![insert_state("a", Some(1), Some("x"))],
        ))
        .await
        .expect("commit");
    let outcome = store
        .commit_projection(commit(
            0,
            Some(LogPosition::new(0, 9)),
            vec![insert_state("z", Some(1), Some("x"))],
        ))
        .await
        .expect("commit");
    assert_eq!(outcome, CommitOutcome::GenerationMoved { actual: 1 });
    assert_eq!(states(&store).await, vec![state_row("a", 1, "x")]);
    let checkpoint = store.projection_checkpoint(NAME).await.expect("checkpoint");
    assert_eq!(checkpoint.position, Some(LogPosition::new(0, 1)));
    assert_eq!(checkpoint.generation, 1);
}

/// A commit that moves several checkpoints moves all of them with its rows,
/// or, when any one of them has moved on, writes nothing and moves none.
pub async fn commits_move_several_checkpoints_together<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    let moves = |generations: [u64; 2], seq: u64| {
        ["together-b", "together-a"]
            .into_iter()
            .zip(generations)
            .map(|(name, expected_generation)| CheckpointMove {
                name: name.to_owned(),
                expected_generation,
                position: Some(LogPosition::new(0, seq)),
                schema_version: 3,
            })
            .collect::<Vec<_>>()
    };
    let outcome = store
        .commit_projection(ProjectionCommit {
            checkpoints: moves([0, 0], 4),
            updated_at_ms: 5,
            emptied: vec![],
            statements: vec![insert_state("a", Some(1), Some("x"))],
        })
        .await
        .expect("commit");
    assert_eq!(outcome, CommitOutcome::Committed { generation: 1 });
    for name in ["together-a", "together-b"] {
        let checkpoint = store.projection_checkpoint(name).await.expect("checkpoint");
        assert_eq!(checkpoint.position, Some(LogPosition::new(0, 4)), "{name}");
        assert_eq!(checkpoint.generation, 1, "{name}");
        assert_eq!(checkpoint.schema_version, 3, "{name}");
    }
    // One of the two moves on alone.
    store
        .commit_projection(ProjectionCommit::single(
            "together-a",
            1,
            Some(LogPosition::new(0, 6)),
            3,
            6,
            vec![],
        ))
        .await
        .expect("commit");
    let outcome = store
        .commit_projection(ProjectionCommit {
            checkpoints: moves([1, 1], 9),
            updated_at_ms: 7,
            emptied: vec![],
            statements: vec![insert_state("z", Some(1), Some("x"))],
        })
        .await
        .expect("commit");
    assert_eq!(outcome, CommitOutcome::GenerationMoved { actual: 2 });
    assert_eq!(states(&store).await, vec![state_row("a", 1, "x")]);
    let b = store
        .projection_checkpoint("together-b")
        .await
        .expect("checkpoint");
    assert_eq!(
        (b.position, b.generation),
        (Some(LogPosition::new(0, 4)), 1)
    );
    let a = store
        .projection_checkpoint("together-a")
        .await
        .expect("checkpoint");
    assert_eq!(
        (a.position, a.generation),
        (Some(LogPosition::new(0, 6)), 2)
    );
}

/// A statement that fails fails the commit: the statements before it and
/// the checkpoint are rolled back.
pub async fn failed_statement_writes_nothing<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    let result = store
        .commit_projection(commit(
            0,
            Some(LogPosition::new(0, 5)),
            vec![
                insert_state("a", Some(1), Some("x")),
                // NOT NULL violated.
                insert_state("b", None, Some("x")),
            ],
        ))
        .await;
    assert!(result.is_err(), "a failing statement committed: {result:?}");
    assert_eq!(states(&store).await, Vec::<SqlRow>::new());
    assert_eq!(
        store.projection_checkpoint(NAME).await.expect("checkpoint"),
        ProjectionCheckpoint::default()
    );
}

/// Runners racing at one generation, on separate handles: exactly one
/// commit lands, and only its rows exist.
pub async fn racing_commits_land_once<H: Harness>(harness: &H) {
    const RUNNERS: usize = 6;
    let (store, _location) = harness.create().await;
    let store = Arc::new(store);
    let barrier = Arc::new(Barrier::new(RUNNERS));
    let mut tasks = Vec::new();
    for runner in 0..RUNNERS {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let outcome = store
                .commit_projection(commit(
                    0,
                    Some(LogPosition::new(0, runner as u64 + 1)),
                    vec![insert_state(
                        &format!("runner-{runner}"),
                        Some(1),
                        Some("x"),
                    )],
                ))
                .await
                .expect("commit");
            (runner, outcome)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (runner, outcome) = task.await.expect("task");
        match outcome {
            CommitOutcome::Committed { generation } => {
                assert_eq!(generation, 1);
                winners.push(runner);
            }
            CommitOutcome::GenerationMoved { actual } => assert_eq!(actual, 1),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let winner = winners[0];
    assert_eq!(
        states(&store).await,
        vec![state_row(&format!("runner-{winner}"), 1, "x")]
    );
    assert_eq!(
        store
            .projection_checkpoint(NAME)
            .await
            .expect("checkpoint")
            .position,
        Some(LogPosition::new(0, winner as u64 + 1))
    );
}

/// A commit without a position resets the projection to the start (what a
/// rebuild does after deleting its rows), and the generation still moves.
pub async fn reset_returns_to_the_start<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    store
        .commit_projection(commit(
            0,
            Some(LogPosition::new(0, 8)),
            vec![insert_state("a", Some(1), Some("x"))],
        ))
        .await
        .expect("commit");
    let outcome = store
        .commit_projection(commit(
            1,
            None,
            vec![SqlStatement::new(
                "DELETE FROM projection_account_states WHERE projection = $1",
                vec![SqlValue::text(NAME)],
            )],
        ))
        .await
        .expect("reset");
    assert_eq!(outcome, CommitOutcome::Committed { generation: 2 });
    let checkpoint = store.projection_checkpoint(NAME).await.expect("checkpoint");
    assert_eq!(checkpoint.position, None);
    assert_eq!(checkpoint.generation, 2);
    assert_eq!(states(&store).await, Vec::<SqlRow>::new());
}

async fn unit_accounts<S: ProjectionStore>(store: &S) -> Vec<String> {
    let query = SqlStatement::new(
        "SELECT account_id FROM usage_daily_units ORDER BY account_id",
        vec![],
    );
    store
        .query_projection(vec![query])
        .await
        .expect("query")
        .remove(0)
        .into_iter()
        .map(|row| row[0].as_text().expect("text").to_owned())
        .collect()
}

/// A row of `usage_daily_units` for `account`: a projection table of the
/// real schema, present on every backend, for cases that empty one.
pub fn usage_unit_row(account: &str) -> SqlStatement {
    SqlStatement::new(
        "INSERT INTO usage_daily_units (account_id, day, cycle_start_ms, action, \
         capability, member_id, model, unit, amount) \
         VALUES ($1, '2026-01-01', 0, 'a', 'c', '', '', 'u', 1)",
        vec![SqlValue::text(account)],
    )
}

/// A commit's emptied tables are empty before its statements run, in its
/// transaction: a commit that loses its generation empties nothing.
pub async fn emptied_tables_are_emptied_first<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    store
        .commit_projection(commit(
            0,
            None,
            vec![usage_unit_row("a"), usage_unit_row("b")],
        ))
        .await
        .expect("commit");
    let outcome = store
        .commit_projection(
            commit(1, None, vec![usage_unit_row("c")]).emptying(vec!["usage_daily_units"]),
        )
        .await
        .expect("commit");
    assert_eq!(outcome, CommitOutcome::Committed { generation: 2 });
    assert_eq!(unit_accounts(&store).await, vec!["c"]);
    let outcome = store
        .commit_projection(
            commit(1, None, vec![usage_unit_row("d")]).emptying(vec!["usage_daily_units"]),
        )
        .await
        .expect("stale commit");
    assert_eq!(outcome, CommitOutcome::GenerationMoved { actual: 2 });
    assert_eq!(
        unit_accounts(&store).await,
        vec!["c"],
        "a stale commit empties nothing"
    );
}

/// The queries of one call see one instant: while a writer bumps two rows
/// together in each commit, a reader never sees them differ.
pub async fn queries_read_one_snapshot<H: Harness>(harness: &H) {
    const COMMITS: u64 = 60;
    let (store, _location) = harness.create().await;
    let store = Arc::new(store);
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for generation in 0..COMMITS {
                let outcome = store
                    .commit_projection(commit(
                        generation,
                        Some(LogPosition::new(0, generation + 1)),
                        vec![bump("acct", "left", 1), bump("acct", "right", 1)],
                    ))
                    .await
                    .expect("commit");
                assert!(matches!(outcome, CommitOutcome::Committed { .. }));
            }
        })
    };
    let read_one = |projection: &str| {
        SqlStatement::new(
            "SELECT version FROM projection_account_states WHERE projection = $1",
            vec![SqlValue::text(projection)],
        )
    };
    let checkpoint = SqlStatement::new(
        "SELECT seq FROM projection_checkpoints WHERE name = $1",
        vec![SqlValue::text(NAME)],
    );
    let mut reads = 0;
    while !writer.is_finished() || reads == 0 {
        let results = store
            .query_projection(vec![
                read_one("left"),
                checkpoint.clone(),
                read_one("right"),
            ])
            .await
            .expect("query");
        let value = |rows: &Vec<SqlRow>| rows.first().and_then(|row| row[0].as_int()).unwrap_or(0);
        let (left, seq, right) = (value(&results[0]), value(&results[1]), value(&results[2]));
        assert_eq!(left, right, "a read saw half a commit");
        assert_eq!(left, seq, "rows and checkpoint from different commits");
        reads += 1;
    }
    writer.await.expect("writer");
}

/// One holder per projection, also across handles to the same store; the
/// lock is free again once dropped.
pub async fn projection_lock_has_one_holder<H: Harness>(harness: &H) {
    let (store, location) = harness.create().await;
    let other = harness.reopen(&location).await;
    let lock = store
        .try_lock_projection("balances")
        .await
        .expect("lock")
        .expect("a free lock is taken");
    assert!(lock.is_held());
    assert!(
        store
            .try_lock_projection("balances")
            .await
            .expect("lock")
            .is_none()
    );
    assert!(
        other
            .try_lock_projection("balances")
            .await
            .expect("lock")
            .is_none()
    );
    let ledger = other
        .try_lock_projection("ledger")
        .await
        .expect("lock")
        .expect("another projection's lock is separate");
    drop(lock);
    let again = other
        .try_lock_projection("balances")
        .await
        .expect("lock")
        .expect("a released lock is free");
    assert!(again.is_held());
    drop(ledger);
}

/// The log head is the last committed event's position.
pub async fn log_head_is_the_last_append<H: Harness>(harness: &H) {
    let (store, _location) = harness.create().await;
    assert_eq!(store.log_head().await.expect("head"), None);
    let first = store
        .append(request("a", 0, events("a", 3)))
        .await
        .expect("append");
    assert_eq!(
        store.log_head().await.expect("head"),
        first.positions.last().copied()
    );
    let second = store
        .append(request("b", 0, events("b", 2)))
        .await
        .expect("append");
    assert_eq!(
        store.log_head().await.expect("head"),
        second.positions.last().copied()
    );
}

/// Checkpoints and rows survive a restart. The checkpoint is a position
/// the log holds: one past the log's head may be discarded on opening
/// (SQLite does, for an event file restored from an older backup).
pub async fn projections_survive_restart<H: Harness>(harness: &H) {
    let (store, location) = harness.create().await;
    let appended = store
        .append(request("a", 0, events("a", 2)))
        .await
        .expect("append");
    let position = appended.positions.last().copied();
    store
        .commit_projection(commit(
            0,
            position,
            vec![insert_state("a", Some(5), Some("x"))],
        ))
        .await
        .expect("commit");
    drop(store);
    let store = harness.reopen(&location).await;
    let checkpoint = store.projection_checkpoint(NAME).await.expect("checkpoint");
    assert_eq!(checkpoint.position, position);
    assert_eq!(checkpoint.generation, 1);
    assert_eq!(states(&store).await, vec![state_row("a", 5, "x")]);
}

fn ledger_row(seq: i64, member: &str) -> SqlStatement {
    SqlStatement::new(
        "INSERT INTO ledger_entries (account_id, seq, tx, log_seq, occurred_at_ms, kind, \
         member_id, action, model, amount, available_before, available_after) \
         VALUES ($1, $2, 0, $2, $3, 'credits_debited', $4, 'chat', NULL, 1, 0, 0)",
        vec![
            SqlValue::text("acct"),
            SqlValue::int(seq),
            SqlValue::int(seq * 1_000),
            SqlValue::text(member),
        ],
    )
}

/// What ListLedger's filters ask: one member's entries, and a time range.
async fn ledger_answers<S: ProjectionStore>(store: &S) -> (Vec<SqlRow>, Vec<SqlRow>) {
    let mut rows = store
        .query_projection(vec![
            SqlStatement::new(
                "SELECT seq FROM ledger_entries WHERE account_id = $1 AND member_id = $2 \
                 AND seq > $3 ORDER BY seq LIMIT $4",
                vec![
                    SqlValue::text("acct"),
                    SqlValue::text("m1"),
                    SqlValue::int(1),
                    SqlValue::int(10),
                ],
            ),
            SqlStatement::new(
                "SELECT seq FROM ledger_entries WHERE account_id = $1 \
                 AND occurred_at_ms >= $2 AND occurred_at_ms < $3 ORDER BY seq",
                vec![
                    SqlValue::text("acct"),
                    SqlValue::int(2_000),
                    SqlValue::int(5_000),
                ],
            ),
        ])
        .await
        .expect("query_projection");
    let by_time = rows.remove(1);
    (rows.remove(0), by_time)
}

fn seqs(seqs: &[i64]) -> Vec<SqlRow> {
    seqs.iter().map(|&seq| vec![SqlValue::int(seq)]).collect()
}

/// Indexes suspended for a bulk load change no answer, whether rows land
/// while they are suspended, the store is reopened meanwhile, or they are
/// restored; a backend that suspends some has them back after restoring
/// (it can suspend them again).
pub async fn suspended_indexes_change_no_answers<H: Harness>(harness: &H) {
    let (store, location) = harness.create().await;
    store
        .commit_projection(commit(
            0,
            None,
            vec![
                ledger_row(1, "m1"),
                ledger_row(2, "m2"),
                ledger_row(3, "m1"),
            ],
        ))
        .await
        .expect("commit");
    let suspended = store
        .suspend_indexes(&["ledger_entries"])
        .await
        .expect("suspend");
    store
        .commit_projection(commit(
            1,
            None,
            vec![
                ledger_row(4, "m1"),
                ledger_row(5, "m2"),
                ledger_row(6, "m1"),
            ],
        ))
        .await
        .expect("commit while suspended");
    let expected = (seqs(&[3, 4, 6]), seqs(&[2, 3, 4]));
    assert_eq!(ledger_answers(&store).await, expected, "while suspended");
    drop(store);
    let store = harness.reopen(&location).await;
    assert_eq!(ledger_answers(&store).await, expected, "after reopening");
    store.restore_indexes().await.expect("restore");
    store
        .restore_indexes()
        .await
        .expect("restore with nothing suspended");
    assert_eq!(ledger_answers(&store).await, expected, "after restoring");
    assert_eq!(
        store
            .suspend_indexes(&["ledger_entries"])
            .await
            .expect("suspend again"),
        suspended,
        "restoring (or reopening) brings back what a suspension drops"
    );
    store.restore_indexes().await.expect("restore");
}
