"""`python -m changbai.web.screenshots [OUT_DIR]`: screenshots of every console page at desktop (1366x768)
and phone (390x844) width, taken in Debian's Chromium from the sample province (changbai.web.sample).
Committed under docs/screenshots/ so that a reader sees the console without running it."""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from changbai.web.sample import PASSWORD, build_world

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SIZES = {"desktop": (1366, 768), "phone": (390, 844)}


def _serve(app: object) -> tuple[object, str]:
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "docs/screenshots")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="changbai-shots-"))
    world = build_world(tmp, residents=100)
    server, base = _serve(world.platform.build_app())
    pid = world.patient["id"]
    number = world.patient["identifier"][0]["value"]
    pages = {
        "resident": [
            ("resident-record", "/console/me"),
            ("resident-results", "/console/me/results"),
            ("resident-consent", "/console/me/consent"),
            ("resident-access", "/console/me/access"),
            ("resident-family", "/console/me/family"),
        ],
        "doctor-home": [
            ("clinician-find", f"/console/find?id_number={number}"),
            ("clinician-record", f"/console/patient/{pid}"),
            ("clinician-record-en", f"/console/patient/{pid}?lang=en"),
        ],
        "doctor-other": [("clinician-denied-break-glass", f"/console/patient/{pid}?lang=zh")],
        "ops": [
            ("operator-overview", "/console/ops"),
            ("operator-review-queue", "/console/review"),
            ("operator-users", "/console/admin"),
        ],
    }
    roles = {"resident": "resident", "doctor-home": "clinician", "doctor-other": "clinician", "ops": "operator"}
    written = []
    try:
        with sync_playwright() as p:
            for size, (w, h) in SIZES.items():
                profile = Path(tempfile.mkdtemp(prefix="changbai-chromium-"))
                ctx = p.chromium.launch_persistent_context(
                    str(profile),
                    executable_path=CHROMIUM,
                    args=ARGS,
                    headless=True,
                    viewport={"width": w, "height": h},
                    locale="zh-CN",
                )
                page = ctx.pages[0] if ctx.pages else ctx.new_page()
                page.goto(base + "/console/")
                page.screenshot(path=str(out / f"signin-{size}.png"))
                written.append(f"signin-{size}.png")
                for user, shots in pages.items():
                    ctx.clear_cookies()
                    page.goto(base + "/console/")
                    if roles[user] == "resident":
                        page.click("#signin-resident")
                    else:
                        page.select_option("#role", roles[user])
                        page.click("#signin-staff")
                    page.wait_for_url("**/auth/authorize**")
                    if user == "resident":
                        page.screenshot(path=str(out / f"oauth-signin-{size}.png"))
                        written.append(f"oauth-signin-{size}.png")
                    page.fill("#u", user)
                    page.fill("#p", PASSWORD)
                    page.click("button[type=submit]")
                    page.wait_for_url("**/console/**")
                    for name, path in shots:
                        page.goto(base + path)
                        file = f"{name}-{size}.png"
                        page.screenshot(path=str(out / file), full_page=size == "desktop")
                        written.append(file)
                ctx.close()
                shutil.rmtree(profile, ignore_errors=True)
    finally:
        server.should_exit = True  # type: ignore[attr-defined]
        world.platform.db.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(written)} screenshots in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
