#!/usr/bin/env bash
# Idle footprint of vaultd (issue 4 figures: idle RSS <= 30 MB, idle CPU effectively zero).
# Starts a release vaultd with a local vault, an HTTP listener and two jobs whose next runs are
# hours away (an etcd job and a files job), waits until it is ready, then samples its RSS and the CPU
# time it uses over BENCH_IDLE_SECS (default 60). Stops only the PID it started.
# Usage: bench/vaultd_idle.sh        Results: bench/results/vaultd-idle-<UTC>.md
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${BENCH_IDLE_SECS:-60}
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build -q --release -p vaultd -p vaultctl
BIN=$PWD/target/release
T=$(mktemp -d "${BENCH_TMP:-/tmp}/vault-bench-idle.XXXXXX")
PID=""
cleanup() { [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

"$BIN/vaultctl" keygen --out "$T/id" >/dev/null 2>&1
"$BIN/vaultctl" init --repo "$T/vault" --recipient "$(grep -o 'age1[0-9a-z]*' "$T/id")" --writer-key-out "$T/wk" >/dev/null
head -c 32 /dev/urandom | base64 > "$T/token"; chmod 600 "$T/token"
mkdir -p "$T/host/etc/app"; echo "a=1" > "$T/host/etc/app/a.conf"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$T/vaultd.toml" <<CONF
repo = "$T/vault"
writer_key = "$T/wk"
catalog = "$T/catalog.sqlite"
[http]
listen = "127.0.0.1:$PORT"
token_file = "$T/token"
[[job]]
name = "etcd"
kind = "etcd-v3"
schedule = "0 0 3 * * *"
[job.etcd]
endpoints = ["http://127.0.0.1:9"]
[[job]]
name = "files"
kind = "files"
schedule = "0 30 3 * * *"
paths = ["/etc/app"]
root = "$T/host"
CONF
chmod 600 "$T/vaultd.toml"
"$BIN/vaultd" run --config "$T/vaultd.toml" > "$T/vaultd.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
# Catch-up runs at start-up (none should be due for a fresh vault unless a slot passed) settle first.
sleep 5
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$PID/status"; }
c0=$(cpu); s0=$(date +%s.%N)
sleep "$IDLE"
c1=$(cpu); s1=$(date +%s.%N)
curl -sf -H "Authorization: Bearer $(cat "$T/token")" "http://127.0.0.1:$PORT/metrics" >/dev/null
rss=$(rss_kb); hwm=$(hwm_kb)
wall=$(python3 -c "print(round($s1 - $s0, 2))")
cpu_s=$(python3 -c "print(round(($c1 - $c0) / $ticks, 3))")
pct=$(python3 -c "print(round(100 * ($c1 - $c0) / $ticks / ($s1 - $s0), 3))")
threads=$(ls "/proc/$PID/task" | wc -l)
mkdir -p bench/results
out=bench/results/vaultd-idle-$(date -u +%Y%m%dT%H%M%SZ).md
{
  echo "# vaultd idle footprint"
  echo
  echo "* command: \`bench/vaultd_idle.sh\` (BENCH_IDLE_SECS=$IDLE), git $(git rev-parse --short HEAD)"
  echo "* load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); 2 shared cores"
  echo "* vaultd: release build, local vault, HTTP listener with a token, 2 jobs (etcd-v3 and files) scheduled hours ahead"
  echo
  echo "| figure | value | target |"
  echo "|---|---:|---|"
  echo "| RSS after ${IDLE}s idle | $((rss / 1024)) MB ($rss kB) | <= 30 MB |"
  echo "| peak RSS (VmHWM) | $((hwm / 1024)) MB | |"
  echo "| CPU time used while idle | ${cpu_s} s over ${wall} s (${pct}% of one core) | effectively zero |"
  echo "| threads | $threads | |"
} | tee "$out"
