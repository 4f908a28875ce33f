"""The watch loop ends when the server shuts down, even when a change is signalled at the same
moment (on Python 3.11 ``asyncio.wait_for`` then swallows the cancellation: a hung shutdown)."""
from __future__ import annotations

import asyncio

from jupyter_osire_llm.server.settings import Timing
from service_factory import make_context, one_model_catalog


def test_stop_while_a_change_is_signalled_ends_the_loop(tmp_path):
    async def scenario() -> None:
        for _ in range(20):
            context = make_context(tmp_path, one_model_catalog("true"),
                                   timing=Timing(monitor_tick=5.0))
            service, monitor = context.service, context.monitor
            monitor.start()
            await asyncio.sleep(0.05)          # the loop waits for a tick or a change
            service.changed.set()              # a stop() of a deployment, say...
            await asyncio.wait_for(monitor.stop(), 10)   # ...as the server shuts down
            service.changed.clear()

    asyncio.run(scenario())
