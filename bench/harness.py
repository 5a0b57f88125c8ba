"""Benchmark harness: one synthetic capture, three ways to check it, measured side by side.

Not a test: nothing here asserts on time. It measures and reports.

Every measured run is a subprocess started the way a user starts it:

  baseline  python -m bench.baseline FILE                 (plain Python + orjson, no outputs)
  direct    python -m beam_pipeline --input FILE --output DIR                  (DirectRunner)
  flink     python -m beam_pipeline --input FILE --output DIR --runner FlinkRunner
            (embedded Flink MiniCluster inside the Java job server, LOOPBACK Python workers)
  duckdb    python -m bench.anchors duckdb FILE DIR       (one query: validate, LAG, Parquet)
  polars    python -m bench.anchors polars FILE DIR       (the same as a Polars plan)

The anchors need bench/requirements.txt (not the product's requirements); a missing one is skipped
with a note.

While a run lasts, its process tree is polled with psutil: the summed RSS of the tree (peak of the
sum, sampled), and per process the kernel's own high-water mark (VmHWM in /proc/<pid>/status, exact
whatever the polling interval) and CPU time. Python processes and the JVM (the Flink job server,
which FlinkRunner starts as a child of the pipeline process) are reported separately. CPU used by
processes outside the tree during the run is recorded too, so that a number taken on a busy machine
can be recognised as such.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gzip
import importlib.util
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
RUNNERS = ("direct", "flink", "direct-books")   # direct-books: direct with --book_checks
DEFAULT_RUNNERS = ("direct", "flink")
ANCHORS = ("duckdb", "polars")      # bench/anchors.py: the same check as one query (bench/requirements.txt)
ANCHOR_THREADS = 2                  # the machine's cores: what a user's DuckDB / Polars would use
MB = 1_000_000                      # MB/s and sizes in the report are decimal megabytes
MIB = 1024 * 1024                   # RSS is reported in MiB
EVENTS_PER_MONTH = 1_000_000_000    # the planning figure for "hours per month"
GOAL_MARGINAL_RATIO = 0.5           # marginal throughput of the pipeline >= 0.5 x the baseline's
GOAL_RSS_RATIO = 1.3                # peak RSS at 4N <= 1.3 x peak RSS at N


# ---- measuring one subprocess ------------------------------------------------------------------

def _vm_hwm_bytes(pid: int) -> int:
    """The kernel's peak resident set size of one process so far (VmHWM), in bytes; 0 if gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _kind(name: str) -> str:
    name = name.lower()
    if name.startswith("java"):
        return "jvm"
    if name.startswith("python"):
        return "python"
    return "other"


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def wait_for_quiet(max_wait_s: float, busy_cores: float = 0.3, window_s: float = 3.0) -> float:
    """On a shared machine: wait (at most `max_wait_s`) until other processes use less than
    `busy_cores` cores over `window_s`. Returns the seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait_s:
        before = _busy_cpu_seconds()
        time.sleep(window_s)
        if (_busy_cpu_seconds() - before) / window_s < busy_cores:
            break
    return round(time.perf_counter() - start, 1)


def measure(label: str, cmd: list[str], log_path: Path, poll_s: float = 0.1,
            stall_s: float = 300.0) -> dict:
    """Run `cmd` (cwd = project root, PYTHONPATH = project root) and measure it.

    A run whose process tree uses less than one CPU second in `stall_s` seconds is taken as hung
    (seen: FlinkRunner at 4M events) and its processes are killed, so a benchmark never waits
    forever; the result then has "hung": true and a non-zero return code."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before = _busy_cpu_seconds()
    procs: dict[int, dict] = {}     # pid -> {"kind", "name", "hwm", "cpu", "cmd"}
    peak_tree = {"total": 0, "python": 0, "jvm": 0, "other": 0}
    samples = 0
    hung = False
    progress_cpu, progress_at = 0.0, time.perf_counter()
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [root] + root.children(recursive=True)
            except psutil.NoSuchProcess:
                tree = []
            now = {"total": 0, "python": 0, "jvm": 0, "other": 0}
            for p in tree:
                try:
                    with p.oneshot():
                        rss = p.memory_info().rss
                        cpu = p.cpu_times()
                        info = procs.get(p.pid)
                        if info is None:
                            name = p.name()
                            info = procs[p.pid] = {"kind": _kind(name), "name": name, "hwm": 0,
                                                   "cpu": 0.0,
                                                   "cmd": " ".join(p.cmdline()[:6])[:200]}
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                info["cpu"] = max(info["cpu"], cpu.user + cpu.system)
                info["hwm"] = max(info["hwm"], _vm_hwm_bytes(p.pid), rss)
                now["total"] += rss
                now[info["kind"]] += rss
            for k, v in now.items():
                peak_tree[k] = max(peak_tree[k], v)
            samples += 1
            cpu_now = sum(p["cpu"] for p in procs.values())
            if cpu_now > progress_cpu + 1.0:
                progress_cpu, progress_at = cpu_now, time.perf_counter()
            elif stall_s and time.perf_counter() - progress_at > stall_s:
                hung = True
                print(f"   {label}: no CPU progress for {stall_s:.0f} s: killing its processes",
                      flush=True)
                _kill_tree(tree)
                proc.wait()
                break
            time.sleep(poll_s)
        wall = time.perf_counter() - start
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = _busy_cpu_seconds() - busy_before
    cpu_reaped = ((after_children.ru_utime - before_children.ru_utime)
                  + (after_children.ru_stime - before_children.ru_stime))
    cpu_polled = sum(p["cpu"] for p in procs.values())
    cpu_tree = max(cpu_reaped, cpu_polled)

    def by_kind(field, kind):
        values = [p[field] for p in procs.values() if p["kind"] == kind]
        return (max(values) if field == "hwm" else sum(values)) if values else 0

    result = {
        "label": label,
        "command": cmd,
        "returncode": proc.returncode,
        "hung": hung,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu_tree, 2),
        "cpu_s_python": round(by_kind("cpu", "python"), 2),
        "cpu_s_jvm": round(by_kind("cpu", "jvm"), 2),
        "peak_rss_mib": round(peak_tree["total"] / MIB, 1),           # peak of the tree's sum, sampled
        "peak_rss_mib_python": round(by_kind("hwm", "python") / MIB, 1),  # largest Python process, VmHWM
        "peak_rss_mib_jvm": round(by_kind("hwm", "jvm") / MIB, 1),        # the JVM, VmHWM
        "peak_rss_mib_sum_of_process_peaks": round(sum(p["hwm"] for p in procs.values()) / MIB, 1),
        "processes": [{"pid": pid, "kind": p["kind"], "name": p["name"], "cmd": p["cmd"],
                       "peak_rss_mib": round(p["hwm"] / MIB, 1), "cpu_s": round(p["cpu"], 2)}
                      for pid, p in procs.items()],
        "other_cpu_s": round(max(busy - cpu_tree, 0.0), 2),   # CPU used outside the tree meanwhile
        "samples": samples,
        "log": str(log_path),
    }
    return result


