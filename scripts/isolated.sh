#!/usr/bin/env bash
# Run a command so that no DDS traffic can leave this machine: discovery limited to
# localhost, the project's Fast DDS profile (shared memory + UDP on 127.0.0.1), and, when we
# are root, a private network namespace whose only interface is loopback.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
# Fast DDS 3.x (Kilted) reads FASTDDS_..., 2.x (Humble, Jazzy) only FASTRTPS_...: set both, keeping
# a value the caller set under either name.
profile="${FASTDDS_DEFAULT_PROFILES_FILE:-${FASTRTPS_DEFAULT_PROFILES_FILE:-$here/config/fastdds_localhost.xml}}"
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$profile}"
export FASTRTPS_DEFAULT_PROFILES_FILE="${FASTRTPS_DEFAULT_PROFILES_FILE:-$profile}"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ($$ % 90) + 10 ))}"
if [[ $EUID -eq 0 && -z "${SEG_NODE_IN_NETNS:-}" ]] && command -v unshare >/dev/null \
   && unshare -n true 2>/dev/null; then
  export SEG_NODE_IN_NETNS=1
  exec unshare -n bash -c 'ip link set lo up && exec "$@"' isolated "$@"
fi
exec "$@"
