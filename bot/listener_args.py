"""Listener arguments, built only when a listener names them.

Before Bolt calls a listener, and each of its matchers before that, it builds every
argument it could pass -- about thirty: ``say``, ``respond``, ``complete``, ``fail``, the
payload in eight shapes -- and hands over the few the function names. For a ``/purchase``
that is two rounds (the command's matcher, then the listener), about an eighth of the CPU
the server spends on the whole acknowledgement.

:func:`pass_only_named` wraps each listener of an app in :class:`NamedArguments`, which
builds just the arguments its functions name, from the same sources Bolt uses; which
listener runs, in what order, with which middleware, and how its answer and errors are
handled stay Bolt's. A listener naming an argument not in :data:`SOURCES` is left to Bolt.
``tests/test_slack_app.py`` checks the arguments are those Bolt would pass.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltRequest
from slack_bolt.listener.async_listener import AsyncCustomListener, AsyncListener
from slack_bolt.request.payload_utils import to_action, to_command, to_event, to_view
from slack_bolt.response import BoltResponse

# Where each argument comes from, as in slack_bolt.kwargs_injection.build_async_required_kwargs.
SOURCES: dict[str, Callable[[AsyncBoltRequest], Any]] = {
    "ack": lambda req: req.context.ack,
    "body": lambda req: req.body,
    "command": lambda req: to_command(req.body),
    "action": lambda req: to_action(req.body),
    "view": lambda req: to_view(req.body),
    "event": lambda req: to_event(req.body),
    "client": lambda req: req.context.client,
    "respond": lambda req: req.context.respond,
    "context": lambda req: req.context,
}

Getters = Sequence[tuple[str, Callable[[AsyncBoltRequest], Any]]]


def _getters(names: Sequence[str]) -> Getters | None:
    """How to build the arguments ``names``; ``None`` if one has no known source."""
    if any(name not in SOURCES for name in names):
        return None
    return [(name, SOURCES[name]) for name in names]


class NamedArguments(AsyncListener):
    """A Bolt listener, its matchers and function called with only what they name."""

    def __init__(self, listener: AsyncCustomListener,
                 matchers: Sequence[tuple[Callable[..., Awaitable[bool]], Getters]],
                 getters: Getters) -> None:
        self.listener = listener
        # what Bolt's listener runner reads
        # Bolt's own listener declares it may answer None (and ignores its base's type)
        self.ack_function = listener.ack_function  # type: ignore[assignment]
        self.lazy_functions = listener.lazy_functions
        self.matchers = listener.matchers
        self.middleware = listener.middleware
        self.auto_acknowledgement = listener.auto_acknowledgement
        self.ack_timeout = listener.ack_timeout
        self._matchers = matchers
        self._getters = getters

    @classmethod
    def wrap(cls, listener: AsyncListener) -> AsyncListener:
        """``listener`` wrapped, or as it is if it is of another kind or names an argument
        (or has a matcher naming one) without a known source."""
        if type(listener) is not AsyncCustomListener or not listener.matchers:
            return listener
        getters = _getters(listener.arg_names)
        matchers: list[tuple[Callable[..., Awaitable[bool]], Getters]] = []
        for matcher in listener.matchers:
            func = getattr(matcher, "func", None)
            names = getattr(matcher, "arg_names", None)
            matcher_getters = None if func is None or names is None else _getters(names)
            if func is None or matcher_getters is None:
                return listener
            matchers.append((func, matcher_getters))
        if getters is None:
            return listener
        return cls(listener, matchers, getters)

    def arguments(self, request: AsyncBoltRequest) -> dict[str, Any]:
        """What the listener's function is called with for ``request``."""
        return {name: get(request) for name, get in self._getters}

    async def async_matches(self, *, req: AsyncBoltRequest, resp: BoltResponse) -> bool:
        for func, getters in self._matchers:
            if not await func(**{name: get(req) for name, get in getters}):
                return False
        return True

    async def run_ack_function(self, *, request: AsyncBoltRequest,
                               response: BoltResponse) -> BoltResponse | None:
        result: BoltResponse | None = await self.ack_function(**self.arguments(request))
        return result


def pass_only_named(app: AsyncApp) -> None:
    """Wrap every listener ``app`` has so far in :class:`NamedArguments` where it can be."""
    listeners: list[AsyncListener] = app._async_listeners  # Bolt has no public way
    listeners[:] = [NamedArguments.wrap(listener) for listener in listeners]
