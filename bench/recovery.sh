#!/usr/bin/env bash
# Recovery-time benchmark (issue 8): a 3-member cluster brought back from a snapshot of the
# ~400 MB database, with vault's flows (`etcd recover` on the first host, `etcd join` on the
# other two) beside the same steps scripted by hand with etcdctl in one run (snapshot restore,
# start, member add, start, member add, start). Wall time from the first command to a healthy
# 3-member cluster. See bench/README.md.
#
#   bench/recovery.sh
#
# Environment:
#   BENCH_KEYS=100000      keys loaded by gen_etcd_data.py (~400 MB database; 5000 = quick mode)
#   BENCH_REPS=3           repetitions of each side, alternating (medians are reported)
#   BENCH_OUT=bench/results, BENCH_TMP=/tmp, BENCH_KEEP=1, BENCH_NO_BUILD=1, GEN_ETCD_DATA (as etcd_v3.sh)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KEYS=${BENCH_KEYS:-100000}
REPS=${BENCH_REPS:-3}
OUTDIR=${BENCH_OUT:-$ROOT/bench/results}
GEN=${GEN_ETCD_DATA:-/work/shared/tools/gen_etcd_data.py}
if [[ ! -f $GEN && -f $ROOT/../shared/tools/gen_etcd_data.py ]]; then GEN=$ROOT/../shared/tools/gen_etcd_data.py; fi

. "$ROOT/bench/lib.sh"

for t in etcd etcdctl python3 curl; do need "$t" || die "$t is not installed (see bench/README.md)"; done
[[ -f $GEN ]] || die "data generator $GEN not found (set GEN_ETCD_DATA)"
if [[ -z ${BENCH_NO_BUILD:-} ]]; then
    log "building vaultctl (release)"
    (cd "$ROOT" && cargo build --release -q -p vaultctl)
fi
VAULTCTL=$ROOT/target/release/vaultctl
[[ -x $VAULTCTL ]] || die "$VAULTCTL missing"

T=$(mktemp -d "${BENCH_TMP:-/tmp}/vault-bench-recovery.XXXXXX")
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUTDIR"
FACTS=$T/facts.tsv
TIMES=$T/times.tsv
: >"$FACTS"
: >"$TIMES"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    for f in "$T"/*/host*/etcd.pid "$T"/hand*/m*.pid; do
        [[ -f $f ]] && stop_pid "$(cat "$f")"
    done
    [[ -n ${LOAD_PID:-} ]] && stop_pid "$LOAD_PID"
    if [[ -z ${BENCH_KEEP:-} ]]; then rm -rf "$T"; else log "kept $T"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
healthy() { curl -fsS --max-time 1 "$1/health" 2>/dev/null | grep -q '"health":"true"'; }
wait_healthy() { # URL SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        healthy "$1" && return 0
        sleep 0.1
    done
    return 1
}
now() { date +%s%N; }
secs() { awk -v ns="$(($2 - $1))" 'BEGIN{printf "%.3f", ns/1e9}'; }
export ETCDCTL_API=3

fact keys "$KEYS"
fact reps "$REPS"
host_facts
fact etcd_version "$(etcd --version | head -n 1 | sed 's/.*: //')"
build_facts
start_load_sampler

# ---------------------------------------------------------------------------------------------
# the cluster's data: one member loaded with gen_etcd_data.py, saved by etcdctl and by vault
SRC=http://127.0.0.1:$(free_port)
SRCPEER=http://127.0.0.1:$(free_port)
# the cluster's first member m0 (its URLs are host0's in every run below; the others joined later)
etcd --name m0 --data-dir "$T/src" --listen-client-urls "$SRC" --advertise-client-urls "$SRC" \
    --listen-peer-urls "$SRCPEER" --initial-advertise-peer-urls "$SRCPEER" --initial-cluster "m0=$SRCPEER" \
    --quota-backend-bytes $((8 << 30)) --logger zap --log-level warn >"$T/src.log" 2>&1 &
PIDS+=($!)
wait_healthy "$SRC" 30 || die "the source etcd did not become healthy"
log "loading $KEYS keys"
python3 "$GEN" load --endpoint "$SRC" --count "$KEYS" >"$T/load.json"
fact db_size "$(etcdctl --endpoints "$SRC" endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["dbSize"])')"
etcdctl --endpoints "$SRC" snapshot save "$T/snap.db" >/dev/null 2>&1
"$VAULTCTL" keygen --out "$T/identity" >"$T/recipient" 2>/dev/null
V=(--repo "$T/vault" --catalog "$T/catalog.sqlite")
"$VAULTCTL" "${V[@]}" init --recipient "$(cat "$T/recipient")" --writer-key-out "$T/writer.key" >/dev/null
ID=$("$VAULTCTL" "${V[@]}" --writer-key "$T/writer.key" backup etcd --endpoints "$SRC" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
key_count() { etcdctl --endpoints "$1" get "" --prefix --keys-only --limit 1 -w json | python3 -c 'import json,sys; print(json.load(sys.stdin).get("count", 0))'; }
KEYCOUNT=$(key_count "$SRC")
stop_pid "${PIDS[0]}"
PIDS=()
fact snapshot_bytes "$(stat -c %s "$T/snap.db")"
fact key_count "$KEYCOUNT"

# ---------------------------------------------------------------------------------------------
# the operator's own start/stop commands for a host tree (what systemd does on a real host)
cat >"$T/member.sh" <<'SH'
#!/bin/bash
# member.sh start|stop|status HOSTDIR: etcd configured by HOSTDIR/etc/etcd/etcd.conf, data under HOSTDIR
set -eu
h=$2
case $1 in
start)
    [[ -f $h/etcd.pid ]] && kill -0 "$(cat "$h/etcd.pid")" 2>/dev/null && exit 0
    (set -a; . "$h/etc/etcd/etcd.conf"; ETCD_DATA_DIR=$h$ETCD_DATA_DIR exec etcd --quota-backend-bytes $((8 << 30)) --logger zap --log-level warn) >>"$h/etcd.log" 2>&1 &
    echo $! >"$h/etcd.pid" ;;
