"""Kind `openrouter`: OpenRouter's API.

Attribution headers (`referer`, `title` in config) are set by the config loader;
`: OPENROUTER PROCESSING` comments are skipped by the SSE decoder; a mid-stream error chunk
(top-level `error`, finish_reason "error") becomes a domain error; `usage.cost` is read by
`Usage.from_openai`.
"""

from __future__ import annotations

from llmgw.infrastructure.providers.openai_kind import OpenAIQuirks


class OpenRouterQuirks(OpenAIQuirks):
    """OpenRouter speaks OpenAI's wire; its error chunk is caught by the base `stream_error`."""
