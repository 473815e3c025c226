# Shared helpers for hack/ scripts. Source it; it changes nothing on its own.
# shellcheck shell=bash

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_ROOT=$(cd "$HACK_DIR/.." && pwd)
# shellcheck source=../versions.env
. "$HACK_DIR/versions.env"

VEXA_CACHE=${VEXA_CACHE:-$HOME/.cache/vexa}
VEXA_STATE=${VEXA_STATE:-/var/lib/vexa-cluster}
# Where cargo puts its builds (scripts pack binaries from $TARGET_DIR/release).
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
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

# ---- Local cluster layout (hack/cluster, hack/image, hack/cluster-smoke) --------------------
# Everything binds to loopback or to NODE_IP, the address of the cni0 bridge that hack/cluster
# creates itself; no address of eth0 is ever used, so no cluster traffic can leave the VM.
NODE_NAME=${VEXA_NODE_NAME:-vexa-node}
REDIS_PORT=6379
# Redis requires a login: the operator (and tests) use this admin user, whose random password
# `hack/cluster up` keeps in REDIS_ADMIN_PASSWORD_FILE; the `default` user is off, and each
# dispatch's worker logs in as its own user, which the operator makes.
REDIS_ADMIN_USER=vexa-admin
REDIS_ADMIN_PASSWORD_FILE=$VEXA_STATE/redis/admin.password
REDIS_ACL_FILE=$VEXA_STATE/redis/users.acl
NODE_IP=10.88.0.1           # cni0 gateway = node IP = apiserver advertise address = DNS server
POD_CIDR=10.88.0.0/16       # bridge CNI + host-local IPAM
SERVICE_CIDR=10.96.0.0/16   # routed to the port-less bridge kube-svc (see hack/README.md)
KUBERNETES_SVC_IP=10.96.0.1
CLUSTER_DOMAIN=cluster.local
APISERVER_PORT=6443
CONTAINERD_SOCK=$VEXA_STATE/containerd/containerd.sock
KUBECONFIG_ADMIN=$VEXA_STATE/kubeconfigs/admin.kubeconfig
# Test people who sign in with a bearer token (the web console and its browser tests): the API
# server's static token file (`token,user,uid` lines, root's, 0600) and, per person, the bare
# token in PEOPLE_DIR/<name>.token (0600). Local-cluster test users only; `hack/cluster up`
# makes the tokens once.
PEOPLE=(alice bob carol dave)
PEOPLE_TOKENS_FILE=$VEXA_STATE/pki/people-tokens.csv
PEOPLE_DIR=$VEXA_STATE/people
K8S_BIN=$(bin_dir kubernetes "$KUBERNETES_VERSION")
# Pod identity: SPIRE server and agent as host processes (hack/README.md, "Pod identity").
SPIRE_BIN=$(bin_dir spire "$SPIRE_VERSION")
SPIRE_TRUST_DOMAIN=vexa.local
SPIRE_SERVER_PORT=18081      # 127.0.0.1 only: the agent's node API
# The admin socket: whoever may open it administers the server. Its folder and the socket
# belong to group SPIRE_ADMIN_GID (mode 0750 / 0770): root (the evals' in-process operator) and
# the chart's operator pod (supplementalGroups) only; no other host process or pod has that group.
SPIRE_SERVER_SOCKET=/run/vexa-spire/server/api.sock
SPIRE_ADMIN_GID=65530
# The Workload API, for every workload (the agent attests each caller from its process).
SPIRE_AGENT_SOCKET_DIR=/run/vexa-spire/agent/public
# The node alias that every dispatch pod's entry names as its parent.
SPIRE_NODE_ID=spiffe://$SPIRE_TRUST_DOMAIN/vexa/node

# ctr against our containerd, in the namespace the CRI plugin uses.
vctr() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }
# kubectl: the pinned build, never whatever is on PATH.
vkubectl() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
# Keycloak (the tool gateway's token service), a host process on NODE_IP so pods reach it.
KEYCLOAK_HOME=$(bin_dir keycloak "$KEYCLOAK_VERSION")
KEYCLOAK_PORT=8180
KEYCLOAK_MANAGEMENT_PORT=8190   # /health/ready; 127.0.0.1 only
KEYCLOAK_URL=http://$NODE_IP:$KEYCLOAK_PORT
KEYCLOAK_REALM=vexa
KEYCLOAK_ADMIN_USER=vexa-admin
KEYCLOAK_STATE=$VEXA_STATE/keycloak
KEYCLOAK_ADMIN_PASSWORD_FILE=$KEYCLOAK_STATE/admin.password
KEYCLOAK_GATEWAY_CLIENT=vexa-gateway
KEYCLOAK_GATEWAY_SECRET_FILE=$KEYCLOAK_STATE/gateway.secret
# People sign in to the web console at Keycloak over TLS (the cluster CA signs its certificate):
# the API server trusts the ID tokens this issuer makes for the console's client
# (--authentication-config), as the user `oidc:<username>`.
KEYCLOAK_HTTPS_PORT=8543
KEYCLOAK_ISSUER=https://$NODE_IP:$KEYCLOAK_HTTPS_PORT/realms/$KEYCLOAK_REALM
KEYCLOAK_CONSOLE_CLIENT=vexa-console
KEYCLOAK_CONSOLE_SECRET_FILE=$KEYCLOAK_STATE/console.secret
OIDC_USERNAME_PREFIX=oidc:
