//! What the projections' integration tests share.

#![allow(dead_code)] // each test binary uses part of this

use std::time::Duration;

use tally_core::{ActionKey, BucketKind, Command, GrantCommand, GrantId, MemberId, Millicredits};
use tally_projections::{Freshness, Projection, Projections};
use tally_store::{EventStore, ProjectionStore, SqlRow, SqlStatement};
use tokio::time::Instant;

/// Runs `test` on its own two-worker runtime (the machine's cores), and
/// fails it if it takes longer than `limit`.
pub fn on_two_workers(limit: Duration, test: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(limit, test)
                .await
                .expect("finished in time")
        });
}

/// Waits until every projection has applied the whole log; panics after a
/// minute.
pub async fn caught_up<S: EventStore + ProjectionStore + Clone>(projections: &Projections<S>) {
    for projection in Projection::ALL {
        projections
            .wait_for(
                projection,
                Freshness::Full,
                Instant::now() + Duration::from_secs(60),
            )
            .await
            .unwrap_or_else(|e| panic!("{projection} did not catch up: {e}"));
    }
}

/// A debit of `amount` by member `m` for `agent.step`.
pub fn debit(amount: i64) -> Command {
    Command::Debit {
        occurred_at: None,
        member: MemberId::parse("m").unwrap(),
        action: ActionKey::parse("agent.step").unwrap(),
        model: None,
        amount: Some(Millicredits::new(amount)),
        dimensions: None,
    }
}

/// A promotional grant `grant-1` of `amount`, effective at once.
pub fn grant(amount: i64) -> Command {
    Command::Grant(GrantCommand {
        grant_id: GrantId::parse("grant-1").unwrap(),
        pack: None,
        kind: BucketKind::Promotional,
        source: None,
        priority: None,
        amount: Millicredits::new(amount),
        effective_at: None,
        expires_at: None,
        cost_basis: None,
        reference: String::new(),
    })
}

/// Every index of an embedded store's projections file (name and
/// `CREATE INDEX` statement, NULL for a key's), by name.
pub async fn projection_indexes<S: ProjectionStore>(store: &S) -> Vec<SqlRow> {
    store
        .query_projection(vec![SqlStatement::new(
            "SELECT name, sql FROM projections.sqlite_schema WHERE type = 'index' ORDER BY name",
            vec![],
        )])
        .await
        .expect("read the projections file's indexes")
        .remove(0)
}
