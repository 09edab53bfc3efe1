"""What the CLI tests share: run ``kvstore`` in-process, and the shape of a one-line error."""

from __future__ import annotations

import pytest

from kvstore.cli import main


def run(capfd: pytest.CaptureFixture[bytes], *argv: str) -> tuple[int, bytes, str]:
    """``main(argv)``: the exit status, stdout bytes, stderr text."""
    code = main(list(argv))
    out, err = capfd.readouterr()
    return code, out, err.decode()


def assert_one_error_line(err: str) -> None:
    """A user mistake is one ``kvstore...: error: ...`` line on stderr, never a traceback."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "error: " in lines[0] and lines[0].startswith("kvstore"), err
    assert "Traceback" not in err
