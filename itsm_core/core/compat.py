"""Known-broken library combinations, detected before any heavy import.

The lock (``requirements.lock``) pins versions that pass the test suite. A user who
installs ``itsm_core`` into an environment of their own can still end up with a
combination that the project knows to fail deep inside a training run (for example
transformers 5.24, whose ``add_adapter`` refuses every released peft). :func:`check`
reads installed versions from package metadata only (no import of torch or
transformers, so it costs milliseconds) and reports such a combination in one line, with
the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.version import InvalidVersion, Version

from itsm_core.core.errors import ItsmError

FIX = "run `make env` to install the locked versions (requirements.lock)"


@dataclass(frozen=True)
class BrokenCombination:
    """A set of installed versions known to fail, and why.

    Args:
        applies: predicate over ``{distribution: Version}`` of the installed packages
            (a missing distribution is absent from the mapping).
        reason: one sentence that names the versions and what fails.
    """

    applies: Callable[[Mapping[str, Version]], bool]
    reason: str


def _at_least(versions: Mapping[str, Version], name: str, floor: str) -> bool:
    return name in versions and versions[name] >= Version(floor)


def _below(versions: Mapping[str, Version], name: str, ceiling: str) -> bool:
    return name in versions and versions[name] < Version(ceiling)


KNOWN_BROKEN: tuple[BrokenCombination, ...] = (
    BrokenCombination(
        applies=lambda v: _at_least(v, "transformers", "5.24") and _below(v, "peft", "0.22"),
        reason="transformers {transformers} refuses peft {peft} in add_adapter "
        "(it needs peft >= 0.22), so every LoRA fine-tune fails",
    ),
    BrokenCombination(
        applies=lambda v: _below(v, "sentence-transformers", "6.0")
        or _at_least(v, "sentence-transformers", "7.0"),
        reason="sentence-transformers {sentence-transformers} is outside the supported "
        "major version 6 (the trainer, losses and evaluators moved)",
    ),
)

WATCHED: tuple[str, ...] = ("transformers", "peft", "sentence-transformers")


def installed_versions(names: tuple[str, ...] = WATCHED) -> dict[str, Version]:
    """Installed versions of ``names`` from package metadata (missing or unparsable: absent)."""
    found: dict[str, Version] = {}
    for name in names:
        try:
            found[name] = Version(metadata.version(name))
        except (metadata.PackageNotFoundError, InvalidVersion):
            continue
    return found


def version_strings(names: tuple[str, ...]) -> dict[str, str]:
    """:func:`installed_versions` as strings, for provenance and cache / reuse keys."""
    return {name: str(v) for name, v in installed_versions(names).items()}


def problems(versions: Mapping[str, Version] | None = None) -> list[str]:
    """The reasons of every known-broken combination that ``versions`` matches.

    Args:
        versions: ``{distribution: Version}``; default: what is installed.

    Returns:
        One sentence per matching combination (empty when the environment is fine).
    """
    versions = installed_versions() if versions is None else versions
    fields = {name: str(version) for name, version in versions.items()}
    return [combo.reason.format_map(_Missing(fields))
            for combo in KNOWN_BROKEN if combo.applies(versions)]


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return "(not installed)"


def check(versions: Mapping[str, Version] | None = None) -> None:
    """Raise :class:`ItsmError` (one line + fix) when a known-broken combination is installed.

    Args:
        versions: ``{distribution: Version}``; default: what is installed.

    Raises:
        ItsmError: naming the versions and the fix (``make env``).
    """
    found = problems(versions)
    if found:
        raise ItsmError("; ".join(found), where="installed libraries", fix=FIX)


def cpu_has(*flags: str) -> bool:
    """True when the CPU (``/proc/cpuinfo``) advertises any of ``flags`` (False elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    found = set(text.split())
    return any(f in found for f in flags)
