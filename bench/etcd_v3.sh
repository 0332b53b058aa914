#!/usr/bin/env bash
# etcd v3 backup benchmark: vaultctl vs etcdctl snapshot save, restic and borg, side by side in one
# run on one etcd member. See bench/README.md.
#
#   bench/etcd_v3.sh [main|chunks|all]          (default: main)
#
# Environment:
#   BENCH_KEYS=100000      keys loaded by gen_etcd_data.py (~400 MB snapshot at 100000; 5000 = quick mode)
#   BENCH_REPS=3           repetitions of each cheap measurement (medians are reported)
#   BENCH_CONFIGS="16:3 32:3 64:3 128:3 256:3 64:1 64:6 128:6"   chunks mode: AVG_KIB:ZSTD_LEVEL pairs
#   BENCH_OUT=bench/results  where the JSON/markdown results go
#   BENCH_TMP=/tmp         parent of the temporary work directory
#   BENCH_KEEP=1           keep the temporary work directory
#   BENCH_NO_BUILD=1       skip `cargo build --release` (use the existing binaries)
#   GEN_ETCD_DATA=/work/shared/tools/gen_etcd_data.py
set -euo pipefail

MODE=${1:-main}
case "$MODE" in main | chunks | all) ;; *)
    echo "usage: $0 [main|chunks|all]" >&2
    exit 2
    ;;
esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KEYS=${BENCH_KEYS:-100000}
REPS=${BENCH_REPS:-3}
CONFIGS=${BENCH_CONFIGS:-"16:3 32:3 64:3 128:3 256:3 64:1 64:6 128:6"}
OUTDIR=${BENCH_OUT:-$ROOT/bench/results}
GEN=${GEN_ETCD_DATA:-/work/shared/tools/gen_etcd_data.py}
if [[ ! -f $GEN && -f $ROOT/../shared/tools/gen_etcd_data.py ]]; then GEN=$ROOT/../shared/tools/gen_etcd_data.py; fi

. "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------------------------------------
# prerequisites
for t in etcd etcdctl restic borg python3 curl; do need "$t" || die "$t is not installed (see bench/README.md)"; done
need moto_server || die "moto_server is not installed: pip install 'moto[server]'"
[[ -f $GEN ]] || die "data generator $GEN not found (set GEN_ETCD_DATA)"

if [[ -z ${BENCH_NO_BUILD:-} ]]; then
    log "building vaultctl (release)"
    (cd "$ROOT" && cargo build --release -q -p vaultctl)
    log "building bench/file-ingest (release; bench-only helper, shares target/)"
    cp "$ROOT/Cargo.lock" "$ROOT/bench/file-ingest/Cargo.lock"
    (cd "$ROOT/bench/file-ingest" && CARGO_TARGET_DIR=$ROOT/target cargo build --release -q)
fi
VAULTCTL=$ROOT/target/release/vaultctl
INGEST=$ROOT/target/release/vault-bench-ingest
[[ -x $VAULTCTL ]] || die "$VAULTCTL missing"
[[ -x $INGEST ]] || die "$INGEST missing"

# ---------------------------------------------------------------------------------------------
# work directory, processes we start, cleanup
T=$(mktemp -d "${BENCH_TMP:-/tmp}/vault-bench.XXXXXX")
mkdir -p "$T/out" "$T/restore"
ETCD_PID="" MOTO_PID="" LOAD_PID=""
cleanup() {
    stop_pid "$LOAD_PID"
    stop_pid "$MOTO_PID"
    stop_pid "$ETCD_PID"
    if [[ -n ${BENCH_KEEP:-} ]]; then log "kept work directory $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # URL TEXT SECONDS
    local i
    for ((i = 0; i < $3 * 20; i++)); do
        if curl -s -m 1 "$1" 2>/dev/null | grep -q "$2"; then return 0; fi
        sleep 0.05
    done
    return 1
}

