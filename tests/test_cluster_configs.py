"""The cluster configs parse, pass Ray's own schema and pin what pyproject.toml pins.

Nothing here starts Ray or touches the network: the configs are read as YAML and text.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from ray.autoscaler._private.util import validate_config

from snas_ray.distributed.sweep_plan import DRIVER_RESOURCE

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHERS = {"aws": CLUSTER / "aws" / "cluster.yaml", "gcp": CLUSTER / "gcp" / "cluster.yaml"}
KUBERAY = [CLUSTER / "kuberay" / "raycluster.yaml", CLUSTER / "kuberay" / "rayjob.yaml"]
DOCKERFILE = CLUSTER / "Dockerfile"
SHARED = "/mnt/shared"

# `name==version` or `name[extras]==version`; not preceded by a name character (snas-ray).
_PIN = re.compile(r"(?<![\w-])(ray|torch|torchvision)(?:\[[^\]]*\])?==([\w.+]+)")


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {name: version for dep in project["dependencies"] for name, version in _PIN.findall(dep)}


PINS = _pyproject_pins()


def _load(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _launcher(name: str) -> dict[str, Any]:
    (config,) = _load(LAUNCHERS[name])
    return config


def _kuberay_docs() -> list[dict[str, Any]]:
    return [doc for path in KUBERAY for doc in _load(path)]


def _ray_cluster_specs() -> list[dict[str, Any]]:
    """The RayCluster spec of every RayCluster and of every RayJob's embedded cluster."""
    specs = []
    for doc in _kuberay_docs():
        if doc["kind"] == "RayCluster":
            specs.append(doc["spec"])
        elif doc["kind"] == "RayJob":
            specs.append(doc["spec"]["rayClusterSpec"])
    return specs


