#!/bin/sh
# Runs INSIDE a clean Debian root (chroot, own PID and mount namespace), as root.
# Scenario "dpkg": install the .deb with dpkg, check what it created, `flowguard --version`,
#   `flowguard init` as the flowguard user (owner/mode of every created file), a refused second
#   init, a first `serve` (health endpoints, SIGHUP survives, SIGTERM exits 0), reinstall keeps
#   key and changed config, remove keeps data, purge keeps data and says so.
# Scenario "cloud-init": terraform/modules/vm-cloud-init/files/install-flowguard.sh with a
#   staged config and master key (the path a VM takes), then a first start that bootstraps.
# Prints PASS/FAIL lines; exits 1 if any check failed.
# usage: deb-root-test.sh dpkg|cloud-init /path/to/flowguard.deb EXPECTED_VERSION
set -u
SCEN=$1
DEB=$2
VERSION=$3
FAILS=0
pass() { echo "PASS deb-root[$SCEN]: $*"; }
fail() { echo "FAIL deb-root[$SCEN]: $*"; FAILS=$((FAILS + 1)); }
check() { # description, command...
    d=$1; shift
    if "$@" >/tmp/check.out 2>&1; then pass "$d"; else fail "$d: $(head -c 600 /tmp/check.out)"; fi
}
# owner:group mode of a path equals the expectation
om() { [ "$(stat -c '%U:%G %a' "$1" 2>/dev/null)" = "$2" ] || { echo "$1 is $(stat -c '%U:%G %a' "$1" 2>&1), expected $2"; return 1; }; }
as_fg() { setpriv --reuid=flowguard --regid=flowguard --init-groups --reset-env "$@"; }
all_owned_by_fg() { # every path under $1 belongs to flowguard:flowguard
    bad=$(find "$1" \( ! -user flowguard -o ! -group flowguard \) -printf '%p %u:%g\n')
    [ -z "$bad" ] || { echo "$bad"; return 1; }
}
secrets_private() { # key material and credentials: files 0600, their directories 0700
    bad=""
    for f in "$1/keys/master.key" "$1/initial-credentials" "$1/tls/key.pem"; do
        [ -e "$f" ] || continue
        [ "$(stat -c %a "$f")" = 600 ] || bad="$bad $f=$(stat -c %a "$f")"
    done
    for d in "$1" "$1/keys"; do
        [ -e "$d" ] || continue
        [ "$(stat -c %a "$d")" = 700 ] || bad="$bad $d=$(stat -c %a "$d")"
    done
    [ -z "$bad" ] || { echo "too open:$bad"; return 1; }
}
note_open_files() { # informational: files/dirs readable beyond the owner (shielded by the 0700 data dir)
    open=$(find "$1" -mindepth 1 -perm /0077 -printf '%P=%m ' | head -c 400)
    [ -z "$open" ] || echo "WARN deb-root[$SCEN]: under the 0700 data dir, created with group/world bits (process umask, not the systemd unit's UMask=0077): $open"
}
DATA=/var/lib/flowguard
CONF=/etc/flowguard/flowguard.toml
export LANG=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin

serve_test() { # first start as the service user with the packaged config; $1 = expect bootstrap
    rm -f "$DATA/listen.addr"
    # not through the as_fg function: `$!` must be the server itself (setpriv execs it)
    setpriv --reuid=flowguard --regid=flowguard --init-groups --reset-env \
        /usr/bin/flowguard serve --config "$CONF" --listen 127.0.0.1:0 >/tmp/serve.log 2>&1 &
    spid=$!
    i=0
    while [ ! -s "$DATA/listen.addr" ] && [ $i -lt 120 ] && kill -0 $spid 2>/dev/null; do sleep 0.25; i=$((i + 1)); done
    if [ ! -s "$DATA/listen.addr" ]; then
        fail "serve did not write $DATA/listen.addr: $(tail -c 800 /tmp/serve.log)"
        kill -9 $spid 2>/dev/null; return
    fi
    addr=$(cat "$DATA/listen.addr")
    pass "serve started as flowguard, listening on $addr"
    check "GET https://$addr/healthz answers 200" curl -fsk --max-time 10 "https://$addr/healthz"
    ok=0; i=0
    while [ $i -lt 40 ]; do
        if curl -fsk --max-time 5 "https://$addr/readyz" >/dev/null 2>&1; then ok=1; break; fi
        sleep 0.25; i=$((i + 1))
    done
    if [ $ok = 1 ]; then pass "GET https://$addr/readyz answers 200"; else fail "/readyz never answered 200"; fi
    kill -HUP $spid; sleep 1
    if kill -0 $spid 2>/dev/null && curl -fsk --max-time 5 "https://$addr/healthz" >/dev/null 2>&1; then
        pass "SIGHUP reloads without stopping the service"
    else
        fail "service died or stopped answering after SIGHUP: $(tail -c 800 /tmp/serve.log)"
    fi
    kill -TERM $spid
    i=0; while kill -0 $spid 2>/dev/null && [ $i -lt 60 ]; do sleep 0.25; i=$((i + 1)); done
    if kill -0 $spid 2>/dev/null; then
        fail "serve did not exit within 15 s of SIGTERM"; kill -9 $spid
    else
        wait $spid; rc=$?
        if [ $rc -eq 0 ]; then pass "SIGTERM: graceful exit (status 0)"; else fail "SIGTERM: exit status $rc: $(tail -c 800 /tmp/serve.log)"; fi
    fi
    if [ "$1" = bootstrap ]; then
        check "first start wrote $DATA/initial-credentials flowguard:flowguard 0600" om "$DATA/initial-credentials" "flowguard:flowguard 600"
    fi
    check "after serve: everything in $DATA owned by flowguard" all_owned_by_fg "$DATA"
    check "after serve: data dir, keys and credentials private (0700/0600)" secrets_private "$DATA"
    note_open_files "$DATA"
}

