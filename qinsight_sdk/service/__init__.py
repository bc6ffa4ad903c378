"""The judge as an HTTP service on Ray Serve: one loaded judge per replica, many clients batched together.

``POST /score``, ``/degradation``, ``/compare``, ``/rank``, ``/reward`` take images as bytes: a JSON body
``{"images": [{"base64": "..."}], "mode": "fast"}`` (compare: ``image_a``, ``image_b``, optional
``reference``), or ``multipart/form-data`` with file fields of the same names and options as fields.
``POST /compute`` answers Flow-Factory's remote reward request (``{"image": [base64, ...]}`` or ``{"video":
[[base64 frame, ...], ...]}``, JSON only) with ``{"rewards": [...], "scores": [...], "errors": [...]}``: an
input that cannot be judged is reward 0.0 and its error, never a failed request.
``GET /health`` answers 200 when a judge replica answers, without the token (for load balancers);
``GET /stats`` counts the batches of each size the judge replicas formed.

Requests that arrive together are judged as one batch (Ray Serve's ``@serve.batch``: up to a maximum
size, waiting at most a set time), so many clients cost little more than one. A bad image is an error in
its own result, as everywhere in qinsight; a bad request is a JSON error naming what is wrong: 401 without
the bearer token (when one is set), 413 past the size limits, 403 for a path the server may not read, 408
for a body too slow to arrive, 400 for anything else malformed, 404 for an unknown endpoint; 503 with
``Retry-After`` when the service is full, stopping, or lost the replica judging the request; 504 past the
request deadline. The server reads no file a client names unless started with ``allow_paths``, and then
only inside that folder, links resolved.

The parts: :mod:`.settings` (every limit), :mod:`.requests` (reading and checking a request),
:mod:`.admission` (the bytes held at once), :mod:`.judging` (a batch of calls judged),
:mod:`.app` (the gateway and the judge replicas on Ray Serve).
"""

from .app import Gateway, build_app
from .judging import judge_calls
from .requests import TASKS, check_size, check_token, read_call
from .settings import TOKEN_ENV_VAR, Call, RequestError, ServiceSettings, check_token_value

__all__ = [
    "TASKS",
    "TOKEN_ENV_VAR",
    "Call",
    "Gateway",
    "RequestError",
    "ServiceSettings",
    "build_app",
    "check_size",
    "check_token",
    "check_token_value",
    "judge_calls",
    "read_call",
]
