"""Run the course's notebooks headless: every notebook runs, even after another one failed.

Two uses, both from the Makefile:

* ``make course``: ``python scripts/run_notebooks.py --html build`` executes every notebook in the
  preset of this machine, writes each one as HTML (a failing cell shows its error in the page),
  prints which notebooks failed and in which cell, and exits non-zero if any did.
* ``make test-matrix``: ``python scripts/run_notebooks.py --matrix`` runs the fast preset under
  several CPU arithmetics (instruction sets of ATen, oneDNN and MKL), one and two torch threads and
  a few seeds, then prints a table notebook x setting -> pass / failing cells, and for every claim a
  notebook checks with ``at_least`` / ``at_most`` the smallest margin seen over the whole grid.

A cell is named as nbval names it in ``make test``: "Cell 15" is the 16th code cell.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# What a learner's CPU may do differently from this one. ATen's vector kernels, oneDNN's
# convolutions and MKL's matrix products and vector maths each pick their instruction set on their
# own, so a setting names all three. "default" is plain SSE code, as on a CPU without AVX.
ARITHMETIC = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    # MKL's vendor-neutral code path, as MKL runs on a CPU it does not tune for (an AMD one, say)
    "mkl-compatible": {"MKL_CBWR": "COMPATIBLE"},
}
MATRIX_THREADS = (1, 2)
PRESET_ENVIRONMENT = {"fast": {"NNVIS_FAST": "1"}, "cpu": {"NNVIS_FAST": "", "NNVIS_QUALITY": "cpu"}}
MATRIX_SEEDS = (1, 2)   # run in the native arithmetic with two threads; every setting also runs seed 0


def settings(arithmetics, threads, seeds):
    """The grid: (name, environment) for every arithmetic x thread count, then the extra seeds."""
    grid = []
    for arithmetic in arithmetics:
        for count in threads:
            grid.append((f"{arithmetic}/{count}t", {**ARITHMETIC[arithmetic], "OMP_NUM_THREADS": str(count), "NNVIS_SEED": "0"}))
    for seed in (s for s in seeds if s != 0):   # seed 0 runs in every setting already
        grid.append((f"native/2t/seed{seed}", {"OMP_NUM_THREADS": "2", "NNVIS_SEED": str(seed)}))
    return grid


def code_cell_number(notebook, index):
    return sum(1 for cell in notebook.cells[:index] if cell.cell_type == "code")


def execute(path: Path, html_dir: Path | None, claims_log: Path | None, timeout: int) -> dict:
    """Execute one notebook in a fresh kernel (errors allowed) and return what failed."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.util import run_sync

    notebook = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    crashed = None
    try:
        with client.setup_kernel():
            if claims_log is not None:  # before the first cell: log the margin of every assert's comparisons
                install = (f"__import__('runpy').run_path({str(ROOT / 'scripts' / 'assert_margins.py')!r})"
                           f"['install'](get_ipython(), {str(claims_log)!r})")
                run_sync(client.kc.execute_interactive)(install, timeout=60, store_history=False)
            for index, cell in enumerate(notebook.cells):
                client.execute_cell(cell, index)
    except Exception as error:  # a dead kernel or a cell past its timeout: report it, go on with the next notebook
        crashed = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"
    failures = []
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") == "error":
                message = (output.get("evalue") or "").strip().splitlines()
                failures.append(f"Cell {code_cell_number(notebook, index)}: {output.get('ename')}: "
                                f"{message[0][:160] if message else ''}")
    if crashed:
        failures.append(crashed)
    if html_dir is not None:
        from nbconvert import HTMLExporter

        html, _ = HTMLExporter().from_notebook_node(notebook)
        (html_dir / f"{path.stem}.html").write_text(html, encoding="utf-8")
    return {"notebook": path.stem, "failures": failures, "seconds": time.perf_counter() - started}


def run_all(paths, html_dir, claims_dir, jobs, timeout):
    """Every notebook, ``jobs`` at a time; a summary line each as they finish."""
    results = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {
            pool.submit(execute, path, html_dir, claims_dir / f"{path.stem}.jsonl" if claims_dir else None, timeout): path
            for path in paths
        }
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            results[result["notebook"]] = result
            state = "ok" if not result["failures"] else f"FAILED ({len(result['failures'])} cells)"
            print(f"  {result['notebook']:40s} {result['seconds']:6.0f} s  {state}", flush=True)
            for failure in result["failures"]:
                print(f"      {failure}", flush=True)
    return [results[path.stem] for path in paths]


