"""``POST /v1/caption``: describe an uploaded image (multipart) with a captioner model.

The body is capped at ``MAX_CAPTION_BODY_BYTES`` (413 beyond, from ``BodySizeLimit``); the image
is decoded safely by the service, so a file that is not a sane image is a 400 JSON error.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile
from pydantic import BaseModel

from genbot.engine.captions import MAX_BEAM, MAX_COUNT, CaptionResult
from genbot.errors import InvalidRequest
from genbot.frontends.api.auth import CallerDep
from genbot.frontends.api.context import ApiContext, context
from genbot.frontends.api.errors import COMMON, documented
from genbot.service import Requester

router = APIRouter(tags=["native"], responses=documented(*COMMON))
Ctx = Annotated[ApiContext, Depends(context)]
CAPTION_PATH = "/v1/caption"
MAX_CAPTION_BODY_BYTES = 10 * 1024 * 1024  # the whole multipart body


class CaptionItem(BaseModel):
    """One caption with its log-probability under the model (natural log)."""

    text: str
    logprob: float
    words: list[str]


class CaptionResponse(BaseModel):
    """The captions of one image, best first, and how they were made."""

    id: int
    model: str
    version: int
    image: str
    method: str
    beam: int
    temperature: float | None
    seed: int | None
    captions: list[CaptionItem]
    duration_ms: float


def captioners(ctx: ApiContext) -> list[str]:
    """Names of the loaded captioner models."""
    return [e.name for e in ctx.service.models() if e.status == "loaded" and e.card and e.card.kind == "captioner"]


def pick_model(ctx: ApiContext, model: str | None) -> str:
    """The named model, or the first loaded captioner (InvalidRequest when there is none)."""
    if model is not None:
        return model  # the service says when it is unknown or a text model
    names = captioners(ctx)
    if not names:
        raise InvalidRequest("no captioner model is loaded")
    return names[0]


def to_response(result: CaptionResult) -> CaptionResponse:
    """The JSON answer for a finished caption request."""
    items = [CaptionItem(text=c.text, logprob=c.logprob, words=c.words) for c in result.captions]
    return CaptionResponse(
        id=result.id, model=result.model, version=result.version, image=result.image, method=result.method,
        beam=result.beam, temperature=result.temperature, seed=result.seed, captions=items,
        duration_ms=round(result.duration_ms, 3),
    )  # fmt: skip


@router.post(CAPTION_PATH, summary="Describe an image (multipart upload)")
async def caption(
    ctx: Ctx,
    who: CallerDep,
    image: Annotated[UploadFile, File(description="The picture: PNG, JPEG, GIF, WebP, BMP (body up to 10 MiB).")],
    model: Annotated[str | None, Form(max_length=100, description="A captioner (default: the first loaded).")] = None,
    beam: Annotated[int, Form(ge=1, le=MAX_BEAM, description="Beam width (beam search).")] = 3,
    temperature: Annotated[float | None, Form(gt=0, description="Sample at this temperature instead.")] = None,
    seed: Annotated[int | None, Form(ge=0, le=2**63 - 1, description="Same seed, same sampled captions.")] = None,
    count: Annotated[int, Form(ge=1, le=MAX_COUNT, description="Captions to return.")] = 3,
) -> CaptionResponse:
    """Caption the image; 400 if it is not a sane image or the model is a text model, 404 if unknown."""
    data = await image.read()
    name = pick_model(ctx, model)
    result = await ctx.service.caption(
        name, data, beam=beam, temperature=temperature, seed=seed, count=count,
        requester=Requester("api", api_key_id=who.key_id),
    )  # fmt: skip
    return to_response(result)
