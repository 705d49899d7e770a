"""An independent rule-based judge of 32x32 scenes: it shares no weights with the model under test.

Detection: every pixel is assigned to the nearest palette colour (or background when far from all), pixels
of one colour are split into 8-connected components (``scipy.ndimage.label``), components smaller
than ``min_area`` pixels are noise. Shape from the fill ratio ``area / bbox area`` (square ~1.0,
circle ~0.79, triangle ~0.5); size from the bounding-box side; position from the bounding-box centre.

A prompt (``selfgen.data.scenes.PROMPT_GRAMMAR``) is satisfied when, for every object phrase,
exactly ``count`` components have its colour and shape (and its size when one is named), no colour the prompt
asks for has more components than the prompt asks objects of that colour (extra fragments of an asked colour,
e.g. a mosaic whose one tile happens to be a red "square", fail: the fifteenth pass of docs/srum.md), and for a
relation, some pair of matching objects has centroids displaced along the relation's axis.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..data.scenes import COLOURS, DEFAULT_SIZE, REGIONS, SIZES, ObjectSpec, parse_prompt, relation_holds
from .statistics import bootstrap_interval, mean_difference, standard_error

_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)
_COLOUR_NAMES = list(COLOURS)


@dataclass(frozen=True)
class Detection:
    colour: str
    shape: str
    side: float  # mean of the bounding-box height and width
    cx: float
    cy: float
    area: int

    @property
    def size(self) -> str:
        return (
            "small"
            if self.side < (SIZES["small"] + DEFAULT_SIZE) / 2
            else ("large" if self.side > (SIZES["large"] + DEFAULT_SIZE) / 2 else "medium")
        )


def classify_shape(fill_ratio: float) -> str:
    if fill_ratio > 0.9:
        return "square"
    return "circle" if fill_ratio > 0.64 else "triangle"


def detect_objects(image: np.ndarray, min_area: int = 12, max_colour_distance: float = 0.3) -> list[Detection]:
    """Objects in one ``(H, W, 3)`` image in ``[0, 1]``: a pixel belongs to a palette colour when its
    squared RGB distance to it is below ``max_colour_distance`` (everything else is background)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3) in [0, 1], got shape {image.shape}")
    distances = ((image[:, :, None, :] - _PALETTE) ** 2).sum(-1)
    labels = distances.argmin(-1)
    foreground = distances.min(-1) < max_colour_distance
    found = []
    for colour_index, colour in enumerate(_COLOUR_NAMES):
        components, count = ndimage.label(foreground & (labels == colour_index), structure=np.ones((3, 3)))
        for box_index, box in enumerate(ndimage.find_objects(components), start=1):
            mask = components[box] == box_index
            area = int(mask.sum())
            if area < min_area:
                continue
            height, width = mask.shape
            found.append(
                Detection(
                    colour=colour,
                    shape=classify_shape(area / (height * width)),
                    side=(height + width) / 2,
                    cx=(box[1].start + box[1].stop) / 2,
                    cy=(box[0].start + box[0].stop) / 2,
                    area=area,
                )
            )
    return found


def _matches(detection: Detection, obj: ObjectSpec) -> bool:
    return (
        detection.colour == obj.colour
        and detection.shape == obj.shape
        and (obj.size is None or detection.size == obj.size)
    )


def judge_image(image: np.ndarray, prompt: str) -> bool:
    """Does ``image`` satisfy ``prompt``? (see the module docstring for the rules)"""
    return failure_reason(image, prompt) is None


FAILURES = ("colour", "shape", "size", "count", "extra", "relation")


