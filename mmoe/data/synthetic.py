"""A synthetic image + text "sarcasm" benchmark in which every example has a KNOWN interaction type.

Real multimodal datasets (MUStARD, MMSD2.0, ...) only let MMoE *estimate* whether a datapoint is redundant,
unique or synergistic. This generator builds a dataset where the answer is known by construction, so the
categorization step, the experts and the router can be checked against ground truth.

Every example is a small PIL-rendered weather scene (``sunny``, ``snowy``, ``rainy`` or ``night``; sometimes a
house or a tree; sometimes an *image marker*), a caption of the image such as an image-captioning model would write
("a photo of a snowy field under a grey sky with a tree and a small red triangle in the top left corner"), and a
short post: a *claim* about one of the four scenes ("what a warm sunny day"), sometimes with a *text marker*. The
binary label is framed like the MMoE paper's sarcasm task: ``1 = sarcastic``, ``0 = not_sarcastic``.

A modality carries at most one marker, which *suggests* a label (direction 1 or 0); the caption names what is
drawn, never a label word:

* **text marker**: one sarcasm phrase (``"#sarcasm"``, ``"/s"``, ``"yeah right,"``, ``"said no one ever"``, ...)
  for 1 or one sincerity phrase (``"#sincere"``, ``"#nofilter"``, ``"in all sincerity,"``, ...) for 0, at the start
  or the end of the post;
* **image marker**: a small red (1) or purple (0) shape in a corner -- shape (triangle, square, circle, diamond)
  and corner random -- captioned "a small red triangle in the top left corner";
* **relation**: whether the claim contradicts the pictured scene ("what a warm sunny day" under a snowy scene),
  visible only with both modalities.

How each interaction type is built (``gold_interaction`` / ``gold_cue_modality``), with ``y`` the label:

* ``redundancy`` / ``"both"``: both modalities carry a marker for ``y``; the claim matches the scene.
* ``uniqueness`` / ``"text"`` or ``"image"`` (half each): the named modality carries a marker for ``y``, the other
  modality carries none; claim and scene match in exactly half of the rows of each label (the relation says
  nothing).
* ``synergy`` / ``"relation"``: both modalities carry a marker for ``1 - y`` and the claim contradicts the scene
  (it is about one of the three other scenes): the contradiction inverts what the markers say.

The rule behind every label: with one marker, the label is its direction; with two (they always agree), the label
is their direction, inverted iff the claim contradicts the scene.

What this does to a unimodal classifier, which learns P(label | its own modality) over *all* rows: a marker is
right on redundancy rows and on its own modality's uniqueness rows and wrong on synergy rows -- with the default
proportions (0.55 / 0.25 / 0.2) right on 0.675 / 0.875 = 77 % of the rows that show it, so the classifier follows
it; on the rows where its modality has no marker (the other modality's uniqueness rows) it can only guess. So it
is right on both modalities of redundancy rows, **confidently wrong** (below chance) on both of synergy rows
(neither modality alone predicts a synergy label), and on a uniqueness row right on the marked modality and right
or wrong by chance on the silent one. MMoE's categorization (number of wrong unimodal predictions: 0, 1, 2) then
finds synergy and redundancy, but puts about half of the gold uniqueness rows into redundancy: expected agreement
with the gold types about 0.55 + 0.25 / 2 + 0.2 = 0.875, short of 0.9 by design. Forcing the silent modality to be
wrong needs a cue in it that points to the other label; an earlier variant of this generator did exactly that (weak
and strong cues, a weak cue for ``1 - y`` in the uncued modality of uniqueness rows) and reached a test-split
categorization accuracy of 0.997, but the fused task became unlearnable in the demo budget (``mmoe-train --preset
demo --seed 42``, MiniLM, caption route: baseline accuracy 0.675, MMoE 0.722, 0.0 on gold synergy rows for both;
the baseline followed the caption colour only, 0.50 on gold uniqueness; 2 of the 3 caption-only cross-fit folds on
train collapsed to one class, train categorization 0.653). This variant keeps the fused rule simple instead ("two
agreeing markers + a contradiction: the other label; otherwise follow the marker(s)"): the synergy expert trains
on (almost only) synergy rows, where the label is NOT(marker), and the router and the baseline must detect the
contradiction.

No unimodal shortcut: within every cell the pictured scene is balanced exactly across labels (and so, in
expectation, the claim), whether claim and scene match is equally frequent for both labels, and house/tree,
marker shape and corner, phrasing and colour jitter are drawn independently of the label. Labels are balanced
exactly (up to rounding) within every interaction cell of every split.

``label_noise`` flips the label of ``round(label_noise * n)`` rows of each ``gold_cue_modality`` cell of each split
(content and ``gold_*`` columns unchanged: markers follow the clean label). Content is drawn from a random stream
separate from the noise stream, so the same seed with and without noise gives identical texts, captions and
images.

Columns (see :func:`synthetic_features`):

======================== ====================== ==========================================================
column                   feature                content
======================== ====================== ==========================================================
``id``                   ``Value("string")``    ``"synthetic-<split>-<index>"``
``text``                 ``Value("string")``    the post, e.g. ``"what a warm sunny day #sarcasm"``
``caption``              ``Value("string")``    a caption of the image (what is drawn, never the label)
``image``                ``Image()``            an RGB ``image_size`` x ``image_size`` PIL image
``label``                ``ClassLabel``         ``0 = not_sarcastic``, ``1 = sarcastic`` (:data:`ID2LABEL`)
``gold_interaction``     ``Value("string")``    ``"redundancy"`` | ``"uniqueness"`` | ``"synergy"``
``gold_cue_modality``    ``Value("string")``    ``"both"`` | ``"text"`` | ``"image"`` | ``"relation"``
======================== ====================== ==========================================================

The ``gold_*`` columns are for evaluation (oracle fusion, per-interaction metrics) and must never be fed to
training. The same rows serve the *caption route* (``caption`` + ``text`` into a text model) and the *image
route* (``image`` + ``text`` into a vision-language model).

Example::

    from mmoe.data.synthetic import make_synthetic_dataset

    ds = make_synthetic_dataset(num_train=2000, num_validation=300, num_test=600, seed=0)
    ds["train"][0]  # {'id': ..., 'text': ..., 'caption': ..., 'image': <PIL.Image>, 'label': ..., ...}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

from ..configuration_mmoe import DEFAULT_EXPERTS

__all__ = [
    "CUE_MODALITIES",
    "ID2LABEL",
    "INTERACTIONS",
    "LABEL2ID",
    "LABEL_NAMES",
    "SCENES",
    "SPLITS",
    "SyntheticConfig",
    "make_synthetic_dataset",
    "synthetic_features",
]

INTERACTIONS: tuple[str, ...] = tuple(DEFAULT_EXPERTS)
"""``("redundancy", "uniqueness", "synergy")``: the values of the ``gold_interaction`` column."""

CUE_MODALITIES: tuple[str, ...] = ("both", "text", "image", "relation")
"""Values of the ``gold_cue_modality`` column."""

LABEL_NAMES: tuple[str, ...] = ("not_sarcastic", "sarcastic")
ID2LABEL: dict[int, str] = dict(enumerate(LABEL_NAMES))
LABEL2ID: dict[str, int] = {name: i for i, name in ID2LABEL.items()}

SPLITS: tuple[str, ...] = ("train", "validation", "test")

SCENES: tuple[str, ...] = ("sunny", "snowy", "rainy", "night")
"""The four pictured scenes; a synergy row's claim is always about another scene than the pictured one."""

