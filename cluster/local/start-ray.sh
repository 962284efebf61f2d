#!/usr/bin/env bash
# Start a Ray cluster on machines you already have: the head first, then one worker per machine.
#
#   cluster/local/start-ray.sh head   [--ip IP] [--port 6379] [--num-cpus N] [--num-gpus N]
#   cluster/local/start-ray.sh worker HEAD_IP[:PORT] [--ip IP] [--num-cpus N] [--num-gpus N]
#   cluster/local/start-ray.sh stop   # stops every Ray process of this user on this machine
#
# Token authentication is on (RAY_AUTH_MODE=token): the head creates ~/.ray/auth_token if there
# is none; copy that file to each worker machine (or export RAY_AUTH_TOKEN) before starting it,
# and keep it for `ray job submit` / `snas-ray submit`. The dashboard (8265) listens on the head's
# loopback only: reach it through an SSH tunnel (cluster/README.md). --ip also pins gloo and NCCL
# (GLOO_SOCKET_IFNAME, NCCL_SOCKET_IFNAME) to the interface holding that address. Extra flags go
# to `ray start` unchanged. RAY selects the ray executable (default: the one on PATH).
set -euo pipefail

RAY=${RAY:-ray}
export RAY_AUTH_MODE=token

usage() { sed -n '2,14p' "$0" >&2; exit 2; }

role=${1:-}
[ -n "$role" ] || usage
shift

ip=""
port=6379
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ip) ip=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
node_ip=()
if [ -n "$ip" ]; then
  node_ip=(--node-ip-address="$ip")
  # gloo and NCCL pick their address from the hostname, which often resolves to 127.0.0.1:
  # pin them to the interface that holds --ip, or ranks on other hosts cannot connect.
  if [ -z "${GLOO_SOCKET_IFNAME:-}" ] && command -v ip >/dev/null; then
    ifname=$(ip -o -4 addr show | awk -v ip="$ip" '{split($4, a, "/"); if (a[1] == ip) print $2}')
    if [ -n "$ifname" ]; then
      export GLOO_SOCKET_IFNAME=$ifname
      export NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-$ifname}
    fi
  fi
fi

case "$role" in
  head)
    if [ -z "${RAY_AUTH_TOKEN:-}" ] && [ ! -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; then
      "$RAY" get-auth-token --generate >/dev/null
      echo "created $HOME/.ray/auth_token: copy it to every worker machine" >&2
    fi
    "$RAY" start --head "${node_ip[@]}" --port="$port" --dashboard-host=127.0.0.1 "${args[@]}"
    ;;
  worker)
    [ ${#args[@]} -ge 1 ] || usage
    head=${args[0]}
    args=("${args[@]:1}")
    case "$head" in *:*) ;; *) head="$head:6379" ;; esac
    "$RAY" start --address="$head" "${node_ip[@]}" "${args[@]}"
    ;;
  stop)
    "$RAY" stop
    ;;
  *) usage ;;
esac
