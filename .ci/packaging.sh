#!/usr/bin/env bash
# .ci/packaging.sh -- offline checks of the packaging (issue 10), called by .ci/run after the
# release binary is built.
#
#   FLOWGUARD_BIN=/path/to/release/flowguard  bash .ci/packaging.sh
#
# Installs what it needs only when missing (Debian packages, cargo-deb, cargo-generate-rpm,
# two Python venvs under /var/tmp, a debootstrap'ed Debian root cached as a tarball under
# /var/tmp); after that it needs no network. It never rebuilds the binary: both packages are
# made from a stripped copy of $FLOWGUARD_BIN.
#
# Checks: systemd unit (issue's directives, systemd-analyze verify/security), shellcheck of all
# packaging shell scripts, .deb (cargo deb --no-build) + lintian, .rpm (cargo generate-rpm) +
# rpm -qip and file list, the .deb installed into a clean Debian root (version, init, owner and
# mode of created files, first start, upgrade/remove/purge keep data, the cloud-init install
# script), the Helm chart (Helm SDK from PyPI: lint, schema, render, refusals;
# kubernetes-validate --strict; rendered config parsed by the binary), Terraform (python-hcl2)
# and checkov on the chart, Terraform and Dockerfile, with no failed check except those listed
# with a reason in the matching README.
#
# Prints PASS/FAIL lines and a closing "packaging: N passed, M failed" line; exits non-zero on
# any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${FLOWGUARD_BIN:?set FLOWGUARD_BIN to the built release binary}"
BIN=$(readlink -f "$FLOWGUARD_BIN")
# The appliance reads every FLOWGUARD_* variable as a setting (and rejects unknown ones, such
# as FLOWGUARD_BIN itself): none may leak into the runs of the binary below.
while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^FLOWGUARD_')
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/flowguard-target}
export PATH="$HOME/.cargo/bin:$PATH"

WORK=/var/tmp/flowguard-pkg                 # scratch space, rebuilt every run
VENV=/var/tmp/flowguard-venv                # helm-python-sdk, kubernetes-validate, python-hcl2
CKV_VENV=/var/tmp/flowguard-venv-checkov    # checkov (its bc-python-hcl2 clashes with python-hcl2)
PY_REQS="helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 python-hcl2==8.1.4 PyYAML==6.0.2"
CKV_REQS="checkov==3.3.30"
CARGO_DEB_VERSION=3.8.0
CARGO_RPM_VERSION=0.21.1
DEB_SUITE=bookworm
DEBROOT_TAR=/var/tmp/flowguard-debroot-$DEB_SUITE.tar
K8S_VERSIONS="1.25.0 1.37.0"

PASSES=0
FAILS=0
T0=$SECONDS
pass() { echo "PASS $*"; PASSES=$((PASSES + 1)); }
fail() { echo "FAIL $*"; FAILS=$((FAILS + 1)); }
section() { echo; echo "== $* (t=$((SECONDS - T0))s)"; }
# Run a helper that prints its own PASS/FAIL lines; count them and fail on a bad exit status.
counted() { # name, command...
    local name=$1 out rc p f
    shift
    out=$("$@" 2>&1)
    rc=$?
    echo "$out"
    p=$(grep -c '^PASS' <<<"$out")
    f=$(grep -c '^FAIL' <<<"$out")
    PASSES=$((PASSES + p))
    FAILS=$((FAILS + f))
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then fail "$name exited with status $rc"; fi
}

# One run at a time: the scratch dir and the caches are shared.
exec 9>/var/tmp/flowguard-pkg.lock
flock 9

section "tools"
if [ ! -x "$BIN" ]; then
    fail "FLOWGUARD_BIN=$BIN is not an executable"
    echo "packaging: $PASSES passed, $FAILS failed"
    exit 1
fi
missing=()
for pair in lintian:lintian rpm:rpm debootstrap:debootstrap shellcheck:shellcheck \
    systemd-analyze:systemd dpkg-shlibdeps:dpkg-dev strip:binutils flock:util-linux \
    unshare:util-linux curl:curl python3:python3 rpmlint:rpmlint; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${pkgs[@]}" >/dev/null || fail "apt-get install ${pkgs[*]}"