def _kill_tree(tree) -> None:
    """Kill the measured command's own processes (children first), by pid."""
    for p in reversed(tree):
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


# ---- data ------------------------------------------------------------------------------------

def generate(events: int, path: Path, log_path: Path) -> dict:
    """The project's own generator, clean feed (no faults, no bad records), default symbol mix."""
    cmd = [sys.executable, "-m", "tests.tooling.synthetic", "--events", str(events),
           "--output", str(path), "--no_faults"]
    start = time.perf_counter()
    with open(log_path, "wb") as log:
        subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=log,
                       stderr=subprocess.STDOUT, check=True)
    seconds = time.perf_counter() - start
    records = uncompressed = 0
    with gzip.open(path, "rb") as handle:
        while True:
            block = handle.read(1 << 22)
            if not block:
                break
            uncompressed += len(block)
            records += block.count(b"\n")
    return {"path": str(path), "events": events, "records": records,
            "compressed_bytes": path.stat().st_size, "uncompressed_bytes": uncompressed,
            "generate_s": round(seconds, 1), "command": cmd}


# ---- one size: baseline + runners ----------------------------------------------------------

def _dir_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def available_anchors(anchors) -> list[str]:
    """The anchors whose engine is installed; prints a note for each one that is not."""
    found = []
    for name in anchors:
        if importlib.util.find_spec(name) is None:
            print(f"bench: {name} is not installed, its anchor row is skipped "
                  f"(pip install -r bench/requirements.txt)", flush=True)
        else:
            found.append(name)
    return found


