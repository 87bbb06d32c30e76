"""Named run profiles (``default``, ``full``, ``smoke``): one way to turn a profile name
plus explicit overrides into a config dataclass, for every trainer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from itsm_core.core.errors import ItsmError

C = TypeVar("C")


def config_from_profile(cls: Callable[..., C], profiles: Mapping[str, Mapping[str, Any]],
                        profile: str, overrides: Mapping[str, Any],
                        check: Callable[[C], None] | None = None) -> C:
    """``cls(**profiles[profile], **overrides)``, validated.

    Args:
        cls: the config dataclass (``TrainConfig``, ``PretrainConfig``, …).
        profiles: ``{name: field values}`` of that trainer.
        profile: the profile name the user gave (``--profile``).
        overrides: explicit field values; they win over the profile's.
        check: optional validation of the built config (raises ItsmError).

    Raises:
        ItsmError: an unknown profile (listing the known ones), or what ``check`` raises.
    """
    if profile not in profiles:
        raise ItsmError(f"unknown profile {profile!r}", where="--profile",
                        fix=f"choose from {sorted(profiles)}")
    cfg = cls(**{**profiles[profile], **overrides})
    if check is not None:
        check(cfg)
    return cfg
