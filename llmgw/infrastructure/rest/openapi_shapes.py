"""The REST front's JSON, hand-written as JSON Schema where it is not a proto message's: OpenAI's chat and
embeddings shapes, the generation records, the admin objects, the error, and the health answers. The
generator (`openapi_document`) adds the routes and the proto-derived schemas (named `llmgateway.…`)."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

#: Proto messages whose JSON is the REST front's JSON as it is (optional fields read null when unset).
PROTO_SCHEMAS = (
    "llmgateway.v1.Model",
    "llmgateway.v1.ListModelsResponse",
    "llmgateway.admin.v1.Limits",
    "llmgateway.admin.v1.RateUsage",
    "llmgateway.admin.v1.BudgetUsage",
)


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _null(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


_STR, _INT, _NUM, _BOOL = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
_NULL_STR, _NULL_NUM = {"type": ["string", "null"]}, {"type": ["number", "null"]}
_STR_MAP = {"type": "object", "additionalProperties": _STR}


def _object(properties: Schema, *, required: tuple[str, ...] = (), extra: bool = False) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    schema["additionalProperties"] = extra
    return schema


def _listing(item: str) -> Schema:
    return _object(
        {
            "object": {"const": "list"},
            "data": {"type": "array", "items": ref(item)},
            "has_more": _BOOL,
            "next_cursor": {**_NULL_STR, "description": "The next page's `after` (audit: `before`)."},
        },
        required=("object", "data", "has_more", "next_cursor"),
    )


_CHAT_REQUEST = _object(
    {
        "model": {**_STR, "description": "A gateway model id (GET /v1/models)."},
        "messages": {"type": "array", "items": ref("ChatMessage")},
        "stream": {**_BOOL, "description": "true: the answer is an SSE stream of ChatCompletionChunk."},
        "stream_options": _object({"include_usage": _BOOL}, extra=True),
        "temperature": _NUM,
        "top_p": _NUM,
        "n": _INT,
        "stop": {"anyOf": [_STR, {"type": "array", "items": _STR}]},
        "max_tokens": _INT,
        "max_completion_tokens": _INT,
        "presence_penalty": _NUM,
        "frequency_penalty": _NUM,
        "logit_bias": {"type": "object", "additionalProperties": _NUM},
        "logprobs": _BOOL,
        "top_logprobs": _INT,
        "seed": _INT,
        "user": _STR,
        "tools": {"type": "array", "items": {"type": "object"}},
        "tool_choice": {"anyOf": [_STR, {"type": "object"}]},
        "parallel_tool_calls": _BOOL,
        "response_format": {"type": "object"},
        "reasoning_effort": _STR,
        "metadata": _STR_MAP,
    },
    required=("model", "messages"),
    extra=True,
)
_CHAT_REQUEST["description"] = "OpenAI's chat request; fields not listed reach the upstream as they are."

_TOOL_CALL = _object(
    {
        "index": _INT,
        "id": _STR,
        "type": _STR,
        "function": _object({"name": _STR, "arguments": _STR}, extra=True),
    },
    extra=True,
)

_MESSAGE = _object(
    {
        "role": {**_STR, "description": "system | developer | user | assistant | tool"},
        "content": {"anyOf": [_STR, {"type": "array", "items": {"type": "object"}}, {"type": "null"}]},
        "name": _STR,
        "tool_calls": {"type": "array", "items": ref("ToolCall")},
        "tool_call_id": _STR,
        "reasoning_content": _NULL_STR,
        "refusal": _NULL_STR,
    },
    extra=True,
)

_USAGE = _object(
    {
        "prompt_tokens": _INT,
        "completion_tokens": _INT,
        "total_tokens": _INT,
        "prompt_tokens_details": _object({"cached_tokens": _INT, "audio_tokens": _INT}, extra=True),
        "completion_tokens_details": _object({"reasoning_tokens": _INT, "audio_tokens": _INT}, extra=True),
        "cost": {**_NUM, "description": "USD, when the upstream reports it."},
    },
    extra=True,
)


def _completion(kind: str, part: str) -> Schema:
    choice = _object(
        {"index": _INT, part: ref("ChatMessage"), "finish_reason": _NULL_STR, "logprobs": {}}, extra=True
    )
    return _object(
        {
            "id": {**_STR, "description": "The gateway's generation id (gen-…)."},
            "object": {"const": kind},
            "created": _INT,
            "model": _STR,
            "choices": {"type": "array", "items": choice},
            "usage": _null(ref("ChatUsage")),
            "system_fingerprint": _NULL_STR,
            "service_tier": _NULL_STR,
        },
        required=("id", "object", "created", "model", "choices"),
        extra=True,
    )


_EMBEDDINGS_REQUEST = _object(
    {
        "model": _STR,
        "input": {
            "anyOf": [
                _STR,
                {"type": "array", "items": _STR},
                {"type": "array", "items": _INT},
                {"type": "array", "items": {"type": "array", "items": _INT}},
            ]
        },
        "dimensions": _INT,
        "encoding_format": {"enum": ["float", "base64"]},
        "user": _STR,
    },
    required=("model", "input"),
    extra=True,
)

_EMBEDDINGS = _object(
    {
        "id": _STR,
        "object": {"const": "list"},
        "model": _STR,
        "data": {
            "type": "array",
            "items": _object(
                {
                    "object": {"const": "embedding"},
                    "index": _INT,
                    "embedding": {"anyOf": [{"type": "array", "items": _NUM}, _STR]},
                },
                extra=True,
            ),
        },
        "usage": _object({"prompt_tokens": _INT, "total_tokens": _INT, "cost": _NUM}, extra=True),
    },
    required=("id", "object", "model", "data"),
    extra=True,
)

_ATTEMPT = _object(
    {
        "provider": _STR,
        "upstream_model": _STR,
        "model": _STR,
        "outcome": {"enum": ["completed", "error", "cancelled"]},
        "error_code": _STR,
        "duration_ms": _NUM,
    }
)

_GENERATION = _object(
    {
        "id": _STR,
        "request_id": _STR,
        "kind": {"enum": ["chat", "embeddings"]},
        "model": _STR,
        "provider": _STR,
        "upstream_model": _STR,
        "created_at": {**_STR, "format": "date-time"},
        "streamed": _BOOL,
        "status": {"enum": ["completed", "error", "cancelled"]},
        "upstream_id": _STR,
        "finish_reason": _NULL_STR,
        "prompt_tokens": _INT,
        "completion_tokens": _INT,
        "total_tokens": _INT,
        "cached_tokens": _INT,
        "reasoning_tokens": _INT,
        "cost_usd": _NULL_NUM,
        "latency_ms": _NULL_NUM,
        "time_to_first_token_ms": _NULL_NUM,
        "error_code": _NULL_STR,
        "error_message": _NULL_STR,
        "user": _NULL_STR,
        "attempts": {"type": "array", "items": ref("GenerationAttempt")},
        "key_id": _NULL_STR,
        "team_id": _NULL_STR,
        "limits": {"type": "array", "items": _STR},
        "trace_id": {**_NULL_STR, "description": "The W3C trace id of the request's server span."},
    },
    required=("id", "request_id", "kind", "model", "status", "created_at"),
    extra=True,
)

_OPENROUTER_GENERATION = _object(
    {
        "id": _STR,
        "upstream_id": _NULL_STR,
        "total_cost": _NULL_NUM,
        "created_at": {**_STR, "format": "date-time"},
        "model": _STR,
        "streamed": _BOOL,
        "cancelled": _BOOL,
        "provider_name": _STR,
        "latency": {**_INT, "description": "Time to first token, ms."},
        "generation_time": {"type": ["integer", "null"], "description": "After the first token, ms."},
        "finish_reason": _NULL_STR,
        "native_finish_reason": _NULL_STR,
        "tokens_prompt": _INT,
        "tokens_completion": _INT,
        "native_tokens_prompt": _INT,
        "native_tokens_completion": _INT,
        "native_tokens_reasoning": _INT,
        "native_tokens_cached": _INT,
        "usage": _NULL_NUM,
        "external_user": _NULL_STR,
        "request_id": _STR,
        "status": {"enum": ["completed", "error", "cancelled"]},
        "error_code": _NULL_STR,
        "error_message": _NULL_STR,
    },
    required=("id", "created_at", "model", "status"),
)

_KEY = {
    "allOf": [
        ref("llmgateway.admin.v1.Limits"),
        _object(
            {
                "id": {**_STR, "description": "The key's public id."},
                "object": {"const": "api_key"},
                "name": _STR,
                "team_id": _NULL_STR,
                "scopes": {"type": "array", "items": {"enum": ["inference", "usage:read", "admin"]}},
                "models": {"type": "array", "items": _STR},
                "expires_at": _NULL_NUM,
                "disabled": _BOOL,
                "metadata": _STR_MAP,
                "created_at": _NUM,
                "last_used_at": _NULL_NUM,
                "previous_secret_valid_until": _NULL_NUM,
            },
            required=("id", "object", "name", "scopes", "disabled", "created_at"),
            extra=True,
        ),
    ],
    "description": "A key (never its secret); its limits are fields of the object itself.",
}

_TEAM = {
    "allOf": [
        ref("llmgateway.admin.v1.Limits"),
        _object(
            {"id": _STR, "object": {"const": "team"}, "name": _STR, "metadata": _STR_MAP, "created_at": _NUM},
            required=("id", "object", "name", "created_at"),
            extra=True,
        ),
    ]
}

_USAGE_NOW = _object(
    {
        "object": {"const": "usage"},
        "key_id": {**_STR, "description": "GET /admin/v1/keys/{id}/usage only."},
        "team_id": {**_STR, "description": "GET /admin/v1/teams/{id}/usage only."},
        "at": _NUM,
        "limits": ref("llmgateway.admin.v1.Limits"),
        "requests": _null(ref("llmgateway.admin.v1.RateUsage")),
        "tokens": _null(ref("llmgateway.admin.v1.RateUsage")),
        "in_flight": {"type": ["integer", "null"]},
        "budget": _null(ref("llmgateway.admin.v1.BudgetUsage")),
    },
    required=("object", "at", "limits"),
)

_AUDIT = _object(
    {
        "id": _STR,
        "object": {"const": "audit_entry"},
        "at": _NUM,
        "actor": _STR,
        "action": _STR,
        "target": _NULL_STR,
        "details": {"type": "object"},
    },
    required=("id", "object", "at", "actor", "action"),
)

_READINESS = _object(
    {
        "status": {"enum": ["ready", "not_ready", "draining"]},
        "providers": {"type": "array", "items": _object({"name": _STR, "credentials": _BOOL})},
        "store": {"type": "object"},
        "limits": {"type": ["object", "null"]},
        "circuits": {"type": "array", "items": {"type": "object"}},
    },
    required=("status",),
)
_READINESS["description"] = "`status` for anyone; the other fields only for an admin key (or auth off)."


_COUNTERS: Schema = {
    **dict.fromkeys(("requests", "errors", "cancelled", "prompt_tokens", "completion_tokens"), _INT),
    **dict.fromkeys(("cached_tokens", "reasoning_tokens", "total_tokens"), _INT),
    "cost_usd": {**_NUM, "description": "cost_micros in US dollars."},
    "cost_micros": {
        **_INT,
        "description": "Each request's cost rounded half up to the micro-dollar, summed.",
    },
}
_DIMENSIONS = ["day", "hour", "key", "team", "model", "provider"]
_USAGE_REPORT = _object(
    {
        "object": {"const": "usage_report"},
        "from": {**_STR, "format": "date"},
        "to": {**_STR, "format": "date"},
        "group_by": {"type": "array", "items": {"enum": _DIMENSIONS}},
        "data": {"type": "array", "items": ref("UsageReportRow")},
        "totals": ref("UsageTotals"),
    },
    required=("object", "from", "to", "group_by", "data", "totals"),
)
_USAGE_ROW = _object(
    {
        "day": {**_STR, "format": "date", "description": "With group_by day (UTC)."},
        "hour": {**_STR, "description": "With group_by hour: YYYY-MM-DDTHH:00:00Z."},
        "key_id": {**_STR, "description": "With group_by key."},
        "team_id": {**_STR, "description": 'With group_by team ("": no team).'},
        "model": {**_STR, "description": "With group_by model."},
        "provider": {**_STR, "description": "With group_by provider."},
        **_COUNTERS,
    },
    required=tuple(_COUNTERS),
)


def _json_or_csv(name: str, description: str) -> Schema:
    return {
        "description": description,
        "content": {
            "application/json": {"schema": ref(name)},
            "text/csv": {"schema": {**_STR, "description": "With `Accept: text/csv`."}},
        },
    }


def _deleted(kind: str) -> Schema:
    return _object({"id": _STR, "object": {"const": kind}, "deleted": {"const": True}})


#: The hand-written component schemas, by name.
SCHEMAS: dict[str, Schema] = {
    "Error": _object(
        {
            "error": _object(
                {"message": _STR, "type": _STR, "param": _NULL_STR, "code": _NULL_STR},
                required=("message", "type", "param", "code"),
            )
        },
        required=("error",),
    ),
    "ChatCompletionRequest": _CHAT_REQUEST,
    "ChatMessage": _MESSAGE,
    "ToolCall": _TOOL_CALL,
    "ChatUsage": _USAGE,
    "ChatCompletion": _completion("chat.completion", "message"),
    "ChatCompletionChunk": _completion("chat.completion.chunk", "delta"),
    "EmbeddingsRequest": _EMBEDDINGS_REQUEST,
    "Embeddings": _EMBEDDINGS,
    "GenerationAttempt": _ATTEMPT,
    "Generation": _GENERATION,
    "GenerationAnswer": _object({"generation": ref("Generation")}, required=("generation",)),
    "OpenRouterGeneration": _OPENROUTER_GENERATION,
    "OpenRouterGenerationAnswer": _object({"data": ref("OpenRouterGeneration")}, required=("data",)),
    "ApiKey": _KEY,
    "IssuedKey": {
        "allOf": [ref("ApiKey"), _object({"key": _STR}, required=("key",), extra=True)],
        "description": "The key and its full text (`key`), shown this once.",
    },
    "ApiKeyList": _listing("ApiKey"),
    "DeletedKey": _deleted("api_key"),
    "Team": _TEAM,
    "TeamList": _listing("Team"),
    "DeletedTeam": _deleted("team"),
    "LimitUsage": _USAGE_NOW,
    "AuditEntry": _AUDIT,
    "AuditList": _listing("AuditEntry"),
    "UsageReport": _USAGE_REPORT,
    "UsageReportRow": _USAGE_ROW,
    "UsageTotals": _object(_COUNTERS, required=tuple(_COUNTERS)),
    "GenerationList": _listing("Generation"),
    "Liveness": _object({"status": {"const": "ok"}}, required=("status",)),
    "Readiness": _READINESS,
}

_SSE = {
    "text/event-stream": {
        "schema": {
            **_STR,
            "description": "`data: <ChatCompletionChunk>` events, then `data: [DONE]`; an error after the "
            "first chunk comes as one `data: <Error>` event before [DONE].",
        }
    }
}


def json_answer(name: str, description: str = "OK") -> Schema:
    return {"description": description, "content": {"application/json": {"schema": ref(name)}}}


#: The 200 answer of each route, by "METHOD path" (OpenAPI's path template).
ANSWERS: dict[str, Schema] = {
    "GET /v1/models": json_answer("llmgateway.v1.ListModelsResponse"),
    "GET /v1/models/{id}": json_answer("llmgateway.v1.Model"),
    "POST /v1/chat/completions": {
        "description": "The answer; with `stream: true`, an SSE stream.",
        "content": {"application/json": {"schema": ref("ChatCompletion")}, **_SSE},
    },
    "POST /v1/chat/completions:stream": {
        "description": "An SSE stream, whatever `stream` says.",
        "content": _SSE,
    },
    "POST /v1/embeddings": json_answer("Embeddings"),
    "GET /v1/generation/{id}": json_answer("GenerationAnswer"),
    "GET /api/v1/generation": json_answer("OpenRouterGenerationAnswer", "OpenRouter's generation shape."),
    "POST /admin/v1/keys": json_answer("IssuedKey"),
    "GET /admin/v1/keys": json_answer("ApiKeyList"),
    "GET /admin/v1/keys/{id}": json_answer("ApiKey"),
    "GET /admin/v1/keys/{id}/usage": json_answer("LimitUsage"),
    "PATCH /admin/v1/keys/{id}": json_answer("ApiKey"),
    "DELETE /admin/v1/keys/{id}": json_answer("DeletedKey"),
    "POST /admin/v1/keys/{id}:rotate": json_answer("IssuedKey"),
    "POST /admin/v1/keys/{id}:disable": json_answer("ApiKey"),
    "POST /admin/v1/teams": json_answer("Team"),
    "GET /admin/v1/teams": json_answer("TeamList"),
    "GET /admin/v1/teams/{id}": json_answer("Team"),
    "GET /admin/v1/teams/{id}/usage": json_answer("LimitUsage"),
    "PATCH /admin/v1/teams/{id}": json_answer("Team"),
    "DELETE /admin/v1/teams/{id}": json_answer("DeletedTeam"),
    "GET /admin/v1/audit": json_answer("AuditList"),
    "GET /admin/v1/usage": _json_or_csv(
        "UsageReport", "The report; with `Accept: text/csv`, its rows as CSV (dimensions, then counters)."
    ),
    "GET /admin/v1/generations": _json_or_csv(
        "GenerationList",
        "A page of records, newest first; with `Accept: text/csv`, one flat row per record (attempts "
        "and limits as JSON text) and the next page's cursor in the `x-next-cursor` header.",
    ),
}

#: Request bodies written by hand: OpenAI's requests, which the proto messages model only in part.
#: Other bodies are their proto request message's fields (see `openapi_document.rest_body`).
BODIES: dict[str, Schema] = {
    "POST /v1/chat/completions": ref("ChatCompletionRequest"),
    "POST /v1/chat/completions:stream": ref("ChatCompletionRequest"),
    "POST /v1/embeddings": ref("EmbeddingsRequest"),
}

_OPEN: list[Schema] = []  # no key needed


#: Routes with no RPC behind them, open to anyone.
EXTRA_PATHS: dict[str, Schema] = {
    "/livez": {
        "get": {
            "operationId": "Livez",
            "tags": ["Health"],
            "security": _OPEN,
            "responses": {"200": json_answer("Liveness", "The process is up.")},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "Readyz",
            "tags": ["Health"],
            "security": _OPEN,
            "responses": {
                "200": json_answer("Readiness", "Ready."),
                "503": json_answer("Readiness", "Not ready, or draining after SIGTERM."),
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "OpenApi",
            "tags": ["Health"],
            "security": _OPEN,
            "responses": {
                "200": {
                    "description": "This document.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    },
}
