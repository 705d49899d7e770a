"""A seeded synthetic compositional world: 32x32 RGB scenes of coloured shapes, prompts, questions.

Prompt grammar (:data:`PROMPT_GRAMMAR`)::

    prompt   := phrase | phrase " and " phrase | phrase " " relation " " phrase
    phrase   := count [size] colour shape        (shape pluralised with "s" when count > 1)
    count    := "a" | "two" | "three"
    size     := "small" | "large"
    colour   := "red" | "green" | "blue" | "yellow"
    shape    := "circle" | "square" | "triangle"
    relation := "left of" | "right of" | "above" | "below"

Categories (T2I-CompBench style): ``colour`` (``a red circle``), ``size`` (``a large blue square``),
``binding`` (``a red circle and a blue square``), ``spatial`` (``a red circle left of a blue square``),
``counting`` (``two green triangles``) and ``complex`` (sizes inside a spatial relation). A seeded
split holds out ~20% of every category's prompts: training never shows them.

Questions (one-word answers, next-token prediction) about a scene:
``is there a {colour} {shape}?``, ``is there an object in the {region}?``,
``is there a {colour} {shape} in the {region}?`` (region = top-left, top-right, bottom-left,
bottom-right, by the object's centre), ``how many {colour} {shape}s?`` and
``does the image show {prompt}?`` (a whole-prompt yes/no judgement).
"""

from __future__ import annotations

import functools
import itertools
import random
import textwrap
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

RESOLUTION = 32
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
}
SHAPES = ("circle", "square", "triangle")
SIZES: dict[str, int] = {"small": 7, "large": 11}  # side of the object's bounding box in pixels
DEFAULT_SIZE = 9
RELATIONS = ("left of", "right of", "above", "below")
OPPOSITE_RELATION = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
COUNTS = {"a": 1, "two": 2, "three": 3}
REGIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
CATEGORIES = ("colour", "size", "binding", "spatial", "counting", "complex")
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
NOUNS = tuple(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES)  # "red circle", ...

PROMPT_GRAMMAR = textwrap.dedent(
    __doc__.split("Prompt grammar (:data:`PROMPT_GRAMMAR`)::")[1].split("Categories")[0]
).strip()

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<q>", "<a>")
_WORDS = sorted(
    {"a", "an", "and", "is", "there", "object", "in", "the", "how", "many", "does", "image", "show", "yes", "no"}
    | set(COUNTS)
    | set(SIZES)
    | set(COLOURS)
    | set(SHAPES)
    | {shape + "s" for shape in SHAPES}
    | {word for relation in RELATIONS for word in relation.split()}
    | set(REGIONS)
    | set(NUMBER_WORDS)
)
VOCAB: tuple[str, ...] = SPECIAL_TOKENS + tuple(_WORDS)
TOKEN_IDS = {token: index for index, token in enumerate(VOCAB)}
PAD_ID, BOS_ID, EOS_ID, QUESTION_ID, ANSWER_ID = (TOKEN_IDS[token] for token in SPECIAL_TOKENS)
MAX_PROMPT_TOKENS = (
    12  # <bos> + the longest prompt (10 words: "a large red circle left of a small blue square") + <eos>
)
MAX_QUESTION_TOKENS = 16  # <q> + "does the image show" + the longest prompt + <a>


# ----------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class ObjectSpec:
    colour: str
    shape: str
    size: str | None = None  # None: the default size, and any size satisfies it
    count: int = 1

    @property
    def noun(self) -> str:
        return f"{self.colour} {self.shape}"

    def phrase(self) -> str:
        count = {1: "a", 2: "two", 3: "three"}[self.count]
        size = f"{self.size} " if self.size else ""
        return f"{count} {size}{self.colour} {self.shape}{'s' if self.count > 1 else ''}"


@dataclass(frozen=True)
class PromptSpec:
    """A parsed prompt: one or two object phrases and an optional relation between them."""

    objects: tuple[ObjectSpec, ...]
    relation: str | None = None
    category: str = field(default="colour", compare=False)

    def text(self) -> str:
        if len(self.objects) == 1:
            return self.objects[0].phrase()
        joiner = f" {self.relation} " if self.relation else " and "
        return joiner.join(obj.phrase() for obj in self.objects)


