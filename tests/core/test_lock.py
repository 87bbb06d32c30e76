"""The dependency lock: complete, consistent with pyproject.toml, and guarded at run time."""

from __future__ import annotations

import ast
import importlib.util
import sys
from importlib import metadata
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT as ROOT  # noqa: E402
from packaging.utils import canonicalize_name
from packaging.version import Version

from itsm_core.core import compat
from itsm_core.core.errors import ItsmError

PACKAGE = ROOT / "itsm_core"


def _lockfile():
    spec = importlib.util.spec_from_file_location("lockfile", ROOT / "tools" / "lockfile.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["lockfile"] = module
    spec.loader.exec_module(module)
    return module


lockfile = _lockfile()


def _imported_top_levels(root: Path) -> set[str]:
    """Every absolute top-level module imported anywhere under ``root`` (also in functions)."""
    names: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def _imported_modules(root: Path) -> set[str]:
    found: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
                # ``from a import b`` may import the module a.b (classes are capitalised)
                found |= {f"{node.module}.{alias.name}" for alias in node.names
                          if alias.name[:1].islower()}
    return found


def test_every_third_party_import_of_the_package_is_locked():
    lock = lockfile.read_lock()
    providers = metadata.packages_distributions()
    third_party = {name for name in _imported_top_levels(PACKAGE)
                   if name not in sys.stdlib_module_names
                   and name not in {"itsm_core", "__future__"}}
    assert {"torch", "sentence_transformers", "peft", "typer"} <= third_party
    missing = {}
    for module in sorted(third_party):
        dists = providers.get(module)
        assert dists, f"{module} is imported by itsm_core but no installed distribution provides it"
        if not any(canonicalize_name(d) in lock for d in dists):
            missing[module] = dists
    assert not missing, f"imported by itsm_core but not in requirements.lock: {missing}"


def test_lock_matches_pyproject_and_environment():
    lock = lockfile.read_lock()
    assert lockfile.lock_problems(lock, lockfile.project_requirements()) == []
    text = lockfile.ENVIRONMENT.read_text(encoding="utf-8")
    assert lockfile.environment_problems(lock, text) == []
    # every pin is exact and hash-checked; jupyterlab is locked with the rest
    assert all(pin.hashes for pin in lock.values())
    assert "jupyterlab" in lock and lock["torch"].version.endswith("+cpu")


def test_lock_check_names_what_is_out_of_date():
    from packaging.requirements import Requirement

    lock = lockfile.read_lock()
    pinned = lock["transformers"].version
    stale = lockfile.lock_problems(lock, [*lockfile.project_requirements(),
                                          Requirement("not-a-locked-package>=1")])
    assert any("not-a-locked-package" in p for p in stale)
    # locked, but only as somebody else's dependency: pyproject changed without a re-lock
    transitive = next(name for name, pin in lock.items() if not pin.direct)
    assert any(transitive in p and "only as a dependency" in p for p in lockfile.lock_problems(
        lock, [*lockfile.project_requirements(), Requirement(transitive)]))
    narrowed = [r if canonicalize_name(r.name) != "transformers"
                else Requirement(f"transformers>{pinned}") for r in lockfile.project_requirements()]
    assert any("outside" in p and "transformers" in p
               for p in lockfile.lock_problems(lock, narrowed))
    dropped = [r for r in lockfile.project_requirements() if canonicalize_name(r.name) != "peft"]
    assert any("peft" in p and "no longer" in p for p in lockfile.lock_problems(lock, dropped))
    env = lockfile.render_environment(lock).replace(f"transformers=={pinned}", "transformers==0.1")
    assert lockfile.environment_problems(lock, env)


def test_installed_versions_are_the_locked_ones():
    """`make env` installed exactly the lock (what every machine gets)."""
    lock = lockfile.read_lock()
    for name in ("torch", "transformers", "peft", "sentence-transformers", "numpy"):
        assert Version(metadata.version(name)) == Version(lock[name].version), name


def test_no_deprecated_sentence_transformers_import():
    """Imports that sentence-transformers 6 only forwards (with a warning) break in 7."""
    from sentence_transformers.util.deprecated_import import DEPRECATED_MODULE_PATHS

    used = _imported_modules(PACKAGE) | _imported_modules(ROOT / "tests")
    assert not sorted(used & set(DEPRECATED_MODULE_PATHS))


# ------------------------------------------------------------------- the run-time guard


def _v(**versions: str) -> dict[str, Version]:
    return {name.replace("_", "-"): Version(v) for name, v in versions.items()}


def test_guard_names_the_broken_transformers_peft_pair_and_the_fix():
    versions = _v(transformers="5.24.0", peft="0.21.2", sentence_transformers="6.2.0")
    with pytest.raises(ItsmError) as info:
        compat.check(versions)
    message = str(info.value)
    assert "transformers 5.24.0" in message and "peft 0.21.2" in message
    assert "make env" in message and "\n" in message  # one line + the fix line
    assert len(message.splitlines()) == 2


def test_guard_accepts_the_locked_combination_and_future_fixes():
    assert compat.problems(_v(transformers="5.23.0", peft="0.21.2",
                              sentence_transformers="6.2.0")) == []
    assert compat.problems(_v(transformers="5.24.0", peft="0.22.0",
                              sentence_transformers="6.2.0")) == []
    compat.check()  # the environment the tests run in is the locked one


def test_guard_flags_an_unsupported_sentence_transformers_major():
    found = compat.problems(_v(transformers="5.23.0", peft="0.21.2",
                               sentence_transformers="7.0.0"))
    assert len(found) == 1 and "7.0.0" in found[0]


def test_cli_stops_in_one_line_on_a_broken_combination(monkeypatch):
    from typer.testing import CliRunner

    from itsm_core.cli.main import app

    monkeypatch.setattr(compat, "installed_versions",
                        lambda names=compat.WATCHED: _v(transformers="5.24.0", peft="0.21.2",
                                                        sentence_transformers="6.2.0"))
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 2
    assert "peft" in result.output and "make env" in result.output
    assert "Traceback" not in result.output
