"""CI cannot pass by skipping: the PRO_CI_REQUIRE switch, and the slow tests .ci/run runs (tests/ci_slow.txt)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from helpers import CI_REQUIRE_ENV, REPO, require

TESTS = REPO / "tests"


def _entries(text: str) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def _left_out(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        words = line.lstrip("# ").split()
        if words and "::" in words[0] and line.startswith("#"):
            out.append(words[0])
    return out


def _is_slow(decorators) -> bool:
    return any("slow" in ast.unparse(d) and "mark" in ast.unparse(d) for d in decorators)


def slow_tests() -> set[str]:
    """Node ids of every test marked slow (by decorator or by the module's ``pytestmark``), found in the source."""
    found = set()
    for path in TESTS.rglob("test_*.py"):
        tree = ast.parse(path.read_text())
        module_slow = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                          and "slow" in ast.unparse(n.value) for n in tree.body)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and (
                    module_slow or _is_slow(node.decorator_list)):
                found.add(f"{path.relative_to(REPO).as_posix()}::{node.name}")
    return found


def test_ci_slow_list_names_existing_slow_tests_and_accounts_for_every_other():
    text = (TESTS / "ci_slow.txt").read_text()
    run, left = _entries(text), _left_out(text)
    slow = slow_tests()
    assert run[0] == "tests/test_pipelines_demo.py::test_main_job_trains_a_policy_that_follows_its_weights"
    assert run[1] == "tests/test_browser_demo_policy.py::test_champion_follows_corner_weights_in_chromium"
    assert len(set(run)) == len(run)
    assert not set(run) - slow, f"not a slow test (or gone): {sorted(set(run) - slow)}"
    assert not set(left) - slow, f"left-out entries that are not slow tests: {sorted(set(left) - slow)}"
    assert not set(run) & set(left)
    assert not slow - set(run) - set(left), (
        f"slow tests neither run by CI nor listed as left out in tests/ci_slow.txt: {sorted(slow - set(run) - set(left))}")


def test_ci_script_fails_on_a_timeout_and_runs_the_list_without_x():
    script = (REPO / ".ci" / "run").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in script.splitlines())
    assert "tests/ci_slow.txt" in code and f"{CI_REQUIRE_ENV}=" in code
    for name in ("postgres", "chromium", "shared-data", "demo-store", "nginx"):
        assert name in code.split(f"{CI_REQUIRE_ENV}=", 1)[1].split()[0]
    assert " -x" not in code and "status=0\n" not in code.split("timeout", 1)[1].split("exit", 1)[0]
    assert "PRO_DEMO_STORE=" in code


@pytest.mark.parametrize("required", ["", "chromium", "postgres,demo-store"])
def test_require_skips_unless_the_environment_must_have_it(monkeypatch, required):
    monkeypatch.setenv(CI_REQUIRE_ENV, required)
    if "postgres" in required:
        with pytest.raises(pytest.fail.Exception, match="PostgreSQL.*PRO_CI_REQUIRE names 'postgres'"):
            require("postgres", "PostgreSQL is not running")
    else:
        with pytest.raises(pytest.skip.Exception, match="PostgreSQL is not running"):
            require("postgres", "PostgreSQL is not running")


def test_a_typo_in_the_switch_is_an_error(monkeypatch):
    monkeypatch.setenv(CI_REQUIRE_ENV, "postgress")
    with pytest.raises(pytest.UsageError, match="postgress"):
        require("postgres", "PostgreSQL is not running")


def test_postgres_test_fails_naming_what_is_missing_when_ci_requires_it(tmp_path):
    """What .ci/run does on a machine where PostgreSQL did not start: the backend-store test fails, not skips."""
    env = {**os.environ, CI_REQUIRE_ENV: "postgres", "PYTHONPATH": str(REPO)}
    env.pop("PRO_TEST_POSTGRES_URI", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_registry.py::test_promotion_with_postgres_backend"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "1 failed" in proc.stdout and "PRO_TEST_POSTGRES_URI unset" in proc.stdout
    assert "PRO_CI_REQUIRE names 'postgres'" in proc.stdout
