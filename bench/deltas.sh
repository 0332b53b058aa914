#!/usr/bin/env bash
# Continuous etcd capture (issue 10 figures). See bench/README.md.
#
#   bench/deltas.sh
#
# A real etcd 3.4 loaded with BENCH_KEYS Kubernetes-like objects (~400 MB at 100000), a release
# vaultd with one etcd-v3 job capturing deltas every BENCH_FLUSH seconds into a local vault, a base
# snapshot, then a steady write load (gen_etcd_data.py stream: BENCH_RATE puts/s of 2-4 KB objects,
# overwrites, 5% deletes, 5% two-put transactions) for BENCH_SECONDS. Measured:
#   - recovery point: vaultd's vault_etcd_deltas_recovery_point_seconds and
#     vault_etcd_deltas_newest_event_age_seconds, scraped every second (max, median, p99);
#   - storage: the delta segments' stored bytes for the load, scaled to an hour, against full
#     snapshots (a full taken after the load: its new stored bytes; 4 per hour) and against
#     gardener's plain JSON deltas of the same events (`etcdctl watch --rev` output rewritten in
#     gardener's event layout; raw and gzip);
#   - vaultd's CPU and RSS over the load (/proc), the watcher being its only work;
#   - point-in-time restore to the last revision (base + the load's deltas replayed) against a plain
#     `etcd restore` of the base.
# Traffic stays on 127.0.0.1. Environment: BENCH_KEYS=100000 BENCH_RATE=500 BENCH_SECONDS=600
#   BENCH_FLUSH=20 BENCH_OUT=bench/results BENCH_TMP=/tmp BENCH_KEEP=1 BENCH_NO_BUILD=1
#   GEN_ETCD_DATA=/work/shared/tools/gen_etcd_data.py
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KEYS=${BENCH_KEYS:-100000}
RATE=${BENCH_RATE:-500}
SECONDS_LOAD=${BENCH_SECONDS:-600}
FLUSH=${BENCH_FLUSH:-20}
OUTDIR=${BENCH_OUT:-$ROOT/bench/results}
GEN=${GEN_ETCD_DATA:-/work/shared/tools/gen_etcd_data.py}
if [[ ! -f $GEN && -f $ROOT/../shared/tools/gen_etcd_data.py ]]; then GEN=$ROOT/../shared/tools/gen_etcd_data.py; fi

. "$ROOT/bench/lib.sh"

for t in python3 curl etcd etcdctl; do need "$t" || die "$t is not installed (apt-get install etcd-server etcd-client)"; done
[[ -x /usr/bin/time ]] || die "GNU time is not installed (apt-get install time)"
[[ -f $GEN ]] || die "data generator $GEN not found (set GEN_ETCD_DATA)"
if [[ -z ${BENCH_NO_BUILD:-} ]]; then
    log "building vaultctl and vaultd (release)"
    (cd "$ROOT" && cargo build --release -q -p vaultctl -p vaultd)
fi
VAULTCTL=$ROOT/target/release/vaultctl
VAULTD=$ROOT/target/release/vaultd
for b in "$VAULTCTL" "$VAULTD"; do [[ -x $b ]] || die "$b missing (run without BENCH_NO_BUILD)"; done

