-- A writer may announce its own appends (one notification, sent after its commit, for every
-- append that committed meanwhile) and say so for its transaction with
-- `set_config('engagement.announced', 'on', true)`: then this trigger stays quiet. A
-- transaction that notifies holds a database-wide lock from just before its commit until
-- after it, so commits that each notify wait for one another's disk flush: a command's two
-- events appended by pgbench at 16 clients, 2,946 per second with this trigger notifying and
-- 5,646 without (api/benches/announce.sh). Every other writer (a session that does not set it, an older instance during a
-- rolling upgrade) is still announced here, as before.
create or replace function notify_events_committed() returns trigger
    language plpgsql as
$$
begin
    if current_setting('engagement.announced', true) is distinct from 'on' then
        perform pg_notify('events_committed', '');
    end if;
    return null;
end;
$$;
