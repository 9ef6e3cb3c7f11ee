# shellcheck shell=bash
# scripts/test-daemon.sh: a throwaway clawdspaced for the script tests
# (scripts/api-fuzz, scripts/test-dashboard). Sourced, not run; needs root.
#
#   test_daemon_start TAG   builds clawdspaced and clawdspace-runtime (debug),
#                           imports busybox:latest (the default image) into a
#                           fresh state dir /var/tmp/clawdspace-TAG.*, starts
#                           the daemon on loopback port $TD_PORT (a free one
#                           unless set) with cgroup parent /clawdspace-TAG-$$
#                           and a random key, and waits for /api/health. Sets
#                           TD_PORT, TD_KEY, TD_URL, TD_STATE, TD_PID, and
#                           installs test_daemon_cleanup as the EXIT trap.
#   test_daemon_cleanup     destroys the daemon's spaces, stops it (its own
#                           pid only), removes its cgroup parent and state
#                           dir. Safe to call twice.

test_daemon_cleanup() {
  if [ -n "${TD_PID:-}" ] && kill -0 "$TD_PID" 2>/dev/null; then
    local n
    for n in $(curl -fsS -H "Authorization: Bearer $TD_KEY" "$TD_URL/api/spaces" \
                 | python3 -c 'import json,sys; [print(s["name"]) for s in json.load(sys.stdin)["spaces"]]' 2>/dev/null); do
      curl -fsS -X DELETE -H "Authorization: Bearer $TD_KEY" "$TD_URL/api/spaces/$n" >/dev/null || true
    done
    kill "$TD_PID"; wait "$TD_PID" 2>/dev/null || true
  fi
  TD_PID=
  # Whatever the daemon left (its spaces' processes, network, mounts).
  if [ -n "${TD_STATE:-}" ] && [ -d "$TD_STATE/state" ]; then
    CLAWDSPACE_STATE_DIR=$TD_STATE/state CLAWDSPACE_CGROUP_PARENT=${TD_CG:-/none} \
      target/debug/clawdspace-runtime purge 2>/dev/null || true
  fi
  local d
  for d in /sys/fs/cgroup/*"${TD_CG:-/none}" /sys/fs/cgroup"${TD_CG:-/none}"; do
    [ -d "$d" ] && rmdir "$d" 2>/dev/null || true
  done
  [ -n "${TD_STATE:-}" ] && rm -rf "$TD_STATE"
  TD_STATE=
}

test_daemon_start() {
  local tag=$1
  TD_PORT=${TD_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
  TD_KEY=$tag-key-$$-$RANDOM
  TD_URL=http://127.0.0.1:$TD_PORT
  TD_CG=/clawdspace-$tag-$$
  TD_STATE=$(mktemp -d "/var/tmp/clawdspace-$tag.XXXXXX")
  TD_PID=
  trap test_daemon_cleanup EXIT
  cargo build -q -p clawdspace-api -p clawdspace-runtime --bin clawdspaced --bin clawdspace-runtime
  CLAWDSPACE_STATE_DIR=$TD_STATE/state CLAWDSPACE_CGROUP_PARENT=$TD_CG \
    target/debug/clawdspace-runtime import-busybox busybox:latest >/dev/null
  # A bridge and subnet of its own (networked spaces; never a real daemon's).
  local h
  h=$(printf '%06x' $((RANDOM * 32768 + RANDOM)))
  PORT=$TD_PORT API_KEY=$TD_KEY CLAWDSPACE_STATE_DIR=$TD_STATE/state CLAWDSPACE_CGROUP_PARENT=$TD_CG \
    CLAWDSPACE_BRIDGE=cst$h CLAWDSPACE_NETWORK_LINGER_MS=0 CLAWDSPACE_SUBNET=10.$((16#${h:0:2} % 100 + 100)).$((16#${h:2:2})).0/24 \
    CLAWDSPACE_IMAGE=busybox:latest CLAWDSPACE_DOCKER_MIRROR=127.0.0.1:1 CLAWDSPACE_WORKERS=2 \
    CLAWDSPACE_LOG=warn target/debug/clawdspaced >"$TD_STATE/daemon.log" 2>&1 &
  TD_PID=$!
  local _
  for _ in $(seq 100); do curl -fsS "$TD_URL/api/health" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "test daemon did not answer on $TD_URL; its log:" >&2
  tail -n 20 "$TD_STATE/daemon.log" >&2
  return 1
}

# A fleet of throwaway daemons (scripts/test-dashboard's fleet part):
#
#   fleet_start N   starts N daemons like test_daemon_start's, named node1..N,
#                   on 127.0.0.1..N with one free port (CLAWDSPACE_LISTEN),
#                   each with the others in CLAWDSPACE_NODES (refreshed every
#                   500 ms) and one key. Sets FL_PORT, FL_KEY, FL_URLS[],
#                   FL_PIDS[], FL_STATES[], FL_CGS[]; add fleet_cleanup to
#                   the EXIT trap.
#   fleet_cleanup   like test_daemon_cleanup, for each of them.

fleet_cleanup() {
  local i n
  for i in "${!FL_PIDS[@]}"; do
    local pid=${FL_PIDS[$i]} url=${FL_URLS[$i]}
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      for n in $(curl -fsS -H "Authorization: Bearer $FL_KEY" "$url/api/spaces" \
                   | python3 -c 'import json,sys; [print(s["name"]) for s in json.load(sys.stdin)["spaces"]]' 2>/dev/null); do
        curl -fsS -X DELETE -H "Authorization: Bearer $FL_KEY" "$url/api/spaces/$n" >/dev/null || true
      done
      kill "$pid"; wait "$pid" 2>/dev/null || true
    fi
    FL_PIDS[$i]=
    local state=${FL_STATES[$i]:-} cg=${FL_CGS[$i]:-/none}
    if [ -n "$state" ] && [ -d "$state/state" ]; then
      CLAWDSPACE_STATE_DIR=$state/state CLAWDSPACE_CGROUP_PARENT=$cg \
        target/debug/clawdspace-runtime purge 2>/dev/null || true
    fi
    local d
    for d in /sys/fs/cgroup/*"$cg" /sys/fs/cgroup"$cg"; do
      [ -d "$d" ] && rmdir "$d" 2>/dev/null || true
    done
    [ -n "$state" ] && rm -rf "$state"
    FL_STATES[$i]=
  done
}

# fleet_run I: (re)starts daemon I (0-based) of the fleet.
fleet_run() {
  local i=$1 ip=127.0.0.$(($1 + 1)) nodes="" j h
  for ((j = 0; j < FL_N; j++)); do
    [ "$j" = "$i" ] || nodes+="node$((j + 1))=http://127.0.0.$((j + 1)):$FL_PORT,"
  done
  h=$(printf '%06x' $((RANDOM * 32768 + RANDOM)))
  PORT=$FL_PORT CLAWDSPACE_LISTEN=$ip:$FL_PORT CLAWDSPACE_NODE_NAME=node$((i + 1)) \
    CLAWDSPACE_NODES=${nodes%,} NODES_REFRESH_MS=500 CLAWDSPACE_TAILSCALE= \
    API_KEY=$FL_KEY CLAWDSPACE_STATE_DIR=${FL_STATES[$i]}/state CLAWDSPACE_CGROUP_PARENT=${FL_CGS[$i]} \
    CLAWDSPACE_BRIDGE=csf$h CLAWDSPACE_NETWORK_LINGER_MS=0 CLAWDSPACE_SUBNET=10.$((16#${h:0:2} % 100 + 100)).$((16#${h:2:2})).0/24 \
    CLAWDSPACE_IMAGE=busybox:latest CLAWDSPACE_DOCKER_MIRROR=127.0.0.1:1 CLAWDSPACE_WORKERS=2 \
    CLAWDSPACE_LOG=warn target/debug/clawdspaced >>"${FL_STATES[$i]}/daemon.log" 2>&1 &
  FL_PIDS[$i]=$!
  FL_URLS[$i]=http://$ip:$FL_PORT
  local _
  for _ in $(seq 100); do curl -fsS "${FL_URLS[$i]}/api/health" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "fleet daemon $i did not answer on ${FL_URLS[$i]}; its log:" >&2
  tail -n 20 "${FL_STATES[$i]}/daemon.log" >&2
  return 1
}

fleet_start() {
  FL_N=$1
  FL_KEY=fleet-key-$$-$RANDOM
  FL_PIDS=() FL_URLS=() FL_STATES=() FL_CGS=()
  # One port free on every address.
  FL_PORT=$(python3 - "$FL_N" <<'PY'
import socket, sys
n = int(sys.argv[1])
for _ in range(50):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    try:
        for i in range(2, n + 1):
            t = socket.socket(); t.bind((f"127.0.0.{i}", port)); t.close()
        print(port); break
    except OSError:
        pass
PY
)
  cargo build -q -p clawdspace-api -p clawdspace-runtime --bin clawdspaced --bin clawdspace-runtime
  local i
  for ((i = 0; i < FL_N; i++)); do
    FL_CGS[$i]=/clawdspace-fleet-$$-$i
    FL_STATES[$i]=$(mktemp -d "/var/tmp/clawdspace-fleet.XXXXXX")
    CLAWDSPACE_STATE_DIR=${FL_STATES[$i]}/state CLAWDSPACE_CGROUP_PARENT=${FL_CGS[$i]} \
      target/debug/clawdspace-runtime import-busybox busybox:latest >/dev/null
  done
  for ((i = 0; i < FL_N; i++)); do fleet_run "$i" || return 1; done
}
