"""The console in Chromium: each role signs in through the platform's OAuth2 page and does its tasks."""

from __future__ import annotations

import json
import re

from changbai.web.sample import World


def id_number(world: World) -> str:
    return next(i["value"] for i in world.patient["identifier"] if i["system"] == "urn:oid:2.16.156.10011.1.3")


def org_name(world: World, org: str) -> str:
    path = world.province / "Organization.ndjson"
    return next(json.loads(line)["name"] for line in path.open(encoding="utf-8") if f'"id":"{org}"' in line)


def name(world: World) -> str:
    return world.patient["name"][0]["text"]


def test_clinician_finds_the_resident_every_way_and_reads_the_whole_record(world, browser):
    b = browser()
    page = b.sign_in("doctor-home", "clinician")
    assert page.url.endswith("/console/find")
    phone = next(t["value"] for t in world.patient["telecom"] if t["system"] == "phone")
    searches = [
        {"#id_number": id_number(world)},
        {"#name": name(world), "#birth_date": world.patient["birthDate"]},
        {"#phone": phone},
        {"#qr": f"JKK:1.0|{name(world)}|{id_number(world)}|2201|sig=9f3a"},  # a pasted health-card QR text
    ]
    for fields in searches:
        b.go("/console/find")
        for selector, value in fields.items():
            page.fill(selector, value)
        page.click("#search")
        page.wait_for_selector("#h-found")
        assert page.locator("table.list tbody tr").count() >= 1, fields
        assert name(world) in page.inner_text("table.list")
    page.click(f"table.list a:has-text('{name(world)}')")
    page.wait_for_url(f"**/console/patient/{world.patient['id']}")
    main = page.inner_text("main")
    assert name(world) in main and id_number(world) in main
    for heading in (
        "档案首页",
        "过敏",
        "慢性病与诊断",
        "近期用药",
        "最近体征",
        "预防接种",
        "就诊时间线",
        "趋势",
        "文档",
    ):
        assert heading in main, heading
    # encounters at more than one facility, each with where it came from; a blood-pressure chart drawn as SVG
    assert page.locator(".timeline li").count() >= 2
    assert "来源" in main
    assert page.locator("svg.chart").count() >= 1
    assert page.locator("svg.chart path").count() >= 1


def test_resident_grants_another_facility_which_then_sees_the_record_and_loses_it_on_revoke(world, browser):
    other, resident = browser(), browser(390, 844)
    page = other.sign_in("doctor-other", "clinician")
    record = f"/console/patient/{world.patient['id']}"
    other.go(record)
    assert page.locator("#denied").is_visible()
    assert name(world) not in page.inner_text("main")
    # the search of a clinician without the resident's authorisation finds nothing either
    other.go(f"/console/find?id_number={id_number(world)}")
    assert page.locator("table.list").count() == 0

    rp = resident.sign_in("resident", "resident")
    assert rp.url.endswith("/console/me")
    assert name(world) in rp.inner_text("main")
    resident.go("/console/me/consent")
    # by default the choices are the facilities that treated the resident; the other one is found by name
    assert rp.locator(f"input[value='Organization/{world.other_org}']").count() == 0
    rp.fill("#q", org_name(world, world.other_org))
    rp.click("#find-org")
    rp.check(f"input[value='Organization/{world.other_org}']")
    rp.click("#grant")
    rp.wait_for_selector("p.ok")
    assert rp.locator(".access li").count() >= 1

    other.go(record)
    assert page.locator("#denied").count() == 0
    assert name(world) in page.inner_text("main")

    # the resident sees who read the record
    resident.go("/console/me/access")
    assert "doctor-other" in rp.inner_text("main")
    # and revokes: the other facility loses access again
    resident.go("/console/me/consent")
    rp.click("button:has-text('撤销')")
    rp.wait_for_selector("p.ok")
    other.go(record)
    assert page.locator("#denied").is_visible()


