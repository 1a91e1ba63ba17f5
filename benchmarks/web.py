"""Console page times: each page server-side (HTTP, signed in, median and p95 of N loads) and in
Chromium (navigation to load event), with the sample province. Baseline in the same run: the one FHIR call
the record page is built on (Patient/[id]/$everything over HTTP with the same user's token).

    .venv/bin/python -m benchmarks.web [--residents 100] [--repeat 10]
"""

from __future__ import annotations

import argparse
import html
import re
import statistics
import tempfile
import time
from pathlib import Path

import httpx


def _sign_in(base: str, user: str, role: str, password: str) -> httpx.Client:
    c = httpx.Client(base_url=base, timeout=60)
    r = c.get("/console/login", params={"role": role})
    page = c.get(r.headers["location"])
    form = {k: html.unescape(v) for k, v in re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', page.text)}
    form.update(username=user, password=password)
    r = c.post("/auth/authorize", data=form)
    c.get(r.headers["location"])
    return c


def _stats(times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    return statistics.median(times) * 1000, times[max(0, int(len(times) * 0.95) - 1)] * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.web")
    ap.add_argument("--residents", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args(argv)
    from changbai.web.sample import PASSWORD, build_world
    from tests.conftest import LiveServer, free_port

    world = build_world(Path(tempfile.mkdtemp(prefix="changbai-bench-web-")), residents=args.residents)
    live = LiveServer(world.platform.build_app(), free_port()).start()
    pid = world.patient["id"]
    number = world.patient["identifier"][0]["value"]
    plan = {
        ("doctor-home", "clinician"): [f"/console/find?id_number={number}", f"/console/patient/{pid}"],
        ("resident", "resident"): [
            "/console/me",
            "/console/me/results",
            "/console/me/access",
            "/console/me/consent",
            "/console/me/family",
        ],
        ("ops", "operator"): ["/console/ops", "/console/review", "/console/admin"],
    }
    rows = []
    try:
        # baseline: the FHIR call behind the record page, with the clinician's own token
        c = _sign_in(live.url, "doctor-home", "clinician", PASSWORD)
        session = world.platform.web_console.sessions.get(c.cookies.get("changbai_console"))
        headers = {"authorization": f"Bearer {session.access_token}"}
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            assert httpx.get(f"{live.fhir}/Patient/{pid}/$everything?_count=1000", headers=headers).status_code == 200
            times.append(time.perf_counter() - t)
        rows.append(("baseline: FHIR Patient/$everything", *_stats(times), None))
        browser_times: dict[str, float] = {}
        try:
            browser_times = _browser(live.url, plan, PASSWORD)
        except Exception as exc:  # no Chromium here: server-side figures only
            print(f"(browser timings skipped: {exc})")
        for (user, role), paths in plan.items():
            c = _sign_in(live.url, user, role, PASSWORD)
            for path in paths:
                times = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    r = c.get(path)
                    times.append(time.perf_counter() - t)
                    assert r.status_code == 200, (path, r.status_code)
                rows.append((f"{role} {path.split('?')[0]}", *_stats(times), browser_times.get(path)))
    finally:
        live.stop()
        world.platform.db.dispose()
    print(f"\nConsole pages, sample province of {args.residents} residents, {args.repeat} loads each\n")
    print("| page | server median ms | server p95 ms | browser load ms |")
    print("| --- | ---: | ---: | ---: |")
    for name, med, p95, br in rows:
        print(f"| {name} | {med:.0f} | {p95:.0f} | {'' if br is None else f'{br:.0f}'} |")
    return 0


def _browser(base: str, plan: dict[tuple[str, str], list[str]], password: str) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS

    out: dict[str, float] = {}
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="changbai-chromium-"), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        for (user, role), paths in plan.items():
            ctx.clear_cookies()
            page.goto(base + "/console/")
            if role == "resident":
                page.click("#signin-resident")
            else:
                page.select_option("#role", role)
                page.click("#signin-staff")
            page.wait_for_url("**/auth/authorize**")
            page.fill("#u", user)
            page.fill("#p", password)
            page.click("button[type=submit]")
            page.wait_for_url("**/console/**")
            for path in paths:
                page.goto(base + path)
                out[path] = page.evaluate(
                    "(() => { const n = performance.getEntriesByType('navigation')[0];"
                    " return n.loadEventEnd - n.startTime; })()"
                )
        ctx.close()
    return out


if __name__ == "__main__":
    raise SystemExit(main())
