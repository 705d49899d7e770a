"""``selfgen demo``: run every method's demo on its bundled checkpoint and collect the results.

Each method writes its pictures and returns metrics; this module saves them as
``<output>/<method>/metrics.json`` and merges them into ``<output>/summary.json``, so that
``selfgen demo --only X`` updates X's entry and keeps the others.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

SUMMARY_FILE = "summary.json"


def read_summary(output_root: Path) -> dict:
    """The existing ``summary.json`` under ``output_root`` (``{}`` when absent or not a JSON object)."""
    path = output_root / SUMMARY_FILE
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        print(f"warning: {path} is not valid JSON; starting a new summary")
        return {}
    return summary if isinstance(summary, dict) else {}


def run_demos(methods: dict, assets_dir: Path, output_root: Path) -> dict:
    """Run the ``demo`` of every method in ``methods`` (name -> :class:`~selfgen.train.registry.Method`) on
    ``assets_dir/<demo_asset>``; returns the merged summary written to ``output_root/summary.json``."""
    from .cli import checkpoint_class, write_metrics

    summary = read_summary(output_root)
    for name, method in methods.items():
        asset_dir = assets_dir / method.demo_asset
        if checkpoint_class(asset_dir) is None:
            print(f"[{name}] skipped: no bundled checkpoint at {asset_dir}")
            continue
        start = time.perf_counter()
        metrics = method.demo(asset_dir, output_root / name)
        seconds = time.perf_counter() - start
        write_metrics(metrics, output_root / name)
        summary[name] = {"seconds": round(seconds, 2), "metrics": metrics}
        print(f"[{name}] {asset_dir} -> {output_root / name} in {seconds:.1f} s")
        print("  " + json.dumps(metrics, default=str))
    output_root.mkdir(parents=True, exist_ok=True)
    (output_root / SUMMARY_FILE).write_text(json.dumps(dict(sorted(summary.items())), indent=2, default=str))
    print(f"demo outputs in {output_root}/ ({SUMMARY_FILE})")
    return summary
