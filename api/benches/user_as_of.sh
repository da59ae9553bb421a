#!/usr/bin/env bash
# `userAsOf` on one client with a long history, over HTTP against a release build (response
# cache off, so every answer is a replay).
#
#   bash api/benches/user_as_of.sh        # ORDERS=10000 SAMPLES=31
#
# 1. A fresh database; one client and ORDERS orders imported with `engagement import` (the
#    batch path: ORDERS order events plus a few scores).
# 2. The first look back, at the last version, before any state is kept: a replay from the
#    first event (what every look back cost before kept states), which keeps the states it
#    passes.
# 3. Then SAMPLES requests each for versions 10, half the history and the last, and for the
#    moment the middle event happened; the median and the slowest are reported, and every
#    answer's version is checked.
#
# Needs PostgreSQL on 127.0.0.1:5432 (bash .ci/postgres-up), curl and python3.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
orders=${ORDERS:-10000}
samples=${SAMPLES:-31}
db=engagement_bench_as_of
url=postgres://postgres@127.0.0.1:5432/$db
token=bench-token-not-secret
digest=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
export MASTER_KEY=BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=
work=$(mktemp -d)
server=
trap 'kill $server 2>/dev/null || true; rm -rf "$work"; [ -n "${KEEP:-}" ] || psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $db with (force)"' EXIT

(cd "$root" && cargo build --release --bin engagement -q)
psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $db with (force)" -c "create database $db"
bin="$root/target/release/engagement"
DATABASE_URL=$url RUST_LOG=warn "$bin" migrate >/dev/null
python3 - "$work" "$orders" <<'PY'
import datetime, sys
work, orders = sys.argv[1], int(sys.argv[2])
start = datetime.datetime(2001, 1, 1)
with open(f"{work}/clients.csv", "w") as f:
    f.write("external_id,name,email,preferred_categories,created_at\n")
    f.write("LONG-1,Lena Longhistory,lena.long@example.org,Denim|Knitwear,2001-01-01\n")
with open(f"{work}/orders.csv", "w") as f:
    f.write("external_id,order_id,placed_at,amount,categories\n")
    for i in range(orders):
        at = start + datetime.timedelta(hours=20 * i)
        f.write(f"LONG-1,L-{i},{at.isoformat()}Z,{15 + i % 200}.{i % 100:02d},Denim\n")
PY
DATABASE_URL=$url RUST_LOG=warn "$bin" import clients "$work/clients.csv" | tail -1
DATABASE_URL=$url RUST_LOG=warn "$bin" import orders "$work/orders.csv" | tail -1
q() { psql -At -h 127.0.0.1 -U postgres -d "$db" -c "$1"; }
id=$(q "select id from users where external_id = 'LONG-1'")
length=$(q "select max(sequence) from events where aggregate_id = '$id'")
half=$((length / 2))
# The moment the middle event happened, as the domain records it (the payload's own time).
at=$(DATABASE_URL=$url RUST_LOG=warn python3 - "$db" "$id" "$half" <<'PY'
import json, subprocess, sys
db, id, seq = sys.argv[1:]
row = subprocess.check_output(["psql", "-At", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-c",
    f"select payload from events where aggregate_id = '{id}' and sequence = {seq}"], text=True)
body = next(iter(json.loads(row).values()))
print(next(body[k] for k in ("recordedAt", "asOf", "createdAt") if k in body))
PY
)
echo "client $id: $length events; the middle one (version $half) happened at $at"

API_TOKENS="viewer:bench:$digest" API_RATE_LIMIT_PER_SEC=0 API_RESPONSE_CACHE_MB=0 \
  DATABASE_URL="$url" RUST_LOG=warn "$bin" serve --listen 127.0.0.1:18092 >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do curl -fs http://127.0.0.1:18092/readyz >/dev/null && break; sleep 0.1; done

# ask ARGS: one request; prints "seconds version".
ask() {
  local body
  body=$(printf '{"query":"{ userAsOf(userId: \\"%s\\", %s) { version orderCount } }"}' "$id" "$1")
  curl -fs -o "$work/answer" -w '%{time_total}' -H 'Content-Type: application/json' \
    -H "Authorization: Bearer $token" -d "$body" http://127.0.0.1:18092/graphql
  echo " $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["data"]["userAsOf"]["version"])' "$work/answer")"
}

first=$(ask "version: $length")
printf 'first look back (the last version, nothing kept yet: a replay of all %d events, keeping states): %.1f ms\n' \
  "$length" "$(echo "${first% *} * 1000" | bc -l)"
for _ in $(seq 1 100); do
  [ "$(q "select count(*) from client_states where aggregate_id = '$id'")" -ge $((length / 500)) ] && break
  sleep 0.1
done
echo "kept states: $(q "select count(*) || ' (' || pg_size_pretty(sum(pg_column_size(state))) || ')' from client_states")"

report() {
  local name=$1 args=$2 expect=$3 times=() out
  for _ in $(seq 1 "$samples"); do
    out=$(ask "$args")
    [ -z "$expect" ] || [ "${out#* }" = "$expect" ] || { echo "$name answered version ${out#* }, not $expect"; exit 1; }
    times+=("${out% *}")
  done
  python3 - "$name" "${times[@]}" <<'PY'
import statistics, sys
name, xs = sys.argv[1], [float(x) * 1000 for x in sys.argv[2:]]
print(f"{name:<28} median {statistics.median(xs):6.1f} ms   max {max(xs):6.1f} ms   ({len(xs)} requests)")
PY
}
report "version 10" "version: 10" 10
report "version $half" "version: $half" "$half"
report "version $length" "version: $length" "$length"
report "at $at" "at: \\\"$at\\\"" ""
