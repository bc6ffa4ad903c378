"""Judging the calls a replica batched together, in as few judge calls as their tasks and options allow,
and stopping the work of calls nobody waits for any more."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from typing import Any

from ..errors import ImageInputError, UsageError
from ..judging.results import ResultCallback
from .settings import Call

logger = logging.getLogger("qinsight")
CANCELLED_STATUS = 499  # nginx's "client closed request": never sent, as nobody waits for it
STATUS = "http_status"  # an answer's own HTTP status, where it is not 200 (taken out before it is sent)


class Cancelled(Exception):
    """Every call of a group was cancelled: its judging stops at the next finished result."""


def judge_calls(judge: Any, calls: Sequence[Call]) -> list[dict[str, Any]]:
    """The answers to calls judged together: the images of all score, degradation and reward calls with
    the same options in one judge call each, all comparison pairs with the same options in one
    ``compare_pairs``; a ranking is its own.
    A call whose options the judge refuses gets its error; the others are judged. A group whose calls
    are all cancelled (their clients went away, their deadline passed) stops at its next result."""
    answers: list[dict[str, Any] | None] = [None] * len(calls)
    groups: dict[tuple[str, str, int], list[int]] = {}
    for index, call in enumerate(calls):  # together: the same task with the same options, but not rankings
        options = json.dumps(call.options, sort_keys=True)
        groups.setdefault((call.task, options, index if call.task == "rank" else -1), []).append(index)
    for indices in groups.values():
        chosen = [calls[i] for i in indices]
        try:
            for i, answer in zip(indices, _judge_group(judge, chosen, _stop_when_cancelled(chosen))):
                answers[i] = answer
        except Cancelled:
            logger.info("stopped judging %d /%s request(s): nobody waits for them", len(indices), chosen[0].task)
            for i in indices:
                answers[i] = {"error": "cancelled", STATUS: CANCELLED_STATUS}
        except ValueError as exc:  # a UsageError: options the judge refuses (a top_k of 0, say)
            for i in indices:
                answers[i] = {"error": str(exc), STATUS: 400}
    return answers  # type: ignore[return-value]


def judge_failed(call: Call, exc: Exception) -> str:
    """A fault of ours, not the request's, logged with its traceback: what the client is told (500)."""
    logger.exception("judging a /%s request failed", call.task)
    return f"the judge failed on this request ({type(exc).__name__}: {exc})"


def _stop_when_cancelled(calls: Sequence[Call]) -> ResultCallback:
    def check(index: int, result: Any) -> None:
        if all(call.cancelled for call in calls):
            raise Cancelled

    check(-1, None)  # nobody waits for any of them: not started at all
    return check


def _judge_group(judge: Any, calls: Sequence[Call], on_result: ResultCallback) -> list[dict[str, Any]]:
    task, options = calls[0].task, calls[0].options
    if task == "rank":
        return [{"ranking": judge.rank(calls[0].images, **options, on_result=on_result).to_dict()}]
    if task == "compare":
        pairs = [tuple(call.images) for call in calls]
        results = judge.compare_pairs(pairs, both_orders=options.get("both_orders", False), on_result=on_result)
        return [{"result": result.to_dict()} for result in results]
    flat = [image for call in calls for image in call.images]
    if task == "compute":
        return _split_answers(calls, computed_rewards(judge, flat, options.get("fps"), on_result))
    if task == "reward":
        values = [float(v) for v in judge.reward(flat, on_result=on_result)]
        return _split(calls, values, "rewards")
    method = judge.score if task == "score" else judge.degradation
    results = method(flat, on_result=on_result, **({"mode": options["mode"]} if "mode" in options else {}))
    return _split(calls, [r.to_dict() for r in results], "results")


def computed_rewards(
    judge: Any, items: list[Any], fps: float | None, on_result: ResultCallback
) -> dict[str, list[Any]]:
    """``/compute``'s answer for images (bytes) or videos (lists of frames' bytes): the rewards (0.0 where
    an item could not be judged), the scores, and each item's error (None where it was judged).

    Raises:
        UsageError: videos for an image judge, or images for a video judge.
    """
    from ..rl.rewards import JudgeReward  # here: the client imports this package without numpy

    videos = any(isinstance(item, list) for item in items)
    if videos != judge.judges_video:
        media = judge.profile.media
        raise UsageError(
            f'this service\'s judge rates {media}s: send "{media}", not "{"video" if videos else "image"}"'
        )
    decoded: dict[int, Any] = {}
    errors: list[str | None] = [None] * len(items)
    for index, item in enumerate(items):
        try:
            decoded[index] = [_frame(frame, index, j) for j, frame in enumerate(item)] if videos else item
        except ImageInputError as exc:
            errors[index] = str(exc)
    judged = JudgeReward(judge, fps=fps).compute(list(decoded.values()), on_result)
    rewards, scores = [0.0] * len(items), [None] * len(items)
    for place, index in enumerate(decoded):
        rewards[index], scores[index], errors[index] = (
            float(judged.rewards[place]),
            judged.scores[place],
            judged.errors[place],
        )
    return {"rewards": rewards, "scores": scores, "errors": errors}


def _frame(data: bytes, video: int, frame: int) -> Any:
    """One frame's image, decoded now (a bad frame is its video's error, naming the frame)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except Exception as exc:
        raise ImageInputError(f"video[{video}] frame {frame} is not an image ({type(exc).__name__}: {exc})") from None


def _split_answers(calls: Sequence[Call], answer: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Each call's share of an answer of parallel lists."""
    parts = [_split(calls, values, key) for key, values in answer.items()]
    return [{key: value for part in call_parts for key, value in part.items()} for call_parts in zip(*parts)]


def _split(calls: Sequence[Call], values: list[Any], key: str) -> list[dict[str, Any]]:
    answers, start = [], 0
    for call in calls:
        answers.append({key: values[start : start + len(call.images)]})
        start += len(call.images)
    return answers
