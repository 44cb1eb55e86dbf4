#!/usr/bin/env bash
# .ci/schemathesis.sh -- property-based check of the served OpenAPI document against the real
# server, called by .ci/run after the release build (it never builds anything itself).
#
#   FLOWGUARD_BIN=/path/to/flowguard  bash .ci/schemathesis.sh
#
# Starts `flowguard serve` on 127.0.0.1 (port 0, read back from <data>/listen.addr) with a temp
# data dir made by `flowguard init` (an Owner and a PlatformAdmin with known passwords) and
# `flowguard tenant create` (a spare tenant), waits for /healthz, logs the Owner in (cookie
# `fg_session` + `X-CSRF-Token`), seeds a little data (an application, two flows, a run, a
# variable, a webhook token, agent and SCIM tokens, a Viewer member, a SCIM user) so that path
# parameters carry real ids, then runs schemathesis (PyPI, pinned, own venv) against
# /api/v1/openapi.json with the checks
#
#   not_a_server_error           any 5xx fails
#   status_code_conformance      a status the document does not list for the operation fails
#   content_type_conformance     a response Content-Type the document does not list fails
#   response_schema_conformance  a body that does not match the documented schema fails
#
# Every request carries the Owner's session. The operations an Owner may not call are run as the
# principal they are for: /api/v1/platform/* with a PlatformAdmin session, /api/v1/agent/* with
# an agent token, /scim/v2/* with a SCIM token (per-operation headers in the generated config).
#
# Bounded: deterministic generation (the same cases every run), at most SCHEMATHESIS_MAX_EXAMPLES
# generated cases per operation and phase, one worker, and a hard wall-clock limit. The server is
# always stopped (trap). Exits non-zero on any failure; the reports (JUnit, NDJSON events), the
# served document, the generated config and the server log stay in $SCHEMATHESIS_WORK (default
# /var/tmp/flowguard-schemathesis, rebuilt every run) and a grouped summary (undocumented status
# codes and content types per operation, 5xx with a curl line) is printed at the end.
#
# Left out (EXCLUDE below): logout and password change (they end or change the session the run
# uses), key rotation (re-keys every store of the tenant: slow, covered by its own tests) and the
# live-event streams (open until the run ends; tests/api/runner.rs). The embedded runner is off
# (runs queued by the fuzzer stay queued for its agent-API operations).
# Pinned so the run cannot saw off the branch it sits on: PATCH/DELETE /members/{id} to the Viewer
# (never the Owner), the SCIM /Users/{id} operations to the SCIM user, the PlatformAdmin's
# /platform/tenants/{id}[/…] to the spare tenant (never suspend the Owner's), DELETE
# /agent-tokens/{id} and /scim-tokens/{id} to tokens the run does not use, DELETE /flows/{flow}
# to a throw-away flow, and DELETE /applications/{id} to an id that does not exist (the Free plan
# allows one application, which the other operations use). No connection leaves the machine: the
# data dir has no `egress.allow`, so the LDAP and AI-endpoint tests are refused by the policy.
#
# Knobs (environment): SCHEMATHESIS_VENV_DIR, SCHEMATHESIS_WORK, SCHEMATHESIS_MAX_EXAMPLES (100),
# SCHEMATHESIS_WORKERS (1), SCHEMATHESIS_SEED (unset: --generation-deterministic; set: a random
# sample from that seed instead), SCHEMATHESIS_TIMEOUT (hard limit in seconds for the
# schemathesis process, 420).
set -euo pipefail

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/flowguard-target}
BIN=$(readlink -f "${FLOWGUARD_BIN:-$CARGO_TARGET_DIR/release/flowguard}")
if [ ! -x "$BIN" ]; then
    echo "schemathesis: no flowguard binary at $BIN (set FLOWGUARD_BIN)" >&2
    exit 2
fi
# The appliance reads every FLOWGUARD_* variable as a setting and rejects unknown ones (such as
# FLOWGUARD_BIN itself): none may reach the server started below.
while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^FLOWGUARD_' || true)

