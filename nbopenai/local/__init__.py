"""An offline, OpenAI-Responses-API-compatible HTTP server with a deterministic demo model.

For the quickstart, tests, benchmarks and Binder: no key, no internet. The real ``openai`` SDK talks
to it unchanged (strict response validation included)::

    from openai import OpenAI
    from nbopenai.local import start

    with start() as server:
        client = OpenAI(api_key="local", base_url=server.base_url)
        print(client.responses.create(model="nbopenai-local", input="My name is Ada.").output_text)
        server.inject("rate_limit", retry_after=0.5)  # the next POST /v1/responses answers 429

Or from a shell: ``python -m nbopenai.local --port 8787`` (prints the base URL, serves until killed).
The demo model's rules are in ``nbopenai.local._demo``; fault kinds in ``nbopenai.local._faults``.

Rate limits, off by default, as the API enforces them (details in ``nbopenai.local._limits``):
``start(rpm=3000, tpm=200_000)``, ``server.configure(rpm=..., tpm=..., rate_limit_window=1.0)`` or
``python -m nbopenai.local --rpm 3000 --tpm 200000``. A minute's allowance is spread over
``rate_limit_window`` seconds; every answer carries the six ``x-ratelimit-*`` headers; a request over
a limit gets the API's 429 with "Please try again in 120ms." in its message and no ``retry-after``.
A request costs one request and its prompt's tokens plus its ``max_output_tokens``.

It answers for the demo model (``nbopenai-local``) and OpenAI's models (those in ``nbopenai/data``, dated
snapshots too; ``configure(models=[...])`` adds names); any other model gets the API's 404
``model_not_found``. It keeps its newest 5,000 responses, 1,000 conversations and 10,000 recorded
requests (``max_responses``, ``max_conversations``, ``max_requests``), so it can run for days.
"""

from ._demo import MARKER
from ._faults import FAULT_KINDS
from ._items import render_context
from ._remote import RemoteServer, SubprocessServer, start_subprocess
from ._responses import generate
from ._server import LocalServer, start
from ._state import DEMO_MODEL, Config, RecordedRequest, State

__all__ = [
    "DEMO_MODEL",
    "FAULT_KINDS",
    "MARKER",
    "Config",
    "LocalServer",
    "RecordedRequest",
    "RemoteServer",
    "State",
    "SubprocessServer",
    "generate",
    "render_context",
    "start",
    "start_subprocess",
]
