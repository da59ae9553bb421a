#!/usr/bin/env bash
# What sealing personal data costs: the last build before encryption against this one, in one
# run, on the same data, on the same machine (the machines are shared and noisy: runs
# alternate, medians are compared).
#
#   bash api/benches/encryption.sh          # BASELINE=93230f6 DURATION=15s CLIENTS=2000 RUNS=5
#
# 1. The baseline binary is built from BASELINE in a git worktree (into target/baseline),
#    then this build.
# 2. The baseline creates CLIENTS clients through the API in its own database, each with an
#    email-worthy history; that database is copied for this build, whose `engagement keys
#    seal` seals the copy (so each binary reads data in its own format: the same clients, the
#    same events).
# 3. Each run: pgbench's one-row insert ceiling, then for each binary in turn (the order
#    reversed every other run), on its own database: placeOrder over GraphQL (16 connections,
#    a fresh orderId to a random client each time), then the users page (50 users with their
#    emails, response cache off so every request runs its queries).
# Needs PostgreSQL on 127.0.0.1:5432, pgbench, wrk and python3.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
baseline=${BASELINE:-93230f6}
duration=${DURATION:-15s}
clients=${CLIENTS:-2000}
connections=${CONNECTIONS:-16}
runs=${RUNS:-5}
token=bench-token-not-secret
digest=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
key=$(head -c 32 /dev/urandom | base64)
work=$(mktemp -d)
port=18093
old_db=engagement_bench_plain
new_db=engagement_bench_sealed
url() { echo "postgres://postgres@127.0.0.1:5432/$1"; }

server=
cleanup() {
  kill $server 2>/dev/null || true
  git -C "$root" worktree remove --force "$work/baseline" 2>/dev/null || true
  if [ -z "${KEEP:-}" ]; then
    psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $old_db with (force)" -c "drop database if exists $new_db with (force)"
  fi
  rm -rf "$work"
}
trap cleanup EXIT

git -C "$root" worktree add -q --detach "$work/baseline" "$baseline"
# A target directory of its own: cargo names a workspace's crates by their path relative to
# the workspace, so sharing one with this build would mix the two builds' crates.
(cd "$work/baseline" && CARGO_TARGET_DIR="$root/target/baseline" cargo build --release --bin engagement -q)
cp "$root/target/baseline/release/engagement" "$work/engagement-baseline"
(cd "$root" && cargo build --release --bin engagement -q)
cp "$root/target/release/engagement" "$work/engagement-current"

psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $old_db with (force)" -c "drop database if exists $new_db with (force)" -c "create database $old_db"
psql -q -h 127.0.0.1 -U postgres -d "$old_db" -c "create table ceiling (id bigserial primary key, payload text not null)"

# Starts binary $1 (baseline or current) on database $2 and waits until it is ready.
start_server() {
  env API_TOKENS="operator:bench:$digest" API_RATE_LIMIT_PER_SEC=0 API_RESPONSE_CACHE_MB=0 \
    DATABASE_URL="$(url "$2")" MASTER_KEY="$key" RUST_LOG=warn \
    "$work/engagement-$1" serve --listen 127.0.0.1:$port >>"$work/server-$1.log" 2>&1 &
  server=$!
  for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
}
stop_server() { kill "$server"; wait "$server" 2>/dev/null || true; server=; }

