"""``qu triton serve``: Triton serving the student in the foreground, as a container runs it.

The embedded stack (`qu up`) starts Triton as one child among several; a pod runs Triton alone as its main
process. This command prepares the same model repository for the pod's catalog and embedding paths and then
*becomes* ``tritonserver`` (exec): the kubelet's SIGTERM reaches Triton itself, which unloads its models and
ends its backend stubs, and its exit status is the container's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from services.cli.context import err_console, print_json, reported_errors, settings_from
from services.settings import Settings
from services.stack.student_repository import prepare_student_repository
from services.stack.triton_server import TritonServer, prepare_python_backend, pytriton_server_dir, server_environment

app = typer.Typer(help="Triton Inference Server for a container: the student's repository, served in the foreground.")


def traces_url(settings: Settings) -> str | None:
    """Where Triton sends its spans: the OTLP/HTTP traces URL of the settings, when tracing is on."""
    if not settings.triton_tracing:
        return None
    if settings.otlp_traces_endpoint:
        return settings.otlp_traces_endpoint
    if settings.otlp_endpoint:
        return f"{settings.otlp_endpoint.rstrip('/')}/v1/traces"
    return None


@app.command("serve")
def serve(
    ctx: typer.Context,
    model_repository: Annotated[
        Path | None,
        typer.Option(help="Where the prepared repository is written (replaced); default STATE_DIR/triton/models."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address every endpoint binds (0.0.0.0 in a pod).")] = "127.0.0.1",
    print_command: Annotated[
        bool, typer.Option("--print-command", help="Prepare the repository, print the command as JSON, do not run.")
    ] = False,
) -> None:
    """Prepare the qu_student repository (QU_CATALOG_DIR, the embedding model, published versions) and run
    tritonserver in the foreground on QU_TRITON_HTTP_PORT / QU_TRITON_GRPC_PORT / QU_TRITON_METRICS_PORT,
    exporting its spans to the OTLP traces endpoint when one is set."""
    settings = settings_from(ctx)
    dest = model_repository or settings.state_dir / "triton" / "models"
    with reported_errors():
        repository, restored = prepare_student_repository(settings, dest)
        server_dir = pytriton_server_dir()
        prepare_python_backend(server_dir)  # a no-op in the image, which did it at build time
    server = TritonServer(
        repository,
        settings.triton_http_port,
        settings.triton_grpc_port,
        log_file=Path(os.devnull),  # unused: the server's output is this process's (the container's log)
        workdir=Path.cwd(),
        metrics_port=settings.triton_metrics_port or None,
        trace_url=traces_url(settings),
        host=host,
    )
    command = server.command(server_dir)
    if print_command:
        print_json({"command": command, "restored_versions": restored})
        return
    err_console.print(f"serving {repository} (restored versions {restored or 'none'}): {' '.join(command)}")
    os.execve(command[0], command, server_environment())
