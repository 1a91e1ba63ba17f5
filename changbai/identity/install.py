"""Plug the master index into a platform: the ``identify`` step of the write pipeline and the operations.

Listed in the platform's extensions (changbai.api.app.default_extensions): every node runs the master index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from changbai.identity.operations import operations
from changbai.identity.registry import IdentifyStep, identify_ahead, resolve_person

if TYPE_CHECKING:
    from changbai.api.app import Platform


def install(platform: Platform) -> None:
    pipeline = platform.repo.pipeline
    pipeline.add("prepare", "identify", IdentifyStep(pipeline), ahead=identify_ahead)
    platform.router.hooks.persons.append(resolve_person)  # Patient/[golden id]/$everything: the whole person
    for op in operations():
        platform.router.register(op)
