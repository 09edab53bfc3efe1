"""Every code block of README.md runs as written, so the examples stay true.

The ```python blocks run as scripts; the command-line block runs in bash with the package's
``kvstore`` command on PATH. The setup block (``make demo`` / ``make test``) is what CI itself runs,
so it is not run again here. The environment the tests set up (a session engine in
AWS_DYNAMODB_ENDPOINT) is removed: each block must bring what it needs, as on a fresh machine.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(README.read_text()) if lang == language]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_DYNAMODB_", "AWS_ACCESS", "AWS_SECRET"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_block_runs_as_written(index: int, tmp_path: Path) -> None:
    code = blocks("python")[index]
    proc = subprocess.run([sys.executable, "-c", code], env=clean_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"README python block {index} failed:\n{code}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.strip(), "the example prints what it shows"


def test_command_line_block_runs_as_written(tmp_path: Path) -> None:
    shell = [b for b in blocks("sh") if not b.lstrip().startswith("make ")]
    assert len(shell) == 1, "one command-line block besides the make commands"
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 8000)) == 0:
            pytest.skip("port 8000, which the README's block uses, is taken on this machine")
    proc = subprocess.run(["bash", "-c", shell[0]], env=clean_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, f"{out}\n{proc.stderr}"
    assert '{"port": 8080}' in out  # get
    assert "config" in out and "apps/" in out  # tree
    assert "fencing token 1" in out and "resigned" in out  # the lock: led, then resigned on Ctrl-C
    assert "clean" in out  # fsck