def run_size(data: dict, runners, tmp: Path, poll_s: float, quiet_wait_s: float = 0.0,
             stall_s: float = 300.0, anchors=()) -> dict:
    n = data["events"]
    logs = tmp / "logs"
    logs.mkdir(exist_ok=True)
    results = {}
    print(f"\n== {n:,} events: {data['records']:,} records, "
          f"{data['uncompressed_bytes'] / MB:,.1f} MB uncompressed, "
          f"{data['compressed_bytes'] / MB:,.1f} MB gzip", flush=True)

    label = f"baseline@{n}"
    print(f"-- {label} ...", flush=True)
    waited = wait_for_quiet(quiet_wait_s) if quiet_wait_s else 0.0
    r = measure(label, [sys.executable, "-m", "bench.baseline", data["path"]],
                logs / f"{label}.log", poll_s)
    r["check"] = _last_json_line(Path(r["log"])) if r["returncode"] == 0 else None
    r["waited_for_quiet_s"] = waited
    results["baseline"] = r
    _print_done(r)

    for runner in runners:
        label = f"{runner}@{n}"
        out = tmp / f"out-{runner}-{n}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "beam_pipeline", "--input", data["path"], "--output", str(out)]
        if runner == "flink":
            cmd += ["--runner", "FlinkRunner"]
        if runner == "direct-books":
            cmd += ["--book_checks"]
        print(f"-- {label} ...", flush=True)
        waited = wait_for_quiet(quiet_wait_s) if quiet_wait_s else 0.0
        r = measure(label, cmd, logs / f"{label}.log", poll_s, stall_s)
        r["waited_for_quiet_s"] = waited
        summary_path = out / "summary.json"
        r["summary"] = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        r["output_bytes"] = _dir_bytes(out) if out.exists() else 0
        r["output_folders"] = sorted(p.name for p in out.iterdir()) if out.exists() else []
        results[runner] = r
        _print_done(r)
        if r["returncode"] != 0:
            why = "HUNG, killed" if r["hung"] else f"exit {r['returncode']}"
            print(f"   FAILED ({why}); last lines of {r['log']}:", flush=True)
            print("   " + "\n   ".join(Path(r["log"]).read_text(errors="replace").splitlines()[-15:]))
        shutil.rmtree(out / "_work", ignore_errors=True)

    for engine in anchors:
        label = f"{engine}@{n}"
        out = tmp / f"out-{engine}-{n}"
        shutil.rmtree(out, ignore_errors=True)
        print(f"-- {label} ...", flush=True)
        waited = wait_for_quiet(quiet_wait_s) if quiet_wait_s else 0.0
        r = measure(label, [sys.executable, "-m", "bench.anchors", engine, data["path"], str(out),
                            "--threads", str(ANCHOR_THREADS)],
                    logs / f"{label}.log", poll_s, stall_s)
        r["check"] = _last_json_line(Path(r["log"])) if r["returncode"] == 0 else None
        r["waited_for_quiet_s"] = waited
        r["output_bytes"] = _dir_bytes(out) if out.exists() else 0
        results[engine] = r
        _print_done(r)
        shutil.rmtree(out, ignore_errors=True)

    for name, r in results.items():
        _derive(r, data, results["baseline"], results.get("duckdb"))
        r["agrees_with_baseline"] = _agrees(name, r, results["baseline"], data)
    return results


def _print_done(r: dict) -> None:
    print(f"   {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, peak RSS {r['peak_rss_mib']:,.0f} MiB"
          f" (exit {r['returncode']}); other processes used {r['other_cpu_s']:.1f} CPU s meanwhile",
          flush=True)