MEASURE="$T/measure.tsv" # label rep wall_s user_s sys_s maxrss_kb load1 server_cpu_s
FACTS="$T/facts.tsv"     # name value
: >"$MEASURE"
: >"$FACTS"
CLK_TCK=$(getconf CLK_TCK)
# CPU ticks used so far by the servers we started (etcd, moto): their share of each measurement
server_ticks() {
    local pid total=0
    for pid in $ETCD_PID $MOTO_PID; do
        [[ -r /proc/$pid/stat ]] && total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}

# measure LABEL REP CMD...: run CMD under GNU time; stdout goes to $LAST_OUT.
LAST_OUT=""
measure() {
    local label=$1 rep=$2
    shift 2
    local o="$T/out/$label.$rep" load1 t0 t1 srv0 srv1
    # an exported shell function runs in a child bash (a few ms; its RSS is below vaultctl's)
    if [[ $(type -t "$1") == function ]]; then set -- bash -c '"$0" "$@"' "$@"; fi
    load1=$(cut -d' ' -f1 /proc/loadavg)
    srv0=$(server_ticks)
    t0=$(date +%s%N)
    if ! /usr/bin/time -v -o "$o.time" "$@" >"$o.out" 2>"$o.err"; then
        log "FAILED: $label (rep $rep): $*"
        tail -n 20 "$o.err" >&2
        exit 1
    fi
    t1=$(date +%s%N)
    srv1=$(server_ticks)
    awk -F': ' -v label="$label" -v rep="$rep" -v ns="$((t1 - t0))" -v load1="$load1" -v srv="$(((srv1 - srv0) * 1000 / CLK_TCK))" '
        /User time \(seconds\)/ {u=$2} /System time \(seconds\)/ {s=$2} /Maximum resident set size/ {m=$2}
        END {printf "%s\t%s\t%.4f\t%s\t%s\t%s\t%s\t%.3f\n", label, rep, ns/1e9, u, s, m, load1, srv/1000}' "$o.time" >>"$MEASURE"
    LAST_OUT="$o.out"
    log "  $label #$rep: $(tail -n 1 "$MEASURE" | cut -f3) s"
}
# repo size: the sum of the sizes of its files (`du -sb` without the 4 KiB per directory entry, which
# would charge restic ~1 MB for its 256 empty data/ subdirectories)

# ---------------------------------------------------------------------------------------------
# environment facts
fact mode "$MODE"
fact keys "$KEYS"
fact reps "$REPS"
host_facts
fact etcd_version "$(etcd --version | head -n 1 | sed 's/.*: //')"
fact restic_version "$(restic version | awk '{print $2}')"
fact borg_version "$(borg --version | awk '{print $2}')"
build_facts
start_load_sampler

# ---------------------------------------------------------------------------------------------
# etcd: one member on free loopback ports, data under $T
CPORT=$(free_port)
PPORT=$(free_port)
EP=http://127.0.0.1:$CPORT
log "starting etcd on $EP (data $T/etcd)"
etcd --name bench --data-dir "$T/etcd" \
    --listen-client-urls "$EP" --advertise-client-urls "$EP" \
    --listen-peer-urls "http://127.0.0.1:$PPORT" --initial-advertise-peer-urls "http://127.0.0.1:$PPORT" \
    --initial-cluster "bench=http://127.0.0.1:$PPORT" --initial-cluster-token "bench-$$" \
    --quota-backend-bytes $((8 << 30)) --logger zap --log-level warn >"$T/etcd.log" 2>&1 &
ETCD_PID=$!
wait_http "$EP/health" '"health":"true"' 30 || {
    tail -n 20 "$T/etcd.log" >&2
    die "etcd did not become healthy"
}
export ETCDCTL_API=3

log "loading $KEYS keys with $(basename "$GEN")"
t0=$(date +%s%N)
python3 "$GEN" load --endpoint "$EP" --count "$KEYS" >"$T/load.json"
fact load_seconds "$(awk -v ns="$(($(date +%s%N) - t0))" 'BEGIN{printf "%.1f", ns/1e9}')"
fact load_value_bytes "$(json_field "$T/load.json" value_bytes)"
fact db_size "$(etcdctl --endpoints "$EP" endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["dbSize"])')"

