"""Presets: named sampling settings of the caller's key (and global ones, made with an admin key).

``PUT /v1/presets/{name}`` saves (creates or replaces), ``GET`` lists or shows one, ``DELETE``
removes; ``"global": true`` (or ``?global=true`` on DELETE) addresses the global presets, which
needs an admin key. ``POST /v1/generate`` with ``preset: NAME`` uses one: the caller's own preset
of that name, else the global one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from genbot.frontends.api.auth import Caller, CallerDep
from genbot.frontends.api.context import ApiContext, context
from genbot.frontends.api.errors import COMMON, ApiError, documented
from genbot.service import Identity

router = APIRouter(tags=["presets"], responses=documented(*COMMON, 403))
Ctx = Annotated[ApiContext, Depends(context)]
Name = Annotated[str, Path(min_length=1, max_length=100, description="1-64 letters, digits, _ . -")]


class PresetBody(BaseModel):
    """A preset to save: its parameters (checked strictly: unknown fields and bad values are refused)."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(
        description="model, temperature, top_k, top_p, length, stop, seed_policy ('random' | 'fixed'), seed."
    )
    global_: bool = Field(False, alias="global", description="A global preset (admin keys only).")


@router.get("/v1/presets", summary="The caller's presets, then the global ones")
async def list_presets(ctx: Ctx, who: CallerDep) -> dict[str, Any]:
    """Every preset the caller may use."""
    rows = await ctx.service.presets.list(_owner(who))
    return {"presets": [row.to_json() for row in rows]}


@router.get("/v1/presets/{name}", summary="One preset the caller may use")
async def get_preset(ctx: Ctx, who: CallerDep, name: Name) -> dict[str, Any]:
    """The caller's preset of that name, else the global one (404 if neither)."""
    return (await ctx.service.presets.find(_owner(who), name)).to_json()


@router.put("/v1/presets/{name}", summary="Save a preset (create or replace)")
async def save_preset(ctx: Ctx, who: CallerDep, name: Name, body: PresetBody) -> dict[str, Any]:
    """Store the preset; 400 naming the first bad field, and nothing stored, if it is refused."""
    _may_touch(who, body.global_)
    saved = await ctx.service.presets.save(_owner(who), name, body.params, global_=body.global_)
    return saved.to_json()


@router.delete("/v1/presets/{name}", summary="Delete a preset")
async def delete_preset(
    ctx: Ctx, who: CallerDep, name: Name, global_: Annotated[bool, Query(alias="global")] = False
) -> dict[str, Any]:
    """Remove the caller's (or, with an admin key and ?global=true, the global) preset."""
    _may_touch(who, global_)
    await ctx.service.presets.delete(_owner(who), name, global_=global_)
    return {"deleted": name, "global": global_}


def _owner(who: Caller) -> Any:
    return Identity("api", api_key_id=who.key_id, admin=who.admin).preset_owner


def _may_touch(who: Caller, global_: bool) -> None:
    if global_ and not who.admin:
        raise ApiError(403, "global presets are saved and deleted with an admin key", "permission_denied")
