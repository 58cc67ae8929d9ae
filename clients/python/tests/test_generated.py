"""The committed generated code matches what the pinned protoc makes of the current schema."""

from __future__ import annotations

import importlib.util
import pathlib

GENERATE = pathlib.Path(__file__).resolve().parents[1] / "generate.py"


def test_generated_code_is_current():
    spec = importlib.util.spec_from_file_location("generate", GENERATE)
    assert spec and spec.loader
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    stale = generate.stale_files()
    assert stale == [], f"stale generated files {stale}: run python clients/python/generate.py"