DEFAULT_PROPORTIONS: dict[str, float] = {"redundancy": 0.55, "uniqueness": 0.25, "synergy": 0.2}

# --------------------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------------------

_CLAIMS: dict[str, tuple[str, ...]] = {
    "sunny": (
        "what a warm sunny day",
        "loving all this sunshine",
        "perfect sunny weather for a picnic",
        "the sun is out and it feels like summer",
    ),
    "snowy": (
        "love all this fresh snow",
        "what a lovely snowy morning",
        "perfect weather for building a snowman",
        "everything is covered in snow today",
    ),
    "rainy": (
        "such a cosy rainy afternoon",
        "love the sound of rain today",
        "perfect weather for splashing in puddles",
        "it has been raining all day",
    ),
    "night": (
        "what a beautiful starry night",
        "love a clear night under the moon",
        "the stars are so bright tonight",
        "perfect night for stargazing",
    ),
}

# Text markers: (prefixes, suffixes) per direction (1 = sarcastic, 0 = not sarcastic); a marked post carries exactly
# one of them. No word of a marker occurs in a claim.
_TEXT_MARKERS: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {
    1: (("yeah right,", "#sarcasm"), ("#sarcasm", "/s", "... not!", "said no one ever")),
    0: (("in all sincerity,", "#nofilter"), ("#sincere", "#nofilter", "and i truly mean it", "no irony, honestly")),
}
_NEUTRAL_TAGS: tuple[str, ...] = ("#weather", "#outside", "#today", "#mood")

