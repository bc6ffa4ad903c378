"""Reading the model's answers: tolerant, honest, and never raising.

Real outputs drift from the trained layout (missing tags, single quotes, trailing commas, several
answers, "JPEG" for compression). Each parser takes the LAST ``<answer>`` block, reads it as JSON, then
falls back to a tolerant reading, and reports in ``error`` whatever it could not read. Whatever the
input, a parser returns a result object; it never raises.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from .prompts import DISTORTION_CLASSES, SEVERITY_LEVELS

_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)
_ANSWER_CLOSE = re.compile(r"</answer>", re.IGNORECASE)
_THINK = re.compile(r"<think>(.*?)(?:</think>|<answer>|$)", re.IGNORECASE | re.DOTALL)
_BRACES = re.compile(r"\{[^{}]*\}?", re.DOTALL)
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RATING = re.compile(r"""["']?rating["']?\s*[:=]\s*["']?(""" + _NUMBER + ")", re.IGNORECASE)
_NONE_WORDS = {"null", "none", "no", "n/a", "na", "nil", "no distortion", "clean", ""}
_CLASS_ALIASES = {
    "jpeg": "compression",
    "jpg": "compression",
    "jpeg compression": "compression",
    "compression artifacts": "compression",
    "blurry": "blur",
    "blurring": "blur",
    "noisy": "noise",
    "dark": "darken",
    "darkness": "darken",
    "low light": "darken",
}
_LABELS = {"image a": "A", "a": "A", "image b": "B", "b": "B", "similar": "similar"}
_MENTIONS = {"imagea": "A", "imageb": "B", "similar": "similar"}


Scale = tuple[float, float]
FULL_SCALE: Scale = (1.0, 5.0)  # the scale results, thresholds and rewards use; a judge's own is mapped onto it


@dataclass(frozen=True)
class ParsedScore:
    score: float | None
    reasoning: str | None
    error: str | None
    dimensions: dict[str, float] | None = None  # a multi-dimension judge's scores by name


@dataclass(frozen=True)
class ParsedDegradation:
    distortion: str | None
    severity: str | None
    reasoning: str | None
    error: str | None


@dataclass(frozen=True)
class ParsedComparison:
    winner: str | None
    reasoning: str | None
    error: str | None


def extract_reasoning(text: str) -> str | None:
    """The text of the first ``<think>`` block, or the text before ``<answer>`` if there is no tag."""
    match = _THINK.search(text)
    if match:
        return match.group(1).strip() or None
    opening = list(_ANSWER_OPEN.finditer(text))
    if opening:
        return text[: opening[0].start()].strip() or None
    return None


def extract_answer(text: str) -> str | None:
    """The content of the last ``<answer>`` block; a missing closing tag runs to the end of the text."""
    opening = list(_ANSWER_OPEN.finditer(text))
    if not opening:
        return None
    rest = text[opening[-1].end() :]
    closing = _ANSWER_CLOSE.search(rest)
    return (rest[: closing.start()] if closing else rest).strip()


def _answer_or_tail(text: str) -> tuple[str, bool]:
    """The answer block, else the text after ``</think>``, else (no ``<think>`` either) the whole text;
    and whether it was tagged. Text that is all reasoning (a ``<think>`` never closed, as when an answer
    is cut off) has no answer: a rating in the reasoning is not the model's verdict."""
    answer = extract_answer(text)
    if answer is not None:
        return answer, True
    parts = re.split(r"</think>", text, flags=re.IGNORECASE)
    if len(parts) == 1 and re.search(r"<think>", text, re.IGNORECASE):
        return "", False
    return parts[-1].strip(), False


def _json_objects(text: str) -> list[dict]:
    """Every ``{...}`` in the text that reads as JSON, after repairing common slips, last first."""
    found = []
    for chunk in _BRACES.findall(text):
        if not chunk.endswith("}"):
            chunk += "}"
        for candidate in (chunk, _repair_json(chunk)):
            try:
                value = json.loads(candidate)
            except ValueError:
                continue
            if isinstance(value, dict):
                found.append(value)
                break
    return found[::-1]


def _repair_json(chunk: str) -> str:
    repaired = re.sub(r"'([^']*)'", r'"\1"', chunk)  # single quotes
    repaired = re.sub(r",\s*}", "}", repaired)  # trailing comma
    return re.sub(r"(?<=[{,])\s*([A-Za-z_]+)\s*:", r'"\1":', repaired)  # bare keys


def _lower_keys(obj: dict) -> dict:
    return {str(k).strip().lower(): v for k, v in obj.items()}


OVERSHOOT = 0.25  # how far beyond its scale, as a share of the scale's span, a rating is still taken as written


def _to_rating(
    value: object, rating_range: Scale = FULL_SCALE, keep_scale: bool = False
) -> tuple[float | None, str | None]:
    """A rating mapped linearly from the judge's scale onto 1-5, the scale results use, never clamped
    (``keep_scale``: left on the judge's own scale, as video judges' results are).

    A small overshoot (up to a quarter of the span beyond either end: 5.2 on 1-5) is taken as written, as
    the judges' own evaluation code takes it (VisualQuality-R1's reads the number as it is; Q-Insight's
    reward compares it as it is). A rating further out (36, 7.2 or -3 on 1-5) means the answer is broken:
    it is an error that keeps the number, never a confident end of the scale."""
    if isinstance(value, bool) or value is None:
        return None, f"rating {value!r} is not a number"
    try:
        rating = float(value)  # type: ignore[arg-type]  # float() ignores surrounding whitespace itself
    except (TypeError, ValueError):
        return None, f"rating {value!r} is not a number"
    if not math.isfinite(rating):
        return None, f"rating {value!r} is not a finite number"
    low, high = rating_range
    margin = OVERSHOOT * (high - low)
    if not low - margin < rating < high + margin:
        return None, (
            f"rating {rating:g} is far outside the judge's scale {low:g}-{high:g} (more than {margin:g} "
            "beyond it): the answer is broken"
        )
    if keep_scale or (low, high) == FULL_SCALE:
        return rating, None  # exactly as written
    return 1.0 + 4.0 * (rating - low) / (high - low), None


def _missing_answer_note(tagged: bool) -> str:
    return "" if tagged else " (no <answer> block found)"


def parse_score(text: str, rating_range: Scale = FULL_SCALE) -> ParsedScore:
    """Read Q-Insight's ``{"rating": ...}``; a number far outside the scale or anything else is an error."""
    try:
        body, tagged = _answer_or_tail(text)
        reasoning = extract_reasoning(text)
        for obj in _json_objects(body):
            keys = _lower_keys(obj)
            if "rating" in keys:
                rating, error = _to_rating(keys["rating"], rating_range)
                return ParsedScore(rating, reasoning, error)
        match = _RATING.findall(body)
        if match:
            rating, error = _to_rating(match[-1], rating_range)
            return ParsedScore(rating, reasoning, error)
        if tagged and re.fullmatch(_NUMBER, body):
            rating, error = _to_rating(body, rating_range)
            return ParsedScore(rating, reasoning, error)
        return ParsedScore(None, reasoning, "no rating found in the answer" + _missing_answer_note(tagged))
    except Exception as exc:  # a parser must never take a batch down
        return ParsedScore(None, None, f"could not parse the answer: {exc}")


def parse_first_number(text: str, rating_range: Scale = FULL_SCALE) -> ParsedScore:
    """VisualQuality-R1's rule: the first number in the last closed ``<answer>`` block.

    Its evaluation code reads the last block closed by ``</answer>`` (so an unclosed last block is passed
    over for the closed one before it), and, with no closed block, the first number anywhere in the text,
    then a random score when there is none. Here, with no closed block, an unclosed one is read (tolerant,
    as for every judge) but a number in the reasoning is not the verdict, and no rating is an error.
    """
    try:
        closed = re.findall(r"<answer>(.*?)</answer>", text, re.IGNORECASE | re.DOTALL)
        body, tagged = (closed[-1].strip(), True) if closed else _answer_or_tail(text)
        reasoning = extract_reasoning(text)
        number = re.search(r"\d+(\.\d+)?", body)
        if number is None:
            return ParsedScore(None, reasoning, "no number found in the answer" + _missing_answer_note(tagged))
        rating, error = _to_rating(number.group(), rating_range)
        return ParsedScore(rating, reasoning, error)
    except Exception as exc:  # a parser must never take a batch down
        return ParsedScore(None, None, f"could not parse the answer: {exc}")


def pattern_reader(pattern: str, rating_range: Scale = FULL_SCALE) -> Callable[[str], ParsedScore]:
    """A score reader for a judge described by a profile file: the rating is the first group of the
    pattern's last match in the answer."""
    compiled = re.compile(pattern)

    def read(text: str) -> ParsedScore:
        try:
            matches = list(compiled.finditer(text))
            reasoning = extract_reasoning(text)
            if not matches:
                return ParsedScore(None, reasoning, f"the answer does not match the judge's pattern {pattern!r}")
            rating, error = _to_rating(matches[-1].group(1), rating_range)
            return ParsedScore(rating, reasoning, error)
        except Exception as exc:  # a parser must never take a batch down
            return ParsedScore(None, None, f"could not parse the answer: {exc}")

    return read


def _normalise_label(value: object) -> str | None:
    if value is None:
        return None
    return re.sub(r"\s+", " ", str(value)).strip().strip("\"'.").strip().lower()


def _read_distortion(value: object) -> tuple[str | None, str | None]:
    label = _normalise_label(value)
    if label is None or label in _NONE_WORDS:
        return None, None
    label = _CLASS_ALIASES.get(label, label)
    if label in DISTORTION_CLASSES:
        return label, None
    return None, f"unknown distortion class {value!r}"


def _read_severity(value: object) -> tuple[str | None, str | None]:
    label = _normalise_label(value)
    if label is None or label in _NONE_WORDS:
        return None, None
    if label in SEVERITY_LEVELS:
        return label, None
    return None, f"unknown severity {value!r}"


def _degradation_fields(body: str) -> tuple[object, object] | None:
    for obj in _json_objects(body):
        keys = _lower_keys(obj)
        if "distortion_class" in keys or "distortion" in keys:
            return keys.get("distortion_class", keys.get("distortion")), keys.get("severity")
    found_class = re.findall(r"""["']?distortion(?:_class)?["']?\s*[:=]\s*["']?([A-Za-z][\w ]*)""", body, re.I)
    if not found_class:
        return None
    found_severity = re.findall(r"""["']?severity["']?\s*[:=]\s*["']?([A-Za-z][\w ]*)""", body, re.I)
    return found_class[-1], (found_severity[-1] if found_severity else None)


def parse_degradation(text: str) -> ParsedDegradation:
    """Read the distortion class and severity; "null"/"none" mean no distortion (or no severity).

    Each field is taken as the model stated it, as the paper's reward reads them: the training data
    pairs a "null" class with a "null" severity, and an answer that does not (no distortion but
    "slight"; "blur" but "null") is reported as said, so the metrics score its class and its severity
    each on its own. A severity key that is missing altogether is an error (a format slip)."""
    try:
        body, tagged = _answer_or_tail(text)
        reasoning = extract_reasoning(text)
        fields = _degradation_fields(body)
        if fields is None:
            return ParsedDegradation(
                None, None, reasoning, "no distortion_class found in the answer" + _missing_answer_note(tagged)
            )
        distortion, class_error = _read_distortion(fields[0])
        severity, severity_error = _read_severity(fields[1])
        if fields[1] is None and distortion is not None and severity_error is None:
            severity_error = f"distortion {distortion!r} given without a severity"
        error = "; ".join(e for e in (class_error, severity_error) if e) or None
        return ParsedDegradation(distortion, severity, reasoning, error)
    except Exception as exc:
        return ParsedDegradation(None, None, None, f"could not parse the answer: {exc}")


def parse_comparison(text: str) -> ParsedComparison:
    """Read "Image A", "Image B" or "Similar"; an answer naming both images is an error."""
    try:
        body, tagged = _answer_or_tail(text)
        reasoning = extract_reasoning(text)
        exact = _LABELS.get(_normalise_label(body) or "")
        if exact:
            return ParsedComparison(exact, reasoning, None)
        named = {
            _MENTIONS[re.sub(r"\s+", "", m.lower())] for m in re.findall(r"\bimage\s*[ab]\b|\bsimilar\b", body, re.I)
        }
        if len(named) == 1:
            return ParsedComparison(named.pop(), reasoning, None)
        problem = (
            "names more than one of Image A, Image B, Similar" if named else "names none of Image A, Image B, Similar"
        )
        return ParsedComparison(None, reasoning, f"the answer {problem}" + _missing_answer_note(tagged))
    except Exception as exc:
        return ParsedComparison(None, None, f"could not parse the answer: {exc}")


# -- VQ-Insight's video judges: answers on their own 0-100 scale -------------------------------------------


def _video_rating(value: object, rating_range: Scale) -> tuple[float | None, str | None]:
    """A number on the judge's own scale, kept as written (video results stay on 0-100), with the checks
    of :func:`_to_rating`; thousands separators are dropped, as VQ-Insight's reward drops them."""
    return _to_rating(value.replace(",", "") if isinstance(value, str) else value, rating_range, keep_scale=True)


def parse_video_score(text: str, rating_range: Scale = (0.0, 100.0)) -> ParsedScore:
    """VQ-Insight's natural-video answer: one number (0-100) in the answer block, kept on that scale."""
    try:
        body, tagged = _answer_or_tail(text)
        reasoning = extract_reasoning(text)
        number = re.search(r"\d[\d,]*(?:\.\d+)?|\.\d+", body)
        if number is not None and not tagged and number.group() != body:  # untagged text must be the number alone
            number = None
        if number is None:
            return ParsedScore(None, reasoning, "no number found in the answer" + _missing_answer_note(tagged))
        rating, error = _video_rating(number.group(), rating_range)
        return ParsedScore(rating, reasoning, error)
    except Exception as exc:  # a parser must never take a batch down
        return ParsedScore(None, None, f"could not parse the answer: {exc}")


def _dimension_values(body: str, keys: tuple[str, ...]) -> dict[str, object] | None:
    """The keys' values: from the last JSON object holding them all, else one pattern per key (the
    answers VQ-Insight was rewarded for write them without braces: "spatial": 40.48, ...)."""
    for obj in _json_objects(body):
        lowered = _lower_keys(obj)
        if all(key in lowered for key in keys):
            return {key: lowered[key] for key in keys}
    found = {}
    for key in keys:
        matches = re.findall(rf"""["']?{key}["']?\s*[:=]\s*["']?({_NUMBER})""", body, re.IGNORECASE)
        if matches:
            found[key] = matches[-1]
    return found or None


def parse_video_dimensions(text: str, rating_range: Scale = (0.0, 100.0)) -> ParsedScore:
    """VQ-Insight's AIGC answer: spatial, temporal and consistency scores (0-100); the score is their
    mean, as the AIGC judge's reward averages them. A missing or broken key is an error naming it."""
    from .prompts import VQ_AIGC_DIMENSIONS

    try:
        body, tagged = _answer_or_tail(text)
        reasoning = extract_reasoning(text)
        values = _dimension_values(body, VQ_AIGC_DIMENSIONS)
        if values is None:
            return ParsedScore(
                None,
                reasoning,
                "no spatial, temporal or consistency score in the answer" + _missing_answer_note(tagged),
            )
        dimensions, problems = {}, []
        for key in VQ_AIGC_DIMENSIONS:
            if key not in values:
                problems.append(f"no {key} score")
                continue
            rating, error = _video_rating(values[key], rating_range)
            if rating is None:
                problems.append(f"{key}: {error}")
            else:
                dimensions[key] = rating
        if problems:
            return ParsedScore(None, reasoning, "; ".join(problems), dimensions or None)
        return ParsedScore(sum(dimensions.values()) / len(dimensions), reasoning, None, dimensions)
    except Exception as exc:  # a parser must never take a batch down
        return ParsedScore(None, None, f"could not parse the answer: {exc}")


_VIDEO_LABELS = {"a": "A", "video a": "A", "b": "B", "video b": "B"}


def parse_video_comparison(text: str) -> ParsedComparison:
    """VQ-Insight's comparison answer: "A" or "B" (as its prompt asks), or "Video A" / "Video B" (as its
    question words it); an answer naming both is an error. There is no "similar"."""
    try:
        body, tagged = _answer_or_tail(text)
        reasoning = extract_reasoning(text)
        exact = _VIDEO_LABELS.get(_normalise_label(body) or "")
        if exact:
            return ParsedComparison(exact, reasoning, None)
        named = {m[-1].upper() for m in re.findall(r"\bvideo\s*[ab]\b", body, re.IGNORECASE)}
        if len(named) == 1:
            return ParsedComparison(named.pop(), reasoning, None)
        problem = "names both Video A and Video B" if named else "names neither Video A nor Video B"
        return ParsedComparison(None, reasoning, f"the answer {problem}" + _missing_answer_note(tagged))
    except Exception as exc:
        return ParsedComparison(None, None, f"could not parse the answer: {exc}")
