"""``genbot repl``, ``genbot sample`` and ``genbot caption``: generate in the terminal (every output is stored)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from genbot.errors import InvalidRequest
from genbot.frontends.cli.common import emit_json, friendly_errors, with_service

app = typer.Typer()


@app.command()
@friendly_errors
def repl(model: Annotated[str, typer.Option(help="generator to start with")] = "") -> None:
    """Chat with the generators in the terminal (every prompt and output is stored)."""
    from genbot.frontends.repl import Repl, piped_lines, terminal_lines

    async def body(service: Any) -> None:
        session = Repl(service)
        if model:
            session._use(model)
        if sys.stdin.isatty():
            history = service.settings.data_dir / "repl_history"
            lines = terminal_lines(history, lambda: f"{session.state.model}> ", session)
        else:
            lines = piped_lines()
        await session.run(lines)

    with_service(body)


@app.command()
@friendly_errors
def sample(
    model: Annotated[
        str, typer.Argument(help="bundled generator name or model folder (optional with --continue)")
    ] = "",
    prompt: Annotated[str, typer.Option(help="text to continue")] = "",
    temperature: Annotated[float | None, typer.Option(help="0 = argmax")] = None,
    length: Annotated[int | None, typer.Option(help="characters to generate")] = None,
    seed: Annotated[int | None, typer.Option(help="same seed, same text")] = None,
    top_k: Annotated[int | None, typer.Option(help="0 = off")] = None,
    top_p: Annotated[float | None, typer.Option(help="1 = off")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="stop string (repeatable)")] = None,
    continue_from: Annotated[
        int | None, typer.Option("--continue", help="continue this stored generation (its tail, then --prompt)")
    ] = None,
    again: Annotated[int | None, typer.Option(help="run this stored generation again with a new seed")] = None,
    preset: Annotated[str | None, typer.Option(help="a saved preset for the options left out")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object at the end")] = False,
) -> None:
    """Stream a sample from a model to stdout (or continue a stored one: --continue ID)."""
    from genbot.service import GenerationRequest, Requester

    async def body(service: Any) -> None:
        name = model
        if model and Path(model).is_dir():
            name = service.add_model_folder(Path(model)).name
        req = GenerationRequest(
            model=name, prompt=prompt, temperature=temperature, length=length, seed=seed,
            top_k=top_k, top_p=top_p, stop=stop or [], requester=Requester(frontend="cli", user_id="local"),
            continue_from=continue_from, again_of=again, preset=preset, admin=True,
        )  # fmt: skip
        gen = await service.generate(req)
        async for chunk in gen:
            if not as_json:
                sys.stdout.write(chunk)
                sys.stdout.flush()
        result = await gen.result()
        if as_json:
            emit_json({"id": result.id, "model": gen.model, "output": result.output, "seed": gen.params.seed,
                       "parent_id": gen.parent_id, "prompt": gen.prompt,
                       "status": result.status, "stats": result.stats.to_dict(), "dropped": gen.dropped,
                       "mapped": gen.mapped})  # fmt: skip
        else:
            sys.stdout.write("\n")

    with_service(body)


@app.command()
@friendly_errors
def caption(
    image: Annotated[Path, typer.Argument(help="image file (JPEG, PNG, GIF, WebP, BMP, …)")],
    model: Annotated[str, typer.Option(help="captioner to use")] = "captioner",
    beam: Annotated[int, typer.Option(help="beam width (ignored with --temperature)")] = 3,
    temperature: Annotated[float | None, typer.Option(help="sample at this temperature instead of beam search")] = None,
    seed: Annotated[int | None, typer.Option(help="sampling seed (same seed, same captions)")] = None,
    count: Annotated[int, typer.Option(help="captions to sample with --temperature")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Describe an image in words (stored in the history like a generation)."""
    from genbot.service import Requester

    try:
        data = image.read_bytes()
    except OSError as e:
        raise InvalidRequest(f"{image}: cannot read the file ({e.strerror or e})") from e

    async def body(service: Any) -> Any:
        return await service.caption(
            model, data, beam=beam, temperature=temperature, seed=seed, count=count,
            requester=Requester("cli", user_id="local"),
        )  # fmt: skip

    result = with_service(body)
    if as_json:
        emit_json(result.to_dict())
        return
    for c in result.captions:
        typer.echo(f"{c.logprob:8.3f}  {c.text}")