_CAPTION_PREFIXES: tuple[str, ...] = ("a photo of", "an image of", "a picture of", "a drawing of")
_SCENE_PHRASES: dict[str, tuple[str, ...]] = {
    "sunny": ("a sunny field under a bright sun and a blue sky", "a field on a sunny day under a blue sky"),
    "snowy": ("a snowy field under a grey sky", "a field covered in snow under falling snowflakes"),
    "rainy": ("a rainy field under dark clouds", "a field in the rain under a dark grey sky"),
    "night": ("a field at night under a moon and stars", "a dark field at night under a starry sky"),
}
_OBJECTS: tuple[str, ...] = ("none", "house", "tree")
_SHAPES: tuple[str, ...] = ("triangle", "square", "circle", "diamond")
_CORNERS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
_MARKER_COLOUR_NAMES: dict[int, str] = {1: "red", 0: "purple"}  # image markers
_MARKER_RGB: dict[int, tuple[int, int, int]] = {1: (225, 25, 25), 0: (145, 35, 210)}

# Scene palettes: sky, ground, accent (sun / flakes / rain / moon). None of them is near red or purple.
_PALETTES: dict[str, dict[str, tuple[int, int, int]]] = {
    "sunny": {"sky": (100, 170, 240), "ground": (70, 165, 70), "accent": (250, 220, 50)},
    "snowy": {"sky": (195, 200, 210), "ground": (240, 242, 248), "accent": (252, 252, 255)},
    "rainy": {"sky": (85, 92, 108), "ground": (60, 72, 82), "accent": (130, 160, 205)},
    "night": {"sky": (15, 20, 60), "ground": (25, 35, 40), "accent": (240, 238, 200)},
}


# --------------------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------------------


@dataclass
class SyntheticConfig:
    """Options of :func:`make_synthetic_dataset`; validated on construction.

    Args:
        num_train, num_validation, num_test: number of rows of each split (positive integers).
        proportions: fraction of rows per interaction type, keys among ``"redundancy"``, ``"uniqueness"``,
            ``"synergy"`` (a missing key means 0); non-negative, summing to 1. Honoured exactly up to rounding
            (largest remainder) in every split. Default 0.55 / 0.25 / 0.2: synergy the rarest, as in real data;
            redundancy + uniqueness / 2 must outweigh synergy for the markers to mean what they say.
        label_noise: fraction of labels flipped in each interaction type of each split, in ``[0, 0.5]``.
        image_size: side of the square RGB images in pixels (16 to 512; default 32).
        pixel_noise: standard deviation of the Gaussian noise added to every pixel (0 to 64; default 4.0).
        seed: the seed; the output is a deterministic function of the options.
    """

    num_train: int = 2000
    num_validation: int = 300
    num_test: int = 600
    proportions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PROPORTIONS))
    label_noise: float = 0.0
    image_size: int = 32
    pixel_noise: float = 4.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_train", "num_validation", "num_test"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
            setattr(self, name, int(value))
        self.proportions = _validate_proportions(self.proportions)
        if not _is_real(self.label_noise) or not 0.0 <= self.label_noise <= 0.5:
            raise ValueError(f"`label_noise` must be a number in [0, 0.5], got {self.label_noise!r}.")
        size = self.image_size
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 16 <= size <= 512:
            raise ValueError(f"`image_size` must be an integer between 16 and 512 pixels, got {size!r}.")
        self.image_size = int(self.image_size)
        if not _is_real(self.pixel_noise) or not 0.0 <= self.pixel_noise <= 64.0:
            raise ValueError(f"`pixel_noise` must be a number in [0, 64], got {self.pixel_noise!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"`seed` must be a non-negative integer, got {self.seed!r}.")
        self.seed = int(self.seed)

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.num_train, "validation": self.num_validation, "test": self.num_test}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_real(value: Any) -> bool:
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _validate_proportions(proportions: Any) -> dict[str, float]:
    if not isinstance(proportions, Mapping) or not proportions:
        raise ValueError(
            f"`proportions` must be a non-empty dict mapping interaction types to fractions, got {proportions!r}."
        )
    unknown = sorted(str(key) for key in proportions if key not in INTERACTIONS)
    if unknown:
        raise ValueError(
            f"Unknown interaction type(s) in `proportions`: {unknown}; expected keys among {INTERACTIONS}."
        )
    out = {}
    for name in INTERACTIONS:
        value = proportions.get(name, 0.0)
        if not _is_real(value) or value < 0:
            raise ValueError(f"`proportions[{name!r}]` must be a non-negative number, got {value!r}.")
        out[name] = float(value)
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"`proportions` must sum to 1, got {total:.6g} ({out}).")
    return out


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def synthetic_features():
    """The :class:`datasets.Features` of every split (see the module docstring for the meaning of each column)."""
    from datasets import ClassLabel, Features, Value
    from datasets import Image as ImageFeature

    return Features(
        {
            "id": Value("string"),
            "text": Value("string"),
            "caption": Value("string"),
            "image": ImageFeature(),
            "label": ClassLabel(names=list(LABEL_NAMES)),
            "gold_interaction": Value("string"),
            "gold_cue_modality": Value("string"),
        }
    )