def _parse_phrase(words: list[str], prompt: str) -> ObjectSpec:
    if not words or words[0] not in COUNTS:
        raise ValueError(f"prompt {prompt!r}: each object phrase must start with one of {list(COUNTS)}")
    count, rest = COUNTS[words[0]], words[1:]
    size = rest.pop(0) if rest and rest[0] in SIZES else None
    if len(rest) != 2:
        raise ValueError(f"prompt {prompt!r}: expected '[size] colour shape' after {words[0]!r}, got {rest}")
    colour, shape = rest
    if colour not in COLOURS:
        raise ValueError(f"prompt {prompt!r}: unknown colour {colour!r}; the grammar knows {list(COLOURS)}")
    plural = shape.endswith("s") and shape[:-1] in SHAPES
    shape = shape[:-1] if plural else shape
    if shape not in SHAPES:
        raise ValueError(f"prompt {prompt!r}: unknown shape {rest[1]!r}; the grammar knows {list(SHAPES)}")
    if plural != (count > 1):
        raise ValueError(f"prompt {prompt!r}: '{words[0]}' needs a {'plural' if count > 1 else 'singular'} shape")
    return ObjectSpec(colour, shape, size, count)


def _category(objects: tuple[ObjectSpec, ...], relation: str | None) -> str:
    sized = any(obj.size for obj in objects)
    if relation:
        return "complex" if sized else "spatial"
    if len(objects) == 2:
        return "binding"
    if objects[0].count > 1:
        return "counting"
    return "size" if sized else "colour"


def parse_prompt(prompt: str) -> PromptSpec:
    """Parse ``prompt`` by :data:`PROMPT_GRAMMAR`; a word outside the grammar is a ``ValueError`` naming it."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
    words = prompt.lower().strip().rstrip(".").split()
    unknown = [word for word in words if word not in TOKEN_IDS]
    if unknown:
        raise ValueError(f"prompt {prompt!r} uses words outside the grammar: {unknown}.\nGrammar:\n{PROMPT_GRAMMAR}")
    text = " ".join(words)
    for relation in RELATIONS + ("and",):
        marker = f" {relation} "
        if marker in text:
            left, right = text.split(marker, 1)
            objects = (_parse_phrase(left.split(), prompt), _parse_phrase(right.split(), prompt))
            if relation != "and" and any(obj.count > 1 for obj in objects):
                raise ValueError(f"prompt {prompt!r}: a spatial relation relates single objects ('a ...')")
            related = None if relation == "and" else relation
            return PromptSpec(objects, related, _category(objects, related))
    objects = (_parse_phrase(words, prompt),)
    return PromptSpec(objects, None, _category(objects, None))


def all_prompts(category: str) -> list[str]:
    """Every prompt of ``category`` that the grammar generates (sorted)."""
    nouns = list(itertools.product(COLOURS, SHAPES))
    two_nouns = [(a, b) for a, b in itertools.product(nouns, nouns) if a != b]
    if category == "colour":
        specs = [PromptSpec((ObjectSpec(c, s),)) for c, s in nouns]
    elif category == "size":
        specs = [PromptSpec((ObjectSpec(c, s, z),)) for (c, s), z in itertools.product(nouns, SIZES)]
    elif category == "counting":
        specs = [PromptSpec((ObjectSpec(c, s, None, n),)) for (c, s), n in itertools.product(nouns, (2, 3))]
    elif category == "binding":
        specs = [PromptSpec((ObjectSpec(*a), ObjectSpec(*b))) for a, b in two_nouns if a < b]
    elif category == "spatial":
        specs = [
            PromptSpec((ObjectSpec(*a), ObjectSpec(*b)), r) for (a, b), r in itertools.product(two_nouns, RELATIONS)
        ]
    elif category == "complex":
        specs = [
            PromptSpec((ObjectSpec(*a, "large"), ObjectSpec(*b, "small")), r)
            for (a, b), r in itertools.product(two_nouns, RELATIONS)
        ]
    else:
        raise ValueError(f"category must be one of {CATEGORIES}, got {category!r}")
    return sorted(spec.text() for spec in specs)


@functools.lru_cache(maxsize=None)
def prompt_split(category: str, split: str, holdout_fraction: float = 0.2, seed: int = 0) -> tuple[str, ...]:
    """The ``"train"`` or ``"heldout"`` prompts of ``category`` (a fixed seeded partition)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    prompts = all_prompts(category)
    random.Random(f"{seed}-{category}").shuffle(prompts)
    num_heldout = max(1, round(holdout_fraction * len(prompts)))
    return tuple(sorted(prompts[:num_heldout] if split == "heldout" else prompts[num_heldout:]))


