-- Usage of the units a rate card declares itself (posts scanned, platforms,
-- seconds of audio), summed like usage_daily's built-in dimensions: one row
-- per usage_daily group and unit. A table of its own rather than columns,
-- because each card names its own units.
CREATE TABLE usage_daily_units (
    account_id     text COLLATE "C" NOT NULL,
    day            text COLLATE "C" NOT NULL,
    cycle_start_ms bigint NOT NULL,
    action         text COLLATE "C" NOT NULL,
    capability     text COLLATE "C" NOT NULL,
    member_id      text COLLATE "C" NOT NULL,
    model          text COLLATE "C" NOT NULL,
    unit           text COLLATE "C" NOT NULL,
    amount         bigint NOT NULL,
    CONSTRAINT usage_daily_units_pkey
        PRIMARY KEY (account_id, day, cycle_start_ms, action, capability, member_id, model, unit)
);

CREATE INDEX usage_daily_units_by_cycle ON usage_daily_units (account_id, cycle_start_ms);

GRANT SELECT, INSERT, UPDATE, DELETE ON usage_daily_units TO tally_app;
