"""Deadlines, retries and the error classes (the openai SDK's names)."""

import asyncio

import llmgw_client
from llmgw_client import LLMGateway


async def main() -> None:
    # Every call: a 30 s deadline (covering retries) and up to 3 retries on UNAVAILABLE, or on
    # RESOURCE_EXHAUSTED when the gateway says when to come back (retry-after).
    async with LLMGateway("localhost:50051", timeout=30, max_retries=3) as client:
        try:
            completion = await client.chat.completions.create(
                model="dashscope/qwen-plus",
                messages=[{"role": "user", "content": "hi"}],
                timeout=5,  # this call's own deadline
            )
            print(completion.choices[0].message.content)
        except llmgw_client.APITimeoutError:
            print("no answer within 5 s")
        except llmgw_client.RateLimitError as exc:
            print("rate limited; retry after", exc.retry_after, "s")
        except llmgw_client.NotFoundError as exc:
            print("not found:", exc.code, exc.message)  # e.g. model_not_found
        except llmgw_client.APIStatusError as exc:
            print(exc.status.name, exc.code, exc.message, "generation", exc.generation_id)
        except llmgw_client.APIConnectionError as exc:
            print("gateway unreachable:", exc.message)


if __name__ == "__main__":
    asyncio.run(main())
