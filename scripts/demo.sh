#!/usr/bin/env bash
# A real demo on a fresh Debian machine: installs what is missing, starts a throwaway etcd,
# makes a local vault with a new key, backs up, verifies, lets vaultd take scheduled snapshots for a
# few seconds (and asks it how it went), applies its retention policy and prunes, audits, restores to a data dir, starts etcd on the restored data
# dir and shows the keys. Everything lives in a temp dir; only the etcd
# processes this script started are stopped.
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

echo "== vaultd: an etcd snapshot and this host's demo files every 2 seconds for a few seconds; a verify job run on request"
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
schedule = "*/2 * * * * *"
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
sleep 7
set -x
"$VAULTCTL" status --daemon-config "$WORK/vaultd.toml"
"$VAULTCTL" run verify --wait --daemon-config "$WORK/vaultd.toml"
set +x
curl -s -H "Authorization: Bearer $(cat "$WORK/api.token")" "http://127.0.0.1:$API/metrics" | grep -E '^vault_(job_runs_total\{.*success|repository_size_bytes|snapshots)' || true
kill -TERM "$VAULTD_PID"; wait "$VAULTD_PID" || true
echo "   vaultd log: $WORK/vaultd.log"
echo "== retention: vaultd forgot all but the 2 newest etcd snapshots after its runs; prune deletes their data, the audit reports"
set -x
"$VAULTCTL" --writer-key "$WORK/writer.key" snapshots
"$VAULTCTL" --writer-key "$WORK/writer.key" deletion-log
"$VAULTCTL" --writer-key "$WORK/writer.key" --identity "$WORK/operator.age" prune --grace 0
"$VAULTCTL" --writer-key "$WORK/writer.key" audit --since 1h --html "$WORK/audit.html" || echo "(audit exit $?: a control is not met)"
set +x
set -x
"$VAULTCTL" --identity "$WORK/operator.age" etcd restore latest --data-dir "$WORK/restored.etcd" \
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
echo "== demo done: $n keys restored; files are in $WORK"
