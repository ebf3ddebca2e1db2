"""README's variable table works through `.env`: each variable reaches every Compose service that reads it."""

from __future__ import annotations

import re

import pytest

from tests.deploy.deploytools import COMPOSE_FILE, CPU_OVERRIDE, MILVUS_OVERRIDE, ROOT, compose_config

# README's "used by" column → the Compose services that run that code. The API runs index_builder itself for
# POST /admin/builds (with its own environment), so what index_builder reads the API must pass too.
SERVICES = {
    "all": {"api", "indexer", "train"},
    "all but training": {"api", "indexer"},
    "app": {"api"},
    "index_builder": {"api", "indexer"},
    "training evaluate": {"train"},
    "training": {"train"},
    "encoder": {"api", "indexer", "train"},
}
# Set by the image or the compose files, on purpose not from .env: the container's listen address and port (the
# host side is SBIR_API_BIND/SBIR_API_PORT).
FIXED = {"HOST", "PORT", "SBIR_HOST", "SBIR_PORT"}
# Read only with the Milvus engine: passed by the Milvus override.
MILVUS = {"SBIR_ENGINE", "SBIR_MILVUS_URI", "SBIR_COLLECTION", "SBIR_MILVUS_TIMEOUT_S", "SBIR_MILVUS_TOKEN",
          "SBIR_MILVUS_CONSISTENCY"}


def readme_variables() -> dict[str, set[str]]:
    """Each variable of README's environment table → the services that read it."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    found: dict[str, set[str]] = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.lstrip().startswith("|") or not cells[0].startswith("`"):
            continue  # prose, the header and its rule
        assert len(cells) == 4, f"README's table row is not 4 cells (a | inside backticks?): {line}"
        users = {part.strip() for part in cells[2].split(",")}
        if users & {"`make serve`"}:
            continue  # make's own variables
        unknown = users - set(SERVICES)
        assert not unknown, f"README's table names an unknown user {unknown} in: {line}"
        for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0]):
            found.setdefault(name, set()).update(*(SERVICES[user] for user in users))
    return found


def test_the_readme_table_is_read():
    variables = readme_variables()
    assert variables["SBIR_BACKBONE"] == {"api", "indexer", "train"}
    assert variables["SBIR_INDEX_FLAT_MAX"] == {"api", "indexer"}
    assert variables["SBIR_DECODE_THREADS"] == {"api"}
    assert len(variables) > 40


@pytest.mark.parametrize("files", [[COMPOSE_FILE], [COMPOSE_FILE, CPU_OVERRIDE], [COMPOSE_FILE, MILVUS_OVERRIDE],
                                   [COMPOSE_FILE, CPU_OVERRIDE, MILVUS_OVERRIDE]], ids="+".join)
def test_every_readme_variable_reaches_the_services_that_read_it(files):
    services = compose_config([arg for name in files for arg in ("-f", name)])["services"]
    milvus = MILVUS_OVERRIDE in files
    missing = sorted(f"{service} lacks {name}" for name, users in readme_variables().items() for service in users
                     if name not in FIXED and (milvus or name not in MILVUS)
                     and name not in services[service].get("environment", {}))
    assert not missing, missing
