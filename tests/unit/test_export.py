"""Exports of the chatbot and RAG recipes and of a service, with SmolLM2: every format from the
runner's own specs, the security profile on every container of every format, names valid in
Kubernetes, a model path with spaces and quotes, no key in any file, all-or-nothing writing,
schema validation of every Kubernetes object, and Quadlet keys against Quadlet's documentation."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from podlab.core.errors import PodlabError
from podlab.core.export import (
    FORMATS,
    ExportedFile,
    export_recipe,
    export_service,
    write_export,
)
from podlab.core.export.kube import KUBE_VERSION
from podlab.core.export.plan import target_passthrough
from podlab.core.recipes.catalog import RecipeEntry, load_recipe
from podlab.core.recipes.pod import plan_pod
from podlab.core.recipes.runner import build_inputs_hash, image_tag
from podlab.core.recipes.spec import ContainerRole
from podlab.core.serving.container_spec import (
    PODLAB_SERVER_IMAGE,
    ServiceOptions,
    model_server_spec,
)
from podlab.core.serving.gpu.passthrough import Passthrough
from podlab.core.serving.inference import InferenceService, ServiceState
from podlab.core.serving.planning import ResolvedModel, resolve_model
from podlab.core.settings import Settings
from tests import recipe_harness

pytestmark = pytest.mark.unit

RECIPES = recipe_harness.RECIPES
HOSTILE_FILE = 'my "best" model\'s file (v2).gguf'
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
RESTRICTED = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

# Quadlet's documented keys (podman-systemd.unit(5), docs/source/markdown/podman-systemd.unit.5.md
# of Podman 5.x; [Container] keys of Podman 4.4 are a subset). [Unit], [Service] and [Install]
# are systemd's own sections: Quadlet passes them on, applying only these [Install] keys.
QUADLET_KEYS: dict[str, frozenset[str]] = {
    "Container": frozenset(
        [
            "AddCapability",
            "AddDevice",
            "AddHost",
            "Annotation",
            "AutoUpdate",
            "CgroupsMode",
            "ContainerName",
            "ContainersConfModule",
            "DNS",
            "DNSOption",
            "DNSSearch",
            "DropCapability",
            "Entrypoint",
            "Environment",
            "EnvironmentFile",
            "EnvironmentHost",
            "Exec",
            "ExposeHostPort",
            "GIDMap",
            "GlobalArgs",
            "Group",
            "GroupAdd",
            "HealthCmd",
            "HealthInterval",
            "HealthLogDestination",
            "HealthMaxLogCount",
            "HealthMaxLogSize",
            "HealthOnFailure",
            "HealthRetries",
            "HealthStartPeriod",
            "HealthStartupCmd",
            "HealthStartupInterval",
            "HealthStartupRetries",
            "HealthStartupSuccess",
            "HealthStartupTimeout",
            "HealthTimeout",
            "HostName",
            "Image",
            "IP",
            "IP6",
            "Label",
            "LogDriver",
            "LogOpt",
            "Mask",
            "Memory",
            "Mount",
            "Network",
            "NetworkAlias",
            "NoNewPrivileges",
            "Notify",
            "PidsLimit",
            "Pod",
            "PodmanArgs",
            "PublishPort",
            "Pull",
            "ReadOnly",
            "ReadOnlyTmpfs",
            "ReloadCmd",
            "ReloadSignal",
            "Retry",
            "RetryDelay",
            "Rootfs",
            "RunInit",
            "SeccompProfile",
            "Secret",
            "SecurityLabelDisable",
            "SecurityLabelFileType",
            "SecurityLabelLevel",
            "SecurityLabelNested",
            "SecurityLabelType",
            "ShmSize",
            "StartWithPod",
            "StopSignal",
            "StopTimeout",
            "SubGIDMap",
            "SubUIDMap",
            "Sysctl",
            "Timezone",
            "Tmpfs",
            "UIDMap",
            "Ulimit",
            "Unmask",
            "User",
            "UserNS",
            "Volume",
            "WorkingDir",
        ]
    ),
    "Pod": frozenset(
        [
            "AddHost",
            "ContainersConfModule",
            "DNS",
            "DNSOption",
            "DNSSearch",
            "ExitPolicy",
            "GIDMap",
            "GlobalArgs",
            "HostName",
            "IP",
            "IP6",
            "Label",
            "Network",
            "NetworkAlias",
            "PodmanArgs",
            "PodName",
            "PublishPort",
            "ServiceName",
            "ShmSize",
            "StopTimeout",
            "SubGIDMap",
            "SubUIDMap",
            "UIDMap",
            "UserNS",
            "Volume",
        ]
    ),
    "Unit": frozenset(
        [
            "Description",
            "Documentation",
            "Wants",
            "Requires",
            "Requisite",
            "BindsTo",
            "PartOf",
            "Upholds",
            "Conflicts",
            "Before",
            "After",
        ]
    ),
    "Service": frozenset(["Restart", "RestartSec", "TimeoutStartSec", "TimeoutStopSec", "Type"]),
    "Install": frozenset(["Alias", "WantedBy", "RequiredBy", "UpheldBy", "DefaultInstance"]),
}
QUADLET_SECTIONS = {".container": {"Unit", "Container", "Service", "Install"},
                    ".pod": {"Unit", "Pod", "Service", "Install"}}  # fmt: skip


# --------------------------------------------------------------------------- helpers


def parse_unit(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every entry of a systemd-style unit, in order."""
    entries: list[tuple[str, str, str]] = []
    section = ""
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip()[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        entries.append((section, key, value))
    return entries


def systemd_unquote(value: str) -> str:
    """One double-quoted systemd word back to its text (escapes and %% undone)."""
    assert value.startswith('"') and value.endswith('"'), value
    inner = value[1:-1]
    out = []
    index = 0
    while index < len(inner):
        char = inner[index]
        if char == "\\":
            index += 1
            out.append(inner[index])
        elif char == "%":
            assert inner[index + 1] == "%", value
            index += 1
            out.append("%")
        else:
            out.append(char)
        index += 1
    return "".join(out)


def copied_paths(line: str) -> list[str]:
    """The paths of a JSON-form COPY line, as Buildah reads them (backslash escapes undone)."""
    return [re.sub(r"\\(.)", r"\1", word) for word in json.loads(line.split(" ", 2)[2])]


def files_image(files: dict[str, str]) -> str:
    """The model image the kube export's init container copies from."""
    [pod] = kube_documents(files["kube/pod.yaml"])
    return str(pod["spec"]["initContainers"][0]["image"])


def by_path(files: list[ExportedFile]) -> dict[str, str]:
    paths = [f.path for f in files]
    assert len(paths) == len(set(paths)), paths
    return {f.path: f.text for f in files}


def kube_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def pod_specs(document: dict[str, Any]) -> list[dict[str, Any]]:
    if document["kind"] == "Pod":
        return [document["spec"]]
    if document["kind"] == "Deployment":
        return [document["spec"]["template"]["spec"]]
    if document["kind"] == "ServingRuntime":
        return [document["spec"]]
    return []


def every_container(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="module")
def smollm2(smollm2_model: Path) -> ResolvedModel:
    return resolve_model(smollm2_model, Settings())


@pytest.fixture(scope="module")
def hostile_model(smollm2_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 under a file name with spaces and both kinds of quotes."""
    path = tmp_path_factory.mktemp("hostile dir 'x'") / HOSTILE_FILE
    try:
        os.link(smollm2_model, path)
    except OSError:
        shutil.copyfile(smollm2_model, path)
    return path


def recipe(name: str) -> RecipeEntry:
    return load_recipe(RECIPES / name)


def export_of(name: str, model: ResolvedModel, settings: Settings, **kwargs: Any) -> dict[str, str]:
    entry = recipe(name)
    embedding = model if entry.spec.with_role(ContainerRole.EMBEDDING_SERVICE) else None
    return by_path(export_recipe(entry, model, embedding=embedding, settings=settings, **kwargs))


# --------------------------------------------------------------------------- recipes


@pytest.mark.parametrize("name", ["chatbot", "rag"])
def test_every_format_holds_the_runners_own_containers(
    name: str, smollm2: ResolvedModel, settings: Settings
) -> None:
    entry = recipe(name)
    files = export_of(name, smollm2, settings)
    folders = {path.split("/", 1)[0] for path in files}
    assert folders == set(FORMATS)
    for folder in FORMATS:
        assert f"{folder}/README.md" in files, folder

    # The source of truth: what the runner creates for the same recipe and model.
    images = {}
    for container in entry.spec.containers:
        if container.image == PODLAB_SERVER_IMAGE:
            images[container.name] = PODLAB_SERVER_IMAGE
        else:
            images[container.name] = image_tag(
                entry.id, container, build_inputs_hash(container, {})
            )
    embedding = smollm2 if entry.spec.with_role(ContainerRole.EMBEDDING_SERVICE) else None
    runner_pod = plan_pod(
        entry, images, smollm2, embedding, Passthrough(), settings,
        run_id="x", pod="x", host_ports={}, labels={},
    )  # fmt: skip
    [pod] = kube_documents(files["kube/pod.yaml"])
    exported = {c["name"]: c for c in pod["spec"]["containers"]}
    assert len(exported) == len(entry.spec.containers)
    for planned in runner_pod.containers:
        container = next(c for n, c in exported.items() if n == planned.recipe.name)
        assert container["image"] == planned.spec.image
        env = env_of(container)
        for key, value in planned.spec.env.items():
            assert env[key] == value, (planned.recipe.name, key)
        for variable in planned.spec.secret_env:
            assert env[variable] == {
                "secretKeyRef": {"name": "podlab-" + name + "-api-key", "key": "api-key"}
            }
        assert set(env) == set(planned.spec.env) | set(planned.spec.secret_env)
        assert container.get("args", []) == planned.spec.command
        assert [p["containerPort"] for p in container.get("ports", [])] == list(
            planned.recipe.ports
        )

    # The model's digest and the parameters the user tested travel as annotations.
    [deployment, _service] = kube_documents(files["kube/deployment.yaml"])
    annotations = deployment["metadata"]["annotations"]
    digest = subprocess.run(
        ["sha256sum", str(smollm2.path)], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    assert annotations["podlab.model.sha256"] == digest
    assert json.loads(annotations["podlab.options"])["ctx_size"] == settings.default_context_size
    server = next(c for c in pod["spec"]["containers"] if c["name"] == "llamacpp-server")
    assert env_of(server)["CTX_SIZE"] == str(settings.default_context_size)
    assert env_of(server)["MODEL_PATH"] == f"/models/{smollm2.path.name}"

    # The model image holds that very file under /models.
    modelcar = files["containerfile/Containerfile.model"]
    assert f"sha256 {digest}" in modelcar
    copy = next(line for line in modelcar.splitlines() if line.startswith("COPY"))
    assert copied_paths(copy) == [
        smollm2.path.name,
        f"/models/{smollm2.path.name}",
    ]
    # Each built image comes with its build context, under the name the runner builds.
    for container in entry.spec.containers:
        if container.image != PODLAB_SERVER_IMAGE:
            folder = f"containerfile/{container.name}"
            assert files[f"{folder}/Containerfile"] == container.containerfile.read_text()
            assert images[container.name] in files["containerfile/README.md"]


def test_all_env_values_are_strings(smollm2: ResolvedModel, settings: Settings) -> None:
    files = export_of("rag", smollm2, settings)
    for path in ("kube/pod.yaml", "kube/deployment.yaml", "kserve/inferenceservice.yaml"):
        for document in kube_documents(files[path]):
            for spec in pod_specs(document):
                for container in every_container(spec):
                    for entry in container.get("env", []):
                        assert "value" in entry or "valueFrom" in entry
                        if "value" in entry:
                            assert isinstance(entry["value"], str), (path, entry)
    compose = yaml.safe_load(files["compose/compose.yaml"])
    for service in compose["services"].values():
        for value in service.get("environment", {}).values():
            assert isinstance(value, str)


@pytest.mark.parametrize("gpu", ["none", "nvidia"])
@pytest.mark.parametrize("name", ["chatbot", "rag"])
def test_the_security_profile_is_on_every_container_of_every_format(
    name: str, gpu: str, smollm2: ResolvedModel, settings: Settings
) -> None:
    files = export_of(name, smollm2, settings, gpu=gpu)
    entry = recipe(name)
    seen = 0
    for path in ("kube/pod.yaml", "kube/deployment.yaml", "kserve/inferenceservice.yaml"):
        for document in kube_documents(files[path]):
            for spec in pod_specs(document):
                if document["kind"] != "ServingRuntime":
                    assert spec["securityContext"]["runAsNonRoot"] is True
                for container in every_container(spec):
                    context = container["securityContext"]
                    assert {k: context.get(k) for k in RESTRICTED} == RESTRICTED, container
                    assert context["runAsUser"] != 0
                    seen += 1
    model_services = len(entry.spec.with_role(ContainerRole.MODEL_SERVICE)) + len(
        entry.spec.with_role(ContainerRole.EMBEDDING_SERVICE)
    )
    # pod.yaml and deployment.yaml: every container and one init container per model server.
    assert seen == 2 * (len(entry.spec.containers) + model_services) + 1

    for document in kube_documents(files["kube/pod.yaml"]):
        for container in document["spec"]["containers"]:
            for port in container.get("ports", []):
                assert port["hostIP"] == "127.0.0.1"
    compose = yaml.safe_load(files["compose/compose.yaml"])
    assert len(compose["services"]) == len(entry.spec.containers) + model_services
    for service in compose["services"].values():
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:")
        assert "privileged" not in service and "cap_add" not in service
    units = {p: t for p, t in files.items() if p.endswith(".container")}
    assert len(units) == len(entry.spec.containers)
    for path, text in units.items():
        entries = parse_unit(text)
        keys = [(s, k, v) for s, k, v in entries if s == "Container"]
        assert ("Container", "DropCapability", "all") in keys, path
        assert ("Container", "NoNewPrivileges", "true") in keys, path
        assert not [k for _s, k, _v in keys if k in ("AddCapability", "SecurityLabelDisable")]
    for path, text in files.items():
        for _section, key, value in (
            parse_unit(text) if path.startswith("quadlet/") and not (path.endswith(".md")) else []
        ):
            if key == "PublishPort":
                assert value.startswith("127.0.0.1:"), (path, value)
    for path, text in files.items():
        if path.startswith("containerfile/") and "Containerfile" in path.rsplit("/", 1)[-1]:
            users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
            assert users and users[-1] not in ("0", "root"), path

    # The GPU: the standard resource, CDI device and Compose reservation, only when asked.
    [pod] = kube_documents(files["kube/pod.yaml"])
    server = next(c for c in pod["spec"]["containers"] if c["name"] == "llamacpp-server")
    limits = server["resources"]["limits"]
    server_unit = parse_unit(files["quadlet/podlab-" + name + "-llamacpp-server.container"])
    devices = [v for _s, k, v in server_unit if k == "AddDevice"]
    reservations = compose["services"]["llamacpp-server"].get("deploy")
    if gpu == "nvidia":
        assert limits["nvidia.com/gpu"] == "1"
        assert devices == ["nvidia.com/gpu=all"]
        assert reservations["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    else:
        assert "nvidia.com/gpu" not in limits and devices == [] and reservations is None
    others = [c for c in pod["spec"]["containers"] if c["name"] != "llamacpp-server"]
    assert all("nvidia.com/gpu" not in c["resources"]["limits"] for c in others)


def test_resources_come_from_the_models_memory_estimate(
    smollm2: ResolvedModel, settings: Settings
) -> None:
    from podlab.core.models.hardware import estimate_memory

    files = export_of("chatbot", smollm2, settings)
    [pod] = kube_documents(files["kube/pod.yaml"])
    server = next(c for c in pod["spec"]["containers"] if c["name"] == "llamacpp-server")
    estimate = estimate_memory(
        smollm2.path.stat().st_size, None, None, settings.default_context_size
    )
    requested = int(server["resources"]["requests"]["memory"].removesuffix("Mi"))
    assert requested * (1 << 20) >= estimate.total > (requested - 1) * (1 << 20)
    assert int(server["resources"]["limits"]["memory"].removesuffix("Mi")) > requested
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = " ".join(server[probe]["exec"]["command"])
        assert "Bearer" in command and "PODLAB_API_KEY" in command
    assert "/v1/models" in " ".join(server["readinessProbe"]["exec"]["command"])


def test_kubernetes_objects_pass_the_schema_of_the_version_they_name(
    smollm2: ResolvedModel, settings: Settings
) -> None:
    for name in ("chatbot", "rag"):
        for gpu in ("none", "nvidia"):
            files = export_of(name, smollm2, settings, gpu=gpu)
            for path in ("kube/pod.yaml", "kube/deployment.yaml"):
                assert f"Kubernetes {KUBE_VERSION}+" in files[path]
                documents = kube_documents(files[path])
                assert documents
                for document in documents:
                    kubernetes_validate.validate(document, KUBE_VERSION, strict=True)
            # KServe's objects are custom resources: their containers must be valid Containers.
            runtime, service = kube_documents(files["kserve/inferenceservice.yaml"])
            assert service["kind"] == "InferenceService"
            assert service["spec"]["predictor"]["model"]["storageUri"].startswith("oci://")
            wrapped = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "check"},
                "spec": {"containers": runtime["spec"]["containers"]},
            }
            kubernetes_validate.validate(wrapped, KUBE_VERSION, strict=True)


def test_a_broken_object_fails_the_schema_check(smollm2: ResolvedModel, settings: Settings) -> None:
    """The validation above can fail: an integer env value is refused."""
    files = export_of("chatbot", smollm2, settings)
    [pod] = kube_documents(files["kube/pod.yaml"])
    pod["spec"]["containers"][0]["env"][0]["value"] = 8001
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)


def test_quadlet_keys_are_the_documented_ones(smollm2: ResolvedModel, settings: Settings) -> None:
    for name in ("chatbot", "rag"):
        files = export_of(name, smollm2, settings, gpu="nvidia")
        units = {p: t for p, t in files.items() if p.startswith("quadlet/") and "." in p[8:]}
        units = {p: t for p, t in units.items() if not p.endswith(".md")}
        assert any(p.endswith(".pod") for p in units)
        for path, text in units.items():
            suffix = "." + path.rsplit(".", 1)[1]
            for section, key, _value in parse_unit(text):
                assert section in QUADLET_SECTIONS[suffix], (path, section)
                assert key in QUADLET_KEYS[section], (path, section, key)
            containers = [line for line in text.splitlines() if line.startswith("Pod=")]
            if suffix == ".container":
                assert containers == [f"Pod=podlab-{name}.pod"]


def test_a_model_path_with_spaces_and_quotes_reaches_every_format(
    hostile_model: Path, settings: Settings
) -> None:
    model = resolve_model(hostile_model, settings)
    files = export_of("chatbot", model, settings)
    target = f"/models/{HOSTILE_FILE}"
    [pod] = kube_documents(files["kube/pod.yaml"])
    server = next(c for c in pod["spec"]["containers"] if c["name"] == "llamacpp-server")
    assert env_of(server)["MODEL_PATH"] == target
    compose = yaml.safe_load(files["compose/compose.yaml"])
    assert compose["services"]["llamacpp-server"]["environment"]["MODEL_PATH"] == target
    unit = parse_unit(files["quadlet/podlab-chatbot-llamacpp-server.container"])
    environment = [systemd_unquote(v) for _s, k, v in unit if k == "Environment"]
    # Quadlet mounts the model image's whole root at /modelcar.
    assert f"MODEL_PATH=/modelcar{target}" in environment
    mounts = [v for _s, k, v in unit if k == "Mount"]
    assert mounts == [f"type=image,source={files_image(files)},destination=/modelcar"]
    modelcar = files["containerfile/Containerfile.model"]
    copy = next(line for line in modelcar.splitlines() if line.startswith("COPY"))
    assert copied_paths(copy) == [HOSTILE_FILE, target]
    # The README's build command is one shell word per argument, the context the model's folder.
    build = next(
        line
        for line in files["containerfile/README.md"].splitlines()
        if "-f Containerfile.model" in line
    )
    assert shlex.split(build)[-1] == str(hostile_model.parent)


# --------------------------------------------------------------------------- services


def make_service(model: Path, name: str, api_key: str | None) -> InferenceService:
    options = ServiceOptions(ctx_size=2048, threads=2)
    spec = model_server_spec(
        str(model), "llama-cpp-python", Passthrough(), options,
        service_id="abc123", model_ref=name, host_port=35123, require_api_key=api_key is not None,
    )  # fmt: skip
    return InferenceService(
        id="abc123",
        name=name,
        engine="podman",
        model_ref=name,
        model_file=str(model),
        server_kind="llama-cpp-python",
        host="127.0.0.1",
        port=35123,
        state=ServiceState.READY,
        options=options,
        image=spec.image,
        spec=spec,
        api_key=api_key,
    )


def test_a_service_with_a_hostile_name_gets_valid_names_and_no_key_in_any_file(
    hostile_model: Path, settings: Settings
) -> None:
    key = "sk-podlab-" + "7" * 40
    name = "Ünïcode Model!!/../--" + "x" * 80
    service = make_service(hostile_model, name, key)
    files = by_path(export_service(service, settings=settings))
    for path, text in files.items():
        assert key not in text, path
    names: list[str] = []
    for path in ("kube/pod.yaml", "kube/deployment.yaml", "kserve/inferenceservice.yaml"):
        for document in kube_documents(files[path]):
            names.append(document["metadata"]["name"])
            for spec in pod_specs(document):
                names += [c["name"] for c in every_container(spec)]
                names += [v["name"] for v in spec.get("volumes", [])]
                for container in every_container(spec):
                    for entry in container.get("env", []):
                        if "secretKeyRef" in entry.get("valueFrom", {}):
                            names.append(entry["valueFrom"]["secretKeyRef"]["name"])
            if document["kind"] == "Service":
                for port in document["spec"]["ports"]:
                    assert len(port["name"]) <= 15 and re.search("[a-z]", port["name"])
    assert names
    for found in names:
        assert DNS_LABEL.match(found) and len(found) <= 63, found
    for document in kube_documents(files["kube/pod.yaml"]) + kube_documents(
        files["kube/deployment.yaml"]
    ):
        kubernetes_validate.validate(document, KUBE_VERSION, strict=True)
    # The service's own parameters: its context size and threads, its port on 127.0.0.1.
    [pod] = kube_documents(files["kube/pod.yaml"])
    [server] = pod["spec"]["containers"]
    assert env_of(server)["CTX_SIZE"] == "2048" and env_of(server)["THREADS"] == "2"
    assert server["ports"][0]["hostPort"] == 35123
    assert env_of(server)["PODLAB_API_KEY"]["secretKeyRef"]["key"] == "api-key"
    units = [p for p in files if p.startswith("quadlet/") and p.endswith(".container")]
    assert len(units) == 1 and not [p for p in files if p.endswith(".pod")]
    unit = parse_unit(files[units[0]])
    assert ("Container", "PublishPort", "127.0.0.1:35123:8000") in unit
    secrets = [v for _s, k, v in unit if k == "Secret"]
    secret = env_of(server)["PODLAB_API_KEY"]["secretKeyRef"]["name"]
    assert secrets == [f"{secret},type=env,target=PODLAB_API_KEY"]


def test_a_service_without_a_key_asks_for_none(smollm2_model: Path, settings: Settings) -> None:
    files = by_path(export_service(make_service(smollm2_model, "open", None), settings=settings))
    [pod] = kube_documents(files["kube/pod.yaml"])
    assert "PODLAB_API_KEY" not in env_of(pod["spec"]["containers"][0])
    assert "Secret=" not in "".join(t for p, t in files.items() if p.endswith(".container"))
    # A service found again from its labels (no spec in memory) whose key the keyring lost is
    # exported with a key all the same, as the require_api_key setting says.
    listed = make_service(smollm2_model, "listed", None)
    listed.spec = None
    [pod] = kube_documents(by_path(export_service(listed, settings=settings))["kube/pod.yaml"])
    assert "secretKeyRef" in env_of(pod["spec"]["containers"][0])["PODLAB_API_KEY"]


def test_an_export_for_another_gpu_plans_that_gpu(smollm2_model: Path, settings: Settings) -> None:
    files = by_path(
        export_service(make_service(smollm2_model, "m", "k"), settings=settings, gpu="nvidia")
    )
    [pod] = kube_documents(files["kube/pod.yaml"])
    server = pod["spec"]["containers"][0]
    assert env_of(server)["GPU_LAYERS"] == str(target_passthrough("nvidia").gpu_layers)
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"


# --------------------------------------------------------------------------- writing


def sample_files() -> list[ExportedFile]:
    return [ExportedFile("kube/pod.yaml", "a: 1\n"), ExportedFile("kube/README.md", "# x\n")]


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name != name and name in p.name)


def test_write_export_writes_refuses_a_non_empty_folder_and_force_replaces_it(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    write_export(sample_files(), out, force=False)
    assert (out / "kube" / "pod.yaml").read_text() == "a: 1\n"
    with pytest.raises(PodlabError, match="not empty"):
        write_export([ExportedFile("compose/compose.yaml", "x")], out, force=False)
    assert not (out / "compose").exists()
    write_export([ExportedFile("compose/compose.yaml", "x")], out, force=True)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "compose/compose.yaml"
    ]
    assert leftovers(tmp_path, "out") == []
    empty = tmp_path / "empty"
    empty.mkdir()
    write_export(sample_files(), empty, force=False)
    assert (empty / "kube" / "README.md").is_file()


def failing_files() -> Iterator[ExportedFile]:
    yield ExportedFile("kube/pod.yaml", "a: 1\n")
    raise RuntimeError("generation failed half-way")


def test_a_failure_leaves_nothing_half_written(tmp_path: Path) -> None:
    out = tmp_path / "new"
    with pytest.raises(RuntimeError, match="half-way"):
        write_export(failing_files(), out)
    assert not out.exists() and leftovers(tmp_path, "new") == []
    with pytest.raises(PodlabError, match="leave the output folder"):
        write_export([ExportedFile("a.txt", "x"), ExportedFile("../escape.txt", "x")], out)
    assert not out.exists() and not (tmp_path / "escape.txt").exists()
    assert leftovers(tmp_path, "new") == []
    # With --force, a failure keeps the export that was there.
    kept = tmp_path / "kept"
    write_export(sample_files(), kept)
    with pytest.raises(RuntimeError):
        write_export(failing_files(), kept, force=True)
    assert (kept / "kube" / "README.md").read_text() == "# x\n"
    assert leftovers(tmp_path, "kept") == []


def test_the_cli_exports_refuses_a_full_folder_and_names_a_missing_model(
    smollm2_model: Path, tmp_path: Path
) -> None:
    def podlab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "podlab", "recipe", "export", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "CONTAINER_HOST": "unix:///nonexistent/podman.sock"},
        )

    out = tmp_path / "export"
    done = podlab("chatbot", "--model", str(smollm2_model), "--format", "kube",
                  "--format", "compose", "-o", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["compose", "kube"]
    again = podlab("chatbot", "--model", str(smollm2_model), "--format", "all", "-o", str(out))
    assert again.returncode != 0 and "not empty" in again.stderr
    forced = podlab("chatbot", "--model", str(smollm2_model), "--format", "all", "-o", str(out),
                    "--force")  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(FORMATS)
    missing = podlab("chatbot", "--format", "kube", "-o", str(tmp_path / "other"))
    assert missing.returncode != 0
    assert "recommended" in missing.stderr and "podlab models pull" in missing.stderr
    assert not (tmp_path / "other").exists()


def test_registry_images_are_pinned_by_digest_and_local_builds_keep_their_tag(
    smollm2_model: Path, smollm2: ResolvedModel, settings: Settings
) -> None:
    from podlab.core.export.plan import repo_digest

    digest = "sha256:" + "a" * 64
    assert repo_digest("quay.io/ex/server:1.0", [f"quay.io/other/x@{digest}"]) is None
    assert (
        repo_digest("host:5000/ex/server:1.0", [f"host:5000/ex/server@{digest}"])
        == f"host:5000/ex/server@{digest}"
    )
    service = make_service(smollm2_model, "pinned", "k")
    assert service.spec is not None
    service.spec.image = "quay.io/ex/server:1.0"
    pinned = f"quay.io/ex/server@{digest}"
    files = by_path(
        export_service(service, settings=settings, image_digests={service.spec.image: pinned})
    )
    [pod] = kube_documents(files["kube/pod.yaml"])
    assert pod["spec"]["containers"][0]["image"] == pinned
    assert f"Image={pinned}" in "".join(t for p, t in files.items() if p.endswith(".container"))
    # A local build is named by its inputs' hash already, and its Containerfile is exported.
    local = {PODLAB_SERVER_IMAGE: f"localhost/podlab/llamacpp-python@{digest}"}
    files = export_of("chatbot", smollm2, settings, image_digests=local)
    [pod] = kube_documents(files["kube/pod.yaml"])
    assert pod["spec"]["containers"][0]["image"] == PODLAB_SERVER_IMAGE


def test_the_deployment_lets_the_guard_answer_to_its_service_names(
    smollm2: ResolvedModel, settings: Settings
) -> None:
    """On a cluster clients reach the model server by its Service's names, which the guard
    would refuse as foreign hosts: the Deployment lists them, with the namespace from the
    downward API defined before the variable that expands it. pod.yaml needs no such names."""
    files = export_of("chatbot", smollm2, settings)
    deployment, service = kube_documents(files["kube/deployment.yaml"])
    name = service["metadata"]["name"]
    containers = deployment["spec"]["template"]["spec"]["containers"]
    server = next(c for c in containers if c["name"] == "llamacpp-server")
    env = [item["name"] for item in server["env"]]
    assert env.index("POD_NAMESPACE") < env.index("PODLAB_ALLOWED_HOSTS")
    allowed = next(i["value"] for i in server["env"] if i["name"] == "PODLAB_ALLOWED_HOSTS")
    assert allowed.split(",") == [
        name,
        f"{name}.$(POD_NAMESPACE)",
        f"{name}.$(POD_NAMESPACE).svc",
        f"{name}.$(POD_NAMESPACE).svc.cluster.local",
    ]
    app = next(c for c in containers if c["name"] != "llamacpp-server")
    assert "PODLAB_ALLOWED_HOSTS" not in [item["name"] for item in app.get("env", [])]
    [pod] = kube_documents(files["kube/pod.yaml"])
    assert "PODLAB_ALLOWED_HOSTS" not in files["kube/pod.yaml"], pod["metadata"]["name"]
