"""Batch deduplication of a whole population on Splink (DuckDB backend), with the shared model.

The one source of truth is our model file (data/model.json): `splink_settings` translates its
comparisons (the SQL of each level in changbai.identity.comparisons), its m/u probabilities, its prior
and the blocking rules (data/blocking.json) into a Splink settings dict. Splink is not trained here; it
computes the same comparison vectors as the online matcher, in SQL, at scale. Pairs at or above the
auto-link threshold are clustered (connected components); an agreeing ID number that does not validate
does not count towards that threshold, exactly as online.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from changbai import logs
from changbai.identity import blocking
from changbai.identity.comparisons import BY_FIELD
from changbai.identity.model import MatchModel, load
from changbai.identity.normalise import NormalisedPatient, normalise_patient
from changbai.identity.training import clusters

log = logs.get(__name__)


def _columns(sql: str) -> str:
    """Our level SQL says l.x / r.x; Splink's comparison levels say x_l / x_r."""
    return re.sub(r"\b([lr])\.(\w+)", r"\2_\1", sql)


def splink_settings(model: MatchModel) -> dict[str, Any]:
    """The Splink settings dict equivalent to ``model`` (same levels, same m/u, same prior)."""
    comparisons = []
    for params in model.fields:
        comp = BY_FIELD[params.field]
        missing = _columns(f"NOT ({comp.present_sql.format(s='l')}) OR NOT ({comp.present_sql.format(s='r')})")
        levels: list[dict[str, Any]] = [
            {"sql_condition": missing, "label_for_charts": "missing", "is_null_level": True}
        ]
        for level, m, u in zip(comp.levels, params.m, params.u, strict=True):
            levels.append(
                {
                    "sql_condition": _columns(level.sql),
                    "label_for_charts": level.name,
                    "m_probability": max(m, 1e-6),
                    "u_probability": max(u, 1e-6),
                }
            )
        comparisons.append({"output_column_name": comp.field, "comparison_levels": levels})
    rules = [{"blocking_rule": f"l.bk_{name} = r.bk_{name}"} for name in blocking.rules()]
    return {
        "link_type": "dedupe_only",
        "unique_id_column_name": "unique_id",
        "probability_two_random_records_match": model.prior,
        "blocking_rules_to_generate_predictions": rules,
        "comparisons": comparisons,
        "retain_matching_columns": True,
        "retain_intermediate_calculation_columns": True,
    }


def splink_gamma(n_levels: int, level: int) -> int:
    """Splink numbers levels from the last (0) up; ours from the first (0) down; missing is -1 in both."""
    return level if level < 0 else n_levels - 1 - level


def frame(patients: Iterable[NormalisedPatient]) -> pd.DataFrame:
    """One row per patient: the comparison columns and one blocking-key column per rule."""
    rows = []
    for p in patients:
        row = blocking.blocking_row(p)
        row.update(blocking.key_columns(row))
        rows.append(row)
    return pd.DataFrame(rows)


def predict(df: pd.DataFrame, model: MatchModel, threshold: float | None = None) -> pd.DataFrame:
    """Scored candidate pairs (unique_id_l, unique_id_r, match_weight, match_probability, gamma_*, bf_*)."""
    from splink import DuckDBAPI, Linker

    logging.getLogger("splink").setLevel(logging.WARNING)
    db = DuckDBAPI()
    linker = Linker(db.register(df), splink_settings(model))
    t = model.thresholds.review if threshold is None else threshold
    result = linker.inference.predict(threshold_match_weight=math.log2(t / (1 - t)))
    return result.as_pandas_dataframe()


def auto_links(pairs: pd.DataFrame, model: MatchModel) -> pd.DataFrame:
    """Pairs at or above auto-link (an agreeing but unverified ID number not counted) that no guard caps."""
    names = [lv.name for lv in BY_FIELD["id_number"].levels]
    unverified = splink_gamma(len(names), names.index("exact-unverified"))
    weight = pairs["match_weight"].to_numpy().copy()
    mask = (pairs["gamma_id_number"] == unverified).to_numpy()
    if mask.any():
        weight[mask] -= pairs.loc[mask, "mw_id_number"].to_numpy()
    t = model.thresholds.auto_link
    keep = weight >= math.log2(t / (1 - t))
    for guard in model.guards:
        hit = np.ones(len(pairs), dtype=bool)
        for field, allowed in guard.when.items():
            hit &= _level_in(pairs, field, allowed)
        for field, listed in guard.unless.items():
            hit &= ~_level_in(pairs, field, listed)
        if guard.name_scripts is not None:
            scripts = set(guard.name_scripts)
            for side in ("l", "r"):
                column = pairs[f"name_script_{side}"]
                hit &= np.array([(None if v is None or v != v else v) in scripts for v in column], dtype=bool)
        keep &= ~hit
    return pairs[keep]


def _level_in(pairs: pd.DataFrame, field: str, names: list[str]) -> np.ndarray:
    levels = [lv.name for lv in BY_FIELD[field].levels]
    gammas = [-1 if n == "missing" else splink_gamma(len(levels), levels.index(n)) for n in names]
    return pairs[f"gamma_{field}"].isin(gammas).to_numpy()


def dedupe_frame(df: pd.DataFrame, model: MatchModel | None = None) -> list[list[str]]:
    model = model or load()
    if len(df) < 2:
        return [[k] for k in df.get("unique_id", [])]
    pairs = predict(df, model)
    links = auto_links(pairs, model)
    keys = list(df["unique_id"])
    position = {k: i for i, k in enumerate(keys)}
    edges = [(position[a], position[b]) for a, b in zip(links["unique_id_l"], links["unique_id_r"], strict=True)]
    result = clusters(keys, edges)
    logs.event(log, "empi dedupe", records=len(keys), pairs=len(pairs), links=len(links), clusters=len(result))
    return result


def dedupe(records: Iterable[dict[str, Any]], model: MatchModel | None = None) -> list[list[str]]:
    """Clusters of Patient ids (each list one person, singletons included), largest first.

    ``records`` are FHIR Patients (each with an id); the model defaults to the shipped one."""
    patients = [normalise_patient(r, key=str(r.get("id") or i)) for i, r in enumerate(records)]
    return dedupe_frame(frame(patients), model)
