"""``approvals demo`` tells the whole story offline, in seconds, as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_the_demo_runs_offline_and_tells_the_story(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLACK_", "OPENAI_", "DATABASE_URL", "APPROVALS_"))}
    result = subprocess.run([sys.executable, "-m", "bot", "demo"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    assert "PR-1* · *$180.00* was approved automatically" in out
    assert "€25,000.00 (= $27,000.00)" in out
    assert "approved, last by @Fiona" in out
    assert "was rejected by @Dana at the Director level" in out
    assert "Use the existing cloud contract" in out
    assert "You are not an approver of the Director step of PR-3." in out
    assert "chained to the one before by SHA-256: intact." in out
    assert "`new_vendor`: No request to Acme Office Furniture GmbH" in out
    assert "Submitted *PR-4*: *$450.00*" in out and "`prompt_injection`" in out
    assert not list(tmp_path.iterdir()), "the demo must leave no database behind"
