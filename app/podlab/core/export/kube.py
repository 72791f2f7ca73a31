"""Kubernetes YAML (and KServe) from an `ExportPlan`.

One pod holds every container of a recipe, as in Podlab's runner, so the app reaches its model
service at localhost. `pod.yaml` is a `kind: Pod` that `podman kube play` runs unchanged (Podman
4.3 removes "once" init containers while they still run, and ignores the workaround annotation in
a Deployment's template, so the Pod carries `io.podman.annotations.init.container.type: always`);
`deployment.yaml` is the same pod template as a Deployment plus a Service, for a cluster.

Every container, init containers included, runs under the Pod Security Standard "restricted"
profile. The model comes from the model image: an init container copies it into an emptyDir that
the server mounts read-only at /models. The key is a Secret the user creates, referenced by
secretKeyRef; no key is ever written into a file.
"""

from __future__ import annotations

from typing import Any

import yaml

from podlab import __version__
from podlab.core.export.plan import (
    APP_USER,
    MODEL_MOUNT,
    SECRET_KEY,
    ExportedFile,
    ExportPlan,
    Part,
    dns_label,
    memory_quantity,
    secret_env,
)
from podlab.core.serving.container_spec import MODELS_DIR
from podlab.core.serving.services import liveness_path, readiness_path

KUBE_VERSION = "1.30.0"
"""The Kubernetes version the objects are written for (and validated against)."""
INIT_CONTAINER_ANNOTATION = "io.podman.annotations.init.container.type"
GPU_RESOURCES = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu", "intel": "gpu.intel.com/i915"}
"""The standard extended resource of each vendor's Kubernetes device plugin."""
PROBE_PYTHON = "/opt/venv/bin/python"
"""Podlab's model-server image has Python; its guarded server asks the key on every route, so
its probes run inside the container, where the key is in the environment."""
ANNOTATION_VALUE_MAX = 63
STARTUP_SECONDS = 600
"""How long a model may take to load before the startup probe gives up."""


def restricted_security_context() -> dict[str, Any]:
    """The Pod Security Standard "restricted" profile for one container."""
    return {
        "runAsNonRoot": True,
        "runAsUser": APP_USER,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


class _PlainDumper(yaml.SafeDumper):
    """Writes repeated values out again: no `&anchor`/`*alias`, which readers of deployment
    files do not expect."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(document: dict[str, Any]) -> str:
    return yaml.dump(
        document, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False, width=1000
    )


def dump(documents: list[dict[str, Any]], header: str) -> str:
    body = "---\n".join(to_yaml(doc) for doc in documents)
    comments = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.splitlines())
    return comments + body


def _env(part: Part, secret_name: str) -> list[dict[str, Any]]:
    """Every variable as a string value, the key by secretKeyRef (never inline)."""
    env: list[dict[str, Any]] = [
        {"name": key, "value": str(value)} for key, value in part.spec.env.items()
    ]
    for variable, _secret in secret_env(part):
        env.append(
            {
                "name": variable,
                "valueFrom": {"secretKeyRef": {"name": secret_name, "key": SECRET_KEY}},
            }
        )
    return env


def _probe_action(part: Part, path: str, port: int) -> dict[str, Any]:
    if part.server_kind == "llama-cpp-python":
        key_variable = next((v for v, _ in secret_env(part)), "PODLAB_API_KEY")
        script = (
            "import os, urllib.request; "
            f"request = urllib.request.Request('http://127.0.0.1:{port}{path}', "
            f"headers={{'Authorization': 'Bearer ' + os.environ.get('{key_variable}', '')}}); "
            "urllib.request.urlopen(request, timeout=5)"
        )
        return {"exec": {"command": [PROBE_PYTHON, "-c", script]}}
    return {"httpGet": {"path": path, "port": port}}


def probes(part: Part) -> dict[str, Any]:
    """Startup, readiness and liveness probes: the model servers' own health routes (see
    `readiness_path`/`liveness_path`), a TCP check for other containers with a port."""
    if not part.ports:
        return {}
    port = part.ports[0]
    if part.server_kind is not None:
        ready = _probe_action(part, readiness_path(part.server_kind), port)
        alive = _probe_action(part, liveness_path(part.server_kind), port)
    else:
        ready = alive = {"tcpSocket": {"port": port}}
    period = 5
    return {
        "startupProbe": {
            **ready,
            "periodSeconds": period,
            "timeoutSeconds": 5,
            "failureThreshold": STARTUP_SECONDS // period,
        },
        "readinessProbe": {**ready, "periodSeconds": 10, "timeoutSeconds": 5},
        "livenessProbe": {
            **alive,
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
    }


def resources(part: Part, gpu: str) -> dict[str, Any]:
    """Requests from the model's memory estimate (limits half as much again); the vendor's GPU
    resource on the chat model server."""
    if part.model is None:
        return {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}}
    estimate = part.model.memory_bytes
    limits: dict[str, str] = {"memory": memory_quantity(estimate * 3 // 2)}
    if gpu in GPU_RESOURCES and part.spec.devices:
        limits[GPU_RESOURCES[gpu]] = "1"
    return {"requests": {"cpu": "1", "memory": memory_quantity(estimate)}, "limits": limits}


def _volume_name(plan: ExportPlan, part: Part) -> str:
    """Podman turns an emptyDir into a named volume: the export's name keeps it apart from
    other pods' volumes."""
    return dns_label(f"{plan.name}-model-{part.name}")


