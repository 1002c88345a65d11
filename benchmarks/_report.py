"""Shared by the benchmark scripts: print the JSON report and optionally write it to a file."""
import json


def emit(report, out=None):
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text)
    return text