case "$SCEN" in
dpkg)
    if DEBIAN_FRONTEND=noninteractive dpkg -i "$DEB" >/tmp/dpkg.out 2>&1; then
        pass "dpkg -i $(basename "$DEB") in a clean Debian $(cat /etc/debian_version) root"
    else
        fail "dpkg -i failed: $(cat /tmp/dpkg.out)"; echo "deb-root[$SCEN] summary: $FAILS failure(s)"; exit 1
    fi
    check "postinst says how to start and to back up the key" grep -q "back it up" /tmp/dpkg.out
    check "system user flowguard: system uid, nologin shell, home $DATA" \
        sh -c 'e=$(getent passwd flowguard) && uid=$(echo "$e" | cut -d: -f3) && [ "$uid" -lt 1000 ] && echo "$e" | grep -q ":/var/lib/flowguard:/usr/sbin/nologin$"'
    check "system group flowguard" getent group flowguard
    check "/usr/bin/flowguard root:root 755" om /usr/bin/flowguard "root:root 755"
    check "$CONF root:flowguard 640" om "$CONF" "root:flowguard 640"
    check "/etc/flowguard root:flowguard 750" om /etc/flowguard "root:flowguard 750"
    check "$DATA flowguard:flowguard 700" om "$DATA" "flowguard:flowguard 700"
    check "/lib/systemd/system/flowguard.service root:root 644" om /lib/systemd/system/flowguard.service "root:root 644"
    check "$CONF is a registered conffile" sh -c "dpkg-query -W -f='\${Conffiles}' flowguard | grep -q ' $CONF '"
    check "man page installed" test -f /usr/share/man/man1/flowguard.1.gz
    check "no master key created by the package" test ! -e "$DATA/keys/master.key"
    if grep -Eq '^data_dir *= *"/var/lib/flowguard"' "$CONF"; then
        pass "packaged config sets data_dir = \"$DATA\""
    else
        fail "packaged config must set data_dir = \"$DATA\" (uncommented) in packaging/flowguard.toml: otherwise init/serve use ./flowguard-data relative to the working directory"
    fi
    if v=$(/usr/bin/flowguard --version 2>&1) && echo "$v" | grep -qF "$VERSION"; then
        pass "flowguard --version: $v"
    else
        fail "flowguard --version: '$v' (expected $VERSION)"
    fi
    check "flowguard --version as the flowguard user" as_fg /usr/bin/flowguard --version

    if out=$(cd / && as_fg /usr/bin/flowguard init --config "$CONF" --tenant-name "CI Tenant" --owner-email ci-owner@example.com --json 2>/tmp/init.err); then
        pass "flowguard init as flowguard with the packaged config"
    else
        fail "flowguard init: $(cat /tmp/init.err)"
    fi
    check "init printed one JSON object with tenant_id and a one-time password" \
        sh -c "echo '$out' | grep -q '\"tenant_id\"' && echo '$out' | grep -q '\"owner_password\"'"
    check "$DATA/keys flowguard:flowguard 700" om "$DATA/keys" "flowguard:flowguard 700"
    check "$DATA/keys/master.key flowguard:flowguard 600" om "$DATA/keys/master.key" "flowguard:flowguard 600"
    check "master key is 32 bytes" sh -c "[ \$(wc -c < $DATA/keys/master.key) -eq 32 ]"
    check "$DATA/catalog.db owned by flowguard" sh -c "[ \"\$(stat -c %U:%G $DATA/catalog.db)\" = flowguard:flowguard ]"
    check "a tenant store exists under $DATA/tenants" sh -c "ls $DATA/tenants/*.db"
    check "everything in $DATA owned by flowguard" all_owned_by_fg "$DATA"
    check "data dir, keys and credentials private (0700/0600)" secrets_private "$DATA"
    note_open_files "$DATA"
    check "nothing created outside $DATA (no ./flowguard-data)" test ! -e /flowguard-data
    keysum=$(sha256sum "$DATA/keys/master.key")
    if (cd / && as_fg /usr/bin/flowguard init --config "$CONF" --tenant-name "Again" --owner-email again@example.com) >/tmp/init2.out 2>&1; then
        fail "a second flowguard init succeeded on an initialised data dir"
    else
        pass "a second flowguard init is refused: $(head -c 200 /tmp/init2.out)"
    fi
    check "the refused init left the master key untouched" sh -c "[ \"\$(sha256sum $DATA/keys/master.key)\" = '$keysum' ]"

    serve_test existing

    echo "# changed by the operator" >> "$CONF"
    confsum=$(sha256sum "$CONF")
    if DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold "$DEB" >/tmp/dpkg2.out 2>&1; then pass "reinstall (upgrade path) of the same .deb"; else fail "reinstall: $(cat /tmp/dpkg2.out)"; fi
    check "reinstall kept the changed config" sh -c "[ \"\$(sha256sum $CONF)\" = '$confsum' ]"
    check "reinstall kept the config's owner/mode" om "$CONF" "root:flowguard 640"
    check "reinstall kept the master key" sh -c "[ \"\$(sha256sum $DATA/keys/master.key)\" = '$keysum' ]"
    check "reinstall kept $DATA private" om "$DATA" "flowguard:flowguard 700"

    if dpkg -r flowguard >/tmp/rm.out 2>&1; then pass "dpkg -r flowguard"; else fail "dpkg -r: $(cat /tmp/rm.out)"; fi
    check "remove: binary gone" test ! -e /usr/bin/flowguard
    check "remove: data and master key kept" sh -c "[ \"\$(sha256sum $DATA/keys/master.key)\" = '$keysum' ] && ls $DATA/catalog.db"
    check "remove: config kept" test -f "$CONF"
    if dpkg -P flowguard >/tmp/purge.out 2>&1; then pass "dpkg -P flowguard"; else fail "dpkg -P: $(cat /tmp/purge.out)"; fi
    check "purge says where the data stayed" grep -q "/var/lib/flowguard was KEPT" /tmp/purge.out
    check "purge: config removed" test ! -e "$CONF"
    check "purge: data and master key kept" sh -c "[ \"\$(sha256sum $DATA/keys/master.key)\" = '$keysum' ] && ls $DATA/catalog.db"
    ;;
