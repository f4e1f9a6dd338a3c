"""Every Slack identifier the bot uses, in one home, and the typed values it hides in Slack.

Strings that Slack echoes back to us -- ``action_id``, ``block_id``, ``callback_id``, the
slash command, the events we subscribe to, the request path -- are defined here once; the
card builders, the listeners, the manifest test and the fakes all import them from here.

Two kinds of state travel through Slack and come back untrusted:

* a button's ``value`` (:class:`StepValue`): which step of which request it decides;
* a modal's ``private_metadata`` (:class:`RejectMetadata`, :class:`RequestModalMetadata`):
  where the modal came from, so its submission can update the right card.

Both are compact JSON (short keys keep them far below Slack's 2,000- and 3,000-character
limits) and both are parsed defensively: anything malformed parses to ``None``, never raises.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SLASH_COMMAND = "/purchase"
EVENTS_PATH = "/slack/events"  # slash commands, interactivity and events all arrive here


class ActionId(StrEnum):
    """``action_id`` of the buttons on cards and in the App Home."""

    APPROVE = "approve"
    REJECT = "reject"
    REQUEST_INFO = "request_info"  # an approver asks the requester a question
    ANSWER_INFO = "answer_info"  # the requester answers it (button on the question DM)
    OPEN_REQUEST_MODAL = "open_request_modal"  # "New request" in the App Home


class CallbackId(StrEnum):
    """``callback_id`` of the modals."""

    PURCHASE_REQUEST = "purchase_request"
    REJECT_REASON = "reject_reason"
    REQUEST_INFO = "request_info"  # the approver's question
    INFO_ANSWER = "info_answer"  # the requester's answer


class InputId(StrEnum):
    """Modal inputs: each is both the ``block_id`` and the ``action_id`` of its input."""

    AMOUNT = "amount"
    CURRENCY = "currency"
    VENDOR = "vendor"
    PURPOSE = "purpose"
    COST_CENTER = "cost_center"
    REASON = "reason"
    QUESTION = "question"
    ANSWER = "answer"



class EventType(StrEnum):
    """Events API event types the app subscribes to (see ``manifest.yml``)."""

    APP_HOME_OPENED = "app_home_opened"
    APP_UNINSTALLED = "app_uninstalled"
    TOKENS_REVOKED = "tokens_revoked"


# Longest ``value``/``private_metadata`` we even try to parse: ours are far shorter, and a
# bound keeps a hostile payload from costing anything.
_MAX_RAW = 3000
_MAX_ID = 2**63 - 1  # a database BIGINT


class _Compact(BaseModel):
    """A value encoded as compact JSON with short keys; parsing never raises."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True,
                              populate_by_name=True)

    def encode(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)

    @classmethod
    def parse(cls, raw: object) -> Self | None:
        """The value encoded in ``raw``, or ``None`` when ``raw`` is not one."""
        if not isinstance(raw, str | bytes) or not raw or len(raw) > _MAX_RAW:
            return None
        try:
            return cls.model_validate_json(raw)
        except (ValidationError, ValueError):
            return None


class StepValue(_Compact):
    """A decision button's ``value``: request id and step index, e.g. ``{"r":42,"s":1}``."""

    request_id: int = Field(alias="r", ge=1, le=_MAX_ID)
    step: int = Field(alias="s", ge=0, lt=1000)


class RejectMetadata(_Compact):
    """The reject modal's ``private_metadata``: the step, and the card it was opened from.

    ``channel``/``ts`` locate the clicked card (to update it at once) and ``response_url`` is
    the interaction's, for an ephemeral answer; each is ``None`` when Slack did not send it
    (a click in the App Home has no message).
    """

    request_id: int = Field(alias="r", ge=1, le=_MAX_ID)
    step: int = Field(alias="s", ge=0, lt=1000)
    channel: str | None = Field(default=None, alias="c", max_length=255)
    ts: str | None = Field(default=None, alias="t", max_length=64)
    response_url: str | None = Field(default=None, alias="u", max_length=2000)

    @property
    def step_value(self) -> StepValue:
        return StepValue(request_id=self.request_id, step=self.step)


class RequestModalMetadata(_Compact):
    """The ``/purchase`` modal's ``private_metadata``: where to answer the requester.

    A ``view_submission`` carries no ``response_url`` of its own, so the slash command's
    channel and ``response_url`` ride along when the modal was opened from one.
    """

    channel: str | None = Field(default=None, alias="c", max_length=255)
    response_url: str | None = Field(default=None, alias="u", max_length=2000)


__all__ = [
    "EVENTS_PATH",
    "SLASH_COMMAND",
    "ActionId",
    "CallbackId",
    "EventType",
    "InputId",
    "RejectMetadata",
    "RequestModalMetadata",
    "StepValue",
]