def make_synthetic_dataset(config: SyntheticConfig | None = None, **options: Any):
    """Generate the benchmark as a :class:`datasets.DatasetDict` with ``train``, ``validation`` and ``test``.

    Args:
        config: a :class:`SyntheticConfig`; keyword ``options`` (the same field names: ``num_train``,
            ``num_validation``, ``num_test``, ``proportions``, ``label_noise``, ``image_size``, ``pixel_noise``,
            ``seed``) override its fields, or build one from the defaults when ``config`` is ``None``.

    Returns:
        ``DatasetDict`` whose splits have the columns of :func:`synthetic_features`. The options are recorded as
        JSON in each split's ``info.description``.

    Raises:
        ValueError: for invalid options (unknown option names included).
    """
    import json

    from datasets import Dataset, DatasetDict, DatasetInfo

    if config is not None and not isinstance(config, SyntheticConfig):
        raise ValueError(f"`config` must be a SyntheticConfig or None, got {type(config).__name__}.")
    known = set(SyntheticConfig.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown}; expected among {sorted(known)}.")
    base = config.to_dict() if config is not None else {}
    config = SyntheticConfig(**{**base, **options})

    features = synthetic_features()
    description = "mmoe synthetic interaction benchmark; options: " + json.dumps(config.to_dict(), sort_keys=True)
    splits = {}
    for split_index, (split, size) in enumerate(config.split_sizes().items()):
        rows = _generate_split(config, split, split_index, size)
        info = DatasetInfo(description=description, features=features)
        splits[split] = Dataset.from_dict(rows, features=features, info=info)
    return DatasetDict(splits)


# --------------------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------------------

_CONTENT_STREAM, _NOISE_STREAM = 0, 1


def _rng(seed: int, split_index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, split_index, stream, 0x6D6D6F65]))


