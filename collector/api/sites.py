from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status
from sqlalchemy import select

from campuswatch.collector.api.deps import (
    Context,
    CurrentPrincipal,
    DbSession,
    Editor,
    ensure_still_visible,
    ensure_visible,
    refuse_nul,
)
from campuswatch.collector.api.schemas import SiteIn, SiteOut, SiteStatus, problems
from campuswatch.collector.db.models import Site
from campuswatch.collector.register.assets import SiteCycleError, check_site_parent
from campuswatch.wire.ids import utc_now

router = APIRouter(
    prefix="/api/v1/sites",
    tags=["sites"],
    responses=problems(401, 422),
    dependencies=[Depends(refuse_nul)],
)


@router.get("", response_model=list[SiteStatus])
def list_sites(
    session: DbSession, principal: CurrentPrincipal, context: Context
) -> list[SiteStatus]:
    """Every visible site with its devices' liveness; ``unreachable`` marks a silent school."""
    liveness = context.liveness.sites(utc_now())
    result = []
    for site in session.scalars(select(Site).order_by(Site.id)):
        if not principal.can_see(site.id):
            continue
        live = liveness.get(site.id)
        result.append(
            SiteStatus(
                **SiteOut.model_validate(site).model_dump(),
                devices=live.devices if live else 0,
                online=live.online if live else 0,
                offline=live.offline if live else 0,
                flapping=live.flapping if live else 0,
                unknown=live.unknown if live else 0,
                unreachable=live.unreachable if live else False,
            )
        )
    return result


@router.get("/{site_id}", response_model=SiteOut, responses=problems(404))
def get_site(site_id: str, session: DbSession, principal: CurrentPrincipal) -> Site:
    ensure_visible(principal, site_id)
    site = session.get(Site, site_id)
    if site is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    return site


@router.put("/{site_id}", response_model=SiteOut, responses=problems(400, 403, 404))
def put_site(
    site_id: str,
    body: SiteIn,
    session: DbSession,
    principal: Editor,
) -> Site:
    """Create or update a site; the tree is province → district → school → building → room.

    Scope is checked on the site as it is (a scoped editor cannot touch a foreign site) and
    as it will be (its new parent must be inside the scope too); a scoped editor cannot move
    the site its scope starts at, and no site may go under itself (a cycle).
    """
    if body.id != site_id:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "id in body and path differ")
    site = session.get(Site, site_id)
    if site is not None:
        ensure_visible(principal, site_id)
    if site is not None and site_id == principal.site_scope:
        if body.parent_id != site.parent_id:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                "a scoped account cannot move the site its scope starts at",
            )
    else:
        # A new site, or one moved, lands under a parent the account can see.
        ensure_visible(principal, body.parent_id)
    if body.parent_id is not None and session.get(Site, body.parent_id) is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "unknown parent site")
    try:
        check_site_parent(session, site_id, body.parent_id)
    except SiteCycleError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    if site is None:
        site = Site(id=site_id)
        session.add(site)
    for key, value in body.model_dump().items():
        setattr(site, key, value)
    site.auto_created = False
    ensure_still_visible(session, principal, site_id)
    session.commit()
    session.refresh(site)
    return site
