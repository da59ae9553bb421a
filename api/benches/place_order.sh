#!/usr/bin/env bash
# placeOrder over GraphQL against PostgreSQL's own ceiling for one-row insert transactions,
# measured in the same run on the same machine: the ratio is what is compared, since these
# machines are shared and noisy.
#
#   bash api/benches/place_order.sh        # DURATION=15s CLIENTS=2000 CONNECTIONS=16 RUNS=3
#   MODES="off on" bash api/benches/place_order.sh   # what metrics and tracing cost
#
# 1. pgbench: 16 clients, each transaction one insert of one row (the ceiling).
# 2. Our release build on its own database with CLIENTS clients; wrk sends placeOrder with a
#    fresh orderId each time, to a random client, on CONNECTIONS connections. Every answer is
#    checked: one with GraphQL errors counts as failed, CONFLICT counted apart.
# 3. Afterwards the orders recorded (the users view's order counts) must equal the requests
#    answered without error (plus at most one in flight per connection when wrk stopped), and
#    no order id may be recorded twice: nothing lost, nothing doubled.
# RUNS alternating runs of each; the medians are reported. PERF_OUT=FILE records a profile of
# the server (perf record, with call graphs) during the first run.
#
# MODES runs the server in several configurations, each in turn within every run, restarting
# it on the same data: `default` (as configured out of the box), `off` (METRICS_ENABLED=false,
# no tracing), `metrics` (metrics alone), `traces` (traces alone) and `on` (metrics, scraped
# every 5 s, and OpenTelemetry traces sampled at 10%, exported to an OTLP receiver of our own,
# `cargo run --example otlp_sink`). The order of the modes is reversed every other run, since
# the log grows as the runs go.
#
# Needs PostgreSQL on 127.0.0.1:5432 (bash .ci/postgres-up), pgbench (with PostgreSQL), wrk
# (apt-get install wrk) and python3 (to create the clients).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
duration=${DURATION:-15s}
clients=${CLIENTS:-2000}
connections=${CONNECTIONS:-16}
runs=${RUNS:-3}
db=engagement_bench_orders
url=postgres://postgres@127.0.0.1:5432/$db
token=bench-token-not-secret
digest=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
work=$(mktemp -d)
port=18092

modes=${MODES:-default}
(cd "$root" && cargo build --release --bin engagement -q)
if [ "$modes" != default ]; then (cd "$root" && cargo build --release --example otlp_sink -q); fi
psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $db with (force)" -c "create database $db"
psql -q -h 127.0.0.1 -U postgres -d "$db" -c "create table ceiling (id bigserial primary key, payload text not null)"

server=
sink=
scraper=
trap 'kill $server $sink $scraper 2>/dev/null || true; [ -n "${KEEP:-}" ] || psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $db with (force)"; rm -rf "$work"' EXIT
if [ "$modes" != default ]; then
  # At the lowest priority: a collector runs elsewhere in production, and this one must not
  # take the two cores from the server and PostgreSQL.
  nice -n 19 "$root/target/release/examples/otlp_sink" >"$work/sink.out" 2>"$work/sink.log" &
  sink=$!
  for _ in $(seq 1 100); do [ -s "$work/sink.out" ] && break; sleep 0.1; done
fi

# Starts the server in mode $1 (see MODES) and waits until it is ready.
start_server() {
  local extra=()
  case "$1" in
    default) ;;
    off) extra=(METRICS_ENABLED=false) ;;
    metrics) extra=(METRICS_ENABLED=true) ;;
    traces) extra=(METRICS_ENABLED=false "OTEL_EXPORTER_OTLP_ENDPOINT=$(head -1 "$work/sink.out")"
                   OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1) ;;
    on) extra=(METRICS_ENABLED=true "OTEL_EXPORTER_OTLP_ENDPOINT=$(head -1 "$work/sink.out")"
               OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1) ;;
    *) echo "unknown mode $1" >&2; exit 2 ;;
  esac
  env API_TOKENS="operator:bench:$digest" API_RATE_LIMIT_PER_SEC=0 DATABASE_URL="$url" RUST_LOG=warn \
    "${extra[@]}" "$root/target/release/engagement" serve --listen 127.0.0.1:$port >>"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
  if [ "$1" = on ] || [ "$1" = metrics ]; then
    # Prometheus's part: a scrape every 5 s.
    (while sleep 5; do curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$port/metrics" >/dev/null; done) &
    scraper=$!
  fi
}
stop_server() {
  kill $scraper 2>/dev/null || true; scraper=
  kill "$server"; wait "$server" 2>/dev/null || true; server=
}
start_server "${modes%% *}"
current="${modes%% *}"