def container(part: Part, plan: ExportPlan, *, host_ports: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"name": part.name, "image": part.spec.image}
    if part.spec.entrypoint is not None:
        item["command"] = list(part.spec.entrypoint)
    if part.spec.command:
        item["args"] = list(part.spec.command)
    if part.spec.workdir:
        item["workingDir"] = part.spec.workdir
    env = _env(part, plan.secret_name)
    if env:
        item["env"] = env
    if part.ports:
        ports: list[dict[str, Any]] = []
        for port in part.ports:
            entry: dict[str, Any] = {"containerPort": port, "protocol": "TCP"}
            if host_ports:
                entry["hostPort"] = plan.host_ports.get(port, port)
                entry["hostIP"] = "127.0.0.1"
            ports.append(entry)
        item["ports"] = ports
    if part.model is not None:
        item["volumeMounts"] = [
            {"name": _volume_name(plan, part), "mountPath": MODELS_DIR, "readOnly": True}
        ]
    item["resources"] = resources(part, plan.gpu)
    item.update(probes(part))
    item["securityContext"] = restricted_security_context()
    return item


def init_container(plan: ExportPlan, part: Part) -> dict[str, Any]:
    """Copies the model out of the model image into the pod's emptyDir (runs everywhere,
    `podman kube play` included; clusters with image volumes could mount it instead)."""
    assert part.model is not None
    return {
        "name": f"{part.name}-model"[:63].rstrip("-"),
        "image": part.model.image,
        "command": ["/bin/cp", "-Rf", f"{MODELS_DIR}/.", f"{MODEL_MOUNT}/"],
        "volumeMounts": [{"name": _volume_name(plan, part), "mountPath": MODEL_MOUNT}],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": restricted_security_context(),
    }


def pod_spec(plan: ExportPlan, *, host_ports: bool) -> dict[str, Any]:
    served = [p for p in plan.parts if p.model is not None]
    spec: dict[str, Any] = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": APP_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,
    }
    if served:
        spec["initContainers"] = [init_container(plan, p) for p in served]
    spec["containers"] = [container(p, plan, host_ports=host_ports) for p in plan.parts]
    if served:
        spec["volumes"] = [{"name": _volume_name(plan, p), "emptyDir": {}} for p in served]
    return spec


def _labels(plan: ExportPlan) -> dict[str, str]:
    return {"app.kubernetes.io/name": plan.name, "app.kubernetes.io/managed-by": "podlab"}


def podman_annotations(plan: ExportPlan) -> tuple[dict[str, str], dict[str, str]]:
    """(kept, left out): Podman 4.3's `kube play` refuses an annotation value longer than 63
    characters (a sha256 is 64), so those go into the file's header comment instead."""
    kept = {k: v for k, v in plan.annotations.items() if len(v) <= ANNOTATION_VALUE_MAX}
    left = {k: v for k, v in plan.annotations.items() if k not in kept}
    return kept, left


