"""Configuration: read once from the environment (or ``.env``), never at import time."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from flows.errors import ApprovalsError

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_AI_MODEL = "gpt-4o-mini"


class ConfigError(ApprovalsError):
    """Configuration that stops start-up (exit code 2)."""


class Settings(BaseSettings):
    """Every setting of the contract, by its environment variable name."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore", case_sensitive=False)

    slack_bot_token: str | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_signing_secret: str | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_app_token: str | None = Field(default=None, alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field(default=DEFAULT_SLACK_API_URL, alias="SLACK_API_URL")
    database_url: str = Field(default="sqlite+aiosqlite:///./approvals.db",
                              alias="DATABASE_URL")
    policy_path: Path = Field(default=Path("./policy.yml"), alias="APPROVALS_POLICY")
    openai_api_key: str | None = Field(default=None, alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL")
    ai_model: str = Field(default=DEFAULT_AI_MODEL, alias="APPROVALS_AI_MODEL")
    # HTTP mode: "split" runs the background work in two child processes, so
    # acknowledgements never wait behind it and each half has a core: one creates requests
    # and fires timers, the other decides clicks and delivers to Slack; "process" runs it
    # all in one child (less memory, about 60 % of the throughput under a burst); "inline"
    # keeps everything in the server's process.
    worker: Literal["process", "split", "inline"] = Field(default="split",
                                                          alias="APPROVALS_WORKER")
    # An App Home refresh waits this long, so a busy person's Home is published once for
    # all the changes in that time rather than once per change.
    home_refresh_seconds: float = Field(default=2.0, ge=0, le=60,
                                        alias="APPROVALS_HOME_REFRESH_SECONDS")
    # App Home refreshes published at most, a minute: Slack takes about 100 views.publish
    # a minute per workspace. A Home someone opens is published at once regardless.
    home_publishes_per_minute: float = Field(default=90.0, gt=0, le=6000,
                                             alias="APPROVALS_HOME_PUBLISHES_PER_MINUTE")
    # Submissions acknowledged but not yet created beyond which new acknowledgements are
    # held back (at most 1.5 s): a burst is absorbed with cards about a second behind.
    intake_backlog: int = Field(default=100, ge=0, alias="APPROVALS_INTAKE_BACKLOG")
    # How long a claimed outbox row stays with the worker that claimed it: after a crash,
    # its messages are retried once this has passed. Longer than one Slack call may take.
    outbox_lease_seconds: float = Field(default=30.0, gt=0, le=3600,
                                        alias="APPROVALS_OUTBOX_LEASE_SECONDS")

    @field_validator("slack_api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value if value.endswith("/") else value + "/"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(f"is not a database URL: {value!r}") from None
        if url.drivername not in {"sqlite+aiosqlite", "postgresql+asyncpg"}:
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://, "
                             f"got {url.drivername}://")
        return value

    def require_slack(self, *, socket: bool) -> None:
        """Stop with the missing variable's name when Slack cannot be reached."""
        if not self.slack_bot_token:
            raise ConfigError("SLACK_BOT_TOKEN is not set: give the bot token (xoxb-...)")
        if socket and not self.slack_app_token:
            raise ConfigError("SLACK_APP_TOKEN is not set: Socket Mode needs the app-level "
                              "token (xapp-...)")
        if not socket and not self.slack_signing_secret:
            raise ConfigError("SLACK_SIGNING_SECRET is not set: HTTP mode verifies every "
                              "request from Slack with it")


def load_settings(**overrides: object) -> Settings:
    """Read the settings; a bad value becomes one :class:`ConfigError` line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "configuration"
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{name.upper()}: {msg}") from None
