"""Small HL7 v2 messages for tests, written here (the published samples are in ../shared/testdata)."""

from __future__ import annotations

from tests.conftest import TESTDATA

SAMPLES = TESTDATA / "hl7v2"


def adt(
    event: str = "A01",
    control_id: str = "C1",
    mrn: str = "MRN001",
    family: str = "ZHANG",
    given: str = "SAN",
    when: str = "20260101083000+0800",
    visit: str = "V100",
    patient_class: str = "I",
    facility: str = "JLH",
    version: str = "2.5.1",
    extra_pid: str = "",
) -> str:
    return (
        "\r".join(
            [
                f"MSH|^~\\&|HIS|{facility}|CHANGBAI|PROV|{when}||ADT^{event}^ADT_A01|{control_id}|P|{version}",
                f"EVN|{event}|{when}",
                f"PID|1||{mrn}^^^{facility}^MR||{family}^{given}||19800215|M|||1 RENMIN RD^^CHANGCHUN^JL^130000^CHN^H"
                f"^^220102||13900000000^PRN^CP|||M{extra_pid}",
                f"PV1|1|{patient_class}|W1^101^2^{facility}||||D01^LI^SI|||MED|||||||||{visit}^^^{facility}^VN"
                f"|||||||||||||||||||||||||{when}",
            ]
        )
        + "\r"
    )


def oru(
    control_id: str = "R1",
    mrn: str = "MRN001",
    obx: list[str] | None = None,
    facility: str = "JLH",
    when: str = "20260102090000+0800",
) -> str:
    obx = obx or [
        "OBX|1|NM|2345-7^Glucose^LN||5.6|mmol/L^^UCUM|3.9-6.1|N|||F|||20260102083000+0800",
        "OBX|2|SN|5905-5^Monocytes^LN||^10^-^20|%|||||F",
        "OBX|3|CWE|600-7^Bacteria identified^LN||3092008^Staphylococcus aureus^SCT||||||F",
        "OBX|4|ST|8251-1^Service comment^LN||sample slightly haemolysed||||||F",
    ]
    return (
        "\r".join(
            [
                f"MSH|^~\\&|LIS|{facility}|CHANGBAI|PROV|{when}||ORU^R01^ORU_R01|{control_id}|P|2.5.1",
                f"PID|1||{mrn}^^^{facility}^MR||ZHANG^SAN||19800215|M",
                f"OBR|1|P100|F200^{facility}|24323-8^Comprehensive metabolic panel^LN|||20260102080000+0800"
                f"||||||||||||||20260102090000+0800||CH|F",
                *obx,
            ]
        )
        + "\r"
    )


def vxu(control_id: str = "V1", mrn: str = "MRN002", facility: str = "JLCDC") -> str:
    return (
        "\r".join(
            [
                f"MSH|^~\\&|IIS|{facility}|CHANGBAI|PROV|20260301100000+0800||VXU^V04^VXU_V04|{control_id}|P|2.5.1",
                f"PID|1||{mrn}^^^{facility}^MR||WANG^XIAOMING||20250101|F",
                f"ORC|RE||IZ-778^{facility}",
                "RXA|0|1|20260301093000+0800||08^Hep B, adolescent or pediatric^CVX|0.5|mL^mL^UCUM"
                "||00^New record^NIP001||||||LOT123|20270101|SKB^GlaxoSmithKline^MVX|||CP|A",
                "RXR|C28161^Intramuscular^NCIT|LD^Left Deltoid^HL70163",
            ]
        )
        + "\r"
    )
