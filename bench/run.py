"""``make bench``: all five benchmarks, then a table of figure / target / met.

Usage: ``python -m bench.run [--seconds 15] [--open 1000000] [--json FILE]``. Every figure
is measured in this run, the baseline's included; nothing is carried over from earlier
runs. Needs two free cores to mean anything: check ``uptime`` first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import ack, scale

Row = tuple[str, str, str, bool]


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.1f}{unit}" if isinstance(value, float) else f"{value:,}{unit}"


def _le(value: float | None, limit: float) -> bool:
    return value is not None and not math.isnan(value) and value <= limit


def rows(first: dict[str, Any], scaled: dict[str, Any], slow: dict[str, Any]) -> list[Row]:
    base, ours = first["baseline"], first["ours"]
    ratio = ours["rps"] / base["rps"] if base["rps"] else 0.0
    delivery, clicks = first["delivery"], first["clicks"]
    big, small, empty = scaled["big"], scaled["small"], scaled["empty"]
    submit_ratio = big["submit_p99_ms"] / empty["submit_p99_ms"]
    tick_big, tick_small = big["tick_db_ms_per_100_max"], small["tick_db_ms_per_100_max"]
    sd, so = slow["delivery"], slow["ours"]
    runs = first.get("baseline_runs") or [base]
    return [
        *((f"1. baseline {when}requests/s, p50, p99",
           f"{_fmt(r['rps'])}/s, {_fmt(r['p50_ms'])} ms, {_fmt(r['p99_ms'])} ms",
           "(reference)", True)
          for when, r in zip(("before ours: ", "after ours:  ") if len(runs) > 1 else ("",),
                             runs, strict=False)),
        *((("1. baseline, mean of the two", f"{_fmt(base['rps'])}/s", "(reference)", True),)
          if len(runs) > 1 else ()),
        ("1. ours requests/s, p50, p99",
         f"{_fmt(ours['rps'])}/s, {_fmt(ours['p50_ms'])} ms, {_fmt(ours['p99_ms'])} ms",
         "", True),
        ("1. throughput ratio ours/baseline", f"{ratio:.2f}", ">= 0.8", ratio >= 0.8),
        ("1. ack p99", f"{_fmt(ours['p99_ms'])} ms", "<= 60 ms", _le(ours["p99_ms"], 60)),
        ("1. non-2xx (ours + baseline)", f"{ours['non_2xx']} + {base['non_2xx']}", "0",
         ours["non_2xx"] == 0 and base["non_2xx"] == 0),
        ("2. first cards within 5 s of the burst",
         f"{delivery['within_5s']:,}/{delivery['expected']:,} (last "
         f"{_fmt(delivery['last_after_burst_s'])} s after)", "100%",
         delivery["expected"] > 0 and delivery["within_5s"] == delivery["expected"]),
        ("2. cards posted twice", str(delivery["twice"]), "0", delivery["twice"] == 0),
        ("3. click p99", f"{_fmt(clicks['p99_ms'])} ms ({clicks['clicked']:,} clicks, "
         f"{_fmt(clicks['rps'])}/s)", "<= 60 ms", _le(clicks["p99_ms"], 60)),
        ("3. next cards delivered", f"{clicks['next_cards']:,}/{clicks['clicked']:,} (last "
         f"{_fmt(clicks['last_next_after_clicks_s'])} s after the clicks)", "all",
         clicks["clicked"] > 0 and clicks["next_cards"] == clicks["clicked"]),
        ("3. next cards posted twice", str(clicks["twice"]), "0", clicks["twice"] == 0),
        ("4. tick DB time per 100 due (1M open)",
         f"{_fmt(tick_big)} ms (wall {_fmt(big['tick_ms_per_100_max'])} ms)", "<= 50 ms",
         _le(tick_big, 50)),
        ("4. tick DB time, 1M vs small database",
         f"{_fmt(tick_big)} vs {_fmt(tick_small)} ms", "independent",
         _le(tick_big, max(2 * tick_small, tick_small + 5))),
        ("4. submit p99 1M vs empty",
         f"{_fmt(big['submit_p99_ms'])} vs {_fmt(empty['submit_p99_ms'])} ms "
         f"({submit_ratio:.2f}x)", "<= 1.5x", submit_ratio <= 1.5),
        ("4. waiting-for read, 10,000 pending",
         f"{_fmt(big['waiting_for_p99_ms'])} ms p99", "<= 100 ms",
         _le(big["waiting_for_p99_ms"], 100)),
        ("4. server RSS on the 1M database", f"{_fmt(scaled['server_peak_rss_mb'])} MB peak",
         "<= 300 MB", _le(scaled["server_peak_rss_mb"], 300)),
        ("5. ack p99, LLM answering after 2 s", f"{_fmt(so['p99_ms'])} ms", "<= 60 ms",
         _le(so["p99_ms"], 60)),
        ("5. first cards within 1 s of the ack",
         f"{sd['within_1s_of_ack']:,}/{sd['expected']:,} (p99 "
         f"{_fmt(sd['after_ack_p99_s'])} s)", "all",
         sd["expected"] > 0 and sd["within_1s_of_ack"] == sd["expected"]),
    ]


def table(result: list[Row]) -> str:
    widths = [max(len(str(r[i])) for r in result) for i in range(3)]
    lines = [f"{'figure':<{widths[0]}}  {'measured':<{widths[1]}}  {'target':<{widths[2]}}  met",
             "-" * (sum(widths) + 11)]
    for name, value, target, met in result:
        lines.append(f"{name:<{widths[0]}}  {value:<{widths[1]}}  {target:<{widths[2]}}  "
                     f"{'yes' if met else 'NO'}")
    return "\n".join(lines)


def cpu_lines(first: dict[str, Any], slow: dict[str, Any]) -> list[str]:
    """Information, not targets: each process's CPU per acknowledged request, from the
    burst until the delivery check ends (the baseline: until its burst ends)."""
    lines = ["CPU per acknowledged request, in ms (information, not targets):"]
    for name, figures in (("1. baseline", first.get("baseline")), ("1. ours", first["ours"]),
                          ("5. ours", slow["ours"])):
        cpu = (figures or {}).get("cpu")
        if not cpu:
            continue
        parts = [f"{process} {ms:.3f}" for process, ms in cpu["ms_per_request"].items()]
        posts = cpu.get("chat_postMessage")
        per_post = ""
        if posts:
            stand_in = cpu["ms_per_request"].get("slack stand-in", 0.0) * cpu["requests"]
            per_post = f"; stand-in {stand_in / posts:.3f} per chat.postMessage"
        lines.append(f"{name:<12} {', '.join(parts)}; all {cpu['total_ms_per_request']:.3f} "
                     f"({cpu['requests']:,} requests, {cpu['window_s']:.1f} s{per_post})")
    return lines


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "load_before": os.getloadavg()}


async def main(args: argparse.Namespace) -> None:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="approvals-bench-"))
    info = machine()
    print(f"machine: {info['cpus']} CPUs, {info['cpu']}, Python {info['python']}, "
          f"load {info['load_before'][0]:.2f}; work in {work}", flush=True)
    started = time.monotonic()
    print("1-3. acknowledgements, delivery, clicks ...", flush=True)
    first = await ack.run(work / "ack", seconds=args.seconds)
    print(json.dumps(first, indent=1), flush=True)
    print(f"4. {args.open:,} open requests ...", flush=True)
    scaled = await scale.run_apart(work / "scale", count=args.open)
    print(json.dumps(scaled, indent=1), flush=True)
    print("5. a slow LLM advisor ...", flush=True)
    slow = await ack.run(work / "llm", seconds=args.seconds, baseline=False, llm_delay=2.0)
    print(json.dumps(slow, indent=1), flush=True)
    result = rows(first, scaled, slow)
    print(f"\nall five in {time.monotonic() - started:.0f} s\n")
    print(table(result))
    print()
    print("\n".join(cpu_lines(first, slow)))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "ack": first,
                                               "scale": scaled, "llm": slow}, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--open", type=int, default=1_000_000)
    parser.add_argument("--workdir")
    parser.add_argument("--json")
    asyncio.run(main(parser.parse_args()))