def pod_document(plan: ExportPlan) -> dict[str, Any]:
    """A Pod for `podman kube play`: ports published on 127.0.0.1 only."""
    annotations = {INIT_CONTAINER_ANNOTATION: "always", **podman_annotations(plan)[0]}
    # Podman 4.3 applies the pod's restart policy to its init containers too: "Always" would
    # copy the model again and again.
    spec = {"restartPolicy": "OnFailure", **pod_spec(plan, host_ports=True)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": plan.name, "labels": _labels(plan), "annotations": annotations},
        "spec": spec,
    }


def service_host_names(service: str) -> list[dict[str, Any]]:
    """The guarded server answers only requests addressed to localhost: on a cluster, clients
    call it by its Service's names, which this lists in PODLAB_ALLOWED_HOSTS (the namespace
    from the downward API, expanded by Kubernetes in the variable that follows it)."""
    names = [
        service,
        f"{service}.$(POD_NAMESPACE)",
        f"{service}.$(POD_NAMESPACE).svc",
        f"{service}.$(POD_NAMESPACE).svc.cluster.local",
    ]
    return [
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "PODLAB_ALLOWED_HOSTS", "value": ",".join(names)},
    ]


def deployment_documents(plan: ExportPlan) -> list[dict[str, Any]]:
    """A Deployment (one replica; Recreate, so a GPU is never asked for twice) and a
    ClusterIP Service for every published port."""
    labels = _labels(plan)
    template_spec = pod_spec(plan, host_ports=False)
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": plan.name, "labels": labels, "annotations": dict(plan.annotations)},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": dict(plan.annotations)},
                "spec": template_spec,
            },
        },
    }
    ports = [
        {"name": f"p{port}", "port": port, "targetPort": port, "protocol": "TCP"}
        for part in plan.parts
        for port in part.ports
    ]
    documents: list[dict[str, Any]] = [deployment]
    if ports:
        for part, item in zip(plan.parts, template_spec["containers"], strict=True):
            if part.server_kind == "llama-cpp-python" and part.ports:
                item.setdefault("env", []).extend(service_host_names(plan.name))
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": plan.name, "labels": labels},
                "spec": {"type": "ClusterIP", "selector": labels, "ports": ports},
            }
        )
    return documents


def kube_files(plan: ExportPlan) -> list[ExportedFile]:
    header = (
        f"{plan.title}: generated by Podlab {__version__} for Kubernetes {KUBE_VERSION}+.\n"
        f"The key is the Secret {plan.secret_name} (key {SECRET_KEY!r}); see README.md."
    )
    left_out = "".join(f"\n{key}: {value}" for key, value in podman_annotations(plan)[1].items())
    pod_header = header + left_out
    return [
        ExportedFile("kube/pod.yaml", dump([pod_document(plan)], pod_header)),
        ExportedFile("kube/deployment.yaml", dump(deployment_documents(plan), header)),
        ExportedFile("kube/README.md", kube_readme(plan)),
    ]


def kube_readme(plan: ExportPlan) -> str:
    images = "\n".join(f"- `{m.image}` ({m.ref}, sha256 {m.sha256})" for m in plan.models)
    app = plan.app
    where = ""
    if app is not None and app.ports:
        port = app.ports[0]
        where = f"The app answers at http://127.0.0.1:{plan.host_ports.get(port, port)}.\n"
    return f"""# Kubernetes: {plan.title}

Generated by Podlab {__version__}. Two files hold the same pod (every container of
{plan.title} in one pod, as Podlab runs it, so the app reaches its model server at localhost):

- `pod.yaml`: a Pod for `podman kube play` (ports published on 127.0.0.1 only);
- `deployment.yaml`: a Deployment and a ClusterIP Service for a cluster (Kubernetes
  {KUBE_VERSION} or later).

Annotations name the model, its sha256 and the parameters Podlab ran it with; `pod.yaml` keeps
values longer than 63 characters (the sha256) in its header comment, as Podman 4.3 refuses them.

Every container, init containers included, runs under the Pod Security Standard "restricted"
profile. The model comes from its model image (see `../containerfile/`):

{images}

An init container copies it into an emptyDir mounted read-only at `/models`.

## The key

The model server requires a bearer key; no file here holds it. It is read from the Secret
`{plan.secret_name}`, key `{SECRET_KEY}`. Make one (keep the value to call the API):

    KEY=$(head -c 32 /dev/urandom | base64 | tr -d '/+=')

On a cluster:

    kubectl create secret generic {plan.secret_name} --from-literal={SECRET_KEY}="$KEY"
    kubectl apply -f deployment.yaml

With Podman (`podman kube play` reads a Podman secret holding the Secret's data as JSON):

    printf '{{"{SECRET_KEY}": "%s"}}' "$(printf %s "$KEY" | base64 -w0)" \\
        | podman secret create {plan.secret_name} -
    podman kube play pod.yaml

{where}Call the model server with `Authorization: Bearer $KEY`. It answers only requests
addressed to localhost (its guard against DNS rebinding), and, in `deployment.yaml`, to the
Service's names (`{plan.name}`, `{plan.name}.NAMESPACE`, `….svc`, `….svc.cluster.local`, listed
in its `PODLAB_ALLOWED_HOSTS` variable, comma-separated): add any other name, such as an
Ingress host, there. `kubectl port-forward deployment/{plan.name} PORT` works as it is.

## Remove

    podman kube down pod.yaml && podman secret rm {plan.secret_name}
    kubectl delete -f deployment.yaml && kubectl delete secret {plan.secret_name}

The images must exist where the pod runs: build them from `../containerfile/` (and push them
to a registry the cluster can pull from, changing the `image:` references accordingly).
"""


