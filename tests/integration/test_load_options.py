"""rtgate-load's options: one table (loadtest/options.c) behind the parser, --help and the
option tables of docs/loadtest.md. These tests keep the docs' copy from going stale and check
that every flag the docs and --help name is one the parser takes.
"""
import os
import pathlib
import re
import subprocess

import pytest

LOAD = os.environ.get("RTGATE_LOADTEST")
DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "loadtest.md"

pytestmark = pytest.mark.skipif(not LOAD or not os.access(LOAD, os.X_OK),
                                reason="RTGATE_LOADTEST (the rtgate-load binary) not given")


def run(*args):
    return subprocess.run([LOAD, *args], capture_output=True, text=True, timeout=30)


def test_docs_option_tables_are_the_tools_own():
    p = run("--help-markdown")
    assert p.returncode == 0, p.stderr
    doc = DOC.read_text()
    m = re.search(r"<!-- options:begin[^>]*-->\n(.*?)\n<!-- options:end -->", doc, re.S)
    assert m, "docs/loadtest.md lost its options markers"
    assert m.group(1).strip() == p.stdout.strip(), (
        "docs/loadtest.md's option tables differ from `rtgate-load --help-markdown`: "
        "paste its output between the markers")


def test_every_documented_flag_is_parsed():
    flags = set(re.findall(r"^\| `(-[^` ,]+)", run("--help-markdown").stdout, re.M))
    flags |= set(re.findall(r", (--[a-z0-9-]+)", run("--help-markdown").stdout))
    assert len(flags) > 40
    help_text = run("--help").stdout
    for flag in sorted(flags):
        assert flag in help_text
        if flag in ("--help", "-h", "--help-markdown", "--self-test"):
            continue
        # An unknown flag is refused as unknown; a known one fails later (here: no --url, or a
        # bad value), never as unknown.
        p = run(flag, "x")
        assert "unknown option" not in p.stderr, (flag, p.stderr)
    p = run("--no-such-flag", "1")
    assert p.returncode == 2 and "unknown option" in p.stderr
