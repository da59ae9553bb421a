-- Statuses are closed sets: the enums in the code (domain::client::{ClientStatus,
-- EmailStatus}, projections::engagement::jobs::JobStatus) and these constraints list the same
-- values, so a value neither knows can never be stored, and reading one back is an error
-- rather than a guess.

alter table users add check (status in ('ACTIVE', 'UNSUBSCRIBED', 'DELETED'));
alter table emails add check (status in ('GENERATED', 'WOULD_SEND', 'SENT'));
alter table email_jobs add check (status in ('PENDING', 'RUNNING', 'DONE', 'DEAD', 'SKIPPED'));
alter table process_manager_clients add check (status in ('ACTIVE', 'UNSUBSCRIBED', 'DELETED'));

-- A rebuild creates a fresh view table through these functions: they gain the same checks.
-- The table definitions stay in the first migration; these wrap them.
alter function create_users_view(text) rename to create_users_view_table;
alter function create_emails_view(text) rename to create_emails_view_table;

create function create_users_view(tbl text) returns void
    language plpgsql as
$$
begin
    perform create_users_view_table(tbl);
    execute format('alter table %I add check (status in (''ACTIVE'', ''UNSUBSCRIBED'', ''DELETED''))', tbl);
end;
$$;

create function create_emails_view(tbl text) returns void
    language plpgsql as
$$
begin
    perform create_emails_view_table(tbl);
    execute format('alter table %I add check (status in (''GENERATED'', ''WOULD_SEND'', ''SENT''))', tbl);
end;
$$;
