"""The small harness of the Python check scripts (tests/airflow/test_dags.py,
tests/deploy/test_manifests.py): `@check("name")` runs a function at once and records it,
`finish()` prints `N passed, M failed` and exits non-zero on any failure."""

import sys
import time
import traceback

PASSED, FAILED = [], []


def check(name):
    def wrap(fn):
        started = time.monotonic()
        try:
            fn()
        except Exception:
            FAILED.append(name)
            print(f"FAIL {name}\n" + "".join("    " + line for line in
                                             traceback.format_exc().splitlines(True)))
        else:
            PASSED.append(name)
            print(f"ok   {name} ({time.monotonic() - started:.1f}s)")
        return fn
    return wrap


def finish():
    print(f"{len(PASSED)} passed, {len(FAILED)} failed")
    sys.exit(1 if FAILED else 0)
