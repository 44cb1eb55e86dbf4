#!/usr/bin/env python3
"""Gate checkov results against the exceptions documented in READMEs.

An exception is a Markdown table row `| CKV_..._N | reason |` in the README given for that
checkov framework; a row without a reason does not count. Every failed check must be such an
exception; an exception that no longer fails is reported as a warning (stale).
Prints PASS/FAIL lines; exit 1 on any undocumented failure.

usage: checkov_gate.py CHECKOV_JSON FRAMEWORK=README [FRAMEWORK=README ...]
"""
from __future__ import annotations

import json
import pathlib
import re
import sys

ROW = re.compile(r"^\|\s*`?(CKV2?_[A-Z0-9]+_\d+)`?\s*\|(.*)\|\s*$")


def exceptions(readme: pathlib.Path) -> dict[str, str]:
    out = {}
    for line in readme.read_text().splitlines():
        m = ROW.match(line.strip())
        if m:
            reason = m.group(2).strip().strip("|").strip()
            if len(reason) >= 10:
                out[m.group(1)] = reason
            else:
                print(f"WARN checkov: {readme}: {m.group(1)} is listed without a reason: not an exception")
    return out


def main() -> int:
    # one JSON document per scanned target (-d/-f), each an object or a list of objects
    text = pathlib.Path(sys.argv[1]).read_text()
    dec = json.JSONDecoder()
    reports, pos = [], 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        doc, pos = dec.raw_decode(text, pos)
        reports.extend(doc if isinstance(doc, list) else [doc])
    wanted = dict(a.split("=", 1) for a in sys.argv[2:])
    # checkov repeats earlier targets' reports in later documents (they accumulate): keep, per
    # framework, the largest report. Each framework here scans exactly one target.
    merged: dict[str, dict] = {}
    size = lambda r: r.get("summary", {}).get("passed", 0) + r.get("summary", {}).get("failed", 0)
    for rep in reports:
        ct = rep.get("check_type")
        if ct not in merged or size(rep) > size(merged[ct]):
            merged[ct] = rep
    bad = 0
    seen = set()
    for rep in merged.values():
        ctype = rep.get("check_type")
        if ctype not in wanted:
            continue
        seen.add(ctype)
        allowed = exceptions(pathlib.Path(wanted[ctype]))
        summary = rep.get("summary", {})
        failed = rep.get("results", {}).get("failed_checks", [])
        failing_ids = set()
        for f in failed:
            cid = f["check_id"]
            failing_ids.add(cid)
            where = f"{f.get('resource')} ({f.get('file_path')})"
            if cid in allowed:
                print(f"PASS checkov {ctype}: {cid} on {where}: documented exception")
            else:
                bad += 1
                print(f"FAIL checkov {ctype}: {cid} \"{f.get('check_name')}\" on {where} (not listed in {wanted[ctype]})")
        for cid in sorted(set(allowed) - failing_ids):
            print(f"WARN checkov {ctype}: exception {cid} in {wanted[ctype]} no longer fails: remove it")
        print(f"PASS checkov {ctype}: {summary.get('passed', 0)} passed, "
              f"{len(failed)} failed ({len(failed) - sum(1 for f in failed if f['check_id'] not in allowed)} documented), "
              f"{summary.get('parsing_errors', 0)} parsing errors")
        if summary.get("parsing_errors", 0):
            bad += 1
            print(f"FAIL checkov {ctype}: parsing errors")
    for ctype in sorted(set(wanted) - seen):
        # checkov omits a framework whose scan found no resource at all
        print(f"FAIL checkov {ctype}: no results (nothing scanned?)")
        bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