def _last_json_line(log: Path):
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def _derive(r: dict, data: dict, baseline: dict, duckdb=None) -> None:
    ok = r["returncode"] == 0 and r["wall_s"] > 0
    records = data["records"]
    r["records"] = records
    r["events_per_s"] = round(records / r["wall_s"]) if ok else None
    r["mb_per_s_uncompressed"] = round(data["uncompressed_bytes"] / MB / r["wall_s"], 2) if ok else None
    r["mb_per_s_compressed"] = round(data["compressed_bytes"] / MB / r["wall_s"], 2) if ok else None
    r["cpu_us_per_event"] = round(r["cpu_s"] / records * 1e6, 2) if ok else None
    b_ok = baseline["returncode"] == 0
    r["throughput_ratio_to_baseline"] = (round(baseline["wall_s"] / r["wall_s"], 4)
                                         if ok and b_ok else None)
    r["cpu_ratio_to_baseline"] = (round(baseline["cpu_s"] / r["cpu_s"], 4)
                                  if ok and b_ok and r["cpu_s"] else None)
    r["rss_ratio_to_baseline"] = (round(r["peak_rss_mib"] / baseline["peak_rss_mib"], 1)
                                  if ok and b_ok and baseline["peak_rss_mib"] else None)
    duck = duckdb if duckdb and duckdb["returncode"] == 0 else None
    r["cpu_ratio_to_duckdb"] = (round(duck["cpu_s"] / r["cpu_s"], 4)
                                if ok and duck and r["cpu_s"] else None)
    if ok:
        eps = records / r["wall_s"]
        r["wall_hours_per_month"] = round(EVENTS_PER_MONTH / eps / 3600, 2)
        r["core_hours_per_month"] = round(EVENTS_PER_MONTH * r["cpu_s"] / records / 3600, 2)


def _agrees(name: str, r: dict, baseline: dict, data: dict):
    """Same data, same verdict: every record clean, no gaps (the feed has no faults)."""
    if r["returncode"] != 0:
        return False
    check = baseline.get("check") or {}
    if name in ANCHORS:
        mine = r.get("check") or {}
        return (mine.get("records") == data["records"] and mine.get("clean") == check.get("clean")
                and mine.get("gaps") == check.get("gaps"))
    if name == "baseline":
        return (check.get("records") == data["records"] and check.get("gaps") == 0
                and check.get("clean") == data["records"])
    s = r.get("summary") or {}
    return (s.get("input_records") == data["records"] and s.get("clean_records") == check.get("clean")
            and s.get("balanced") is True and sum(s.get("gaps", {}).values()) == check.get("gaps"))


# ---- marginal --------------------------------------------------------------------------------

def marginal(small: dict, large: dict, data_small: dict, data_large: dict) -> dict:
    out = {}
    d_records = data_large["records"] - data_small["records"]
    base = None
    for name in small:
        a, b = small[name], large.get(name)
        if not b or a["returncode"] or b["returncode"]:
            out[name] = None
            continue
        dt_s = b["wall_s"] - a["wall_s"]
        m = {"marginal_events_per_s": round(d_records / dt_s) if dt_s > 0 else None,
             "marginal_mb_per_s_uncompressed": round(
                 (data_large["uncompressed_bytes"] - data_small["uncompressed_bytes"]) / MB / dt_s, 2)
             if dt_s > 0 else None,
             "marginal_cpu_us_per_event": round((b["cpu_s"] - a["cpu_s"]) / d_records * 1e6, 2),
             # the same from CPU seconds: robust when other processes share the machine
             "marginal_events_per_cpu_s": round(d_records / (b["cpu_s"] - a["cpu_s"]))
             if b["cpu_s"] > a["cpu_s"] else None,
             "fixed_overhead_s": round(a["wall_s"] - data_small["records"] * dt_s / d_records, 1)
             if dt_s > 0 else None,
             "rss_ratio_4n_over_n": round(b["peak_rss_mib"] / a["peak_rss_mib"], 2),
             "rss_ratio_4n_over_n_python": round(b["peak_rss_mib_python"] / a["peak_rss_mib_python"], 2)
             if a["peak_rss_mib_python"] else None,
             "rss_ratio_4n_over_n_jvm": round(b["peak_rss_mib_jvm"] / a["peak_rss_mib_jvm"], 2)
             if a["peak_rss_mib_jvm"] else None}
        if name == "baseline":
            base = m
        out[name] = m
    duck = large.get("duckdb")
    for name, m in out.items():
        if m is not None and duck and not duck["returncode"] and large[name]["cpu_s"]:
            # the goal: CPU per event at 4N no more than DuckDB's on the same file
            m["cpu_ratio_to_duckdb_4n"] = round(duck["cpu_s"] / large[name]["cpu_s"], 4)
    for name, m in out.items():
        if m is None or name == "baseline" or not base or not m["marginal_events_per_s"]:
            continue
        if not base["marginal_events_per_s"]:
            continue                          # too small to measure the baseline's margin
        ratio = m["marginal_events_per_s"] / base["marginal_events_per_s"]
        m["marginal_ratio_to_baseline"] = round(ratio, 4)
        if m["marginal_events_per_cpu_s"] and base["marginal_events_per_cpu_s"]:
            m["marginal_cpu_ratio_to_baseline"] = round(
                m["marginal_events_per_cpu_s"] / base["marginal_events_per_cpu_s"], 4)
            m["goal_marginal_throughput_met_by_cpu"] = (m["marginal_cpu_ratio_to_baseline"]
                                                        >= GOAL_MARGINAL_RATIO)
        m["goal_marginal_throughput_met"] = ratio >= GOAL_MARGINAL_RATIO
        m["goal_rss_growth_met"] = m["rss_ratio_4n_over_n"] <= GOAL_RSS_RATIO
    return out