fi
cargo_tool() { # binary, crate, version
    if ! "$1" --version 2>/dev/null | grep -qF "$3"; then
        echo "installing $2 $3 (cargo install, cached in ~/.cargo/bin)"
        # own temporary target dir (not the appliance's CARGO_TARGET_DIR); opt-level 1 is plenty
        # for a packaging tool and compiles much faster on 2 cores
        env -u CARGO_TARGET_DIR CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false \
            cargo install --locked --quiet "$2@$3" || fail "cargo install $2@$3"
    fi
}
cargo_tool cargo-deb cargo-deb "$CARGO_DEB_VERSION"
cargo_tool cargo-generate-rpm cargo-generate-rpm "$CARGO_RPM_VERSION"
venv() { # dir, requirements
    if [ "$(cat "$1/.flowguard-reqs" 2>/dev/null)" != "$2" ]; then
        echo "creating venv $1: $2"
        rm -rf "$1"
        python3 -m venv "$1" && "$1/bin/pip" install -q --disable-pip-version-check $2 \
            && echo "$2" > "$1/.flowguard-reqs" || fail "pip install $2 into $1"
    fi
}
venv "$VENV" "$PY_REQS"
venv "$CKV_VENV" "$CKV_REQS"
pass "tools ready (t=$((SECONDS - T0))s)"

rm -rf "$WORK"
mkdir -p "$WORK/target/release" "$WORK/out"
VERSION=$(cargo metadata --no-deps --offline --format-version 1 --manifest-path "$ROOT/Cargo.toml" 2>/dev/null \
    | python3 -c 'import json,sys; print([p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="flowguard"][0])')
echo "flowguard version $VERSION, binary $BIN"

# ---------------------------------------------------------------------------------------------
section "systemd unit and shell scripts"
UNIT=$ROOT/packaging/systemd/flowguard.service
for d in "User=flowguard" "NoNewPrivileges=yes" "ProtectSystem=strict" "ReadWritePaths=/var/lib/flowguard" \
    "ProtectHome=yes" "PrivateTmp=yes" "PrivateDevices=yes" "CapabilityBoundingSet=" \
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" "SystemCallFilter=@system-service" \
    "MemoryDenyWriteExecute=yes" "LockPersonality=yes" "Restart=on-failure" \
    'ExecReload=/bin/kill -HUP $MAINPID'; do
    grep -qxF "$d" "$UNIT" || fail "unit lacks '$d'"
done
grep -q '^AmbientCapabilities=.*CAP_\|^CapabilityBoundingSet=.\+' "$UNIT" \
    && fail "unit grants a capability (only needed to bind < 1024)" \
    || pass "unit has every directive the issue lists, and no capability"
vunit=$WORK/unit/flowguard.service
mkdir -p "$WORK/unit"
sed "s#/usr/bin/flowguard#$BIN#" "$UNIT" > "$vunit"
if out=$(systemd-analyze verify --man=no "$vunit" 2>&1) && [ -z "$out" ]; then
    pass "systemd-analyze verify: no warnings"
else
    fail "systemd-analyze verify: $out"
fi
if sec=$(systemd-analyze security --offline=true --threshold=20 "$vunit" 2>&1); then
    pass "systemd-analyze security: $(grep -o 'Overall exposure level.*' <<<"$sec")"
else
    fail "systemd-analyze security above 2.0: $(grep -o 'Overall exposure level.*' <<<"$sec")"
fi
scripts=("$ROOT"/packaging/debian/{postinst,prerm,postrm} "$ROOT"/packaging/ci/deb-root-test.sh \
    "$ROOT"/terraform/modules/vm-cloud-init/files/install-flowguard.sh "$ROOT/.ci/packaging.sh")
