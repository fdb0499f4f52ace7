"""A streamed answer, chunk by chunk, with the usage chunk at the end."""

import asyncio

from llmgw_client import LLMGateway


async def main() -> None:
    async with LLMGateway("localhost:50051") as client:
        stream = await client.chat.completions.create(
            model="dashscope/qwen-plus",
            messages=[{"role": "user", "content": "Count to five."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:  # leaving early cancels the call (the gateway records it `cancelled`)
            async for chunk in stream:
                for choice in chunk.choices:
                    print(choice.delta.content or "", end="", flush=True)
                if chunk.usage is not None:
                    print("\ntotal tokens:", chunk.usage.total_tokens)


if __name__ == "__main__":
    asyncio.run(main())
