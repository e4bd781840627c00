#!/usr/bin/env bash
# Abuse benchmark: dns-sidecar (release build, default limits) under floods
# with a black-holed, slow and healthy upstream, TCP clients that never read,
# and slow admin clients. Loopback only. See benches/README.md.
#
#   benches/abuse.sh                      # every scenario, 5 s floods
#   benches/abuse.sh --scenarios blackhole --duration 10 --rate 100000
#   benches/abuse.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have_pg() {
    [ -n "${PG_BINDIR:-}" ] && [ -x "$PG_BINDIR/pg_ctl" ] && return 0
    compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null && return 0
    command -v pg_ctl >/dev/null 2>&1
}
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
missing=()
have dnsmasq || missing+=(dnsmasq-base)
have_pg || missing+=(postgresql-15)
have openssl || missing+=(openssl)
{ have taskset && have setpriv; } || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
    if [[ " ${missing[*]} " == *" postgresql-15 "* ]] && [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        "${sudo[@]}" mkdir -p /etc/postgresql-common
        echo 'create_main_cluster = false' | "${sudo[@]}" tee /etc/postgresql-common/createcluster.conf >/dev/null
    fi
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null && [ -f "${HOME:-/root}/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "${HOME:-/root}/.cargo/env"
fi
cargo build --release -p dns-sidecar -p abuse
exec target/release/abuse "$@"
