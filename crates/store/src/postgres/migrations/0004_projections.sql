-- Projections: read models materialised from the global log by
-- tally-projections. Unlike events they are disposable: `tallyd rebuild`
-- empties and refills them from the log, so they may be updated and
-- deleted. Every table but the checkpoints leads with account_id, so each
-- can be distributed by account. Text keys are "C" so that every ordering
-- is bytewise, as on the SQLite backend, whatever the database collation.

-- One row per projection: the last log position it applied, committed in
-- the same transaction as the rows it wrote.
CREATE TABLE projection_checkpoints (
    name           text COLLATE "C" NOT NULL,
    -- NULL before the first event.
    tx             bigint,
    seq            bigint,
    -- Bumped by every commit; a commit names the one it read.
    generation     bigint NOT NULL,
    schema_version bigint NOT NULL,
    updated_at_ms  bigint NOT NULL,
    CONSTRAINT projection_checkpoints_pkey PRIMARY KEY (name)
);

-- The account aggregate as each projection last folded it (JSON), so a
-- runner resumes without replaying streams.
CREATE TABLE projection_account_states (
    account_id text COLLATE "C" NOT NULL,
    projection text COLLATE "C" NOT NULL,
    version    bigint NOT NULL,
    state      text   NOT NULL,
    CONSTRAINT projection_account_states_pkey PRIMARY KEY (account_id, projection)
);

-- balances: one row per account, as of its last event.
CREATE TABLE account_balances (
    account_id        text COLLATE "C" NOT NULL,
    version           bigint NOT NULL,
    tx                bigint NOT NULL,
    seq               bigint NOT NULL,
    opened_at_ms      bigint,
    plan              text,
    pending_plan      text,
    time_zone         text   NOT NULL,
    available         bigint NOT NULL,
    upcoming          bigint NOT NULL,
    held              bigint NOT NULL,
    overage           bigint NOT NULL,
    granted           bigint NOT NULL,
    consumed          bigint NOT NULL,
    expired           bigint NOT NULL,
    voided            bigint NOT NULL,
    open_reservations bigint NOT NULL,
    used_in_cycle     bigint NOT NULL,
    cycle_start_ms    bigint,
    cycle_end_ms      bigint,
    spending_cap      bigint,
    last_activity_ms  bigint,
    CONSTRAINT account_balances_pkey PRIMARY KEY (account_id)
);

-- balances: every bucket with credits remaining or held.
CREATE TABLE account_buckets (
    account_id      text COLLATE "C" NOT NULL,
    grant_id        text COLLATE "C" NOT NULL,
    kind            text   NOT NULL,
    source          text   NOT NULL,
    priority        bigint NOT NULL,
    amount          bigint NOT NULL,
    remaining       bigint NOT NULL,
    held            bigint NOT NULL,
    effective_at_ms bigint NOT NULL,
    expires_at_ms   bigint,
    reference       text   NOT NULL,
    CONSTRAINT account_buckets_pkey PRIMARY KEY (account_id, grant_id)
);

-- ledger: one entry per event of an account, with the balance around it.
CREATE TABLE ledger_entries (
    account_id       text COLLATE "C" NOT NULL,
    seq              bigint NOT NULL,
    tx               bigint NOT NULL,
    log_seq          bigint NOT NULL,
    occurred_at_ms   bigint NOT NULL,
    kind             text COLLATE "C" NOT NULL,
    member_id        text COLLATE "C",
    action           text COLLATE "C",
    model            text,
    amount           bigint NOT NULL,
    available_before bigint NOT NULL,
    available_after  bigint NOT NULL,
    idempotency_key  text,
    event            text   NOT NULL,
    CONSTRAINT ledger_entries_pkey PRIMARY KEY (account_id, seq)
);

-- ListLedger's filters, each walked in sequence order from a page token.
CREATE INDEX ledger_entries_by_member ON ledger_entries (account_id, member_id, seq);
CREATE INDEX ledger_entries_by_action ON ledger_entries (account_id, action, seq);
CREATE INDEX ledger_entries_by_kind ON ledger_entries (account_id, kind, seq);
CREATE INDEX ledger_entries_by_time ON ledger_entries (account_id, occurred_at_ms);

-- usage: what actions cost per local day and cycle, by every grouping
-- GetUsage offers. A day that spans a billing anchor has a row per cycle.
CREATE TABLE usage_daily (
    account_id     text COLLATE "C" NOT NULL,
    day            text COLLATE "C" NOT NULL,
    cycle_start_ms bigint NOT NULL,
    action         text COLLATE "C" NOT NULL,
    capability     text COLLATE "C" NOT NULL,
    member_id      text COLLATE "C" NOT NULL,
    model          text COLLATE "C" NOT NULL,
    charged        bigint NOT NULL,
    overage        bigint NOT NULL,
    actions        bigint NOT NULL,
    input_tokens   bigint NOT NULL,
    output_tokens  bigint NOT NULL,
    context_tokens bigint NOT NULL,
    images         bigint NOT NULL,
    tool_calls     bigint NOT NULL,
    CONSTRAINT usage_daily_pkey
        PRIMARY KEY (account_id, day, cycle_start_ms, action, capability, member_id, model)
);

CREATE INDEX usage_daily_by_cycle ON usage_daily (account_id, cycle_start_ms);

GRANT SELECT, INSERT, UPDATE, DELETE ON
    projection_checkpoints, projection_account_states, account_balances,
    account_buckets, ledger_entries, usage_daily
TO tally_app;
