#!/usr/bin/env python3
"""Offline checks of helm/flowguard with the Helm SDK from PyPI (helm-python-sdk).

For every values file in helm/flowguard/ci/: helm lint (strict), values.schema.json
validation, and an offline render written to OUT/<scenario>/ (one file per manifest, for
kubernetes-validate and checkov), plus the rendered flowguard.toml (for the binary to parse).
Then negative cases the chart must refuse. Prints PASS/FAIL lines; exit 1 on any failure.

usage: chart_check.py CHART_DIR OUT_DIR
"""
from __future__ import annotations

import pathlib
import sys

import helm_python as helm
import yaml

FAILURES: list[str] = []


def ok(msg: str) -> None:
    print(f"PASS chart: {msg}")


def fail(msg: str) -> None:
    print(f"FAIL chart: {msg}")
    FAILURES.append(msg)


def load_values(path: pathlib.Path) -> dict:
    return helm.values_from_yaml(path.read_text())


def render(chart_dir: pathlib.Path, values: dict) -> dict[str, str]:
    with helm.Chart.load(chart_dir) as chart:
        chart.validate_schema(values)
        return chart.render(values, name="fg", namespace="flowguard", is_install=True)


def docs_of(manifests: dict[str, str]) -> list[tuple[str, dict]]:
    out = []
    for name, text in sorted(manifests.items()):
        if not name.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append((name, doc))
    return out


