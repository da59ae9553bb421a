-- Clients carry the retailer's own id (`externalId`).
--
-- The event stream records a client's external id (UserCreated, UserUpdated); this table is
-- the reservation that keeps it unique. A writer claims an external id here before it writes
-- the client's stream (insert .. on conflict do nothing: of two concurrent creators exactly
-- one row wins, and the other reads the winner's client id and lands on the same stream, where
-- creation is idempotent). One external id names one client; a client has at most one.
-- A claim whose stream was never written (a crash between the two) is harmless: the next
-- creation under that external id writes the stream at the claimed id. When the client an
-- external id names is deleted or erased, a creation under it moves the claim to a new client.
create table client_external_ids
(
    external_id text primary key,
    user_id     uuid        not null unique,
    claimed_at  timestamptz not null default now()
);

-- The users view shows it.
alter table users add column external_id text;

alter function create_users_view(text) rename to create_users_view_with_checks;

create function create_users_view(tbl text) returns void
    language plpgsql as
$$
begin
    perform create_users_view_with_checks(tbl);
    execute format('alter table %I add column external_id text', tbl);
end;
$$;

-- The client's snapshot gained the recorded orders (a cancellation needs their amounts and
-- dates) and the external id. Snapshots are a cache of the log: dropping them makes every
-- client's next load replay its events, and the next command writes a snapshot of the new
-- shape.
delete from snapshots where aggregate_type = 'client';
