#!/usr/bin/env python3
"""Prints each runbook step of a Release's revision as its state changes,
until the revision ends (Ready, RolledBack or Failed).

Usage: follow.py NAMESPACE RELEASE REVISION [TIMEOUT_SECONDS]
"""
import json
import subprocess
import sys
import time

TERMINAL = ("Ready", "RolledBack", "Failed")


def main() -> int:
    namespace, release, revision = sys.argv[1], sys.argv[2], int(sys.argv[3])
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 180.0
    deadline = time.monotonic() + timeout
    seen = set()
    started = time.monotonic()
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["kubectl", "get", "release", release, "-n", namespace, "-o", "json"],
            capture_output=True, text=True, check=False,
        )
        status = json.loads(out.stdout).get("status", {}) if out.returncode == 0 else {}
        if status.get("revision") == revision:
            for step in status.get("steps", []):
                key = (step["name"], step["state"], step.get("message", ""))
                if step["state"] != "Pending" and key not in seen:
                    seen.add(key)
                    elapsed = time.monotonic() - started
                    print(f"  {elapsed:5.1f}s  {step['name']:<16} {step['state']:<10} {step.get('message', '')}", flush=True)
            if status.get("phase") in TERMINAL:
                print(f"  => revision {revision} ({status.get('version')}) is {status['phase']}", flush=True)
                return 0
        time.sleep(0.3)
    print(f"revision {revision} did not finish within {timeout:.0f}s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
