#!/usr/bin/env bash
# A real demo on a fresh Debian machine: installs what is missing, starts a throwaway etcd,
# makes a local vault with a new key, backs up, verifies, runs vaultd for a few seconds (scheduled
# host-file captures, etcd snapshots on request with continuous capture of every change between
# them, retention after each run; asks it how it went), makes a "bad change" (deletes a Secret),
# prunes, audits, finds the bad change with `etcd history`, restores etcd to the revision just
# before it, starts etcd on the restored data dir and shows the keys. Everything lives in a temp
# dir; only the processes this script started are stopped.
# Usage: bash scripts/demo.sh
#        VAULTCTL=dist/vaultctl VAULTD=dist/vaultd bash scripts/demo.sh   (given binaries, e.g. a release)
set -euo pipefail
if [ -n "${VAULTCTL:-}" ] || [ -n "${VAULTD:-}" ]; then
  if [ ! -x "${VAULTCTL:-}" ] || [ ! -x "${VAULTD:-}" ]; then
    echo "VAULTCTL and VAULTD must both name executables (or set neither to build them)" >&2; exit 1
  fi
  VAULTCTL=$(realpath "$VAULTCTL"); VAULTD=$(realpath "$VAULTD")
fi
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
install_demo_deps

if [ -n "${VAULTCTL:-}" ]; then
  echo "== using $VAULTCTL and $VAULTD"
else
  echo "== building vaultctl and vaultd"
  cargo build -q -p vaultctl -p vaultd
  VAULTCTL="$PWD/target/debug/vaultctl"
  VAULTD="$PWD/target/debug/vaultd"
fi

