-- Read models built from the log, and the checkpoints of the consumers that build them.

-- One row per consumer (users view, emails view, process manager, ...). A consumer moves its
-- checkpoint in the same transaction as its own writes, and locks the row while it does, so
-- two instances on one database never apply the same events twice.
create table consumer_checkpoints
(
    name            text primary key,
    transaction_id  xid8        not null default '0'::xid8,
    global_position bigint      not null default 0,
    updated_at      timestamptz not null default now()
);

-- Trigram search over names and emails (users(filter: {search})). pg_trgm is a trusted
-- extension: any database owner may create it.
create extension if not exists pg_trgm;

-- The users view is created by name so that a rebuild can fill a fresh copy and swap it in
-- while reads go on against the live one (see swap_read_model below).
create function create_users_view(tbl text) returns void
    language plpgsql as
$$
begin
    execute format($ddl$
        create table %1$I
        (
            id                         uuid primary key,
            name                       text        not null,
            email                      text        not null,
            preferred_categories       text[]      not null default '{}',
            order_count                integer     not null default 0,
            total_spent_cents          bigint      not null default 0,
            average_order_value_cents  bigint      not null default 0,
            last_order_date            timestamptz,
            first_order_date           timestamptz,
            engagement_score           smallint    not null default 0,
            score_band                 text        not null default 'healthy',
            at_risk                    boolean     not null default false,
            score_policy               text        not null default '',
            score_threshold            smallint    not null default 50,
            score_factors              jsonb       not null default '[]',
            score_as_of                timestamptz,
            -- when time passing alone would next change the score (the rescore scheduler's queue)
            next_score_change_at       timestamptz,
            last_email_date            timestamptz,
            status                     text        not null default 'ACTIVE',
            created_at                 timestamptz not null,
            updated_at                 timestamptz not null,
            -- the aggregate version (sequence of the last event) this row reflects
            version                    bigint      not null
        )$ddl$, tbl);
    -- Keyset pagination orders by (column, id); each ordering has its index.
    execute format('create index %I on %I (engagement_score, id)', tbl || '_score_idx', tbl);
    execute format('create index %I on %I (lower(name), id)', tbl || '_name_idx', tbl);
    execute format('create index %I on %I (created_at, id)', tbl || '_created_idx', tbl);
    execute format('create index %I on %I (last_order_date, id)', tbl || '_last_order_idx', tbl);
    execute format('create index %I on %I (engagement_score, id) where at_risk', tbl || '_at_risk_idx', tbl);
    execute format('create index %I on %I using gin ((name || '' '' || email) gin_trgm_ops)', tbl || '_search_idx', tbl);
    execute format('create index %I on %I using gin (preferred_categories)', tbl || '_categories_idx', tbl);
    execute format('create index %I on %I (next_score_change_at) where next_score_change_at is not null and status <> ''DELETED''', tbl || '_next_change_idx', tbl);
end;
$$;

create function create_emails_view(tbl text) returns void
    language plpgsql as
$$
begin
    execute format($ddl$
        create table %1$I
        (
            id                       uuid primary key,
            user_id                  uuid        not null,
            subject                  text        not null,
            preheader                text        not null default '',
            text                     text        not null,
            html                     text        not null,
            status                   text        not null default 'GENERATED',
            generated_at             timestamptz not null,
            engagement_score_at_time smallint    not null,
            generator                text        not null,
            usage                    jsonb,
            trigger_sequence         bigint,
            trigger_position         bigint,
            -- the aggregate version of the event that recorded the email
            version                  bigint      not null
        )$ddl$, tbl);
    execute format('create index %I on %I (user_id, generated_at desc, id desc)', tbl || '_user_idx', tbl);
    execute format('create index %I on %I (generated_at desc, id desc)', tbl || '_time_idx', tbl);
    execute format('create index %I on %I (status, generated_at desc, id desc)', tbl || '_status_idx', tbl);
end;
$$;

-- Replaces the table `live` by `fresh`, renaming fresh's indexes to live's names, in the
-- caller's transaction (readers of `live` wait for the commit, then see the new table).
create function swap_read_model(live text, fresh text) returns void
    language plpgsql as
$$
declare
    idx record;
begin
    execute format('drop table if exists %I', live);
    execute format('alter table %I rename to %I', fresh, live);
    for idx in
        select indexname from pg_indexes where schemaname = current_schema() and tablename = live
    loop
        if left(idx.indexname, length(fresh)) = fresh then
            execute format('alter index %I rename to %I', idx.indexname, live || substr(idx.indexname, length(fresh) + 1));
        end if;
    end loop;
end;
$$;

select create_users_view('users');
select create_emails_view('emails');
