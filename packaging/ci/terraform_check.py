#!/usr/bin/env python3
"""Offline structural checks of terraform/ with python-hcl2 (no terraform binary needed).

* every .tf file parses;
* every variable has a type and a description; the inputs that matter are validated;
* module sources are local paths and the chart is installed from a local path (air-gapped:
  nothing may be fetched from a registry or chart repository);
* every example calls an existing module with only variables that module declares, and sets
  every variable that has no default;
* the cloud-init module's install script exists and is referenced;
* the chart values that modules/k8s hands to helm_release, instantiated with the inputs of
  examples/k8s (literal ones) and the variables' defaults, pass the chart's values.schema.json
  and render (Helm SDK), so module and chart cannot drift apart.
Prints PASS/FAIL lines; exit 1 on any failure.

usage: terraform_check.py TERRAFORM_DIR [CHART_DIR]
"""
from __future__ import annotations

import json
import pathlib
import re
import sys

import hcl2

FAILURES: list[str] = []


def ok(msg: str) -> None:
    print(f"PASS terraform: {msg}")


def fail(msg: str) -> None:
    print(f"FAIL terraform: {msg}")
    FAILURES.append(msg)


def load_dir(d: pathlib.Path) -> dict[str, list]:
    merged: dict[str, list] = {}
    for f in sorted(d.glob("*.tf")):
        try:
            with f.open() as fh:
                doc = hcl2.load(fh)
        except Exception as e:  # noqa: BLE001 - report any parse error
            fail(f"{f}: does not parse: {e}")
            continue
        for k, v in doc.items():
            merged.setdefault(k, []).extend(v)
    return merged


def strip(s):
    return s.strip('"') if isinstance(s, str) else s


def variables(doc: dict) -> dict[str, dict]:
    out = {}
    for block in doc.get("variable", []):
        for name, body in block.items():
            out[strip(name)] = body
    return out


REQUIRED_VALIDATION = {
    "k8s": {"namespace", "release_name", "image_repository", "image_tag", "image_digest",
            "master_key_base64", "license", "region", "regions", "ai_endpoint", "ldap_hosts",
            "ticket_hosts", "replicas", "storage_size", "ingress"},
    "vm-cloud-init": {"deb_path", "deb_sha256", "region", "regions", "listen",
                      "master_key_base64", "license", "init_tenant", "trusted_proxies"},
}


def check_module(mdir: pathlib.Path) -> dict[str, dict]:
    doc = load_dir(mdir)
    name = mdir.name
    vs = variables(doc)
    if not vs:
        fail(f"module {name}: declares no variables")
    for vname, body in vs.items():
        if "type" not in body or not body.get("description"):
            fail(f"module {name}: variable {vname} lacks a type or description")
    missing = {v for v in REQUIRED_VALIDATION.get(name, set()) if not vs.get(v, {}).get("validation")}
    if missing:
        fail(f"module {name}: variables without validation: {sorted(missing)}")
    else:
        ok(f"module {name}: {len(vs)} variables typed and described, key inputs validated")
    if not doc.get("output"):
        fail(f"module {name}: no outputs")
    tf = doc.get("terraform", [{}])[0]
    if not tf.get("required_version"):
        fail(f"module {name}: no required_version")
    for mod in doc.get("module", []):
        for mname, body in mod.items():
            src = strip(body.get("source", ""))
            if not src.startswith(("./", "../")):
                fail(f"module {name}: module {mname} has a non-local source {src}")
    for res in doc.get("resource", []):
        for rtype, insts in res.items():
            if strip(rtype) == "helm_release":
                for rname, body in insts.items():
                    if "repository" in body:
                        fail(f"module {name}: helm_release {rname} pulls from a chart repository")
                    else:
                        ok(f"module {name}: helm_release {strip(rname)} installs the chart from a local path")
    return vs


def check_example(edir: pathlib.Path, modules: dict[str, dict[str, dict]]) -> None:
    doc = load_dir(edir)
    calls = [(strip(n), b) for m in doc.get("module", []) for n, b in m.items()]
    if not calls:
        fail(f"example {edir.name}: calls no module")
    for mname, body in calls:
        src = strip(body.get("source", ""))
        target = (edir / src).resolve()
        if not target.is_dir():
            fail(f"example {edir.name}: module {mname} source {src} does not exist")
            continue
        vs = modules.get(target.name, {})
        args = {k for k in body if not k.startswith("__") and k not in ("source", "version", "providers", "depends_on", "count", "for_each")}
        unknown = args - set(vs)
        required = {v for v, b in vs.items() if "default" not in b}
        if unknown:
            fail(f"example {edir.name}: unknown arguments for {target.name}: {sorted(unknown)}")
        if required - args:
            fail(f"example {edir.name}: required variables not set: {sorted(required - args)}")
        if not unknown and not (required - args):
            ok(f"example {edir.name}: module {mname} -> modules/{target.name}, arguments match its variables")


