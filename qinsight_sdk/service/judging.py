"""Judging the calls a replica batched together, in as few judge calls as their tasks and options allow,
and stopping the work of calls nobody waits for any more."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

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
    if task == "reward":
        values = [float(v) for v in judge.reward(flat, on_result=on_result)]
        return _split(calls, values, "rewards")
    method = judge.score if task == "score" else judge.degradation
    results = method(flat, on_result=on_result, **({"mode": options["mode"]} if "mode" in options else {}))
    return _split(calls, [r.to_dict() for r in results], "results")


def _split(calls: Sequence[Call], values: list[Any], key: str) -> list[dict[str, Any]]:
    answers, start = [], 0
    for call in calls:
        answers.append({key: values[start : start + len(call.images)]})
        start += len(call.images)
    return answers