def read_claims(claims_dir: Path):
    """The smallest margin each assert's comparisons reached in one setting: {(notebook, assert): record}."""
    claims = {}
    for log in sorted(claims_dir.glob("*.jsonl")):
        for line in log.read_text().splitlines():
            record = json.loads(line)
            key = (log.stem[:2], record["assert"])
            if key not in claims or record["margin"] < claims[key]["margin"]:
                claims[key] = record
    return claims


def matrix(args) -> int:
    grid = settings(args.arithmetic, args.threads, args.seeds)
    paths = select(args.notebooks)
    outcome, margins = {}, {}
    workdir = Path(tempfile.mkdtemp(prefix="nnvis-matrix-"))
    for name, extra in grid:
        threads = int(extra["OMP_NUM_THREADS"])
        jobs = max(1, (os.cpu_count() or 1) // threads) if args.jobs is None else args.jobs
        print(f"\n== {name}: {' '.join(f'{k}={v}' for k, v in extra.items())} ({jobs} notebook(s) at a time)", flush=True)
        claims_dir = workdir / name.replace("/", "_")
        claims_dir.mkdir(parents=True)
        command = [sys.executable, __file__, "--claims-dir", str(claims_dir), "--jobs", str(jobs),
                   "--timeout", str(args.timeout), "--summary", str(claims_dir / "summary.json"), *[p.name for p in paths]]
        environment = {**os.environ, "MPLBACKEND": "Agg", **PRESET_ENVIRONMENT[args.preset], **extra}
        subprocess.run(command, env=environment, cwd=ROOT)
        summary = claims_dir / "summary.json"
        results = json.loads(summary.read_text()) if summary.exists() else []
        outcome[name] = {r["notebook"][:2]: r["failures"] for r in results}
        for key, record in read_claims(claims_dir).items():
            margins.setdefault(key, []).append((name, record))
        if args.unit_tests and "seed" not in name:   # the unit tests seed themselves: NNVIS_SEED changes nothing there
            outcome[name]["unit"] = run_unit_tests(args.unit_tests, jobs, environment)
    print_table(grid, paths, outcome, args.unit_tests, args.preset)
    print_margins(margins)
    return 0 if all(not failures for row in outcome.values() for failures in row.values()) else 1


def run_unit_tests(paths, jobs, environment):
    """The pytest files split over ``jobs`` processes (as the notebooks are); the failed tests, or [] when all passed."""
    groups = [paths[i::jobs] for i in range(min(jobs, len(paths)))]
    processes = [subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:randomly", *group], env=environment,
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for group in groups]
    failures = []
    for process in processes:
        output = process.communicate()[0].strip().splitlines() or ["(no output)"]
        print(f"  unit tests: {output[-1]}", flush=True)
        failed = [line.split(" - ")[0].replace("FAILED ", "") for line in output if line.startswith(("FAILED", "ERROR"))]
        failures += failed or ([] if process.returncode == 0 else [output[-1]])
    return failures


def print_table(grid, paths, outcome, unit_tests, preset):
    rows = [p.stem[:2] for p in paths] + (["unit"] if unit_tests else [])
    names = [name for name, _ in grid]
    width = max(len(n) for n in names) + 2
    print(f"\n## notebook x setting ({preset} preset): ok, or the failing cells\n")
    print("| notebook | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for row in rows:
        cells = []
        for name in names:
            failures = outcome.get(name, {}).get(row)
            cells.append(("same as seed 0" if row == "unit" and "seed" in name else "not run") if failures is None else
                         "ok" if not failures else
                         ", ".join(f.split("::")[-1] if row == "unit" else f.split(":")[0] for f in failures))
        print(f"| {row} | " + " | ".join(cells) + " |")
    failed = [(name, row, f) for name in names for row, fs in outcome.get(name, {}).items() for f in fs]
    if failed:
        print("\nfailures:")
        for name, row, failure in failed:
            print(f"  {name:{width}s} {row}  {failure}")


def print_margins(margins):
    """Every assert whose compared values moved over the grid (and any that failed), closest to its bound first."""
    rows, steady = [], 0
    for (notebook, text), seen in margins.items():
        worst_setting, worst = min(seen, key=lambda item: item[1]["margin"])
        spread = max(r["margin"] for _, r in seen) - worst["margin"]
        if spread > 1e-9 or worst["margin"] < 0:
            rows.append((worst["margin"], notebook, text, worst, worst_setting, spread, len(seen)))
        else:
            steady += 1
    print("\n## asserts whose values moved over the grid, closest to the bound first\n")
    print("| nb | assert | closest: left op right (setting) | margin | spread of the margin | settings |")
    print("|---|---|---|---|---|---|")
    for margin, notebook, text, worst, setting, spread, count in sorted(rows, key=lambda row: row[0]):
        text = text if len(text) < 90 else text[:87] + "..."
        print(f"| {notebook} | `{text}` | {worst['left']:.4g} {worst['op']} {worst['right']:.4g} ({setting}) | "
              f"{margin:+.1%}{' FAILS' if margin < 0 else ''} | {spread:.1%} | {count} |")
    print(f"\n{steady} more asserts compared the same values in every setting (exact results, or bounds on them).")


def comma_list(kind, allowed=None):
    """An argparse type: "1,2" -> [1, 2]; comma-separated, so a list never swallows the notebook names after it."""
    def parse(text):
        values = [kind(part) for part in text.split(",") if part.strip()]
        wrong = [v for v in values if allowed is not None and v not in allowed]
        if wrong:
            raise argparse.ArgumentTypeError(f"{wrong} not among {', '.join(allowed)}")
        return values
    return parse


def select(names):
    if not names:
        return NOTEBOOKS
    chosen = [path for path in NOTEBOOKS if any(path.name.startswith(name) or path.name == name for name in names)]
    if not chosen:
        sys.exit(f"no notebook matches {names}; the notebooks are: {', '.join(p.name for p in NOTEBOOKS)}")
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="notebooks to run, by name or number prefix (default: all)")
    parser.add_argument("--html", type=Path, help="write each executed notebook as HTML into this folder")
    parser.add_argument("--jobs", type=int, default=None, help="notebooks at a time (default: 1; in --matrix, cores / threads)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds one cell may take")
    parser.add_argument("--matrix", action="store_true", help="run the fast preset under the grid of CPU arithmetics, threads and seeds")
    parser.add_argument("--preset", choices=list(PRESET_ENVIRONMENT), default="fast",
                        help="in --matrix: the quality preset (fast, as make test; cpu, as make course here)")
    parser.add_argument("--arithmetic", type=comma_list(str, ARITHMETIC), default=list(ARITHMETIC),
                        help=f"in --matrix: comma-separated, from {','.join(ARITHMETIC)} (default: all)")
    parser.add_argument("--threads", type=comma_list(int), default=list(MATRIX_THREADS), help="in --matrix: comma-separated (default: 1,2)")
    parser.add_argument("--seeds", type=comma_list(int), default=list(MATRIX_SEEDS),
                        help="in --matrix: extra seeds, comma-separated, run natively on two threads (default: 1,2; 0 runs everywhere)")
    parser.add_argument("--unit-tests", nargs="*", default=[], help="in --matrix, also run these pytest paths in every setting")
    parser.add_argument("--claims-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--summary", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.matrix:
        return matrix(args)
    paths = select(args.notebooks)
    if args.html:
        args.html.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = run_all(paths, args.html, args.claims_dir, args.jobs or 1, args.timeout)
    if args.summary:
        args.summary.write_text(json.dumps(results))
    failed = [r for r in results if r["failures"]]
    print(f"\n{len(results) - len(failed)} of {len(results)} notebooks ran without an error "
          f"in {(time.perf_counter() - started) / 60:.1f} min.")
    for result in failed:
        print(f"FAILED {result['notebook']}: " + "; ".join(result["failures"]))
    if args.html:
        print("\nThe executed notebooks, to open in a browser:")
        for path in paths:
            print(f"  file://{(args.html / (path.stem + '.html')).resolve()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