WORK=$(mktemp -d /tmp/vault-demo.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_healthy() {
  for _ in $(seq 1 100); do
    ETCDCTL_API=3 etcdctl --endpoints "$1" endpoint health >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "etcd at $1 did not become healthy" >&2; return 1
}

C1=$(free_port); P1=$(free_port); C2=$(free_port); P2=$(free_port)
echo "== starting a throwaway etcd on 127.0.0.1:$C1 (data in $WORK)"
etcd --name demo --data-dir "$WORK/etcd" \
  --listen-client-urls "http://127.0.0.1:$C1" --advertise-client-urls "http://127.0.0.1:$C1" \
  --listen-peer-urls "http://127.0.0.1:$P1" --initial-advertise-peer-urls "http://127.0.0.1:$P1" \
  --initial-cluster "demo=http://127.0.0.1:$P1" >"$WORK/etcd.log" 2>&1 &
PIDS+=($!)
wait_healthy "http://127.0.0.1:$C1"
export ETCDCTL_API=3
for ns in default kube-system openshift-infra; do
  for i in 1 2 3; do
    etcdctl --endpoints "http://127.0.0.1:$C1" put "/registry/configmaps/$ns/demo-$i" "{\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"demo-$i\",\"namespace\":\"$ns\"}}" >/dev/null
  done
done
etcdctl --endpoints "http://127.0.0.1:$C1" put /registry/secrets/kube-system/ca-key "{\"kind\":\"Secret\",\"data\":{\"tls.key\":\"c2VjcmV0\"}}" >/dev/null
echo "   wrote 10 keys"

set -x
"$VAULTCTL" keygen --out "$WORK/operator.age"
"$VAULTCTL" init --repo "$WORK/vault" --recipient "$(grep -o 'age1[0-9a-z]*' "$WORK/operator.age")" --writer-key-out "$WORK/writer.key"
export VAULT_REPO="$WORK/vault" VAULT_CATALOG="$WORK/catalog.sqlite"
"$VAULTCTL" --writer-key "$WORK/writer.key" backup etcd --endpoints "http://127.0.0.1:$C1" --tag reason=demo
"$VAULTCTL" --writer-key "$WORK/writer.key" snapshots
"$VAULTCTL" --writer-key "$WORK/writer.key" verify --all --read-data
"$VAULTCTL" --identity "$WORK/operator.age" verify --all
set +x

echo "== vaultd: this host's demo files every 2 seconds, etcd snapshots on request with every change in between captured each second, a verify job run on request"
mkdir -p "$WORK/host/etc/origin/master"
echo "kind: MasterConfig" > "$WORK/host/etc/origin/master/master-config.yaml"
head -c 24 /dev/urandom | base64 > "$WORK/api.token"; chmod 600 "$WORK/api.token"
API=$(free_port)
cat > "$WORK/vaultd.toml" <<CONF
repo = "$WORK/vault"
writer_key = "$WORK/writer.key"
catalog = "$WORK/vaultd-catalog.sqlite"
[http]
listen = "127.0.0.1:$API"
token_file = "$WORK/api.token"
[[job]]
name = "etcd"
kind = "etcd-v3"
schedule = "0 0 3 * * *"
deltas_every_secs = 1
deltas_lease_secs = 6
[job.etcd]
endpoints = ["http://127.0.0.1:$C1"]
[job.retention]
keep_last = 2
[[job]]
name = "master-files"
kind = "files"
schedule = "*/2 * * * * *"
paths = ["/etc/origin"]
root = "$WORK/host"
[[job]]
name = "verify"
kind = "verify"
schedule = "0 0 4 * * *"
read_data_percent = 100
CONF
chmod 600 "$WORK/vaultd.toml"
set -x
"$VAULTD" check-config --config "$WORK/vaultd.toml"
set +x
"$VAULTD" run --config "$WORK/vaultd.toml" 2>"$WORK/vaultd.log" &
VAULTD_PID=$!
PIDS+=("$VAULTD_PID")
sleep 2
set -x
for i in 1 2 3; do "$VAULTCTL" run etcd --wait --daemon-config "$WORK/vaultd.toml"; done
set +x
sleep 2
echo "== a change, then a bad change: the Secret kube-system/ca-key is deleted"
etcdctl --endpoints "http://127.0.0.1:$C1" put /registry/configmaps/default/demo-4 '{"kind":"ConfigMap","metadata":{"name":"demo-4"}}' >/dev/null
etcdctl --endpoints "http://127.0.0.1:$C1" del /registry/secrets/kube-system/ca-key
sleep 3
set -x
"$VAULTCTL" status --daemon-config "$WORK/vaultd.toml"
"$VAULTCTL" run verify --wait --daemon-config "$WORK/vaultd.toml"
set +x
curl -s -H "Authorization: Bearer $(cat "$WORK/api.token")" "http://127.0.0.1:$API/metrics" | grep -E '^vault_(job_runs_total\{.*success|repository_size_bytes|snapshots|etcd_deltas_(recovery_point_seconds|segments_total))' || true
kill -TERM "$VAULTD_PID"; wait "$VAULTD_PID" || true
echo "   vaultd log: $WORK/vaultd.log"
echo "== retention: vaultd forgot all but the 2 newest etcd snapshots (with their chains of changes) after its runs; prune deletes their data, the audit reports"
set -x
"$VAULTCTL" --writer-key "$WORK/writer.key" snapshots
"$VAULTCTL" --writer-key "$WORK/writer.key" deletion-log
"$VAULTCTL" --writer-key "$WORK/writer.key" --identity "$WORK/operator.age" prune --grace 0
"$VAULTCTL" --writer-key "$WORK/writer.key" audit --since 1h --html "$WORK/audit.html" || echo "(audit exit $?: a control is not met)"
set +x
echo "== which change deleted the Secret? (etcd history reads the captured changes: it needs the identity)"
set -x
"$VAULTCTL" --identity "$WORK/operator.age" etcd history --prefix /registry/secrets/ --since 1h
set +x
BAD=$("$VAULTCTL" --identity "$WORK/operator.age" --json etcd history --prefix /registry/secrets/ --since 1h |
  python3 -c 'import json,sys; print([c["revision"] for c in json.load(sys.stdin)["changes"] if c["op"] == "delete"][-1])')
echo "== restore etcd as it was at revision $((BAD - 1)), just before the bad change"
set -x
"$VAULTCTL" --identity "$WORK/operator.age" etcd restore --revision "$((BAD - 1))" --data-dir "$WORK/restored.etcd" \
  --name restored --initial-cluster "restored=http://127.0.0.1:$P2" --initial-cluster-token demo-restore \
  --initial-advertise-peer-urls "http://127.0.0.1:$P2"
set +x

echo "== starting etcd on the restored data dir (127.0.0.1:$C2)"
etcd --name restored --data-dir "$WORK/restored.etcd" \
  --listen-client-urls "http://127.0.0.1:$C2" --advertise-client-urls "http://127.0.0.1:$C2" \
  --listen-peer-urls "http://127.0.0.1:$P2" --initial-advertise-peer-urls "http://127.0.0.1:$P2" >"$WORK/restored.log" 2>&1 &
PIDS+=($!)
wait_healthy "http://127.0.0.1:$C2"
echo "== keys in the restored etcd:"
etcdctl --endpoints "http://127.0.0.1:$C2" get --prefix /registry --keys-only | grep .
n=$(etcdctl --endpoints "http://127.0.0.1:$C2" get --prefix /registry --keys-only | grep -c .)
# 10 keys written at the start, plus demo-4 written just before the bad change.
[ "$n" = 11 ] || { echo "demo FAILED: the restored etcd has $n keys under /registry, expected 11" >&2; exit 1; }
etcdctl --endpoints "http://127.0.0.1:$C2" get /registry/secrets/kube-system/ca-key --print-value-only | grep -q tls.key ||
  { echo "demo FAILED: the deleted Secret kube-system/ca-key is not in the restored etcd" >&2; exit 1; }
etcdctl --endpoints "http://127.0.0.1:$C2" get /registry/configmaps/default/demo-4 --keys-only | grep -q demo-4 ||
  { echo "demo FAILED: demo-4, written just before the bad change, is not in the restored etcd" >&2; exit 1; }
echo "== demo done: $n keys restored, the deleted Secret is back and demo-4 (written just before) is there; files are in $WORK"