def _allocate(total: int, fractions: list[float]) -> list[int]:
    """Largest-remainder rounding of ``total * fractions`` (ties to the earlier entry)."""
    raw = [total * f for f in fractions]
    counts = [math.floor(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _balanced(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """``n`` values in ``range(k)``, each appearing ``floor(n/k)`` or ``ceil(n/k)`` times, in random order."""
    values = np.arange(n) % k
    offset = rng.permutation(k)  # which values get the extra copies
    return rng.permutation(offset[values])


def _cell_plan(config: SyntheticConfig, size: int) -> list[tuple[str, str, int]]:
    """(interaction, cue modality, count) cells, before labels are assigned."""
    counts = _allocate(size, [config.proportions[name] for name in INTERACTIONS])
    plan = []
    for name, count in zip(INTERACTIONS, counts):
        if name == "redundancy":
            plan.append((name, "both", count))
        elif name == "uniqueness":
            plan.append((name, "text", count - count // 2))
            plan.append((name, "image", count // 2))
        else:
            plan.append((name, "relation", count))
    return plan


def _generate_split(config: SyntheticConfig, split: str, split_index: int, size: int) -> dict[str, list]:
    rng = _rng(config.seed, split_index, _CONTENT_STREAM)
    noise_rng = _rng(config.seed, split_index, _NOISE_STREAM)
    n_scenes = len(SCENES)

    specs: list[dict[str, Any]] = []
    for interaction, cue, count in _cell_plan(config, size):
        if count == 0:
            continue
        labels = _balanced(rng, count, 2)
        cell: list[dict[str, Any]] = [{} for _ in range(count)]
        for label in (0, 1):
            idx = np.flatnonzero(labels == label)
            scenes = _balanced(rng, len(idx), n_scenes)
            if cue == "relation":
                # The claim contradicts the pictured scene: it is about one of the three other scenes. Scenes
                # balanced within each label => the image (and caption) is independent of the label; claims are
                # then balanced in expectation too (the shift is balanced over the other scenes).
                shifts = _balanced(rng, len(idx), n_scenes - 1) + 1
            elif cue == "both":
                shifts = np.zeros(len(idx), int)  # the claim matches the pictured scene
            else:
                # Relation uninformative: match in exactly half of the rows of each label.
                matches = _balanced(rng, len(idx), 2).astype(bool)
                shifts = np.where(matches, 0, rng.integers(1, n_scenes, size=len(idx)))
            for j, row in enumerate(idx):
                cell[row] = {"scene": int(scenes[j]), "claim": int((scenes[j] + shifts[j]) % n_scenes)}
        for row, label in zip(cell, labels):
            # Markers follow the *clean* label (label noise flips the label, never the content): both point to it in
            # redundancy rows, both to the other label in synergy rows; a uniqueness row has one marker, for it.
            label = int(label)
            both = label if cue == "both" else 1 - label
            row.update(
                interaction=interaction,
                cue=cue,
                label=label,
                text_marker=None if cue == "image" else (label if cue == "text" else both),
                image_marker=None if cue == "text" else (label if cue == "image" else both),
            )
        # Label noise: flip exactly round(noise * count) rows of this cell, from a separate stream.
        n_flip = round(config.label_noise * count)
        flip = noise_rng.choice(count, size=n_flip, replace=False) if n_flip else []
        for i in flip:
            cell[i]["label"] = 1 - cell[i]["label"]
        specs.extend(cell)

    order = rng.permutation(len(specs))
    columns: dict[str, list] = {name: [] for name in synthetic_features()}
    for position, spec_index in enumerate(order):
        spec = specs[spec_index]
        text, caption, image = _render_example(rng, spec, config)
        columns["id"].append(f"synthetic-{split}-{position:06d}")
        columns["text"].append(text)
        columns["caption"].append(caption)
        columns["image"].append(image)
        columns["label"].append(spec["label"])
        columns["gold_interaction"].append(spec["interaction"])
        columns["gold_cue_modality"].append(spec["cue"])
    return columns


def _render_example(rng: np.random.Generator, spec: dict[str, Any], config: SyntheticConfig):
    scene = SCENES[spec["scene"]]
    claim_scene = SCENES[spec["claim"]]

    # Text: the claim with its marker (if any) as a prefix or a suffix, and an optional neutral tag.
    text = str(rng.choice(_CLAIMS[claim_scene]))
    direction = spec["text_marker"]
    if direction is not None:
        prefixes, suffixes = _TEXT_MARKERS[direction]
        text = f"{rng.choice(prefixes)} {text}" if rng.random() < 0.5 else f"{text} {rng.choice(suffixes)}"
    if rng.random() < 0.3:
        text = f"{text} {rng.choice(_NEUTRAL_TAGS)}"

    # Image content: the marker (if any) is a small red or purple shape in a corner.
    obj = str(rng.choice(_OBJECTS))
    direction = spec["image_marker"]
    marker = None
    if direction is not None:
        marker = (str(rng.choice(_SHAPES)), str(rng.choice(_CORNERS)), direction)
    image = _draw_scene(rng, scene, obj, marker, config.image_size, config.pixel_noise)

    # Caption: what is drawn, never the label.
    caption = f"{rng.choice(_CAPTION_PREFIXES)} {rng.choice(_SCENE_PHRASES[scene])}"
    extras = []
    if obj != "none":
        extras.append(f"a small {obj}" if obj == "house" else "a tree")
    if marker is not None:
        shape, corner, _ = marker
        extras.append(f"a small {_MARKER_COLOUR_NAMES[direction]} {shape} in the {corner} corner")
    if extras:
        caption = f"{caption} with {' and '.join(extras)}"
    return text, caption, image


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _draw_scene(
    rng: np.random.Generator,
    scene: str,
    obj: str,
    marker: tuple[str, str, int] | None,
    size: int,
    pixel_noise: float,
) -> PILImage.Image:
    s = float(size)
    palette = {key: _jitter(rng, rgb, 10) for key, rgb in _PALETTES[scene].items()}
    image = PILImage.new("RGB", (size, size), palette["sky"])
    draw = ImageDraw.Draw(image)
    horizon = s * rng.uniform(0.62, 0.75)
    draw.rectangle([0, horizon, s, s], fill=palette["ground"])

    # Sun / moon goes on the side away from a top corner marker.
    marker_top = marker is not None and marker[1].startswith("top")
    marker_left = marker is not None and marker[1].endswith("left")
    if marker_top:
        cx = s * (rng.uniform(0.6, 0.8) if marker_left else rng.uniform(0.2, 0.4))
    else:
        cx = s * rng.uniform(0.2, 0.8)
    cy = s * rng.uniform(0.15, 0.3)
    accent = palette["accent"]
    if scene == "sunny":
        r = s * rng.uniform(0.1, 0.14)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=accent)
    elif scene == "snowy":
        for _ in range(max(6, size // 3)):
            x, y = rng.uniform(0, s), rng.uniform(0, horizon)
            d = max(1.0, s / 32)
            draw.ellipse([x, y, x + d, y + d], fill=accent)
    elif scene == "rainy":
        cloud = _jitter(rng, (70, 76, 90), 6)
        r = s * 0.12
        for dx in (-1.0, 0.0, 1.0):
            draw.ellipse([cx + dx * r - r, cy - r * 0.8, cx + dx * r + r, cy + r * 0.8], fill=cloud)
        for _ in range(max(6, size // 3)):
            x, y = rng.uniform(0, s), rng.uniform(cy, horizon)
            draw.line([x, y, x - s * 0.04, y + s * 0.1], fill=accent, width=max(1, size // 64))
    else:  # night
        r = s * rng.uniform(0.08, 0.12)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=accent)
        for _ in range(max(5, size // 4)):
            x, y = rng.uniform(0, s), rng.uniform(0, horizon * 0.9)
            d = max(1.0, s / 48)
            draw.rectangle([x, y, x + d, y + d], fill=(255, 255, 235))

    # House or tree standing on the horizon, in the middle.
    ox = s * rng.uniform(0.38, 0.62)
    w = s * rng.uniform(0.16, 0.22)
    if obj == "house":
        wall, roof = _jitter(rng, (150, 110, 70), 10), _jitter(rng, (95, 60, 35), 8)
        draw.rectangle([ox - w / 2, horizon - w * 0.8, ox + w / 2, horizon + w * 0.2], fill=wall)
        draw.polygon(
            [(ox - w * 0.6, horizon - w * 0.8), (ox + w * 0.6, horizon - w * 0.8), (ox, horizon - w * 1.4)], fill=roof
        )
    elif obj == "tree":
        trunk, crown = _jitter(rng, (100, 70, 40), 8), _jitter(rng, (30, 105, 45), 10)
        draw.rectangle([ox - w * 0.12, horizon - w * 0.8, ox + w * 0.12, horizon + w * 0.2], fill=trunk)
        draw.ellipse([ox - w * 0.55, horizon - w * 1.7, ox + w * 0.55, horizon - w * 0.6], fill=crown)

    if marker is not None:  # a small shape in a corner
        shape, corner, direction = marker
        colour = _jitter(rng, _MARKER_RGB[direction], 15)
        m = s * rng.uniform(0.18, 0.24)
        pad = s * rng.uniform(0.03, 0.07)
        x0 = pad if corner.endswith("left") else s - pad - m
        y0 = pad if corner.startswith("top") else s - pad - m
        box = [x0, y0, x0 + m, y0 + m]
        if shape == "square":
            draw.rectangle(box, fill=colour)
        elif shape == "circle":
            draw.ellipse(box, fill=colour)
        elif shape == "triangle":
            draw.polygon([(x0, y0 + m), (x0 + m, y0 + m), (x0 + m / 2, y0)], fill=colour)
        else:  # diamond
            draw.polygon([(x0 + m / 2, y0), (x0 + m, y0 + m / 2), (x0 + m / 2, y0 + m), (x0, y0 + m / 2)], fill=colour)

    if pixel_noise > 0:
        pixels = np.asarray(image, dtype=np.float32)
        pixels = pixels + rng.normal(0.0, pixel_noise, size=pixels.shape)
        image = PILImage.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    return image
