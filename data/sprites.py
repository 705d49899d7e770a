"""Seeded synthetic multi-entity videos for Tora2: coloured, textured sprites moving along smooth paths.

Every video has 1 to ``max_entities`` sprites over a two-colour gradient background. A sprite's
appearance is a (colour, texture, shape) triple; the sprites of one video have distinct colours. Each
moves along a quadratic Bezier path whose control points lie in ``[0.18, 0.82]`` (normalised ``(x, y)``
coordinates, ``x`` to the right, ``y`` down; a point ``p`` is pixel position ``p * size``).

About one appearance triple in five is *held out* (:func:`is_heldout_appearance`): ``split="train"``
never draws it and ``split="heldout"`` draws only those, so evaluation measures appearance transfer
to entities the model never saw in training.

Items follow the contract other code relies on::

    {"video": (F, H, W, 3) float32 in [0, 1], "prompt": "a red striped star and a blue solid disc",
     "entities": [{"trajectory": (F, 2) float32 in [0, 1], "reference_image": (16, 16, 3) float32,
                   "description": "red striped star"}, ...]}

The reference image is the sprite alone, at the scale it has in the video, on a plain grey background.
Prompts are read by a WordPiece tokenizer trained here on the sprite captions (:func:`caption_tokenizer`), whose
single-character pieces spell any other word, so users' captions ("a brown dog") tokenize too.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterable

import numpy as np
from torch.utils.data import Dataset

COLORS = {
    "red": (0.92, 0.16, 0.14),
    "green": (0.18, 0.82, 0.22),
    "blue": (0.22, 0.36, 0.98),
    "yellow": (0.96, 0.9, 0.16),
    "magenta": (0.9, 0.2, 0.86),
    "cyan": (0.16, 0.86, 0.92),
    "orange": (1.0, 0.56, 0.1),
    "white": (0.96, 0.96, 0.96),
}
TEXTURES = ("solid", "striped", "checkered")
SHAPES = ("square", "disc", "triangle", "diamond", "cross", "star")
TOKENIZER_VOCAB_SIZE = 256
SPRITE_RADIUS = 4.5  # pixels at 32x32
REFERENCE_SIZE = 16
REFERENCE_BACKGROUND = 0.5
SPLITS = ("train", "heldout")
PATH_RANGE = (0.18, 0.82)
MIN_PATH_LENGTH = 0.25


def sprite_captions() -> list[str]:
    """One caption per training appearance, ``"a <colour> <texture> <shape> and ..."`` (the tokenizer's corpus)."""
    return [f"a {describe(triple)} and" for triple in appearances("train")]


def caption_tokenizer(captions: Iterable[str] = (), vocab_size: int = TOKENIZER_VOCAB_SIZE):
    """A ``transformers.PreTrainedTokenizerFast`` (BERT-style WordPiece, lower-cased) whose vocabulary is built
    from :func:`sprite_captions` plus ``captions`` (e.g. the user's): ``[PAD]``, ``[UNK]``, every lower-case
    letter, digit and punctuation mark both word-initial and as a ``##`` continuation, then the corpus's words
    seen at least twice, most frequent first, up to ``vocab_size``. An unseen word is spelled out in those
    pieces rather than lost; characters outside them become ``[UNK]``. The vocabulary is counted rather than
    trained with ``tokenizers``' WordPiece trainer, whose id order is not reproducible between processes."""
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts = Counter(
        word
        for caption in [*sprite_captions(), *captions]
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(caption))
    )
    characters = string.ascii_lowercase + string.digits + string.punctuation
    vocab = ["[PAD]", "[UNK]", *characters, *(f"##{character}" for character in characters)]
    words = sorted((word for word, count in counts.items() if count >= 2 and word not in vocab), key=lambda w: (-counts[w], w))
    vocab += words[: max(vocab_size - len(vocab), 0)]
    tokenizer = Tokenizer(models.WordPiece({token: index for index, token in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer, tokenizer.pre_tokenizer, tokenizer.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]")


def entity_phrases(prompt: str) -> list[str]:
    """``"a red solid star and a blue disc"`` -> ``["red solid star", "blue disc"]`` (one phrase per entity)."""
    phrases = [phrase.strip() for phrase in prompt.lower().split(" and ")]
    return [phrase[2:] if phrase.startswith("a ") else phrase for phrase in phrases]


def is_heldout_appearance(color: str, texture: str, shape: str) -> bool:
    """The held-out fifth of all (colour, texture, shape) triples; every single attribute stays in training."""
    index = list(COLORS).index(color) + 2 * SHAPES.index(shape) + TEXTURES.index(texture)
    return index % 5 == 0


def appearances(split: str) -> list[tuple[str, str, str]]:
    """All ``(colour, texture, shape)`` triples of ``split`` (``"train"`` or ``"heldout"``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    triples = itertools.product(COLORS, TEXTURES, SHAPES)
    return [triple for triple in triples if is_heldout_appearance(*triple) == (split == "heldout")]


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Boolean mask of ``shape`` at pixel offsets ``(dx, dy)`` from its centre."""
    u, v = dx / radius, dy / radius
    if shape == "square":
        return (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8)
    if shape == "disc":
        return u**2 + v**2 <= 1.0
    if shape == "triangle":
        return (v <= 0.75) & (v >= -1.0 + 2.0 * np.abs(u))
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.05
    if shape == "cross":
        return ((np.abs(u) <= 0.33) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.33) & (np.abs(u) <= 1.0))
    if shape == "star":
        angle = np.arctan2(v, u)
        return np.hypot(u, v) <= 0.62 + 0.42 * np.cos(5 * (angle + np.pi / 2))
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def texture_shade(texture: str, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Brightness factor of ``texture`` in sprite coordinates (the pattern moves with the sprite)."""
    if texture == "solid":
        return np.ones_like(dx)
    if texture == "striped":
        return np.where(np.floor(dx / 2.0) % 2 == 0, 1.0, 0.4)
    if texture == "checkered":
        return np.where((np.floor(dx / 2.0) + np.floor(dy / 2.0)) % 2 == 0, 1.0, 0.4)
    raise ValueError(f"texture must be one of {TEXTURES}, got {texture!r}")


def draw_sprite(canvas: np.ndarray, center_xy: np.ndarray, appearance: tuple[str, str, str]) -> None:
    """Paint the sprite ``appearance = (colour, texture, shape)`` centred at pixel ``center_xy`` in place."""
    color, texture, shape = appearance
    height, width = canvas.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    dx, dy = xs - center_xy[0], ys - center_xy[1]
    mask = shape_mask(shape, dx, dy, SPRITE_RADIUS)
    shade = texture_shade(texture, dx, dy)
    canvas[mask] = shade[mask, None] * np.float32(COLORS[color])


def reference_image(appearance: tuple[str, str, str], size: int = REFERENCE_SIZE) -> np.ndarray:
    """The sprite alone, centred, on a plain grey background: ``(size, size, 3)`` float32."""
    canvas = np.full((size, size, 3), REFERENCE_BACKGROUND, np.float32)
    draw_sprite(canvas, np.array([size / 2, size / 2]), appearance)
    return canvas


def smooth_path(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """A quadratic Bezier path ``(num_frames, 2)`` in ``PATH_RANGE`` that travels at least ``MIN_PATH_LENGTH``."""
    low, high = PATH_RANGE
    while True:
        start, control, end = rng.uniform(low, high, size=(3, 2))
        if np.linalg.norm(end - start) >= MIN_PATH_LENGTH:
            break
    t = np.linspace(0.0, 1.0, num_frames)[:, None]
    return ((1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end).astype(np.float32)


def gradient_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted two-colour linear gradient in a random direction, ``(size, size, 3)``."""
    first, second = rng.uniform(0.05, 0.45, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    ramp = np.clip(0.5 + (xs - 0.5) * np.cos(angle) + (ys - 0.5) * np.sin(angle), 0, 1)[..., None]
    return ((1 - ramp) * first + ramp * second).astype(np.float32)


def describe(appearance: tuple[str, str, str]) -> str:
    return " ".join(appearance)


def sample_video(
    rng: np.random.Generator, num_frames: int, size: int, max_entities: int, split: str = "train"
) -> dict:
    """One item of the contract (module docstring) drawn with ``rng``."""
    pool = appearances(split)
    num_entities = int(rng.integers(1, max_entities + 1))
    chosen: list[tuple[str, str, str]] = []
    while len(chosen) < num_entities:
        candidate = pool[int(rng.integers(len(pool)))]
        if all(candidate[0] != other[0] for other in chosen):
            chosen.append(candidate)
    paths = [smooth_path(rng, num_frames) for _ in chosen]
    background = gradient_background(rng, size)
    video = np.repeat(background[None], num_frames, axis=0)
    for frame_index, frame in enumerate(video):
        for appearance, path in zip(chosen, paths):
            draw_sprite(frame, path[frame_index] * size, appearance)
    entities = [
        {
            "trajectory": path,
            "reference_image": reference_image(appearance),
            "description": describe(appearance),
        }
        for appearance, path in zip(chosen, paths)
    ]
    prompt = " and ".join(f"a {entity['description']}" for entity in entities)
    return {"video": np.clip(video, 0, 1), "prompt": prompt, "entities": entities}


class SpriteVideoDataset(Dataset):
    """``num_videos`` seeded multi-entity sprite videos (see the module docstring for the item format).

    Item ``i`` is drawn from ``numpy.random.default_rng([seed, i])``, so any index is reproducible on
    its own. ``split="heldout"`` uses only the held-out appearances (never drawn with ``"train"``).
    Sprites are drawn at the 32x32 scale (``SPRITE_RADIUS`` pixels) whatever ``size`` is.
    """

    def __init__(
        self,
        num_videos: int,
        num_frames: int = 8,
        size: int = 32,
        max_entities: int = 3,
        seed: int = 0,
        split: str = "train",
    ) -> None:
        if num_videos < 1 or num_frames < 2 or size < 16:
            raise ValueError(
                f"need num_videos >= 1, num_frames >= 2 and size >= 16; got {num_videos}, {num_frames}, {size}"
            )
        if not 1 <= max_entities <= len(COLORS):
            raise ValueError(f"max_entities must be in [1, {len(COLORS)}], got {max_entities}")
        appearances(split)  # validates split
        self.num_videos, self.num_frames, self.size = num_videos, num_frames, size
        self.max_entities, self.seed, self.split = max_entities, seed, split

    def __len__(self) -> int:
        return self.num_videos

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_videos:
            raise IndexError(f"index {index} out of range for {self.num_videos} videos")
        rng = np.random.default_rng([self.seed, index])
        return sample_video(rng, self.num_frames, self.size, self.max_entities, self.split)