# ---- report ------------------------------------------------------------------------------

def _fmt(value, spec=",.0f", none="-"):
    return none if value is None else format(value, spec)


def _render(label: tuple, columns: list, rows, tail: tuple) -> str:
    """A fixed-width text table: `label` = (header, width) of the left column, `columns` =
    (header, width, cell(row)) right-aligned, `tail` = (header, cell(row)) after two spaces;
    `rows` = (label, row) pairs, a None row printed as a failed run."""
    (label_head, label_width), (tail_head, tail_cell) = label, tail
    head = (f"{label_head:<{label_width}}" + "".join(f"{h:>{w}}" for h, w, _ in columns)
            + f"  {tail_head}")
    lines = [head, "-" * len(head)]
    for name, row in rows:
        if row is None:
            lines.append(f"{name:<{label_width}} (a run failed)")
            continue
        lines.append(f"{name:<{label_width}}" + "".join(f"{cell(row):>{w}}" for _, w, cell in columns)
                     + f"  {tail_cell(row)}")
    return "\n".join(lines)


_RUN_COLUMNS = [
    ("wall s", 9, lambda r: _fmt(r["wall_s"], ",.1f")),
    ("events/s", 11, lambda r: _fmt(r.get("events_per_s"))),
    ("MB/s unc", 10, lambda r: _fmt(r.get("mb_per_s_uncompressed"), ",.1f")),
    ("MB/s gz", 9, lambda r: _fmt(r.get("mb_per_s_compressed"), ",.2f")),
    ("CPU s", 8, lambda r: _fmt(r["cpu_s"], ",.1f")),
    ("RSS MiB", 9, lambda r: _fmt(r["peak_rss_mib"])),
    ("py MiB", 8, lambda r: _fmt(r["peak_rss_mib_python"])),
    ("JVM MiB", 9, lambda r: _fmt(r["peak_rss_mib_jvm"] or None)),
    ("x base", 8, lambda r: _fmt(r.get("throughput_ratio_to_baseline"), ".3f")),
    ("x CPU", 7, lambda r: _fmt(r.get("cpu_ratio_to_baseline"), ".3f")),
    ("x duck CPU", 11, lambda r: _fmt(r.get("cpu_ratio_to_duckdb"), ".3f")),
    ("us/ev CPU", 10, lambda r: _fmt(r.get("cpu_us_per_event"), ",.1f")),
    ("h/month", 9, lambda r: _fmt(r.get("wall_hours_per_month"), ",.1f")),
    ("core-h/mo", 10, lambda r: _fmt(r.get("core_hours_per_month"), ",.1f")),
    ("others", 7, lambda r: _fmt(r["other_cpu_s"] / r["wall_s"] if r["wall_s"] else None, ".2f")),
]

