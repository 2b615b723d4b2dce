//! Test clocks: time that an admin moves by hand, for the accounts opened
//! on it, so a plan's month can be played in seconds.
//!
//! A clock is a stream of the event store, `$test-clock/<id>` (`$` cannot
//! start an account id), like the catalog: every replica reads the same
//! time, and an advance is as durable as a debit. Its events say when it
//! started, each move forward, and each account attached to it.
//!
//! An account opened on a clock takes the clock's time as its "now" for
//! every command, read and boundary; the wall clock never touches it. It
//! has no wakeup in the store, so the background sweep leaves it alone:
//! [`Engine::advance_test_clock`] moves the clock and then advances each of
//! its accounts through its actor, which writes every boundary crossed
//! (days, cycles, expiries, hold TTLs, alerts) stamped with the boundary's
//! own time, exactly as the sweep writes them for a real account. An
//! advance that stops half-way (a crash) loses nothing: the next command
//! or read of an account catches it up to the clock, and the same advance
//! retried finishes the rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tally_core::{AccountId, Rejection, TestClockId, Timestamp};
use tally_store::{AppendRequest, EventStore, NewEvent, StoreError};
use tokio::sync::oneshot;

use crate::service_streams::fold_after;
use crate::{Engine, EngineError, Shared, WhenFull, actor};

/// Most accounts a test clock may carry: a clock is for playing a few
/// scenarios, and an advance sweeps every one of them in the call.
pub const MAX_ACCOUNTS_PER_TEST_CLOCK: usize = 100;

/// The stream of a test clock.
pub fn test_clock_stream(id: &TestClockId) -> String {
    format!("$test-clock/{id}")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum TestClockEvent {
    Created { frozen_at: Timestamp },
    Advanced { to: Timestamp },
    AccountAttached { account: AccountId },
}

impl TestClockEvent {
    fn type_name(&self) -> &'static str {
        match self {
            TestClockEvent::Created { .. } => "test_clock_created",
            TestClockEvent::Advanced { .. } => "test_clock_advanced",
            TestClockEvent::AccountAttached { .. } => "test_clock_account_attached",
        }
    }
}

/// A test clock as its stream tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestClock {
    pub id: TestClockId,
    /// The time it was created at.
    pub started_at: Timestamp,
    /// The time its accounts live at now.
    pub now: Timestamp,
    /// Accounts opened on it, in the order they were attached. An account
    /// is attached just before it opens, so one whose opening was then
    /// refused may be listed without being open on the clock.
    pub accounts: Vec<AccountId>,
    /// How much of the clock's stream this reflects.
    version: u64,
}

impl TestClock {
    fn apply(&mut self, event: TestClockEvent) {
        match event {
            TestClockEvent::Created { frozen_at } => {
                self.started_at = frozen_at;
                self.now = frozen_at;
            }
            TestClockEvent::Advanced { to } => self.now = self.now.max(to),
            TestClockEvent::AccountAttached { account } => self.accounts.push(account),
        }
    }
}

/// What an advance did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestClockAdvanced {
    pub clock: TestClock,
    /// Events written for the clock's accounts: the boundaries they crossed.
    pub events_written: usize,
}

/// Each replica's copy of the clocks it has read, checked against the
/// stream's version on every use, so an advance made through another
/// replica is seen at once.
#[derive(Default)]
pub(crate) struct TestClocks {
    read: Mutex<HashMap<TestClockId, Arc<TestClock>>>,
}

impl<S: EventStore> Shared<S> {
    /// The clock as its stream holds it now.
    pub(crate) async fn test_clock(&self, id: &TestClockId) -> Result<Arc<TestClock>, EngineError> {
        let stream = test_clock_stream(id);
        let version = self.store.stream_version(&stream).await?;
        if version == 0 {
            return Err(Rejection::UnknownTestClock { clock: id.clone() }.into());
        }
        let cached = self
            .test_clocks
            .read
            .lock()
            .expect("test clocks lock")
            .get(id)
            .cloned();
        if let Some(clock) = cached.as_ref().filter(|c| c.version == version) {
            return Ok(clock.clone());
        }
        let mut clock = cached.map_or_else(
            || TestClock {
                id: id.clone(),
                started_at: Timestamp::default(),
                now: Timestamp::default(),
                accounts: Vec::new(),
                version: 0,
            },
            |c| (*c).clone(),
        );
        clock.version = fold_after(
            &self.store,
            &stream,
            clock.version,
            "test clock",
            |event: TestClockEvent| clock.apply(event),
        )
        .await?;
        let clock = Arc::new(clock);
        let mut read = self.test_clocks.read.lock().expect("test clocks lock");
        // A concurrent read may have got further; keep the newer.
        let newest = match read.get(id) {
            Some(other) if other.version > clock.version => other.clone(),
            _ => clock,
        };
        read.insert(id.clone(), newest.clone());
        Ok(newest)
    }

    /// "Now" for an account on `clock`, or on the wall clock for `None`.
    pub(crate) async fn now_on(
        &self,
        clock: Option<&TestClockId>,
    ) -> Result<Timestamp, EngineError> {
        match clock {
            None => Ok(self.clock.now()),
            Some(id) => Ok(self.test_clock(id).await?.now),
        }
    }

