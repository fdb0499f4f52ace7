"""Embeddings: floats by default (sent as base64 and decoded, as the openai SDK does)."""

import asyncio

from llmgw_client import LLMGateway


async def main() -> None:
    async with LLMGateway("localhost:50051") as client:
        answer = await client.embeddings.create(model="dashscope/text-embedding-v3", input=["one", "two"])
        for item in answer.data:
            print(item.index, len(item.embedding))
        print("tokens:", answer.usage.prompt_tokens)


if __name__ == "__main__":
    asyncio.run(main())