SKIP = object()


def lit(x):
    """A literal HCL value as python-hcl2 returns it, or SKIP for an expression."""
    if isinstance(x, bool) or isinstance(x, (int, float)):
        return x
    if isinstance(x, str):
        m = re.fullmatch(r'"(.*)"', x, re.S)
        if m and "${" not in x:
            return m.group(1)
        return SKIP
    if isinstance(x, list):
        items = [lit(i) for i in x]
        return SKIP if any(i is SKIP for i in items) else items
    if isinstance(x, dict):
        out = {k.strip('"'): lit(v) for k, v in x.items() if not k.startswith("__")}
        return SKIP if any(v is SKIP for v in out.values()) else out
    return SKIP


OPTIONAL = re.compile(r"(\w+)\s*=\s*optional\((?:[^(),]|\([^()]*\))+,\s*(\[[^\]]*\]|\"[^\"]*\"|true|false|-?\d+)\)")


def with_optional_defaults(value, type_expr: str):
    """Fill the `optional(type, default)` attributes Terraform would fill in object values."""
    defaults = {m.group(1): json.loads(m.group(2)) for m in OPTIONAL.finditer(type_expr or "")}
    if not defaults:
        return value
    fill = lambda o: {**defaults, **o} if isinstance(o, dict) else o
    return [fill(v) for v in value] if isinstance(value, list) else fill(value)


def instantiate(node, env: dict):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k.startswith("__"):
                continue
            r = instantiate(v, env)
            if r is not SKIP:
                out[k] = r
        return out
    if isinstance(node, str):
        m = re.fullmatch(r"\$\{var\.(\w+)\}", node)
        if m:
            return env.get(m.group(1), SKIP)
    return lit(node)


def check_module_values_against_chart(root: pathlib.Path, chart_dir: pathlib.Path, modvars: dict) -> None:
    import helm_python as helm

    doc = load_dir(root / "modules" / "k8s")
    loc = {}
    for b in doc.get("locals", []):
        loc.update(b)
    env = {}
    for name, body in modvars.items():
        if "default" in body and lit(body["default"]) not in (SKIP, None, "null"):
            env[name] = lit(body["default"])
    ex = load_dir(root / "examples" / "k8s")
    for m in ex.get("module", []):
        for _, body in m.items():
            for k, v in body.items():
                if lit(v) is not SKIP:
                    env[k] = lit(v)
    env = {k: with_optional_defaults(v, str(modvars.get(k, {}).get("type", ""))) for k, v in env.items()}
    values = instantiate(loc["values"], env)
    # what the module's expressions would yield for the example (secrets it creates itself)
    values.setdefault("masterKey", {})["existingSecret"] = "flowguard-master-key"
    values.setdefault("license", {})["existingSecret"] = "flowguard-license"
    try:
        with helm.Chart.load(chart_dir) as chart:
            chart.validate_schema(values)
            m = chart.render(values, name="flowguard", namespace="flowguard", is_install=True)
        ok(f"modules/k8s chart values (example inputs) pass values.schema.json and render {len(m)} templates")
    except helm.HelmError as e:
        fail(f"modules/k8s chart values are rejected by the chart: {e}")


def main() -> int:
    root = pathlib.Path(sys.argv[1]).resolve()
    modules = {}
    for mdir in sorted((root / "modules").iterdir()):
        if mdir.is_dir():
            modules[mdir.name] = check_module(mdir)
    for want in ("k8s", "vm-cloud-init"):
        if want not in modules:
            fail(f"module {want} is missing")
    examples = sorted(d for d in (root / "examples").iterdir() if d.is_dir())
    if not examples:
        fail("no examples")
    for edir in examples:
        check_example(edir, modules)
    if len(sys.argv) > 2 and "k8s" in modules:
        check_module_values_against_chart(root, pathlib.Path(sys.argv[2]).resolve(), modules["k8s"])
    script = root / "modules" / "vm-cloud-init" / "files" / "install-flowguard.sh"
    main_tf = (root / "modules" / "vm-cloud-init" / "main.tf").read_text()
    if script.is_file() and "files/install-flowguard.sh" in main_tf:
        ok("vm-cloud-init embeds files/install-flowguard.sh")
    else:
        fail("vm-cloud-init does not embed files/install-flowguard.sh")
    print(f"terraform checks: {'FAIL' if FAILURES else 'PASS'} ({len(FAILURES)} failure(s))")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
