"""`podlab doctor`, `podlab serve MODEL` and `podlab services list|start|stop|restart|rm|logs`.

`serve` returns once the server answers; the service keeps running (a container, or for the
local engine a detached subprocess) until `podlab services stop ID`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from podlab.cli.export import register_services_export
from podlab.cli.output import print_json, print_table, terminal_safe
from podlab.core.logs import log_file
from podlab.core.models.store import ModelStore
from podlab.core.paths import Locations
from podlab.core.serving.container_spec import SERVER_KINDS, ServiceOptions
from podlab.core.serving.engine import INIT_MISSING_FIX, Engine
from podlab.core.serving.gpu.detect import GpuReport
from podlab.core.serving.gpu.host import Diagnosis
from podlab.core.serving.gpu.passthrough import WANTS, plan_passthrough
from podlab.core.serving.inference import InferenceService, ServiceState
from podlab.core.serving.planning import ENGINE_CHOICES, ServeRequest
from podlab.core.serving.selftest import (
    SELFTEST_TIMEOUT,
    SelfTestResult,
    run_selftest,
    selftest_model,
)
from podlab.core.serving.services import ServiceEvent, ServiceManager
from podlab.core.serving.snippets import snippet, snippets
from podlab.core.settings import Settings, load_settings

DEATH_LOG_LINES = 10
"""Lines of a dead service's log that `services list` prints under the table."""


