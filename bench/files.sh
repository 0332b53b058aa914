#!/usr/bin/env bash
# Host-file capture benchmark: `vaultctl backup files` vs `restic backup` of the same generated
# /etc-like tree (20 000 files, ~500 MB), side by side in one run. See bench/README.md.
#
#   bench/files.sh
#
# Environment:
#   BENCH_FILES=20000      files in the generated tree (regular files; ~1% symlinks come on top)
#   BENCH_BYTES=500000000  total size of the files
#   BENCH_SEED=1           generator seed (same seed, same tree: paths, contents, modes, mtimes)
#   BENCH_REPS=3           repetitions (medians are reported); each uses a fresh vault and repo
#   BENCH_OUT=bench/results  where the JSON/markdown results go
#   BENCH_TMP=/tmp         parent of the temporary work directory (needs ~2 GB)
#   BENCH_TREE=DIR         generate the tree into DIR/tree and keep it there for later runs (reused
#                          when its stamp matches the generator, seed, file count and size)
#   BENCH_DIAG=1           after the timed runs: strace -c and perf profiles of one first and one
#                          unchanged capture (in the report; perf/strace must be installed)
#   BENCH_KEEP=1           keep the temporary work directory
#   BENCH_NO_BUILD=1       skip `cargo build --release` (use the existing binary)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NFILES=${BENCH_FILES:-20000}
NBYTES=${BENCH_BYTES:-500000000}
SEED=${BENCH_SEED:-1}
REPS=${BENCH_REPS:-3}
OUTDIR=${BENCH_OUT:-$ROOT/bench/results}
GEN=$ROOT/bench/gen_files_tree.py

. "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------------------------------------
# prerequisites
for t in restic python3; do need "$t" || die "$t is not installed (see bench/README.md)"; done
if [[ -n ${BENCH_DIAG:-} ]]; then need strace || die "BENCH_DIAG needs strace"; fi

if [[ -z ${BENCH_NO_BUILD:-} ]]; then
    log "building vaultctl (release)"
    (cd "$ROOT" && cargo build --release -q -p vaultctl)
fi
VAULTCTL=$ROOT/target/release/vaultctl
[[ -x $VAULTCTL ]] || die "$VAULTCTL missing"

