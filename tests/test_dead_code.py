"""No function in icckd_cli/ that nothing calls: vulture at 60% confidence, with a whitelist.

At 60% vulture reports every function, method, class and property no code in the package
names; tests do not count as callers (a function only a test calls is dead). Variables and
attributes are left out: pydantic fields and Typer parameters are read by the frameworks.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WHITELIST = ROOT / "tests" / "dead_code_whitelist.py"
CONFIDENCE = 60
CODE = ("unused function", "unused method", "unused class", "unused property")


def test_no_function_is_left_that_nothing_calls() -> None:
    pytest.importorskip("vulture", reason="vulture is in the test extra: pip install -e '.[test]'")
    found = subprocess.run(
        [sys.executable, "-m", "vulture", "icckd_cli", str(WHITELIST),
         "--min-confidence", str(CONFIDENCE)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert found.returncode == (3 if found.stdout else 0), found.stderr  # 3: it found some
    dead = [line for line in found.stdout.splitlines() if any(kind in line for kind in CODE)]
    assert dead == [], "called by nothing (remove it, or whitelist a framework's call):\n" + (
        "\n".join(dead)
    )


def test_each_whitelisted_name_is_still_a_function_of_the_package() -> None:
    names = re.findall(r"^\s+_\.(\w+),", WHITELIST.read_text(), re.M)
    assert len(names) == len(set(names)) > 0
    source = "\n".join(p.read_text() for p in (ROOT / "icckd_cli").rglob("*.py"))
    stale = [n for n in names if not re.search(rf"^\s*def {re.escape(n)}\(", source, re.M)]
    assert stale == [], f"whitelisted but no longer defined: {stale}"
