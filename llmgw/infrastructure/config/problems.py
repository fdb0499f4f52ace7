"""Configuration problems: each names the key and the file or env var it came from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with the configuration.

    `key` is dotted (`llm.providers.dashscope.timeout`, `llm.models[dashscope/qwen-turbo].name`);
    `source` is the config file path, `env LLMGW_...`, or `default`.
    """

    key: str
    source: str
    message: str

    def __str__(self) -> str:
        # A file that cannot be parsed has no key to name.
        prefix = f"{self.key}: " if self.key else ""
        return f"{prefix}{self.message} (from {self.source})"


class ConfigError(Exception):
    """The configuration is invalid; `problems` holds every problem found, not just the first."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        super().__init__(self.problems)

    def __str__(self) -> str:
        count = len(self.problems)
        header = f"invalid configuration: {count} problem{'' if count == 1 else 's'}"
        return "\n".join([header, *(f"  {problem}" for problem in self.problems)])