# ---------------------------------------------------------------------------------------------
# work directory, processes we start, cleanup
T=$(mktemp -d "${BENCH_TMP:-/tmp}/vault-bench-files.XXXXXX")
mkdir -p "$T/out" "$T/keys" "$T/cat" "$T/diag"
LOAD_PID=""
cleanup() {
    stop_pid "$LOAD_PID"
    if [[ -n ${BENCH_KEEP:-} ]]; then log "kept work directory $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

MEASURE="$T/measure.tsv" # label rep wall_s user_s sys_s maxrss_kb load1 server_cpu_s(always 0 here)
FACTS="$T/facts.tsv"     # name value
: >"$MEASURE"
: >"$FACTS"

# measure LABEL REP CMD...: run CMD under GNU time; stdout goes to $LAST_OUT.
LAST_OUT=""
measure() {
    local label=$1 rep=$2
    shift 2
    local o="$T/out/$label.$rep" load1 t0 t1
    # an exported shell function runs in a child bash (a few ms; its RSS is below vaultctl's)
    if [[ $(type -t "$1") == function ]]; then set -- bash -c '"$0" "$@"' "$@"; fi
    load1=$(cut -d' ' -f1 /proc/loadavg)
    t0=$(date +%s%N)
    if ! /usr/bin/time -v -o "$o.time" "$@" >"$o.out" 2>"$o.err"; then
        log "FAILED: $label (rep $rep): $*"
        tail -n 20 "$o.err" >&2
        exit 1
    fi
    t1=$(date +%s%N)
    awk -F': ' -v label="$label" -v rep="$rep" -v ns="$((t1 - t0))" -v load1="$load1" '
        /User time \(seconds\)/ {u=$2} /System time \(seconds\)/ {s=$2} /Maximum resident set size/ {m=$2}
        END {printf "%s\t%s\t%.4f\t%s\t%s\t%s\t%s\t0\n", label, rep, ns/1e9, u, s, m, load1}' "$o.time" >>"$MEASURE"
    LAST_OUT="$o.out"
    log "  $label #$rep: $(tail -n 1 "$MEASURE" | cut -f3) s (load $load1)"
}
# restic --json prints a summary object as its last line
restic_field() { tail -n 1 "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"; }
# repo size: the sum of the sizes of its files (`du -sb` without the 4 KiB per directory entry, which
# would charge restic ~1 MB for its 256 empty data/ subdirectories)

# ---------------------------------------------------------------------------------------------
# environment facts
fact files_target "$NFILES"
fact bytes_target "$NBYTES"
fact seed "$SEED"
fact reps "$REPS"
host_facts
fact restic_version "$(restic version | awk '{print $2}')"
build_facts
start_load_sampler

# ---------------------------------------------------------------------------------------------
# the tree: GEN_ROOT/tree, captured as host path /tree with --root GEN_ROOT
GEN_ROOT=${BENCH_TREE:-$T/gen}
TREE=$GEN_ROOT/tree
STAMP="gen=$(sha256sum "$GEN" | cut -c1-12) seed=$SEED files=$NFILES bytes=$NBYTES"
# a listing of every entry (path, size, mode, mtime, type, link target): detects a changed tree
listing_sha() { (cd "$TREE" && find . -printf '%P %s %m %T@ %y %l\n' | LC_ALL=C sort | sha256sum | cut -c1-16); }
if [[ -f $GEN_ROOT/gen.stamp && $(head -n 1 "$GEN_ROOT/gen.stamp") == "$STAMP" &&
    $(sed -n 2p "$GEN_ROOT/gen.stamp") == "$(listing_sha)" ]]; then
    log "reusing the tree in $TREE ($STAMP)"
    fact tree_generated "reused from $GEN_ROOT (stamp and listing match)"
else
    [[ ! -e $TREE ]] || rm -rf "$TREE"
    mkdir -p "$GEN_ROOT"
    rm -f "$GEN_ROOT/gen.stamp" "$GEN_ROOT/gen.json"
    log "generating $NFILES files / $NBYTES bytes into $TREE (seed $SEED)"
    t0=$(date +%s%N)
    python3 "$GEN" "$TREE" --files "$NFILES" --bytes "$NBYTES" --seed "$SEED" >"$GEN_ROOT/gen.json"
    fact tree_generated "generated in $(awk -v ns="$(($(date +%s%N) - t0))" 'BEGIN{printf "%.1f", ns/1e9}') s"
    printf '%s\n%s\n' "$STAMP" "$(listing_sha)" >"$GEN_ROOT/gen.stamp"
fi
fact tree_listing_sha "$(sed -n 2p "$GEN_ROOT/gen.stamp")"
fact tree_summary "$(tr -d '\n' <"$GEN_ROOT/gen.json")"
fact tree_du "$(du -sb "$TREE" | cut -f1)"

# warm page cache: read every file once before each measurement (caches cannot be dropped here)
warm_tree() { find "$TREE" -type f -exec cat {} + >/dev/null; }

# ---------------------------------------------------------------------------------------------
"$VAULTCTL" keygen --out "$T/identity" >"$T/recipient" 2>/dev/null
RECIPIENT=$(cat "$T/recipient")
vault_init() { # DIR NAME: new vault with default settings; writer key $T/keys/NAME.wk, catalog $T/cat/NAME.sqlite
    rm -rf "$1" "$T/keys/$2.wk" "$T/cat/$2.sqlite"
    "$VAULTCTL" init --repo "$1" --recipient "$RECIPIENT" --writer-key-out "$T/keys/$2.wk" >/dev/null
}
vbackup() { # DIR NAME: the measured command
    "$VAULTCTL" --repo "$1" --writer-key "$T/keys/$2.wk" --catalog "$T/cat/$2.sqlite" \
        backup files --path /tree --root "$GEN_ROOT" --no-packages --json
}
export -f warm_tree vbackup
export VAULTCTL T TREE GEN_ROOT
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$T/restic-cache
restic_init() { rm -rf "$1" "$RESTIC_CACHE_DIR" && restic -r "$1" init --repository-version 2 -q >/dev/null; }
# the command a user would run (cd to the parent so that restic records the path "tree")
rbackup() { cd "$GEN_ROOT" && restic -r "$1" backup -q --json --host bench tree; }
export -f rbackup

# Before each measurement: flush dirty pages (the previous tool's repo, the build, the generator) so
# that their writeback does not land in this measurement, then warm the page cache with the tree.
N_WARM=0
warm() {
    sync
    measure warm_read "$((++N_WARM))" warm_tree
}

vault_pair() { # REP: first capture into a fresh vault, then an unchanged capture into the same vault
    local rep=$1 v=$T/v
    vault_init "$v" v
    fact "vault_empty_repo_bytes.$rep" "$(du_b "$v")"
    warm
    measure vault_first "$rep" vbackup "$v" v
    cp "$LAST_OUT" "$T/out/vault_first.$rep.json"
    local k
    for k in files dirs symlinks bytes new_bytes stored_bytes packs seconds incomplete; do
        fact "vault_first_$k.$rep" "$(json_field "$LAST_OUT" "$k")"
    done
    fact "vault_first_repo_bytes.$rep" "$(du_b "$v")"
    warm
    measure vault_second "$rep" vbackup "$v" v
    for k in files bytes new_bytes stored_bytes packs seconds incomplete; do
        fact "vault_second_$k.$rep" "$(json_field "$LAST_OUT" "$k")"
    done
    fact "vault_second_repo_bytes.$rep" "$(du_b "$v")"
    # reference: the same unchanged capture without the catalog (a new host, a lost ~/.cache): the
    # catalog is rebuilt from the vault and, with no file cache, every file is read again
    rm -f "$T/cat/v.sqlite"
    warm
    measure vault_second_coldcat "$rep" vbackup "$v" v
    for k in new_bytes packs seconds; do
        fact "vault_second_coldcat_$k.$rep" "$(json_field "$LAST_OUT" "$k")"
    done
    ((rep == REPS)) && [[ -n ${BENCH_DIAG:-} ]] && return 0 # kept for the diagnostics
    rm -rf "$v"
}
restic_pair() { # REP: restic into a fresh repo, then the unchanged second backup
    local rep=$1 r=$T/r
    restic_init "$r"
    fact "restic_empty_repo_bytes.$rep" "$(du_b "$r")"
    warm
    measure restic_first "$rep" rbackup "$r"
    local k
    for k in files_new total_bytes_processed data_added total_duration; do
        fact "restic_first_$k.$rep" "$(restic_field "$LAST_OUT" "$k")"
    done
    fact "restic_first_repo_bytes.$rep" "$(du_b "$r")"
    warm
    measure restic_second "$rep" rbackup "$r"
    for k in files_unmodified files_new files_changed data_added total_duration; do
        fact "restic_second_$k.$rep" "$(restic_field "$LAST_OUT" "$k")"
    done
    fact "restic_second_repo_bytes.$rep" "$(du_b "$r")"
    rm -rf "$r" "$RESTIC_CACHE_DIR"
}

for ((rep = 1; rep <= REPS; rep++)); do
    # alternate which tool goes first, so that neither always runs right after the other's writes
    if ((rep % 2)); then
        log "repetition $rep/$REPS: vaultctl, then restic"
        vault_pair "$rep"
        restic_pair "$rep"
    else
        log "repetition $rep/$REPS: restic, then vaultctl"
        restic_pair "$rep"
        vault_pair "$rep"
    fi
done

# ---------------------------------------------------------------------------------------------
# optional diagnostics (not timed): where the time of a capture goes
if [[ -n ${BENCH_DIAG:-} ]]; then
    log "diagnostics: strace -c and perf of an unchanged capture and of a first capture"
    # (the vault $T/v of the last repetition holds three captures and its catalog the file cache)
    fact diag "yes"
    warm_tree
    strace -c -f -o "$T/diag/strace_second.txt" "$VAULTCTL" --repo "$T/v" --writer-key "$T/keys/v.wk" \
        --catalog "$T/cat/v.sqlite" backup files --path /tree --root "$GEN_ROOT" --no-packages --json >/dev/null
    vault_init "$T/v-diag" v-diag
    warm_tree
    strace -c -f -o "$T/diag/strace_first.txt" "$VAULTCTL" --repo "$T/v-diag" --writer-key "$T/keys/v-diag.wk" \
        --catalog "$T/cat/v-diag.sqlite" backup files --path /tree --root "$GEN_ROOT" --no-packages --json >/dev/null
    # keep the header, the 15 busiest syscalls and the total (futex/epoll time is threads waiting)
    for f in "$T/diag/strace_second.txt" "$T/diag/strace_first.txt"; do
        grep -E '^(%|-| )' "$f" | awk 'NR <= 17 || / total$/' >"$f.top" && mv "$f.top" "$f"
    done
    if need perf; then
        # perf names threads by comm: "vaultctl" is the main thread and the packer thread (zstd,
        # encryption), "tokio-rt-worker" the walker (read, hash, chunk) and the uploader
        diag_repo="" diag_name=""
        for which in second first; do
            if [[ $which == first ]]; then
                vault_init "$T/v-diag" v-diag
                diag_repo=$T/v-diag diag_name=v-diag
            else
                diag_repo=$T/v diag_name=v
            fi
            warm_tree
            # the unchanged capture is short: record call graphs, to attribute time to whole functions
            perf_cg=()
            [[ $which == second ]] && perf_cg=(--call-graph dwarf,32768)
            perf record -q -F 999 "${perf_cg[@]}" -o "$T/diag/perf_$which.data" "$VAULTCTL" --repo "$diag_repo" \
                --writer-key "$T/keys/$diag_name.wk" --catalog "$T/cat/$diag_name.sqlite" \
                backup files --path /tree --root "$GEN_ROOT" --no-packages --json >/dev/null 2>"$T/diag/perf_$which.err" || true
            perf report -i "$T/diag/perf_$which.data" --no-children --sort comm,dso,symbol --stdio -g none 2>/dev/null |
                grep '%' | head -n 25 | sed 's/ *- *- *$//' >"$T/diag/perf_$which.txt" || true
            if [[ $which == second ]]; then
                # share of all samples spent in each main step, callees included (steps nest: walk
                # includes statx and read_xattrs; main includes commit and the file-cache write)
                perf report -i "$T/diag/perf_$which.data" --children --sort symbol --stdio -g none 2>/dev/null |
                    grep '%' | sed -E 's/ +- +- *$//; s/ +/ /g' |
                    grep -E '\] (vault::source::files::walk|vault::catalog::Catalog::[a-z_]+|vault::ops::backup::commit::\{\{closure\}\}|vault::format::_::<impl serde_core::ser::Serialize for vault::format::FileTree>::serialize|vault::source::files::read_xattrs|std::sys::fs::unix::try_statx|vault::repo::Vault::[a-z_]+(::\{\{closure\}\})?|vault::source::files::read_content|vaultctl::main)$' |
                    awk '!seen[$NF]++' >"$T/diag/perf_second_by_function.txt" || true
            fi
            rm -f "$T/diag/perf_$which.data"
        done
    fi
    rm -rf "$T/v" "$T/v-diag"
fi

fact loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
fact top_end "$(ps -eo pcpu,comm --sort=-pcpu | sed -n 2,6p | awk '{printf "%s%s %s%%", (NR>1?", ":""), $2, $1}')"
fact finished "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
fact command "$([[ $NFILES != 20000 ]] && printf 'BENCH_FILES=%s ' "$NFILES")$([[ $NBYTES != 500000000 ]] && printf 'BENCH_BYTES=%s ' "$NBYTES")$([[ $SEED != 1 ]] && printf 'BENCH_SEED=%s ' "$SEED")BENCH_REPS=$REPS$([[ -n ${BENCH_DIAG:-} ]] && printf ' BENCH_DIAG=1') bench/files.sh"
stop_pid "$LOAD_PID"
LOAD_PID=""
mkdir -p "$OUTDIR"
python3 "$ROOT/bench/report_files.py" --measure "$MEASURE" --facts "$FACTS" --load "$T/load.txt" --diag "$T/diag" --outdir "$OUTDIR"
