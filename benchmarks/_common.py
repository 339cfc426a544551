"""Small helpers shared by the benchmark scripts: device description, JSON output and a
dated section appended to ``benchmarks/RESULTS.md`` (append-only; several scripts write it)."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"

RESULTS_MD_HEADER = """# mlpjax benchmark results

Each section below is appended by a script in `benchmarks/` (see its docstring for the
method). Numbers are only comparable within one section / one machine.
"""


def device_description() -> str:
    """'CPU (N cores)' or the accelerator name(s) from ``jax.devices()``."""
    import jax

    devices = jax.devices()
    if devices[0].platform == "cpu":
        return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    kinds = sorted({d.device_kind for d in devices})
    return f"{len(devices)}x {', '.join(kinds)} ({devices[0].platform.upper()})"


def environment() -> dict:
    import jax

    return {
        "device": device_description(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def write_json(name_or_path, data) -> Path:
    """Write ``data`` as JSON to ``benchmarks/results/<name>`` (or the given path), atomically."""
    path = Path(name_or_path)
    if not path.is_absolute() and path.parent == Path("."):
        path = RESULTS_DIR / path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float) + "\n")
    os.replace(tmp, path)
    return path


def markdown_table(headers, rows) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
        return str(v)

    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def append_results(title: str, body: str, *, path: Path | None = None) -> Path:
    """Append a dated section ``## <title> (<date>, <device>)`` to RESULTS.md (created with a
    header if absent). The section is written with a single append."""
    path = Path(path) if path is not None else RESULTS_MD
    if not path.exists():
        try:
            with open(path, "x") as fh:
                fh.write(RESULTS_MD_HEADER)
        except FileExistsError:
            pass
    date = datetime.date.today().isoformat()
    section = f"\n## {title} ({date}, {device_description()})\n\n{body.rstrip()}\n"
    with open(path, "a") as fh:
        fh.write(section)
    return path