# ----------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    size: int  # bounding-box side in pixels
    x: int  # top-left corner column
    y: int  # top-left corner row

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.size / 2, self.y + self.size / 2

    @property
    def region(self) -> str:
        cx, cy = self.centre
        return f"{'top' if cy < RESOLUTION / 2 else 'bottom'}-{'left' if cx < RESOLUTION / 2 else 'right'}"


def shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean ``(size, size)`` footprint: a filled square, disc or upward triangle."""
    centre = (np.arange(size) + 0.5) / size  # pixel centres in (0, 1)
    rows, cols = np.meshgrid(centre, centre, indexing="ij")
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "circle":
        return (rows - 0.5) ** 2 + (cols - 0.5) ** 2 <= 0.25
    if shape == "triangle":
        return np.abs(cols - 0.5) <= rows / 2
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def render_scene(objects: list[SceneObject], resolution: int = RESOLUTION) -> np.ndarray:
    """Objects painted on black: ``(resolution, resolution, 3)`` float32 in ``[0, 1]``."""
    image = np.zeros((resolution, resolution, 3), dtype=np.float32)
    for obj in objects:
        mask = shape_mask(obj.shape, obj.size)
        image[obj.y : obj.y + obj.size, obj.x : obj.x + obj.size][mask] = COLOURS[obj.colour]
    return image


def _overlaps(a: SceneObject, b: SceneObject, gap: int = 2) -> bool:
    return not (
        a.x + a.size + gap <= b.x or b.x + b.size + gap <= a.x or a.y + a.size + gap <= b.y or b.y + b.size + gap <= a.y
    )


def relation_holds(dx: float, dy: float, relation: str, margin: float = 0.0) -> bool:
    """Does a displacement ``(dx, dy)`` from object A to object B make ``A {relation} B``? The displacement
    must lie mostly along the relation's axis and exceed ``margin`` pixels (image rows grow downwards)."""
    horizontal = abs(dx) > max(abs(dy), margin)
    vertical = abs(dy) > max(abs(dx), margin)
    return {
        "left of": horizontal and dx > 0,
        "right of": horizontal and dx < 0,
        "above": vertical and dy > 0,
        "below": vertical and dy < 0,
    }[relation]


def sample_scene(spec: PromptSpec, rng: random.Random, max_tries: int = 200) -> list[SceneObject]:
    """Random non-overlapping placements of ``spec``'s objects that satisfy its relation."""
    for _ in range(max_tries):
        placed: list[SceneObject] = []
        for obj in spec.objects:
            side = SIZES[obj.size] if obj.size else DEFAULT_SIZE
            for _ in range(obj.count):
                placed.append(
                    SceneObject(
                        obj.colour,
                        obj.shape,
                        side,
                        rng.randint(0, RESOLUTION - side),
                        rng.randint(0, RESOLUTION - side),
                    )
                )
        if any(_overlaps(a, b) for a, b in itertools.combinations(placed, 2)):
            continue
        (ax, ay), (bx, by) = placed[0].centre, placed[-1].centre
        if spec.relation and not relation_holds(bx - ax, by - ay, spec.relation, margin=4):
            continue
        return placed
    raise RuntimeError(f"could not place {spec.text()!r} in {max_tries} tries")


def perturb_prompt(spec: PromptSpec, rng: random.Random) -> PromptSpec:
    """A prompt that differs from ``spec`` in one attribute (colour, shape, count or relation): a hard negative."""
    objects = list(spec.objects)
    index = rng.randrange(len(objects))
    obj = objects[index]
    choices = ["colour", "shape"] + (["count"] if obj.count > 1 else []) + (["relation"] if spec.relation else [])
    what = rng.choice(choices)
    if what == "relation":
        return PromptSpec(spec.objects, OPPOSITE_RELATION[spec.relation], spec.category)
    if what == "colour":
        obj = ObjectSpec(rng.choice([c for c in COLOURS if c != obj.colour]), obj.shape, obj.size, obj.count)
    elif what == "shape":
        obj = ObjectSpec(obj.colour, rng.choice([s for s in SHAPES if s != obj.shape]), obj.size, obj.count)
    else:
        obj = ObjectSpec(obj.colour, obj.shape, obj.size, 5 - obj.count)  # two <-> three
    objects[index] = obj
    if len(objects) == 2 and objects[0].noun == objects[1].noun:
        return perturb_prompt(spec, rng)
    return PromptSpec(tuple(objects), spec.relation, spec.category)


