"""``python -m kvstore.demo`` (``make demo``) runs the whole tour against the session engine."""

from __future__ import annotations

import os
import subprocess
import sys

from kvstore.engine import free_port


def test_demo_tours_the_store(dynamodb_endpoint: str) -> None:
    env = {**os.environ, "AWS_DYNAMODB_ENDPOINT": dynamodb_endpoint, "AWS_DYNAMODB_TABLE": "kvtest-not-the-demos"}
    proc = subprocess.run([sys.executable, "-m", "kvstore.demo"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"using the engine at {dynamodb_endpoint}" in out
    assert "table 'kvstore-demo-" in out  # its own table, whatever AWS_DYNAMODB_TABLE says
    # The tree, drawn.
    assert "├── apps/" in out and "│   └── web/" in out and "│           └── db" in out and "└── users/" in out
    # A read, and a delete that makes the emptied folder vanish.
    assert "get('apps/web/config') -> b'{\"port\": 8080}'" in out
    assert "before: ['config', 'secrets/']" in out and "after:  ['config']" in out
    # The lock: granted with a fencing token, value() while held, released.
    assert "fencing token 1" in out
    assert "value() -> (True, 'demo-node-1')" in out
    assert "value() -> (False, '')" in out
    assert "dropped table" in out
    assert proc.stderr == ""


def test_demo_reports_an_unreachable_engine_in_one_line() -> None:
    env = {**os.environ, "AWS_DYNAMODB_ENDPOINT": f"http://127.0.0.1:{free_port()}", "AWS_DYNAMODB_MAX_RETRIES": "0"}
    proc = subprocess.run([sys.executable, "-m", "kvstore.demo"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("kvstore demo: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
