"""The images' build files (deploy/docker/*.Dockerfile) and the commands the manifests run in them: every path a
Dockerfile copies exists, every base is pinned, the final stage is not root and holds no secret, and every
command a container names is a real command of the engine, with options it takes."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import typer

from services.cli.main import app
from tests.deploy.rendered import OVERLAYS, ROOT, Container, containers, render

DOCKERFILES = sorted((ROOT / "deploy" / "docker").glob("*.Dockerfile"))
ENGINE_IMAGE = "ghcr.io/qu-engine/qu-engine"
SECRETIVE = re.compile(r"PASSWORD|API_KEY|TOKEN|SECRET|PRIVATE", re.IGNORECASE)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Dockerfile:
    path: Path
    args: dict[str, str]
    stages: list[Stage]


def parse(path: Path) -> Dockerfile:
    """Instructions with their continuation lines joined; ARGs before the first FROM resolve the FROM lines."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            arg, _, default = rest.partition("=")
            args[arg] = default
        elif keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        else:
            assert stages, f"{path}: {keyword} before FROM"
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(path, args, stages)


def test_there_is_an_engine_image_and_a_gpu_triton_image() -> None:
    assert {p.name for p in DOCKERFILES} == {"engine.Dockerfile", "triton-trtllm.Dockerfile"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_bases_are_pinned_and_multi_stage(path: Path) -> None:
    dockerfile = parse(path)
    stage_names = {s.name for s in dockerfile.stages if s.name}
    assert len(dockerfile.stages) >= 2, f"{path.name}: one stage builds, another runs"
    for stage in dockerfile.stages:
        if stage.base in stage_names:
            continue
        assert "$" not in stage.base, f"{path.name}: FROM {stage.base} has no default"
        image, _, tag = stage.base.rpartition(":")
        assert image and tag and tag != "latest" and re.search(r"\d", tag), f"{path.name}: FROM {stage.base} unpinned"
        assert "/" in image, f"{path.name}: FROM {stage.base}: name the registry, not a short name"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_path_copied_exists_and_every_copy_from_names_a_stage(path: Path) -> None:
    dockerfile = parse(path)
    stage_names = {s.name for s in dockerfile.stages if s.name}
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    for stage in dockerfile.stages:
        for keyword, rest in stage.instructions:
            if keyword not in {"COPY", "ADD"}:
                continue
            words = shlex.split(rest)
            options = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            *sources, _destination = paths
            from_stage = next((o.split("=", 1)[1] for o in options if o.startswith("--from=")), None)
            if from_stage is not None:
                assert from_stage in stage_names, f"{path.name}: COPY --from={from_stage}: no such stage"
                continue
            for source in sources:
                assert list(ROOT.glob(source)), f"{path.name}: COPY {source}: nothing at {ROOT / source}"
                assert source.rstrip("/") not in ignored, f"{path.name}: COPY {source}, which .dockerignore drops"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_the_final_stage_runs_as_a_user_and_holds_no_secret(path: Path) -> None:
    dockerfile = parse(path)
    final = dockerfile.stages[-1]
    users = [rest for keyword, rest in final.instructions if keyword == "USER"]
    assert users, f"{path.name}: the final stage runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{path.name}: USER {users[-1]}: a numeric non-root uid (runAsNonRoot)"
    for stage in dockerfile.stages:
        for keyword, rest in stage.instructions:
            if keyword in {"ENV", "ARG"}:
                assert not SECRETIVE.search(rest), f"{path.name}: {keyword} {rest}: secrets come from the pod"
    for name in dockerfile.args:
        assert not SECRETIVE.search(name), f"{path.name}: ARG {name}"


def test_the_engine_images_entrypoint_is_the_qu_console_script() -> None:
    final = parse(ROOT / "deploy" / "docker" / "engine.Dockerfile").stages[-1]
    (entrypoint,) = [rest for keyword, rest in final.instructions if keyword == "ENTRYPOINT"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(entrypoint) == ["qu"]
    assert "qu" in scripts


def _check_qu(argv: list[str], where: str) -> None:
    """Parse ``qu ARGS`` with the CLI's own parser: an unknown command or option fails here, not in the pod.
    (Typer carries its own copy of click, so its classes and errors are reached through the command objects.)"""
    assert argv[0] == "qu", where
    command: Any = typer.main.get_command(app)
    args = argv[1:]
    while hasattr(command, "list_commands"):
        name, args = args[0], args[1:]
        sub = command.get_command(command.context_class(command), name)
        assert sub is not None, f"{where}: `qu ... {name}` is not a command"
        command = sub
    try:
        command.make_context(argv[-1], list(args), resilient_parsing=False)
    except Exception as err:  # typer's vendored click.UsageError
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        pytest.fail(f"{where}: {' '.join(argv)}: {message}")


def _commands(container: Container) -> list[list[str]]:
    """The command lines a container runs: its command and args, or each `qu ...` step of a `sh -c` script (up to
    a redirection)."""
    argv = [*container.spec.get("command", []), *container.spec.get("args", [])]
    if argv[:2] != ["sh", "-c"]:
        return [argv]
    steps = []
    for part in re.split(r"&&|;|\n", argv[2]):
        words = shlex.split(part)
        if words and words[0] == "qu":
            steps.append(words[: words.index(">")] if ">" in words else words)
    return steps


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_command_a_manifest_runs_in_the_engine_image_is_a_real_command(overlay: str) -> None:
    checked = 0
    for container in containers(render(overlay)):
        if not container.spec["image"].startswith(ENGINE_IMAGE):
            continue
        for argv in _commands(container):
            if argv[0] == "python":
                assert argv[1:3] == ["-m", "streams"] and (ROOT / "streams" / "__main__.py").is_file(), container.where
                assert argv[3] == "worker", container.where
            else:
                _check_qu(argv, container.where)
            checked += 1
    # worker, refresher, catalog import, the teacher's two steps (and Triton on CPU, in dev)
    assert checked >= (6 if overlay == "dev" else 5)


def test_a_wrong_option_in_a_manifest_would_fail_here() -> None:
    with pytest.raises(pytest.fail.Exception, match="No such option"):
        _check_qu(["qu", "teacher", "run", "--topp", "3"], "example")
    with pytest.raises(AssertionError, match="is not a command"):
        _check_qu(["qu", "teacher", "runs"], "example")