# ---------------------------------------------------------------------------------------------
# keys shared by every vault in this run
"$VAULTCTL" keygen --out "$T/identity" >"$T/recipient" 2>/dev/null
RECIPIENT=$(cat "$T/recipient")

# vault_init DIR_OR_URL NAME [init flags...]: new vault; writer key $T/keys/NAME.wk, catalog $T/cat/NAME.sqlite
mkdir -p "$T/keys" "$T/cat"
vault_init() {
    local repo=$1 name=$2
    shift 2
    rm -f "$T/keys/$name.wk" "$T/cat/$name.sqlite"
    "$VAULTCTL" init --repo "$repo" --recipient "$RECIPIENT" --writer-key-out "$T/keys/$name.wk" "$@" >/dev/null
}
# Commands to run under `measure` (GNU time runs programs, not shell functions):
vbackup() { # REPO NAME: vaultctl backup etcd
    "$VAULTCTL" --repo "$1" --writer-key "$T/keys/$2.wk" --catalog "$T/cat/$2.sqlite" backup etcd --endpoints "$EP" --json
}
vingest() { # REPO NAME FILE: bench helper, the same pipeline with a file as source
    "$INGEST" --repo "$1" --writer-key "$T/keys/$2.wk" --catalog "$T/cat/$2.sqlite" "$3"
}
export -f vbackup vingest
export VAULTCTL INGEST T EP
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$T/restic-cache
export BORG_PASSPHRASE=bench BORG_BASE_DIR=$T/borg-base BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
restic_init() { restic -r "$1" init --repository-version 2 -q >/dev/null; }

S3ENV=()
start_moto() {
    MPORT=$(free_port)
    log "starting moto_server on 127.0.0.1:$MPORT"
    moto_server -H 127.0.0.1 -p "$MPORT" >"$T/moto.log" 2>&1 &
    MOTO_PID=$!
    wait_http "http://127.0.0.1:$MPORT/" "ListAllMyBucketsResult" 30 || {
        tail -n 20 "$T/moto.log" >&2
        die "moto_server did not start"
    }
    curl -sf -X PUT "http://127.0.0.1:$MPORT/bench" >/dev/null || die "cannot create bucket"
    S3ENV=(env AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_ENDPOINT_URL="http://127.0.0.1:$MPORT"
        AWS_ALLOW_HTTP=true AWS_REGION=us-east-1)
}

