-- Erasure (GDPR Article 17) by crypto-shredding: every client's personal fields in `events`
-- and `snapshots` are sealed with a data key of their own (projections::vault), kept here
-- wrapped under the master key. Erasing the client deletes the row.
create table client_keys
(
    client_id  text primary key,
    -- XChaCha20-Poly1305 nonce + ciphertext of the 32-byte key, bound to client_id.
    wrapped    bytea       not null,
    -- The fingerprint of the master key that wrapped it (not secret).
    master     text        not null,
    created_at timestamptz not null default now()
);

-- The unsubscribe-token keys of earlier master keys (`engagement keys rotate`), wrapped under
-- the current one, so links in emails sent before a rotation keep working.
create table retired_token_keys
(
    master     text primary key,
    wrapped    bytea       not null,
    retired_at timestamptz not null default now()
);

-- A client may be ERASED.
create function widen_client_status(tbl text) returns void
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
    execute format('alter table %I add check (status in (''ACTIVE'', ''UNSUBSCRIBED'', ''DELETED'', ''ERASED''))', tbl);
end;
$$;

select widen_client_status('users');
select widen_client_status('process_manager_clients');

alter function create_users_view(text) rename to create_users_view_with_holdout;

create function create_users_view(tbl text) returns void
    language plpgsql as
$$
begin
    perform create_users_view_with_holdout(tbl);
    perform widen_client_status(tbl);
end;
$$;
