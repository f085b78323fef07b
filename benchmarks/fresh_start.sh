#!/usr/bin/env bash
# A fresh clone's first answer: `git clone` of this repository's HEAD into a temporary folder, then `wsense serve` there
# with an empty HOME (no runs/, no caches, no sentence-encoder copies), timed to the first answer of /api/search. The
# installed packages are this environment's (the time counts after the install); the data set is the one
# WSENSE_DATA_DIR (or the config's data.dir) names. Then the server's resident memory and whether it loaded libtorch.
#     bash benchmarks/fresh_start.sh [PORT]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
port="${1:-8799}"
work="$(mktemp -d /tmp/wsense-fresh-XXXXXX)"
trap 'kill "${server:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
git clone -q "$repo" "$work/wsense"
mkdir "$work/home"
data="${WSENSE_DATA_DIR:-$repo/../shared/data/with_sense}"
cd "$work/wsense"
start=$(date +%s.%N)
env -u WSENSE_TABLE_CACHE HOME="$work/home" XDG_CACHE_HOME="$work/home/.cache" PYTHONPATH="$work/wsense" \
  WSENSE_DATA_DIR="$data" HF_HUB_OFFLINE=1 python -m wsense.cli serve --port "$port" >"$work/serve.log" 2>&1 &
server=$!
until curl -sf "http://127.0.0.1:$port/api/search?q=a+dog+runs+on+the+grass&k=5" >"$work/answer.json"; do
  kill -0 "$server" 2>/dev/null || { echo "wsense serve stopped:"; tail -5 "$work/serve.log"; exit 1; }
  sleep 0.5
done
echo "first answer $(echo "$(date +%s.%N) - $start" | bc) s after starting wsense serve in a fresh clone"
head -c 200 "$work/answer.json"; echo
# What the server holds once it answers: the first start made the serving files and the index in a child process.
rss=$(awk '/^VmRSS/ {print int($2 / 1024)}' "/proc/$server/status")
if grep -q libtorch "/proc/$server/maps"; then torch="loaded"; else torch="not loaded"; fi
echo "server: ${rss} MB resident, libtorch ${torch}"
