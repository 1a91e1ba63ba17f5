"""CodeSystem resources for the platform's own code systems that the province uses (systems.py), so
that every code in the output can be looked up and validated by the terminology module."""

from __future__ import annotations

import csv
from importlib import resources
from typing import Any

from changbai.synth import systems
from changbai.synth.data import load
from changbai.synth.output import Output

VERSION = "1"


def _code_system(
    out: Output,
    cid: str,
    url: str,
    name: str,
    title: str,
    concepts: list[tuple[str, str]],
    content: str = "complete",
    description: str = "",
) -> None:
    res: dict[str, Any] = {
        "resourceType": "CodeSystem",
        "id": cid,
        "url": url,
        "version": VERSION,
        "name": name,
        "title": title,
        "status": "active",
        "experimental": False,
        "publisher": "Changbai",
    }
    if description:
        res["description"] = description
    res["caseSensitive"] = True
    res["content"] = content
    res["count"] = len(concepts)
    res["concept"] = [{"code": code, "display": display} for code, display in concepts]
    out.emit(res)


def emit(out: Output) -> None:
    population, facilities = load("population"), load("facilities")
    path = resources.files("changbai.terminology").joinpath("data/divisions.csv")
    with path.open(encoding="utf-8") as f:
        divisions = [(r["code"], r["name"]) for r in csv.DictReader(f)]
    _code_system(
        out,
        "gb-t-2260",
        systems.DIVISION,
        "GBT2260",
        "行政区划代码 (GB/T 2260)",
        divisions,
        description="Chinese administrative divisions: provinces, prefecture- and county-level divisions "
        "(6 digits) and Jilin's townships (9-digit statistical codes), from the platform's table.",
    )
    _code_system(
        out,
        "gb-t-3304",
        systems.ETHNICITY,
        "GBT3304",
        "民族 (GB/T 3304)",
        sorted(population["ethnicity_codes"].items()),
        content="fragment",
        description="The ethnic groups of the synthetic province, with their GB/T 3304 codes.",
    )
    _code_system(
        out,
        "insurance-type",
        systems.INSURANCE_TYPE,
        "InsuranceType",
        "基本医疗保险类别",
        list(population["insurance"]["types"].items()),
    )
    kinds = facilities["kinds"].values()
    types: dict[str, str] = {}
    for k in kinds:
        types.setdefault(k["type"], k["type_display"])
    _code_system(out, "facility-type", systems.FACILITY_TYPE, "FacilityType", "卫生机构类别", list(types.items()))
    _code_system(
        out, "hospital-level", systems.HOSPITAL_LEVEL, "HospitalLevel", "医院等级", list(facilities["levels"].items())
    )
    roles = [(r.replace("_", "-"), d) for r, (_, d) in facilities["roles"].items() if r not in ("doctor", "pharmacist")]
    _code_system(out, "staff-role", systems.STAFF_ROLE, "StaffRole", "卫生人员角色", roles)
    departments = sorted({d for ds in facilities["departments"].values() for d in ds})
    _code_system(out, "department", systems.DEPARTMENT, "Department", "科室", [(d, d) for d in departments])
    vaccines = load("immunisation")["vaccines"]
    _code_system(
        out,
        "nip-vaccine",
        systems.NIP_VACCINE,
        "NIPVaccine",
        "国家免疫规划疫苗",
        [(code, v["name"]) for code, v in vaccines.items()],
    )
    _code_system(
        out,
        "medical-service-item",
        systems.SERVICE_ITEM,
        "MedicalServiceItem",
        "医疗服务项目",
        [("consultation", "诊查费"), ("bed-day", "床位费"), ("nursing-day", "护理费"), ("treatment", "治疗费")],
    )
