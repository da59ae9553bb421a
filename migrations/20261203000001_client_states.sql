-- A client's state kept every few hundred versions, so that looking back (`userAsOf`) on a
-- long history replays from the nearest kept state instead of from the first event
-- (projections::log::as_of). Derived data: written by the replays that pass a kept version,
-- never by the command path; deleted when the client is erased; safe to truncate.
create table client_states
(
    aggregate_id   text        not null,
    -- The client's version (stream sequence) this state is after.
    version        bigint      not null,
    -- The layout of `state` (a build that changes the aggregate's shape ignores older ones).
    format         integer     not null,
    -- The latest time any event up to `version` happened, and when event `version` did: a
    -- look back to a moment may start here only if every earlier event happened by then.
    happened_until timestamptz not null,
    happened_at    timestamptz not null,
    -- The aggregate as JSON, sealed whole with the client's key (XChaCha20-Poly1305: nonce
    -- and ciphertext, bound to the client and version); once the key is gone, unreadable.
    state          bytea       not null,
    primary key (aggregate_id, format, version)
);
