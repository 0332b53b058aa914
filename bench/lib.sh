# Helpers shared by the bench scripts (sourced, not run). Each script keeps its own `measure`.

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

need() { command -v "$1" >/dev/null 2>&1; }
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
