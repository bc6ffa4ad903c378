"""The service on Ray Serve: a gateway that reads and checks requests, in front of the judge replicas.

The gateway (one replica, no model) takes every HTTP request: it reads bodies as they arrive, within a
deadline and a budget of bytes held at once, checks them, and hands the checked call to a judge replica
through a Serve handle. So a slow upload holds a gateway slot, of which there are thousands, never a
judge's; a judge replica that dies is a JSON 503 the client may retry, not a bare 500 from the proxy; and a
request past its deadline, or whose client went away, is cancelled on its replica, where its judging stops.
The judge replicas batch the calls that arrive together (``@serve.batch``) and judge them in a worker
thread, so a replica's event loop keeps taking calls while a batch runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections import Counter
from typing import TYPE_CHECKING, Any

from .admission import ByteBudget, Hold
from .judging import STATUS, judge_calls, judge_failed
from .requests import check_task, check_token, read_call
from .settings import Call, RequestError, ServiceSettings

if TYPE_CHECKING:  # the client imports this package and stays standard-library only
    from ..judging.judge_config import JudgeConfig

logger = logging.getLogger("qinsight")

# Requests a replica takes at once. The gateway's cost little each (a coroutine and the body, which the
# byte budget bounds); the judges' wait in their batch queue. Both high, so that Serve's router never
# holds requests back in its retry loop (which left a replica idle in 0.5 s gaps past 32 clients).
GATEWAY_MAX_ONGOING = 4096
JUDGE_MAX_ONGOING = 4096
HEALTH_TIMEOUT_S = 10.0


class Gateway:
    """The HTTP front of the service: one Starlette request in, one JSON response out.

    Args:
        judges: a Serve handle to the judge replicas (called with a :class:`Call`, answering a dict).
        settings: the service's limits.
    """

    def __init__(self, judges: Any, settings: ServiceSettings) -> None:
        self.judges = judges
        self.settings = settings
        self.budget = ByteBudget(settings.max_inflight_bytes)
        # how many batches of each size the judge replicas formed: one entry per size, not per batch
        self.batch_sizes: Counter[int] = Counter()
        self.in_flight = 0
        self.draining = False
        # the allowed folder as the judge names its files, resolved once: cut from every answer's texts
        self.root = os.path.realpath(settings.allow_paths) + os.sep if settings.allow_paths is not None else None

    async def __call__(self, request: Any) -> Any:
        """One HTTP request (a Starlette ``Request``) answered: refused with a 4xx/5xx, or judged."""
        from starlette.responses import JSONResponse

        task = request.url.path[1:]  # routed exactly: /score, not /x/score or /score/
        self.in_flight += 1
        try:
            with self.budget.hold() as hold:
                answer = await self._answer(task, request, hold)
            return JSONResponse(answer, status_code=answer.pop(STATUS, 200))
        except RequestError as exc:
            retry = {"Retry-After": str(math.ceil(exc.retry_after))} if exc.retry_after is not None else None
            return JSONResponse({"error": exc.message}, status_code=exc.status, headers=retry)
        finally:
            self.in_flight -= 1

    async def drain(self) -> int:
        """Refuse new requests from now on (503, and /health says so); the requests still in flight."""
        self.draining = True
        return self.in_flight

    async def _answer(self, task: str, request: Any, hold: Hold) -> dict[str, Any]:
        if request.method == "GET" and task == "health":  # for load balancers, which carry no token
            return await self._health()
        check_token(request.headers, self.settings)
        if request.method == "GET" and task == "stats":
            return {"batch_sizes": {str(size): count for size, count in sorted(self.batch_sizes.items())}}
        check_task(task)
        if request.method != "POST":
            raise RequestError(405, f"{request.method} /{task}: judging endpoints take POST")
        if self.draining:
            raise RequestError(503, "the service is stopping; retry on another replica", retry_after=1)
        try:
            call = await asyncio.wait_for(
                read_call(task, request, self.settings, hold.grow_to), self.settings.body_timeout_s
            )
        except TimeoutError:
            raise RequestError(408, f"the body did not arrive within {self.settings.body_timeout_s:g} s") from None
        answer = await self._judged(call)
        size = answer.pop("batch_size", None)
        if size is not None:
            self.batch_sizes[size] += 1
        return _without_root(answer, self.root)

    async def _health(self) -> dict[str, Any]:
        """200 when a judge replica answers (and the service is not stopping); says nothing else."""
        if self.draining:
            raise RequestError(503, "the service is stopping", retry_after=1)
        try:
            await asyncio.wait_for(_awaited(self.judges.ready.remote()), HEALTH_TIMEOUT_S)
        except Exception:
            raise RequestError(503, "no judge replica answers", retry_after=1) from None
        return {"status": "ok"}

    async def _judged(self, call: Call) -> dict[str, Any]:
        """A judge replica's answer, within the deadline; the call cancelled on its replica if it passes
        or the client goes away; a replica that dies or is unreachable is a 503 to retry."""
        response = self.judges.remote(call)
        try:
            return await asyncio.wait_for(_awaited(response), self.settings.request_timeout_s)
        except TimeoutError:
            response.cancel()
            raise RequestError(
                504,
                f"judging took longer than {self.settings.request_timeout_s:g} s, the most this "
                "service allows, and was stopped",
            ) from None
        except asyncio.CancelledError:  # the client went away: so does the work
            response.cancel()
            raise
        except _unavailable() as exc:
            logger.warning("a judge replica could not answer (%s): 503", type(exc).__name__)
            raise RequestError(
                503,
                "the judge replica stopped while judging this request; retry (a request is safe to repeat)",
                retry_after=1,
            ) from None
        except Exception as exc:
            raise RequestError(500, judge_failed(call, exc)) from None


async def _awaited(response: Any) -> Any:
    return await response


def _unavailable() -> tuple[type[BaseException], ...]:
    """What Ray raises when a judge replica died, is unreachable or refuses more work."""
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    return RayActorError, ActorUnavailableError, BackPressureError, DeploymentUnavailableError


def _without_root(answer: Any, root: str | None) -> Any:
    """The answer with ``root`` (the allowed folder's resolved path, ending in a separator) cut from its
    texts: clients named files relative to it, and where it lies on the server is none of their business."""
    if root is None:
        return answer
    if isinstance(answer, dict):
        return {key: _without_root(value, root) for key, value in answer.items()}
    if isinstance(answer, list):
        return [_without_root(value, root) for value in answer]
    if isinstance(answer, str):
        return answer.replace(root, "")
    return answer


def build_app(
    judge_options: JudgeConfig | dict[str, Any],
    settings: ServiceSettings,
    replicas: int = 1,
    gpus_per_replica: float = 0.0,
    cpus_per_replica: float = 1.0,
) -> Any:
    """The Ray Serve application: the gateway in front of ``replicas`` copies of the judge.

    ``judge_options``: a resolved ``JudgeConfig``, or ``QualityJudge.from_pretrained``'s arguments; each
    replica loads the judge once.
    Ray places the replicas on the cluster's GPUs (``gpus_per_replica``, fractions allowed) or CPUs.
    """
    from ray import serve

    @serve.deployment(
        num_replicas=replicas,
        max_ongoing_requests=JUDGE_MAX_ONGOING,
        graceful_shutdown_timeout_s=settings.drain_s,
        ray_actor_options={"num_gpus": gpus_per_replica, "num_cpus": cpus_per_replica},
    )
    class JudgeReplica:
        def __init__(self) -> None:
            from qinsight_sdk.judging.judge import load_judge

            self.judge = load_judge(judge_options)
            self.judged.set_max_batch_size(settings.max_batch_size)
            self.judged.set_batch_wait_timeout_s(settings.batch_wait_s)

        async def __call__(self, call: Call) -> dict[str, Any]:
            try:
                return await self.judged(call)
            except asyncio.CancelledError:  # the gateway gave up on it: its group stops if nobody else waits
                call.cancelled = True
                raise
            except Exception as exc:
                return {"error": judge_failed(call, exc), STATUS: 500}

        async def ready(self) -> bool:
            return True

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)  # set from settings in __init__
        async def judged(self, calls: list[Call]) -> list[dict[str, Any]]:
            answers = await asyncio.get_running_loop().run_in_executor(None, judge_calls, self.judge, calls)
            answers[0]["batch_size"] = len(calls)  # counted once per batch, by the gateway
            return answers

    gateway = serve.deployment(
        Gateway,
        num_replicas=1,
        max_ongoing_requests=GATEWAY_MAX_ONGOING,
        graceful_shutdown_timeout_s=settings.drain_s,
        ray_actor_options={"num_cpus": 0},
    )
    return gateway.bind(JudgeReplica.bind(), settings)
