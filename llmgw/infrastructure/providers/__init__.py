"""Upstream providers: one OpenAI-compatible HTTP client, and each kind's quirks as pure transformations."""
