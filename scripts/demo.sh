#!/usr/bin/env bash
# Sunfish-rs aggregation demo: one sunfish-server and two sunfish-agents on loopback.
#
#   127.0.0.1:8000  sunfish-server (memory storage, authentication off)
#   127.0.0.1:8001  sunfish-agent CXL-FM    serving sunfish-agent/mockups/cxl-fabric-manager
#   127.0.0.1:8002  sunfish-agent CXL-APPL  serving sunfish-agent/mockups/cxl-appliance
#
# Both agents register with the server and upload their inventories; the server merges the two
# copies of Fabric "CXL" (same UUID) and links the boundary ports of switches CXL1 and CXL2
# (docs/AGGREGATION.md). The script prints the merged fabric and the inter-switch links, then
# stops everything it started. With --keep it leaves the three services running until Ctrl-C.
#
# Usage: scripts/demo.sh [--keep] [--debug]      (needs cargo, curl, python3)
#   --debug  build and run the dev profile (target/debug) instead of release: much quicker to
#            build on a fresh checkout.
# SUNFISH_DEMO_AGENT=/path/to/agent runs another agent executable with the same interface.
# SUNFISH_DEMO_PORT=N moves the three services to 127.0.0.1:N, N+1 and N+2 (default 8000).
set -euo pipefail

KEEP=0
PROFILE=release
for arg in "$@"; do
    case "$arg" in
        --keep) KEEP=1 ;;
        --debug) PROFILE=debug ;;
        *) echo "usage: $0 [--keep] [--debug]" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PORT=${SUNFISH_DEMO_PORT:-8000}
case "$PORT" in
    '' | *[!0-9]*) echo "SUNFISH_DEMO_PORT must be a port number" >&2; exit 2 ;;
esac
SERVER=127.0.0.1:$PORT
FM=127.0.0.1:$((PORT + 1))
APPL=127.0.0.1:$((PORT + 2))
MOCKUPS=$ROOT/sunfish-agent/mockups
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE
SERVER_BIN=$TARGET/sunfish-server
# Another agent executable with the same interface can stand in: SUNFISH_DEMO_AGENT=/path/to/it.
AGENT_BIN=${SUNFISH_DEMO_AGENT:-$TARGET/sunfish-agent}
FABRIC=/redfish/v1/Fabrics/CXL
TIMEOUT=30

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/sunfish-demo.XXXXXX")
PIDS=()

