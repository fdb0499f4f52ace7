"""The REST front: OpenAI's JSON and SSE over aiohttp, translated onto the gateway's use cases."""
