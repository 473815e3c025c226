# Shared helpers for hack/ scripts. Source it; it changes nothing on its own.
# shellcheck shell=bash

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_ROOT=$(cd "$HACK_DIR/.." && pwd)
# shellcheck source=../versions.env
. "$HACK_DIR/versions.env"

VEXA_CACHE=${VEXA_CACHE:-$HOME/.cache/vexa}
VEXA_STATE=${VEXA_STATE:-/var/lib/vexa-cluster}
export GOTOOLCHAIN=local
export GOFLAGS=${GOFLAGS:--modcacherw}

log() { printf '\033[1;34m[hack]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[hack] error:\033[0m %s\n' "$*" >&2; exit 1; }

# bin_dir TOOL VERSION: the cache folder holding that tool's binaries.
bin_dir() { printf '%s/bin/%s-%s' "$VEXA_CACHE" "$1" "$2"; }

# wait_for DESCRIPTION SECONDS COMMAND...: retries COMMAND every half second.
wait_for() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${secs}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}
