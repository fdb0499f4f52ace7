"""One chat completion over gRPC, then its generation record (what it cost)."""

import asyncio

from llmgw_client import LLMGateway


async def main() -> None:
    # The key comes from LLMGW_API_KEY when not given; the target from LLMGW_TARGET (else localhost:50051).
    async with LLMGateway("localhost:50051") as client:
        completion = await client.chat.completions.create(
            model="dashscope/qwen-plus",
            messages=[{"role": "user", "content": "Say hello in one word."}],
            temperature=0.2,
        )
        print(completion.choices[0].message.content)
        if completion.usage is not None:
            print("prompt tokens:", completion.usage.prompt_tokens)
        print("request", completion.request_id, "generation", completion.generation_id)

        if completion.generation_id is not None:
            record = await client.generations.retrieve(completion.generation_id)
            print(record.status, record.cost_usd, record.latency_ms)


if __name__ == "__main__":
    asyncio.run(main())
