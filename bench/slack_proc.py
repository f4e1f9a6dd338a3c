"""The benchmarks' Slack stand-in (:class:`bench.slack_lean.LeanSlack`) in a process of its
own.

The benchmarks run it apart from the load generator so neither slows the other's event
loop. Run ``python -m bench.slack_proc [DELAY]``: it prints ``<api base url> <stats url>``
on its first line of stdout, then serves until killed. The first URL is the Web API
(``SLACK_API_URL``); the second, on a port of its own, answers ``GET /bench/cards`` (every
approval card posted so far: request, step, user, channel, approve button value, arrival
time), ``GET /bench/counts`` (calls per method) and ``POST /v1/chat/completions``, a slow
OpenAI-compatible model answering after DELAY seconds (2 by default).
"""

from __future__ import annotations

import asyncio
import sys

from bench.slack_lean import LeanSlack, serve


async def main(llm_delay: float) -> None:
    slack = LeanSlack(llm_delay=llm_delay)
    api = await serve(slack)
    stats = await serve(slack)
    api_port = api.sockets[0].getsockname()[1]
    stats_port = stats.sockets[0].getsockname()[1]
    print(f"http://127.0.0.1:{api_port}/api/", f"http://127.0.0.1:{stats_port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0))
    except KeyboardInterrupt:
        sys.exit(0)
