#!/bin/sh
# install-flowguard.sh -- run once by cloud-init (runcmd) on a VM without internet access.
#
# Installs the FlowGuard .deb from a path on the VM's local package mirror, then places the
# configuration, master key and license that cloud-init staged under /run/flowguard-install/.
# It never overwrites an existing configuration, master key or license, and it never prints a
# secret. Settings come from /run/flowguard-install/env (written by cloud-init):
#   FG_DEB_PATH      absolute path of flowguard_<version>_<arch>.deb   (required)
#   FG_DEB_SHA256    expected SHA-256 of that file                     (optional)
#   FG_INIT_TENANT   create this first tenant with `flowguard init`    (optional;
#                    the one-time password lands in /var/lib/flowguard/initial-owner.json)
#   FG_INIT_EMAIL    ... and this Owner e-mail                         (with FG_INIT_TENANT)
#   FG_START         "true": enable and start flowguard.service       (default true)
# The same script is exercised by the packaging CI in a clean Debian root.
set -eu

STAGE=${FG_STAGE_DIR:-/run/flowguard-install}
CONF=/etc/flowguard/flowguard.toml
DATA=/var/lib/flowguard
KEY=$DATA/keys/master.key

log() { echo "install-flowguard: $*"; }
die() { echo "install-flowguard: ERROR: $*" >&2; exit 1; }

[ -r "$STAGE/env" ] || die "$STAGE/env is missing"
# shellcheck disable=SC1091
. "$STAGE/env"
FG_START=${FG_START:-true}
FG_INIT_TENANT=${FG_INIT_TENANT:-}
FG_INIT_EMAIL=${FG_INIT_EMAIL:-}
FG_DEB_SHA256=${FG_DEB_SHA256:-}

[ -n "${FG_DEB_PATH:-}" ] || die "FG_DEB_PATH is not set"
[ -f "$FG_DEB_PATH" ] || die "package $FG_DEB_PATH not found on the local mirror path"

if [ -n "$FG_DEB_SHA256" ]; then
    echo "$FG_DEB_SHA256  $FG_DEB_PATH" | sha256sum -c --status - \
        || die "checksum mismatch for $FG_DEB_PATH"
    log "checksum of $FG_DEB_PATH verified"
fi

# 1. Configuration: a staged file becomes /etc/flowguard/flowguard.toml only when none exists;
#    dpkg then keeps it (--force-confold) instead of installing the packaged default.
if [ -f "$STAGE/flowguard.toml" ] && [ ! -e "$CONF" ]; then
    install -d -m 0755 /etc/flowguard
    install -m 0640 "$STAGE/flowguard.toml" "$CONF"
    log "configuration written to $CONF"
fi

# 2. The package (no network: dpkg only; its dependencies are in the base system).
DEBIAN_FRONTEND=noninteractive dpkg -i --force-confdef --force-confold "$FG_DEB_PATH"
log "installed $(dpkg-query -W -f='${Package} ${Version}' flowguard)"

# 3. Master key: only into an empty data directory, never over an existing key.
if [ -f "$STAGE/master.key" ]; then
    if [ -e "$KEY" ] || [ -e "$DATA/catalog.db" ]; then
        log "master key already present in $DATA: staged key NOT installed"
    else
        size=$(wc -c < "$STAGE/master.key")
        [ "$size" -eq 32 ] || die "staged master key has $size bytes, expected 32"
        install -d -m 0700 -o flowguard -g flowguard "$DATA/keys"
        install -m 0600 -o flowguard -g flowguard "$STAGE/master.key" "$KEY"
        log "master key installed in $KEY"
    fi
    if command -v shred >/dev/null 2>&1; then shred -u "$STAGE/master.key"; else rm -f "$STAGE/master.key"; fi
fi

# 4. License token, readable by the service's group only.
if [ -f "$STAGE/license.token" ]; then
    if [ -e /etc/flowguard/license.token ]; then
        log "license already present: staged license NOT installed"
    else
        install -m 0640 -o root -g flowguard "$STAGE/license.token" /etc/flowguard/license.token
        log "license written to /etc/flowguard/license.token"
    fi
    rm -f "$STAGE/license.token"
fi

# 5. First tenant, created before the first start (which would otherwise bootstrap a
#    "default" tenant). The one-time password goes to a 0600 file, never to the log.
if [ -n "$FG_INIT_TENANT" ]; then
    [ -n "$FG_INIT_EMAIL" ] || die "FG_INIT_TENANT is set but FG_INIT_EMAIL is not"
    if [ -e "$DATA/catalog.db" ]; then
        log "data directory already initialised: first tenant NOT created"
    else
        out="$DATA/initial-owner.json"
        (umask 077; setpriv --reuid=flowguard --regid=flowguard --init-groups --reset-env \
            /usr/bin/flowguard init --config "$CONF" \
            --tenant-name "$FG_INIT_TENANT" --owner-email "$FG_INIT_EMAIL" --json) > "$out"
        chown flowguard:flowguard "$out"
        log "first tenant created; the Owner's one-time password is in $out (0600)"
    fi
fi

# 6. Service.
if [ "$FG_START" = "true" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now flowguard.service
    log "flowguard.service enabled and started"
fi

log "done. Back up $KEY: without it the data cannot be decrypted."