cloud-init)
    S=/run/flowguard-install
    mkdir -p "$S"; chmod 0700 "$S"
    cp /ci/install-flowguard.sh "$S/"
    head -c 32 /dev/urandom > "$S/master.key"; chmod 0600 "$S/master.key"
    staged_key=$(sha256sum < "$S/master.key")
    key_hex=$(od -An -tx1 -v "$S/master.key" | tr -d ' \n')
    key_b64=$(base64 -w0 < "$S/master.key")
    cat > "$S/flowguard.toml" <<'TOML'
# Written by cloud-init (CI)
data_dir = "/var/lib/flowguard"
listen = "127.0.0.1:8443"
region = "eus"
trusted_proxies = ["10.42.0.0/16"]

[tls]
mode = "on"

[regions]
weu = "https://weu.flowguard.corp.example"
TOML
    staged_conf=$(sha256sum < "$S/flowguard.toml")
    cat > "$S/env" <<ENV
FG_DEB_PATH='$DEB'
FG_DEB_SHA256='$(sha256sum "$DEB" | cut -d' ' -f1)'
FG_INIT_TENANT=''
FG_INIT_EMAIL=''
FG_START='true'
ENV
    if sh "$S/install-flowguard.sh" >/tmp/ci.out 2>&1; then
        pass "install-flowguard.sh (cloud-init path) installed the .deb from a local path"
    else
        fail "install-flowguard.sh: $(cat /tmp/ci.out)"; echo "deb-root[$SCEN] summary: $FAILS failure(s)"; exit 1
    fi
    check "staged config installed (and kept by dpkg)" sh -c "[ \"\$(sha256sum < $CONF)\" = '$staged_conf' ]"
    check "config root:flowguard 640" om "$CONF" "root:flowguard 640"
    check "staged master key installed byte for byte" sh -c "[ \"\$(sha256sum < $DATA/keys/master.key)\" = '$staged_key' ]"
    check "master key flowguard:flowguard 600" om "$DATA/keys/master.key" "flowguard:flowguard 600"
    check "key directory flowguard:flowguard 700" om "$DATA/keys" "flowguard:flowguard 700"
    check "staged master key removed from $S" test ! -e "$S/master.key"
    check "install script printed no key material" sh -c "! grep -qiF -e '$key_hex' -e '$key_b64' /tmp/ci.out"
    serve_test bootstrap
    check "first start used the staged key" sh -c "[ \"\$(sha256sum < $DATA/keys/master.key)\" = '$staged_key' ]"
    head -c 32 /dev/urandom > "$S/master.key"; chmod 0600 "$S/master.key"
    if sh "$S/install-flowguard.sh" >/tmp/ci2.out 2>&1; then pass "install-flowguard.sh is re-runnable"; else fail "second run: $(cat /tmp/ci2.out)"; fi
    check "second run did NOT replace the existing master key" sh -c "[ \"\$(sha256sum < $DATA/keys/master.key)\" = '$staged_key' ] && grep -q 'staged key NOT installed' /tmp/ci2.out"
    ;;
*)
    echo "unknown scenario $SCEN" >&2; exit 2 ;;
esac

echo "deb-root[$SCEN] summary: $FAILS failure(s)"
[ "$FAILS" -eq 0 ]
