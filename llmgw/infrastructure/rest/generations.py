"""Generation lookups: ours (`/v1/generation/{id}`) and OpenRouter's (`/api/v1/generation?id=`)."""

from __future__ import annotations

import enum
import operator
from dataclasses import asdict, fields
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from llmgw.domain.generation import GenerationRecord
from llmgw.infrastructure.rest.json_body import json_response
from llmgw.infrastructure.rest.keys import CALLER, GATEWAY

# Every record field, by its name and in record order, so a new record field needs no edit here.
_FIELDS = tuple(field.name for field in fields(GenerationRecord))
_VALUES = operator.attrgetter(*_FIELDS)
# Text that may be missing (a field that defaults to "") reads null when empty. `upstream_id` has always
# read "" here, as on gRPC, and clients compare the two.
_NULL_WHEN_EMPTY = frozenset(
    field.name for field in fields(GenerationRecord) if field.default == "" and field.name != "upstream_id"
)


def record_json(record: GenerationRecord) -> dict[str, Any]:
    """The record's fields as JSON: enums as their values, `created_at` in ISO 8601 (UTC), `limits` the
    names of the limit scopes the request was admitted under (`[]`: none)."""
    out: dict[str, Any] = {}
    for name, value in zip(_FIELDS, _VALUES(record), strict=True):
        if isinstance(value, enum.Enum):
            out[name] = value.value
        elif name in _NULL_WHEN_EMPTY:
            out[name] = value or None
        else:
            out[name] = value
    out["created_at"] = _iso(record.created_at)
    out["attempts"] = [asdict(attempt) for attempt in record.attempts]
    out["limits"] = list(record.limits)
    return out


def openrouter_json(record: GenerationRecord) -> dict[str, Any]:
    """OpenRouter's shape, its field names (its list, not ours: a new record field shows in `record_json`);
    `latency` is time to first token and `generation_time` the rest, in ms."""
    ttft = record.time_to_first_token_ms
    latency = record.latency_ms
    return {
        "id": record.id,
        "upstream_id": record.upstream_id or None,
        "total_cost": record.cost_usd,
        "created_at": _iso(record.created_at),
        "model": record.model,
        "streamed": record.streamed,
        "cancelled": record.status.value == "cancelled",
        "provider_name": record.provider,
        "latency": round(ttft if ttft is not None else latency or 0.0),
        "generation_time": round((latency or 0.0) - (ttft or 0.0)) if ttft is not None else None,
        "finish_reason": record.finish_reason or None,
        "native_finish_reason": record.finish_reason or None,
        "tokens_prompt": record.prompt_tokens,
        "tokens_completion": record.completion_tokens,
        "native_tokens_prompt": record.prompt_tokens,
        "native_tokens_completion": record.completion_tokens,
        "native_tokens_reasoning": record.reasoning_tokens,
        "native_tokens_cached": record.cached_tokens,
        "usage": record.cost_usd,
        "external_user": record.user or None,
        "request_id": record.request_id,
        "status": record.status.value,
        "error_code": record.error_code or None,
        "error_message": record.error_message or None,
    }


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


async def get(request: web.Request) -> web.Response:
    record = await request.app[GATEWAY].get_generation(request.match_info["id"], request[CALLER])
    return json_response({"generation": record_json(record)})


async def get_openrouter(request: web.Request) -> web.Response:
    record = await request.app[GATEWAY].get_generation(request.query.get("id", ""), request[CALLER])
    return json_response({"data": openrouter_json(record)})