def check_scenario(chart_dir: pathlib.Path, values_file: pathlib.Path, out: pathlib.Path) -> None:
    scen = values_file.name.removesuffix("-values.yaml")
    values = load_values(values_file)

    report = helm.lint(chart_dir, values, strict=True, namespace="flowguard")
    errs = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    if errs or report.get("errors"):
        fail(f"{scen}: helm lint --strict: {errs or report.get('errors')}")
    else:
        infos = "; ".join(m["error"] for m in report.get("messages", []))
        ok(f"{scen}: helm lint --strict" + (f" (info: {infos})" if infos else ""))

    try:
        manifests = render(chart_dir, values)
    except helm.HelmError as e:
        fail(f"{scen}: render: {e}")
        return
    docs = docs_of(manifests)
    sdir = out / scen
    sdir.mkdir(parents=True, exist_ok=True)
    for i, (name, doc) in enumerate(docs):
        fname = f"{i:02d}-{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
        (sdir / fname).write_text(yaml.safe_dump(doc, sort_keys=False))
    ok(f"{scen}: schema-valid, rendered {len(docs)} manifests")

    kinds = {d["kind"] for _, d in docs}
    need = {"StatefulSet", "Service", "ConfigMap", "NetworkPolicy", "PodDisruptionBudget", "Pod"}
    if missing := need - kinds:
        fail(f"{scen}: missing kinds {sorted(missing)}")

    sts = next(d for _, d in docs if d["kind"] == "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    ann = sts["spec"]["template"]["metadata"].get("annotations", {})
    if "checksum/config" not in ann:
        fail(f"{scen}: StatefulSet pod template lacks checksum/config")
    c = pod["containers"][0]
    sc = c["securityContext"]
    psc = pod["securityContext"]
    restricted = (
        psc.get("runAsNonRoot") is True
        and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        and sc.get("allowPrivilegeEscalation") is False
        and sc.get("readOnlyRootFilesystem") is True
        and sc.get("capabilities", {}).get("drop") == ["ALL"]
        and pod.get("automountServiceAccountToken") is False
    )
    if not restricted:
        fail(f"{scen}: pod is not 'restricted' (non-root, RO rootfs, drop ALL, seccomp)")
    if c["livenessProbe"]["httpGet"]["path"] != "/healthz" or c["readinessProbe"]["httpGet"]["path"] != "/readyz":
        fail(f"{scen}: probes must be /healthz (liveness) and /readyz (readiness)")
    vols = {v["name"]: v for v in pod["volumes"]}
    mk = vols.get("master-key", {}).get("secret", {})
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    if mk.get("defaultMode") != 0o400 or not mounts.get("master-key", {}).get("readOnly"):
        fail(f"{scen}: master key must be a Secret volume, mode 0400, mounted read-only")
    if not c.get("resources", {}).get("limits") or not c.get("resources", {}).get("requests"):
        fail(f"{scen}: container resources missing")
    if values.get("persistence", {}).get("enabled", True) and not sts["spec"].get("volumeClaimTemplates"):
        fail(f"{scen}: persistence enabled but no volumeClaimTemplates")

    cm = next(d for _, d in docs if d["kind"] == "ConfigMap")
    (sdir.parent / f"{scen}.flowguard.toml").write_text(cm["data"]["flowguard.toml"])

    np = next(d for _, d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "fg-flowguard")
    if sorted(np["spec"]["policyTypes"]) != ["Egress", "Ingress"]:
        fail(f"{scen}: NetworkPolicy must restrict both Ingress and Egress")
    for rule in np["spec"]["egress"]:
        for peer in rule.get("to", []):
            if "ipBlock" in peer and peer["ipBlock"]["cidr"] in ("0.0.0.0/0", "::/0"):
                fail(f"{scen}: NetworkPolicy allows egress to everything")


def expect_refusal(chart_dir: pathlib.Path, base: dict, patch: dict, what: str, needle: str) -> None:
    def merge(a: dict, b: dict) -> dict:
        r = dict(a)
        for k, v in b.items():
            r[k] = merge(r.get(k, {}), v) if isinstance(v, dict) and isinstance(r.get(k), dict) else v
        return r

    try:
        render(chart_dir, merge(base, patch))
    except helm.HelmError as e:
        if needle.lower() in str(e).lower():
            ok(f"refuses {what}")
        else:
            fail(f"refused {what}, but with an unexpected message: {e}")
        return
    fail(f"accepted {what}")


def main() -> int:
    chart_dir = pathlib.Path(sys.argv[1]).resolve()
    out = pathlib.Path(sys.argv[2]).resolve()
    out.mkdir(parents=True, exist_ok=True)

    for vf in sorted((chart_dir / "ci").glob("*-values.yaml")):
        check_scenario(chart_dir, vf, out)

    base = load_values(chart_dir / "ci" / "default-values.yaml")
    expect_refusal(chart_dir, {}, {}, "no license while license.required=true", "license.required")
    expect_refusal(chart_dir, base, {"replicaCount": 0}, "replicaCount 0 (schema)", "replicaCount")
    expect_refusal(chart_dir, base, {"bogusKey": 1}, "an unknown top-level key (schema)", "bogusKey")
    expect_refusal(chart_dir, base, {"config": {"region": "Bad Region"}}, "an invalid region (schema)", "region")
    expect_refusal(chart_dir, base, {"masterKey": {"value": "dG9vLXNob3J0"}}, "a master key that is not 32 bytes (schema)", "value")
    expect_refusal(chart_dir, base, {"image": {"digest": "sha256:xyz"}}, "a malformed image digest (schema)", "digest")
    expect_refusal(chart_dir, base, {"masterKey": {"create": False}}, "no master key source", "masterKey")
    expect_refusal(
        chart_dir, base,
        {"containerSecurityContext": {"readOnlyRootFilesystem": False}},
        "a writable root filesystem (schema)", "readOnlyRootFilesystem",
    )
    expect_refusal(
        chart_dir, base,
        {"ingress": {"enabled": True, "tlsMode": "passthrough"}, "config": {"tls": {"mode": "off"}}},
        "TLS passthrough to a plain-HTTP appliance", "passthrough",
    )

    # A generated master key is 32 random bytes, kept on uninstall.
    with helm.Chart.load(chart_dir) as chart:
        m = chart.render(base, name="fg", namespace="flowguard", is_install=True)
    sec = next(d for _, d in docs_of(m) if d["kind"] == "Secret" and d["metadata"]["name"] == "fg-flowguard-master-key")
    import base64

    raw = base64.b64decode(sec["data"]["master.key"])
    if len(raw) == 32 and sec["metadata"]["annotations"].get("helm.sh/resource-policy") == "keep":
        ok("generated master key Secret holds 32 bytes and has resource-policy keep")
    else:
        fail(f"generated master key: {len(raw)} bytes, annotations {sec['metadata'].get('annotations')}")

    print(f"chart checks: {'FAIL' if FAILURES else 'PASS'} ({len(FAILURES)} failure(s))")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
