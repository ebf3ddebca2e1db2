"""The Dockerfile and compose files: linted by hadolint, resolved by Docker Compose's own `config` (no engine)."""

from __future__ import annotations

import re
import subprocess
import tomllib

from tests.deploy.deploytools import (
    COMPOSE_FILE,
    CPU_OVERRIDE,
    ENV_EXAMPLE,
    MILVUS_OVERRIDE,
    ROOT,
    active_services,
    compose_config,
    env_file_names,
    require_tool,
    uncommented_env_example,
)

GPU_FILES = ["-f", COMPOSE_FILE]
CPU_FILES = ["-f", COMPOSE_FILE, "-f", CPU_OVERRIDE]
MILVUS_FILES = ["-f", COMPOSE_FILE, "-f", MILVUS_OVERRIDE]
MILVUS_CPU_FILES = ["-f", COMPOSE_FILE, "-f", CPU_OVERRIDE, "-f", MILVUS_OVERRIDE]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _gpu_devices(service: dict) -> list[dict]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def _mounts(service: dict) -> dict[str, dict]:
    return {volume["target"]: volume for volume in service["volumes"]}


def test_dockerfile_passes_hadolint():
    result = subprocess.run([require_tool("hadolint"), "--no-color", "Dockerfile"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_non_root_with_healthcheck_and_weights_cache():
    stages = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert len(stages) >= 2 and all(stage == "${CUDA_IMAGE}" for stage in stages)
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S+", DOCKERFILE, re.MULTILINE)
    assert re.search(r"^COPY --from=build ", DOCKERFILE, re.MULTILINE), "final stage must copy the built venv"
    user = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", DOCKERFILE, re.MULTILINE)
    assert re.search(r"HF_HOME=/data/hf", DOCKERFILE)


def test_image_installs_the_project_with_the_gpu_extra_from_pyproject():
    """The image installs exactly what pyproject.toml declares (the README's install path) plus the gpu extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    gpu = project["project"]["optional-dependencies"]["gpu"]
    assert any(req.startswith("faiss-gpu") for req in gpu)
    assert 'pip install ".[gpu,milvus]"' in DOCKERFILE
    assert "pip uninstall -y faiss-cpu" in DOCKERFILE  # same `faiss` package in both wheels: the CPU one goes
    # every package the project installs is copied into the build context and not excluded by .dockerignore
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    for name in (pattern.rstrip("*") for pattern in packages):
        assert re.search(rf"^COPY {name} ", DOCKERFILE, re.MULTILINE), f"Dockerfile does not copy {name}/"
        assert f"!{name}" in dockerignore, f".dockerignore excludes {name}/"


def test_compose_files_resolve_with_and_without_the_cpu_override():
    for files in (GPU_FILES, CPU_FILES):
        assert set(compose_config(files)["services"]) == {"api", "indexer", "train"}
        # `docker compose up` starts the API only; indexer and train run on demand (profiles)
        assert active_services(files) == {"api"}


def test_api_reserves_a_gpu_and_mounts_the_gallery_read_only():
    api = compose_config(GPU_FILES)["services"]["api"]
    assert _gpu_devices(api) == [{"capabilities": ["gpu"], "driver": "nvidia", "count": 1}]
    mounts = _mounts(api)
    assert mounts["/data/gallery"]["read_only"] is True
    assert mounts["/data/checkpoints"]["read_only"] is True
    assert mounts["/data/index"]["type"] == "volume" and mounts["/data/hf"]["type"] == "volume"
    assert api["restart"] == "unless-stopped"
    assert api["ports"][0]["target"] == 8000 and api["ports"][0]["published"] == "8000"
    assert api["healthcheck"]["retries"] >= 1  # the test itself is the image's HEALTHCHECK on /healthz


def test_indexer_writes_the_index_the_api_reads_with_the_same_encoder():
    services = compose_config(GPU_FILES)["services"]
    api, indexer, train = services["api"], services["indexer"], services["train"]
    assert indexer["profiles"] == ["indexer"] and train["profiles"] == ["train"]
    assert indexer["entrypoint"][:4] == ["python", "-m", "index_builder", "build"]
    assert _mounts(indexer)["/data/index"]["source"] == _mounts(api)["/data/index"]["source"]
    assert _mounts(indexer)["/data/gallery"]["read_only"] is True
    assert _mounts(train)["/data/checkpoints"].get("read_only") is not True
    for name in ("SBIR_BACKBONE", "SBIR_PRETRAINED", "SBIR_CHECKPOINT"):
        assert name in api["environment"] and name in indexer["environment"]
    assert api["environment"]["SBIR_INDEX_DIR"] == indexer["environment"]["SBIR_INDEX_DIR"] == "/data/index"


def test_cpu_override_drops_every_gpu_reservation():
    for name, service in compose_config(CPU_FILES)["services"].items():
        assert _gpu_devices(service) == [], f"{name} still reserves a GPU"
        assert service["environment"]["SBIR_DEVICE"] == "cpu"


def test_milvus_override_runs_milvus_standalone_and_points_api_and_indexer_at_it():
    for files in (MILVUS_FILES, MILVUS_CPU_FILES):
        services = compose_config(files)["services"]
        assert {"milvus", "milvus-etcd", "milvus-minio"} <= set(services)
        milvus = services["milvus"]
        assert milvus["image"].startswith("milvusdb/milvus:v2.")
        assert milvus["command"] == ["milvus", "run", "standalone"]
        assert milvus["environment"]["ETCD_ENDPOINTS"] == "milvus-etcd:2379"
        assert milvus["environment"]["MINIO_ADDRESS"] == "milvus-minio:9000"
        assert "9091/healthz" in " ".join(milvus["healthcheck"]["test"])
        for name in ("api", "indexer"):
            env = services[name]["environment"]
            assert (env["SBIR_ENGINE"], env["SBIR_MILVUS_URI"], env["SBIR_COLLECTION"]) == (
                "milvus", "http://milvus:19530", "photos")
            assert services[name]["depends_on"]["milvus"]["condition"] == "service_healthy"
        assert active_services(files) == {"api", "milvus", "milvus-etcd", "milvus-minio"}
    assert _gpu_devices(compose_config(MILVUS_CPU_FILES)["services"]["api"]) == []


def test_image_installs_the_milvus_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(req.startswith("pymilvus") for req in project["project"]["optional-dependencies"]["milvus"])


def test_every_documented_value_in_env_example_is_accepted(tmp_path):
    env_file = uncommented_env_example(tmp_path)
    services = compose_config([], env_file=env_file)["services"]  # COMPOSE_FILE in it selects the CPU override
    assert services["api"]["environment"]["SBIR_CHECKPOINT"] == "/data/checkpoints/sketchy21/best.safetensors"
    assert _gpu_devices(services["api"]) == []


def test_env_example_documents_every_variable_the_compose_files_read():
    used: set[str] = set()
    for name in (COMPOSE_FILE, CPU_OVERRIDE, MILVUS_OVERRIDE):
        text = (ROOT / name).read_text()
        used |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))  # interpolated
        used |= set(re.findall(r"^\s+([A-Z][A-Z0-9_]*):\s*$", text, re.MULTILINE))  # passed through when set
    documented = env_file_names(ENV_EXAMPLE)
    assert used - documented == set(), "used in compose files but not documented in .env.example"
    assert documented - used - {"COMPOSE_FILE"} == set(), "documented in .env.example but read by nothing"
