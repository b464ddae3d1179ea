#!/usr/bin/python3
"""Replace one benchmark's section of docs/BENCHMARKS.md with the Markdown read on stdin.

Each benchmark owns the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`; the rest
of the file is left as it is. A missing section is appended. The machine, the date and the
command are added by this script so every table carries them.

usage: report.py NAME "COMMAND" [--file docs/BENCHMARKS.md] < table.md
"""
import argparse
import datetime
import os
import platform
import re
import sys


def machine():
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} x {cpu}{mem}, Linux {platform.release()}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("command")
    ap.add_argument("--file", default=os.path.join(os.path.dirname(__file__), "..", "..", "docs", "BENCHMARKS.md"))
    ap.add_argument("--machine", default=None, help="override the machine line (e.g. GPU runs)")
    args = ap.parse_args()
    body = sys.stdin.read().strip()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (f"<!-- bench:{args.name} -->\n"
               f"Command: `{args.command}`  \n"
               f"Machine: {args.machine or machine()}  \n"
               f"Date: {stamp}\n\n{body}\n"
               f"<!-- /bench:{args.name} -->")
    try:
        with open(args.file) as f:
            text = f.read()
    except FileNotFoundError:
        text = "# flint benchmarks\n\nEach section is written by its benchmark under `tests/bench/`; do not edit by hand.\n"
    pat = re.compile(rf"<!-- bench:{re.escape(args.name)} -->.*?<!-- /bench:{re.escape(args.name)} -->", re.S)
    if pat.search(text):
        text = pat.sub(lambda _m: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(args.file, "w") as f:
        f.write(text)
    print(f"updated section `{args.name}` of {os.path.normpath(args.file)}")


if __name__ == "__main__":
    main()