# ---------------------------------------------------------------------------------------------
main_phase() {
    start_moto
    # The "repeat" targets: each already holds one capture of the current state.
    log "preparing repeat targets (one untimed capture each; also warms etcd)"
    vault_init "$T/v-rep" v-rep
    vbackup "$T/v-rep" v-rep >"$T/out/v-rep.init.json"
    "${S3ENV[@]}" "$VAULTCTL" init --repo s3://bench/rep --recipient "$RECIPIENT" --writer-key-out "$T/keys/s3-rep.wk" >/dev/null
    "${S3ENV[@]}" "$VAULTCTL" --repo s3://bench/rep --writer-key "$T/keys/s3-rep.wk" --catalog "$T/cat/s3-rep.sqlite" \
        backup etcd --endpoints "$EP" --json >/dev/null
    etcdctl --endpoints "$EP" snapshot save "$T/snap-warm.db" >/dev/null
    restic_init "$T/r-rep"
    restic -r "$T/r-rep" backup -q --host bench "$T/snap-warm.db" >/dev/null
    fact snapshot_bytes "$(stat -c %s "$T/snap-warm.db")"
    rm -f "$T/snap-warm.db"

    local rep
    for ((rep = 1; rep <= REPS; rep++)); do
        log "main: repetition $rep/$REPS"
        # 1. etcdctl snapshot save (also the first half of "what a user would script")
        rm -f "$T/snap.$rep.db"
        measure etcdctl_save "$rep" etcdctl --endpoints "$EP" snapshot save "$T/snap.$rep.db"
        # 3. ... + restic backup of that file, into a fresh repo and into one that holds it already
        rm -rf "$T/r-first"
        restic_init "$T/r-first"
        measure restic_backup_first "$rep" restic -r "$T/r-first" backup -q --host bench "$T/snap.$rep.db"
        measure restic_backup_repeat "$rep" restic -r "$T/r-rep" backup -q --host bench "$T/snap.$rep.db"
        # 1. vaultctl backup etcd, local directory vault: fresh vault, and repeat into a full one
        rm -rf "$T/v-first"
        vault_init "$T/v-first" v-first
        measure vault_first_local "$rep" vbackup "$T/v-first" v-first
        cp "$LAST_OUT" "$T/out/vault_first_local.$rep.json"
        fact "vault_first_local_stored_bytes.$rep" "$(json_field "$LAST_OUT" stored_bytes)"
        fact "vault_first_local_repo_bytes.$rep" "$(du_b "$T/v-first")"
        measure vault_repeat_local "$rep" vbackup "$T/v-rep" v-rep
        # 2. the same into an S3 vault on moto
        "${S3ENV[@]}" "$VAULTCTL" init --repo "s3://bench/first-$rep" --recipient "$RECIPIENT" \
            --writer-key-out "$T/keys/s3-first-$rep.wk" >/dev/null
        measure vault_first_s3 "$rep" "${S3ENV[@]}" "$VAULTCTL" --repo "s3://bench/first-$rep" \
            --writer-key "$T/keys/s3-first-$rep.wk" --catalog "$T/cat/s3-first-$rep.sqlite" backup etcd --endpoints "$EP" --json
        measure vault_repeat_s3 "$rep" "${S3ENV[@]}" "$VAULTCTL" --repo s3://bench/rep \
            --writer-key "$T/keys/s3-rep.wk" --catalog "$T/cat/s3-rep.sqlite" backup etcd --endpoints "$EP" --json
        # diagnostic: the vault pipeline on the etcdctl file (no etcd, no gRPC)
        rm -rf "$T/v-file"
        vault_init "$T/v-file" v-file
        measure vaultfile_first_local "$rep" vingest "$T/v-file" v-file "$T/snap.$rep.db"
        # diagnostic: the raw cost of reading the file and of hashing it the way the pipeline does
        measure sha256sum_file "$rep" sha256sum "$T/snap.$rep.db"
        # 6. restore: vaultctl restore (cold catalog) vs restic restore (+ an fsync like vaultctl's)
        rm -f "$T/restore/vault.db" "$T/cat/restore.sqlite"
        measure vault_restore "$rep" "$VAULTCTL" --repo "$T/v-rep" --identity "$T/identity" \
            --catalog "$T/cat/restore.sqlite" restore latest --to "$T/restore/vault.db"
        rm -rf "$T/restore/restic"
        measure restic_restore "$rep" restic -r "$T/r-rep" restore latest --target "$T/restore/restic" -q
        local rf
        rf=$(find "$T/restore/restic" -type f -name 'snap.*.db' | head -n 1)
        measure restic_restore_fsync "$rep" sync "$rf"
        cmp -s "$T/restore/vault.db" "$rf" && fact "restore_identical.$rep" yes || fact "restore_identical.$rep" "no (different captures)"
        rm -rf "$T/restore/restic" "$T/restore/vault.db" "$T/v-first"
        ((rep == REPS)) || rm -f "$T/snap.$rep.db"
    done
    mv "$T/snap.$REPS.db" "$T/snapA.db"
    fact restic_first_repo_bytes "$(du_b "$T/r-first")"
    rm -rf "$T/r-first"

    # 4. dedup between state A and state B (2% of keys modified)
    log "dedup: first backups at state A"
    restic_init "$T/r-dedup"
    borg init -e repokey-blake2 "$T/b-dedup" >/dev/null 2>&1
    vault_init "$T/v-dedup-etcd" v-dedup-etcd
    vault_init "$T/v-dedup-file" v-dedup-file
    local tool
    for tool in r-dedup b-dedup v-dedup-etcd v-dedup-file; do fact "dedup_empty.$tool" "$(du_b "$T/$tool")"; done
    measure dedup_restic_A 1 restic -r "$T/r-dedup" backup -q --host bench "$T/snapA.db"
    measure dedup_borg_A 1 borg create --compression zstd,3 "$T/b-dedup::A" "$T/snapA.db"
    measure dedup_vault_etcd_A 1 vbackup "$T/v-dedup-etcd" v-dedup-etcd
    fact dedup_vault_etcd_A_sha256 "$(json_field "$LAST_OUT" sha256)"
    measure dedup_vault_file_A 1 vingest "$T/v-dedup-file" v-dedup-file "$T/snapA.db"
    for tool in r-dedup b-dedup v-dedup-etcd v-dedup-file; do fact "dedup_after_A.$tool" "$(du_b "$T/$tool")"; done
    fact snapA_sha256 "$(sha256sum "$T/snapA.db" | cut -d' ' -f1)"

    log "modifying 2% of keys (generation 1)"
    python3 "$GEN" modify --endpoint "$EP" --count "$KEYS" --fraction 0.02 --generation 1 >"$T/modify.json"
    etcdctl --endpoints "$EP" snapshot save "$T/snapB.db" >/dev/null
    fact snapB_bytes "$(stat -c %s "$T/snapB.db")"
    fact snapB_sha256 "$(sha256sum "$T/snapB.db" | cut -d' ' -f1)"
    fact pages_changed_A_B "$(python3 - "$T/snapA.db" "$T/snapB.db" <<'EOF'
import sys
a, b = open(sys.argv[1], "rb"), open(sys.argv[2], "rb")
n = d = 0
while True:
    x, y = a.read(4096), b.read(4096)
    if not x and not y:
        break
    n += 1
    d += x != y
print(f"{d}/{n} 4-KiB pages ({100.0 * d / n:.2f}%)")
EOF
)"
    log "dedup: second backups at state B"
    measure dedup_restic_B 1 restic -r "$T/r-dedup" backup -q --host bench "$T/snapB.db"
    measure dedup_borg_B 1 borg create --compression zstd,3 "$T/b-dedup::B" "$T/snapB.db"
    measure dedup_vault_etcd_B 1 vbackup "$T/v-dedup-etcd" v-dedup-etcd
    fact dedup_vault_etcd_B_sha256 "$(json_field "$LAST_OUT" sha256)"
    fact dedup_vault_etcd_B_new_bytes "$(json_field "$LAST_OUT" new_bytes)"
    measure dedup_vault_file_B 1 vingest "$T/v-dedup-file" v-dedup-file "$T/snapB.db"
    fact dedup_vault_file_B_new_bytes "$(json_field "$LAST_OUT" new_bytes)"
    for tool in r-dedup b-dedup v-dedup-etcd v-dedup-file; do fact "dedup_after_B.$tool" "$(du_b "$T/$tool")"; done
    # C: a third backup with nothing changed (what every scheduled backup of a quiet cluster costs)
    log "dedup: third backups, nothing changed"
    cp "$T/snapB.db" "$T/snapC.db"
    measure dedup_restic_C 1 restic -r "$T/r-dedup" backup -q --host bench "$T/snapC.db"
    measure dedup_borg_C 1 borg create --compression zstd,3 "$T/b-dedup::C" "$T/snapC.db"
    measure dedup_vault_etcd_C 1 vbackup "$T/v-dedup-etcd" v-dedup-etcd
    measure dedup_vault_file_C 1 vingest "$T/v-dedup-file" v-dedup-file "$T/snapC.db"
    for tool in r-dedup b-dedup v-dedup-etcd v-dedup-file; do fact "dedup_after_C.$tool" "$(du_b "$T/$tool")"; done
    for part in data index snapshots; do fact "dedup_vault_etcd_$part" "$(du_b "$T/v-dedup-etcd/$part")"; done
    fact dedup_vault_etcd_snapshots_count "$(find "$T/v-dedup-etcd/snapshots" -type f | wc -l)"
    rm -f "$T/snapC.db"
    rm -rf "$T/r-dedup" "$T/b-dedup" "$T/v-dedup-etcd" "$T/v-dedup-file" "$T/v-rep" "$T/r-rep"
}

