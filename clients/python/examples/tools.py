"""Tools and structured output: the same dicts as the openai SDK takes; unknown fields travel as they are."""

import asyncio
import json

from llmgw_client import LLMGateway

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


async def main() -> None:
    async with LLMGateway("localhost:50051") as client:
        completion = await client.chat.completions.create(
            model="openrouter/openai/gpt-4o-mini",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER],
            tool_choice="auto",
            extra_body={"provider": {"sort": "price"}},  # an OpenRouter field the proto does not model
        )
        for call in completion.choices[0].message.tool_calls or []:
            print(call.function.name, json.loads(call.function.arguments))

        structured = await client.chat.completions.create(
            model="openrouter/openai/gpt-4o-mini",
            messages=[{"role": "user", "content": "Name a color."}],
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "color",
                    "schema": {"type": "object", "properties": {"name": {"type": "string"}}},
                },
            },
        )
        print(structured.to_dict()["choices"][0]["message"]["content"])


if __name__ == "__main__":
    asyncio.run(main())