cleanup() {
    local status=$?
    if [ "$KEEP" -eq 1 ] && { [ "$status" -eq 130 ] || [ "$status" -eq 143 ]; }; then
        status=0 # Ctrl-C (or a TERM) ends a --keep run normally
    fi
    trap - EXIT INT TERM
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    local log kept=0
    if [ "$status" -ne 0 ]; then
        for log in "$LOGS"/*.log; do
            [ -e "$log" ] || continue
            echo "---- last lines of $log" >&2
            tail -n 20 "$log" >&2
            kept=1
        done
    fi
    if [ "$kept" -eq 1 ]; then
        echo "demo failed; logs kept in $LOGS" >&2
    else
        rm -rf "$LOGS"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Fails when something already answers on ADDR (an earlier run still up, another service).
port_free() {
    local rc=0
    curl -s -o /dev/null --max-time 1 "http://$1/" || rc=$?
    if [ "$rc" -ne 7 ]; then
        echo "127.0.0.1 port ${1##*:} is in use (curl exit $rc); stop whatever listens there first" >&2
        exit 1
    fi
}

# Polls until the command succeeds; fails with MESSAGE after TIMEOUT seconds.
wait_for() {
    local message=$1
    shift
    local deadline=$((SECONDS + TIMEOUT))
    until "$@"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "timed out after ${TIMEOUT}s: $message" >&2
            exit 1
        fi
        for pid in "${PIDS[@]}"; do
            if ! kill -0 "$pid" 2>/dev/null; then
                echo "a demo process (pid $pid) exited early: $message" >&2
                exit 1
            fi
        done
        sleep 0.5
    done
}

get() { curl -sf --max-time 5 "http://$SERVER$1"; }
answers() { curl -s -o /dev/null --max-time 2 "http://$1/redfish/v1"; }
# Whether the Fabric JSON on stdin lists a sharing agent.
lists_sharer() {
    python3 -c '
import json, sys
rm = json.load(sys.stdin).get("Oem", {}).get("Sunfish_RM", {})
sys.exit(0 if rm.get("FabricSharedWith") else 1)' 2>/dev/null
}
fabric_shared() { get "$FABRIC" 2>/dev/null | lists_sharer; }
# The fabric manager's whole inventory is on the server: fabric, switch, hosts, chassis.
fm_uploaded() {
    get "$FABRIC/Switches/CXL1/Ports/F4" >/dev/null 2>&1 && get /redfish/v1/Systems/Host4 >/dev/null 2>&1 &&
        get /redfish/v1/Chassis/SwitchShelf >/dev/null 2>&1
}
ports_linked() {
    get "$FABRIC/Switches/CXL1/Ports/F1" 2>/dev/null | python3 -c '
import json, sys
links = json.load(sys.stdin).get("Links", {}).get("ConnectedSwitchPorts", [{}])
sys.exit(0 if links and links[0].get("@odata.id", "").endswith("/Switches/CXL2/Ports/F1") else 1)' 2>/dev/null
}

start_agent() { # NAME LISTEN TREE
    local name=$1 listen=$2 tree=$3
    # The agent serves the tree named by SUNFISH_AGENT__STORAGE__SEED (memory storage) and takes
    # --listen, --upstream and --name (its ConnectionMethod name); conf/agent.toml has the rest.
    SUNFISH_AGENT__STORAGE__BACKEND=memory SUNFISH_AGENT__STORAGE__SEED="$tree" \
        "$AGENT_BIN" --listen "$listen" --upstream "http://$SERVER" --name "$name" >"$LOGS/$name.log" 2>&1 &
    PIDS+=("$!")
    echo "   agent $name on http://$listen (pid $!, tree ${tree#"$ROOT"/})"
}

echo "== building sunfish-server and sunfish-agent ($PROFILE)"
if [ "$PROFILE" = release ]; then
    cargo build --release -p sunfish-server -p sunfish-agent
else
    cargo build -p sunfish-server -p sunfish-agent
fi
for bin in "$SERVER_BIN" "$AGENT_BIN"; do
    if [ ! -x "$bin" ]; then
        echo "no executable at $bin" >&2
        exit 1
    fi
done

for addr in "$SERVER" "$FM" "$APPL"; do
    port_free "$addr"
done

echo "== starting"
SUNFISH__SERVER__LISTEN=$SERVER SUNFISH__STORAGE__BACKEND=memory SUNFISH__AUTH__ENABLED=false \
    "$SERVER_BIN" >"$LOGS/server.log" 2>&1 &
PIDS+=("$!")
echo "   sunfish-server on http://$SERVER (pid $!)"
wait_for "sunfish-server did not answer on $SERVER" answers "$SERVER"

# The first agent to upload Fabric CXL owns it; the other one shares it. Starting the fabric
# manager first makes the fabric manager the owner on every run.
start_agent CXL-FM "$FM" "$MOCKUPS/cxl-fabric-manager"
wait_for "the fabric manager's inventory did not reach the server" fm_uploaded
start_agent CXL-APPL "$APPL" "$MOCKUPS/cxl-appliance"

echo "== waiting for both agents to share fabric CXL (up to ${TIMEOUT}s)"
wait_for "$FABRIC has no Oem.Sunfish_RM.FabricSharedWith" fabric_shared
wait_for "CXL1/Ports/F1 is not linked to CXL2/Ports/F1" ports_linked

echo
echo "== GET $FABRIC"
fabric_json=$(get "$FABRIC")
python3 -m json.tool <<<"$fabric_json"
echo
echo "== aggregation sources"
for source in $(get /redfish/v1/AggregationService/AggregationSources | python3 -c '
import json, sys
for m in json.load(sys.stdin)["Members"]:
    print(m["@odata.id"])'); do
    get "$source" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("  %s  %-24s %-9s %s" % (s["Id"], s["HostName"], s["Status"]["State"],
      s["Links"]["ConnectionMethod"]["@odata.id"].rsplit("/", 1)[-1]))'
done
echo
echo "== switches: $(get "$FABRIC/Switches" | python3 -c '
import json, sys
print(" ".join(m["@odata.id"].rsplit("/", 1)[-1] for m in json.load(sys.stdin)["Members"]))')"
echo
echo "== inter-switch boundary port links (agent placeholder -> link set by the server)"
for switch in CXL1 CXL2; do
    for port in F1 F2 F3 F4; do
        get "$FABRIC/Switches/$switch/Ports/$port" | python3 -c '
import json, sys
p = json.load(sys.stdin)
rm = p.get("Oem", {}).get("Sunfish_RM", {})
peer = [l["@odata.id"] for l in p.get("Links", {}).get("ConnectedSwitchPorts", [])]
tx = p.get("CXL", {}).get("LinkPartnerTransmit", {})
name = p["@odata.id"].split("/Switches/")[1]
print("  %-14s PortId %-3s %-20s -> %s" % (name, tx.get("PortId", "?"),
      rm.get("AgentPeerPortURI", "(no placeholder)").split("/Switches/")[-1],
      ", ".join(peer) or "(none)"))'
    done
done
echo
echo "== CXL1/Ports/F1 and CXL2/Ports/F1, Links"
for switch in CXL1 CXL2; do
    get "$FABRIC/Switches/$switch/Ports/F1" | python3 -c '
import json, sys
p = json.load(sys.stdin)
print(json.dumps({"@odata.id": p["@odata.id"], "Links": p.get("Links")}, indent=4))'
done

if ! lists_sharer <<<"$fabric_json"; then
    echo "Fabric CXL lost Oem.Sunfish_RM.FabricSharedWith after both agents had shared it" >&2
    exit 1
fi

if [ "$KEEP" -eq 1 ]; then
    echo
    echo "== running; try: curl -s http://$SERVER$FABRIC/Switches | python3 -m json.tool"
    echo "   logs in $LOGS; Ctrl-C stops the server and both agents"
    wait
fi
