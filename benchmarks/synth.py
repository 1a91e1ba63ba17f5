"""Generation rate of the synthetic province (`changbai.synth.generate`), resources per second, beside a
raw baseline measured in the same run: orjson serialisation and NDJSON writing of the same number of
resources with the same mix of types (samples of the generated resources, cycled), i.e. the output cost
alone, without any generation logic. Target (issue 4): at least 20,000 resources/s at 10k residents.

Then the bulk load of that province into SQLite (`changbai load`: the one write pipeline with
validation, master index, indexing; work done ahead in worker processes, and without them), beside the
core benchmark's raw baseline (the same JSON inserted into a bare table). Target: at least 5,000/s.

    python -m benchmarks.synth [--residents 10000] [--security off|on]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path

import orjson

from benchmarks.common import table
from benchmarks.ingest import bench_raw
from changbai.synth import generate

SAMPLE_PER_TYPE = 2000


def raw_baseline(generated: Path, counts: dict[str, int], out: Path) -> float:
    """Seconds to serialise and write ``counts`` resources, cycling samples of each generated type."""
    samples = {}
    for rtype in counts:
        with open(generated / f"{rtype}.ndjson", "rb") as f:
            samples[rtype] = [orjson.loads(line) for line in islice(f, SAMPLE_PER_TYPE)]
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    for rtype, n in counts.items():
        with open(out / f"{rtype}.ndjson", "wb", buffering=1 << 20) as f:
            for res in islice(cycle(samples[rtype]), n):
                f.write(orjson.dumps(res, option=orjson.OPT_APPEND_NEWLINE))
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.synth")
    parser.add_argument("--residents", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--security", default="off", choices=["off", "on"])
    parser.add_argument("--workers", default="0,auto", help="bulk-load worker counts to compare")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="changbai-synth-bench-") as d:
        out = Path(d) / "province"
        generate(Path(d) / "warm", 50, args.seed)  # load data files and code before timing
        began = time.perf_counter()
        counts = generate(out, args.residents, args.seed)
        seconds = time.perf_counter() - began
        total = sum(counts.values())
        size = sum(f.stat().st_size for f in out.glob("*.ndjson"))
        raw = raw_baseline(out, counts, Path(d) / "raw")
        rows.append(
            [
                "synth.generate",
                f"{args.residents:,}",
                f"{total:,}",
                f"{seconds:.2f}",
                f"{total / seconds:,.0f}",
                f"{total / args.residents:.1f}",
                f"{size / 1e6:.0f}",
            ]
        )
        rows.append(
            [
                "raw baseline: orjson dump + write, same resources",
                "-",
                f"{total:,}",
                f"{raw:.2f}",
                f"{total / raw:,.0f}",
                "-",
                "-",
            ]
        )
        print(table(["what", "residents", "resources", "seconds", "resources/s", "per resident", "MB"], rows))
        print(f"\ngeneration costs {seconds / raw:.1f}x the raw output cost; target >= 20,000 resources/s\n")
        loads = bulk(out, args, Path(d))
        print(table(["bulk load into SQLite", "resources", "seconds", "resources/s", "of raw"], loads))
    return 0


def bulk(province: Path, args: argparse.Namespace, tmp: Path) -> list[list[str]]:
    from changbai.api.app import create_platform
    from changbai.settings import Settings
    from changbai.store.bulk import load_directory

    resources = [orjson.loads(line) for f in sorted(province.glob("*.ndjson")) for line in f.read_bytes().splitlines()]
    raw = bench_raw(f"sqlite:///{tmp / 'raw.db'}", resources)
    rows = [["raw baseline: the same JSON into a bare table", f"{len(resources):,}", "-", f"{raw:,.0f}", "1"]]
    del resources
    for workers in args.workers.split(","):
        n = None if workers == "auto" else int(workers)
        url = f"sqlite:///{tmp / f'load-{workers}.db'}"
        settings = Settings(data_dir=tmp / f"var-{workers}", database_url=url, security=args.security == "on")
        platform = create_platform(settings)
        began = time.perf_counter()
        report = load_directory(platform.repo, province, workers=n)
        seconds = time.perf_counter() - began
        assert not report.errors, report.errors[:3]
        rate = report.read / seconds
        label = f"changbai load, security {args.security}, workers {workers if n is None else n}"
        rows.append([label, f"{report.read:,}", f"{seconds:.1f}", f"{rate:,.0f}", f"{rate / raw:.3f}"])
        platform.db.dispose()
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