def failure_reason(image: np.ndarray, prompt: str) -> str | None:
    """The first rule of :func:`judge_image` that ``image`` breaks for ``prompt``, or ``None`` when it passes.

    Per object phrase in prompt order, when it is not matched exactly ``count`` times: ``"colour"`` (no component
    of its colour), ``"shape"`` (none of that colour has its shape), ``"size"`` (none of that colour and shape has
    its size), else ``"count"``; then ``"extra"`` (an asked colour has more components than the prompt asks
objects of that colour: fragments beside the objects); then ``"relation"``. A diagnosis of what a generator gets
wrong."""
    spec = parse_prompt(prompt)
    detections = detect_objects(image)
    matched = []
    for obj in spec.objects:
        found = [d for d in detections if _matches(d, obj)]
        if len(found) != obj.count:
            return _unmatched_reason(detections, obj)
        matched.append(found)
    asked: dict[str, int] = defaultdict(int)
    for obj in spec.objects:
        asked[obj.colour] += obj.count
    if any(sum(d.colour == colour for d in detections) > count for colour, count in asked.items()):
        return "extra"
    if spec.relation is None or any(
        relation_holds(b.cx - a.cx, b.cy - a.cy, spec.relation) for a in matched[0] for b in matched[1]
    ):
        return None
    return "relation"


def single_object_report(images: np.ndarray, prompts: list[str]) -> dict:
    """The rule judge on single-object ``prompts`` (one per image): accuracy with a 95% bootstrap interval, accuracy
    per asked shape, the first failures (:func:`failure_reason`), how many components the asked colour breaks into
    (1 = one object, more = fragments) and the per-image verdicts (for paired comparisons)."""
    specs = [parse_prompt(prompt) for prompt in prompts]
    if any(len(spec.objects) != 1 or spec.objects[0].count != 1 for spec in specs):
        raise ValueError("single_object_report takes single-object prompts only (one object, count 1)")
    reasons = [failure_reason(image, prompt) for image, prompt in zip(images, prompts)]
    right = np.array([reason is None for reason in reasons], float)
    parts = [sum(d.colour == spec.objects[0].colour for d in detect_objects(image)) for image, spec in zip(images, specs)]
    by_shape = {}
    for shape in ("circle", "square", "triangle"):
        chosen = [r for r, spec in zip(right, specs) if spec.objects[0].shape == shape]
        by_shape[shape] = round(float(np.mean(chosen)), 3) if chosen else None
    return {
        "accuracy": round(float(right.mean()), 3),
        "ci": [round(v, 3) for v in bootstrap_interval(np.mean, right, num_resamples=500)],
        "by_shape": by_shape,
        "failures": {k: reasons.count(k) for k in FAILURES if reasons.count(k)},
        "asked_colour_components": {str(k): parts.count(k) for k in range(3)} | {"3+": sum(n >= 3 for n in parts)},
        "per_image_right": right.astype(int).tolist(),
    }


def _unmatched_reason(detections: list[Detection], obj: ObjectSpec) -> str:
    """Why ``obj`` is not matched ``count`` times: the first of colour, shape, size missing, else the count."""
    coloured = [d for d in detections if d.colour == obj.colour]
    if not coloured:
        return "colour"
    if not any(d.shape == obj.shape for d in coloured):
        return "shape"
    if not any(_matches(d, obj) for d in coloured):
        return "size"
    return "count"


def region_labels(image: np.ndarray, prompt: str) -> tuple[np.ndarray, np.ndarray]:
    """Per region of :data:`~selfgen.data.scenes.REGIONS` (quadrants, by a detection's centre): is any
    object there, and is every object there one of the prompt's (colour and shape)? Two boolean ``(4,)``
    arrays: the ground truth that the local self-rewards try to estimate."""
    nouns = {(obj.colour, obj.shape) for obj in parse_prompt(prompt).objects}
    height, width = np.asarray(image).shape[:2]
    occupied, correct = np.zeros(len(REGIONS), dtype=bool), np.zeros(len(REGIONS), dtype=bool)
    by_region: dict[str, list[Detection]] = defaultdict(list)
    for detection in detect_objects(image):
        vertical = "top" if detection.cy < height / 2 else "bottom"
        by_region[f"{vertical}-{'left' if detection.cx < width / 2 else 'right'}"].append(detection)
    for index, region in enumerate(REGIONS):
        found = by_region[region]
        occupied[index] = bool(found)
        correct[index] = bool(found) and all((d.colour, d.shape) in nouns for d in found)
    return occupied, correct