# The clients, created by the baseline: an order long ago puts each at risk, so the engine
# writes them an email (a template) that the page shows.
start_server baseline "$old_db"
python3 - "$port" "$token" "$clients" >"$work/ids.lua" <<'PY'
import json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
port, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def call(query, variables):
    body = json.dumps({"query": query, "variables": variables}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", body,
                                 {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    return json.load(urllib.request.urlopen(req))
def create(i):
    answer = call("mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
                  {"i": {"name": f"Client {i}", "email": f"client{i}@example.com", "preferredCategories": ["Denim"]}})
    uid = answer["data"]["createUser"]["id"]
    call("mutation($u: ID!, $i: PlaceOrderInput!) { placeOrder(userId: $u, input: $i) { id } }",
         {"u": uid, "i": {"orderId": "first", "amount": "30.00", "placedAt": "2025-01-15T10:00:00Z"}})
    return uid
with ThreadPoolExecutor(16) as pool:
    ids = list(pool.map(create, range(n)))
print("ids = {" + ",".join(f'"{i}"' for i in ids) + "}")
PY
# Let the emails be written before the copy.
for _ in $(seq 1 120); do
  written=$(psql -qtA -h 127.0.0.1 -U postgres -d "$old_db" -c "select count(*) from emails")
  [ "$written" -ge "$((clients * 9 / 10))" ] && break; sleep 1
done
stop_server
psql -q -h 127.0.0.1 -U postgres -c "create database $new_db template $old_db"
sealed=$(DATABASE_URL=$(url "$new_db") MASTER_KEY="$key" RUST_LOG=warn "$work/engagement-current" keys seal)
echo "emails written: $written; $sealed"

cat >"$work/place_order.lua" <<LUA
dofile("$work/ids.lua")
local threads = {}
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end
function init(args)
  math.randomseed(tid * 7919 + os.time())
  n, ok, failed = 0, 0, 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer $token"
end
function request()
  n = n + 1
  local id = ids[math.random(#ids)]
  local body = '{"query":"mutation(\$u: ID!, \$i: PlaceOrderInput!) { placeOrder(userId: \$u, input: \$i) { id orderCount } }",'
    .. '"variables":{"u":"' .. id .. '","i":{"orderId":"RUN-' .. tid .. '-' .. n .. '","amount":"42.50"}}}'
  return wrk.format(nil, nil, nil, body)
end
function response(status, headers, body)
  if status == 200 and not string.find(body, '"errors"', 1, true) then ok = ok + 1 else failed = failed + 1 end
end
function done(summary, latency, requests)
  local o, f = 0, 0
  for _, t in ipairs(threads) do o = o + t:get("ok"); f = f + t:get("failed") end
  io.write(string.format("answered %d ok %d failed %d rps %.1f p99_ms %.1f\n",
    summary.requests, o, f, summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000))
end
LUA
cat >"$work/page.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
wrk.body = '{"query":"{ users(first: 50) { nodes { id name email engagementScore emails(first: 10) { nodes { id subject status generatedAt } } } } }"}'
function done(summary, latency, requests)
  io.write(string.format("page rps %.1f p99_ms %.1f errors %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(99) / 1000, summary.errors.status))
end
LUA

ceiling() {
  echo "insert into ceiling (payload) values ('one row');" >"$work/insert.sql"
  pgbench -n -h 127.0.0.1 -U postgres -c 16 -j 2 -T "${duration%s}" -f "$work/insert.sql" "$old_db" 2>/dev/null \
    | awk '/^tps/ { print int($3) }'
}

: >"$work/results"
for run in $(seq 1 "$runs"); do
  tps=$(ceiling)
  order="baseline current"
  if [ $((run % 2)) = 0 ]; then order="current baseline"; fi
  for build in $order; do
    db=$old_db; [ "$build" = current ] && db=$new_db
    start_server "$build" "$db"
    sed "s/RUN/warm$run/" "$work/place_order.lua" >"$work/run.lua"
    wrk -t2 -c"$connections" -d3s -s "$work/run.lua" "http://127.0.0.1:$port/graphql" >/dev/null
    sed "s/RUN/r$run/" "$work/place_order.lua" >"$work/run.lua"
    orders=$(wrk -t2 -c"$connections" -d"$duration" --timeout 10s -s "$work/run.lua" "http://127.0.0.1:$port/graphql" | grep '^answered')
    page=$(wrk -t2 -c"$connections" -d"$duration" --timeout 10s -s "$work/page.lua" "http://127.0.0.1:$port/graphql" | grep '^page')
    stop_server
    failed=$(echo "$orders" | awk '{ print $6 }')
    if [ "$failed" != 0 ]; then echo "run $run ($build): $orders" >&2; exit 1; fi
    rps=$(echo "$orders" | awk '{ print $8 }')
    echo "run $run ($build): pgbench $tps tps; placeOrder $orders; $page"
    echo "$build $run $tps $rps $(echo "$page" | awk '{ print $3 }')" >>"$work/results"
  done
done
# Medians, and the paired ratios (current / baseline within the same run).
awk -v n="$runs" '
  { rps[$1, $2] = $4; page[$1, $2] = $5; tps[$2] = $3 }
  END {
    for (r = 1; r <= n; r++) {
      o[r] = rps["current", r] / rps["baseline", r]; p[r] = page["current", r] / page["baseline", r]
      bo[r] = rps["baseline", r] / tps[r]; co[r] = rps["current", r] / tps[r]
    }
    asort(o); asort(p); asort(bo); asort(co); m = int((n + 1) / 2)
    printf "median of %d runs: placeOrder/ceiling baseline %.3f, current %.3f; paired current/baseline: placeOrder %.3f, users page %.3f\n", n, bo[m], co[m], o[m], p[m]
  }' "$work/results"
