"""The admin service with an admin key: a key for CI, limited to some models, rotated, then disabled."""

import asyncio

from llmgw_client import LLMGateway


async def main() -> None:
    async with LLMGateway("localhost:50051") as client:  # LLMGW_API_KEY: an admin key
        team = await client.admin.teams.create(name="research")
        issued = await client.admin.keys.create(
            name="ci", team_id=team.id, scopes=["inference"], models=["dashscope/*"]
        )
        print("new key (shown once):", issued.key)

        rotated = await client.admin.keys.rotate(issued.id, grace_seconds=3600)
        print("rotated; the old secret works until", rotated.previous_secret_valid_until)

        page = await client.admin.keys.list(team_id=team.id, limit=20)
        for key in page:
            print(key.id, key.name, key.scopes, key.disabled)

        await client.admin.keys.disable(issued.id)
        for entry in await client.admin.audit.list(limit=5):
            print(entry.to_dict())


if __name__ == "__main__":
    asyncio.run(main())