def kserve_files(plan: ExportPlan) -> list[ExportedFile]:
    """A ServingRuntime running Podlab's model server and an InferenceService whose
    `storageUri: oci://…` names the model image (KServe's modelcar: the files under /models,
    mounted at /mnt/models in the server)."""
    served = [p for p in plan.parts if p.model is not None and p.role == "model-service"]
    if not served:
        return []
    part = served[0]
    assert part.model is not None
    runtime_name = f"{plan.name}-runtime"[:63].rstrip("-")
    env = [e for e in _env(part, plan.secret_name) if e["name"] not in ("MODEL_PATH", "PORT")]
    env += [
        {"name": "MODEL_PATH", "value": f"{MODEL_MOUNT}/{part.model.file_name}"},
        {"name": "PORT", "value": "8080"},
        {"name": "PODLAB_ALLOWED_HOSTS", "value": f"{plan.name}-predictor"},
    ]
    server = {
        "name": "kserve-container",
        "image": part.spec.image,
        **({"command": list(part.spec.entrypoint)} if part.spec.entrypoint is not None else {}),
        **({"args": list(part.spec.command)} if part.spec.command else {}),
        "env": env,
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
        "resources": resources(part, plan.gpu),
        "securityContext": restricted_security_context(),
    }
    runtime = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": runtime_name, "annotations": dict(plan.annotations)},
        "spec": {
            "supportedModelFormats": [{"name": "gguf", "version": "1", "autoSelect": True}],
            "containers": [server],
        },
    }
    service = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": plan.name, "annotations": dict(plan.annotations)},
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "gguf"},
                    "runtime": runtime_name,
                    "storageUri": f"oci://{part.model.image}",
                }
            }
        },
    }
    header = f"{plan.title}: KServe, generated by Podlab {__version__}; see README.md."
    readme = f"""# KServe: {plan.title}

Generated by Podlab {__version__}. `inferenceservice.yaml` holds a ServingRuntime running
Podlab's model server (`{part.spec.image}`) and an InferenceService whose
`storageUri: oci://{part.model.image}` is the model image built from
`../containerfile/Containerfile.model` (KServe mounts its `/models` at `/mnt/models`; enable
KServe's modelcar support, `storageInitializer.enableModelcar`). Push both images to a registry
the cluster pulls from and change the two references.

The model server requires a bearer key, read from the Secret `{plan.secret_name}` (key
`{SECRET_KEY}`); no file here holds it:

    kubectl create secret generic {plan.secret_name} --from-literal={SECRET_KEY}="$KEY"
    kubectl apply -f inferenceservice.yaml

The server answers only requests addressed to the names in `PODLAB_ALLOWED_HOSTS` (and
localhost): add the InferenceService's host name there if your ingress keeps it.
"""
    return [
        ExportedFile("kserve/inferenceservice.yaml", dump([runtime, service], header)),
        ExportedFile("kserve/README.md", readme),
    ]
