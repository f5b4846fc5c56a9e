"""``POST /v1/inspect``: one unit's activations over a text as JSON, and on request its picture.

Tracing and rendering are CPU-heavy, so an app runs at most ``ApiContext.inspections`` at once
and answers 503 with Retry-After beyond that instead of queueing.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from genbot.analysis.features import FEATURES
from genbot.analysis.report import InspectReport, InspectRequest
from genbot.errors import Busy, InvalidRequest
from genbot.frontends.api.auth import CallerDep
from genbot.frontends.api.caption import captioners
from genbot.frontends.api.context import ApiContext, context
from genbot.frontends.api.errors import COMMON, documented
from genbot.frontends.api.text import Text

router = APIRouter(tags=["native"], responses=documented(*COMMON))
Ctx = Annotated[ApiContext, Depends(context)]
MAX_INSPECT_CHARS = 5000  # longer texts: `genbot inspect` (reads up to 20,000)
BUSY_RETRY_S = 2.0
Kind = Literal["h", "c", "i", "f", "g", "o", "r", "z", "n", "gates"]


class InspectBody(BaseModel):
    """What to look at: a text, and a unit (given, found by a feature, or the most variable one)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=100, description="Generator name (GET /v1/generators).")
    text: Text = Field(max_length=MAX_INSPECT_CHARS, description="Text run through the model (2+ known chars).")
    layer: int | None = Field(None, ge=0, le=1000, description="Layer, from 0 (default: the top one).")
    unit: int | None = Field(None, ge=0, le=100_000, description="Unit, from 0 (default: found, else most variable).")
    kind: Kind = Field("h", description="h, c (LSTM), a gate (i f g o LSTM; r z n GRU), or gates (+ saturation).")
    find: str | None = Field(
        None, max_length=40, description=f"Pick the unit tracking this feature: {', '.join(FEATURES)}."
    )
    top_k: int = Field(5, ge=1, le=100, description="Units listed for find.")
    png: bool = Field(False, description="Also return the unit view as a base64 PNG (and the gate plot for gates).")


class UnitShown(BaseModel):
    """The unit the values belong to, and why it was chosen ("given", "found", "most variable")."""

    layer: int
    index: int
    kind: str
    reason: str


class InspectResult(BaseModel):
    """One unit's activation after each character, the model's surprise, and the discovery if asked."""

    model: str
    summary: dict[str, Any] = Field(description="chars, bits_per_char, mapped and dropped characters, …")
    unit: UnitShown
    text: str = Field("", description="The characters the model read (unknown ones mapped or dropped).")
    values: list[float] = Field(description="The unit's activation after each character of text.")
    surprise: list[float | None] = Field(description="-log p of each character in nats (null for the first).")
    discovery: dict[str, Any] | None = Field(None, description="Top units for find, with the chance baseline.")
    gate_saturation: list[dict[str, Any]] | None = Field(None, description="Per layer: gate → (left, right) per unit.")
    png_base64: str | None = Field(None, description="The unit view as a PNG, base64 (png: true).")
    gates_png_base64: str | None = Field(None, description="The gate saturation plot, base64 (png: true, gates).")


def to_request(body: InspectBody) -> InspectRequest:
    """The service request for a body (rendered only when the PNG is wanted)."""
    return InspectRequest(
        text=body.text, layer=body.layer, unit=body.unit, kind=body.kind, find=body.find, top_k=body.top_k,
        render=body.png,
    )  # fmt: skip


def to_result(report: InspectReport) -> InspectResult:
    """The response for a report: its data with the values, and the PNGs it rendered."""
    result = InspectResult.model_validate(report.to_dict(values=True))
    result.png_base64 = _b64(report.files.get("unit.png"))
    result.gates_png_base64 = _b64(report.files.get("gates.png"))
    return result


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data is not None else None


@router.post("/v1/inspect", summary="A unit's activations over a text (JSON; png: true adds the picture)")
async def inspect(body: InspectBody, ctx: Ctx, who: CallerDep) -> InspectResult:
    """Trace the text through the model; 503 with Retry-After while the inspection slots are full."""
    if body.model in captioners(ctx):
        raise InvalidRequest(f"model {body.model!r} describes images; inspect looks inside text models")
    if ctx.inspections.locked():
        raise Busy("inspections are running at capacity; retry shortly", BUSY_RETRY_S)
    async with ctx.inspections:
        report = await ctx.service.inspect(body.model, to_request(body))
    return to_result(report)
