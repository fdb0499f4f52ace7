"""Kind `dashscope`: Alibaba Cloud Model Studio's OpenAI-compatible mode.

Thinking works only when streaming, so non-streaming requests to reasoning models get
`enable_thinking: false` unless the caller chose. Embeddings take at most 10 inputs a call
and only float encoding; `reasoning_content` passes through untouched.
"""

from __future__ import annotations

from llmgw.domain.catalog import Capability, ModelSpec
from llmgw.domain.chat import ChatRequest, JSONObject
from llmgw.infrastructure.providers.openai_kind import OpenAIQuirks


class DashScopeQuirks(OpenAIQuirks):
    max_embedding_inputs = 10
    supports_base64_embeddings = False
    supports_token_input = False

    def chat_body(self, model: ModelSpec, request: ChatRequest, *, stream: bool) -> JSONObject:
        body = super().chat_body(model, request, stream=stream)
        if not stream and model.can(Capability.REASONING) and "enable_thinking" not in body:
            body["enable_thinking"] = False
        return body
