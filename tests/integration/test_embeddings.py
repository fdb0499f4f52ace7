"""Embeddings on both fronts: inputs and options reach the upstream, vectors come back in input order.

DashScope takes at most 10 float-only text inputs a call, so the gateway splits larger batches, merges
them back, and encodes base64 itself; the `openai` SDK (which asks for base64 by default) sees no seam.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import aiohttp
import openai
import pytest
from grpclib import GRPCError, Status

from llmgw.infrastructure.grpc.messages import v1
from tests.fakes.upstream import FakeUpstream, RecordedRequest, Script, embedding_for
from tests.harness import Running

Json = dict[str, Any]
LOCAL = "local/embed"
DASHSCOPE = "dashscope/text-embedding-v3"
CHAT_ONLY = "dashscope/qwen-turbo"
UNKNOWN = "nowhere/embed"
# The fake's vector length when a request names no `dimensions`.
DEFAULT_DIMENSIONS = 8
# Texts of different word counts, so summed usage tells the parts apart.
BATCH = [f"text {i}" + " word" * (i % 4) for i in range(25)]


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: Json


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def sdk(gw: Running) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{gw.rest_url}/v1", api_key="x", max_retries=0) as client:
        yield client


async def embed(session: aiohttp.ClientSession, gw: Running, body: Json) -> Answer:
    async with session.post(f"{gw.rest_url}/v1/embeddings", json=body) as response:
        return Answer(response.status, dict(response.headers), await response.json())


def embedding_requests(fake: FakeUpstream) -> list[RecordedRequest]:
    return [r for r in fake.requests if r.path.endswith("/embeddings")]


def decode_base64(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def vectors(body: Json) -> list[list[float]]:
    """The vectors of an answer in `index` order, decoding base64 ones; indices must be 0..n-1."""
    data = body["data"]
    assert [item["index"] for item in data] == list(range(len(data)))
    assert all(item["object"] == "embedding" for item in data)
    return [
        decode_base64(item["embedding"]) if isinstance(item["embedding"], str) else item["embedding"]
        for item in data
    ]


def expected(texts: list[str], dimensions: int = DEFAULT_DIMENSIONS) -> list[list[float]]:
    return [embedding_for(text, dimensions) for text in texts]


def fake_tokens(texts: list[str]) -> int:
    """What the fake counts as prompt tokens for these texts."""
    return sum(max(1, len(text.split())) for text in texts)


def assert_error(answer: Answer, status: int, error_type: str) -> Json:
    assert answer.status == status, answer.body
    error: Json = answer.body["error"]
    assert error["type"] == error_type
    assert error["message"]
    return error


# REST: what goes upstream and what comes back


async def test_a_string_input_is_embedded_and_answered_under_a_generation_id(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    answer = await embed(session, gw, {"model": LOCAL, "input": "hello world"})

    assert answer.status == 200, answer.body
    assert answer.body["object"] == "list"
    assert answer.body["model"] == LOCAL
    assert answer.body["id"].startswith("gen-")
    assert answer.headers["x-generation-id"] == answer.body["id"]
    assert vectors(answer.body) == expected(["hello world"])
    assert answer.body["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    (sent,) = embedding_requests(fakes["local"])
    assert sent.json["model"] == "embed"
    assert sent.json["input"] == "hello world"


@pytest.mark.parametrize("model", [LOCAL, DASHSCOPE])
async def test_a_list_input_comes_back_as_one_vector_per_text_in_order(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, model: str
) -> None:
    texts = ["first", "second text", "third of three"]
    answer = await embed(session, gw, {"model": model, "input": texts})

    assert answer.status == 200, answer.body
    assert answer.body["model"] == model
    assert vectors(answer.body) == expected(texts)
    assert answer.body["usage"]["prompt_tokens"] == fake_tokens(texts)
    (sent,) = embedding_requests(fakes[model.partition("/")[0]])
    assert sent.json["input"] == texts


@pytest.mark.parametrize(
    "tokens",
    [[[1, 2, 3], [40, 50]], [7, 8, 9]],
    ids=["several token arrays", "one flat token array"],
)
async def test_token_arrays_reach_an_openai_kind_upstream_unchanged(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, tokens: list[Any]
) -> None:
    answer = await embed(session, gw, {"model": LOCAL, "input": tokens})

    assert answer.status == 200, answer.body
    (sent,) = embedding_requests(fakes["local"])
    assert sent.json["input"] == tokens
    texts = [str(item) for item in tokens] if isinstance(tokens[0], list) else [str(tokens)]
    assert vectors(answer.body) == expected(texts)


@pytest.mark.parametrize(("model", "dimensions"), [(LOCAL, 16), (DASHSCOPE, 512)])
async def test_dimensions_are_passed_through_and_honoured(
    gw: Running,
    fakes: dict[str, FakeUpstream],
    session: aiohttp.ClientSession,
    model: str,
    dimensions: int,
) -> None:
    texts = ["alpha", "beta"]
    answer = await embed(session, gw, {"model": model, "input": texts, "dimensions": dimensions})

    assert answer.status == 200, answer.body
    (sent,) = embedding_requests(fakes[model.partition("/")[0]])
    assert sent.json["dimensions"] == dimensions
    got = vectors(answer.body)
    assert [len(v) for v in got] == [dimensions, dimensions]
    assert got == expected(texts, dimensions)


@pytest.mark.parametrize("model", [LOCAL, DASHSCOPE])
async def test_the_callers_user_is_passed_through(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, model: str
) -> None:
    answer = await embed(session, gw, {"model": model, "input": "hi", "user": "user-1234"})

    assert answer.status == 200, answer.body
    (sent,) = embedding_requests(fakes[model.partition("/")[0]])
    assert sent.json["user"] == "user-1234"


@pytest.mark.parametrize("encoding", ["float", "base64"])
async def test_an_openai_kind_upstream_answers_the_encoding_asked_for(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, encoding: str
) -> None:
    texts = ["one", "two"]
    answer = await embed(session, gw, {"model": LOCAL, "input": texts, "encoding_format": encoding})

    assert answer.status == 200, answer.body
    (sent,) = embedding_requests(fakes["local"])
    assert sent.json["encoding_format"] == encoding
    kinds = {type(item["embedding"]) for item in answer.body["data"]}
    assert kinds == ({str} if encoding == "base64" else {list})
    assert vectors(answer.body) == expected(texts)


async def test_base64_from_dashscope_is_encoded_by_the_gateway_from_float_vectors(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    texts = ["un", "deux", "trois"]
    body = {"model": DASHSCOPE, "input": texts, "encoding_format": "base64", "dimensions": 768}
    answer = await embed(session, gw, body)

    assert answer.status == 200, answer.body
    (sent,) = embedding_requests(fakes["dashscope"])
    assert sent.json["encoding_format"] == "float"
    for item, text in zip(answer.body["data"], texts, strict=True):
        vector = embedding_for(text, 768)
        assert item["embedding"] == base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


async def test_token_arrays_to_dashscope_are_refused_without_calling_it(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    answer = await embed(session, gw, {"model": DASHSCOPE, "input": [[1, 2, 3]]})

    assert_error(answer, 400, "invalid_request_error")
    assert embedding_requests(fakes["dashscope"]) == []


async def test_a_batch_of_25_to_dashscope_is_split_into_parts_of_at_most_10_and_merged_in_order(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    answer = await embed(session, gw, {"model": DASHSCOPE, "input": BATCH, "dimensions": 512})

    assert answer.status == 200, answer.body
    parts = [r.json["input"] for r in embedding_requests(fakes["dashscope"])]
    assert sorted(len(part) for part in parts) == [5, 10, 10]
    assert sorted(parts) == sorted([BATCH[0:10], BATCH[10:20], BATCH[20:25]])
    assert all(r.json["dimensions"] == 512 for r in embedding_requests(fakes["dashscope"]))
    assert vectors(answer.body) == expected(BATCH, 512)
    assert answer.body["usage"] == {"prompt_tokens": fake_tokens(BATCH), "total_tokens": fake_tokens(BATCH)}
    assert answer.body["model"] == DASHSCOPE
    assert answer.headers["x-generation-id"] == answer.body["id"]


class Failure(NamedTuple):
    upstream_status: int
    status: int
    error_type: str


@pytest.mark.parametrize(
    "failure",
    [Failure(429, 429, "rate_limit_error"), Failure(500, 502, "upstream_error")],
    ids=["429", "500"],
)
async def test_one_failed_part_fails_the_whole_batch_with_the_upstreams_mapped_error(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, failure: Failure
) -> None:
    fakes["dashscope"].script(Script(), Script(status=failure.upstream_status), Script())

    answer = await embed(session, gw, {"model": DASHSCOPE, "input": BATCH})

    assert_error(answer, failure.status, failure.error_type)
    assert "data" not in answer.body
    assert len(embedding_requests(fakes["dashscope"])) >= 2


async def test_a_chat_only_model_is_refused_for_embeddings(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession
) -> None:
    answer = await embed(session, gw, {"model": CHAT_ONLY, "input": "hi"})

    assert_error(answer, 400, "invalid_request_error")
    assert fakes["dashscope"].requests == []


async def test_an_unknown_model_is_not_found(gw: Running, session: aiohttp.ClientSession) -> None:
    answer = await embed(session, gw, {"model": UNKNOWN, "input": "hi"})

    error = assert_error(answer, 404, "not_found_error")
    assert error["code"] == "model_not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"model": LOCAL, "input": ""},
        {"model": LOCAL, "input": []},
        {"model": LOCAL, "input": ["text", 42]},
        {"model": LOCAL, "input": [[1, 2], "text"]},
        {"model": LOCAL, "input": [[]]},
        {"model": LOCAL, "input": None},
        {"model": LOCAL},
        {"model": LOCAL, "input": "hi", "encoding_format": "binary"},
        {"model": LOCAL, "input": "hi", "dimensions": 0},
        {"input": "hi"},
    ],
    ids=[
        "empty string",
        "empty list",
        "numbers mixed with strings",
        "token array mixed with strings",
        "empty token array",
        "null input",
        "missing input",
        "unknown encoding",
        "zero dimensions",
        "missing model",
    ],
)
async def test_invalid_requests_are_refused_without_calling_the_upstream(
    gw: Running, fakes: dict[str, FakeUpstream], session: aiohttp.ClientSession, body: Json
) -> None:
    answer = await embed(session, gw, body)

    assert_error(answer, 400, "invalid_request_error")
    assert fakes["local"].requests == []


# The official openai SDK


@pytest.mark.parametrize("model", [LOCAL, DASHSCOPE])
async def test_the_sdks_default_base64_encoding_decodes_to_the_fakes_vectors(
    sdk: openai.AsyncOpenAI, fakes: dict[str, FakeUpstream], model: str
) -> None:
    texts = ["the quick", "brown fox", "jumps"]
    result = await sdk.embeddings.create(model=model, input=texts)

    assert [item.embedding for item in result.data] == expected(texts)
    assert [item.index for item in result.data] == [0, 1, 2]
    assert result.model == model
    assert result.usage.prompt_tokens == fake_tokens(texts)
    (sent,) = embedding_requests(fakes[model.partition("/")[0]])
    assert sent.json["encoding_format"] == ("base64" if model == LOCAL else "float")


@pytest.mark.parametrize("model", [LOCAL, DASHSCOPE])
async def test_the_sdk_with_float_encoding_gets_the_fakes_vectors(
    sdk: openai.AsyncOpenAI, model: str
) -> None:
    texts = ["lorem", "ipsum"]
    result = await sdk.embeddings.create(model=model, input=texts, encoding_format="float", dimensions=512)

    assert [item.embedding for item in result.data] == expected(texts, 512)


@pytest.mark.parametrize("encoding", ["base64", "float"])
async def test_the_sdk_embeds_a_batch_of_25_on_dashscope_in_input_order(
    sdk: openai.AsyncOpenAI, fakes: dict[str, FakeUpstream], encoding: str
) -> None:
    if encoding == "float":
        result = await sdk.embeddings.create(model=DASHSCOPE, input=BATCH, encoding_format="float")
    else:
        result = await sdk.embeddings.create(model=DASHSCOPE, input=BATCH)

    assert [item.embedding for item in result.data] == expected(BATCH)
    assert [item.index for item in result.data] == list(range(25))
    assert result.usage.prompt_tokens == fake_tokens(BATCH)
    assert all(len(r.json["input"]) <= 10 for r in embedding_requests(fakes["dashscope"]))


async def test_the_sdk_raises_the_mapped_errors(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await sdk.embeddings.create(model=UNKNOWN, input="hi")
    with pytest.raises(openai.BadRequestError):
        await sdk.embeddings.create(model=CHAT_ONLY, input="hi")


# gRPC


async def test_grpc_embeds_several_inputs_with_dimensions(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    texts = ["a b", "c", "d e f"]
    response = await gw.grpc.create_embeddings(
        v1.CreateEmbeddingsRequest(model=LOCAL, input=texts, dimensions=16, user="grpc-user")
    )

    assert response.id.startswith("gen-")
    assert response.model == LOCAL
    assert [item.index for item in response.data] == [0, 1, 2]
    assert [list(item.embedding) for item in response.data] == expected(texts, 16)
    assert response.usage is not None
    assert response.usage.prompt_tokens == fake_tokens(texts)
    (sent,) = embedding_requests(fakes["local"])
    assert sent.json["input"] == texts
    assert sent.json["dimensions"] == 16
    assert sent.json["user"] == "grpc-user"


async def test_grpc_token_input_reaches_an_openai_kind_upstream_unchanged(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    tokens = [[1, 2, 3], [4, 5]]
    response = await gw.grpc.create_embeddings(
        v1.CreateEmbeddingsRequest(model=LOCAL, token_input=[v1.TokenIds(ids=ids) for ids in tokens])
    )

    (sent,) = embedding_requests(fakes["local"])
    assert sent.json["input"] == tokens
    assert [list(item.embedding) for item in response.data] == expected([str(ids) for ids in tokens])


async def test_grpc_embeds_a_batch_of_25_on_dashscope_in_input_order(
    gw: Running, fakes: dict[str, FakeUpstream]
) -> None:
    response = await gw.grpc.create_embeddings(v1.CreateEmbeddingsRequest(model=DASHSCOPE, input=BATCH))

    assert [item.index for item in response.data] == list(range(25))
    assert [list(item.embedding) for item in response.data] == expected(BATCH)
    assert len(embedding_requests(fakes["dashscope"])) == 3


async def test_grpc_base64_lands_in_embedding_base64(gw: Running) -> None:
    response = await gw.grpc.create_embeddings(
        v1.CreateEmbeddingsRequest(model=DASHSCOPE, input=["x", "y"], encoding_format="base64")
    )

    assert [decode_base64(item.embedding_base64) for item in response.data] == expected(["x", "y"])
    assert all(not item.embedding for item in response.data)


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (v1.CreateEmbeddingsRequest(model=UNKNOWN, input=["hi"]), Status.NOT_FOUND),
        (v1.CreateEmbeddingsRequest(model=CHAT_ONLY, input=["hi"]), Status.INVALID_ARGUMENT),
        (v1.CreateEmbeddingsRequest(model=LOCAL), Status.INVALID_ARGUMENT),
        (v1.CreateEmbeddingsRequest(model=LOCAL, input=[""]), Status.INVALID_ARGUMENT),
        (
            v1.CreateEmbeddingsRequest(model=DASHSCOPE, token_input=[v1.TokenIds(ids=[1, 2])]),
            Status.INVALID_ARGUMENT,
        ),
    ],
    ids=["unknown model", "chat-only model", "no input", "empty text", "token input to dashscope"],
)
async def test_grpc_errors_map_to_status_codes(
    gw: Running, fakes: dict[str, FakeUpstream], request_: v1.CreateEmbeddingsRequest, status: Status
) -> None:
    with pytest.raises(GRPCError) as caught:
        await gw.grpc.create_embeddings(request_)

    assert caught.value.status == status
    assert caught.value.message
    assert all(fake.requests == [] for fake in fakes.values())


async def test_a_plain_answer_is_passed_on_as_the_upstreams_text_with_the_gateways_id_and_model(
    gw: Running, session: aiohttp.ClientSession
) -> None:
    async with session.post(
        f"{gw.rest_url}/v1/embeddings", json={"model": LOCAL, "input": ["a", "b"], "dimensions": 4}
    ) as response:
        raw = await response.read()
        generation_id = response.headers["x-generation-id"]
    # The fake indents like Python's json.dumps; re-encoding would have made the text compact.
    assert b'"embedding": [' in raw
    body = json.loads(raw)
    assert (body["id"], body["model"]) == (generation_id, LOCAL)
    assert vectors(body) == [embedding_for("a", 4), embedding_for("b", 4)]
    async with session.get(f"{gw.rest_url}/v1/generation/{generation_id}") as looked_up:
        record = (await looked_up.json())["generation"]
    assert record["prompt_tokens"] > 0
    assert record["total_tokens"] == body["usage"]["total_tokens"]
