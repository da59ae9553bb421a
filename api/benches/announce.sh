#!/usr/bin/env bash
# What a notification per append costs PostgreSQL: appends of two events (a command's usual
# OrderPlaced and UserScored) into this project's `events` table, by pgbench at 16 clients,
# once as a writer that leaves announcing to the table's trigger (a NOTIFY in every
# transaction) and once as one that announces its appends itself (`engagement.announced =
# on`: the trigger stays quiet), alternating, RUNS times each; the medians and their ratio.
#
#   bash api/benches/announce.sh        # DURATION=10 RUNS=3 CLIENTS=16
#
# Needs PostgreSQL on 127.0.0.1:5432 (bash .ci/postgres-up) and pgbench.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
duration=${DURATION:-10}
runs=${RUNS:-3}
clients=${CLIENTS:-16}
db=engagement_bench_announce
url=postgres://postgres@127.0.0.1:5432/$db
work=$(mktemp -d)
trap 'psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $db with (force)"; rm -rf "$work"' EXIT

(cd "$root" && cargo build --release --bin engagement -q)
psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $db with (force)"
"$root/target/release/engagement" migrate --database-url "$url" >/dev/null

cat >"$work/append.sql" <<'SQL'
insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
select 'Client', c.id, e.n, e.type, '1', e.payload::jsonb,
       '{"actor": "operator:bench", "requestId": "0a1b2c3d-0000-4000-8000-000000000000"}'::jsonb
  from (values (1, 'OrderPlaced', '{"OrderPlaced": {"orderId": "RUN-1-1", "amount": 4250, "placedAt": "2026-11-28T06:25:57Z", "categories": []}}'),
               (2, 'UserScored', '{"UserScored": {"asOf": "2026-11-28T06:25:57Z", "band": "watch", "cause": "activity", "score": 64, "policy": "cadence-v2", "factors": [{"name": "base", "detail": "Every client starts at 51.5.", "points": 51.5}], "threshold": 50}}'))
       as e(n, type, payload),
       (select gen_random_uuid()::text) as c(id);
SQL

append() {
  PGOPTIONS="-c engagement.announced=$1" pgbench -n -h 127.0.0.1 -U postgres -c "$clients" -j 2 \
    -T "$duration" -f "$work/append.sql" "$db" 2>/dev/null | awk '/^tps/ { print int($3) }'
}

: >"$work/results"
for run in $(seq 1 "$runs"); do
  order="off on"
  if [ $((run % 2)) = 0 ]; then order="on off"; fi
  for mode in $order; do
    tps=$(append "$mode")
    echo "run $run: announced=$mode $tps appends/s"
    echo "$mode $tps" >>"$work/results"
  done
done
median() { grep "^$1 " "$work/results" | awk '{ print $2 }' | sort -n | awk -v n="$runs" 'NR == int((n + 1) / 2)'; }
off=$(median off)
on=$(median on)
echo "median of $runs runs: a notification per append $off appends/s, announced by the writer $on appends/s ($(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.2f", a / b }')x)"
