"""The typed results, named and shaped as the openai SDK's; `to_dict()` is the answer's JSON as llmgw's
REST front gives it for the same request, nulls included, for every field the proto carries: a key the
upstream sent null is written null (its name is in the object's `null_fields`), a key it left out is left
out, and `model_extra`, the keys the proto does not model, is deep-merged over them. The typed attributes
read None either way. Exceptions: a completion's choice always has a `message` and the message a `role`
(`"assistant"` when unset), a tool call's `id`, `type` and `function` and its function's `name` and
`arguments` are always written (the openai SDK's types require them), and a null inside a tool call or a
content part's nested object reads as absent (those messages have no `null_fields`).
"""

from llmgw_client.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageToolCall,
    Choice,
    ChoiceDelta,
    ChoiceDeltaToolCall,
    ChoiceDeltaToolCallFunction,
    ChunkChoice,
    CompletionTokensDetails,
    CompletionUsage,
    Function,
    PromptTokensDetails,
)
from llmgw_client.types.embeddings import CreateEmbeddingResponse, Embedding, EmbeddingUsage
from llmgw_client.types.generations import Generation, GenerationAttempt
from llmgw_client.types.models import Model, ModelList

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "ChatCompletionMessageToolCall",
    "Choice",
    "ChoiceDelta",
    "ChoiceDeltaToolCall",
    "ChoiceDeltaToolCallFunction",
    "ChunkChoice",
    "CompletionTokensDetails",
    "CompletionUsage",
    "CreateEmbeddingResponse",
    "Embedding",
    "EmbeddingUsage",
    "Function",
    "Generation",
    "GenerationAttempt",
    "Model",
    "ModelList",
    "PromptTokensDetails",
]
