"""Security: sign-in (OAuth 2.0 / SMART on FHIR v2), access policies, consent, break-the-glass, audit.

:func:`install` plugs the module into a platform (listed in ``changbai.api.app.default_extensions``);
it does nothing when ``settings.security`` is off (CHANGBAI_SECURITY=off).
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any

from changbai import logs

if TYPE_CHECKING:
    from changbai.api.app import Platform


def install(platform: Platform) -> None:
    if not platform.settings.security:
        return
    from changbai.security.enforcement import Security
    from changbai.security.oauth import AuthServer

    sec = Security(platform)
    platform.security = sec
    pipeline = platform.repo.pipeline
    pipeline.fields = sec.protector  # other modules keep protected values the same way (the master index)
    pipeline.add("prepare", "authorise", sec.prepare)
    pipeline.add("commit", "audit", sec.commit)
    pipeline.add("read", "authorise", sec.read)
    pipeline.add("search", "authorise", sec.search)
    sec.guard(platform)
    server = AuthServer(sec)
    platform.routes.extend(server.routes())
    previous = platform.context_factory

    async def context_factory(request: Any, ctx: Any) -> Any:
        if previous is not None:
            ctx = await previous(request, ctx)
        return await server.context_factory(request, ctx)

    platform.context_factory = context_factory
    platform.on_startup.append(lambda: first_start(sec))
    anchor = Anchoring(sec.trail)
    platform.on_startup.append(anchor.start)
    platform.on_shutdown.append(anchor.stop)


class Anchoring:
    """Copies the audit chain's committed head outside the database every few seconds (and at shutdown),
    so that `changbai audit verify` also detects rows cut from the end of the trail."""

    SECONDS = 5.0

    def __init__(self, trail: Any) -> None:
        self.trail = trail
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="changbai-audit-anchor", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(self.SECONDS):
            self._anchor()

    def _anchor(self) -> None:
        from changbai.security.audit import AuditTampered

        try:
            self.trail.anchor_head()
        except AuditTampered as exc:
            logs.get("changbai.security").error("audit trail tampered", extra={"fields": {"detail": str(exc)}})
        except Exception:  # a busy or closed database: the next round tries again
            logs.get("changbai.security").warning("audit anchor not written", exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        self._anchor()


def first_start(sec: Any) -> None:
    """A fresh node gets its operator account ``admin``; the password is shown once, here."""
    from changbai.security.accounts import setup

    password = setup(sec.db, sec.policy)
    if password is not None:
        print(
            f"changbai: created the operator account 'admin' with password {password} "
            "(shown only this once; change it with `changbai users passwd admin`)",
            file=sys.stderr,
        )


def create_demo_accounts(platform: Platform) -> list[tuple[str, str, str]]:
    """Demo accounts for every role (for `changbai demo`): [(username, password, role)]."""
    from changbai.security.demo import create_demo_accounts as create

    return create(platform)
