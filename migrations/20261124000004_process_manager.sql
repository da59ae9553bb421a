-- What the process manager knows of each client, kept from the log in the same transaction
-- as its checkpoint, so its decisions are exact at each event's position (the users view is
-- another consumer and may be ahead or behind).
create table process_manager_clients
(
    user_id       uuid primary key,
    -- ACTIVE, UNSUBSCRIBED, DELETED
    status        text not null,
    last_email_at timestamptz
);
