//! What the engine's integration tests share: a plan catalogue with a
//! daily and a monthly allowance, mutations named by their key, and an
//! account's stream decoded.

#![allow(dead_code)] // each test binary uses part of this

use tally_core::{
    AccountId, ActionKey, BucketKind, Command, Event, GrantCommand, GrantId, IdempotencyKey,
    MemberId, Millicredits, Plan, PlanCatalogue, PlanName,
};
use tally_engine::{Mutation, decode_event};
use tally_store::EventStore;

/// Version 1 with one plan, `daily`: 100 credits a day, 3,000 a month.
pub fn daily_plans() -> PlanCatalogue {
    let mut catalogue = PlanCatalogue {
        version: 1,
        ..Default::default()
    };
    catalogue.plans.insert(
        PlanName::parse("daily").unwrap(),
        Plan {
            daily_allowance_millicredits: Millicredits::from_credits(100),
            monthly_allowance_millicredits: Millicredits::from_credits(3_000),
            ..Plan::default()
        },
    );
    catalogue
}

/// `command` on `account` under idempotency key `key` (its fingerprint).
pub fn mutation(account: &str, key: &str, command: Command) -> Mutation {
    Mutation {
        account: AccountId::parse(account).unwrap(),
        idempotency_key: IdempotencyKey::parse(key).unwrap(),
        fingerprint: key.as_bytes().to_vec(),
        command,
    }
}

/// A Debit of `amount` by member `m` for `agent.step`, at a price given.
pub fn debit(amount: Millicredits) -> Command {
    Command::Debit {
        member: MemberId::parse("m").unwrap(),
        action: ActionKey::parse("agent.step").unwrap(),
        model: None,
        amount: Some(amount),
        dimensions: None,
        occurred_at: None,
    }
}

/// A grant of `amount` into a bucket of `kind`, effective now, never
/// expiring; change a field with `GrantCommand { …, ..grant(…) }`.
pub fn grant(grant_id: GrantId, kind: BucketKind, amount: Millicredits) -> GrantCommand {
    GrantCommand {
        grant_id,
        pack: None,
        kind,
        source: None,
        priority: None,
        amount,
        effective_at: None,
        expires_at: None,
        cost_basis: None,
        reference: String::new(),
    }
}

/// Every event of the stream, decoded.
pub async fn events_of<S: EventStore>(store: &S, account: &str) -> Vec<Event> {
    store
        .read_stream(account, 0, 100_000)
        .await
        .unwrap()
        .iter()
        .map(|r| decode_event(r).unwrap().event)
        .collect()
}
