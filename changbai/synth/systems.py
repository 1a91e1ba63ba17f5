"""URIs of the identifier and code systems the synthetic province uses, in one place.

Real systems where they exist (ICD-10, LOINC, UCUM, ATC, CVX, HL7 terminology); the platform's own
namespace (``BASE``) for Chinese national code lists that have no agreed FHIR URI yet. Other modules
should import these rather than repeat the strings.
"""

from __future__ import annotations

#: The platform's own namespace for code systems, identifier systems and extensions.
BASE = "https://changbai.example/fhir"

RESIDENT_ID = "urn:oid:2.16.156.10011.1.3"  # 18-digit resident identity card number (GB 11643)
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ATC = "http://www.whocc.no/atc"
CVX = "http://hl7.org/fhir/sid/cvx"

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"  # identifier types (NI, MR, PRN)
V3_ACTCODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"  # encounter class
V3_ROLECODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"  # location type, relationships
V3_MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
V3_ROUTE = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration"
V3_SITE = "http://terminology.hl7.org/CodeSystem/v3-ActSite"
ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
PRACTITIONER_ROLE = "http://terminology.hl7.org/CodeSystem/practitioner-role"
LOCATION_PHYSICAL = "http://terminology.hl7.org/CodeSystem/location-physical-type"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DIAGNOSTIC_SERVICE = "http://terminology.hl7.org/CodeSystem/v2-0074"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
PROCESS_PRIORITY = "http://terminology.hl7.org/CodeSystem/processpriority"
COVERAGE_CLASS = "http://terminology.hl7.org/CodeSystem/coverage-class"
DIAGNOSIS_ROLE = "http://terminology.hl7.org/CodeSystem/diagnosis-role"
ADMIT_SOURCE = "http://terminology.hl7.org/CodeSystem/admit-source"
DISCHARGE_DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
SNOMED = "http://snomed.info/sct"
LANGUAGE_EXT = "http://hl7.org/fhir/StructureDefinition/language"

# The platform's own (documented in docs/synth.md).
DIVISION = f"{BASE}/CodeSystem/gb-t-2260"  # administrative division codes (6 digits; 9 for townships)
ETHNICITY = f"{BASE}/CodeSystem/gb-t-3304"  # 民族 codes of GB/T 3304 (01 汉族, 10 朝鲜族, 11 满族 ...)
INSURANCE_TYPE = f"{BASE}/CodeSystem/insurance-type"  # UEBMI / URRBMI
FACILITY_TYPE = f"{BASE}/CodeSystem/facility-type"  # kinds of WS 218 health institutions
HOSPITAL_LEVEL = f"{BASE}/CodeSystem/hospital-level"  # 三级 / 二级 / 一级
STAFF_ROLE = f"{BASE}/CodeSystem/staff-role"  # 家庭医生, 乡村医生, 公共卫生医师 ...
DEPARTMENT = f"{BASE}/CodeSystem/department"  # 科室
NIP_VACCINE = f"{BASE}/CodeSystem/nip-vaccine"  # vaccines of the national immunisation programme
SERVICE_ITEM = f"{BASE}/CodeSystem/medical-service-item"  # billable service items (诊查费, 床位费 ...)
MRN = f"{BASE}/sid/mrn/"  # + organization id: medical record number at that facility
ORG_CODE = f"{BASE}/sid/organization"  # facility registration code
PRACTITIONER_CODE = f"{BASE}/sid/practitioner"  # practising licence number
COVERAGE_ID = f"{BASE}/sid/insurance-card"  # medical insurance card number

EXT_ETHNICITY = f"{BASE}/StructureDefinition/ethnicity"  # Patient: valueCoding (ETHNICITY)
EXT_DIVISION = f"{BASE}/StructureDefinition/address-division"  # Address: valueCoding (DIVISION)
