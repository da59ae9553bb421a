-- Durable email work: one job per triggering event, claimed by workers with
-- `for update skip locked` and a lease, retried with backoff, dead-lettered after the last
-- attempt (and put back by an operator).
create table email_jobs
(
    id               uuid primary key,
    user_id          uuid        not null,
    -- The UserScored event that triggered the job: a replay of that event finds the job
    -- already there and creates no second one.
    trigger_position bigint      not null unique,
    trigger_sequence bigint      not null,
    score            smallint    not null,
    -- PENDING, RUNNING, DONE, DEAD, SKIPPED
    status           text        not null default 'PENDING',
    attempts         integer     not null default 0,
    last_error       text,
    next_attempt_at  timestamptz not null,
    -- a RUNNING job whose lease has passed belongs to a worker that died; it is due again
    lease_until      timestamptz,
    -- the email this job recorded (derived from the job id)
    email_id         uuid,
    created_at       timestamptz not null,
    updated_at       timestamptz not null
);

create index email_jobs_due_idx on email_jobs (next_attempt_at) where status in ('PENDING', 'RUNNING');
create index email_jobs_status_idx on email_jobs (status, created_at desc, id);
create index email_jobs_user_idx on email_jobs (user_id, created_at desc);