def register(subparsers: Any) -> None:
    doctor = subparsers.add_parser(
        "doctor",
        help="check Podman, GPUs (CDI) and the local engine, with fixes",
        description="What Podlab can serve models with on this machine, and how to fix what "
        "is missing: the Podman service and version, GPUs and their CDI devices, the GPU plan "
        "`serve` would use, and the local llama-cpp-python engine, tested with one tiny real "
        "inference of the smallest downloaded or imported model.",
    )
    doctor.add_argument(
        "--selftest-timeout",
        type=float,
        default=SELFTEST_TIMEOUT,
        metavar="S",
        help=f"seconds the local engine's self-test may take (default {SELFTEST_TIMEOUT:g})",
    )
    doctor.add_argument("--json", action="store_true", help="print JSON")
    doctor.set_defaults(func=cmd_doctor)

    serve = subparsers.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible API (Podman or local)",
        description="Start an inference server for MODEL (a GGUF file, a downloaded model id, "
        "or a catalog model id) and return once it answers. It keeps running: see "
        "`podlab services`. Ports are published on 127.0.0.1 unless the bind_address setting "
        "says otherwise.",
    )
    serve.add_argument("model", metavar="MODEL")
    serve.add_argument("--engine", choices=ENGINE_CHOICES, default="auto")
    serve.add_argument("--gpu", choices=WANTS, default="auto")
    serve.add_argument(
        "--cpu-ok",
        action="store_true",
        help="run on the CPU when the GPU cannot be passed (instead of failing)",
    )
    serve.add_argument("--ctx", type=int, metavar="N", help="context size (tokens)")
    serve.add_argument("--port", type=int, metavar="P", help="host port (default: a free one)")
    serve.add_argument(
        "--name", metavar="NAME", help="the service's name (default: podlab-MODEL-ID)"
    )
    serve.add_argument("--image", metavar="IMG", help="server image (default: per GPU variant)")
    serve.add_argument("--server", choices=SERVER_KINDS, help="server kind (default: by image)")
    serve.add_argument("--gpu-layers", type=int, metavar="N", help="layers on the GPU")
    serve.add_argument("--threads", type=int, metavar="N", help="CPU threads")
    serve.add_argument("--parallel", type=int, metavar="N", help="parallel request slots")
    serve.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        metavar="S",
        help="seconds to wait for the server to answer (default 180)",
    )
    serve.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be created (podman-py kwargs with --json)",
    )
    serve.add_argument("--json", action="store_true", help="print JSON")
    serve.set_defaults(func=cmd_serve)

    services = subparsers.add_parser(
        "services",
        help="list, start, stop, restart, remove and read logs of inference services",
        description="Podlab's inference services (containers labelled podlab.managed=true and "
        "local servers). Containers without Podlab's labels are never listed or touched.",
    )
    actions = services.add_subparsers(dest="services_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list services")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_list)
    for name, help_text in (
        ("start", "start a stopped service and wait until it answers"),
        ("restart", "restart a service and wait until it answers"),
        ("stop", "stop a service (it can start again)"),
        ("rm", "stop and remove a service"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("service", metavar="ID", help="id, name or unique id prefix")
        action.add_argument("--json", action="store_true", help="print JSON")
        action.set_defaults(func=cmd_action, action=name)
    show = actions.add_parser("show", help="a service's endpoint, key and client code")
    show.add_argument("service", metavar="ID", help="id, name or unique id prefix")
    show.add_argument("--json", action="store_true", help="print JSON (with the api_key)")
    show.set_defaults(func=cmd_show)
    logs = actions.add_parser("logs", help="print a service's server log")
    logs.add_argument("service", metavar="ID", help="id, name or unique id prefix")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    logs.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    logs.set_defaults(func=cmd_logs)
    register_services_export(actions)


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        return asyncio.run(coro)
    except BrokenPipeError:  # `podlab services logs ID | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _settings() -> Settings:
    loaded = load_settings()
    for error in loaded.errors:
        print(f"podlab: warning: {error}", file=sys.stderr)
    return loaded.settings


def _manager(settings: Settings | None = None) -> ServiceManager:
    settings = settings or _settings()
    return ServiceManager(Engine(settings), settings=settings)


# --------------------------------------------------------------------------- doctor


def current_log_file() -> Path:
    """The file this process logs to (the default place when logging was not configured)."""
    return log_file() or Locations.default().log_file


def _diag_dict(diagnosis: Diagnosis) -> dict[str, Any]:
    return {
        "level": diagnosis.level,
        "message": diagnosis.message,
        "fix": diagnosis.fix,
        "fix_command": diagnosis.fix_command,
        "action": diagnosis.action,
    }


def _gpu_dict(report: GpuReport) -> dict[str, Any]:
    return {
        "gpus": [
            {
                "vendor": gpu.vendor,
                "index": gpu.index,
                "name": gpu.name,
                "memory_bytes": gpu.memory_bytes,
                "driver": gpu.driver,
            }
            for gpu in report.gpus
        ],
        "cdi_devices": [device.qualified_name for device in report.cdi_devices],
        "cdi_files": [spec.path for spec in report.cdi_files],
        "nvidia_ctk": report.nvidia_ctk,
        "diagnoses": [_diag_dict(d) for d in report.diagnoses],
    }


async def _selftest(manager: ServiceManager, settings: Settings, within: float) -> SelfTestResult:
    """One tiny real inference of the local engine, on the smallest model in the store."""
    model = await asyncio.to_thread(selftest_model, ModelStore.from_settings(settings))
    return await run_selftest(model, python=manager.local.python, within=within)


async def _doctor(as_json: bool, selftest_timeout: float) -> int:
    settings = _settings()
    manager = _manager(settings)
    status = await manager.engine.connect()
    report = await manager.gpu_report()
    plan = plan_passthrough(report, "auto")
    local_ok, local_text = manager.local.available()
    selftest = await _selftest(manager, settings, selftest_timeout) if local_ok else None
    local_usable = local_ok and (selftest is None or not selftest.broken)
    result = {
        "podman": status.to_dict(),
        "gpu": _gpu_dict(report),
        "plan": {
            "vendor": plan.passthrough.vendor,
            "devices": plan.passthrough.devices,
            "image_variant": plan.passthrough.image_variant,
            "gpu_layers": plan.passthrough.gpu_layers,
            "diagnosis": _diag_dict(plan.diagnosis),
        },
        "local": {
            "available": local_ok,
            "detail": local_text,
            "selftest": None if selftest is None else selftest.to_dict(),
        },
        "can_serve": status.available or local_usable,
        "log_file": str(current_log_file()),
    }
    await manager.engine.aclose()  # an SSH tunnel stops now, not at exit
    if as_json:
        print_json(result)
        return 0 if result["can_serve"] else 1

    mark = {"ok": "ok", "warning": "warning", "error": "PROBLEM"}
    print("Podman")
    if status.available:
        print(f"  ok       Podman {status.version} at {status.url} ({status.source})")
        if status.transport == "ssh":
            print("           reached through an SSH tunnel: every call works over it")
        if status.limits:
            print(f"  warning  {status.limits}")
        if status.has_init is False:
            print("  warning  catatonit is missing: containers start without an init process")
            print(f"           fix: {INIT_MISSING_FIX}")
    else:
        print(f"  PROBLEM  {status.problem}")
        if status.hint:
            print(f"           fix: {status.hint}")
    print("GPUs")
    if not report.gpus:
        print("  -        no GPU found")
    for gpu in report.gpus:
        print(f"  found    {gpu.vendor}: {gpu.label}")
    if report.cdi_devices:
        names = ", ".join(d.qualified_name for d in report.cdi_devices)
        print(f"  CDI      {names}")
    for diagnosis in [*report.diagnoses, plan.diagnosis]:
        print(f"  {mark[diagnosis.level]:<8} {diagnosis.message}")
        if diagnosis.fix:
            print(f"           fix: {diagnosis.fix}")
        if diagnosis.fix_command:
            print(f"           run: {' '.join(diagnosis.fix_command)}")
        if diagnosis.action:
            print(f"           Podlab can do this for you (action {diagnosis.action}, asks first)")
    print("Local engine")
    print(f"  {'ok' if local_ok else 'missing':<8} {local_text}")
    if selftest is not None:
        _print_selftest(selftest)
    print("Log")
    print(f"  file     {current_log_file()}")
    if not result["can_serve"]:
        print("podlab: error: no engine can serve models here", file=sys.stderr)
        print(f"hint: {status.hint}", file=sys.stderr)
        return 1
    return 0


def _print_selftest(result: SelfTestResult) -> None:
    mark = "ok" if result.ok else ("-" if not result.broken else "PROBLEM")
    print(f"  {mark:<8} self-test: local engine: {result.summary}")
    if result.model:
        print(f"           model: {result.model}")
    if result.log_tail:
        print("           last lines of its log:")
        for line in result.log_tail.splitlines():
            print(f"             {terminal_safe(line)}")
    if result.fix:
        print(f"           fix: {result.fix}")


def cmd_doctor(args: argparse.Namespace) -> int:
    return _run(_doctor(args.json, args.selftest_timeout))


# --------------------------------------------------------------------------- serve


def _request(args: argparse.Namespace, settings: Settings) -> ServeRequest:
    options = ServiceOptions(
        ctx_size=args.ctx or settings.default_context_size,
        gpu_layers=args.gpu_layers,
        threads=args.threads,
        parallel=args.parallel,
        port=args.port,
        bind_address=settings.bind_address or "127.0.0.1",
        image=args.image,
    )
    return ServeRequest(
        args.model,
        engine=args.engine,
        gpu=args.gpu,
        options=options,
        server_kind=args.server,
        allow_cpu=args.cpu_ok,
        name=args.name,
    )


def _describe(service: InferenceService) -> list[str]:
    lines = [
        f"Serving {service.model_ref} ({service.engine}, {service.server_kind})",
        f"  id        {service.id}  ({service.name})",
        f"  endpoint  {service.api_url}",
        "  api key   "
        + (
            "required (podlab chat uses it; see podlab services show ID)"
            if service.api_key
            else "none: any program or web page on this computer can use it"
        ),
    ]
    device = service.device
    offload = service.offload
    if offload is not None and offload.offloaded_layers is not None:
        total = f"/{offload.total_layers}" if offload.total_layers is not None else ""
        device += f" ({offload.offloaded_layers}{total} layers on the GPU)"
        if offload.device_name:
            device += f", {offload.device_name}"
    lines.append(f"  device    {device}")
    if service.diagnosis is not None and service.diagnosis.level != "ok":
        lines.append(f"  {service.diagnosis.level:<9} {service.diagnosis.message}")
        if service.diagnosis.fix:
            lines.append(f"            fix: {service.diagnosis.fix}")
    return lines


async def _serve(args: argparse.Namespace) -> int:
    settings = _settings()
    manager = _manager(settings)
    request = _request(args, settings)
    if args.dry_run:
        prepared = await manager.prepare(request)
        if prepared.spec is not None:
            kwargs = prepared.spec.to_podman_kwargs()
            if args.json:
                print_json(kwargs)
            else:
                print(f"# {prepared.plan.diagnosis.message}")
                print(prepared.spec.podman_run_command())
        else:
            assert prepared.command is not None
            if args.json:
                print_json({"engine": "local", "name": prepared.name, "command": prepared.command})
            else:
                print(" ".join(prepared.command))
        return 0

    def progress(event: ServiceEvent) -> None:
        if event.detail and not args.json:
            print(f"podlab: {event.service.id}: {event.detail}", file=sys.stderr)

    manager.subscribe(progress)
    service = await manager.serve(request, ready_timeout=args.timeout)
    await manager.read_device(service)
    if args.json:
        data = service.to_dict()
        data["snippets"] = {
            s.key: s.code
            for s in snippets(service.api_url, service.model_ref, api_key=service.api_key)
        }
        print_json(data)
        return 0
    print("\n".join(_describe(service)))
    print()
    print("Try it:")
    print(
        snippet("curl", service.api_url, service.model_ref, api_key=service.api_key).code.rstrip()
    )
    print()
    print(f"Stop it with: podlab services stop {service.id}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    return _run(_serve(args))


# --------------------------------------------------------------------------- services


async def _list(as_json: bool) -> int:
    manager = _manager()
    services = await manager.list_services()
    if manager.engine_problem and not as_json:
        print(
            f"podlab: note: Podman services not listed: {manager.engine_problem}", file=sys.stderr
        )
    if as_json:
        print_json([s.to_dict() for s in services])
        return 0
    print_table(
        ["id", "state", "engine", "model", "endpoint", "device", "name"],
        [
            [s.id, s.state.value, s.engine, s.model_ref, s.api_url, s.device, s.name]
            for s in services
        ],
    )
    for service in services:
        if service.state in (ServiceState.EXITED, ServiceState.FAILED) and service.error:
            print(f"\n{service.id} {terminal_safe(service.error)}; last lines of its log:")
            tail = await manager.log_text(service, tail=DEATH_LOG_LINES)
            for line in tail.splitlines() or ["(the server wrote no log)"]:
                print(f"  {terminal_safe(line)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    return _run(_list(args.json))


async def _action(args: argparse.Namespace) -> int:
    manager = _manager()
    service = await manager.get(args.service)
    if args.action == "start":
        await manager.start(service)
        await manager.read_device(service)
    elif args.action == "restart":
        await manager.restart(service)
        await manager.read_device(service)
    elif args.action == "stop":
        await manager.stop(service)
    else:
        await manager.delete(service)
    if args.json:
        data = service.to_dict()
        if args.action == "rm":
            data["state"] = "removed"
        print_json(data)
    elif args.action in ("start", "restart"):
        print("\n".join(_describe(service)))
    else:
        print(f"{'removed' if args.action == 'rm' else 'stopped'} {service.id} ({service.name})")
    return 0


def cmd_action(args: argparse.Namespace) -> int:
    return _run(_action(args))


async def _show(args: argparse.Namespace) -> int:
    manager = _manager()
    service = await manager.get(args.service)
    if args.json:
        print_json({**service.to_dict(), "api_key": service.api_key})
        return 0
    print("\n".join(_describe(service)))
    if service.api_key:
        print(f"  key       {service.api_key}")
    print()
    print("Try it:")
    curl = snippet("curl", service.api_url, service.model_ref, api_key=service.api_key)
    print(curl.code.rstrip())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    return _run(_show(args))


async def _logs(args: argparse.Namespace) -> int:
    manager = _manager()
    service = await manager.get(args.service)
    async for line in manager.logs(service, follow=args.follow, tail=args.tail):
        sys.stdout.write(line + "\n")
        if args.follow:
            sys.stdout.flush()
    if args.follow:  # it ended while we followed: say how
        await manager.list_services()
    if service.state in (ServiceState.EXITED, ServiceState.FAILED) and service.error:
        sys.stdout.flush()
        print(f"podlab: {service.id} {terminal_safe(service.error)}", file=sys.stderr)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    return _run(_logs(args))


__all__ = ["register"]
