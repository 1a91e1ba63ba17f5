"""Console page times: each page server-side (HTTP, signed in, median and p95 of R loads) and in Chromium
(navigation to the load event, median and p95), beside a baseline measured in the same run: the FHIR calls
the page makes, recorded while it renders and replayed one after another over HTTP at /fhir with the same
user's token (what any API client would pay for the same data).

    .venv/bin/python -m benchmarks.web [--residents 100] [--repeat 10]      # a fresh sample province
    .venv/bin/python -m benchmarks.web --dir D [--database URL]              # a province loaded already

``--dir D`` opens a data directory prepared beforehand, so that a large province is loaded once:

    changbai synth --residents 29000 --seed 11 --out D/province
    cd D && changbai load province            # D/var/changbai.db and D/var/keys, security on

(``--database`` names a PostgreSQL database loaded the same way, with D/var still holding the keys.) The
sample accounts (changbai.web.sample.open_world) are added on the first run and found again afterwards.
"""

from __future__ import annotations

import argparse
import html
import re
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


def _sign_in(base: str, user: str, role: str, password: str) -> httpx.Client:
    c = httpx.Client(base_url=base, timeout=120)
    r = c.get("/console/login", params={"role": role})
    page = c.get(r.headers["location"])
    form = {k: html.unescape(v) for k, v in re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', page.text)}
    form.update(username=user, password=password)
    r = c.post("/auth/authorize", data=form)
    c.get(r.headers["location"])
    return c


def _stats(times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    return statistics.median(times) * 1000, times[max(0, int(len(times) * 0.95 + 0.5) - 1)] * 1000


@contextmanager
def _recording(console: Any) -> Iterator[list[tuple[str, str, list[tuple[str, str]]]]]:
    """The FHIR requests the console hands to the router while the block runs (a pass-through recorder)."""
    from changbai.web import fhirdata

    calls: list[tuple[str, str, list[tuple[str, str]]]] = []
    original = fhirdata.Fhir.call

    def call(self: Any, method: str, path: str, query: Any = None, body: Any = None) -> Any:
        calls.append((method, path, list(query or [])))
        return original(self, method, path, query, body)

    fhirdata.Fhir.call = call  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        fhirdata.Fhir.call = original  # type: ignore[method-assign]


def _open(args: argparse.Namespace) -> tuple[Any, str]:
    """The platform (security on) and a description of its data."""
    from changbai.api.app import create_platform
    from changbai.settings import Settings
    from changbai.web.sample import build_world, open_world

    if args.dir is None:
        world = build_world(Path(tempfile.mkdtemp(prefix="changbai-bench-web-")), residents=args.residents)
        return world, f"sample province of {args.residents} residents (fresh, SQLite)"
    d = Path(args.dir)
    url = args.database or f"sqlite:///{(d / 'var' / 'changbai.db').resolve()}"
    if not args.database and not (d / "var" / "changbai.db").exists():
        raise SystemExit(f"{d}/var/changbai.db is missing: load the province first (see --help)")
    platform = create_platform(Settings(data_dir=d / "var", database_url=url, security=True))
    world = open_world(platform, d / "province")
    with platform.db.read() as conn:
        total = conn.exec_driver_sql("SELECT count(*) FROM resource").scalar()
    return world, f"{total:,} resources in {url.split('@')[-1]}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.web", description=__doc__.split("\n\n")[0])
    ap.add_argument("--residents", type=int, default=100, help="size of a fresh sample province")
    ap.add_argument("--repeat", type=int, default=10, help="loads of each page (server and browser)")
    ap.add_argument("--dir", help="a data directory loaded already (province/ and var/)")
    ap.add_argument("--database", help="with --dir: the database URL, when not D/var/changbai.db")
    args = ap.parse_args(argv)
    from changbai.web.sample import PASSWORD
    from tests.conftest import LiveServer, free_port

    world, what = _open(args)
    app = world.platform.build_app()
    live = LiveServer(app, free_port()).start()
    console = world.platform.web_console
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
        browser: dict[str, list[float]] = {}
        try:
            browser = _browser(live.url, plan, PASSWORD, args.repeat)
        except Exception as exc:  # no Chromium here: server-side figures only
            print(f"(browser timings skipped: {exc})")
        for (user, role), paths in plan.items():
            c = _sign_in(live.url, user, role, PASSWORD)
            token = console.sessions.get(c.cookies.get("changbai_console")).access_token
            api = httpx.Client(base_url=live.fhir, timeout=120, headers={"authorization": f"Bearer {token}"})
            for path in paths:
                with _recording(console) as calls:
                    assert c.get(path).status_code == 200, path  # warm, and what it asks of the router
                page_times, api_times = [], []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    r = c.get(path)
                    page_times.append(time.perf_counter() - t)
                    assert r.status_code == 200, (path, r.status_code)
                    t = time.perf_counter()
                    for method, fpath, query in calls:
                        assert api.request(method, "/" + fpath, params=query).status_code < 400, fpath
                    api_times.append(time.perf_counter() - t)
                rows.append(
                    (
                        f"{role} {path.split('?')[0].replace(pid, '{id}')}",
                        *_stats(page_times),
                        *(_stats(browser[path]) if path in browser else (None, None)),
                        len(calls),
                        *_stats(api_times),
                    )
                )
            api.close()
    finally:
        live.stop()
        world.platform.db.dispose()
    print(f"\nConsole pages, {what}, {args.repeat} loads each; record of a resident with")
    print("the most encounters. Baseline: the page's own FHIR calls replayed over HTTP at /fhir.\n")
    print(
        "| page | server median ms | server p95 ms | browser median ms | browser p95 ms | FHIR calls |"
        " FHIR median ms | FHIR p95 ms | page / FHIR |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, med, p95, bmed, bp95, n, fmed, fp95 in rows:
        br = "| |" if bmed is None else f"| {bmed:.0f} | {bp95:.0f} |"
        print(f"| {name} | {med:.0f} | {p95:.0f} {br} {n} | {fmed:.0f} | {fp95:.0f} | {med / fmed:.2f} |")
    return 0


def _browser(base: str, plan: dict[tuple[str, str], list[str]], password: str, repeat: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS

    out: dict[str, list[float]] = {}
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
                page.goto(base + path)  # warm
                for _ in range(repeat):
                    page.goto(base + path)
                    out.setdefault(path, []).append(
                        page.evaluate(
                            "(() => { const n = performance.getEntriesByType('navigation')[0];"
                            " return n.loadEventEnd - n.startTime; })()"
                        )
                        / 1000
                    )
        ctx.close()
    return out


if __name__ == "__main__":
    raise SystemExit(main())
