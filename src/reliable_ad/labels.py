"""The label set of RF1M and its configurable subsets.

RF1M's README numbers six classes 1..6. The paper's secondary notes describe a five-way classifier without
"Unsuitable", so a label set is a configurable, ordered subset that keeps RF1M's ids.
"""

from __future__ import annotations

from dataclasses import dataclass

RF1M_LABELS: dict[int, str] = {
    1: "available",
    2: "unsuitable",
    3: "space_mismatch",
    4: "size_mismatch",
    5: "indistinctiveness",
    6: "shape_hallucination",
}
AVAILABLE = "available"


@dataclass(frozen=True)
class LabelSet:
    """An ordered subset of RF1M's classes; class index = position in `names`."""

    names: tuple[str, ...] = tuple(RF1M_LABELS.values())

    def __post_init__(self) -> None:
        unknown = [n for n in self.names if n not in RF1M_LABELS.values()]
        if unknown:
            raise ValueError(f"unknown label name(s) {unknown}; known: {list(RF1M_LABELS.values())}")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"label set has duplicates: {list(self.names)}")

    @property
    def ids(self) -> tuple[int, ...]:
        by_name = {v: k for k, v in RF1M_LABELS.items()}
        return tuple(by_name[n] for n in self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names


def parse_label(token: str) -> tuple[int, str]:
    """Read a label written as an RF1M id (``1``..``6``) or a class name (case and spaces forgiven).

    Raises ValueError with the reason when the token is neither.
    """
    text = token.strip()
    if text.isdigit():
        label_id = int(text)
        if label_id in RF1M_LABELS:
            return label_id, RF1M_LABELS[label_id]
        raise ValueError(f"label id {label_id} is not one of {sorted(RF1M_LABELS)}")
    name = text.lower().replace(" ", "_").replace("-", "_")
    for label_id, known in RF1M_LABELS.items():
        if known == name:
            return label_id, known
    raise ValueError(f"label {text!r} is neither an id 1-6 nor a class name {list(RF1M_LABELS.values())}")
