-- The global holdout: clients held out of emails, for the uplift comparison.

-- The salt of the assignment, generated once per database and kept (not secret): every
-- instance assigns the same client to the same group, and a rebuild reads the groups from the
-- stream anyway.
create table holdout_salt
(
    id   boolean primary key default true check (id),
    salt uuid not null
);
insert into holdout_salt (salt) values (md5(random()::text || clock_timestamp()::text)::uuid);

-- The process manager records a held-out client's trigger instead of writing an email.
alter table process_manager_clients add column holdout boolean not null default false;

-- HELD_OUT: a trigger of a held-out client, recorded for the report, never run.
do $$
declare
    c record;
begin
    for c in select conname from pg_constraint
              where conrelid = 'email_jobs'::regclass and contype = 'c'
                and pg_get_constraintdef(oid) like '%status%'
    loop
        execute format('alter table email_jobs drop constraint %I', c.conname);
    end loop;
end;
$$;
alter table email_jobs add check (status in ('PENDING', 'RUNNING', 'DONE', 'DEAD', 'SKIPPED', 'HELD_OUT'));
-- The report reads triggers by time.
create index email_jobs_created_idx on email_jobs (created_at);

-- The users view shows each client's group.
alter table users add column engagement_group text not null default 'TREATMENT'
    check (engagement_group in ('TREATMENT', 'HOLDOUT'));

alter function create_users_view(text) rename to create_users_view_with_external_ids;

create function create_users_view(tbl text) returns void
    language plpgsql as
$$
begin
    perform create_users_view_with_external_ids(tbl);
    execute format('alter table %I add column engagement_group text not null default ''TREATMENT'' check (engagement_group in (''TREATMENT'', ''HOLDOUT''))', tbl);
end;
$$;

-- The trend: per day, what changed (clients at risk, the sum and count of current scores,
-- emails written, reactivations), folded from the log by the `trend` consumer; a day's
-- standing is the running sum of the days before it. `trend_clients` is what the consumer
-- knows of each client's current score, to turn a new score into a change.
create table engagement_daily
(
    day            date primary key,
    at_risk_delta  integer not null default 0,
    score_sum_delta bigint not null default 0,
    scored_delta   integer not null default 0,
    emails         integer not null default 0,
    reactivations  integer not null default 0
);

create table trend_clients
(
    user_id uuid primary key,
    score   smallint not null,
    at_risk boolean  not null
);