T=$(mktemp -d "${BENCH_TMP:-/tmp}/vault-bench-deltas.XXXXXX")
mkdir -p "$T/out"
ETCD_PID="" VAULTD_PID="" LOAD_PID="" STREAM_PID="" SAMPLER_PID=""
cleanup() {
    stop_pid "$SAMPLER_PID"
    stop_pid "$STREAM_PID"
    stop_pid "$VAULTD_PID"
    stop_pid "$LOAD_PID"
    stop_pid "$ETCD_PID"
    if [[ -n ${BENCH_KEEP:-} ]]; then log "kept work directory $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

MEASURE="$T/measure.tsv" # label wall_s user_s sys_s maxrss_kb exit
FACTS="$T/facts.tsv"
: >"$MEASURE"
: >"$FACTS"

revision() { ETCDCTL_API=3 etcdctl --endpoints "$EP" endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["header"]["revision"])'; }
api() { curl -sf -H "Authorization: Bearer $(cat "$T/token")" "http://127.0.0.1:$PORT$1" "${@:2}"; }
# run_job: run the etcd job through the API and wait for its snapshot; prints the run record.
run_job() {
    local url state i
    url=$(api /v1/jobs/etcd/run -X POST | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')
    for ((i = 0; i < 1200; i++)); do
        state=$(api "$url" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
        [[ $state == running ]] || break
        sleep 0.5
    done
    [[ $state == success ]] || die "the etcd job's run ended $state: $(api "$url")"
    api "$url"
}

fact mode deltas
host_facts
build_facts
start_load_sampler

start_etcd "$T/etcd" "$T/etcd.log"
PPORT=$PEER_PORT
log "etcd on $EP"
fact etcd_version "$(etcd --version | head -n 1 | sed 's/.*: //')"
fact keys "$KEYS"
fact rate "$RATE"
fact load_seconds "$SECONDS_LOAD"
fact deltas_every_secs "$FLUSH"
log "loading $KEYS keys"
python3 "$GEN" load --endpoint "$EP" --count "$KEYS" >"$T/load.json"

"$VAULTCTL" keygen --out "$T/identity" >"$T/recipient" 2>/dev/null
"$VAULTCTL" init --repo "$T/vault" --recipient "$(cat "$T/recipient")" --writer-key-out "$T/wk" >/dev/null
head -c 32 /dev/urandom | base64 >"$T/token"
chmod 600 "$T/token"
PORT=$(free_port)
cat >"$T/vaultd.toml" <<CONF
repo = "$T/vault"
writer_key = "$T/wk"
catalog = "$T/catalog.sqlite"
host = "bench"
[http]
listen = "127.0.0.1:$PORT"
token_file = "$T/token"
[[job]]
name = "etcd"
kind = "etcd-v3"
schedule = "0 0 3 1 1 *"
timeout_secs = 3600
deltas_every_secs = $FLUSH
[job.etcd]
endpoints = ["$EP"]
CONF
chmod 600 "$T/vaultd.toml"
"$VAULTD" run --config "$T/vaultd.toml" >"$T/vaultd.log" 2>&1 &
VAULTD_PID=$!
for ((i = 0; i < 300; i++)); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
fact vaultd_rss_idle_kb "$(awk '/^VmRSS/ {print $2}' "/proc/$VAULTD_PID/status")"
log "base snapshot"
run_job >"$T/out/base_run.json"
BASE_ID=$(json_field "$T/out/base_run.json" snapshot)
fact base_snapshot "$BASE_ID"
fact db_bytes_at_base "$(json_field "$T/out/base_run.json" bytes_read)"
fact base_stored_bytes "$(json_field "$T/out/base_run.json" bytes_stored)"
sleep "$((FLUSH + 5))" # the watcher is on the new base's chain
START_REV=$(revision)
fact start_revision "$START_REV"
# What the base capture (a full snapshot in the same process) left: its high-water mark, and what
# the process still holds when the watcher starts its work.
fact vaultd_rss_after_base_kb "$(awk '/^VmRSS/ {print $2}' "/proc/$VAULTD_PID/status")"
fact vaultd_peak_rss_base_kb "$(awk '/^VmHWM/ {print $2}' "/proc/$VAULTD_PID/status")"

log "write load: $RATE ops/s for $SECONDS_LOAD s"
python3 "$GEN" stream --endpoint "$EP" --count "$KEYS" --rate "$RATE" --seconds "$SECONDS_LOAD" >"$T/stream.json" 2>"$T/stream.err" &
STREAM_PID=$!
ticks=$(getconf CLK_TCK)
# Sampler: one line a second: unix time, recovery point s, newest event age s, lag revisions,
# vaultd CPU ticks, vaultd RSS kB.
(while :; do
    m=$(api /metrics 2>/dev/null || true)
    rp=$(awk '/^vault_etcd_deltas_recovery_point_seconds[{ ]/ {print $NF; exit}' <<<"$m")
    age=$(awk '/^vault_etcd_deltas_newest_event_age_seconds[{ ]/ {print $NF; exit}' <<<"$m")
    lag=$(awk '/^vault_etcd_deltas_lag_revisions[{ ]/ {print $NF; exit}' <<<"$m")
    cpu=$(awk '{print $14 + $15}' "/proc/$VAULTD_PID/stat")
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$VAULTD_PID/status")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date +%s.%N)" "${rp:-nan}" "${age:-nan}" "${lag:-nan}" "$cpu" "$rss"
    sleep 1
done) >"$T/samples.tsv" &
SAMPLER_PID=$!
wait "$STREAM_PID" || die "the load generator failed: $(tail -n 5 "$T/stream.err")"
STREAM_PID=""
END_REV=$(revision)
fact end_revision "$END_REV"
fact stream_report "$(tr -d '\n' <"$T/stream.json")"
log "load done at revision $END_REV; waiting for the deltas to cover it"
for ((i = 0; i < 240; i++)); do
    "$VAULTCTL" --repo "$T/vault" --identity "$T/identity" --catalog "$T/cat-probe.sqlite" --json \
        etcd restore --revision "$END_REV" --dry-run --data-dir "$T/probe" --name bench \
        --initial-cluster "bench=http://127.0.0.1:$PPORT" --initial-cluster-token bench \
        --initial-advertise-peer-urls "http://127.0.0.1:$PPORT" >"$T/out/plan.json" 2>/dev/null && break
    sleep 1
done
((i < 240)) || die "the deltas did not reach revision $END_REV within 4 minutes"
stop_pid "$SAMPLER_PID"
SAMPLER_PID=""
fact vaultd_peak_rss_kb "$(awk '/^VmHWM/ {print $2}' "/proc/$VAULTD_PID/status")"
api /metrics >"$T/out/metrics.txt"

log "a full snapshot after the load (what a scheduled full would store)"
run_job >"$T/out/full_run.json"
fact full_bytes_read "$(json_field "$T/out/full_run.json" bytes_read)"
fact full_new_stored_bytes "$(json_field "$T/out/full_run.json" bytes_stored)"
stop_pid "$VAULTD_PID"
VAULTD_PID=""

# The segments' sizes, from their manifests.
"$VAULTCTL" --repo "$T/vault" --writer-key "$T/wk" --catalog "$T/cat-list.sqlite" --json snapshots --deltas >"$T/out/snapshots.json"

log "gardener-style JSON deltas of the same events (etcdctl watch --rev $((START_REV + 1)))"
timeout 300 bash -c "ETCDCTL_API=3 etcdctl --endpoints '$EP' watch --rev $((START_REV + 1)) --prefix '' -w json" >"$T/watch.json" 2>/dev/null &
WATCH_PID=$!
for ((i = 0; i < 300; i++)); do
    last=$(tail -c 4096 "$T/watch.json" 2>/dev/null | grep -o '"mod_revision":[0-9]*' | tail -n 1 | cut -d: -f2 || true)
    [[ -n $last && $last -ge $END_REV ]] && break
    sleep 1
done
kill "$WATCH_PID" 2>/dev/null || true
wait "$WATCH_PID" 2>/dev/null || true
python3 - "$T/watch.json" "$END_REV" >"$T/out/gardener.json" <<'EOF'
# Rewrite etcdctl's watch responses as gardener etcd-backup-restore stores deltas: a JSON array of
# {"etcdEvent": <clientv3.Event>, "time": <RFC 3339>} (the event marshalled by encoding/json as
# etcdctl does), with the sha256 of the data appended; measure raw and gzip sizes.
import gzip, json, sys
path, end = sys.argv[1], int(sys.argv[2])
dec = json.JSONDecoder()
text = open(path).read()
pos, events = 0, []
while pos < len(text):
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text):
        break
    try:
        obj, pos = dec.raw_decode(text, pos)
    except json.JSONDecodeError:
        break
    for ev in obj.get("Events") or []:
        if ev["kv"].get("mod_revision", 0) <= end:
            events.append({"etcdEvent": ev, "time": "2026-11-30T12:00:00.123456789Z"})
data = json.dumps(events, separators=(",", ":")).encode()
raw = len(data) + 32
gz = len(gzip.compress(data, 6)) + 32
print(json.dumps({"events": len(events), "json_bytes": raw, "json_gzip_bytes": gz}))
EOF

log "point-in-time restore to revision $END_REV against a plain restore of the base"
RESTORE_ARGS=(--name bench --initial-cluster "bench=http://127.0.0.1:$PPORT" --initial-cluster-token bench --initial-advertise-peer-urls "http://127.0.0.1:$PPORT")
stop_pid "$ETCD_PID" # the restores need the disk and CPU; etcd is not used any more
ETCD_PID=""
measure restore_plain 0 "$VAULTCTL" --repo "$T/vault" --identity "$T/identity" --catalog "$T/cat-r1.sqlite" --json \
    etcd restore "$BASE_ID" --data-dir "$T/restore-plain" "${RESTORE_ARGS[@]}"
rm -rf "$T/restore-plain"
measure restore_point_in_time 0 "$VAULTCTL" --repo "$T/vault" --identity "$T/identity" --catalog "$T/cat-r2.sqlite" --json \
    etcd restore --revision "$END_REV" --data-dir "$T/restore-pitr" "${RESTORE_ARGS[@]}"
rm -rf "$T/restore-pitr"

mkdir -p "$OUTDIR"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$OUTDIR/deltas-$STAMP"
python3 - "$T" "$OUT" "$ticks" <<'EOF'
import json, statistics, sys
T, out, ticks = sys.argv[1], sys.argv[2], int(sys.argv[3])
f = dict(l.rstrip("\n").split("\t", 1) for l in open(f"{T}/facts.tsv") if l.strip())
m = {}
for l in open(f"{T}/measure.tsv"):
    r = l.rstrip("\n").split("\t")
    m[r[0]] = {"wall_s": float(r[1]), "user_s": float(r[2]), "sys_s": float(r[3]), "maxrss_mib": int(r[4]) / 1024}
rows = [l.rstrip("\n").split("\t") for l in open(f"{T}/samples.tsv") if l.strip()]
def col(i):
    return [float(r[i]) for r in rows if r[i] not in ("nan", "")]
rp, age, lag = col(1), col(2), col(3)
t0, t1 = float(rows[0][0]), float(rows[-1][0])
cpu_pct = 100 * (float(rows[-1][4]) - float(rows[0][4])) / ticks / (t1 - t0)
rss = [int(r[5]) / 1024 for r in rows]
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")
snaps = json.load(open(f"{T}/out/snapshots.json"))
segs = [s for s in snaps if s.get("kind") == "etcd-v3-delta"]
def stored(s):
    return int(s["stored_bytes"])
def streamed(s):
    return int(s["size"])
seg_stored = sum(stored(s) for s in segs)
seg_stream = sum(streamed(s) for s in segs)
load_s = float(f["load_seconds"])
per_hour = lambda b: b * 3600 / load_s
g = json.load(open(f"{T}/out/gardener.json"))
full_new = int(f["full_new_stored_bytes"])
plan = json.load(open(f"{T}/out/plan.json"))
MiB = 2**20
lines = ["# Continuous etcd capture benchmark", "", "| fact | value |", "|---|---|"]
lines += [f"| {k} | {v} |" for k, v in f.items()]
lines += ["", "## Recovery point (scraped every second during the load)", "",
          "| metric | median s | p99 s | max s | goal |", "|---|---|---|---|---|",
          f"| vault_etcd_deltas_recovery_point_seconds | {statistics.median(rp):.1f} | {pct(rp, 99):.1f} | {max(rp):.1f} | <= {2 * int(f['deltas_every_secs'])} |",
          f"| vault_etcd_deltas_newest_event_age_seconds | {statistics.median(age):.1f} | {pct(age, 99):.1f} | {max(age):.1f} | <= {2 * int(f['deltas_every_secs'])} |",
          f"| vault_etcd_deltas_lag_revisions | {statistics.median(lag):.0f} | {pct(lag, 99):.0f} | {max(lag):.0f} | |"]
lines += ["", "## Storage per hour of the load", "",
          "| | bytes in the run | per hour | vs deltas |", "|---|---|---|---|",
          f"| vault delta segments (stored: deduplicated, compressed, encrypted) | {seg_stored / MiB:.1f} MiB ({len(segs)} segments, {seg_stream / MiB:.1f} MiB of events stream) | {per_hour(seg_stored) / MiB:.1f} MiB | 1.00x |",
          f"| 4 full snapshots per hour (new stored bytes of one full taken after the load, x4: a lower bound, a full 15 min apart changes more) | {full_new / MiB:.1f} MiB | >= {4 * full_new / MiB:.1f} MiB | >= {4 * full_new / max(per_hour(seg_stored), 1):.2f}x |",
          f"| gardener plain JSON deltas ({g['events']} events) | {g['json_bytes'] / MiB:.1f} MiB | {per_hour(g['json_bytes']) / MiB:.1f} MiB | {g['json_bytes'] / max(seg_stored, 1):.2f}x |",
          f"| gardener JSON deltas, gzip | {g['json_gzip_bytes'] / MiB:.1f} MiB | {per_hour(g['json_gzip_bytes']) / MiB:.1f} MiB | {g['json_gzip_bytes'] / max(seg_stored, 1):.2f}x |"]
lines += ["", "## vaultd (the watcher its only work) during the load", "",
          f"- CPU: {cpu_pct:.1f}% of one core on average (goal <= 10%)",
          f"- RSS: median {statistics.median(rss):.0f} MiB, max sampled {max(rss):.0f} MiB, peak (VmHWM) {int(f['vaultd_peak_rss_kb']) / 1024:.0f} MiB (goal <= 64 MB)",
          f"- before the load: idle {int(f['vaultd_rss_idle_kb']) / 1024:.0f} MiB; the base snapshot's capture peaked at {int(f['vaultd_peak_rss_base_kb']) / 1024:.0f} MiB and left {int(f['vaultd_rss_after_base_kb']) / 1024:.0f} MiB"]
pl, pt = m["restore_plain"], m["restore_point_in_time"]
lines += ["", "## Restore", "",
          "| | wall s | user s | peak RSS MiB | vs plain |", "|---|---|---|---|---|",
          f"| plain `etcd restore` of the base | {pl['wall_s']:.1f} | {pl['user_s']} | {pl['maxrss_mib']:.0f} | 1.00x |",
          f"| `etcd restore --revision {f['end_revision']}` (base + {len(plan['segments'])} segments, {plan['events']} events replayed) | {pt['wall_s']:.1f} | {pt['user_s']} | {pt['maxrss_mib']:.0f} | {pt['wall_s'] / pl['wall_s']:.2f}x |"]
json.dump({"facts": f, "measurements": m, "samples": len(rows)}, open(out + ".json", "w"), indent=2)
open(out + ".md", "w").write("\n".join(lines) + "\n")
print(out + ".md")
EOF
cat "$OUT.md"
