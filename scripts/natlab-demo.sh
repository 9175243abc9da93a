#!/usr/bin/env bash
# The two-terminal rendezvous demo (docs/rendezvous.md "Demo"): a persistent NAT lab with two NATs of your
# choice and our server, and samples/PeerDemo inside each client namespace.
#
# usage (as root, after `dotnet build Relay.sln -c Release`):
#   scripts/natlab-demo.sh up [TYPE_A] [TYPE_B]   build the lab (default: Easy Symmetric) and start the server
#   scripts/natlab-demo.sh peer A [OPTIONS]       terminal 1: device peer-a behind NAT A, waits for a peer
#   scripts/natlab-demo.sh peer B [OPTIONS]       terminal 2: device peer-b behind NAT B, connects to peer-a
#   scripts/natlab-demo.sh status                 namespaces, the routers' NAT mappings and drop counters
#   scripts/natlab-demo.sh down                   stop everything, delete the namespaces
# TYPE: Easy | FullCone | AddressRestricted | Symmetric | UdpBlocked (the lab's types, docs/natlab.md).
# OPTIONS go to PeerDemo: --no-birthday, --relay-only, --keepalive S, --json, ...
# Addresses: 198.18.0.0/24 "Internet" (server .1 and .2, router A .11, router B .12), 10.0.1.0/24 behind A,
# 10.0.2.0/24 behind B. Nothing is added to the root namespace, so the demo cannot disturb this machine's
# network and can stay up while the NAT lab tests run (their namespaces are rlab*, these rvdemo-*).
# The rulesets mirror tests/Relay.Server.Tests/NatLab/NatRules.cs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
P=rvdemo-
STATE=/run/relay-natlab-demo
SERVER=198.18.0.1
SECRET=natlab-demo-secret
RELAY_DLL=$ROOT/src/Relay/bin/Release/net10.0/Relay.dll
PEER_DLL=$ROOT/samples/PeerDemo/bin/Release/net10.0/PeerDemo.dll

die() { echo "natlab-demo: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, nftables)"

rules() { # rules TYPE CLIENT_ADDRESS
  local type=$1 client=$2 pre="" fwd="" masq="masquerade" set=""
  case $type in
    Easy) ;;
    FullCone)
      pre="iifname \"wan\" udp dport 1024-65535 dnat to $client"
      fwd="iifname \"wan\" oifname \"lan\" ct status dnat accept" ;;
    AddressRestricted)
      set="set peers { type ipv4_addr . inet_service; flags dynamic,timeout; timeout 120s; }"
      pre="iifname \"wan\" ip saddr . udp dport @peers dnat to $client"
      fwd="iifname \"lan\" oifname \"wan\" meta l4proto udp update @peers { ip daddr . udp sport }
    iifname \"wan\" oifname \"lan\" ct status dnat accept" ;;
    Symmetric) masq="masquerade random,fully-random" ;;
    UdpBlocked) fwd="iifname \"lan\" meta l4proto udp counter name udp_drops drop" ;;
    *) die "unknown NAT type $type (Easy, FullCone, AddressRestricted, Symmetric, UdpBlocked)" ;;
  esac
  cat <<EOF
table ip lab {
  counter input_drops { }
  counter forward_drops { }
  counter udp_drops { }
  $set
  chain prerouting { type nat hook prerouting priority dstnat; policy accept;
    $pre
  }
  chain postrouting { type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" $masq
  }
  chain forward { type filter hook forward priority filter; policy drop;
    ct state established,related accept
    $fwd
    iifname "lan" oifname "wan" accept
    counter name forward_drops drop
  }
  chain input { type filter hook input priority filter; policy drop;
    iifname "lo" accept
    counter name input_drops drop
  }
}
EOF
}

add_ns() {
  ip netns add "$1"
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$1" link set lo up
}

plug() { # plug NS DEVICE BRIDGE_PORT ADDRESS...
  local ns=$1 dev=$2 port=$3 address; shift 3
  ip -n "$ns" link add name "$dev" type veth peer name "$port" netns ${P}pub
  ip -n ${P}pub link set "$port" master br0 up
  for address in "$@"; do ip -n "$ns" addr add "$address/24" dev "$dev"; done
  ip -n "$ns" link set "$dev" up
}

