"""The web console (issue 10): server-rendered pages under /console for clinicians, residents, the master
index reviewers and operators, signed in through the platform's own OAuth2 server (docs/web.md).

:func:`install` is listed in ``changbai.api.app.default_extensions``. Every page reads and writes through
the FHIR router with the signed-in user's Context, so the security module decides and audits everything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from changbai.api.app import Platform


def install(platform: Platform) -> None:
    from changbai.web.routes import routes
    from changbai.web.session import register_client

    platform.routes.extend(routes(platform))
    platform.on_startup.append(lambda: register_client(platform))


def console_of(app: Any) -> Any:
    """The :class:`changbai.web.pages.Console` serving an app built by ``Platform.build_app``."""
    return app.state.platform.web_console