def test_break_the_glass_needs_a_reason_and_is_shown_to_the_resident(world, browser):
    er = browser()
    page = er.sign_in("doctor-er", "clinician")
    er.go(f"/console/patient/{world.patient['id']}")
    assert page.locator("#denied").is_visible()
    page.fill("#reason", "x")  # too short: refused by security's rule
    page.evaluate("document.getElementById('reason').removeAttribute('minlength')")
    page.click("#btg")
    assert page.locator("p.err").count() >= 2
    page.fill("#reason", "昏迷急诊入院，无法联系家属")
    page.click("#btg")
    page.wait_for_selector("p.warn")
    assert name(world) in page.inner_text("main")

    resident = browser(390, 844)
    rp = resident.sign_in("resident", "resident")
    resident.go("/console/me/access")
    flagged = rp.locator("li.flagged")
    assert flagged.count() >= 1
    assert "doctor-er" in flagged.first.inner_text()


def test_resident_pages_results_and_family(world, browser):
    resident = browser(390, 844)
    rp = resident.sign_in("resident", "resident")
    resident.go("/console/me/results")
    assert rp.locator("svg.chart").count() >= 1
    assert rp.locator("#h-results").is_visible()
    resident.go("/console/me/family")
    assert rp.locator("h1").inner_text() == "家庭成员"
    # a resident is not offered, and cannot use, the staff pages
    resident.go("/console/ops")
    assert "无权" in rp.inner_text("main")


def test_review_queue_link_merge_unmerge(world, browser):
    ops = browser()
    page = ops.sign_in("ops", "operator")
    assert page.url.endswith("/console/ops")
    ops.go("/console/review")
    pairs = page.locator("section.pair")
    assert pairs.count() >= 2, "the sample province has possible duplicates for review"
    first = pairs.first
    assert re.search(r"\d+\.\d%", first.inner_text())  # the match probability
    assert first.locator("tr.diff, tbody tr").count() >= 5  # side by side
    first.locator("button[value=link]").click()
    assert "link: OK" in page.inner_text("#review-message")
    page.locator("section.pair").first.locator("button[value=merge]").click()
    message = page.inner_text("#review-message")
    merge_id = re.search(r"merge id (\S+)\)", message).group(1)
    page.fill("#merge", merge_id)
    page.click("#h-unmerge ~ form button[value=unmerge]")
    assert "unmerge: OK" in page.inner_text("#review-message")
    # not a duplicate removes the pair from the open queue
    before = page.locator("section.pair").count()
    if before:
        page.locator("section.pair").first.locator("button[value=not-duplicate]").click()
        assert page.locator("section.pair").count() == before - 1


def test_operator_overview_audit_search_and_user_admin(world, browser):
    ops = browser()
    page = ops.sign_in("ops", "operator")
    main = page.inner_text("main")
    for heading in ("数据量", "按机构统计就诊", "按县区与城市统计", "今日接入", "失败消息", "联邦同步延迟", "审计查询"):
        assert heading in main, heading
    assert re.search(r"Patient\s+1\d\d", main)  # ~112 Patient records in the sample
    page.fill("#a-user", "ops")
    page.click("#audit-search")
    assert page.locator("#audit tbody tr").count() >= 1
    who = page.locator("#audit tbody tr td:nth-child(2)").all_inner_texts()
    assert all(cell.splitlines()[0] == "ops" for cell in who)  # the user, then their role
    ops.go("/console/admin")
    page.fill("#u-name", "new-nurse")
    page.select_option("#u-role", "nurse")
    page.fill("#u-org", world.home_org)
    page.click("#add-user")
    assert page.inner_text("#created").startswith("new-nurse: ")
    assert "new-nurse" in page.inner_text("#users")


def test_english_switch_and_denied_pages_for_the_wrong_role(world, browser):
    b = browser()
    page = b.sign_in("doctor-home", "clinician")
    b.go("/console/find?lang=en")
    assert page.locator("html").get_attribute("lang") == "en"
    assert "Find a resident" in page.inner_text("main")
    b.go("/console/find")  # the choice sticks
    assert page.locator("html").get_attribute("lang") == "en"
    page.click("a.lang")
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    b.go("/console/admin")
    assert "无权" in page.inner_text("main")
