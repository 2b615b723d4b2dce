//! A serving runner that folds the log again, because `tallyd rebuild`
//! beside it reset a projection, does so on the embedded store without the
//! indexes only reads walk, as the offline rebuild does, and builds them
//! again once it has caught up: same rows, same indexes.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{caught_up, debit, grant, on_two_workers, projection_indexes as indexes};
use tally_core::{AccountId, Command, IdempotencyKey, ManualClock, OpenAccount, Timestamp};
use tally_engine::{Engine, EngineConfig, Mutation};
use tally_projections::rebuild::request_rebuild;
use tally_projections::{Projection, Projections, RunnerConfig};
use tally_store::conformance::Harness;
use tally_store::sqlite::{SqliteHarness, SqliteStore};
use tally_store::{ProjectionStore, SqlRow, SqlStatement};
use tokio::time::Instant;

const START: i64 = 1_774_612_800_000;
const DEBITS: usize = 400;

async fn rows(store: &SqliteStore, sql: &str) -> Vec<SqlRow> {
    store
        .query_projection(vec![SqlStatement::new(sql.to_owned(), vec![])])
        .await
        .expect("query")
        .remove(0)
}

async fn ledger(store: &SqliteStore) -> Vec<SqlRow> {
    rows(
        store,
        "SELECT account_id, seq, kind, member_id, amount, available_after \
         FROM ledger_entries ORDER BY account_id, seq",
    )
    .await
}

#[test]
fn a_refold_beside_the_runner_loads_without_read_indexes_then_builds_them() {
    on_two_workers(Duration::from_secs(120), async {
        let harness = SqliteHarness::default();
        let (store, location) = harness.create().await;
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(START)));
        let engine = Engine::new(store.clone(), clock.clone(), EngineConfig::default());
        // Small batches: the refold takes many commits, long enough to be
        // seen in the middle.
        let config = RunnerConfig {
            batch: 5,
            max_batch: 5,
            ..RunnerConfig::default()
        };
        let projections = Projections::new(store.clone(), clock.clone(), config);
        projections.start();
        let mut commands = vec![
            (
                "open".to_owned(),
                Command::OpenAccount(OpenAccount::default()),
            ),
            ("grant".to_owned(), grant(1_000_000)),
        ];
        commands.extend((0..DEBITS).map(|i| (format!("debit-{i}"), debit(1))));
        for (key, command) in commands {
            engine
                .execute(Mutation {
                    account: AccountId::parse("acme").unwrap(),
                    idempotency_key: IdempotencyKey::parse(&key).unwrap(),
                    fingerprint: key.as_bytes().to_vec(),
                    command,
                })
                .await
                .unwrap_or_else(|e| panic!("{key}: {e}"));
        }
        caught_up(&projections).await;
        let (ledger_before, indexes_before) = (ledger(&store).await, indexes(&store).await);
        assert!(ledger_before.len() > DEBITS, "{}", ledger_before.len());
        let has_member_index = |indexes: &[SqlRow]| {
            indexes
                .iter()
                .any(|row| row[0].as_text() == Some("ledger_entries_by_member"))
        };
        assert!(has_member_index(&indexes_before), "{indexes_before:?}");
        let head = store.log_head().await.unwrap();

        // What `tallyd rebuild` does beside a running `tallyd`: reset every
        // projection through a handle of its own, one after another, and
        // exit. The runner refolds them one at a time.
        let other = harness.reopen(&location).await;
        for projection in Projection::ALL {
            request_rebuild(&other, projection, START).await.unwrap();
        }
        drop(other);

        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen_without = false;
        loop {
            let now = indexes(&store).await;
            let checkpoint = store.projection_checkpoint("ledger").await.unwrap();
            // Read after the indexes: a checkpoint only moves forward, so an
            // index back while this is short of the head was built too soon.
            assert!(
                !(seen_without && has_member_index(&now)) || checkpoint.position == head,
                "the indexes came back before the ledger caught up: {checkpoint:?} of {head:?}"
            );
            seen_without |= !has_member_index(&now);
            if checkpoint.position == head && now == indexes_before && seen_without {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "refold not seen through: checkpoint {checkpoint:?} of {head:?}, \
                 seen without the index: {seen_without}, indexes now {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(ledger(&store).await, ledger_before, "the ledger refolded");
        projections.shutdown().await;
        engine.shutdown().await;
    });
}
