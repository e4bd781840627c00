#!/usr/bin/env bash
# One-command DNS load test (see benches/README.md):
#
#   benches/loadtest.sh --quick          # 1 round x 2 s per server: checks it works
#   benches/loadtest.sh                  # 3 rounds x 10 s per server and mix
#   benches/loadtest.sh --failover       # plus a promote during a dns-sidecar round
#   benches/loadtest.sh --help           # every option
#
# Installs what is missing (Debian/Ubuntu, apt-get), builds dns-sidecar, the
# floor responder and the harness in release mode, then runs the harness,
# which starts everything on 127.0.0.1, measures, prints a Markdown table and
# writes target/loadtest/results.md. Only loopback is ever queried; every
# run is bounded in time; Ctrl-C stops and removes everything.
set -euo pipefail

cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

# --help prints and does nothing else: no installs, no builds. The options
# are benches/README.md's table (a test keeps it equal to the harness's own
# --help).
usage() {
    cat <<'EOF'
Usage: benches/loadtest.sh [OPTIONS]

DNS load test: dns-sidecar vs Knot, NSD, dnsmasq, dnsdist and a do-nothing
floor under dnsperf, all on 127.0.0.1, with a real PostgreSQL primary + replica
behind the sidecar. Installs what is missing (apt-get: knot, nsd, dnsperf,
dnsmasq-base, dnsdist, postgresql-15, bind9-dnsutils, openssl, util-linux),
builds dns-sidecar, floor and loadtest in release mode, then runs
target/release/loadtest with OPTIONS.
The report goes to target/loadtest/results.md. See benches/README.md.

Options (passed to the harness):
EOF
    awk '/^## Options/ { on = 1; next } /^## / { on = 0 } on' benches/README.md
}
for arg in "$@"; do
    case "$arg" in
        -h|--help) usage; exit 0 ;;
    esac
done

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have_pg() {
    [ -n "${PG_BINDIR:-}" ] && [ -x "$PG_BINDIR/pg_ctl" ] && return 0
    compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null && return 0
    command -v pg_ctl >/dev/null 2>&1
}

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo -n)

missing=()
have knotd || missing+=(knot)
have nsd || missing+=(nsd)
have dnsperf || missing+=(dnsperf)
have dnsmasq || missing+=(dnsmasq-base)
have dnsdist || missing+=(dnsdist)
have_pg || missing+=(postgresql-15)
have dig || missing+=(bind9-dnsutils)
have openssl || missing+=(openssl)
{ have taskset && have setpriv; } || missing+=(util-linux)

policy_created=""
remove_policy() {
    if [ -n "$policy_created" ]; then
        "${sudo[@]}" rm -f /usr/sbin/policy-rc.d
        policy_created=""
    fi
}

if [ "${#missing[@]}" -gt 0 ]; then
    echo "loadtest: installing missing packages: ${missing[*]}" >&2
    # The knot and nsd packages would start system daemons on port 53 and
    # postgresql a cluster on 5432; the load test starts its own instances
    # on free loopback ports, so keep the packages from starting services
    # (Debian's policy-rc.d mechanism) while installing.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        trap remove_policy EXIT
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
        policy_created=1
    fi
    if [[ " ${missing[*]} " == *" postgresql-15 "* ]] && [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        "${sudo[@]}" mkdir -p /etc/postgresql-common
        echo 'create_main_cluster = false' | "${sudo[@]}" tee /etc/postgresql-common/createcluster.conf >/dev/null
    fi
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
    remove_policy
fi

if ! command -v cargo >/dev/null && [ -f "${HOME:-/root}/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "${HOME:-/root}/.cargo/env"
fi

cargo build --release -p dns-sidecar -p floor -p loadtest

# Run the harness in the background so that a signal to this script is
# handled at once: forward it, then wait for the harness to clean up.
# The harness keeps its configs, zone files and logs under here; removing
# it on exit covers even a harness killed with SIGKILL.
LOADTEST_TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/dns-sidecar-loadtest.XXXXXX")
export LOADTEST_TMPDIR
trap 'rm -rf "$LOADTEST_TMPDIR"' EXIT
quoted=""
if [ "$#" -gt 0 ]; then quoted=$(printf ' %q' "$@"); fi
export LOADTEST_COMMAND="benches/loadtest.sh${quoted}"
pid=""
# shellcheck disable=SC2317  # invoked by the trap below
forward() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
    fi
}
trap forward INT TERM HUP
target/release/loadtest "$@" &
pid=$!
status=0
# `wait` returns early (status > 128) when a trapped signal arrives; keep
# waiting until the harness itself has exited.
while :; do
    wait "$pid" && status=0 || status=$?
    kill -0 "$pid" 2>/dev/null || break
done
exit "$status"