stop)
    [[ -f $h/etcd.pid ]] || exit 0
    pid=$(cat "$h/etcd.pid"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$h/etcd.pid" ;;
status) [[ -f $h/etcd.pid ]] && kill -0 "$(cat "$h/etcd.pid")" 2>/dev/null ;;
esac
SH
chmod +x "$T/member.sh"

# hosts DIR: three host trees with etcd.conf as OKD writes it; sets CLIENT[] PEER[]
hosts() {
    local dir=$1 i initial=""
    CLIENT=() PEER=()
    CLIENT[0]=$SRC
    PEER[0]=$SRCPEER
    for i in 1 2; do
        CLIENT[i]=http://127.0.0.1:$(free_port)
        PEER[i]=http://127.0.0.1:$(free_port)
    done
    for i in 0 1 2; do initial+="${initial:+,}m$i=${PEER[i]}"; done
    for i in 0 1 2; do
        mkdir -p "$dir/host$i/etc/etcd" "$dir/host$i/var/lib"
        cat >"$dir/host$i/etc/etcd/etcd.conf" <<CONF
ETCD_NAME=m$i
ETCD_DATA_DIR=/var/lib/etcd
ETCD_LISTEN_CLIENT_URLS=${CLIENT[i]}
ETCD_ADVERTISE_CLIENT_URLS=${CLIENT[i]}
ETCD_LISTEN_PEER_URLS=${PEER[i]}
ETCD_INITIAL_ADVERTISE_PEER_URLS=${PEER[i]}
ETCD_INITIAL_CLUSTER=$initial
ETCD_INITIAL_CLUSTER_TOKEN=bench
ETCD_INITIAL_CLUSTER_STATE=new
CONF
    done
}

stop_hosts() { # DIR
    local i
    for i in 0 1 2; do "$T/member.sh" stop "$1/host$i"; done
}

check_cluster() { # DIR: 3 started members, every key back
    local n count
    n=$(etcdctl --endpoints "${CLIENT[0]}" member list | grep -c ', started, ')
    [[ $n == 3 ]] || die "$1: $n started members, want 3"
    count=$(key_count "${CLIENT[2]}")
    [[ $count == "$KEYCOUNT" ]] || die "$1: $count keys, want $KEYCOUNT"
}

# ---------------------------------------------------------------------------------------------
# by hand: the runbook's v3 path as one script, etcdctl only, no checks beyond health
by_hand() { # DIR
    local dir=$1 i cluster
    hosts "$dir"
    local t0
    t0=$(now)
    etcdctl snapshot restore "$T/snap.db" --name m0 --initial-cluster "m0=${PEER[0]}" \
        --initial-cluster-token "hand-$rep" --initial-advertise-peer-urls "${PEER[0]}" \
        --data-dir "$dir/host0/var/lib/etcd" >/dev/null 2>&1
    "$T/member.sh" start "$dir/host0"
    wait_healthy "${CLIENT[0]}" 300 || die "by hand: m0 not healthy"
    for i in 1 2; do
        # etcd refuses an add for ~5 s after the previous member joined ("unhealthy cluster"):
        # retry; an add that timed out on the client may still have been made, so the member list
        # is what counts
        until etcdctl --endpoints "${CLIENT[0]}" --command-timeout=500ms member add "m$i" --peer-urls="${PEER[i]}" >/dev/null 2>&1 ||
            etcdctl --endpoints "${CLIENT[0]}" member list | grep -q "${PEER[i]}"; do sleep 0.2; done
        cluster=$(etcdctl --endpoints "${CLIENT[0]}" member list |
            awk -F', ' -v n="m$i" '{printf "%s%s=%s", (NR > 1 ? "," : ""), ($3 == "" ? n : $3), $4}')
        sed -i -e "s|^ETCD_INITIAL_CLUSTER=.*|ETCD_INITIAL_CLUSTER=$cluster|" \
            -e 's|^ETCD_INITIAL_CLUSTER_STATE=.*|ETCD_INITIAL_CLUSTER_STATE=existing|' "$dir/host$i/etc/etcd/etcd.conf"
        "$T/member.sh" start "$dir/host$i"
        wait_healthy "${CLIENT[i]}" 300 || die "by hand: m$i not healthy"
    done
    local t1
    t1=$(now)
    printf 'by_hand\t%s\t%s\n' "$rep" "$(secs "$t0" "$t1")" >>"$TIMES"
    check_cluster "by hand"
    stop_hosts "$dir"
}

# vault: `etcd recover` on host0, `etcd join` on host1 and host2 (3 commands typed)
with_vault() { # DIR
    local dir=$1 i
    hosts "$dir"
    local -a common
    common=(--start-command "$T/member.sh start HOST" --stop-command "$T/member.sh stop HOST"
        --status-command "$T/member.sh status HOST" --timeout 300)
    local t0
    t0=$(now)
    "$VAULTCTL" "${V[@]}" --identity "$T/identity" etcd recover "$ID" --root "$dir/host0" \
        "${common[@]//HOST/$dir/host0}" --execute >"$dir/recover.out" 2>&1 || die "vault recover failed: $(tail -n 20 "$dir/recover.out")"
    for i in 1 2; do
        "$VAULTCTL" etcd join --cluster "${CLIENT[0]}" --root "$dir/host$i" \
            "${common[@]//HOST/$dir/host$i}" --execute >"$dir/join$i.out" 2>&1 || die "vault join m$i failed: $(tail -n 20 "$dir/join$i.out")"
    done
    local t1
    t1=$(now)
    printf 'vault\t%s\t%s\n' "$rep" "$(secs "$t0" "$t1")" >>"$TIMES"
    for i in 0 1 2; do cp "$dir/host$i"/var/lib/vault/recovery/journal.*.json "$T/journals/rep$rep-host$i.json"; done
    check_cluster vault
    stop_hosts "$dir"
}

mkdir -p "$T/journals"
for ((rep = 1; rep <= REPS; rep++)); do
    log "rep $rep: by hand"
    by_hand "$T/hand$rep"
    log "  $(tail -n 1 "$TIMES" | cut -f3) s"
    rm -rf "$T/hand$rep"
    log "rep $rep: vault"
    with_vault "$T/vault$rep"
    log "  $(tail -n 1 "$TIMES" | cut -f3) s"
    rm -rf "$T/vault$rep"
done
stop_pid "$LOAD_PID"
LOAD_PID=

# ---------------------------------------------------------------------------------------------
OUT=$OUTDIR/recovery-${KEYS}keys-$STAMP
python3 - "$FACTS" "$TIMES" "$OUT" "$T/journals" <<'PY'
import glob, json, os, statistics, sys
from datetime import datetime
facts = dict(l.rstrip("\n").split("\t", 1) for l in open(sys.argv[1]) if "\t" in l)
times = {}
for l in open(sys.argv[2]):
    side, rep, s = l.split("\t")
    times.setdefault(side, []).append(float(s))
med = {k: statistics.median(v) for k, v in times.items()}
ratio = med["vault"] / med["by_hand"]
doc = {"facts": facts, "seconds": times, "median": med, "ratio_vault_to_hand": ratio,
       "commands_typed": {"vault": 3, "runbook": 20}}
json.dump(doc, open(sys.argv[3] + ".json", "w"), indent=2)
md = [f"# Recovery time: {facts['key_count']} keys, db {int(facts['db_size'])/2**20:.0f} MiB, {facts['reps']} reps",
      "", "| | median s | runs (s) |", "|---|---|---|"]
for k in ("by_hand", "vault"):
    md.append(f"| {k} | {med[k]:.2f} | {', '.join(f'{x:.2f}' for x in times[k])} |")
# where vault's time goes: each step's median duration over the reps, from the kept journals
def t(x):
    return datetime.fromisoformat(x.replace("Z", "+00:00"))
steps = {}
for f in sorted(glob.glob(os.path.join(sys.argv[4], "*.json"))):
    host = f.rsplit("-", 1)[1].removesuffix(".json")
    j = json.load(open(f))
    for i, (st, rec) in enumerate(zip(j["plan"]["steps"], j["steps"])):
        key = (host, i + 1, st["step"] + (":" + next(iter(st["action"])) if st["step"] == "host" and isinstance(st["action"], dict) else ""))
        steps.setdefault(key, []).append((t(rec["finished"]) - t(rec["started"])).total_seconds())
doc["vault_steps"] = {f"{h} {n} {k}": statistics.median(v) for (h, n, k), v in sorted(steps.items())}
json.dump(doc, open(sys.argv[3] + ".json", "w"), indent=2)
md += ["", "vault's steps (median s over the reps, from the journals):", "", "| host | step | s |", "|---|---|---|"]
md += [f"| {h} | {n}. {k} | {statistics.median(v):.2f} |" for (h, n, k), v in sorted(steps.items())]
md += ["", f"vault / by hand: **{ratio:.2f}x** (goal <= 1.3x)", "",
       "facts: " + ", ".join(f"{k}={v}" for k, v in facts.items())]
open(sys.argv[3] + ".md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
