-- The event log. postgres-es owns the shape of `events` and `snapshots` (its own insert names
-- only the first seven columns); we add what a reader of the whole log needs.
-- payload and metadata are jsonb rather than postgres-es's json: same wire type for sqlx, and
-- it lets audit queries index into a payload.

create table events
(
    aggregate_type text                         not null,
    aggregate_id   text                         not null,
    sequence       bigint check (sequence >= 0) not null,
    event_type     text                         not null,
    event_version  text                         not null,
    payload        jsonb                        not null,
    metadata       jsonb                        not null,
    -- A total order for readers of the whole log. An identity value is taken at insert but
    -- becomes visible at commit, so readers never order by it alone (see transaction_id).
    global_position bigint generated always as identity,
    -- The writing transaction. Readers order by (transaction_id, global_position) and read
    -- only transactions below the oldest one still running, so a commit that lands late with
    -- a smaller position is never skipped. The event insert must be the first write of its
    -- transaction: the id is assigned at the first write.
    transaction_id xid8 not null default pg_current_xact_id(),
    recorded_at    timestamptz not null default now(),
    -- Per-aggregate optimistic concurrency: two writers of the same sequence conflict here.
    primary key (aggregate_type, aggregate_id, sequence)
);

create unique index events_global_position_key on events (global_position);
create index events_log_order_idx on events (transaction_id, global_position);

-- Snapshots of aggregates with long histories (postgres-es updates the row in place).
create table snapshots
(
    aggregate_type   text                                 not null,
    aggregate_id     text                                 not null,
    last_sequence    bigint check (last_sequence >= 0)    not null,
    current_snapshot bigint check (current_snapshot >= 0) not null,
    payload          jsonb                                not null,
    primary key (aggregate_type, aggregate_id, last_sequence)
);

-- Wake log readers at once: NOTIFY is delivered on commit, once per transaction and
-- payload, so a statement-level trigger costs one notification per commit. It fires after
-- the insert, so the event stays the transaction's first write.
create function notify_events_committed() returns trigger
    language plpgsql as
$$
begin
    perform pg_notify('events_committed', '');
    return null;
end;
$$;

create trigger events_notify
    after insert on events
    for each statement
execute function notify_events_committed();
