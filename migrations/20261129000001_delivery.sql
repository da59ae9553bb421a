-- Emails leave the building: send jobs, the global send rate, suppression in the process
-- manager, and the emails view's delivery columns and statuses.

-- One send job per email released for sending (written under `auto`, or approved), recorded
-- by the process manager from the log in the same transaction as its checkpoint, so a replay
-- finds it there. Claimed with `for update skip locked` under a lease, like email_jobs.
create table email_sends
(
    email_id          uuid primary key,
    -- the content is read from the email's EmailGenerated event in this client's stream
    user_id           uuid        not null,
    -- PENDING, RUNNING, DONE
    status            text        not null default 'PENDING' check (status in ('PENDING', 'RUNNING', 'DONE')),
    attempts          integer     not null default 0,
    last_error        text,
    -- SENT, FAILED, CANCELLED, GONE (the email was settled elsewhere), once done
    outcome           text check (outcome in ('SENT', 'FAILED', 'CANCELLED', 'GONE')),
    next_attempt_at   timestamptz not null,
    lease_until       timestamptz,
    created_at        timestamptz not null,
    updated_at        timestamptz not null
);

create index email_sends_due_idx on email_sends (next_attempt_at) where status in ('PENDING', 'RUNNING');

-- The global send rate (SMTP_MAX_PER_SECOND), held across instances: every send reserves the
-- next free slot here, one row, in one statement.
create table email_send_rate
(
    id        boolean primary key default true check (id),
    next_slot timestamptz not null default '-infinity'
);
insert into email_send_rate default values;

-- The process manager writes no email to a suppressed address (until the address changes).
alter table process_manager_clients add column suppressed boolean not null default false;

-- The emails view: the new statuses and the delivery columns.
create function emails_add_delivery(tbl text) returns void
    language plpgsql as
$$
declare
    c record;
begin
    for c in select conname from pg_constraint
              where conrelid = tbl::regclass and contype = 'c'
                and pg_get_constraintdef(oid) like '%status%'
    loop
        execute format('alter table %I drop constraint %I', tbl, c.conname);
    end loop;
    execute format('alter table %I add check (status in (''GENERATED'', ''WOULD_SEND'', ''SENT'', ''PENDING_REVIEW'', ''REJECTED'', ''CANCELLED'', ''FAILED'', ''BOUNCED'', ''COMPLAINED''))', tbl);
    execute format('alter table %I add column sent_at timestamptz, add column message_id text, '
                   'add column delivery_error text, add column reviewed_by text, '
                   'add column review_reason text, add column delivery_mode text', tbl);
end;
$$;

select emails_add_delivery('emails');

alter function create_emails_view(text) rename to create_emails_view_with_checks;

create function create_emails_view(tbl text) returns void
    language plpgsql as
$$
begin
    perform create_emails_view_with_checks(tbl);
    perform emails_add_delivery(tbl);
end;
$$;

-- The client's snapshot gained each email's delivery and the suppressed address; both are
-- `serde(default)`, and emails written before this change were never sent, so old snapshots
-- stay valid.
