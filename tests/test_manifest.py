"""``manifest.yml``: valid against Slack's official schema, and in step with the code.

The schema is Slack's own (``slackapi/manifest-schema``, MIT), as the project's shared
files keep it in ``../shared/schemas/slack-manifest``; a copy lives in
``tests/schemas/slack-manifest`` so the test runs on any clone (a test checks the copy is
still the shared one, where that is next to the repository). Its top file refers to the
per-version files by their GitHub URLs, which a registry rooted in that directory resolves
locally (no network).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import Draft7Validator, ValidationError
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT7

from bot.ids import EVENTS_PATH, SLASH_COMMAND, EventType

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "manifest.yml"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas" / "slack-manifest"
SHARED_DIR = Path(__file__).resolve().parents[2] / "shared" / "schemas" / "slack-manifest"

BOT_SCOPES = {"commands", "chat:write", "im:write", "im:history", "users:read"}


def _registry(root: Path) -> Registry[Any]:
    """Resolve the schema's GitHub URLs to files under ``root``, and nothing else."""

    def retrieve(uri: str) -> Resource[Any]:
        path = urlsplit(uri).path
        for relative in ("schemas/" + path.rsplit("/", 1)[-1], path.rsplit("/", 1)[-1]):
            local = root / relative
            if "/manifest-schema/" in uri and local.is_file():
                return Resource.from_contents(json.loads(local.read_text()),
                                              default_specification=DRAFT7)
        raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs, unseen by mypy

    return Registry(retrieve=retrieve)  # type: ignore[call-arg]  # an attrs alias


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    data = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = json.loads((SCHEMA_DIR / "manifest.schema.json").read_text())
    return Draft7Validator(schema, registry=_registry(SCHEMA_DIR))


def test_the_schema_copy_is_the_shared_one() -> None:
    if not SHARED_DIR.is_dir():
        pytest.skip(f"no shared schema at {SHARED_DIR} to compare the copy with")
    shared = sorted(p.relative_to(SHARED_DIR) for p in SHARED_DIR.rglob("*") if p.is_file())
    ours = sorted(p.relative_to(SCHEMA_DIR) for p in SCHEMA_DIR.rglob("*") if p.is_file())
    assert ours == shared
    assert all((SCHEMA_DIR / p).read_bytes() == (SHARED_DIR / p).read_bytes() for p in shared)


def test_manifest_is_valid_against_slacks_schema(manifest: dict[str, Any],
                                                 validator: Draft7Validator) -> None:
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    assert manifest["_metadata"] == {"major_version": 1, "minor_version": 1}


def test_the_schema_catches_a_broken_manifest(manifest: dict[str, Any],
                                              validator: Draft7Validator) -> None:
    broken = json.loads(json.dumps(manifest))
    broken["features"]["slash_commands"][0]["command"] = "purchase"  # no leading slash
    broken["settings"]["interactivity"]["colour"] = "blue"
    messages = [m for e in validator.iter_errors(broken) for m in _messages(e)]
    assert any("'colour' was unexpected" in m for m in messages)
    assert any("'purchase' does not match" in m for m in messages)


def _messages(error: ValidationError) -> list[str]:
    """The messages of an error and of everything under it (``oneOf`` nests them)."""
    return [error.message, *(m for sub in error.context or () for m in _messages(sub))]


def test_slash_command_matches_the_code(manifest: dict[str, Any]) -> None:
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == SLASH_COMMAND
    assert command["should_escape"] is True  # mentions arrive as IDs: `delegate @someone`
    assert command["usage_hint"]
    assert urlsplit(command["url"]).path == EVENTS_PATH


def test_interactivity_and_events_go_to_the_one_events_path(manifest: dict[str, Any]) -> None:
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    for url in (settings["interactivity"]["request_url"],
                settings["event_subscriptions"]["request_url"]):
        assert url.startswith("https://")
        assert urlsplit(url).path == EVENTS_PATH
    assert set(settings["event_subscriptions"]["bot_events"]) == {e.value for e in EventType}


def test_app_home_and_scopes(manifest: dict[str, Any]) -> None:
    home = manifest["features"]["app_home"]
    assert home["home_tab_enabled"] is True
    assert home["messages_tab_enabled"] is True
    assert manifest["features"]["bot_user"]["display_name"]
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == BOT_SCOPES


def test_every_scope_is_justified_in_a_comment() -> None:
    lines = MANIFEST.read_text(encoding="utf-8").splitlines()
    for scope in BOT_SCOPES:
        (line,) = [ln for ln in lines if ln.strip().startswith(f"- {scope} ")
                   or ln.strip() == f"- {scope}"]
        assert "#" in line, f"scope {scope} has no comment saying why it is needed"
