"""The benchmark suite's one entry point: every benchmark in one run, one table.

Each benchmark runs in its own process (so peak memory and start-up costs are its own) with
``--json``; this script gathers the figures and prints them, each against the tutorial-style
baseline where one exists, as ratios measured in the same run. ``--quick`` uses smaller
albums for a fast look; the README quotes a full run.

Run from the repository root: ``.venv/bin/python bench/run.py [--quick] [--json]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> dict:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(HERE / script), "--json", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout)
    print(f"  {script} done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller albums")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    quick = args.quick
    results = {
        "scan": run(
            "bench_scan.py",
            "--photos",
            "60" if quick else "300",
            "--rescan",
            "2000" if quick else "10000",
            "--memory",
            "500,5000" if quick else "1000,20000",
        ),
        "faces": run("bench_faces.py"),
        "model": run("bench_model.py", "--repeat", "1" if quick else "3"),
        "pipeline": run(
            "bench_pipeline.py",
            "--photos",
            "12" if quick else "40",
            "--baseline-photos",
            "2" if quick else "4",
        ),
        "explain": run("bench_explain.py", "--faces", "3" if quick else "8"),
        "lime": run("bench_lime_samples.py", "--wild", "3" if quick else "10"),
        "wild": run("bench_wild.py"),
        "cluster": run(
            "bench_cluster.py", "--photos", "24" if quick else "80", "--runs", "1" if quick else "3"
        ),
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    names = ("scan", "faces", "model", "pipeline", "explain", "lime", "wild", "cluster")
    s, f, m, p, e, lime, w, c = (results[k] for k in names)
    wp = w["pipeline"]
    agreement = {row["samples"]: row["top5_overlap_mean"] for row in lime["rows"]}
    default, whole = f["detectors"][0], f["detectors"][1]
    mesh, bare = f["scan"]["with_mesh"], f["scan"]["without_mesh"]
    peaks = " / ".join(f"{mb:.0f} MB ({n})" for n, mb in s["peak_rss_mb"].items())
    explain = e["explain_process_seconds"]
    default_gc = e["explain_process_default_gc_seconds"]
    lime_thread = e["explain_process_lime_thread_seconds"]
    rows = [
        (
            "scan, first (12 MP JPEG, files only)",
            f"{s['first_scan_photos_per_s']:.0f} photos/s",
            "goal >= 100",
        ),
        (f"rescan, {s['rescan_count']} unchanged", f"{s['rescan_seconds']:.2f} s", "goal < 3 s"),
        ("peak memory, files only", peaks, "flat"),
        (
            "end-to-end with faces (12 MP)",
            f"{p['photos_per_s']:.2f} photos/s",
            f"x{p['speedup_vs_baseline']:.0f} vs tutorial ({p['baseline_photos_per_s']:.3f}/s)",
        ),
        (f"workers 1 -> {p['workers']}", f"x{p['worker_speedup']:.2f}", "near-linear"),
        (
            f"detector {default['detector']} + face mesh",
            f"recall {mesh['recall']:.2f}, precision {mesh['precision']:.2f}, "
            f"{default['ms_median']:.0f} ms/photo + {f['scan']['with_cut_ms_per_face']:.1f} "
            "ms/face",
            f"no mesh: precision {bare['precision']:.2f}; {whole['detector']}: recall "
            f"{whole['recall']:.2f}, {whole['ms_median']:.0f} ms",
        ),
        (
            "faces/s classified (batched, mirror averaged)",
            f"{m['faces_per_s']:.0f}",
            f"x{m['speedup_vs_baseline']:.2f} vs Keras ({m['baseline_faces_per_s']:.0f}); "
            "goal >= 500",
        ),
        (
            "emotion accuracy, PublicTest",
            f"{m['accuracy']:.4f} (FER+ majority {m['ferplus_accuracy']:.4f}, "
            f"lowest recall {min(v['recall'] for v in m['per_class'].values()):.2f})",
            "goal 0.70 / 0.82, every recall >= 0.50",
        ),
        (
            f"labelled photos ({wp['photos']}), largest face",
            f"accuracy {wp['accuracy']:.4f}, mean P@10 {wp['mean_precision_at_10']:.3f}, "
            f"lowest recall {wp['min_recall']:.2f}",
            f"box crops before: {w['ablation'][0]['wild']['accuracy']:.4f}; goal 0.70 / 0.85",
        ),
        (
            "seconds per explanation",
            f"{e['seconds_per_explanation']:.2f} s",
            f"x{e['speedup_vs_lime_defaults']:.1f} vs LIME defaults "
            f"({e['lime_defaults_seconds']:.1f} s)",
        ),
        (
            f"LIME top-5 agreement, {e['samples']} samples",
            f"{agreement[e['samples']]:.2f} vs {lime['reference_samples']} samples",
            " / ".join(f"{n}: {a:.2f}" for n, a in agreement.items() if n != e["samples"]),
        ),
        (
            "photosort explain (whole process)",
            f"{e['explain_process_seconds']:.2f} s",
            f"goal <= 1.5 s; x{default_gc / explain:.2f} vs Python's default collector, "
            f"x{lime_thread / explain:.2f} vs LIME imported on a thread",
        ),
        (
            f"Dask, {c['workers']} dask worker processes",
            f"{c['cluster_photos_per_s']:.2f} photos/s",
            f"x{c['cluster_vs_local']:.2f} vs --workers {c['workers']} (median); writer cap "
            f"{c['writer_cap_photos_per_s']:.0f} photos/s",
        ),
        (
            f"report, {e['report_picks']} picks",
            f"{e['report_seconds']:.0f} s",
            f"re-run from cache {e['report_cached_seconds']:.1f} s",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"| {'measure':<{widths[0]}} | {'photosort':<{widths[1]}} | {'against':<{widths[2]}} |")
    print(f"|{'-' * (widths[0] + 2)}|{'-' * (widths[1] + 2)}|{'-' * (widths[2] + 2)}|")
    for a, b, c in rows:
        print(f"| {a:<{widths[0]}} | {b:<{widths[1]}} | {c:<{widths[2]}} |")


if __name__ == "__main__":
    main()
