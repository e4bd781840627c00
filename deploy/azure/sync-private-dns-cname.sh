#!/usr/bin/env bash
# dns-sidecar on_change hook: keep an Azure Private DNS CNAME in step with an
# alias, e.g. prod.db.internal -> pg-prod-westus2.privatelink.postgres.database.azure.com,
# for clients that resolve through the Private DNS zone instead of the sidecar
# (the manual "edit the CNAME after a promote" step, automated).
#
# In the config (argv, no shell involved):
#
#   [[aliases]]
#   name = "prod.db.internal"
#   ...
#   on_change = ["/usr/local/bin/sync-private-dns-cname.sh",
#                "--resource-group", "rg-dns", "--zone-name", "db.internal"]
#   on_change_timeout = "2m"
#
# dns-sidecar passes the change in the environment (names without the
# trailing dot):
#   DNS_SIDECAR_ALIAS       the alias, e.g. prod.db.internal          (required)
#   DNS_SIDECAR_NEW_TARGET  the CNAME target it now answers           (required)
#   DNS_SIDECAR_NEW_SERVER  the server id of the new target
#   DNS_SIDECAR_OLD_TARGET  the previous target (empty on the first decision)
#   DNS_SIDECAR_OLD_SERVER  the previous server id (empty on the first decision)
#   DNS_SIDECAR_REASON      why it changed (logged)
#
# The record set name defaults to the alias minus the zone ("prod"). The az
# CLI must be logged in (a managed identity: --login-identity) with the
# "Private DNS Zone Contributor" role on the zone. dns-sidecar never retries
# a hook, so this script retries the update itself (--attempts). Setting the
# record is idempotent, so several sidecar instances may all run it.
#
# Exit status: 0 done (or nothing to do), 1 the update failed, 2 usage or
# environment error. Messages go to stderr; dns-sidecar logs a failed hook's
# stderr.

set -euo pipefail

prog=sync-private-dns-cname

log() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() { log "error: $1"; exit "${2:-2}"; }

usage() {
    cat <<'EOF'
Usage: sync-private-dns-cname.sh --resource-group RG --zone-name ZONE [options]

Sets the CNAME record set for $DNS_SIDECAR_ALIAS in an Azure Private DNS zone
to $DNS_SIDECAR_NEW_TARGET (run by dns-sidecar as an on_change hook).

  -g, --resource-group RG     resource group of the Private DNS zone   [$AZ_DNS_RESOURCE_GROUP]
  -z, --zone-name ZONE        the Private DNS zone, e.g. db.internal    [$AZ_DNS_ZONE]
  -n, --record-set-name NAME  record set (default: the alias minus the zone) [$AZ_DNS_RECORD_SET]
      --subscription ID       subscription of the zone                   [$AZ_SUBSCRIPTION]
      --login-identity        run `az login --identity` first (managed identity)
      --attempts N            tries of the update, 2 s apart times the try number (default 3)
      --dry-run               print the az commands instead of running them
  -h, --help                  this text
EOF
}

resource_group=${AZ_DNS_RESOURCE_GROUP:-}
zone=${AZ_DNS_ZONE:-}
record=${AZ_DNS_RECORD_SET:-}
subscription=${AZ_SUBSCRIPTION:-}
login_identity=0
attempts=3
dry_run=0

need_value() {
    if [ "$#" -lt 2 ] || [ -z "$2" ]; then
        die "$1 needs a value (see --help)"
    fi
}

while [ "$#" -gt 0 ]; do
    case "$1" in
        -g | --resource-group) need_value "$@"; resource_group=$2; shift 2 ;;
        -z | --zone-name) need_value "$@"; zone=$2; shift 2 ;;
        -n | --record-set-name) need_value "$@"; record=$2; shift 2 ;;
        --subscription) need_value "$@"; subscription=$2; shift 2 ;;
        --login-identity) login_identity=1; shift ;;
        --attempts) need_value "$@"; attempts=$2; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

case "$attempts" in
    '' | *[!0-9]* | 0) die "--attempts must be a positive integer, got '$attempts'" ;;
esac
[ -n "$resource_group" ] || die "no resource group: pass --resource-group (or set AZ_DNS_RESOURCE_GROUP)"
[ -n "$zone" ] || die "no zone: pass --zone-name (or set AZ_DNS_ZONE)"

alias_name=${DNS_SIDECAR_ALIAS:-}
new_target=${DNS_SIDECAR_NEW_TARGET:-}
[ -n "$alias_name" ] || die "DNS_SIDECAR_ALIAS is not set: run this as a dns-sidecar on_change hook (or export it to test)"
[ -n "$new_target" ] || die "DNS_SIDECAR_NEW_TARGET is not set: run this as a dns-sidecar on_change hook (or export it to test)"

# Compare names without a trailing dot and case-insensitively, as DNS does.
lower() { printf '%s' "$1" | tr '[:upper:]' '[:lower:]'; }
alias_name=$(lower "${alias_name%.}")
zone=$(lower "${zone%.}")
new_target=$(lower "${new_target%.}")

if [ -z "$record" ]; then
    case "$alias_name" in
        "$zone") die "alias $alias_name is the zone apex, which cannot hold a CNAME" ;;
        *."$zone") record=${alias_name%."$zone"} ;;
        *) die "alias $alias_name is not inside zone $zone: pass --record-set-name, or the right --zone-name" ;;
    esac
fi

log "alias $alias_name: ${DNS_SIDECAR_OLD_SERVER:-(none)} -> ${DNS_SIDECAR_NEW_SERVER:-?} (${DNS_SIDECAR_REASON:-no reason given})"
log "setting CNAME $record in Private DNS zone $zone (resource group $resource_group) to $new_target"

# `set-record` names the record set --record-set-name, `show` names it --name.
az_zone=(--resource-group "$resource_group" --zone-name "$zone")
[ -z "$subscription" ] || az_zone+=(--subscription "$subscription")
set_args=(network private-dns record-set cname set-record "${az_zone[@]}" --record-set-name "$record" --cname "$new_target" --output none)
show_args=(network private-dns record-set cname show "${az_zone[@]}" --name "$record" --query cnameRecord.cname --output tsv)

if [ "$dry_run" -eq 1 ]; then
    [ "$login_identity" -eq 0 ] || printf 'az login --identity --output none\n'
    printf 'az'
    printf ' %q' "${set_args[@]}"
    printf '\n'
    exit 0
fi

command -v az >/dev/null 2>&1 || die "the az CLI is not installed or not on PATH (PATH=$PATH)"

if [ "$login_identity" -eq 1 ]; then
    az login --identity --output none || die "az login --identity failed (does this host or pod have a managed identity?)" 1
fi

# Already right (another instance got there first, or a restart repeated the
# first decision)? Then nothing to do. A failed lookup (no record set yet)
# falls through to the update, which creates the record set.
if current=$(az "${show_args[@]}" 2>/dev/null); then
    current=$(lower "${current%.}")
    if [ "$current" = "$new_target" ]; then
        log "CNAME $record.$zone already points at $new_target; nothing to do"
        exit 0
    fi
    log "CNAME $record.$zone currently points at ${current:-(nothing)}"
fi

try=1
while :; do
    if az "${set_args[@]}"; then
        log "CNAME $record.$zone now points at $new_target"
        exit 0
    fi
    if [ "$try" -ge "$attempts" ]; then
        die "az network private-dns record-set cname set-record failed $try time(s); CNAME $record.$zone is NOT updated to $new_target" 1
    fi
    log "update failed (try $try of $attempts); retrying in $((2 * try)) s"
    sleep "$((2 * try))"
    try=$((try + 1))
done