_MARGINAL_COLUMNS = [
    ("marg. ev/s", 12, lambda r: _fmt(r["marginal_events_per_s"])),
    ("x base", 8, lambda r: _fmt(r.get("marginal_ratio_to_baseline"), ".3f")),
    ("ev/CPU-s", 10, lambda r: _fmt(r.get("marginal_events_per_cpu_s"))),
    ("x base", 8, lambda r: _fmt(r.get("marginal_cpu_ratio_to_baseline"), ".3f")),
    ("fixed s", 9, lambda r: _fmt(r["fixed_overhead_s"], ",.1f")),
    ("x duck 4N", 11, lambda r: _fmt(r.get("cpu_ratio_to_duckdb_4n"), ".3f")),
    ("RSS 4N/N", 10, lambda r: _fmt(r["rss_ratio_4n_over_n"], ".2f")),
    ("py 4N/N", 9, lambda r: _fmt(r["rss_ratio_4n_over_n_python"], ".2f")),
    ("JVM 4N/N", 10, lambda r: _fmt(r["rss_ratio_4n_over_n_jvm"], ".2f")),
]


def _goals(r: dict) -> str:
    if "goal_marginal_throughput_met" not in r:
        return ""
    return (f"throughput {'met' if r['goal_marginal_throughput_met'] else 'NOT met'}, "
            f"memory {'met' if r['goal_rss_growth_met'] else 'NOT met'}")


def table(sizes: dict) -> str:
    rows = [(f"{name}@{_short(int(n))}", r) for n, results in sizes.items()
            for name, r in results.items()]
    return _render(("run", 16), _RUN_COLUMNS, rows,
                   ("ok", lambda r: "yes" if r.get("agrees_with_baseline") else "NO"))


def marginal_table(m: dict) -> str:
    return _render(("run", 10), _MARGINAL_COLUMNS, m.items(),
                   (f"goals (>= {GOAL_MARGINAL_RATIO}x, <= {GOAL_RSS_RATIO}x)", _goals))


