"""The CLI progress bar: plain lines off a terminal, one redrawn line on a terminal."""

from __future__ import annotations

import io

from broker.progress import Progress


def test_off_a_terminal_it_writes_a_line_per_tenth_and_the_end():
    out = io.StringIO()
    with Progress(20, "resend", stream=out) as bar:
        for _ in range(20):
            bar.advance()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("resend [>") and " 0/20 " in lines[0]
    assert len(lines) == 11  # the start, then each tenth
    assert lines[-1].startswith("resend [" + "=" * 30 + "]")
    assert "20/20 100%" in lines[-1] and "done in" in lines[-1]


def test_stopping_early_reports_where_it_stopped():
    out = io.StringIO()
    with Progress(100, "emit", stream=out) as bar:
        bar.advance(37)
    assert "37/100  37%" in out.getvalue().splitlines()[-1]


def test_on_a_terminal_it_redraws_one_line():
    out = io.StringIO()
    with Progress(3, stream=out, interactive=True) as bar:
        for _ in range(3):
            bar.advance()
    text = out.getvalue()
    assert text.startswith("\r[") and text.endswith("\n")
    assert text.count("\n") == 1
    assert "3/3 100%" in text.rsplit("\r", 1)[-1]