def _pod_specs(spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [group["template"]["spec"] for group in groups]


def _claim(volume: dict[str, Any]) -> str | None:
    return volume.get("persistentVolumeClaim", {}).get("claimName")


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping nested anywhere in a YAML document."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _is_spot(node_config: dict[str, Any]) -> bool:
    market = node_config.get("InstanceMarketOptions", {}).get("MarketType")  # AWS
    scheduling = node_config.get("scheduling", {})  # GCP
    preemptible = scheduling.get("preemptible") is True
    return market == "spot" or preemptible or scheduling.get("provisioningModel") == "SPOT"


def _has_gpu(node_config: dict[str, Any]) -> bool:
    aws_gpu = re.match(r"[gp]\d", node_config.get("InstanceType", ""))  # g5.2xlarge, p4d...
    return bool(aws_gpu or node_config.get("guestAccelerators"))


def test_pyproject_pins_the_installed_ray() -> None:
    assert set(PINS) == {"ray", "torch", "torchvision"}
    assert PINS["ray"] == ray.__version__


@pytest.mark.parametrize(
    "path", sorted(CLUSTER.rglob("*.y*ml")), ids=lambda p: str(p.relative_to(CLUSTER))
)
def test_yaml_parses(path: Path) -> None:
    assert _load(path), f"{path} is empty"


def test_expected_configs_exist() -> None:
    for path in [*LAUNCHERS.values(), *KUBERAY, DOCKERFILE]:
        assert path.is_file(), path


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_launcher_passes_ray_schema(name: str) -> None:
    config = _launcher(name)
    validate_config(config)
    assert config["provider"]["type"] == name
    assert config["head_node_type"] in config["available_node_types"]


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_launcher_gpu_workers_are_spot_and_head_is_not(name: str) -> None:
    config = _launcher(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]["node_config"]
    workers = [t["node_config"] for key, t in types.items() if key != config["head_node_type"]]
    assert not _is_spot(head) and not _has_gpu(head)
    assert any(_has_gpu(w) and _is_spot(w) for w in workers)


def _kuberay_images() -> set[str]:
    return {
        c["image"] for s in _ray_cluster_specs() for p in _pod_specs(s) for c in p["containers"]
    }


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_launcher_runs_the_one_image_and_installs_nothing_in_it(name: str) -> None:
    config = _launcher(name)
    docker = config["docker"]
    # The Dockerfile's image, the one KubeRay runs; its tag names the pinned Ray.
    assert {docker["image"]} == _kuberay_images()
    assert f"ray{PINS['ray']}" in docker["image"].rsplit(":", 1)[1]
    assert not {"head_image", "worker_image"} & set(docker)
    keys = ["setup_commands", "head_setup_commands", "worker_setup_commands"]
    commands = "\n".join(cmd for key in keys for cmd in config.get(key, []))
    assert not re.search(r"pip install|apt-get|add-apt-repository", commands), commands
    assert "~/snas-ray" not in config["file_mounts"]  # the code comes with the image


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_launcher_mounts_the_shared_file_system_into_the_container(name: str) -> None:
    config = _launcher(name)
    host = "\n".join(config["initialization_commands"])  # on the host, before docker run
    assert re.search(rf"mount -t nfs4? .* {SHARED}\)", host.replace("\n", " ")), host
    assert f"--volume {SHARED}:{SHARED}" in config["docker"]["run_options"]


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_launcher_head_alone_offers_the_driver_resource(name: str) -> None:
    config = _launcher(name)
    types = config["available_node_types"]
    for key, node_type in types.items():
        offers = node_type["resources"].get(DRIVER_RESOURCE, 0)
        if key == config["head_node_type"]:
            assert offers >= 100, "nested trials' drivers belong on the on-demand head"
        else:
            assert offers == 0, key


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_launcher_starts_ray_with_token_auth(name: str) -> None:
    config = _launcher(name)
    for key in ["head_start_ray_commands", "worker_start_ray_commands"]:
        starts = [cmd for cmd in config[key] if "ray start" in cmd]
        assert starts and all("RAY_AUTH_MODE=token" in cmd for cmd in starts), key


def test_kuberay_kinds() -> None:
    docs = _kuberay_docs()
    kinds = {doc["kind"] for doc in docs}
    assert {"RayCluster", "RayJob", "PersistentVolumeClaim"} <= kinds
    for doc in docs:
        if doc["kind"].startswith("Ray"):
            assert doc["apiVersion"] == "ray.io/v1"


def test_kuberay_version_image_and_auth() -> None:
    pin = PINS["ray"]
    for spec in _ray_cluster_specs():
        assert spec["rayVersion"] == pin
        assert spec["authOptions"]["mode"] == "token"
        for pod in _pod_specs(spec):
            for container in pod["containers"]:
                tag = container["image"].rsplit(":", 1)[1]
                assert f"ray{pin}" in tag or tag.startswith(pin), container["image"]


def test_kuberay_exposes_nothing_outside_the_cluster() -> None:
    for doc in _kuberay_docs():
        assert doc["kind"] != "Ingress"
        if doc["kind"] == "Service":
            assert doc.get("spec", {}).get("type", "ClusterIP") == "ClusterIP"
        for mapping in _walk(doc):
            assert mapping.get("serviceType", "ClusterIP") == "ClusterIP"


def test_rayjob_runs_snas_ray_with_an_existing_config() -> None:
    (job,) = [doc for doc in _kuberay_docs() if doc["kind"] == "RayJob"]
    entrypoint = job["spec"]["entrypoint"]
    assert entrypoint.startswith("snas-ray ")
    args = shlex.split(entrypoint)
    configs = [args[i + 1] for i, arg in enumerate(args) if arg == "--config"]
    assert configs
    for config in configs:
        assert (ROOT / config).is_file(), config


def test_rayjob_cluster_matches_raycluster() -> None:
    def substance(spec: dict[str, Any]) -> tuple[Any, ...]:
        pods = _pod_specs(spec)
        images = [c["image"] for pod in pods for c in pod["containers"]]
        mounts = [c.get("volumeMounts") for pod in pods for c in pod["containers"]]
        scaling = spec["enableInTreeAutoscaling"], spec["autoscalerOptions"]
        groups = [{k: v for k, v in g.items() if k != "template"} for g in spec["workerGroupSpecs"]]
        head = spec["headGroupSpec"]["rayStartParams"]
        version = spec["rayVersion"], spec["authOptions"]
        return version, images, [p["volumes"] for p in pods], mounts, scaling, groups, head

    cluster, job = _ray_cluster_specs()
    assert substance(job) == substance(cluster)


def test_kuberay_shared_volume_is_rwx_and_mounted_everywhere() -> None:
    (pvc,) = [doc for doc in _kuberay_docs() if doc["kind"] == "PersistentVolumeClaim"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    claim = pvc["metadata"]["name"]
    for spec in _ray_cluster_specs():
        for pod in _pod_specs(spec):
            volumes = [v["name"] for v in pod["volumes"] if _claim(v) == claim]
            assert volumes, f"pod without the {claim} volume"
            for container in pod["containers"]:
                mounts = container.get("volumeMounts", [])
                assert any(m["name"] in volumes and m["mountPath"] == SHARED for m in mounts)


def test_dockerfile_matches_the_pins() -> None:
    text = DOCKERFILE.read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert base.startswith("rayproject/ray:")
    assert base.split(":", 1)[1].startswith(PINS["ray"] + "-")
    found = dict(_PIN.findall(text))
    assert found == {"torch": PINS["torch"], "torchvision": PINS["torchvision"]}


def test_kuberay_autoscales_the_gpu_group() -> None:
    for spec in _ray_cluster_specs():
        assert spec["enableInTreeAutoscaling"] is True
        options = spec["autoscalerOptions"]
        assert options["upscalingMode"] in ("Default", "Aggressive", "Conservative")
        assert options["idleTimeoutSeconds"] > 0
        for group in spec["workerGroupSpecs"]:
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
            assert group["maxReplicas"] > group["minReplicas"], "nothing for the autoscaler to do"


def test_kuberay_head_alone_offers_the_driver_resource() -> None:
    for spec in _ray_cluster_specs():
        head = spec["headGroupSpec"]["rayStartParams"]
        # KubeRay passes the value to `ray start --resources=...`: a JSON object in quotes.
        resources = json.loads(json.loads(head["resources"]))
        assert resources[DRIVER_RESOURCE] >= 100
        for group in spec["workerGroupSpecs"]:
            assert "resources" not in group["rayStartParams"]


def test_rayjob_retries_and_resumes_from_the_shared_volume() -> None:
    (job,) = [doc for doc in _kuberay_docs() if doc["kind"] == "RayJob"]
    assert job["spec"]["backoffLimit"] >= 1
    # Every retry reruns the entrypoint on a new cluster: it resumes only from an --out that
    # outlives the cluster, on the shared volume.
    args = shlex.split(job["spec"]["entrypoint"])
    out = args[args.index("--out") + 1]
    assert out.startswith(SHARED + "/")
    assert "--no-resume" not in args


def test_dockerfile_serves_the_launchers_autoscaler() -> None:
    text = DOCKERFILE.read_text()
    assert "boto3" in text and "google-api-python-client" in text
    assert re.search(r"^WORKDIR\s+/home/ray/snas-ray", text, flags=re.MULTILINE)
