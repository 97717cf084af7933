"""Promotion gates: a candidate becomes champion only when it measurably beats the champion.

Both are evaluated in the same run on the same held-out items; the difference is a paired bootstrap interval
(resampling whole products) and the candidate wins when the interval's lower end lies above the margin.
With no champion, the first valid candidate is promoted and the tags say so. Every decision, with the
numbers of both sides, is written onto the candidate's model version (tags ``gate.*``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from reliable_ad.registry.config import GateConfig
from reliable_ad.registry.models import (
    CHALLENGER,
    CHAMPION,
    RegistryError,
    by_alias,
    get_version,
    list_versions,
    set_alias,
    tag_version,
)
from reliable_ad.registry.tracking import TRACKING_DIR
from reliable_ad.stats import PairedDelta


@dataclass
class Decision:
    name: str
    version: str
    promoted: bool
    reason: str
    metric: str
    candidate: float
    champion_version: str | None = None
    champion: float | None = None
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    margin: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        return {f"gate.{k}": v if isinstance(v, str) else json.dumps(v) for k, v in asdict(self).items()}


# what `rad models list` and the report show of each version's decision (Decision's fields, in this order)
GATE_FIELDS = (
    "promoted",
    "reason",
    "metric",
    "candidate",
    "champion_version",
    "champion",
    "delta",
    "ci_low",
    "ci_high",
    "margin",
)


def version_rows(name: str, uri: str | None = None) -> list[dict[str, Any]]:
    """Every version of `name` in the store `uri` (None: the one `setup` chose), oldest first, with its aliases
    and its gate decision read back from the tags (`Decision.tags` writes them: JSON for numbers, booleans and
    dicts, plain text for strings)."""
    rows = []
    for version in list_versions(name, uri):
        gate = {k.removeprefix("gate."): _tag_value(v) for k, v in version.tags.items() if k.startswith("gate.")}
        rows.append(
            {
                "version": version.version,
                "aliases": list(version.aliases),
                **{k: gate.get(k) for k in GATE_FIELDS},
                "extra": gate.get("extra"),
            }
        )
    return rows


def _tag_value(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return text


def decide(
    name: str,
    version: str,
    metric: str,
    candidate_value: float,
    paired: PairedDelta | None,
    champion_version: str | None,
    cfg: GateConfig,
    extra: dict[str, Any] | None = None,
    blocked: str | None = None,
) -> Decision:
    """Apply the gate, record it on the version, move the aliases.

    `paired` compares the candidate with the champion (or another baseline, named in `extra["baseline"]`);
    None when there is nothing to compare with, and then the first valid candidate is promoted. `blocked`
    names a check the candidate failed besides the comparison (quality guard, hacking gap): never promoted.
    """
    extra = extra or {}
    if blocked is not None and paired is not None:  # blocked whatever its gain: the gain is still on record
        decision = Decision(
            name, version, False, blocked, metric, paired.candidate, champion_version, paired.baseline,
            paired.delta, paired.low, paired.high, cfg.margin, {**extra, "n": paired.n},
        )  # fmt: skip
    elif blocked is not None:
        decision = Decision(name, version, False, blocked, metric, candidate_value, margin=cfg.margin, extra=extra)
    elif paired is None:
        valid = candidate_value == candidate_value  # NaN is never valid
        reason = "first valid candidate: no champion to compare with" if valid else "candidate metric is NaN"
        decision = Decision(name, version, valid, reason, metric, candidate_value, margin=cfg.margin, extra=extra)
    else:
        wins = paired.beats(cfg.margin)
        against = f"champion v{champion_version}" if champion_version else extra.get("baseline", "the baseline")
        reason = (
            f"{metric} {paired.delta:+.4f} against {against}, {paired.confidence:.0%} interval "
            f"[{paired.low:.4f}, {paired.high:.4f}] {'excludes' if wins else 'does not exclude'} "
            f"the margin {cfg.margin}"
        )
        decision = Decision(
            name,
            version,
            wins,
            reason,
            metric,
            paired.candidate,
            champion_version,
            paired.baseline,
            paired.delta,
            paired.low,
            paired.high,
            cfg.margin,
            {**extra, "n": paired.n},
        )
    with promotion_lock(name):
        current = by_alias(name, CHAMPION)
        current_version = current.version if current else None
        if decision.promoted and current_version != champion_version:
            # another promotion won while this candidate was being evaluated: its comparison is stale
            decision.promoted = False
            decision.reason = (
                f"stale: the champion changed from {champion_version or 'none'} to v{current_version} while this "
                f"candidate was evaluated; run the gate again ({decision.reason})"
            )
        tag_version(name, version, decision.tags())
        set_alias(name, CHALLENGER, version)
        if decision.promoted:
            if current_version is not None:
                tag_version(name, version, {"gate.previous_champion": current_version})
            set_alias(name, CHAMPION, version)
    return decision


def promote(name: str, version: str) -> Decision:
    """Promote a version by hand; refused (with its numbers) when its gate did not pass."""
    found = get_version(name, version)
    if found.tags.get("gate.promoted") != "true":
        reason = found.tags.get("gate.reason", "it was never gated")
        raise RegistryError(
            f"{name} version {version} failed its gate and cannot be promoted: {reason} "
            f"(candidate {found.tags.get('gate.candidate')}, champion {found.tags.get('gate.champion')})"
        )
    with promotion_lock(name):
        current = by_alias(name, CHAMPION)
        if current is not None and current.version != version:
            tag_version(name, version, {"gate.previous_champion": current.version})
        set_alias(name, CHAMPION, version)
    return Decision(
        name,
        version,
        True,
        "promoted by hand after a passed gate",
        found.tags.get("gate.metric", ""),
        float(found.tags.get("gate.candidate", "nan")),
    )


def rollback(name: str) -> str:
    """Make the previous champion champion again; returns its version."""
    with promotion_lock(name):
        current = by_alias(name, CHAMPION)
        if current is None:
            raise RegistryError(f"{name} has no champion to roll back")
        previous = current.tags.get("gate.previous_champion")
        if not previous:
            raise RegistryError(f"{name} champion version {current.version} has no previous champion to roll back to")
        set_alias(name, CHAMPION, previous)
        tag_version(name, current.version, {"gate.rolled_back": "true"})
    return previous


@contextmanager
def promotion_lock(name: str, timeout: float = 600.0) -> Iterator[None]:
    """One promotion of `name` at a time on this machine (a file lock beside the tracking store).

    Across machines, run promotions through one Prefect deployment with a concurrency limit of 1.
    """
    folder = Path(os.environ.get("RAD_LOCK_DIR", str(TRACKING_DIR)))
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f"promote-{name}.lock"), timeout=timeout):
        yield
