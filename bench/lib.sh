# Helpers shared by the bench scripts (sourced, not run). Each script keeps its own `measure`.

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

need() { command -v "$1" >/dev/null 2>&1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_etcd DATA_DIR LOG: one etcd member named bench on free 127.0.0.1 ports (backend quota
# 8 GiB), healthy when it returns; sets EP (client URL), PEER_PORT and ETCD_PID.
start_etcd() {
    local cport i
    cport=$(free_port)
    PEER_PORT=$(free_port)
    EP=http://127.0.0.1:$cport
    etcd --name bench --data-dir "$1" --listen-client-urls "$EP" --advertise-client-urls "$EP" \
        --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
        --initial-cluster "bench=http://127.0.0.1:$PEER_PORT" --quota-backend-bytes $((8 << 30)) \
        --logger zap --log-level warn >"$2" 2>&1 &
    ETCD_PID=$!
    for ((i = 0; i < 600; i++)); do
        curl -s -m 1 "$EP/health" 2>/dev/null | grep -q '"health":"true"' && return 0
        sleep 0.05
    done
    die "etcd on $EP did not become healthy (log: $2)"
}
if [[ ! -x /usr/bin/time ]]; then
    log "installing GNU time (Debian package 'time') for peak-RSS measurement"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >/dev/null; }
fi

stop_pid() { # stop one process that this script started, by PID
    local pid=$1 i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# Sum of file sizes under a directory (directory entries are not counted).
du_b() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {printf "%d\n", s}'; }

# fact NAME VALUE: one line of the run's facts file ($FACTS).
fact() { printf '%s\t%s\n' "$1" "$2" >>"$FACTS"; }

# measure LABEL OK_CODES CMD...: run CMD under GNU time (exit codes in OK_CODES, e.g. "0 3", are
# success; any other stops the run) and append "label wall_s user_s sys_s maxrss_kb exit" to
# $MEASURE; its stdout, stderr and time report go to $T/out/LABEL.{out,err,time}, stdout's path also
# to $LAST_OUT.
LAST_OUT=""
measure() {
    local label=$1 ok=$2 o="$T/out/$1" t0 t1 code=0
    shift 2
    t0=$(date +%s%N)
    /usr/bin/time -v -o "$o.time" "$@" >"$o.out" 2>"$o.err" || code=$?
    t1=$(date +%s%N)
    if [[ " $ok " != *" $code "* ]]; then
        log "FAILED ($code): $label: $*"
        tail -n 20 "$o.err" >&2
        exit 1
    fi
    awk -F': ' -v label="$label" -v ns="$((t1 - t0))" -v code="$code" '
        /User time \(seconds\)/ {u=$2} /System time \(seconds\)/ {s=$2} /Maximum resident set size/ {m=$2}
        END {printf "%s\t%.3f\t%s\t%s\t%s\t%s\n", label, ns/1e9, u, s, m, code}' "$o.time" >>"$MEASURE"
    LAST_OUT="$o.out"
    log "  $label: $(tail -n 1 "$MEASURE" | cut -f2) s, peak RSS $(($(tail -n 1 "$MEASURE" | cut -f5) / 1024)) MiB"
}

# The facts every bench run records about the machine and the code ($ROOT).
host_facts() {
    fact started "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    fact git_commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    fact git_dirty "$(git -C "$ROOT" status --porcelain -- vault vaultctl Cargo.lock 2>/dev/null | wc -l)"
    fact git_diff_sha "$(git -C "$ROOT" diff HEAD -- vault vaultctl Cargo.lock 2>/dev/null | sha256sum | cut -c1-12)"
    fact host_cpus "$(nproc)"
    fact host_mem_gib "$(awk '/MemTotal/{printf "%.1f", $2/1048576}' /proc/meminfo)"
    fact cpu_model "$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
    fact loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"
    fact top_start "$(ps -eo pcpu,comm --sort=-pcpu | sed -n 2,6p | awk '{printf "%s%s %s%%", (NR>1?", ":""), $2, $1}')"
}

# The facts about the measured binary ($VAULTCTL) and the work dir ($T); call after the build.
build_facts() {
    fact vaultctl_version "$("$VAULTCTL" --version | awk '{print $2}')"
    fact vaultctl_binary "$(sha256sum "$VAULTCTL" | cut -c1-12), built $(date -u -r "$VAULTCTL" +%Y-%m-%dT%H:%M:%SZ)$([[ -n ${BENCH_NO_BUILD:-} ]] && echo ' (BENCH_NO_BUILD: not rebuilt by this run)')"
    fact workdir_fs "$(df -T "$T" | awk 'NR==2{print $2" "$1}')"
}

# Sample the load average every 2 s into $T/load.txt for the whole run; sets LOAD_PID.
start_load_sampler() {
    (while :; do
        printf '%s %s\n' "$(date +%s)" "$(cut -d' ' -f1 /proc/loadavg)"
        sleep 2
    done) >"$T/load.txt" &
    LOAD_PID=$!
}