# ----------------------------------------------------------------------------- questions


def question_about_prompt(prompt: str) -> str:
    """The whole-prompt judgement the self-reward asks: ``does the image show {prompt}?``."""
    return f"does the image show {prompt}?"


def question_in_region(noun: str | None, region: str) -> str:
    """``is there a {noun} in the {region}?``, or ``is there an object in the {region}?`` when ``noun`` is None."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    return f"is there {'an object' if noun is None else 'a ' + noun} in the {region}?"


def region_questions(objects: list[SceneObject], rng: random.Random) -> list[tuple[str, str]]:
    """The two region-level question/answer pairs about one random quadrant: ``is there an object in the
    {region}?`` and ``is there a {noun} in the {region}?`` (the noun is one that is there half the time
    when the quadrant holds an object, else any noun)."""
    region = rng.choice(REGIONS)
    in_region = {f"{obj.colour} {obj.shape}" for obj in objects if obj.region == region}
    region_noun = rng.choice(sorted(in_region)) if in_region and rng.random() < 0.5 else rng.choice(NOUNS)
    return [
        (question_in_region(None, region), "yes" if in_region else "no"),
        (question_in_region(region_noun, region), "yes" if region_noun in in_region else "no"),
    ]


def located_question(objects: list[SceneObject], rng: random.Random) -> tuple[str, str]:
    """``is there a {noun} in the {region}?`` about an object that is in the scene: its own region (``yes``) or,
    with equal probability, a region that holds no such object (``no``). Asked about present nouns only, its
    true statements say where each object is, which next-token loss on the question words can learn from."""
    obj = rng.choice(objects)
    noun = f"{obj.colour} {obj.shape}"
    if rng.random() < 0.5:
        return question_in_region(noun, obj.region), "yes"
    taken = {other.region for other in objects if f"{other.colour} {other.shape}" == noun}
    return question_in_region(noun, rng.choice([region for region in REGIONS if region not in taken])), "no"


def relation_in_scene(spec: PromptSpec, objects: list[SceneObject], margin: float = 4) -> PromptSpec | None:
    """For a scene of two single objects (binding, spatial or complex prompts), ``spec``'s objects with the
    relation their placement shows by at least ``margin`` pixels (:func:`relation_holds`), or None."""
    if len(spec.objects) != 2 or any(obj.count > 1 for obj in spec.objects):
        return None
    (ax, ay), (bx, by) = objects[0].centre, objects[-1].centre
    shown = [relation for relation in RELATIONS if relation_holds(bx - ax, by - ay, relation, margin)]
    return PromptSpec(spec.objects, shown[0], _category(spec.objects, shown[0])) if shown else None


def relation_question(
    spec: PromptSpec, objects: list[SceneObject], rng: random.Random, split: str
) -> tuple[str, str]:
    """``does the image show {objects} {relation} {objects}?`` about a scene of two single objects, with the
    relation their placement shows (``yes``) or, with equal probability, its opposite (``no``); a binding
    scene is asked about too (``a red circle and a blue square`` drawn side by side shows ``a red circle left
    of a blue square``), so relations are asked about half the scenes, not only the third with a relational
    prompt. Only prompts of ``split`` are asked; otherwise (or for other scenes) the scene's prompt or a hard
    negative (:func:`negative_prompt`)."""
    yes = rng.random() < 0.5
    shown = relation_in_scene(spec, objects)
    if shown is not None:
        asked = shown if yes else PromptSpec(shown.objects, OPPOSITE_RELATION[shown.relation], shown.category)
        if asked.text() in prompt_split(asked.category, split):
            return question_about_prompt(asked.text()), "yes" if yes else "no"
    if yes:
        return question_about_prompt(spec.text()), "yes"
    return question_about_prompt(negative_prompt(spec, rng, split)), "no"


def relation_pair(
    spec: PromptSpec, objects: list[SceneObject], rng: random.Random, split: str
) -> list[tuple[str, str]] | None:
    """A contrastive pair about one scene of two single objects: the relation its placement shows (``yes``) and
    the same words with the direction flipped (``no``), the objects named in a random order (``a red circle left
    of a blue square`` or ``a blue square right of a red circle``). The two questions differ only in the relation
    word, so only the direction can tell them apart. Both texts must be prompts of ``split``; None when the scene
    shows no relation or no order has both in ``split``."""
    shown = relation_in_scene(spec, objects)
    if shown is None:
        return None
    swapped = PromptSpec(shown.objects[::-1], OPPOSITE_RELATION[shown.relation], shown.category)
    for asked in rng.sample([shown, swapped], 2):
        flipped = PromptSpec(asked.objects, OPPOSITE_RELATION[asked.relation], asked.category)
        allowed = prompt_split(asked.category, split)
        if asked.text() in allowed and flipped.text() in allowed:
            return [(question_about_prompt(asked.text()), "yes"), (question_about_prompt(flipped.text()), "no")]
    return None


def negative_prompt(spec: PromptSpec, rng: random.Random, split: str) -> str:
    """A hard negative of ``spec`` (:func:`perturb_prompt`) drawn from the same ``split``, so that held-out
    prompts never appear in training, not even as the text of a "no" question."""
    allowed = prompt_split(spec.category, split)
    for _ in range(100):
        negative = perturb_prompt(spec, rng).text()
        if negative in allowed:
            return negative
    raise RuntimeError(f"no hard negative of {spec.text()!r} in the {split!r} split after 100 tries")


def scene_questions(
    objects: list[SceneObject], spec: PromptSpec, rng: random.Random, split: str = "train"
) -> list[tuple[str, str]]:
    """Question/answer pairs about a rendered scene: existence, per-region, counting and whole-prompt
    (the whole-prompt negative comes from ``split``: :func:`negative_prompt`)."""
    present = {f"{obj.colour} {obj.shape}" for obj in objects}
    absent = [noun for noun in NOUNS if noun not in present]
    asked_present, asked_absent = rng.choice(sorted(present)), rng.choice(absent)
    about_region = region_questions(objects, rng)
    count_noun = rng.choice([asked_present, asked_absent])
    count = sum(f"{obj.colour} {obj.shape}" == count_noun for obj in objects)
    negative = negative_prompt(spec, rng, split)
    return [
        (f"is there a {asked_present}?", "yes"),
        (f"is there a {asked_absent}?", "no"),
        *about_region,
        (f"how many {count_noun}s?", NUMBER_WORDS[count]),
        (question_about_prompt(spec.text()), "yes"),
        (question_about_prompt(negative), "no"),
    ]


# ----------------------------------------------------------------------------- tokens


def _words(text: str) -> list[str]:
    return text.lower().replace("?", " ").replace(".", " ").split()


def encode_prompt(prompt: str) -> list[int]:
    """``<bos> words <eos>`` padded to :data:`MAX_PROMPT_TOKENS`; checks the prompt against the grammar."""
    parse_prompt(prompt)
    ids = [BOS_ID] + [TOKEN_IDS[word] for word in _words(prompt)] + [EOS_ID]
    if len(ids) > MAX_PROMPT_TOKENS:
        raise ValueError(f"prompt {prompt!r} is longer than {MAX_PROMPT_TOKENS - 2} words")
    return ids + [PAD_ID] * (MAX_PROMPT_TOKENS - len(ids))


def encode_question(question: str) -> list[int]:
    """``<q> words <a>``, left-padded to :data:`MAX_QUESTION_TOKENS` so the answer is always predicted last."""
    words = _words(question)
    unknown = [word for word in words if word not in TOKEN_IDS]
    if unknown:
        raise ValueError(f"question {question!r} uses words outside the vocabulary: {unknown}")
    ids = [QUESTION_ID] + [TOKEN_IDS[word] for word in words] + [ANSWER_ID]
    if len(ids) > MAX_QUESTION_TOKENS:
        raise ValueError(f"question {question!r} is longer than {MAX_QUESTION_TOKENS - 2} words")
    return [PAD_ID] * (MAX_QUESTION_TOKENS - len(ids)) + ids


def encode_answer(answer: str) -> int:
    if answer not in TOKEN_IDS:
        raise ValueError(f"answer {answer!r} is not a vocabulary word")
    return TOKEN_IDS[answer]


# ----------------------------------------------------------------------------- datasets


def sample_training_prompt(rng: random.Random, split: str = "train", categories: tuple[str, ...] = CATEGORIES) -> str:
    category = rng.choice(categories)
    return rng.choice(prompt_split(category, split))


def scramble_patches(image: np.ndarray, rng: random.Random, patch_size: int = 4) -> np.ndarray:
    """A copy of ``image`` whose object patches are scattered: a random third to all of its occupied
    ``patch_size`` patches each swap places with a random patch of the grid.

    The result keeps the scene's colours but breaks its shapes and layout, like an under-trained patch
    generator's samples; :class:`ScenesDataset` asks "does the image show {prompt}?" about it, answer "no"."""
    side = image.shape[0]
    grid = side // patch_size
    patches = image.reshape(grid, patch_size, grid, patch_size, 3).transpose(0, 2, 1, 3, 4)
    patches = patches.reshape(grid * grid, patch_size, patch_size, 3).copy()
    occupied = [index for index in range(grid * grid) if patches[index].any()]
    for index in rng.sample(occupied, max(1, round(len(occupied) * rng.uniform(1 / 3, 1)))):
        other = rng.randrange(grid * grid)
        patches[[index, other]] = patches[[other, index]]
    patches = patches.reshape(grid, grid, patch_size, patch_size, 3).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(patches.reshape(side, side, 3))


