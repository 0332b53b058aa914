#!/usr/bin/env bash
# Retention benchmarks (issue 9). See bench/README.md.
#
#   bench/retention.sh [synthetic|restic|all]      (default: all)
#
# synthetic: a vault of BENCH_SNAPSHOTS snapshots over BENCH_CHUNKS chunks (vault/examples/
#   synthetic_vault.rs: real packs, index segments and manifests), then `forget` (all but the
#   newest BENCH_KEEP_LAST), `prune --grace 0` and `audit`, each under GNU time: peak RSS and time.
# restic: BENCH_SERIES etcd snapshots of a BENCH_KEYS-key database (~400 MB at 100000), 2% of the
#   keys changed between them, each stored by vault (the capture pipeline on the saved file) and by
#   restic; then vault `forget --keep-last 10` + `prune --grace 0` against
#   `restic forget --keep-last 10 --prune` on the same snapshots: time and bytes freed.
#
# Environment: BENCH_SNAPSHOTS=2000 BENCH_CHUNKS=1000000 BENCH_KEEP_LAST=100 BENCH_SERIES=50
#   BENCH_KEYS=100000 BENCH_OUT=bench/results BENCH_TMP=/tmp BENCH_KEEP=1 BENCH_NO_BUILD=1
#   GEN_ETCD_DATA=/work/shared/tools/gen_etcd_data.py
set -euo pipefail

MODE=${1:-all}
case "$MODE" in synthetic | restic | all) ;; *)
    echo "usage: $0 [synthetic|restic|all]" >&2
    exit 2
    ;;
esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SNAPSHOTS=${BENCH_SNAPSHOTS:-2000}
CHUNKS=${BENCH_CHUNKS:-1000000}
KEEP_LAST=${BENCH_KEEP_LAST:-100}
SERIES=${BENCH_SERIES:-50}
KEYS=${BENCH_KEYS:-100000}
OUTDIR=${BENCH_OUT:-$ROOT/bench/results}
GEN=${GEN_ETCD_DATA:-/work/shared/tools/gen_etcd_data.py}
if [[ ! -f $GEN && -f $ROOT/../shared/tools/gen_etcd_data.py ]]; then GEN=$ROOT/../shared/tools/gen_etcd_data.py; fi

. "$ROOT/bench/lib.sh"

for t in python3 curl; do need "$t" || die "$t is not installed"; done
[[ -x /usr/bin/time ]] || die "GNU time is not installed (apt-get install time)"
if [[ $MODE != synthetic ]]; then
    for t in etcd etcdctl restic; do need "$t" || die "$t is not installed (apt-get install etcd-server etcd-client restic)"; done
    [[ -f $GEN ]] || die "data generator $GEN not found (set GEN_ETCD_DATA)"
fi

if [[ -z ${BENCH_NO_BUILD:-} ]]; then
    log "building vaultctl and the synthetic vault generator (release)"
    (cd "$ROOT" && cargo build --release -q -p vaultctl && cargo build --release -q -p vault --example synthetic_vault)
    log "building bench/file-ingest (release; bench-only helper, shares target/)"
    cp "$ROOT/Cargo.lock" "$ROOT/bench/file-ingest/Cargo.lock"
    (cd "$ROOT/bench/file-ingest" && CARGO_TARGET_DIR=$ROOT/target cargo build --release -q)
fi
VAULTCTL=$ROOT/target/release/vaultctl
SYNTH=$ROOT/target/release/examples/synthetic_vault
INGEST=$ROOT/target/release/vault-bench-ingest
for b in "$VAULTCTL" "$SYNTH" "$INGEST"; do [[ -x $b ]] || die "$b missing (run without BENCH_NO_BUILD)"; done

