"""DashScope regions: `region` picks the base URL, since a key works only in its own region."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmgw.infrastructure.config.loader import ConfigError, load_settings


def settings_with(tmp_path: Path, provider_table: str) -> str:
    (tmp_path / "default.toml").write_text(provider_table, encoding="utf-8")
    return load_settings("serve", config_path=str(tmp_path), environ={}).providers["ds"].base_url


@pytest.mark.parametrize(
    ("region", "url"),
    [
        ("beijing", "https://dashscope.aliyuncs.com/compatible-mode/v1"),
        ("international", "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"),
        ("us", "https://dashscope-us.aliyuncs.com/compatible-mode/v1"),
    ],
)
def test_a_dashscope_region_sets_the_base_url(tmp_path: Path, region: str, url: str) -> None:
    table = f'[llm.providers.ds]\nkind = "dashscope"\nregion = "{region}"\n'
    assert settings_with(tmp_path, table) == url


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('kind = "dashscope"\nregion = "mars"', "must be one of"),
        ('kind = "dashscope"\nregion = "us"\nbase_url = "https://x.example/v1"', "not both"),
        ('kind = "openai"\nregion = "us"', "only providers of kind dashscope"),
    ],
    ids=["unknown-region", "region-and-base-url", "region-on-another-kind"],
)
def test_a_wrong_region_is_reported_with_its_key(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_with(tmp_path, f"[llm.providers.ds]\n{table}\n")
    problems = [p for p in caught.value.problems if p.key == "llm.providers.ds.region"]
    assert problems, caught.value
    assert message in problems[0].message