up() {
  local a=${1:-Easy} b=${2:-Symmetric}
  [[ -f $RELAY_DLL && -f $PEER_DLL ]] || die "build first: dotnet build Relay.sln -c Release"
  ip netns list | grep -q "^${P}" && die "already up (scripts/natlab-demo.sh down first)"
  rules "$a" 10.0.1.2 > /dev/null && rules "$b" 10.0.2.2 > /dev/null
  mkdir -p $STATE
  add_ns ${P}pub
  ip -n ${P}pub link add name br0 type bridge
  ip -n ${P}pub link set br0 up
  add_ns ${P}srv
  plug ${P}srv eth0 srv $SERVER 198.18.0.2
  local n type
  for n in 1 2; do
    type=$([[ $n == 1 ]] && echo "$a" || echo "$b")
    add_ns ${P}r$n
    add_ns ${P}c$n
    plug ${P}r$n wan r$n 198.18.0.1$n
    ip -n ${P}r$n link add name lan type veth peer name eth0 netns ${P}c$n
    ip -n ${P}r$n addr add 10.0.$n.1/24 dev lan
    ip -n ${P}r$n link set lan up
    ip -n ${P}c$n addr add 10.0.$n.2/24 dev eth0
    ip -n ${P}c$n link set eth0 up
    ip -n ${P}c$n route add default via 10.0.$n.1
    ip netns exec ${P}r$n sysctl -qw net.ipv4.ip_forward=1
    rules "$type" 10.0.$n.2 | ip netns exec ${P}r$n nft -f -
    echo "$type" > $STATE/type$n
  done

  local data=$STATE/data
  mkdir -p $data
  (cd "$(dirname "$RELAY_DLL")" && exec ip netns exec ${P}srv dotnet "$RELAY_DLL" \
    --Relay:DataDirectory=$data --Relay:Api:BootstrapToken=natlab-demo-token-0123456789 \
    --Relay:Mqtt:ListenAddresses:0=$SERVER --Relay:Http:ListenAddresses:0=$SERVER \
    --Relay:Stun:ListenAddresses:0=$SERVER --Relay:Stun:AlternateAddress=198.18.0.2 \
    --Relay:Turn:SharedSecrets:0=natlab-demo-turn-secret --Relay:Turn:AllowedPeers:0=198.18.0.0/24 \
    --Relay:Rendezvous:Policy=Any \
    --Relay:Mqtt:Devices:0:Id=peer-a --Relay:Mqtt:Devices:0:Secret=$SECRET \
    --Relay:Mqtt:Devices:1:Id=peer-b --Relay:Mqtt:Devices:1:Secret=$SECRET) > $STATE/server.log 2>&1 &
  echo $! > $STATE/server.pid
  for _ in $(seq 1 100); do
    ip netns exec ${P}srv bash -c "exec 3<>/dev/tcp/$SERVER/1883" 2>/dev/null && break
    kill -0 "$(cat $STATE/server.pid)" 2>/dev/null || { cat $STATE/server.log; die "the server exited"; }
    sleep 0.2
  done
  echo "lab up: NAT A = $a (198.18.0.11, client 10.0.1.2), NAT B = $b (198.18.0.12, client 10.0.2.2)"
  echo "server: $SERVER (MQTT 1883, STUN/TURN 3478 UDP+TCP, HTTP 8080), log $STATE/server.log"
  echo "terminal 1: sudo $0 peer A     terminal 2: sudo $0 peer B"
}

peer() {
  local side=${1:-}; shift || true
  [[ -f $STATE/server.pid ]] || die "not up (scripts/natlab-demo.sh up first)"
  case $side in
    A|a) exec ip netns exec ${P}c1 dotnet "$PEER_DLL" --server mqtt://$SERVER:1883 --device peer-a --secret $SECRET --no-host "$@" ;;
    B|b) exec ip netns exec ${P}c2 dotnet "$PEER_DLL" --server mqtt://$SERVER:1883 --device peer-b --secret $SECRET --no-host --connect peer-a "$@" ;;
    *) die "peer A or peer B" ;;
  esac
}

status() {
  ip netns list | grep "^${P}" || { echo "not up"; return; }
  local n
  for n in 1 2; do
    echo "== router $n ($(cat $STATE/type$n 2>/dev/null), wan 198.18.0.1$n)"
    ip netns exec ${P}r$n conntrack -L -p udp 2>/dev/null || true
    ip netns exec ${P}r$n nft list counter ip lab input_drops | grep packets || true
  done
}

down() {
  if [[ -f $STATE/server.pid ]]; then
    kill "$(cat $STATE/server.pid)" 2>/dev/null || true
  fi
  local ns
  for ns in $(ip netns list | grep -o "^${P}[^ ]*"); do
    # A peer still running inside keeps a namespace's processes alive: end them by their namespace.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    ip netns del "$ns"
  done
  rm -rf $STATE
  echo "lab down"
}

case ${1:-} in
  up) shift; up "$@" ;;
  peer) shift; peer "$@" ;;
  status) status ;;
  down) down ;;
  *) sed -n '2,17p' "$0"; exit 2 ;;
esac