class SceneJudge:
    """Compositional accuracy per prompt category, from :func:`judge_image`."""

    def verdicts(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        """:func:`judge_image` of each of ``images`` ``(N, H, W, 3)`` against its prompt: ``(N,)`` booleans."""
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images for {len(prompts)} prompts; expected one image per prompt")
        return np.array([judge_image(image, prompt) for image, prompt in zip(images, prompts)], dtype=bool)

    def summarize(self, correct: np.ndarray, prompts: list[str], samples_per_prompt: int = 1) -> dict[str, float]:
        """Per-category and pooled accuracy of the :meth:`verdicts` ``correct`` of images of ``prompts``.

        Returns ``{category: accuracy, ..., "overall": mean of the categories, "pooled": fraction of all
        images right, "pooled_se": its standard error}``. ``samples_per_prompt`` consecutive images share
        one prompt; they are correlated, so ``pooled_se`` is the standard error of the per-prompt means
        (clustered by prompt), not of the images; `nan` for a single prompt."""
        if len(correct) != len(prompts):
            raise ValueError(f"got {len(correct)} verdicts for {len(prompts)} prompts; expected one per prompt")
        if samples_per_prompt < 1 or len(prompts) % samples_per_prompt:
            raise ValueError(
                f"{len(prompts)} prompts do not split into groups of samples_per_prompt={samples_per_prompt}"
            )
        correct = np.asarray(correct, dtype=np.float64)
        per_category: dict[str, list[float]] = defaultdict(list)
        for right, prompt in zip(correct, prompts):
            per_category[parse_prompt(prompt).category].append(right)
        scores = {category: float(np.mean(results)) for category, results in sorted(per_category.items())}
        scores["overall"] = float(np.mean([np.mean(results) for results in per_category.values()]))
        scores["pooled"] = float(correct.mean())
        scores["pooled_se"] = standard_error(correct.reshape(-1, samples_per_prompt).mean(axis=1))
        return scores

    def evaluate(self, images: np.ndarray, prompts: list[str], samples_per_prompt: int = 1) -> dict[str, float]:
        """:meth:`summarize` of the :meth:`verdicts` of ``images`` against their ``prompts``."""
        return self.summarize(self.verdicts(images, prompts), prompts, samples_per_prompt)


def per_prompt_accuracy(correct: np.ndarray, prompts: list[str], samples_per_prompt: int) -> dict[str, float]:
    """Each of ``prompts``' fraction of accepted images, from the :meth:`SceneJudge.verdicts` ``correct`` of its
    ``samples_per_prompt`` consecutive images (the input of :func:`paired_difference`)."""
    return dict(zip(prompts, np.reshape(correct, (-1, samples_per_prompt)).mean(axis=1).tolist()))


def paired_difference(baseline: dict[str, float], candidate: dict[str, float]) -> tuple[float, float]:
    """Mean over prompts of ``candidate - baseline`` per-prompt accuracy and its standard error.

    Both map the same prompts to the fraction of their images the judge accepts (``per_prompt_accuracy``
    of two evaluations with the same prompts and noise), so the difference is paired and clustered by prompt."""
    if set(baseline) != set(candidate):
        raise ValueError(
            f"paired comparison needs the same prompts: {len(set(baseline) ^ set(candidate))} prompts are in only "
            "one of the two evaluations (evaluate both with the same split, prompts_per_category and seed)"
        )
    if len(baseline) < 2:
        raise ValueError(f"paired comparison needs at least 2 prompts, got {len(baseline)}")
    prompts = list(baseline)
    return mean_difference([baseline[prompt] for prompt in prompts], [candidate[prompt] for prompt in prompts])


def ranking_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """``P(score of a positive > score of a negative)`` (ties count half): 0.5 is chance, NaN without both classes."""
    positive, negative = scores[labels], scores[~labels]
    if not len(positive) or not len(negative):
        return float("nan")
    greater = (positive[:, None] > negative[None]).mean()
    return float(greater + 0.5 * (positive[:, None] == negative[None]).mean())
