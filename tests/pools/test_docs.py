"""docs/pools.md draws the lifecycles from the transition tables; docs/configuration.md names
every configuration key."""

from __future__ import annotations

import re
from pathlib import Path

import pydantic

from corral.cluster.config import ClusterConfig
from corral.config import ApiConfig, TokenConfig
from corral.pools.config import (
    DiskConfig,
    LivecheckConfig,
    NicConfig,
    PoolConfig,
    ReuseConfig,
    TemplateConfig,
)
from corral.pools.model import event_tables, lifecycle_diagrams

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_lifecycle_diagrams_are_current() -> None:
    text = (DOCS / "pools.md").read_text()
    for marker, diagram in lifecycle_diagrams().items():
        found = re.search(
            rf"<!-- {marker} -->\n```mermaid\n(.*?)\n```\n<!-- /{marker} -->", text, re.S
        )
        assert found is not None, f"docs/pools.md lacks the {marker} block"
        assert found.group(1) == diagram, f"docs/pools.md: {marker} is stale, regenerate it"


def test_event_tables_are_current() -> None:
    text = (DOCS / "pools.md").read_text()
    for marker, table in event_tables().items():
        found = re.search(rf"<!-- {marker} -->\n(.*?)\n<!-- /{marker} -->", text, re.S)
        assert found is not None, f"docs/pools.md lacks the {marker} block"
        assert found.group(1) == table, f"docs/pools.md: {marker} is stale, regenerate it"


def test_configuration_reference_names_every_key() -> None:
    text = (DOCS / "configuration.md").read_text()
    models: list[type[pydantic.BaseModel]] = [
        ApiConfig,
        ClusterConfig,
        TokenConfig,
        PoolConfig,
        LivecheckConfig,
        ReuseConfig,
        TemplateConfig,
        DiskConfig,
        NicConfig,
    ]
    for model in models:
        for name in model.model_fields:
            if name == "name":
                continue
            assert f"`{name}`" in text, f"docs/configuration.md does not document {name}"
    for env in (
        "CORRAL_STORE",
        "CORRAL_API_HOST",
        "CORRAL_API_PORT",
        "CORRAL_CLUSTER_HOST_ID",
        "CORRAL_CLUSTER_LEASE",
        "CORRAL_CLUSTER_ADDRESS",
    ):
        assert env in text
