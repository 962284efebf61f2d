#!/usr/bin/env bash
# Two test "hosts" on one Linux machine: network namespaces joined by a veth pair, each with its
# own address, so a Ray head and a Ray worker run on different IPs without a second machine.
# Used by tests/distributed/test_multihost.py; needs root (CAP_NET_ADMIN) and iproute2.
#
#   cluster/local/netns-hosts.sh up      # snasray-h0 = 10.77.0.1, snasray-h1 = 10.77.0.2
#   cluster/local/netns-hosts.sh exec 0|1 CMD...   # run CMD on host 0 or 1
#   cluster/local/netns-hosts.sh down
#
# SNASRAY_NETNS (name prefix) and SNASRAY_SUBNET (first three octets) change the defaults.
# The namespaces have loopback and the veth link only: no route leaves the pair.
set -euo pipefail

prefix=${SNASRAY_NETNS:-snasray}
subnet=${SNASRAY_SUBNET:-10.77.0}

up() {
  down 2>/dev/null || true
  for i in 0 1; do
    ip netns add "$prefix-h$i"
    ip -n "$prefix-h$i" link set lo up
  done
  ip link add "$prefix-v0" netns "$prefix-h0" type veth peer name "$prefix-v1" netns "$prefix-h1"
  for i in 0 1; do
    ip -n "$prefix-h$i" addr add "$subnet.$((i + 1))/24" dev "$prefix-v$i"
    ip -n "$prefix-h$i" link set "$prefix-v$i" up
  done
  echo "$prefix-h0=$subnet.1 $prefix-h1=$subnet.2"
}

down() {
  for i in 0 1; do
    ip netns del "$prefix-h$i" 2>/dev/null || true  # removes the veth pair with it
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  exec)
    host=${2:?host 0 or 1}
    shift 2
    exec ip netns exec "$prefix-h$host" "$@"
    ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