T=$(mktemp -d "${BENCH_TMP:-/tmp}/vault-bench-retention.XXXXXX")
mkdir -p "$T/out" "$T/keys" "$T/cat"
ETCD_PID="" LOAD_PID=""
cleanup() {
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

fact mode "$MODE"
host_facts
build_facts
start_load_sampler

"$VAULTCTL" keygen --out "$T/identity" >"$T/recipient" 2>/dev/null
RECIPIENT=$(cat "$T/recipient")
# v NAME ARGS...: vaultctl on vault NAME (local directory $T/NAME) with its writer key and catalog
# (a script, not a shell function, so that GNU time can run it)
cat >"$T/v" <<EOF
#!/usr/bin/env bash
name=\$1
shift
exec "$VAULTCTL" --repo "$T/\$name" --writer-key "$T/keys/\$name.wk" --identity "$T/identity" --catalog "$T/cat/\$name.sqlite" "\$@"
EOF
chmod +x "$T/v"
v() { "$T/v" "$@"; }
vault_init() { # NAME [init flags]
    local name=$1
    shift
    "$VAULTCTL" init --repo "$T/$name" --recipient "$RECIPIENT" --writer-key-out "$T/keys/$name.wk" "$@" >/dev/null
}

synthetic_phase() {
    log "synthetic: $SNAPSHOTS snapshots over $CHUNKS chunks"
    fact synthetic_snapshots "$SNAPSHOTS"
    fact synthetic_chunks "$CHUNKS"
    fact synthetic_keep_last "$KEEP_LAST"
    vault_init syn --pack-size-mib 4
    measure synthetic_generate 0 "$SYNTH" --repo "$T/syn" --writer-key "$T/keys/syn.wk" --catalog "$T/cat/syn.sqlite" \
        --snapshots "$SNAPSHOTS" --chunks "$CHUNKS" --window $((2 * CHUNKS / SNAPSHOTS))
    fact synthetic_vault_bytes "$(du_b "$T/syn")"
    fact synthetic_packs "$(find "$T/syn/data" -type f | wc -l)"
    # Each measured command opens the catalog the generator built (synced, nothing new to read).
    # audit exits 3 when a control fails (the synthetic vault was never verified)
    measure synthetic_audit_before "0 3" "$T/v" syn --json audit
    measure synthetic_forget 0 "$T/v" syn --json forget --keep-last "$KEEP_LAST" --confirm
    measure synthetic_prune 0 "$T/v" syn --json prune --grace 0
    cp "$LAST_OUT" "$T/out/synthetic_prune.json"
    fact synthetic_vault_bytes_after "$(du_b "$T/syn")"
    measure synthetic_audit "0 3" "$T/v" syn --json audit
    rm -rf "$T/syn"
}

restic_phase() {
    local ep
    start_etcd "$T/etcd" "$T/etcd.log"
    ep=$EP
    log "restic: etcd on $ep"
    fact etcd_version "$(etcd --version | head -n 1 | sed 's/.*: //')"
    fact restic_version "$(restic version | awk '{print $2}')"
    fact series "$SERIES"
    fact keys "$KEYS"
    log "loading $KEYS keys"
    python3 "$GEN" load --endpoint "$ep" --count "$KEYS" >"$T/load.json"
    export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$T/restic-cache
    restic -r "$T/restic" init --repository-version 2 -q >/dev/null
    vault_init series
    for ((i = 1; i <= SERIES; i++)); do
        if ((i > 1)); then
            python3 "$GEN" modify --endpoint "$ep" --count "$KEYS" --fraction 0.02 --generation "$i" >/dev/null
        fi
        ETCDCTL_API=3 etcdctl --endpoints "$ep" snapshot save "$T/snap.db" >/dev/null
        "$INGEST" --repo "$T/series" --writer-key "$T/keys/series.wk" --catalog "$T/cat/series.sqlite" "$T/snap.db" >/dev/null
        restic -r "$T/restic" backup -q --host bench "$T/snap.db" >/dev/null
        ((i % 10 == 0)) && log "  $i/$SERIES snapshots stored by both"
    done
    fact snapshot_bytes "$(stat -c %s "$T/snap.db")"
    rm -f "$T/snap.db"
    fact vault_bytes_before "$(du_b "$T/series")"
    fact restic_bytes_before "$(du_b "$T/restic")"
    # Copies for the second comparison, both tools told to leave nothing unused (--max-unused 0).
    cp -a "$T/series" "$T/strict"
    cp "$T/keys/series.wk" "$T/keys/strict.wk"
    cp "$T/cat/series.sqlite" "$T/cat/strict.sqlite"
    cp -a "$T/restic" "$T/restic-strict"
    measure vault_forget 0 "$T/v" series --json forget --keep-last 10 --confirm
    measure vault_prune 0 "$T/v" series --json prune --grace 0
    cp "$LAST_OUT" "$T/out/vault_prune.json"
    fact vault_unused_after "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["unused_bytes_kept"])' "$LAST_OUT")"
    measure restic_forget_prune 0 restic -r "$T/restic" forget --keep-last 10 --prune
    fact restic_unused_after "$(sed -n 's/^unused size after prune: *//p' "$LAST_OUT")"
    fact vault_bytes_after "$(du_b "$T/series")"
    fact restic_bytes_after "$(du_b "$T/restic")"
    measure vault_forget_strict 0 "$T/v" strict --json forget --keep-last 10 --confirm
    measure vault_prune_strict 0 "$T/v" strict --json prune --grace 0 --max-unused 0
    measure restic_forget_prune_strict 0 restic -r "$T/restic-strict" forget --keep-last 10 --prune --max-unused 0
    fact vault_strict_bytes_after "$(du_b "$T/strict")"
    fact restic_strict_bytes_after "$(du_b "$T/restic-strict")"
    rm -rf "$T/strict" "$T/restic-strict"
    measure vault_verify_after 0 "$VAULTCTL" --repo "$T/series" --identity "$T/identity" --catalog "$T/cat/verify.sqlite" \
        verify --all --read-data
    measure restic_check_after 0 restic -r "$T/restic" check --read-data
    stop_pid "$ETCD_PID"
    ETCD_PID=""
}

[[ $MODE == restic ]] || synthetic_phase
[[ $MODE == synthetic ]] || restic_phase

mkdir -p "$OUTDIR"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$OUTDIR/retention-$MODE-$STAMP"
python3 - "$MEASURE" "$FACTS" "$OUT" <<'EOF'
import json, sys
measure, facts, out = sys.argv[1:4]
rows = [l.rstrip("\n").split("\t") for l in open(measure) if l.strip()]
m = {r[0]: {"wall_s": float(r[1]), "user_s": float(r[2]), "sys_s": float(r[3]), "maxrss_mib": int(r[4]) / 1024, "exit": int(r[5])} for r in rows}
f = dict(l.rstrip("\n").split("\t", 1) for l in open(facts) if l.strip())
json.dump({"facts": f, "measurements": m}, open(out + ".json", "w"), indent=2)
lines = ["# Retention benchmark", ""]
lines += ["| fact | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in f.items()] + [""]
lines += ["| step | wall s | user s | sys s | peak RSS MiB | exit |", "|---|---|---|---|---|---|"]
lines += [f"| {k} | {v['wall_s']:.2f} | {v['user_s']} | {v['sys_s']} | {v['maxrss_mib']:.0f} | {v['exit']} |" for k, v in m.items()]
def mib(k): return int(f[k]) / 2**20
if "vault_prune" in m:
    vfreed = int(f["vault_bytes_before"]) - int(f["vault_bytes_after"])
    rfreed = int(f["restic_bytes_before"]) - int(f["restic_bytes_after"])
    vt = m["vault_forget"]["wall_s"] + m["vault_prune"]["wall_s"]
    rt = m["restic_forget_prune"]["wall_s"]
    lines += ["", "## vault vs restic: forget all but the last 10, then prune", "",
              "| | vault | restic | vault / restic |", "|---|---|---|---|",
              f"| time (forget + prune) s | {vt:.2f} | {rt:.2f} | {vt / rt:.2f}x |",
              f"| bytes freed | {vfreed / 2**20:.1f} MiB | {rfreed / 2**20:.1f} MiB | {vfreed / max(rfreed, 1):.2f}x |",
              f"| repo before | {mib('vault_bytes_before'):.1f} MiB | {mib('restic_bytes_before'):.1f} MiB | |",
              f"| repo after | {mib('vault_bytes_after'):.1f} MiB | {mib('restic_bytes_after'):.1f} MiB | |",
              f"| unused bytes left in kept packs | {mib('vault_unused_after'):.2f} MiB | {f['restic_unused_after']} | |"]
if "vault_prune_strict" in m:
    vfreed = int(f["vault_bytes_before"]) - int(f["vault_strict_bytes_after"])
    rfreed = int(f["restic_bytes_before"]) - int(f["restic_strict_bytes_after"])
    vt = m["vault_forget_strict"]["wall_s"] + m["vault_prune_strict"]["wall_s"]
    rt = m["restic_forget_prune_strict"]["wall_s"]
    lines += ["", "## the same with --max-unused 0 for both (every partly used pack repacked)", "",
              "| | vault | restic | vault / restic |", "|---|---|---|---|",
              f"| time (forget + prune) s | {vt:.2f} | {rt:.2f} | {vt / rt:.2f}x |",
              f"| bytes freed | {vfreed / 2**20:.1f} MiB | {rfreed / 2**20:.1f} MiB | {vfreed / max(rfreed, 1):.2f}x |",
              f"| repo after | {mib('vault_strict_bytes_after'):.1f} MiB | {mib('restic_strict_bytes_after'):.1f} MiB | {int(f['vault_strict_bytes_after']) / int(f['restic_strict_bytes_after']):.2f}x |"]
if "synthetic_prune" in m:
    peak = max(m["synthetic_forget"]["maxrss_mib"], m["synthetic_prune"]["maxrss_mib"])
    lines += ["", "## synthetic vault", "",
              f"- forget + prune: {m['synthetic_forget']['wall_s'] + m['synthetic_prune']['wall_s']:.1f} s, peak RSS {peak:.0f} MiB (goal <= 300 MB)",
              f"- audit: {m['synthetic_audit']['wall_s']:.2f} s after, {m['synthetic_audit_before']['wall_s']:.2f} s before (goal <= 5 s)"]
open(out + ".md", "w").write("\n".join(lines) + "\n")
print(out + ".md")
EOF
cat "$OUT.md"