# The clients, created through the API (16 at a time); their ids go to the wrk script.
python3 - "$port" "$token" "$clients" >"$work/ids.lua" <<'PY'
import json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
port, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def create(i):
    body = json.dumps({"query": "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
                       "variables": {"i": {"name": f"Client {i}", "email": f"client{i}@example.com",
                                           "preferredCategories": ["Denim"]}}}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", body,
                                 {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    answer = json.load(urllib.request.urlopen(req))
    return answer["data"]["createUser"]["id"]
with ThreadPoolExecutor(16) as pool:
    ids = list(pool.map(create, range(n)))
print("ids = {" + ",".join(f'"{i}"' for i in ids) + "}")
PY

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
  n, ok, failed, conflicts = 0, 0, 0, 0
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
  if status == 200 and not string.find(body, '"errors"', 1, true) then
    ok = ok + 1
  else
    failed = failed + 1
    if string.find(body, "CONFLICT", 1, true) then conflicts = conflicts + 1 end
  end
end
function done(summary, latency, requests)
  local o, f, c = 0, 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok"); f = f + t:get("failed"); c = c + t:get("conflicts")
  end
  io.write(string.format("answered %d ok %d failed %d conflicts %d rps %.1f p50_ms %.1f p99_ms %.1f\n",
    summary.requests, o, f, c, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
LUA

orders() { psql -qtA -h 127.0.0.1 -U postgres -d "$db" -c "select coalesce(sum(order_count), 0) from users"; }
ceiling() {
  echo "insert into ceiling (payload) values ('one row');" >"$work/insert.sql"
  pgbench -n -h 127.0.0.1 -U postgres -c 16 -j 2 -T "${duration%s}" -f "$work/insert.sql" "$db" 2>/dev/null \
    | awk '/^tps/ { print int($3) }'
}

# Warm up: caches, pools, JIT-free plans.
sed "s/RUN/warm/" "$work/place_order.lua" >"$work/run.lua"
wrk -t2 -c"$connections" -d5s -s "$work/run.lua" "http://127.0.0.1:$port/graphql" >/dev/null

: >"$work/results"
for run in $(seq 1 "$runs"); do
  tps=$(ceiling)
  order=$modes
  if [ $((run % 2)) = 0 ]; then order=$(echo "$modes" | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for mode in $order; do
    if [ "$mode" != "$current" ]; then
      stop_server; start_server "$mode"; current=$mode
      sed "s/RUN/warm$run$mode/" "$work/place_order.lua" >"$work/run.lua"
      wrk -t2 -c"$connections" -d3s -s "$work/run.lua" "http://127.0.0.1:$port/graphql" >/dev/null
    fi
    before=$(orders)
    sed "s/RUN/r$run$mode/" "$work/place_order.lua" >"$work/run.lua"
    if [ -n "${PERF_OUT:-}" ] && [ "$run" = 1 ]; then
      # Profile the server for 5 s of the first run (perf from linux-perf).
      (sleep 3; perf record -F 499 --call-graph dwarf,16384 -p "$server" -o "$PERF_OUT" -- sleep 5 >/dev/null 2>&1) &
    fi
    line=$(wrk -t2 -c"$connections" -d"$duration" --timeout 10s -s "$work/run.lua" "http://127.0.0.1:$port/graphql" | grep '^answered')
    sleep 1
    recorded=$(( $(orders) - before ))
    ok=$(echo "$line" | awk '{ print $4 }')
    rps=$(echo "$line" | awk '{ print $10 }')
    ratio=$(awk -v a="$rps" -v b="$tps" 'BEGIN { printf "%.3f", a / b }')
    echo "run $run ($mode): pgbench $tps tps; placeOrder $line; orders recorded $recorded; ratio $ratio"
    # wrk stops with up to one request per connection in flight: the server records those,
    # wrk never reads their answers.
    if [ "$recorded" -lt "$ok" ] || [ "$recorded" -gt $((ok + connections)) ]; then
      echo "run $run: $ok orders answered but $recorded recorded" >&2; exit 1
    fi
    echo "$mode $tps $rps $ratio $(echo "$line" | awk '{ print $14, $6, $8 }')" >>"$work/results"
  done
done
doubled=$(psql -qtA -h 127.0.0.1 -U postgres -d "$db" -c "select count(*) - count(distinct (aggregate_id, payload->'OrderPlaced'->>'orderId')) from events where event_type = 'OrderPlaced'")
echo "orders recorded twice: $doubled"
if [ "$doubled" != 0 ]; then exit 1; fi
for mode in $modes; do
  grep "^$mode " "$work/results" | sort -n -k4 | awk -v n="$runs" -v m="$mode" 'NR == int((n + 1) / 2) {
    printf "median of %d runs (%s): placeOrder %.0f req/s, pgbench %d tps, ratio %.3f, p99 %.1f ms, failed %d, conflicts %d\n", n, m, $3, $2, $4, $5, $6, $7 }'
done
if [ -n "$sink" ]; then tail -1 "$work/sink.log" || true; fi
if [ "$modes" = "off on" ]; then
  # Paired by run (same pgbench moment): the median of on/off throughput.
  paste <(grep '^off ' "$work/results" | awk '{ print $3 }') <(grep '^on ' "$work/results" | awk '{ print $3 }') \
    | awk '{ print $2 / $1 }' | sort -n | awk -v n="$runs" 'NR == int((n + 1) / 2) {
      printf "metrics and tracing on / off: %.3f of the throughput (median of %d paired runs)\n", $1, n }'
fi