SCHEMATHESIS_VERSION=4.32.5
VENV="${SCHEMATHESIS_VENV_DIR:-/var/tmp/flowguard-venv-schemathesis}"
WORK="${SCHEMATHESIS_WORK:-/var/tmp/flowguard-schemathesis}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-100}"
WORKERS="${SCHEMATHESIS_WORKERS:-1}"
SEED="${SCHEMATHESIS_SEED:-}"
HARD_TIMEOUT="${SCHEMATHESIS_TIMEOUT:-420}"
T0=$SECONDS
say() { echo "schemathesis: [$((SECONDS - T0))s] $*"; }

# --- schemathesis from PyPI, pinned, in its own venv (idempotent) ---------------------------
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$SCHEMATHESIS_VERSION')" 2>/dev/null; then
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        say "apt-get install python3-venv"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
    fi
    say "pip install schemathesis==$SCHEMATHESIS_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
ST="$VENV/bin/st"
PY="$VENV/bin/python"
"$ST" --version >/dev/null

# --- a fresh data dir and server ------------------------------------------------------------
rm -rf "$WORK"
mkdir -p "$WORK"
DATA="$WORK/data"
LOG="$WORK/server.log"
SERVER_PID=
ST_PID=
# shellcheck disable=SC2317  # invoked through the trap
cleanup() {
    local rc=$?
    if [ -n "$ST_PID" ] && kill -0 "$ST_PID" 2>/dev/null; then
        kill -TERM "$ST_PID" 2>/dev/null || true   # `timeout` passes it on to schemathesis
        wait "$ST_PID" 2>/dev/null || true
    fi
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$DATA" "$WORK/owner.pw" "$WORK/admin.pw" "$WORK/session.env"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

OWNER_EMAIL=owner@schemathesis.test
ADMIN_EMAIL=platform-admin@schemathesis.test
OWNER_PW=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')
ADMIN_PW=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')
( umask 077; printf '%s\n' "$OWNER_PW" >"$WORK/owner.pw"; printf '%s\n' "$ADMIN_PW" >"$WORK/admin.pw" )
TENANT_ID=$("$BIN" init --data-dir "$DATA" --tenant-name schemathesis \
    --owner-email "$OWNER_EMAIL" --owner-password-file "$WORK/owner.pw" \
    --platform-admin-email "$ADMIN_EMAIL" --platform-admin-password-file "$WORK/admin.pw" \
    --json 2>"$WORK/init.log" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["tenant_id"])')
# A second tenant for the PlatformAdmin's per-tenant operations (suspend, resume, plan), so the
# run never suspends the tenant whose Owner session it uses.
SPARE_TENANT_ID=$("$BIN" tenant create --data-dir "$DATA" --name spare \
    --owner-email owner@spare.test --json 2>>"$WORK/init.log" |
    "$PY" -c 'import json, sys; print(json.load(sys.stdin)["tenant_id"])')
say "initialised $DATA (tenant $TENANT_ID, spare tenant $SPARE_TENANT_ID)"

FLOWGUARD_LOG=info FLOWGUARD_RUNNER__EMBEDDED_WORKERS=0 "$BIN" serve --listen 127.0.0.1:0 --data-dir "$DATA" \
    </dev/null >"$LOG" 2>&1 &
SERVER_PID=$!

# Readiness: <data>/listen.addr, then /healthz over TLS trusting the generated certificate.
ADDR=
for _ in $(seq 1 600); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "schemathesis: server exited during start-up; log:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    if [ -z "$ADDR" ] && [ -s "$DATA/listen.addr" ]; then
        ADDR=$(tr -d '[:space:]' <"$DATA/listen.addr")
    fi
    if [ -n "$ADDR" ] && [ -s "$DATA/tls/cert.pem" ] &&
        curl -fsS -o /dev/null --max-time 2 --cacert "$DATA/tls/cert.pem" "https://$ADDR/healthz" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if [ -z "$ADDR" ] || ! curl -fsS -o /dev/null --max-time 2 --cacert "$DATA/tls/cert.pem" "https://$ADDR/healthz"; then
    echo "schemathesis: server not ready after 60 s; log:" >&2
    cat "$LOG" >&2
    exit 1
fi
BASE="https://$ADDR"
CA="$WORK/ca.pem"
cp "$DATA/tls/cert.pem" "$CA"
say "server ready at $BASE (pid $SERVER_PID)"

# --- log in as the Owner, seed data, write the schemathesis config ---------------------------
CONFIG="$WORK/schemathesis.toml"
(umask 077; BASE="$BASE" CA="$CA" TENANT_ID="$TENANT_ID" SPARE_TENANT_ID="$SPARE_TENANT_ID" \
    OWNER_EMAIL="$OWNER_EMAIL" OWNER_PW="$OWNER_PW" ADMIN_EMAIL="$ADMIN_EMAIL" ADMIN_PW="$ADMIN_PW" \
    CONFIG="$CONFIG" "$PY" - >"$WORK/session.env") <<'PY'
import json, os, shlex, sys
import requests

base, ca = os.environ["BASE"], os.environ["CA"]


def login(tenant, email, password):
    """A requests session logged in (cookie jar + X-CSRF-Token); returns (session, cookie, csrf)."""
    s = requests.Session()
    # `verify` per request: a session-level one loses to REQUESTS_CA_BUNDLE in the environment.
    r = s.post(base + "/api/v1/auth/login", timeout=60, verify=ca,
               json={"tenant": tenant, "email": email, "password": password})
    if r.status_code != 200:
        sys.exit(f"seed: login of {email} -> {r.status_code}: {r.text[:500]}")
    csrf = r.json()["csrf_token"]
    s.headers["X-CSRF-Token"] = csrf
    return s, s.cookies.get("fg_session"), csrf


def call(s, method, path, body=None, want=(200, 201), prefix="/api/v1"):
    r = s.request(method, base + prefix + path, json=body, timeout=60, verify=ca)
    if r.status_code not in want:
        sys.exit(f"seed: {method} {path} -> {r.status_code}: {r.text[:500]}")
    return r.json() if r.content else None


owner, cookie, csrf = login(os.environ["TENANT_ID"], os.environ["OWNER_EMAIL"], os.environ["OWNER_PW"])
admin, admin_cookie, admin_csrf = login(None, os.environ["ADMIN_EMAIL"], os.environ["ADMIN_PW"])

app = call(owner, "POST", "/applications", {"name": "shop", "base_url": "https://shop.example.test"})["id"]
steps = [{"type": "navigate", "url": "/"}, {"type": "click", "selector": "#buy"}]
flow = call(owner, "POST", f"/applications/{app}/flows",
            {"name": "checkout", "tags": ["smoke"], "steps": steps})["id"]
call(owner, "PUT", f"/flows/{flow}", {"name": "checkout", "tags": ["smoke"], "steps": steps})  # version 2
victim_flow = call(owner, "POST", f"/applications/{app}/flows",
                   {"name": "to-delete", "tags": [], "steps": steps})["id"]
run = call(owner, "POST", f"/flows/{flow}/runs")["id"]
call(owner, "PUT", f"/applications/{app}/variables/USER_NAME", {"value": "alice", "secret": False})
hook = call(owner, "POST", f"/flows/{flow}/webhook-tokens", {"name": "ci"})
agent_tok = call(owner, "POST", "/agent-tokens", {"application_id": app, "name": "agent"})["token"]
victim_agent_tok = call(owner, "POST", "/agent-tokens", {"application_id": app, "name": "to-revoke"})["id"]
scim_tok = call(owner, "POST", "/scim-tokens", {"name": "idp"})["token"]
victim_scim_tok = call(owner, "POST", "/scim-tokens", {"name": "to-revoke"})["id"]
viewer = call(owner, "POST", "/members", {"email": "viewer@schemathesis.test", "role": "viewer",
                                          "password": "viewer-password-0123"})["id"]
scim = requests.Session()
scim.headers["Authorization"] = f"Bearer {scim_tok}"
scim_user = call(scim, "POST", "/Users", prefix="/scim/v2", body={
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "scim-user@schemathesis.test",
    "active": True})["id"]

# Fixed path values (schemathesis `parameters` overrides). Global ones apply to every operation
# with that path parameter; an `[[operations]]` entry (matched by its exact "METHOD /path" name;
# separate include-path and include-method keys would be OR-ed) wins over them. Everything else
# (bodies, queries, headers, the other path parameters) is generated.
q = json.dumps
pins = [
    ("GET /api/v1/applications/{id}", {"id": app}),
    ("PUT /api/v1/applications/{id}", {"id": app}),
    # The one application the Free plan allows: never the seeded one.
    ("DELETE /api/v1/applications/{id}", {"id": "app-that-does-not-exist"}),
    ("DELETE /api/v1/flows/{flow}", {"flow": victim_flow}),
    # Never the Owner whose session the run uses.
    ("PATCH /api/v1/members/{id}", {"id": viewer}),
    ("DELETE /api/v1/members/{id}", {"id": viewer}),
    # Not the tokens the agent and SCIM operations below authenticate with.
    ("DELETE /api/v1/agent-tokens/{id}", {"id": victim_agent_tok}),
    ("DELETE /api/v1/scim-tokens/{id}", {"id": victim_scim_tok}),
    ("DELETE /api/v1/flows/{flow}/webhook-tokens/{id}", {"id": hook["id"]}),
    ("POST /api/v1/hooks/runs/{token}", {"token": hook["token"]}),
    # Never the tenant whose Owner session the run uses.
    ("GET /api/v1/platform/tenants/{id}", {"id": os.environ["SPARE_TENANT_ID"]}),
    ("POST /api/v1/platform/tenants/{id}/suspend", {"id": os.environ["SPARE_TENANT_ID"]}),
    ("POST /api/v1/platform/tenants/{id}/resume", {"id": os.environ["SPARE_TENANT_ID"]}),
    ("PUT /api/v1/platform/tenants/{id}/plan", {"id": os.environ["SPARE_TENANT_ID"]}),
    # Never the Owner (SCIM sees every member of the tenant).
    ("GET /scim/v2/Users/{id}", {"id": scim_user}),
    ("PUT /scim/v2/Users/{id}", {"id": scim_user}),
    ("PATCH /scim/v2/Users/{id}", {"id": scim_user}),
    ("DELETE /scim/v2/Users/{id}", {"id": scim_user}),
    ("GET /scim/v2/ResourceTypes/{id}", {"id": "User"}),
    ("GET /scim/v2/Schemas/{id}", {"id": "urn:ietf:params:scim:schemas:core:2.0:User"}),
]
# Operations an Owner may not call run with the principal they are for (the Owner's cookie is
# still sent; a bearer token takes precedence over it, see src/http/extract.rs).
principals = [
    ("^/api/v1/platform/", {"Cookie": f"fg_session={admin_cookie}", "X-CSRF-Token": admin_csrf}),
    ("^/api/v1/agent/", {"Authorization": f"Bearer {agent_tok}"}),
    ("^/scim/v2/", {"Authorization": f"Bearer {scim_tok}"}),
]
lines = [
    "# generated by .ci/schemathesis.sh",
    "[cache]",
    "enabled = false",
    "",
    "[parameters]",
    f'"path.app" = {q(app)}',
    f'"path.flow" = {q(flow)}',
    f'"path.run" = {q(run)}',
    f'"path.name" = {q("USER_NAME")}',
    f'"path.tenant" = {q(os.environ["TENANT_ID"])}',
]
for name, params in pins:
    lines += ["", "[[operations]]", f"include-name = {q(name)}"]
    lines.append("parameters = { " + ", ".join(f'"path.{k}" = {q(v)}' for k, v in params.items()) + " }")
for regex, headers in principals:
    lines += ["", "[[operations]]", f"include-path-regex = {q(regex)}"]
    lines.append("headers = { " + ", ".join(f"{q(k)} = {q(v)}" for k, v in headers.items()) + " }")
with open(os.environ["CONFIG"], "w") as f:
    f.write("\n".join(lines) + "\n")

print(f"FG_COOKIE={shlex.quote(cookie)}")
print(f"FG_CSRF={shlex.quote(csrf)}")
print(f"seed: app={app} flow={flow} victim_flow={victim_flow} run={run} viewer={viewer} "
      f"scim_user={scim_user}", file=sys.stderr)
PY
# shellcheck disable=SC1091
. "$WORK/session.env"
say "logged in as the Owner; seeded data; config $CONFIG"

# --- schemathesis ------------------------------------------------------------------------------
curl -fsS --cacert "$CA" -o "$WORK/openapi.json" "$BASE/api/v1/openapi.json"
EXCLUDE=(
    --exclude-path /api/v1/auth/logout          # ends the session the run uses
    --exclude-path /api/v1/me/password          # changes the Owner's password, ends other sessions
    --exclude-path /api/v1/keys/rotate          # re-keys every store of the tenant: slow, own tests
    # Server-Sent-Event streams (tests/api/runner.rs and dashboard.rs cover them). A run's stream
    # ends by itself only once the run has ended, and the seeded run stays `queued` here (no
    # runner in this job: FLOWGUARD_RUNNER__EMBEDDED_WORKERS=0, no agent), so every request would
    # hang until --request-timeout; the list stream is open for 30 minutes by design.
    --exclude-path /api/v1/applications/{app}/runs/events
    --exclude-path /api/v1/runs/{run}/events
)
REPORTS="$WORK/reports"
# Deterministic generation (the same cases every run) unless a seed asks for another sample.
if [ -n "$SEED" ]; then GENERATION=(--seed "$SEED"); else GENERATION=(--generation-deterministic); fi
# One worker: with several, hypothesis parses lambda sources in threads and CPython 3.11 raises
# "AST constructor recursion depth mismatch" (runtime errors, not findings).
# In the background with `wait`, so that a TERM/INT reaches the trap (and the cleanup stops
# schemathesis and the server) at once instead of after the run.
(cd "$WORK" && exec timeout --kill-after=10 "$HARD_TIMEOUT" "$ST" --config-file "$CONFIG" run "$BASE/api/v1/openapi.json" \
    --url "$BASE" \
    --tls-verify "$CA" \
    -H "Cookie: fg_session=$FG_COOKIE" \
    -H "X-CSRF-Token: $FG_CSRF" \
    --generation-with-security-parameters false \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --mode all \
    --max-examples "$MAX_EXAMPLES" \
    "${GENERATION[@]}" \
    --workers "$WORKERS" \
    --request-timeout 30 \
    --continue-on-failure \
    --no-color \
    --output-truncate true \
    --report junit,ndjson --report-dir "$REPORTS" \
    "${EXCLUDE[@]}" >"$WORK/schemathesis.log" 2>&1) &
ST_PID=$!
rc=0
wait "$ST_PID" || rc=$?
ST_PID=
# schemathesis' own summary (the per-failure details are in the log and the reports)
if grep -q '^=* SUMMARY =*$' "$WORK/schemathesis.log"; then
    sed -n '/^=* SUMMARY =*$/,$p' "$WORK/schemathesis.log"
else
    tail -40 "$WORK/schemathesis.log"
fi
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "schemathesis: hard time limit of ${HARD_TIMEOUT}s reached" >&2
fi
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "schemathesis: the server died during the run; log tail:" >&2
    tail -50 "$LOG" >&2
    rc=1
fi

# --- grouped findings from the NDJSON events ---------------------------------------------------
"$PY" - "$WORK/openapi.json" "$REPORTS" <<'PY' | tee "$WORK/summary.txt"
import base64, collections, glob, json, shlex, sys
from urllib.parse import urlsplit

spec = json.load(open(sys.argv[1]))
events = sorted(glob.glob(sys.argv[2] + "/ndjson-*.ndjson"))
if not events:
    sys.exit("no NDJSON report")


def documented(label, status):
    method, path = label.split(" ", 1)
    responses = spec["paths"].get(path, {}).get(method.lower(), {}).get("responses", {})
    for key in (str(status), f"{str(status)[0]}XX", "default"):
        if key in responses:
            return responses[key]
    return None


def ctype_ok(resp, ctype):
    content = resp.get("content") or {}
    if not ctype:
        return True
    main = ctype.split(";")[0].strip().lower()
    for k in content:
        k = k.lower()
        if k == main or k == "*/*" or (k.endswith("/*") and main.startswith(k[:-1])):
            return True
    return False


def body_of(obj):
    b = obj.get("body") if "body" in obj else obj.get("content")
    if isinstance(b, dict) and "$base64" in b:
        return base64.b64decode(b["$base64"]).decode("utf-8", "replace")
    return b if isinstance(b, str) else ""


checks = collections.Counter()          # (check, code) -> failing cases
undoc_status = collections.defaultdict(lambda: collections.defaultdict(set))  # op -> status -> ctypes
undoc_ctype = {}                             # (op, status, received) -> documented types
no_content = set()                           # (op, status, received): body, none documented
server_errors = []
cases = 0
for line in open(events[-1]):
    ev = json.loads(line)
    fin = ev.get("ScenarioFinished")
    if not fin:
        continue
    rec = fin["recorder"]
    label = rec["label"]
    for cid, results in (rec.get("checks") or {}).items():
        for r in results:
            if r["status"] == "failure":
                code = (r.get("failure_info") or {}).get("failure", {}).get("code", "")
                checks[(r["name"], code)] += 1
    for cid, it in (rec.get("interactions") or {}).items():
        req, resp = it["request"], it.get("response")
        if not resp:
            continue
        cases += 1
        status = resp["status_code"]
        ctype = (resp["headers"].get("content-type") or [""])[0]
        if status >= 500:
            server_errors.append((label, req, resp))
        if req["method"] != label.split(" ", 1)[0]:
            continue   # an unspecified-method probe: only `not_a_server_error` applies
        doc = documented(label, status)
        if doc is None:
            undoc_status[label][status].add(ctype.split(";")[0])
        elif not doc.get("content"):
            if ctype and body_of(resp):
                no_content.add((label, status, ctype.split(";")[0]))
        elif not ctype_ok(doc, ctype):
            undoc_ctype[(label, status, ctype.split(";")[0])] = ", ".join(doc["content"])

print(f"\n== schemathesis findings ({cases} requests)")
print("\nfailing test cases by check:")
for (name, code), n in sorted(checks.items()):
    print(f"  {code or '-':6} {name:30} {n}")
print(f"\nundocumented status codes ({sum(len(v) for v in undoc_status.values())} in {len(undoc_status)} operations):")
for label in sorted(undoc_status, key=lambda l: (l.split(' ', 1)[1], l)):
    st = undoc_status[label]
    print(f"  {label:58} " + " ".join(f"{s}" for s in sorted(st))
          + "   [" + ", ".join(sorted({c or '-' for v in st.values() for c in v})) + "]")
print(f"\nundocumented content types on documented statuses ({len(undoc_ctype)}):")
for (label, status, ct), docd in sorted(undoc_ctype.items(), key=lambda x: (x[0][0].split(' ', 1)[1], x[0])):
    print(f"  {label:58} {status} {ct or '-'}  (documented: {docd})")
print(f"\nbodies on responses documented without content ({len(no_content)}; schemathesis does not"
      " check these):")
for label, status, ct in sorted(no_content, key=lambda x: (x[0].split(' ', 1)[1], x)):
    print(f"  {label:58} {status} {ct}")
print(f"\nserver errors (5xx): {len(server_errors)}")
# Credentials are "[Filtered]" in the reports: the curl line names them as shell variables.
placeholder = {"cookie": "Cookie: fg_session=$SESSION", "x-csrf-token": "X-CSRF-Token: $CSRF",
               "authorization": "Authorization: Bearer $TOKEN"}
for label, req, resp in server_errors:
    u = urlsplit(req["uri"])
    cmd = f"curl --cacert ca.pem -X {req['method']}"
    for k, v in req.get("headers", {}).items():
        h = placeholder.get(k.lower())
        cmd += f' -H "{h}"' if h else " -H " + shlex.quote(f"{k}: {v[0]}")
    body = body_of(req)
    if body:
        cmd += " --data-raw " + shlex.quote(body)
    cmd += ' "$BASE"' + shlex.quote(u.path + (("?" + u.query) if u.query else ""))
    print(f"  {label}: {resp['status_code']} {body_of(resp)[:300]}")
    print("    " + cmd)
PY
say "schemathesis exited with $rc; reports in $REPORTS, summary in $WORK/summary.txt"
exit "$rc"