if out=$(shellcheck -S warning "${scripts[@]}" 2>&1) \
    && out2=$(shellcheck -S warning -s sh "$ROOT"/packaging/rpm/*.sh 2>&1); then
    pass "shellcheck: maintainer scripts, rpm scriptlets, install and CI scripts"
else
    fail "shellcheck: $out ${out2:-}"
fi

# ---------------------------------------------------------------------------------------------
section ".deb (cargo deb --no-build)"
STAGED=$WORK/target/release/flowguard
cp "$BIN" "$STAGED"
strip --strip-all "$STAGED"
if readelf -S "$STAGED" | grep -q '\.symtab'; then fail "staged binary still has a symbol table"; else pass "binary stripped ($(stat -c %s "$STAGED") bytes)"; fi

top=$(sed -n '1s/^flowguard (\([^)]*\)).*/\1/p' "$ROOT/packaging/debian/changelog")
if [ "$top" = "$VERSION-1" ]; then
    pass "packaging/debian/changelog's latest entry is $VERSION-1"
else
    fail "packaging/debian/changelog's latest entry is '$top' but Cargo.toml says $VERSION: add an entry for $VERSION-1"
fi

DEB=""
if out=$(cd "$ROOT" && CARGO_TARGET_DIR=$WORK/target cargo deb --no-build --offline --no-strip \
    --manifest-path "$ROOT/Cargo.toml" -o "$WORK/out/" 2>&1); then
    DEB=$(ls "$WORK"/out/*.deb)
    pass "cargo deb --no-build: $(basename "$DEB") ($(stat -c %s "$DEB") bytes)"
else
    fail "cargo deb: $out"
fi
if [ -n "$DEB" ]; then
    info=$(dpkg-deb -f "$DEB")
    for f in Package Version Maintainer Section Priority Depends Description; do
        grep -q "^$f: ." <<<"$info" || fail ".deb control lacks $f"
    done
    grep -q "^Version: $VERSION-1$" <<<"$info" || fail ".deb version is not $VERSION-1"
    grep -q "^Depends:.*libc6" <<<"$info" || fail ".deb Depends lacks libc6 (shlibdeps)"
    [ "$(grep -c '^ ' <<<"$info")" -ge 2 ] || fail ".deb has no extended description"
    pass ".deb control: $(grep -E '^(Version|Depends|Maintainer):' <<<"$info" | tr '\n' ' ')"
    listing=$(dpkg-deb -c "$DEB")
    for want in "^-rwxr-xr-x 0/0 .* ./usr/bin/flowguard$" \
        "^-rw-r----- 0/0 .* ./etc/flowguard/flowguard.toml$" \
        "^-rw-r--r-- 0/0 .* ./lib/systemd/system/flowguard.service$" \
        " ./usr/share/doc/flowguard/copyright$" " ./usr/share/doc/flowguard/changelog.Debian.gz$" \
        " ./usr/share/man/man1/flowguard.1.gz$"; do
        grep -Eq -- "$want" <<<"$listing" || fail ".deb lacks an entry matching '$want'"
    done
    dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./conffiles 2>/dev/null | grep -qx /etc/flowguard/flowguard.toml \
        || fail "/etc/flowguard/flowguard.toml is not a conffile"
    pass ".deb contents: binary, conffile 0640, unit, copyright, changelog, man page"

    # lintian: no errors. Overrides ship in the package; each needs a reason comment above it.
    ovr=$ROOT/packaging/lintian-overrides
    # an override must sit in a block (no blank line) that starts with a comment
    if awk '/^#/ { c=1; next } /^[[:space:]]*$/ { c=0; next } { if (!c) bad=1 } END { exit bad }' "$ovr"; then
        pass "every lintian override has a reason comment"
    else
        fail "packaging/lintian-overrides: an override lacks a '# reason' comment on the line above"
    fi
    lout=$(lintian --allow-root --fail-on error --display-info --show-overrides "$DEB" 2>&1)
    lrc=$?
    echo "$lout" | sed 's/^/  lintian: /'
    if [ $lrc -eq 0 ] && ! grep -q '^E:' <<<"$lout"; then
        pass "lintian: no errors ($(grep -c '^W:' <<<"$lout") warnings, $(grep -c '^O:' <<<"$lout") overridden)"
    else
        fail "lintian reported errors"
    fi
fi

# ---------------------------------------------------------------------------------------------
section ".rpm (cargo generate-rpm)"
RPM=""
gzip -9n < "$ROOT/packaging/flowguard.1" > "$WORK/target/release/flowguard.1.gz"
if out=$(cd "$ROOT" && cargo generate-rpm --target-dir "$WORK/target" -o "$WORK/out/" 2>&1); then
    RPM=$(ls "$WORK"/out/*.rpm)
    pass "cargo generate-rpm: $(basename "$RPM") ($(stat -c %s "$RPM") bytes)"
else
    fail "cargo generate-rpm: $out"
fi
if [ -n "$RPM" ]; then
    qi=$(rpm -qip "$RPM" 2>&1)
    echo "$qi" | sed 's/^/  rpm -qip: /'
    for f in Name Version Release License Summary URL Vendor; do
        grep -q "^$f *: *[^ ]" <<<"$qi" || fail "rpm -qip: $f is empty"
    done
    [ -n "$(sed -n '/^Description *:/,$p' <<<"$qi" | sed 1d | tr -d '[:space:]')" ] || fail "rpm -qip: Description is empty"
    grep -q "^Version *: $VERSION$" <<<"$qi" || fail "rpm version is not $VERSION"
    files=$(rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM")
    echo "$files" | sed 's/^/  rpm files: /'
    grep -qx -- "-rwxr-xr-x root:root  /usr/bin/flowguard" <<<"$files" || fail "rpm: /usr/bin/flowguard not 0755 root"
    grep -qx -- "-rw-r----- root:flowguard cn /etc/flowguard/flowguard.toml" <<<"$files" \
        || fail "rpm: config is not %config(noreplace) 0640 root:flowguard"
    grep -q -- "-rw-r--r-- root:root  /usr/lib/systemd/system/flowguard.service" <<<"$files" || fail "rpm: unit missing"
    scr=$(rpm -qp --scripts "$RPM")
    grep -q "useradd --system" <<<"$scr" && grep -q "install -d -m 0700 -o flowguard" <<<"$scr" \
        && grep -q "was KEPT" <<<"$scr" || fail "rpm scriptlets lack user creation, data dir or the removal notice"
    req=$(rpm -qp --requires "$RPM")
    grep -q "^libc.so.6" <<<"$req" && grep -q "^shadow-utils" <<<"$req" || fail "rpm Requires lack libc.so.6 or shadow-utils: $req"
    pass "rpm -qip fields, %config(noreplace) 0640 root:flowguard, scriptlets, Requires: $(grep -v '^/bin/sh$' <<<"$req" | tr '\n' ' ' | cut -c1-140)"

    rc_file=$ROOT/packaging/rpmlintrc
    if awk '/^#/ { c=1; next } /^[[:space:]]*$/ { c=0; next } { if (!c) bad=1 } END { exit bad }' "$rc_file"; then
        pass "every rpmlint filter has a reason comment"
    else
        fail "packaging/rpmlintrc: a filter lacks a '# reason' comment on the line above"
    fi
    rlout=$(rpmlint -c "$ROOT/packaging/rpmlint.toml" -r "$rc_file" "$RPM" 2>&1)
    rlrc=$?
    echo "$rlout" | grep -E ': (E|W): ' | sed 's/^/  rpmlint: /'
    if [ $rlrc -eq 0 ] && ! grep -q ': E: ' <<<"$rlout"; then
        pass "rpmlint: no errors ($(grep -c ': W: ' <<<"$rlout") warnings)"
    else
        fail "rpmlint reported errors: $(grep -E ': E: |badness' <<<"$rlout" | tr '\n' ' ')"
    fi
fi

# ---------------------------------------------------------------------------------------------
section "install the .deb into a clean Debian root"
if [ ! -s "$DEBROOT_TAR" ]; then
    mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
    mirror=${mirror:-http://deb.debian.org/debian}
    echo "debootstrap $DEB_SUITE from $mirror (cached afterwards as $DEBROOT_TAR)"
    rm -rf "$WORK/debroot-build"
    if debootstrap --variant=minbase --include=curl,ca-certificates "$DEB_SUITE" "$WORK/debroot-build" "$mirror" \
        >"$WORK/debootstrap.log" 2>&1; then
        tar -C "$WORK/debroot-build" -cf "$DEBROOT_TAR.tmp" . && mv "$DEBROOT_TAR.tmp" "$DEBROOT_TAR"
        rm -rf "$WORK/debroot-build"
    else
        fail "debootstrap: $(tail -n 20 "$WORK/debootstrap.log")"
    fi
fi
deb_root_run() { # scenario
    local r=$WORK/debroot-$1
    rm -rf "$r" && mkdir -p "$r" && tar -C "$r" -xf "$DEBROOT_TAR" || { fail "unpack $DEBROOT_TAR"; return; }
    mkdir -p "$r/ci"
    cp "$DEB" "$r/ci/"
    cp "$ROOT/packaging/ci/deb-root-test.sh" "$ROOT/terraform/modules/vm-cloud-init/files/install-flowguard.sh" "$r/ci/"
    counted "deb-root[$1]" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        unshare --fork --pid --mount-proc="$r/proc" chroot "$r" \
        /bin/sh /ci/deb-root-test.sh "$1" "/ci/$(basename "$DEB")" "$VERSION"
    rm -rf "$r"
}
if [ -n "$DEB" ] && [ -s "$DEBROOT_TAR" ]; then
    deb_root_run dpkg
    deb_root_run cloud-init
else
    fail "no .deb or no Debian root: install test skipped"
fi

# ---------------------------------------------------------------------------------------------
section "Helm chart (helm-python-sdk, kubernetes-validate)"
RENDER=$WORK/rendered
counted "chart_check" "$VENV/bin/python" "$ROOT/packaging/ci/chart_check.py" "$ROOT/helm/flowguard" "$RENDER"
manifests=("$RENDER"/*/*.yaml)
if [ -e "${manifests[0]}" ]; then
    for k in $K8S_VERSIONS; do
        if out=$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$k" "${manifests[@]}" 2>&1); then
            pass "kubernetes-validate --strict -k $k: ${#manifests[@]} manifests"
        else
            fail "kubernetes-validate --strict -k $k: $out"
        fi
    done
fi
# The configs the chart and the image carry must be accepted by the binary itself (unknown keys
# are rejected at start). `init` into a scratch dir loads and validates the whole file.
for cfg in "$RENDER"/*.flowguard.toml "$ROOT/packaging/container/flowguard.toml"; do
    [ -f "$cfg" ] || continue
    scratch=$(mktemp -d "$WORK/cfg.XXXXXX")
    sed -e "s#/etc/flowguard/tls/tls.crt#$scratch/tls.crt#; s#/etc/flowguard/tls/tls.key#$scratch/tls.key#" \
        -e "s#/etc/flowguard/metrics/token#$scratch/token#" "$cfg" > "$scratch/flowguard.toml"
    echo ci-metrics-token > "$scratch/token"
    if out=$(cd "$scratch" && FLOWGUARD_MASTER_KEY_FILE="$scratch/master.key" sh -c 'umask 077; head -c 32 /dev/urandom > master.key; exec "$0" init --config flowguard.toml --data-dir data --tenant-name "Config Check" --owner-email cfg@example.com --json' \
        "$BIN" 2>&1); then
        pass "the binary accepts $(basename "$cfg")"
    else
        fail "the binary rejects $(basename "$cfg"): $out"
    fi
    rm -rf "$scratch"
done

# ---------------------------------------------------------------------------------------------
section "Terraform (python-hcl2)"
counted "terraform_check" "$VENV/bin/python" "$ROOT/packaging/ci/terraform_check.py" "$ROOT/terraform" "$ROOT/helm/flowguard"

# ---------------------------------------------------------------------------------------------
section "checkov (chart manifests, Terraform, Dockerfile)"
export BC_SKIP_MAPPING=TRUE
ck=$WORK/checkov.json
(cd "$ROOT" && "$CKV_VENV/bin/checkov" --skip-download --quiet -o json \
    -d "$RENDER" -d terraform -d packaging \
    --framework kubernetes terraform dockerfile >"$ck" 2>"$WORK/checkov.err")
if [ -s "$ck" ]; then
    counted "checkov" "$VENV/bin/python" "$ROOT/packaging/ci/checkov_gate.py" "$ck" \
        "kubernetes=$ROOT/helm/flowguard/README.md" "terraform=$ROOT/terraform/README.md" \
        "dockerfile=$ROOT/packaging/README.md"
else
    fail "checkov produced no report: $(tail -n 20 "$WORK/checkov.err")"
fi

# ---------------------------------------------------------------------------------------------
section "summary"
echo "artifacts: ${DEB:-no .deb} ${RPM:-no .rpm}"
echo "time: $((SECONDS - T0))s"
echo "packaging: $PASSES passed, $FAILS failed"
[ "$FAILS" -eq 0 ]