# 7. chunk size / compression level: growth on identical files, first-backup time from etcd
chunks_phase() {
    if [[ ! -f $T/snapB.db ]]; then
        etcdctl --endpoints "$EP" snapshot save "$T/snapA.db" >/dev/null
        fact snapshot_bytes "$(stat -c %s "$T/snapA.db")"
        log "modifying 2% of keys (generation 1)"
        python3 "$GEN" modify --endpoint "$EP" --count "$KEYS" --fraction 0.02 --generation 1 >"$T/modify.json"
        etcdctl --endpoints "$EP" snapshot save "$T/snapB.db" >/dev/null
        fact snapB_bytes "$(stat -c %s "$T/snapB.db")"
    fi
    local kib lvl c rep n_save=0
    fact chunk_configs "$CONFIGS"
    for c in $CONFIGS; do
        kib=${c%%:*}
        lvl=${c##*:}
        local tag="c${kib}k-z$lvl" v="$T/v-chunks"
        log "chunks: avg $kib KiB, zstd $lvl"
        for ((rep = 1; rep <= REPS; rep++)); do
            # growth on the identical files A then B (a fresh vault has a fresh secret gear table,
            # so chunk boundaries and hence growth vary a little from vault to vault)
            rm -rf "$v"
            vault_init "$v" chunks --chunk-avg-kib "$kib" --compression-level "$lvl"
            fact "chunks.$tag.empty.$rep" "$(du_b "$v")"
            measure "chunks_ingestA_$tag" "$rep" vingest "$v" chunks "$T/snapA.db"
            fact "chunks.$tag.after_A.$rep" "$(du_b "$v")"
            fact "chunks.$tag.chunksA.$rep" "$(json_field "$LAST_OUT" chunks)"
            measure "chunks_ingestB_$tag" "$rep" vingest "$v" chunks "$T/snapB.db"
            fact "chunks.$tag.after_B.$rep" "$(du_b "$v")"
            fact "chunks.$tag.new_chunksB.$rep" "$(json_field "$LAST_OUT" new_chunks)"
            fact "chunks.$tag.new_bytesB.$rep" "$(json_field "$LAST_OUT" new_bytes)"
            if ((rep == 1)); then
                rm -f "$T/restore/chunks.db" "$T/cat/restore-chunks.sqlite"
                measure "chunks_restore_$tag" 1 "$VAULTCTL" --repo "$v" --identity "$T/identity" \
                    --catalog "$T/cat/restore-chunks.sqlite" restore latest --to "$T/restore/chunks.db"
                rm -f "$T/restore/chunks.db"
            fi
            # first backup from etcd (state B) into an empty vault
            rm -rf "$v"
            vault_init "$v" chunks --chunk-avg-kib "$kib" --compression-level "$lvl"
            measure "chunks_first_$tag" "$rep" vbackup "$v" chunks
            # the baseline, interleaved so that both see the same background load
            rm -f "$T/snap.x.db"
            measure chunks_etcdctl_save "$((++n_save))" etcdctl --endpoints "$EP" snapshot save "$T/snap.x.db"
            rm -f "$T/snap.x.db"
        done
        rm -rf "$v"
    done
}

case "$MODE" in
main) main_phase ;;
chunks) chunks_phase ;;
all)
    main_phase
    chunks_phase
    ;;
esac

fact loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
fact top_end "$(ps -eo pcpu,comm --sort=-pcpu | sed -n 2,6p | awk '{printf "%s%s %s%%", (NR>1?", ":""), $2, $1}')"
fact finished "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
fact command "BENCH_KEYS=$KEYS BENCH_REPS=$REPS bench/etcd_v3.sh $MODE"
stop_pid "$LOAD_PID"
LOAD_PID=""
mkdir -p "$OUTDIR"
python3 "$ROOT/bench/report.py" --measure "$MEASURE" --facts "$FACTS" --load "$T/load.txt" --outdir "$OUTDIR"