def _short(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def git_state() -> dict:
    """The code that was measured: HEAD and whether the work tree differed from it."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    return {"head": git("rev-parse", "HEAD"), "dirty": git("status", "--porcelain",
                                                              "--untracked-files=no")}


def machine() -> dict:
    return {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


# ---- command line ------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the feed checker: a plain-Python baseline, the full pipeline on "
                    "DirectRunner and on embedded Flink, on one synthetic capture generated once.")
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="Delta events to generate (default 1000000); the file also holds one "
                             "snapshot per symbol.")
    parser.add_argument("--runners", default=",".join(DEFAULT_RUNNERS),
                        help="Comma-separated subset of direct,flink,direct-books (default direct,flink; "
                             "direct-books: direct with --book_checks). The baseline always runs.")
    parser.add_argument("--anchors", default=",".join(ANCHORS),
                        help="Comma-separated subset of duckdb,polars: the same check as one DuckDB "
                             "query / Polars plan on the same file (bench/anchors.py, "
                             f"{ANCHOR_THREADS} threads; needs bench/requirements.txt). Default "
                             "both; 'none' for neither; one not installed is skipped with a note.")
    parser.add_argument("--out", default=None,
                        help="JSON report path (default bench/results/<UTC timestamp>.json).")
    parser.add_argument("--keep", action="store_true",
                        help="Keep the temp dir (input, pipeline outputs, logs) and print its path.")
    parser.add_argument("--marginal", action="store_true",
                        help="Also run everything at 4 x --events and report marginal throughput "
                             "(4N-N)/(t4-t1) and the peak-RSS ratio 4N/N.")
    parser.add_argument("--poll", type=float, default=0.1, help="RSS polling interval, s (0.1).")
    parser.add_argument("--quiet_wait", type=float, default=0.0,
                        help="On a shared machine: before each measured run wait up to this many "
                             "seconds for other processes to go quiet (< 0.3 cores). Default 0.")
    parser.add_argument("--data_dir", default=None,
                        help="Keep the generated inputs here (feed-<N>.jsonl.gz) and reuse one that "
                             "is already there for the same N, instead of generating into the temp "
                             "dir. Default: generate into the temp dir.")
    parser.add_argument("--stall_timeout", type=float, default=300.0,
                        help="Kill a run whose processes use < 1 CPU second in this many seconds "
                             "(a hung job) and report it as failed. 0 = never. Default 300.")
    parser.add_argument("--tmp", default=None, help="Parent folder for the temp dir (default: system).")
    args = parser.parse_args(argv)
    args.runners = [r.strip().lower() for r in args.runners.split(",") if r.strip()]
    unknown = [r for r in args.runners if r not in RUNNERS]
    if unknown:
        parser.error(f"unknown runner(s) {unknown}; choose from {', '.join(RUNNERS)}")
    args.anchors = [a.strip().lower() for a in args.anchors.split(",")
                    if a.strip() and a.strip().lower() != "none"]
    unknown = [a for a in args.anchors if a not in ANCHORS]
    if unknown:
        parser.error(f"unknown anchor(s) {unknown}; choose from {', '.join(ANCHORS)} or none")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_path = Path(args.out) if args.out else ROOT / "bench" / "results" / f"{stamp}.json"
    tmp = Path(tempfile.mkdtemp(prefix="feedcheck-bench-", dir=args.tmp))
    sizes = [args.events] + ([4 * args.events] if args.marginal else [])
    report = {"started_utc": stamp, "machine": machine(), "git": git_state(),
              "events": args.events,
              "runners": args.runners, "marginal": args.marginal, "poll_s": args.poll,
              "units": {"MB": "10^6 bytes", "RSS": "MiB (2^20 bytes)",
                        "mb_per_s_uncompressed": "uncompressed JSON Lines bytes / wall s",
                        "mb_per_s_compressed": "gzip file bytes / wall s",
                        "events_per_s": "input records (deltas + snapshots) / wall s, whole "
                                        "command incl. interpreter, Beam and JVM start-up",
                        "throughput_ratio_to_baseline": "baseline wall / run wall",
                        "wall_hours_per_month": f"{EVENTS_PER_MONTH:.0e} events / events_per_s",
                        "core_hours_per_month": f"{EVENTS_PER_MONTH:.0e} events x CPU s per event"},
              "data": {}, "results": {}}
    print(f"bench: temp dir {tmp}", flush=True)
    try:
        (tmp / "logs").mkdir(exist_ok=True)
        for n in sizes:
            report["data"][str(n)] = _input(n, tmp, Path(args.data_dir) if args.data_dir else None)
        anchors = available_anchors(args.anchors)
        report["anchors"] = anchors
        for n in sizes:
            report["results"][str(n)] = run_size(report["data"][str(n)], args.runners, tmp, args.poll,
                                                 args.quiet_wait, args.stall_timeout, anchors)
            _write(out_path, report)          # a partial report survives a later failure
        if args.marginal:
            report["marginal"] = marginal(report["results"][str(sizes[0])],
                                          report["results"][str(sizes[1])],
                                          report["data"][str(sizes[0])], report["data"][str(sizes[1])])
        report["finished_utc"] = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        _write(out_path, report)
        print()
        print(table(report["results"]))
        if args.marginal:
            print()
            print(marginal_table(report["marginal"]))
        print(f"\nMB = 10^6 bytes; MB/s unc = uncompressed input, MB/s gz = gzip file; RSS = peak of "
              f"the process tree (MiB); py/JVM = largest Python process / JVM (kernel VmHWM); "
              f"x base = baseline wall / run wall; x CPU = baseline CPU s / run CPU s; "
              f"x duck CPU = DuckDB's CPU s / run CPU s (> 1: less CPU than DuckDB); "
              f"us/ev CPU = CPU microseconds per input record; "
              f"others = cores busy outside the run meanwhile (a loaded machine); h/month = wall hours, core-h/mo = CPU hours "
              f"for {EVENTS_PER_MONTH:.0e} events.")
        print(f"report: {out_path}")
    finally:
        if args.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _input(n: int, tmp: Path, data_dir) -> dict:
    """Generate N events once (or reuse the copy in `data_dir` made by an earlier run)."""
    folder = data_dir or tmp
    folder.mkdir(parents=True, exist_ok=True)
    path, meta = folder / f"feed-{n}.jsonl.gz", folder / f"feed-{n}.json"
    if data_dir and path.is_file() and meta.is_file():
        data = json.loads(meta.read_text())
        if data.get("compressed_bytes") == path.stat().st_size:
            print(f"reusing {path} ({n:,} events, generated by an earlier run)", flush=True)
            data["reused"] = True
            return data
    print(f"generating {n:,} events -> {path} ...", flush=True)
    data = generate(n, path, tmp / "logs" / f"generate-{n}.log")
    meta.write_text(json.dumps(data, indent=2) + "\n")
    print(f"   {data['generate_s']} s", flush=True)
    return data


def _write(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
