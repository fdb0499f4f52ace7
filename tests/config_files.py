"""Config directories the config tests write: one file at a time, and the smallest valid provider."""

from __future__ import annotations

from pathlib import Path

PROVIDER = """
[llm.providers.dashscope]
base_url = "https://dashscope.example/v1"
"""


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