    /// Appends one event at the clock's version: `Ok(false)` when another
    /// writer moved the stream first (read it again and retry).
    async fn append_test_clock(
        &self,
        id: &TestClockId,
        expected_version: u64,
        event: TestClockEvent,
    ) -> Result<bool, EngineError> {
        let payload = serde_json::to_vec(&event)
            .map_err(|e| EngineError::Corrupt(format!("cannot encode test clock event: {e}")))?;
        let appended = self
            .store
            .append(AppendRequest {
                stream_id: test_clock_stream(id),
                expected_version,
                events: vec![NewEvent {
                    event_type: event.type_name().to_owned(),
                    payload,
                    recorded_at_ms: self.clock.now().as_millis(),
                }],
                idempotency: Vec::new(),
                holds: Vec::new(),
                charges: Vec::new(),
                next_wakeup_ms: None,
            })
            .await;
        match appended {
            Ok(_) => Ok(true),
            Err(StoreError::VersionConflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn refuse_unless_test_clocks_allowed(&self) -> Result<(), EngineError> {
        if self.config.test_clocks_allowed {
            Ok(())
        } else {
            Err(Rejection::TestClocksRefused.into())
        }
    }

    fn gave_up_on(&self, id: &TestClockId) -> EngineError {
        EngineError::Contention {
            account: test_clock_stream(id),
            attempts: self.config.max_attempts,
        }
    }

    /// Puts `account` on the clock's list, before it opens on the clock.
    /// Attaching an account already listed does nothing, so a retried
    /// opening is safe.
    pub(crate) async fn attach_to_test_clock(
        &self,
        id: &TestClockId,
        account: &AccountId,
    ) -> Result<(), EngineError> {
        self.refuse_unless_test_clocks_allowed()?;
        for _ in 0..self.config.max_attempts {
            let clock = self.test_clock(id).await?;
            if clock.accounts.contains(account) {
                return Ok(());
            }
            if clock.accounts.len() >= MAX_ACCOUNTS_PER_TEST_CLOCK {
                return Err(Rejection::TestClockFull {
                    clock: id.clone(),
                    limit: MAX_ACCOUNTS_PER_TEST_CLOCK,
                }
                .into());
            }
            let event = TestClockEvent::AccountAttached {
                account: account.clone(),
            };
            if self.append_test_clock(id, clock.version, event).await? {
                return Ok(());
            }
        }
        Err(self.gave_up_on(id))
    }
}

impl<S: EventStore> Engine<S> {
    /// Creates a test clock frozen at `frozen_at`. Creating it again at the
    /// same time returns it (a retry is safe); at another time is refused
    /// with `TestClockExists`.
    pub async fn create_test_clock(
        &self,
        id: &TestClockId,
        frozen_at: Timestamp,
    ) -> Result<TestClock, EngineError> {
        let shared = &self.shared;
        shared.refuse_unless_test_clocks_allowed()?;
        for _ in 0..shared.config.max_attempts {
            match shared.test_clock(id).await {
                Ok(clock) if clock.started_at == frozen_at => return Ok((*clock).clone()),
                Ok(_) => return Err(Rejection::TestClockExists { clock: id.clone() }.into()),
                Err(EngineError::Rejected(Rejection::UnknownTestClock { .. })) => {}
                Err(e) => return Err(e),
            }
            if shared
                .append_test_clock(id, 0, TestClockEvent::Created { frozen_at })
                .await?
            {
                return Ok((*shared.test_clock(id).await?).clone());
            }
        }
        Err(shared.gave_up_on(id))
    }

    /// The clock as it is now.
    pub async fn test_clock(&self, id: &TestClockId) -> Result<TestClock, EngineError> {
        Ok((*self.shared.test_clock(id).await?).clone())
    }

    /// "Now" for an account on `clock`, or the wall clock's for `None`.
    pub async fn now_on(&self, clock: Option<&TestClockId>) -> Result<Timestamp, EngineError> {
        self.shared.now_on(clock).await
    }

    /// Moves the clock forward to `to` and advances every account on it,
    /// writing the boundaries they cross. A clock never moves back: `to`
    /// before the clock's time is refused; `to` equal to it moves nothing
    /// and still advances the accounts, so a retry of an advance that was
    /// cut short finishes it.
    pub async fn advance_test_clock(
        &self,
        id: &TestClockId,
        to: Timestamp,
    ) -> Result<TestClockAdvanced, EngineError> {
        let shared = &self.shared;
        shared.refuse_unless_test_clocks_allowed()?;
        let mut moved = None;
        for _ in 0..shared.config.max_attempts {
            let clock = shared.test_clock(id).await?;
            if to < clock.now {
                return Err(Rejection::InvalidField {
                    field: "frozen_time",
                    reason: format!(
                        "is before the clock's time ({} ms since the epoch); a test clock moves forward only",
                        clock.now.as_millis()
                    ),
                }
                .into());
            }
            if to == clock.now
                || shared
                    .append_test_clock(id, clock.version, TestClockEvent::Advanced { to })
                    .await?
            {
                moved = Some(());
                break;
            }
        }
        moved.ok_or_else(|| shared.gave_up_on(id))?;
        let clock = shared.test_clock(id).await?;
        let mut answers = Vec::with_capacity(clock.accounts.len());
        for account in &clock.accounts {
            let (reply, answer) = oneshot::channel();
            self.send(account, actor::Job::Sweep(reply), WhenFull::Wait)
                .await?;
            answers.push(answer);
        }
        let mut events_written = 0;
        for answer in answers {
            events_written += answer.await.map_err(|_| EngineError::ShuttingDown)??;
        }
        Ok(TestClockAdvanced {
            clock: (*clock).clone(),
            events_written,
        })
    }
}
