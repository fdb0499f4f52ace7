"""API keys in the domain: the format, the keyed hash kept instead of the secret, constant-time checks,
rotation grace, expiry, scopes and model patterns."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from llmgw.domain.keys import ApiKey, PresentedKey, Scope, hash_secret, mint_key, parse_key

PEPPER = b"p" * 32
FORMAT = re.compile(r"sk-llmgw-[a-z0-9]{12}-[A-Za-z0-9_-]{43}")


def stored(presented: PresentedKey, **fields: object) -> ApiKey:
    return ApiKey(
        public_id=presented.public_id,
        name="ci",
        secret_hash=hash_secret(presented.secret, PEPPER),
        **fields,  # type: ignore[arg-type]
    )


def test_a_minted_key_has_the_documented_format_and_parses_back_into_its_parts() -> None:
    text, presented = mint_key()
    assert FORMAT.fullmatch(text), text
    assert parse_key(text) == presented
    assert presented.secret not in repr(presented)


def test_minted_keys_differ() -> None:
    minted = {mint_key()[0] for _ in range(200)}
    assert len(minted) == 200
    assert len({parse_key(text).public_id for text in minted}) == 200  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sk-proj-abc",
        "sk-llmgw-",
        "sk-llmgw-ABCDEFGHIJKL-" + "a" * 43,  # upper case public id
        "sk-llmgw-abcdefghijkl_" + "a" * 43,  # wrong separator
        "sk-llmgw-abcdefghijkl-" + "a" * 42,  # short secret
        "sk-llmgw-abcdefghijkl-" + "a" * 42 + "!",
        "sk-llmgw-abcdefghijkl-" + "a" * 42 + "\n",
    ],
)
def test_anything_else_is_not_a_key_of_ours(text: str) -> None:
    assert parse_key(text) is None


def test_only_a_keyed_hash_of_the_secret_is_kept_and_it_depends_on_the_pepper() -> None:
    _, presented = mint_key()
    digest = hash_secret(presented.secret, PEPPER)
    assert digest == hmac.new(PEPPER, presented.secret.encode(), hashlib.sha256).digest()
    assert digest != hashlib.sha256(presented.secret.encode()).digest(), "keyed, not a bare hash"
    assert digest != hash_secret(presented.secret, b"q" * 32)
    assert "secret_hash" not in repr(stored(presented))


def test_the_secret_is_checked_with_hmac_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    _, presented = mint_key()
    key = stored(presented)
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert key.matches(presented.secret, PEPPER, now=0.0)
    assert not key.matches("x" * 43, PEPPER, now=0.0)
    assert len(compared) == 2
    assert all(b == key.secret_hash for _, b in compared)


def test_a_rotated_out_secret_works_only_within_its_grace() -> None:
    _, old = mint_key()
    _, new = mint_key()
    key = ApiKey(
        public_id=new.public_id,
        name="ci",
        secret_hash=hash_secret(new.secret, PEPPER),
        previous_hash=hash_secret(old.secret, PEPPER),
        previous_valid_until=1000.0,
    )
    assert key.matches(new.secret, PEPPER, now=999.0)
    assert key.matches(old.secret, PEPPER, now=999.0)
    assert not key.matches(old.secret, PEPPER, now=1000.0)
    assert key.matches(new.secret, PEPPER, now=5000.0)


def test_a_disabled_or_expired_key_is_not_usable() -> None:
    _, presented = mint_key()
    assert stored(presented).usable(now=1e12)
    assert not stored(presented, disabled=True).usable(now=0.0)
    assert stored(presented, expires_at=100.0).usable(now=99.0)
    assert not stored(presented, expires_at=100.0).usable(now=100.0)


def test_scopes_and_admin() -> None:
    _, presented = mint_key()
    inference = stored(presented)
    assert inference.can(Scope.INFERENCE)
    assert not inference.can(Scope.USAGE_READ)
    assert not inference.can(Scope.ADMIN)
    admin = stored(presented, scopes=frozenset({Scope.ADMIN}))
    assert all(admin.can(scope) for scope in Scope)


def test_model_patterns_limit_the_models_a_key_may_use() -> None:
    _, presented = mint_key()
    assert stored(presented).may_use("anything/at-all")
    limited = stored(presented, models=("gpt-4o*", "dashscope/*"))
    assert limited.may_use("gpt-4o")
    assert limited.may_use("gpt-4o-mini")
    assert limited.may_use("dashscope/qwen-turbo")
    assert not limited.may_use("openrouter/openai/gpt-4o")
    assert not limited.may_use("GPT-4O"), "patterns are case-sensitive, as model ids are"
