"""Datasette plugin: replicate every database Datasette serves with the bundled walship binary."""

import asyncio
import logging
import weakref

from datasette import hookimpl
from datasette.permissions import Action

from . import config, views
from .process import Supervisor

log = logging.getLogger("datasette_litestream")

# One supervisor per Datasette instance (tests run several in one process).
supervisors = weakref.WeakKeyDictionary()


@hookimpl
def startup(datasette):
    async def inner():
        if not config.is_configured(datasette):
            return
        settings = config.build(datasette)
        settings.credentials = await asyncio.to_thread(config.load_credentials, settings.top, True)
        for name, why in settings.skipped.items():
            log.info("datasette-litestream: not replicating %s: %s", name, why)
        supervisor = Supervisor(datasette, settings)
        supervisors[datasette] = supervisor
        await supervisor.start()

    return inner


@hookimpl
def shutdown(datasette):
    async def inner():
        supervisor = supervisors.pop(datasette, None)
        if supervisor is not None:
            await supervisor.shutdown()

    return inner


@hookimpl
def register_actions(datasette):
    return [
        Action(
            name=views.VIEW_STATUS,
            description="View the datasette-litestream replication status page",
        ),
        Action(
            name=views.RESTORE,
            description="Restore a copy of a database as of a past time (datasette-litestream)",
        ),
    ]


@hookimpl
def permission_resources_sql(datasette, actor, action):
    # Restored copies: hidden from everyone but actors allowed to restore and to view the live
    # database (views.copy_permission_sql).
    return views.copy_permission_sql(datasette, actor, action)


@hookimpl
def register_routes(datasette):
    return [
        (r"^/-/litestream-status(?P<format>\.json)?$", views.status),
        (r"^/-/litestream-restore$", views.restore),
    ]


@hookimpl
def menu_links(datasette, actor, request):
    async def inner():
        links = []
        if await datasette.allowed(action=views.VIEW_STATUS, actor=actor):
            links.append({"href": datasette.urls.path("/-/litestream-status"), "label": "Litestream status"})
        if await datasette.allowed(action=views.RESTORE, actor=actor):
            links.append({"href": datasette.urls.path("/-/litestream-restore"), "label": "Litestream restore"})
        return links

    return inner
