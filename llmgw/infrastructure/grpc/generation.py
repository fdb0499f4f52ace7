"""Generation records as protobuf messages."""

from __future__ import annotations

import datetime

from llmgw.domain.generation import GenerationRecord, GenerationStatus
from llmgw.infrastructure.grpc.messages import v1

_STATUS = {
    GenerationStatus.COMPLETED: v1.GenerationStatus.COMPLETED,
    GenerationStatus.ERROR: v1.GenerationStatus.ERROR,
    GenerationStatus.CANCELLED: v1.GenerationStatus.CANCELLED,
}


def generation_to_proto(record: GenerationRecord) -> v1.Generation:
    return v1.Generation(
        id=record.id,
        request_id=record.request_id,
        kind=record.kind.value,
        model=record.model,
        provider=record.provider,
        upstream_model=record.upstream_model,
        upstream_id=record.upstream_id,
        created_at=datetime.datetime.fromtimestamp(record.created_at, datetime.UTC),
        streamed=record.streamed,
        status=_STATUS[record.status],
        finish_reason=record.finish_reason,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        total_tokens=record.total_tokens,
        cached_tokens=record.cached_tokens,
        reasoning_tokens=record.reasoning_tokens,
        cost_usd=record.cost_usd,
        latency_ms=record.latency_ms,
        time_to_first_token_ms=record.time_to_first_token_ms,
        error_code=record.error_code,
        error_message=record.error_message,
        user=record.user,
    )
