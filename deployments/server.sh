#!/usr/bin/env bash
# `make server`: a local Prefect server on loopback, the deidflow deployments, and a process worker.
# Ctrl-C stops both (the worker gets SIGINT: `prefect worker` ignores SIGTERM; the server SIGTERM).
#
# Environment (all optional):
#   DEIDFLOW_SERVER_PORT      API/UI port (default 4200)          -> UI at http://127.0.0.1:PORT
#   DEIDFLOW_WATCH_DIR        folder the nightly `incremental` deployment reads (default ./watch/incoming)
#   DEIDFLOW_OUTPUT_DIR       where it writes (default ./watch/deidentified)
#   DEIDFLOW_PROVENANCE_DIR   its provenance, for `retry-failed` (default ./watch/deidentified-provenance)
#   DEIDFLOW_KEY              the pseudonymization key the worker's runs use (else a Secret block named in
#                             the run's key_secret, or the key generated in the provenance directory)
set -euo pipefail
set -m  # background jobs get their own process group and keep SIGINT (needed to stop the worker)
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BIN:-$ROOT/.venv/bin}
PORT=${DEIDFLOW_SERVER_PORT:-4200}
export PREFECT_HOME=${PREFECT_HOME:-$ROOT/.prefect}
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_API_URL=http://127.0.0.1:$PORT/api
export OMP_THREAD_LIMIT=${OMP_THREAD_LIMIT:-1}
export DEIDFLOW_PROJECT_DIR=$ROOT
export DEIDFLOW_WATCH_DIR=${DEIDFLOW_WATCH_DIR:-$ROOT/watch/incoming}
export DEIDFLOW_OUTPUT_DIR=${DEIDFLOW_OUTPUT_DIR:-$ROOT/watch/deidentified}
export DEIDFLOW_PROVENANCE_DIR=${DEIDFLOW_PROVENANCE_DIR:-$ROOT/watch/deidentified-provenance}
mkdir -p "$PREFECT_HOME" "$DEIDFLOW_WATCH_DIR"

# Run a command with SIGINT at its default even if this script was started with SIGINT ignored (as a
# background job, by nohup...): `prefect worker` stops on SIGINT only if it can receive it.
with_sigint() {
  exec "$BIN/python" -c \
    'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])' "$@"
}

server="" worker=""
# Stop one process with a signal; if it is still there after $3 seconds, send $4 (then wait for it).
stop_one() {
  local pid=$1 first=$2 grace=$3 then=$4
  [ -n "$pid" ] || return 0
  kill "-$first" "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 "$grace"); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -0 "$pid" 2>/dev/null && kill "-$then" "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}
stop() {
  trap - EXIT INT TERM
  stop_one "$worker" INT 30 INT   # a second SIGINT makes `prefect worker` kill itself
  stop_one "$server" TERM 20 KILL
}
trap stop EXIT
trap 'exit 130' INT TERM

with_sigint "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" >"$PREFECT_HOME/server.log" 2>&1 &
server=$!
echo "prefect server starting on http://127.0.0.1:$PORT (log: $PREFECT_HOME/server.log)"
for _ in $(seq 1 180); do
  if "$BIN/python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
       "$PREFECT_API_URL/health" 2>/dev/null; then break; fi
  kill -0 "$server" 2>/dev/null || { echo "prefect server exited; see $PREFECT_HOME/server.log" >&2; exit 1; }
  sleep 1
done

"$BIN/prefect" work-pool create deidflow-pool --type process --overwrite >/dev/null
"$BIN/prefect" --no-prompt deploy --all --prefect-file deployments/prefect.yaml
with_sigint "$BIN/prefect" worker start --pool deidflow-pool &
worker=$!
echo "UI: http://127.0.0.1:$PORT  (deployments: deidentify-cohort/deidentify-cohort, deidentify-cohort/incremental,"
echo "    retry-failed/retry-failed)"
echo "Ctrl-C to stop the worker and the server."
wait "$worker"
