#!/usr/bin/env bash
# A page of 50 users with their emails, over HTTP, under 16 connections (wrk), against a
# release build on its own database seeded with USERS users and EMAILS_PER_USER emails each.
#
#   bash api/benches/graphql_page.sh        # DURATION=15s USERS=2000 EMAILS_PER_USER=3
#
# Needs PostgreSQL on 127.0.0.1:5432 (bash .ci/postgres-up) and wrk (apt-get install wrk).
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

API_TOKENS="viewer:bench:$digest" API_RATE_LIMIT_PER_SEC=0 DATABASE_URL="$url" RUST_LOG=warn \
  "$root/target/release/engagement" serve --listen 127.0.0.1:18090 >/tmp/bench-engagement.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; [ -n "${KEEP:-}" ] || psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $db with (force)"' EXIT
sleep 3

script=$(mktemp --suffix=.lua)
{
  echo 'wrk.method = "POST"'
  echo 'wrk.body = [[{"query":"{ users(first: 50) { nodes { id name email engagementScore emails(first: 10) { nodes { id subject status generatedAt } } } } }"}]]'
  echo 'wrk.headers["Content-Type"] = "application/json"'
  echo "wrk.headers[\"Authorization\"] = \"Bearer $token\""
} >"$script"
wrk -t2 -c16 -d5s -s "$script" http://127.0.0.1:18090/graphql >/dev/null   # warm up
wrk -t2 -c16 -d"$duration" --latency -s "$script" http://127.0.0.1:18090/graphql | tee /tmp/bench-wrk.txt
if grep -qE 'Non-2xx|Socket errors' /tmp/bench-wrk.txt; then echo "errors during the run" >&2; exit 1; fi
