#!/usr/bin/env bash
# `engagement import orders` against a plain COPY of the same rows, in the same run.
#
#   bash api/benches/import.sh        # CLIENTS=100000 ORDERS_PER_CLIENT=10 RUNS=3 LAYOUT=grouped
#
# 1. Generates (seeded) CLIENTS clients and CLIENTS x ORDERS_PER_CLIENT orders over three
#    years. LAYOUT=grouped writes each client's orders together (an export ordered by client,
#    as most are); LAYOUT=shuffled writes them in random order.
# 2. Per run, on a fresh database: imports the clients (reported, not the target), then times
#    `engagement import orders FILE`, which ends only once the users view shows every order;
#    /usr/bin/time gives its peak RSS. Then checks the users view: the order count of every
#    client, and the sum over all, equal the file's.
# 3. Times `\copy` of the same file into a bare table (text columns, no index) in that database.
# The medians over RUNS runs are reported, with the ratio import/COPY.
#
# Needs PostgreSQL on 127.0.0.1:5432 (bash .ci/postgres-up) and python3.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
clients=${CLIENTS:-100000}
per_client=${ORDERS_PER_CLIENT:-10}
runs=${RUNS:-3}
layout=${LAYOUT:-grouped}
db=engagement_bench_import
url=postgres://postgres@127.0.0.1:5432/$db
# WORK=DIR keeps the generated files there (and reuses them if present).
work=${WORK:-$(mktemp -d)}
trap '[ -n "${KEEP:-}" ] || psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $db with (force)"; [ -n "${WORK:-}" ] || rm -rf "$work"' EXIT

(cd "$root" && cargo build --release --bin engagement -q)
[ -s "$work/orders.csv" ] || python3 - "$work" "$clients" "$per_client" "$layout" <<'PY'
import random, sys, datetime
work, clients, per, layout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = random.Random(20261127)
cats = ["Denim", "Tops", "Dresses", "Shoes", "Accessories", "Outerwear", "Knitwear"]
start = datetime.date(2023, 11, 1)
with open(f"{work}/clients.csv", "w") as f:
    f.write("external_id,name,email,preferred_categories,created_at\n")
    for i in range(clients):
        f.write(f"R{i:07d},Client {i},client{i}@example.com,{rng.choice(cats)}|{rng.choice(cats)},{start.isoformat()}\n")
rows = []
for i in range(clients):
    day = rng.randrange(0, 400)
    for j in range(per):
        day += rng.randrange(5, 70)
        rows.append(f"R{i:07d},R{i:07d}-{j},{(start + datetime.timedelta(days=min(day, 1090))).isoformat()},{rng.randrange(1500, 30000) / 100:.2f},{rng.choice(cats)}\n")
if layout == "shuffled":
    rng.shuffle(rows)
with open(f"{work}/orders.csv", "w") as f:
    f.write("external_id,order_id,placed_at,amount,categories\n")
    f.writelines(rows)
PY
orders=$((clients * per_client))
echo "generated $clients clients and $orders orders ($layout), $(du -h "$work/orders.csv" | cut -f1)"

declare -a import_rates copy_rates ratios rss_mb
for run in $(seq 1 "$runs"); do
  psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $db with (force)"
  DATABASE_URL=$url RUST_LOG=warn "$root/target/release/engagement" migrate
  DATABASE_URL=$url RUST_LOG=warn "$root/target/release/engagement" import clients "$work/clients.csv" | tail -1
  start=$(date +%s.%N)
  DATABASE_URL=$url RUST_LOG=warn /usr/bin/time -f "%M" -o "$work/rss" \
    "$root/target/release/engagement" import orders "$work/orders.csv" | tail -1
  end=$(date +%s.%N)
  import_s=$(echo "$end - $start" | bc -l)
  check=$(psql -At -h 127.0.0.1 -U postgres -d "$db" -c \
    "select count(*) filter (where order_count <> $per_client), sum(order_count) from users")
  [ "$check" = "0|$orders" ] || { echo "users view disagrees with the file: $check"; exit 1; }
  psql -q -h 127.0.0.1 -U postgres -d "$db" -c \
    "create table bare (external_id text, order_id text, placed_at text, amount text, categories text)"
  start=$(date +%s.%N)
  psql -q -h 127.0.0.1 -U postgres -d "$db" -c "\\copy bare from '$work/orders.csv' csv header"
  end=$(date +%s.%N)
  copy_s=$(echo "$end - $start" | bc -l)
  import_rates+=("$(echo "$orders / $import_s" | bc -l)")
  copy_rates+=("$(echo "$orders / $copy_s" | bc -l)")
  ratios+=("$(echo "$copy_s / $import_s" | bc -l)")
  rss_mb+=("$(echo "$(cat "$work/rss") / 1024" | bc -l)")
  printf 'run %d: import %.1fs (%.0f orders/s, peak RSS %.0f MB); COPY %.1fs (%.0f rows/s)\n' \
    "$run" "$import_s" "${import_rates[-1]}" "${rss_mb[-1]}" "$copy_s" "${copy_rates[-1]}"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf 'median of %d: import %.0f orders/s (peak RSS %.0f MB), COPY %.0f rows/s, import/COPY %.3f\n' \
  "$runs" "$(median "${import_rates[@]}")" "$(median "${rss_mb[@]}")" "$(median "${copy_rates[@]}")" "$(median "${ratios[@]}")"
