"""HL7 v2 message -> FHIR R4 transaction Bundle, as a pure function (:func:`to_bundle`).

The message is walked segment by segment; data/events.json says, per kind of message, which segment
becomes which resource, and what each trigger event means for statuses. Ids are deterministic so a
replay of the same message writes the same resources (idempotent):

- Patient: conditional on its first identifier (``Patient?identifier=system|value``). ADT messages update
  demographics (conditional PUT); other messages only make sure the patient exists (POST + ifNoneExist),
  so a sparse PID in a lab result never overwrites what registration sent.
- Encounter: conditional on the visit number (PV1-19) when sent, so A01, A02, A08, A03 of one visit update
  one Encounter.
- Everything else: ``uuid5(sender facility | business key)`` where the business key is the order number
  (ORC-3/OBR-3, else ORC-2/OBR-2) plus the observation code and sub-id, falling back to the message control
  id and the segment's position. A corrected result (OBX-11=C) therefore updates the earlier Observation.

Bundle.timestamp is the message time (EVN-2, else MSH-7): the intake compares it to refuse out-of-order
updates. Local codes go through the ``translate`` hook (ConceptMaps per sending facility); what it cannot
map is kept as sent and listed in :attr:`Mapped.unmapped`.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

from changbai.exchange import datatypes as dt
from changbai.exchange.er7 import HL7Error, Message, Segment
from changbai.exchange.maps import event_rules, events, handler_kind, supported_version, v2_coding, v2_map

NAMESPACE = uuid.UUID("6f1c1c1e-8f5e-4a57-9f0e-6b1a2c3d4e5f")
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
EXT_ETHNICITY = "https://changbai.example/fhir/StructureDefinition/ethnicity"
EXT_RACE = "https://changbai.example/fhir/StructureDefinition/race"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


@dataclass
class Mapped:
    """What a message became: the transaction Bundle, plus what the sender should hear about."""

    bundle: dict[str, Any]
    unmapped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[HL7Error] = field(default_factory=list)  # severity W: accepted, but the sender should know
    sources: list[tuple[str, int]] = field(default_factory=list)  # per entry: the segment it came from

    def resources(self, rtype: str | None = None) -> list[dict[str, Any]]:
        return [e["resource"] for e in self.bundle["entry"] if rtype is None or e["resource"]["resourceType"] == rtype]


def check_supported(msg: Message) -> str:
    """The handler kind for the message, or HL7Error (AR) for an unsupported type or version."""
    kind = handler_kind(msg.message_type)
    if kind is None:
        raise HL7Error(
            f"message type '{msg.message_type}' is not supported",
            segment="MSH",
            seq=1,
            field_no=9,
            component=1,
            hl7_code="200",
            reject=True,
        )
    if not supported_version(msg.version):
        raise HL7Error(
            f"version '{msg.version}' is not supported", segment="MSH", seq=1, field_no=12, hl7_code="203", reject=True
        )
    return kind


def to_bundle(
    msg: Message,
    translate: dt.Translate | None = None,
    default_tz: str = "+08:00",
    resident_id_system: str = dt.RESIDENT_ID_SYSTEM,
) -> Mapped:
    """Map a parsed message to a FHIR transaction Bundle. Raises HL7Error naming segment and field."""
    kind = check_supported(msg)
    return _Mapper(msg, kind, translate, default_tz, resident_id_system).run()


class _Mapper:
    def __init__(
        self, msg: Message, kind: str, translate: dt.Translate | None, default_tz: str, resident_id_system: str
    ) -> None:
        self.msg = msg
        self.resident_id_system = resident_id_system
        self.kind = kind
        self.rules = event_rules(msg.event)
        self.segment_map: dict[str, str] = events()["segments"][kind]
        self.facility = msg.sending_facility or msg.sending_application
        self.coder = dt.Coder(self.facility, translate)
        self.tz = default_tz
        self.entries: list[dict[str, Any]] = []
        self.sources: list[tuple[str, int]] = []
        self.used_keys: set[str] = set()
        self.current: Segment | None = None
        self.warnings: list[HL7Error] = []
        self.patient_ref: dict[str, str] | None = None
        self.encounter_ref: dict[str, str] | None = None
        self.order_key = ""  # current ORC/OBR business key
        self.order_seg: Segment | None = None
        self.orc: Segment | None = None
        self.report: dict[str, Any] | None = None
        self.request: dict[str, Any] | None = None
        self.immunization: dict[str, Any] | None = None
        self.medication: dict[str, Any] | None = None
        self.document: dict[str, Any] | None = None
        self.doc_text: list[str] = []
        self.doc_attachment: dict[str, Any] | None = None
        self.medication_ref: dict[str, str] = {}

    # ------------------------------------------------------------------------------------ helpers
    def key_uuid(self, *parts: str) -> str:
        return str(uuid.uuid5(NAMESPACE, "|".join((self.facility, *parts))))

    def seg_key(self, seg: Segment) -> str:
        return f"msg:{self.msg.control_id}:{seg.index}"

    def add(self, resource: dict[str, Any], request: dict[str, Any], full_id: str | None = None) -> dict[str, Any]:
        rid = full_id or resource.get("id") or str(uuid.uuid4())
        self.entries.append({"fullUrl": f"urn:uuid:{rid}", "resource": resource, "request": request})
        self.sources.append((self.current.name, self.current.index) if self.current is not None else ("MSH", 1))
        return {"reference": f"urn:uuid:{rid}"}

    def put(self, resource: dict[str, Any], key: str, *, once: bool = False) -> dict[str, Any]:
        """PUT with a deterministic id. ``once``: a fact repeated in the message (an AL1 or DG1 sent again
        in a later order group) is written once."""
        rid = self.key_uuid(resource["resourceType"], key)
        if once and any(e["fullUrl"] == f"urn:uuid:{rid}" for e in self.entries):
            return {"reference": f"urn:uuid:{rid}"}
        resource["id"] = rid
        return self.add(resource, {"method": "PUT", "url": f"{resource['resourceType']}/{rid}"}, rid)

    def when(self, seg: Segment, n: int, comp: int = 1) -> str | None:
        """A TS field as FHIR dateTime; a malformed one is an error located at the field (ERR code 102)."""
        try:
            return dt.ts_to_datetime(seg.get(n, comp), self.tz)
        except dt.BadValue as exc:
            raise HL7Error(
                str(exc), segment=seg.name, seq=seg.index, field_no=n, component=comp, hl7_code="102"
            ) from exc

    def where(self, seg: Segment, n: int) -> str:
        return f"{seg.name}[{seg.index}]-{n}"

    def concept(self, seg: Segment, n: int, rep: int = 0) -> dict[str, Any] | None:
        reps = seg.reps(n)
        return self.coder.concept(reps[rep], self.where(seg, n)) if rep < len(reps) else None

    def subject(self, resource: dict[str, Any], key: str = "subject") -> None:
        if self.patient_ref:
            resource[key] = dict(self.patient_ref)

    # ------------------------------------------------------------------------------------ walk
    def run(self) -> Mapped:
        handlers = {
            "Patient": self.patient,
            "Encounter": self.encounter,
            "DiagnosticReport": self.diagnostic_report,
            "ServiceRequest": self.service_request,
            "Observation": self.observation,
            "order": self.order,
            "Immunization": self.immunization_rxa,
            "Appointment": self.appointment,
            "DocumentReference": self.document_reference,
            "document-content": self.document_content,
            "MedicationRequest": self.medication_request,
            "MedicationDispense": self.medication_dispense,
            "ChargeItem": self.charge_item,
            "AllergyIntolerance": self.allergy,
            "Condition": self.condition,
            "merge": self.merge,
            "RelatedPerson": self.related_person,
            "Coverage": self.coverage,
        }
        for seg in self.msg.segments[1:]:
            self.current = seg
            target = self.segment_map.get(seg.name)
            if target:
                handlers[target](seg)
            elif seg.name == "RXR" and self.immunization is not None:
                self.route(seg, self.immunization)
        if self.patient_ref is None:  # every supported message is about a patient
            raise HL7Error("PID segment is missing", segment="PID", hl7_code="100")
        self.finish_document()
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}
        evn = self.msg.first("EVN")
        stamp = (self.when(evn, 2) if evn and evn.get(2) else None) or self.when(self.msg.msh, 7)
        if stamp and "T" in stamp:
            bundle["timestamp"] = stamp
        bundle["identifier"] = {
            "system": dt.LOCAL_SYSTEM.format("message"),
            "value": f"{self.msg.sender}|{self.msg.control_id}",
        }
        return Mapped(bundle, self.coder.unmapped, self.warnings, self.sources)

    # ------------------------------------------------------------------------------------ patient
    def patient(self, pid: Segment) -> None:
        if self.patient_ref is not None:
            return
        identifiers = [
            i
            for n in (3, 2, 4)
            for r in pid.reps(n)
            if (i := dt.cx_identifier(r, self.facility, self.resident_id_system))
        ]
        for n, id_type in ((19, "SS"), (20, "DL")):
            if pid.get(n):
                rep = [[pid.get(n)], [""], [""], [pid.get(n, 2) or id_type], [id_type]]
                identifiers.append(dt.cx_identifier(rep, self.facility, self.resident_id_system) or {})
        self._check_resident_ids(pid, identifiers)
        if not identifiers:
            raise HL7Error("no patient identifier (PID-3)", segment="PID", seq=pid.index, field_no=3, hl7_code="101")
        patient: dict[str, Any] = {"resourceType": "Patient", "identifier": identifiers}
        names = [n for r in pid.reps(5) if (n := dt.xpn_name(r))]
        names += [{**n, "use": "anonymous"} for r in pid.reps(9) if (n := dt.xpn_name(r))]  # aliases
        if names:
            patient["name"] = names
        birth = self.when(pid, 7)
        if birth:
            patient["birthDate"] = birth[:10]
        if pid.get(8):
            patient["gender"] = v2_map("0001", pid.get(8), "unknown")
        addresses = [a for r in pid.reps(11) if (a := dt.xad_address(r))]
        if addresses:
            patient["address"] = addresses
        telecom = [t for r in pid.reps(13) if (t := dt.xtn_telecom(r, "home"))]
        telecom += [t for r in pid.reps(14) if (t := dt.xtn_telecom(r, "work"))]
        if telecom:
            patient["telecom"] = telecom
        language = self.concept(pid, 15)
        if language:
            patient["communication"] = [{"language": language}]
        if pid.get(16):
            coding = v2_coding("0002", pid.get(16))
            patient["maritalStatus"] = {"coding": [coding]} if coding else self.concept(pid, 16)
        extensions = []
        for n, url in ((10, EXT_RACE), (22, EXT_ETHNICITY)):
            for i, _ in enumerate(pid.reps(n)):
                cc = self.concept(pid, n, i)
                if n == 22 and cc and pid.get(22, 3) in ("", "HL70189"):
                    coding = v2_coding("0189", pid.get(22, 1, rep=i))
                    if coding:
                        cc = {"coding": [coding, *cc.get("coding", [])], "text": cc.get("text", "")}
                if cc:
                    extensions.append({"url": url, "valueCodeableConcept": cc})
        if extensions:
            patient["extension"] = extensions
        if pid.get(30) == "Y" or pid.get(29):
            patient["deceasedDateTime" if pid.get(29) else "deceasedBoolean"] = self.when(pid, 29) or True
        elif pid.get(30) == "N":
            patient["deceasedBoolean"] = False
        if pid.get(24) in ("Y", "N"):
            order = pid.get(25)
            patient["multipleBirthInteger" if order.isdigit() else "multipleBirthBoolean"] = (
                int(order) if order.isdigit() else pid.get(24) == "Y"
            )
        if self.rules.get("patient_active") is False:
            patient["active"] = False
        key = identifiers[0]
        rid = self.key_uuid("Patient", key["system"], key["value"])
        query = f"identifier={key['system']}|{key['value']}"
        if self.kind == "adt":
            request = {"method": "PUT", "url": f"Patient?{query}"}
        else:
            request = {"method": "POST", "url": "Patient", "ifNoneExist": query}
        self.patient_ref = self.add(patient, request, rid)

    def _check_resident_ids(self, pid: Segment, identifiers: list[dict[str, Any]]) -> None:
        """A resident ID number that fails its check is kept as sent, and the sender is told (ERR W)."""
        from changbai.identity.residentid import parse

        for ident in identifiers:
            if ident.get("system") == self.resident_id_system:
                checked = parse(ident["value"])
                if not checked.valid:
                    self.warnings.append(
                        HL7Error(
                            f"resident ID {ident['value']}: {'; '.join(checked.problems)}",
                            segment="PID",
                            seq=pid.index,
                            field_no=3,
                            hl7_code="102",
                            severity="W",
                        )
                    )

    def merge(self, mrg: Segment) -> None:
        """A40-style merge: the prior patient (MRG-1) becomes inactive and points to the survivor.

        Other events carrying MRG (A06/A07 change of class, A41 account merge, A45 move visit) name prior
        visits or accounts, not a prior patient, and are left alone here."""
        if not self.rules.get("merge"):
            return
        prior = [i for r in mrg.reps(1) if (i := dt.cx_identifier(r, self.facility, self.resident_id_system))]
        if not prior or self.patient_ref is None:
            raise HL7Error(
                "merge without prior patient identifier", segment="MRG", seq=mrg.index, field_no=1, hl7_code="101"
            )
        old: dict[str, Any] = {
            "resourceType": "Patient",
            "identifier": prior,
            "active": False,
            "link": [{"other": dict(self.patient_ref), "type": "replaced-by"}],
        }
        names = [n for r in mrg.reps(7) if (n := dt.xpn_name(r))]
        if names:
            old["name"] = names
        key = prior[0]
        self.add(
            old,
            {"method": "PUT", "url": f"Patient?identifier={key['system']}|{key['value']}"},
            self.key_uuid("Patient", key["system"], key["value"]),
        )

    # ------------------------------------------------------------------------------------ encounter
    def encounter(self, pv1: Segment) -> None:
        if self.rules.get("patient_only") or self.encounter_ref is not None:
            return
        pclass = pv1.get(2)
        if not pclass and not pv1.get(19) and not pv1.get(44):
            return  # an empty PV1 (e.g. "PV1||N" in results) says nothing about a visit
        coding = v2_coding("0004", pclass)
        enc: dict[str, Any] = {
            "resourceType": "Encounter",
            "status": self.rules.get("encounter_status", ""),
            "class": coding,
        }
        start, end = self.when(pv1, 44), self.when(pv1, 45)
        pv2 = self.msg.first("PV2")
        if enc["status"] == "planned" and pv2 is not None and not (start or end):
            start, end = self.when(pv2, 8), self.when(pv2, 9)  # a pending admit: the expected dates
        if not enc["status"]:
            enc["status"] = "finished" if end else "in-progress"
        if start or end:
            enc["period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
        visit = dt.cx_identifier(pv1.reps(19)[0], self.facility) if pv1.reps(19) else None
        if visit:
            enc["identifier"] = [visit]
        self.subject(enc)
        location = dt.pl_display(pv1.reps(3)[0]) if pv1.reps(3) else ""
        if location:
            enc["location"] = [{"location": {"display": location}}]
        participants = []
        for n, code in ((7, "ATND"), (8, "REF"), (9, "CON"), (17, "ADM")):
            for rep in pv1.reps(n):
                ref = dt.xcn_reference(rep)
                if ref:
                    participants.append(
                        {"type": [{"coding": [{"system": PARTICIPATION, "code": code}]}], "individual": ref}
                    )
        if participants:
            enc["participant"] = participants
        service = self.concept(pv1, 10)
        if service:
            enc["serviceType"] = service
        hosp: dict[str, Any] = {}
        if pv1.get(14):
            hosp["admitSource"] = self.concept(pv1, 14)
        if pv1.get(36):
            hosp["dischargeDisposition"] = self.concept(pv1, 36)
        if hosp:
            enc["hospitalization"] = hosp
        if pv2 and pv2.get(3):
            reason = self.concept(pv2, 3)
            if reason:
                enc["reasonCode"] = [reason]
        if visit:
            rid = self.key_uuid("Encounter", visit["system"], visit["value"])
            self.encounter_ref = self.add(
                enc, {"method": "PUT", "url": f"Encounter?identifier={visit['system']}|{visit['value']}"}, rid
            )
        else:
            self.encounter_ref = self.put(enc, self.seg_key(pv1))

    def context(self, resource: dict[str, Any], key: str = "encounter") -> None:
        if self.encounter_ref:
            resource[key] = dict(self.encounter_ref)

    # ------------------------------------------------------------------------------------ orders
    def order(self, orc: Segment) -> None:
        self.orc = orc
        self.order_key = self._order_number(orc, 3, 2)
        self.report = self.request = None
        if self.kind == "pharmacy":
            self.medication = None

    @staticmethod
    def _order_number(seg: Segment, filler: int, placer: int) -> str:
        if seg.get(filler):
            return f"filler:{seg.get(filler)}:{seg.get(filler, 2)}"
        if seg.get(placer):
            return f"placer:{seg.get(placer)}:{seg.get(placer, 2)}"
        return ""

    def _order_identifiers(self, seg: Segment, placer: int, filler: int) -> list[dict[str, Any]]:
        out = []
        for n, code in ((placer, "PLAC"), (filler, "FILL")):
            value = seg.get(n) or (self.orc.get(2 if code == "PLAC" else 3) if self.orc else "")
            if value:
                ns = seg.get(n, 2) or (self.orc.get(2 if code == "PLAC" else 3, 2) if self.orc else "")
                out.append(
                    {
                        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": code}]},
                        "system": dt.authority_system(ns or self.facility, seg.get(n, 3), seg.get(n, 4)),
                        "value": value,
                    }
                )
        return out

    def _obr_key(self, obr: Segment) -> str:
        return self._order_number(obr, 3, 2) or self.order_key or self.seg_key(obr)

    def diagnostic_report(self, obr: Segment) -> None:
        self.order_seg = obr
        code = self.concept(obr, 4) or {"text": "unknown"}
        report: dict[str, Any] = {
            "resourceType": "DiagnosticReport",
            "status": v2_map("0123", obr.get(25)) if obr.get(25) else "final",
            "code": code,
        }
        idents = self._order_identifiers(obr, 2, 3)
        if idents:
            report["identifier"] = idents
        self.subject(report)
        self.context(report)
        eff = self.when(obr, 7)
        if eff:
            report["effectiveDateTime"] = eff
        issued = self.when(obr, 22)
        if issued and len(issued) > 19:
            report["issued"] = issued
        self.put(report, f"report:{self._obr_key(obr)}:{obr.get(4)}")
        self.report = report

    def service_request(self, obr: Segment) -> None:
        self.order_seg = obr
        orc = self.orc
        status = "active"
        if orc is not None:
            status = (v2_map("0038", orc.get(5)) if orc.get(5) else None) or v2_map("0119", orc.get(1), "active")
        req: dict[str, Any] = {"resourceType": "ServiceRequest", "status": status, "intent": "order"}
        code = self.concept(obr, 4)
        if code:
            req["code"] = code
        idents = self._order_identifiers(obr, 2, 3)
        if idents:
            req["identifier"] = idents
        self.subject(req)
        self.context(req)
        if orc is not None and orc.get(9):
            req["authoredOn"] = self.when(orc, 9)
        requester = dt.xcn_reference(orc.reps(12)[0]) if orc is not None and orc.reps(12) else None
        if requester is None and obr.reps(16):
            requester = dt.xcn_reference(obr.reps(16)[0])
        if requester:
            req["requester"] = requester
        if obr.get(7):
            req["occurrenceDateTime"] = self.when(obr, 7)
        if "subject" not in req:
            raise HL7Error("order without a patient", segment="PID", hl7_code="100")
        self.put(req, f"request:{self._obr_key(obr)}:{obr.get(4)}")
        self.request = req

    # ------------------------------------------------------------------------------------ results
    def observation(self, obx: Segment) -> None:
        code = self.concept(obx, 3)
        if code is None:  # nothing to file it under: skip it and tell the sender (ERR severity W)
            self.warnings.append(
                HL7Error(
                    "observation identifier is missing; the OBX was not stored",
                    segment="OBX",
                    seq=obx.index,
                    field_no=3,
                    hl7_code="101",
                    severity="W",
                )
            )
            return
        status = v2_map("0085", obx.get(11)) if obx.get(11) else "final"
        obs: dict[str, Any] = {"resourceType": "Observation", "status": status, "code": code}
        if self.kind == "results":
            obs["category"] = [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}]
        self.subject(obs)
        self.context(obs)
        obs.update(self.obx_value(obx))
        unit_rep = obx.reps(6)[0] if obx.reps(6) else None
        ranges = [r for r in (dt.reference_range(obx.get(7), unit_rep),) if r]
        if ranges:
            obs["referenceRange"] = ranges
        interp = []
        for rep in obx.reps(8):
            code8 = dt.c(rep, 1)
            if not code8:
                continue
            mapped = v2_map("0078", code8)
            if mapped:
                interp.append(
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                "code": mapped,
                            }
                        ]
                    }
                )
        if interp:
            obs["interpretation"] = interp
        eff = self.when(obx, 14) or (self.when(self.order_seg, 7) if self.order_seg is not None else None)
        if eff:
            obs["effectiveDateTime"] = eff
        performers = [p for r in obx.reps(16) if (p := dt.xcn_reference(r))]
        if performers:
            obs["performer"] = performers
        method = self.concept(obx, 17)
        if method:
            obs["method"] = method
        group = self._obr_key(self.order_seg) if self.order_seg is not None else self.order_key
        key = f"obs:{group}:{obx.get(3)}:{obx.get(4)}" if group else self.seg_key(obx)
        if group and not obx.get(4):
            key += f":{obx.get(1)}"
        if key in self.used_keys:  # the same code and set id twice in one order: keep both
            key += f":{obx.index}"
        self.used_keys.add(key)
        ref = self.put(obs, key)
        if self.report is not None:
            self.report.setdefault("result", []).append(ref)

    def obx_value(self, obx: Segment) -> dict[str, Any]:
        vtype = obx.get(2).upper()
        reps = obx.reps(5)
        if not reps:
            return {}
        first = reps[0]
        unit_rep = obx.reps(6)[0] if obx.reps(6) else None
        if vtype in ("NM", "CQ"):
            q = dt.quantity(dt.c(first, 1), unit_rep)
            if q is not None:
                if len(reps) > 1:
                    self.warnings.append(
                        HL7Error(
                            f"only the first of {len(reps)} values was kept",
                            segment="OBX",
                            seq=obx.index,
                            field_no=5,
                            hl7_code="102",
                            severity="W",
                        )
                    )
                return {"valueQuantity": q}
            sn = dt.structured_numeric(self._comparator_split(dt.c(first, 1)), unit_rep)
            if sn:
                return sn
            return {"valueString": obx.raw(5)}
        if vtype == "SN":
            sn = dt.structured_numeric(first, unit_rep)
            if sn is None:
                raise HL7Error(
                    f"'{obx.raw(5)}' is not a structured numeric",
                    segment="OBX",
                    seq=obx.index,
                    field_no=5,
                    hl7_code="102",
                )
            return sn
        if vtype in ("CE", "CWE", "CNE", "CF"):
            cc = self.coder.concept(first, self.where(obx, 5))
            return {"valueCodeableConcept": cc} if cc else {}
        if vtype in ("DT", "TS", "DTM", "DR"):
            return {"valueDateTime": self.when(obx, 5)}
        if vtype == "TM":
            t = dt.c(first, 1)
            if len(t) >= 4 and t[:4].isdigit():
                return {"valueTime": f"{t[:2]}:{t[2:4]}:{t[4:6] or '00'}"}
            return {"valueString": t}
        if vtype in ("ST", "TX", "FT", "ID", "IS", "SI", "XPN", "XAD", "XCN", "XON", "RP", "CX", "EI"):
            text = "\n".join(
                " ".join(s for comp in r for s in comp if s).strip() if vtype not in ("ST", "TX", "FT") else r[0][0]
                for r in reps
            )
            return {"valueString": text} if text else {}
        if vtype == "ED":
            return {"valueString": f"[{dt.c(first, 2) or 'embedded'} data, {len(dt.c(first, 5))} characters]"}
        return {"valueString": obx.raw(5)}

    @staticmethod
    def _comparator_split(text: str) -> list[list[str]]:
        for comp in ("<=", ">=", "<", ">"):
            if text.startswith(comp):
                return [[comp], [text[len(comp) :].strip()]]
        return [[""], [text]]

    # ------------------------------------------------------------------------------------ immunization
    def immunization_rxa(self, rxa: Segment) -> None:
        vaccine = self.concept(rxa, 5)
        if vaccine is None:
            raise HL7Error("administered code is missing", segment="RXA", seq=rxa.index, field_no=5, hl7_code="101")
        status = v2_map("0322", rxa.get(20)) if rxa.get(20) else "completed"
        if rxa.get(21) == "D":
            status = "entered-in-error"
        imm: dict[str, Any] = {"resourceType": "Immunization", "status": status, "vaccineCode": vaccine}
        self.subject(imm, "patient")
        self.context(imm)
        occurred = self.when(rxa, 3)
        if not occurred:
            raise HL7Error("administration date is missing", segment="RXA", seq=rxa.index, field_no=3, hl7_code="101")
        imm["occurrenceDateTime"] = occurred
        dose = dt.quantity(rxa.get(6), rxa.reps(7)[0] if rxa.reps(7) else None) if rxa.get(6) != "999" else None
        if dose:
            imm["doseQuantity"] = dose
        if rxa.get(9):
            imm["primarySource"] = rxa.get(9) == "00"
            info = self.concept(rxa, 9)
            if info:
                imm["reportOrigin"] = info
        if rxa.get(15):
            imm["lotNumber"] = rxa.get(15)
        expiry = self.when(rxa, 16)
        if expiry:
            imm["expirationDate"] = expiry[:10]
        if rxa.get(17):
            imm["manufacturer"] = {"display": rxa.get(17, 2) or rxa.get(17)}
        performers = [{"actor": p} for r in rxa.reps(10) if (p := dt.xcn_reference(r))]
        if performers:
            imm["performer"] = performers
        if status == "not-done" and rxa.get(18):
            imm["statusReason"] = self.concept(rxa, 18)
        if self.orc is not None:
            ids = [i for n, code in ((2, "PLAC"), (3, "FILL")) if (i := self._ei(self.orc, n, code))]
            if ids:
                imm["identifier"] = ids
        key = f"imm:{self.order_key}:{rxa.get(5)}" if self.order_key else self.seg_key(rxa)
        self.put(imm, key)
        self.immunization = imm

    def _ei(self, seg: Segment, n: int, code: str) -> dict[str, Any] | None:
        if not seg.get(n):
            return None
        return {
            "system": dt.authority_system(seg.get(n, 2) or self.facility, seg.get(n, 3), seg.get(n, 4)),
            "value": seg.get(n),
        }

    def route(self, rxr: Segment, target: dict[str, Any]) -> None:
        route = self.concept(rxr, 1)
        if route:
            target["route"] = route
        site = self.concept(rxr, 2)
        if site:
            target["site"] = site

    # ------------------------------------------------------------------------------------ pharmacy
    def medication_request(self, rxe: Segment) -> None:
        med = self.concept(rxe, 2)
        if med is None:
            raise HL7Error("give code is missing", segment="RXE", seq=rxe.index, field_no=2, hl7_code="101")
        orc = self.orc
        status = "active"
        if orc is not None:
            status = (v2_map("0038", orc.get(5)) if orc.get(5) else None) or v2_map("0119", orc.get(1), "active")
        mr: dict[str, Any] = {
            "resourceType": "MedicationRequest",
            "status": status,
            "intent": "order",
            "medicationCodeableConcept": med,
        }
        self.subject(mr)
        self.context(mr)
        if orc is not None and orc.get(9):
            mr["authoredOn"] = self.when(orc, 9)
        if orc is not None and orc.reps(12):
            req = dt.xcn_reference(orc.reps(12)[0])
            if req:
                mr["requester"] = req
        dose = dt.quantity(rxe.get(3), rxe.reps(5)[0] if rxe.reps(5) else None)
        dosage: dict[str, Any] = {}
        if dose:
            dosage["doseAndRate"] = [{"doseQuantity": dose}]
        instructions = [dt.c(r, 2) or dt.c(r, 1) for r in rxe.reps(7)]
        if any(instructions):
            dosage["text"] = "; ".join(i for i in instructions if i)
        if dosage:
            mr["dosageInstruction"] = [dosage]
        amount = dt.quantity(rxe.get(10), rxe.reps(11)[0] if rxe.reps(11) else None)
        if amount or rxe.get(12).isdigit():
            dispense: dict[str, Any] = {}
            if amount:
                dispense["quantity"] = amount
            if rxe.get(12).isdigit():
                dispense["numberOfRepeatsAllowed"] = int(rxe.get(12))
            mr["dispenseRequest"] = dispense
        if orc is not None:
            ids = [i for n, code in ((2, "PLAC"), (3, "FILL")) if (i := self._ei(orc, n, code))]
            if ids:
                mr["identifier"] = ids
        self.medication = mr
        self.medication_ref = self.put(mr, f"medreq:{self.order_key}" if self.order_key else self.seg_key(rxe))

    def medication_dispense(self, rxd: Segment) -> None:
        med = self.concept(rxd, 2)
        if med is None:
            raise HL7Error("dispense code is missing", segment="RXD", seq=rxd.index, field_no=2, hl7_code="101")
        md: dict[str, Any] = {
            "resourceType": "MedicationDispense",
            "status": "completed",
            "medicationCodeableConcept": med,
        }
        self.subject(md)
        self.context(md, "context")
        handed = self.when(rxd, 3)
        if handed:
            md["whenHandedOver"] = handed
        qty = dt.quantity(rxd.get(4), rxd.reps(5)[0] if rxd.reps(5) else None)
        if qty:
            md["quantity"] = qty
        if self.medication is not None:
            md["authorizingPrescription"] = [dict(self.medication_ref)]
        self.put(md, f"meddisp:{self.order_key}:{rxd.get(7) or rxd.get(1)}" if self.order_key else self.seg_key(rxd))

    # ------------------------------------------------------------------------------------ scheduling
    def appointment(self, sch: Segment) -> None:
        status = self.rules.get("appointment_status") or v2_map("0278", sch.get(25), "booked")
        appt: dict[str, Any] = {"resourceType": "Appointment", "status": status}
        ids = [i for n, code in ((1, "PLAC"), (2, "FILL")) if (i := self._ei(sch, n, code))]
        if ids:
            appt["identifier"] = ids
        reason = self.concept(sch, 7)
        if reason:
            appt["reasonCode"] = [reason]
        appt_type = self.concept(sch, 8)
        if appt_type:
            appt["appointmentType"] = appt_type
        start = self.when(sch, 11, 4)
        end = self.when(sch, 11, 5)
        tq1 = self.msg.first("TQ1")
        if tq1 is not None:
            start = start or self.when(tq1, 7)
            end = end or self.when(tq1, 8)
        ais = self.msg.first("AIS")
        if ais is not None:
            start = start or self.when(ais, 4)
            service = self.concept(ais, 3)
            if service:
                appt["serviceType"] = [service]
        if start and "T" in start:
            appt["start"] = start
        if end and "T" in end:
            appt["end"] = end
        participants = []
        if self.patient_ref is None:
            pid = self.msg.first("PID")
            if pid is not None:
                self.patient(pid)
        if self.patient_ref:
            participants.append({"actor": dict(self.patient_ref), "status": "accepted"})
        for name, n in (("AIP", 3), ("AIG", 3), ("AIL", 3)):
            for seg in self.msg.all(name):
                display = (
                    dt.pl_display(seg.reps(n)[0])
                    if name == "AIL" and seg.reps(n)
                    else (" ".join(x for x in (seg.get(n, 3), seg.get(n, 2)) if x) if name == "AIP" else seg.get(n, 2))
                )
                if display:
                    participants.append({"actor": {"display": display}, "status": "accepted"})
        if not participants:
            raise HL7Error("appointment without participants", segment="PID", hl7_code="100")
        appt["participant"] = participants
        key = f"appt:{sch.get(2) or sch.get(1)}" if (sch.get(1) or sch.get(2)) else self.seg_key(sch)
        self.put(appt, key)

    # ------------------------------------------------------------------------------------ documents
    def document_reference(self, txa: Segment) -> None:
        doc: dict[str, Any] = {
            "resourceType": "DocumentReference",
            "status": "entered-in-error" if self.msg.trigger in ("T11",) else "current",
        }
        if txa.get(17):
            doc_status = v2_map("0271", txa.get(17))
            if doc_status:
                doc["docStatus"] = doc_status
        doc_type = self.concept(txa, 2)
        if doc_type:
            doc["type"] = doc_type
        ids = [i for n in (12, 13) if (i := self._ei(txa, n, ""))]
        if ids:
            doc["masterIdentifier"] = ids[0]
            if len(ids) > 1:
                doc["identifier"] = ids[1:]
        self.subject(doc)
        date = self.when(txa, 6) or self.when(txa, 4)
        if date and "T" in date:
            doc["date"] = date
        authors = [a for r in txa.reps(9) if (a := dt.xcn_reference(r))]
        if authors:
            doc["author"] = authors
        if self.encounter_ref:
            doc["context"] = {"encounter": [dict(self.encounter_ref)]}
        self.document = doc
        unique = txa.get(12) or txa.get(13)
        self.put(doc, f"doc:{unique}" if unique else self.seg_key(txa))

    def document_content(self, obx: Segment) -> None:
        if obx.get(2).upper() == "ED":
            self.doc_attachment = {
                "contentType": _mime(obx.get(5, 2), obx.get(5, 3)),
                "data": obx.get(5, 5)
                if obx.get(5, 4).upper() == "BASE64"
                else base64.b64encode(obx.get(5, 5).encode()).decode(),
            }
        else:
            self.doc_text.extend(r[0][0] if r and r[0] else "" for r in obx.reps(5))

    def finish_document(self) -> None:
        if self.document is None:
            return
        attachment = self.doc_attachment
        if attachment is not None and not attachment.get("data"):
            attachment.pop("data", None)
        text = "\n".join(self.doc_text).strip()
        if attachment is None and text:
            attachment = {"contentType": "text/plain; charset=utf-8", "data": base64.b64encode(text.encode()).decode()}
        self.document["content"] = [{"attachment": attachment or {"contentType": "text/plain"}}]

    # ------------------------------------------------------------------------------------ finance etc.
    def charge_item(self, ft1: Segment) -> None:
        code = self.concept(ft1, 7)
        if code is None:
            raise HL7Error("transaction code is missing", segment="FT1", seq=ft1.index, field_no=7, hl7_code="101")
        if self.patient_ref is None:
            raise HL7Error("charge without a patient", segment="PID", hl7_code="100")
        item: dict[str, Any] = {"resourceType": "ChargeItem", "status": "billable", "code": code}
        self.subject(item)
        self.context(item, "context")
        when = self.when(ft1, 4)
        if when:
            item["occurrenceDateTime"] = when
        qty = dt.decimal_value(ft1.get(10))
        if qty is not None:
            item["quantity"] = {"value": qty}
        price = dt.decimal_value(ft1.get(11))
        if price is not None:
            item["priceOverride"] = {"value": price, "currency": ft1.get(11, 1, 2) or "CNY"}
        ident = ft1.get(2) or ft1.get(1)
        item["identifier"] = [{"system": dt.authority_system(self.facility, "", ""), "value": ident}] if ident else []
        if not item["identifier"]:
            del item["identifier"]
        self.put(item, f"charge:{ft1.get(2)}:{ft1.get(1)}" if ft1.get(2) else self.seg_key(ft1))

    def allergy(self, al1: Segment) -> None:
        code = self.concept(al1, 3)
        if code is None or self.patient_ref is None:
            return
        allergy: dict[str, Any] = {
            "resourceType": "AllergyIntolerance",
            "code": code,
            "patient": dict(self.patient_ref),
        }
        category = v2_map("0127", al1.get(2)) if al1.get(2) else None
        if category:
            allergy["category"] = [category]
        self.put(allergy, f"allergy:{self.patient_ref['reference']}:{al1.get(3)}", once=True)

    def related_person(self, nk1: Segment) -> None:
        """NK1 next of kin -> RelatedPerson (name, relationship from table 0063, telecom, address)."""
        names = [n for r in nk1.reps(2) if (n := dt.xpn_name(r))]
        if not names or self.patient_ref is None:
            return
        person: dict[str, Any] = {"resourceType": "RelatedPerson", "patient": dict(self.patient_ref), "name": names}
        relation = nk1.get(3)
        if relation:
            coding = v2_coding("0063", relation)
            person["relationship"] = [{"coding": [coding]} if coding else self.concept(nk1, 3)]
        telecom = [t for n in (5, 6) for r in nk1.reps(n) if (t := dt.xtn_telecom(r, "home" if n == 5 else "work"))]
        if telecom:
            person["telecom"] = telecom
        addresses = [a for r in nk1.reps(4) if (a := dt.xad_address(r))]
        if addresses:
            person["address"] = addresses
        self.put(person, f"nk1:{self.patient_ref['reference']}:{nk1.get(1)}:{nk1.get(2)}", once=True)

    def coverage(self, in1: Segment) -> None:
        """IN1 insurance -> Coverage (payor by name, policy number, period); the insurer is not invented."""
        payor = in1.get(4) or in1.get(3) or in1.get(2, 2) or in1.get(2)
        if not payor or self.patient_ref is None:
            return
        cov: dict[str, Any] = {
            "resourceType": "Coverage",
            "status": "active",
            "beneficiary": dict(self.patient_ref),
            "payor": [{"display": payor}],
        }
        plan = self.concept(in1, 2)
        if plan:
            cov["type"] = plan
        policy = in1.get(36) or in1.get(49)
        if policy:
            cov["subscriberId"] = policy
            cov["identifier"] = [{"system": dt.local_system(f"{self.facility}-policy"), "value": policy}]
        start, end = self.when(in1, 12), self.when(in1, 13)
        if start or end:
            cov["period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
        self.put(cov, f"in1:{self.patient_ref['reference']}:{in1.get(2)}:{policy or in1.get(1)}", once=True)

    def condition(self, dg1: Segment) -> None:
        code = self.concept(dg1, 3)
        if code is None or self.patient_ref is None:
            return
        cond: dict[str, Any] = {"resourceType": "Condition", "code": code, "subject": dict(self.patient_ref)}
        self.context(cond)
        onset = self.when(dg1, 5)
        if onset:
            cond["recordedDate"] = onset
        self.put(cond, f"condition:{self.patient_ref['reference']}:{dg1.get(3)}:{dg1.get(1)}", once=True)


def _mime(type_of_data: str, subtype: str) -> str:
    return v2_map("0191", subtype.upper()) or v2_map("0191", type_of_data.upper()) or "application/octet-stream"
