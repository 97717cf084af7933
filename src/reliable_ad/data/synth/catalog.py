"""What RF1M-synth's world is made of: product categories, named colours and reference objects.

Sizes are real-world centimetres: the renderer scales reference objects against them, and the reviewer
compares measured pixel ratios with them, so a Size Mismatch is a fact about centimetres, not pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Category:
    name: str
    noun: str  # how a title names it
    height_cm: tuple[float, float]
    aspect: tuple[float, float]  # width / height of the silhouette's bounding box


# The first eight are the generator's pre-training world; the rest widen RFNet's training shapes (handles,
# spouts, legs, random "gadgets"), so that it compares the generated image with the product photo instead of
# learning what each category looks like.
CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in (
        Category("bottle", "perfume bottle", (18, 32), (0.32, 0.42)),
        Category("box", "gift box", (8, 22), (0.7, 1.3)),
        Category("jar", "cream jar", (6, 12), (1.1, 1.5)),
        Category("lamp", "table lamp", (35, 60), (0.45, 0.6)),
        Category("sneaker", "sneaker", (9, 14), (2.2, 2.8)),
        Category("speaker", "smart speaker", (12, 28), (0.55, 0.8)),
        Category("mug", "coffee mug", (8, 12), (1.0, 1.25)),
        Category("toaster", "toaster", (17, 23), (1.3, 1.6)),
        Category("kettle", "electric kettle", (20, 28), (1.1, 1.4)),
        Category("stool", "bar stool", (40, 55), (0.6, 0.8)),
        Category("candle", "scented candle", (8, 20), (0.4, 0.7)),
        Category("plant_pot", "plant pot", (12, 25), (0.8, 1.1)),
        Category("backpack", "backpack", (35, 50), (0.65, 0.8)),
        Category("gadget", "gadget", (5, 30), (0.5, 1.6)),
    )
}

PRODUCT_COLOURS: dict[str, RGB] = {
    "red": (200, 40, 40),
    "blue": (40, 70, 200),
    "green": (40, 150, 60),
    "yellow": (230, 200, 40),
    "white": (240, 240, 235),
    "black": (30, 30, 30),
    "pink": (235, 140, 170),
    "orange": (240, 130, 30),
    "purple": (120, 50, 160),
    "brown": (120, 75, 40),
    "grey": (128, 128, 128),
    "teal": (30, 140, 140),
    "navy": (25, 35, 90),
    "gold": (200, 165, 60),
    "mint": (160, 220, 190),
}

WALL_COLOURS: dict[str, RGB] = {
    "white": (236, 236, 232),
    "beige": (222, 205, 175),
    "cream": (245, 235, 205),
    "light grey": (200, 200, 200),
    "grey": (150, 150, 150),
    "sky blue": (165, 200, 230),
    "sage green": (170, 190, 160),
    "blush pink": (235, 195, 195),
    "lavender": (195, 180, 225),
    "terracotta": (195, 110, 80),
    "charcoal": (65, 65, 70),
    "mustard": (205, 165, 60),
    "navy": (40, 50, 95),
    "olive": (110, 115, 60),
}

TABLE_COLOURS: dict[str, RGB] = {
    "white": (245, 245, 242),
    "oak": (190, 150, 100),
    "walnut": (110, 75, 50),
    "black": (35, 35, 38),
    "marble grey": (175, 175, 180),
    "beige": (215, 195, 165),
    "pine": (220, 190, 140),
    "slate": (90, 100, 110),
}


@dataclass(frozen=True)
class Reference:
    """An everyday object whose real size the reviewer knows, recognised by its aspect ratio."""

    name: str
    height_cm: float
    aspect: float  # width / height


REFERENCES: dict[str, Reference] = {
    "cup": Reference("cup", 10.0, 0.8),
    "vase": Reference("vase", 28.0, 0.4),
}
REFERENCE_COLOURS: dict[str, RGB] = {
    "white": (250, 250, 250),
    "terracotta": (180, 90, 60),
    "sage": (140, 165, 130),
    "black": (20, 20, 20),
    "cobalt": (30, 60, 170),
    "ochre": (200, 150, 40),
    "rose": (215, 120, 140),
}

SIZE_CLASSES: tuple[tuple[str, float], ...] = (("small", 12.0), ("medium", 25.0), ("large", 1e9))


def size_class(height_cm: float) -> str:
    """small < 12 cm <= medium < 25 cm <= large."""
    for name, upper in SIZE_CLASSES:
        if height_cm < upper:
            return name
    raise AssertionError("unreachable: the last size class is unbounded")
