"""Security: sign-in (OAuth 2.0 / SMART on FHIR v2), access policies, consent, break-the-glass, audit.

:func:`install` plugs the module into a platform (listed in ``changbai.api.app.default_extensions``);
it does nothing when ``settings.security`` is off (CHANGBAI_SECURITY=off).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

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