def to_pixels(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` in ``[0, 1]`` -> ``(3, H, W)`` in ``[-1, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))) * 2 - 1


class ScenesDataset(Dataset):
    """Seeded scenes for joint pretraining: each example is an image with its prompt (generation)
    and ``questions_per_image`` distinct question/answer pairs about it (understanding).

    With ``region_fraction > 0`` each question slot is, with that probability, replaced by a region
    question about a random quadrant (:func:`region_questions`: occupancy or a noun in the quadrant),
    so the understanding path sees more of the questions that need it to know where things are;
    ``occupancy_fraction`` slots ask the occupancy question ("is there an object in the {region}?") alone,
    and ``prompt_fraction`` slots the whole-prompt question ("does the image show {prompt}?"), about the
    scene's own prompt or a hard negative (:func:`negative_prompt`) with equal probability;
    ``located_fraction`` slots ask where an object of the scene is (:func:`located_question`) and
    ``relation_fraction`` slots the relation two objects show against its opposite (:func:`relation_question`).
    With ``relation_pair_fraction > 0`` (and ``questions_per_image >= 2``), that share of the scenes that show a
    relation have their first two slots replaced by a contrastive pair (:func:`relation_pair`: the relation shown,
    ``yes``, and its direction flip, ``no``, on the same image); those slots are never scrambled.
    With ``scrambled_fraction > 0`` each question slot is, with that probability, replaced by the
    whole-prompt question asked about a :func:`scramble_patches` copy of the scene, answer "no"
    (the scene's colours without its shapes), so the understanding path also learns to reject
    incoherent images. ``categories`` restricts the prompts to those categories (e.g. ``("colour", "size")``:
    single-object scenes only; a control).

    Items: ``pixel_values`` ``(3, 32, 32)`` in ``[-1, 1]`` (the scene, what generation learns),
    ``prompt_ids`` ``(MAX_PROMPT_TOKENS,)``, ``question_ids`` ``(questions_per_image, MAX_QUESTION_TOKENS)``,
    ``answer_id`` ``(questions_per_image,)``, ``question_pixel_values`` ``(questions_per_image, 3, 32, 32)``
    (the image each question is about) and ``prompt`` (str).
    """

    def __init__(
        self,
        num_examples: int = 20000,
        split: str = "train",
        seed: int = 0,
        questions_per_image: int = 1,
        scrambled_fraction: float = 0.0,
        region_fraction: float = 0.0,
        occupancy_fraction: float = 0.0,
        prompt_fraction: float = 0.0,
        located_fraction: float = 0.0,
        relation_fraction: float = 0.0,
        relation_pair_fraction: float = 0.0,
        categories: tuple[str, ...] = CATEGORIES,
    ) -> None:
        if num_examples < 1:
            raise ValueError(f"num_examples must be >= 1, got {num_examples}")
        if not 1 <= questions_per_image <= 7:
            raise ValueError(
                f"questions_per_image must be in 1..7 (a scene has 7 questions), got {questions_per_image}"
            )
        if not 0.0 <= scrambled_fraction <= 1.0:
            raise ValueError(f"scrambled_fraction must be in [0, 1], got {scrambled_fraction}")
        fractions = (region_fraction, occupancy_fraction, prompt_fraction, located_fraction, relation_fraction)
        if min(fractions) < 0 or sum(fractions) > 1:
            raise ValueError(
                "region_fraction, occupancy_fraction, prompt_fraction, located_fraction and relation_fraction must "
                f"be >= 0 with a sum <= 1, got {fractions}"
            )
        if not 0.0 <= relation_pair_fraction <= 1.0:
            raise ValueError(f"relation_pair_fraction must be in [0, 1], got {relation_pair_fraction}")
        if relation_pair_fraction > 0 and questions_per_image < 2:
            raise ValueError(
                f"relation_pair_fraction > 0 asks two questions about a scene: questions_per_image must be >= 2, "
                f"got {questions_per_image}"
            )
        if not categories or set(categories) - set(CATEGORIES):
            raise ValueError(f"categories must be a non-empty subset of {CATEGORIES}, got {categories!r}")
        self.num_examples, self.split, self.seed = num_examples, split, seed
        self.categories = tuple(categories)
        self.questions_per_image = questions_per_image
        self.scrambled_fraction = scrambled_fraction
        self.region_fraction, self.occupancy_fraction = region_fraction, occupancy_fraction
        self.prompt_fraction = prompt_fraction
        self.located_fraction, self.relation_fraction = located_fraction, relation_fraction
        self.relation_pair_fraction = relation_pair_fraction

    def __len__(self) -> int:
        return self.num_examples

    def example(self, index: int) -> tuple[str, list[SceneObject], list[tuple[str, str]]]:
        rng = random.Random(f"{self.seed}-{self.split}-{index}")
        prompt = sample_training_prompt(rng, self.split, self.categories)
        spec = parse_prompt(prompt)
        objects = sample_scene(spec, rng)
        return prompt, objects, rng.sample(scene_questions(objects, spec, rng, self.split), self.questions_per_image)

    def _prompt_question(self, prompt: str, rng: random.Random) -> tuple[str, str]:
        if rng.random() < 0.5:
            return question_about_prompt(prompt), "yes"
        return question_about_prompt(negative_prompt(parse_prompt(prompt), rng, self.split)), "no"

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index {index} out of range for {self.num_examples} scenes")
        prompt, objects, pairs = self.example(index)
        region_rng = random.Random(f"{self.seed}-{self.split}-{index}-region")
        kinds = (
            (self.occupancy_fraction, lambda: region_questions(objects, region_rng)[0]),
            (self.region_fraction, lambda: region_rng.choice(region_questions(objects, region_rng))),
            (self.prompt_fraction, lambda: self._prompt_question(prompt, region_rng)),
            (self.located_fraction, lambda: located_question(objects, region_rng)),
            (self.relation_fraction, lambda: relation_question(parse_prompt(prompt), objects, region_rng, self.split)),
        )
        for slot in range(len(pairs)):
            draw, bound = region_rng.random(), 0.0
            for fraction, ask in kinds:  # cumulative bounds: slot kinds in this order
                bound += fraction
                if draw < bound:
                    pairs[slot] = ask()
                    break
        paired = 0
        if self.relation_pair_fraction and region_rng.random() < self.relation_pair_fraction:
            contrast = relation_pair(parse_prompt(prompt), objects, region_rng, self.split)
            if contrast is not None:
                pairs[:2], paired = contrast, 2
        image = render_scene(objects)
        pixel_values = to_pixels(image)
        scramble_rng = random.Random(f"{self.seed}-{self.split}-{index}-scrambled")
        question_images = []
        for slot in range(len(pairs)):
            if scramble_rng.random() < self.scrambled_fraction and slot >= paired:
                pairs[slot] = (question_about_prompt(prompt), "no")
                question_images.append(to_pixels(scramble_patches(image, scramble_rng)))
            else:
                question_images.append(pixel_values)
        return {
            "pixel_values": pixel_values,
            "prompt_ids": torch.tensor(encode_prompt(prompt)),
            "question_ids": torch.tensor([encode_question(question) for question, _ in pairs]),
            "answer_id": torch.tensor([encode_answer(answer) for _, answer in pairs]),
            "question_pixel_values": torch.stack(question_images),
            "prompt": prompt,
        }
