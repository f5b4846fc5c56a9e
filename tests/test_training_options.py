"""Training options: one strict schema, a child command line no value can escape, a child without secrets.

The argv tests parse the command line the worker builds with the real ``genbot train`` command
(click), so "a hostile value never becomes another option" is checked against the parser that
the child process itself uses. The API tests run a real uvicorn server on loopback and check
that every refused body leaves the jobs table empty.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from genbot.config import ApiSettings, JobsSettings
from genbot.errors import InvalidRequest
from genbot.frontends.cli import app
from genbot.jobs import RetrainRequest
from genbot.jobs.runner import TrainingProcess, child_command, child_env
from genbot.jobs.spec import check, parse_source, train_argv
from genbot.training.options import TrainingOptions
from tests.helpers import api_server, client, genbot_here

# Strings an attacker would put where a value goes: options, the end of options, positionals, NUL, newlines.
NASTY = [
    "--corpus=/etc/passwd", "--out", "--out=/tmp/x", "-o", "--", "-", "--from=/other/model", "captioner",
    "charrnn --resume", "--json", "a b", "x\n--steps=9", "--no-bf16", "=", "--=x", "-h", "--help",
    "--threads=64", "$(id)", "; rm -rf /", "\u2212\u2212corpus", "--corpus\t/x", "/c/input.txt --out=/x",
]  # fmt: skip


def parsed(argv: list[str]) -> dict[str, Any]:
    """The parameters the real ``genbot train`` command would run with for ``argv`` (parsed, not run)."""
    group: Any = typer.main.get_command(app)  # a click group (typer ships its own copy of click)
    with group.make_context("genbot", [argv[0]], resilient_parsing=True) as root:
        train = group.get_command(root, argv[0])
        assert argv[0] == "train" and train is not None
        command = train.get_command(root, "charrnn")  # what `genbot train` runs unless told `captioner`
        with command.make_context(argv[0], argv[1:], parent=root) as ctx:
            return dict(ctx.params)


def job_args(**changes: Any) -> dict[str, Any]:
    """A queued job's stored arguments, as ``Jobs.resolve`` writes them."""
    base = {"corpus_path": "/c/input.txt", "parent_path": "/m/v1", "budget": {"steps": 9},
            "options": {"lr": 0.01, "bf16": True, "carry_state": False}}  # fmt: skip
    return base | changes


# ----- the schema ---------------------------------------------------------------------------------


def test_good_options_pass_and_only_given_ones_are_kept() -> None:
    options = TrainingOptions.parse({"layers": 3, "lr": 1, "bf16": False, "cell": "gru", "eval_every": 5})
    assert options.given() == {"cell": "gru", "layers": 3, "lr": 1.0, "bf16": False, "eval_every": 5}
    assert TrainingOptions.parse({}).given() == {}


BAD_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"layers": "3"}, "--layers: input should be a valid integer (got '3')"),
    ({"layers": 3.0}, "--layers: input should be a valid integer"),
    ({"layers": True}, "--layers: input should be a valid integer"),
    ({"grad_clip": None}, "--grad-clip: null is not a value; leave the option out for its default"),
    ({"bf16": "--corpus=/some/file"}, "--bf16: input should be a valid boolean"),
    ({"bf16": 1}, "--bf16: input should be a valid boolean"),
    ({"lr": float("nan")}, "--lr: input should be a finite number"),
    ({"lr": "0.1"}, "--lr: input should be a valid number"),
    ({"lr": 0}, "--lr: input should be greater than 0"),
    ({"eval_every": 0}, "--eval-every: input should be greater than or equal to 1"),
    ({"eval_every": -5}, "--eval-every: input should be greater than or equal to 1"),
    ({"layers": 17}, "--layers: input should be less than or equal to 16"),
    ({"dropout": 1.0}, "--dropout: input should be less than 1"),
    ({"seed": 2**64}, "--seed: input should be less than or equal to"),
    ({"cell": "transformer"}, "--cell: input should be 'rnn', 'lstm' or 'gru'"),
    ({"device": "cuda:0"}, "--device: input should be 'cpu' or 'cuda'"),
    ({"corpus": "/etc/passwd"}, "unknown training option 'corpus'"),
    ({"out": "/tmp/x"}, "unknown training option 'out'"),
    ({"threads": 64}, "unknown training option 'threads'"),
    ({"": 1}, "unknown training option ''"),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS)
def test_bad_options_are_refused_naming_the_option(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        TrainingOptions.parse(options)
    assert str(caught.value).startswith(message)


def test_a_huge_hostile_value_is_not_echoed_whole() -> None:
    with pytest.raises(InvalidRequest) as caught:
        TrainingOptions.parse({"lr": "x" * 100_000})
    assert len(str(caught.value)) < 200


def test_the_published_schema_documents_every_option_without_null() -> None:
    schema = TrainingOptions.model_json_schema()
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert set(props) == set(TrainingOptions.model_fields)
    assert props["layers"]["type"] == "integer" and (props["layers"]["minimum"], props["layers"]["maximum"]) == (1, 16)
    assert props["eval_every"]["minimum"] == 1
    assert all("null" not in json.dumps(p.get("type", "")) and "anyOf" not in p for p in props.values())


# ----- request checks and caps -----------------------------------------------------------------------


def test_unicode_digits_and_giant_versions_are_not_version_numbers() -> None:
    assert parse_source("12") == 12 and parse_source("active") is None
    for source in ["²", "١٢", "99999999999999999999", "2147483648", "0", "-1", " 1", "1.0", ""]:
        with pytest.raises(InvalidRequest, match="--from must be"):
            parse_source(source)


def test_caps_come_from_the_jobs_settings() -> None:
    limits = JobsSettings(max_steps=100, max_seconds=60.0, max_epochs=2.0, max_batch_chars=1000)
    ok = RetrainRequest(model="m", corpus="c", steps=100, options={"batch": 10, "block": 100})
    assert check(ok, limits).given() == {"block": 100, "batch": 10}
    refused = [
        (RetrainRequest(model="m", corpus="c", steps=101), "--steps must be above 0 and at most 100"),
        (RetrainRequest(model="m", corpus="c", seconds=61.0), "--seconds must be above 0 and at most 60"),
        (RetrainRequest(model="m", corpus="c", epochs=2.5), "--epochs must be above 0 and at most 2"),
        (RetrainRequest(model="m", corpus="c", seconds=float("inf")), "--seconds must be above 0"),
        (RetrainRequest(model="m", corpus="c", steps=5, options={"batch": 11}), "--batch x --block is 1,100"),
        (RetrainRequest(model="m", corpus="c", steps=True), "--steps must be a whole number"),
        (RetrainRequest(model="m", corpus="c", steps="5"), "--steps must be a whole number"),  # type: ignore[arg-type]
        (RetrainRequest(model="m", corpus="c", steps=5, options={"nproc": 10_000}), "--nproc must be between 1 and 8"),
        (RetrainRequest(model="m", corpus="c", steps=5, options={"nproc": 0}), r"\[jobs\] max_nproc\), got 0"),
    ]
    for request, message in refused:
        with pytest.raises(InvalidRequest, match=message.replace("+", r"\+")):
            check(request, limits)
    assert check(RetrainRequest(model="m", corpus="c", steps=5, options={"nproc": 8, "batch": 1}), limits).nproc == 8
    with pytest.raises(InvalidRequest, match="between 1 and 2 "):
        check(RetrainRequest(model="m", corpus="c", steps=5, options={"nproc": 3}), JobsSettings(max_nproc=2))
    with pytest.raises(ValueError, match="nproc 4 must be at most max_nproc 2"):
        JobsSettings(nproc=4, max_nproc=2)  # a worker's own default must fit the cap too
    # The default cap refuses a batch x block in the billions.
    with pytest.raises(InvalidRequest, match="max_batch_chars"):
        check(RetrainRequest(model="m", corpus="c", steps=5, options={"batch": 100_000, "block": 100_000}))


def test_a_stored_schedule_is_validated_again_when_read_back() -> None:
    stored = RetrainRequest(model="m", corpus="c", steps=5, options={"lr": 0.01}).to_args()
    assert RetrainRequest.from_args("m", "c", stored).options == {"lr": 0.01}
    for args, message in [
        ({"steps": 5, "options": {"bf16": "--corpus=/x"}}, "--bf16: input should be a valid boolean"),
        ({"steps": 5, "options": {"layers": "3"}}, "--layers: input should be a valid integer"),
        ({"steps": 5, "options": ["--corpus=/x"]}, "training options must be a mapping"),
        ({"steps": 5, "corpus_path": "/etc/passwd"}, "unknown field(s): corpus_path"),
        ({"steps": "5"}, "--steps must be a whole number"),
        ("--steps=5", "stored job arguments must be a mapping"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            RetrainRequest.from_args("m", "c", args)
        assert message in str(caught.value)


async def test_a_schedule_stored_with_a_hostile_option_queues_nothing_when_due(jobs_env: str) -> None:
    from datetime import UTC, datetime, timedelta

    from genbot.config import load_settings
    from genbot.jobs.schedule_store import create_schedule
    from genbot.service import GenbotService

    start = datetime(2026, 11, 27, tzinfo=UTC)
    hostile: list[dict[str, Any]] = [
        {"steps": 5, "options": {"bf16": "--corpus=/etc/passwd"}}, {"steps": 5, "options": {"x": 1}},
        {"steps": 5, "corpus_path": "/etc/passwd"}, {"steps": "5 --out=/x"},
    ]  # fmt: skip
    async with GenbotService(load_settings(), serving=False) as service:
        assert service.db is not None
        for args in hostile:
            await create_schedule(service.db, model="alpha", corpus="plays", cron="0 3 * * *", job_args=args,
                                  next_run_at=start)  # fmt: skip
        good = RetrainRequest(model="alpha", corpus="plays", steps=5, options={"eval_every": 5})
        await service.jobs.add_schedule(good, "0 3 * * *", now=start - timedelta(days=1))
        queued = await service.jobs.scheduler().tick(start + timedelta(seconds=1))
        jobs = await service.jobs.list()
    assert [job.id for job in jobs] == queued and len(jobs) == 1
    assert jobs[0].args["options"] == {"eval_every": 5}


# ----- the child's command line ------------------------------------------------------------------


def test_the_train_command_line_parses_to_exactly_the_jobs_values(tmp_path: Path) -> None:
    argv = train_argv(job_args(), model="alpha", out=tmp_path, threads=2)
    assert argv[-2:] == ["--", "charrnn"] and all(arg.startswith("--") for arg in argv[1:-1])
    params = parsed(argv)
    assert (params["corpus"], params["out"], params["from_model"], params["kind"]) == (
        Path("/c/input.txt"), tmp_path, "/m/v1", "charrnn"
    )  # fmt: skip
    assert (params["steps"], params["lr"], params["bf16"], params["carry_state"]) == (9, 0.01, True, False)
    assert (params["threads"], params["name"], params["resume"], params["as_json"]) == (2, "alpha", True, True)


@pytest.mark.parametrize("nasty", NASTY)
def test_no_path_or_name_can_become_another_option(nasty: str, tmp_path: Path) -> None:
    out = tmp_path / nasty.replace("/", "_").replace("\x00", "")
    argv = train_argv(job_args(corpus_path=nasty, parent_path=nasty), model=nasty, out=out, threads=1)
    params = parsed(argv)
    assert params["corpus"] == Path(nasty) and params["from_model"] == nasty and params["name"] == nasty
    assert params["out"] == out and params["kind"] == "charrnn" and params["threads"] == 1
    assert (params["steps"], params["epochs"], params["seconds"]) == (9, None, None)
    assert params["resume"] is True and params["as_json"] is True


@pytest.mark.parametrize("nasty", NASTY)
def test_a_stored_hostile_option_value_is_refused_not_passed_on(nasty: str, tmp_path: Path) -> None:
    for name in TrainingOptions.model_fields:
        if name in ("cell", "device", "save_dtype") and nasty in ("rnn", "lstm", "gru", "cpu", "cuda", "float32"):
            continue
        with pytest.raises(InvalidRequest):
            train_argv(job_args(options={name: nasty}), model="alpha", out=tmp_path, threads=1)
    for budget in ({"steps": nasty}, {"seconds": nasty}, {nasty: 5}, {"steps": True}):
        with pytest.raises(InvalidRequest):
            train_argv(job_args(budget=budget), model="alpha", out=tmp_path, threads=1)


# ----- the child's environment -------------------------------------------------------------------


def test_the_child_environment_is_an_allow_list_without_secrets() -> None:
    parent = {
        "PATH": "/usr/bin", "HOME": "/home/bot", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TMPDIR": "/tmp",
        "DISCORD_TOKEN": "discord-secret", "GENBOT_DATABASE_URL": "postgresql://u:pw@db/x",
        "GENBOT_API__METRICS_KEY": "m", "OPENAI_API_KEY": "sk-x", "AWS_SECRET_ACCESS_KEY": "s",
        "GITHUB_TOKEN": "t", "PYTHONPATH": "/evil", "LD_PRELOAD": "/evil.so", "LC_SECRET_KEY": "x",
    }  # fmt: skip
    assert child_env(parent) == {
        "PATH": "/usr/bin", "HOME": "/home/bot", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TMPDIR": "/tmp",
    }  # fmt: skip


async def test_a_real_child_sees_no_token_or_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "discord-secret-token")
    monkeypatch.setenv("GENBOT_FAKE_SECRET", "hunter2")
    monkeypatch.setenv("MY_SERVICE_KEY", "k")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("LANG", "C.UTF-8")
    events: list[dict[str, Any]] = []
    show = "import json, os, sys; print(json.dumps({'event': 'env', 'env': dict(os.environ), 'path': sys.path}))"
    child = await TrainingProcess.spawn([sys.executable, "-I", "-c", show], events.append, lambda line: None)
    assert await child.wait() == 0
    [event] = events
    seen = "\n".join(f"{k}={v}" for k, v in event["env"].items())
    assert "discord-secret-token" not in seen and "hunter2" not in seen and "MY_SERVICE_KEY" not in seen
    assert not any(name.startswith(("GENBOT_", "PYTHON")) for name in event["env"])
    assert event["env"]["LANG"] == "C.UTF-8" and "PATH" in event["env"]
    assert str(tmp_path) not in event["path"]


def test_the_isolated_child_finds_this_genbot() -> None:
    command = child_command(["--help"])
    assert command[:2] == [sys.executable, "-I"]
    shown = subprocess.run(command, capture_output=True, text=True, env=child_env(), timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "train" in shown.stdout and "retrain" in shown.stdout


# ----- front ends ---------------------------------------------------------------------------------


BAD_BODIES: list[dict[str, Any]] = [
    {"steps": 5, "options": {"bf16": "--corpus=/some/file"}},
    {"steps": 5, "options": {"bf16": "--corpus=/some/file", "lr": "--out=/tmp/x"}},
    {"steps": 5, "options": {"layers": "3"}},
    {"steps": 5, "options": {"grad_clip": None}},
    {"steps": 5, "options": {"eval_every": 0}},
    {"steps": 5, "options": {"eval_every": -1}},
    {"steps": 5, "options": {"batch": 100_000, "block": 100_000}},
    {"steps": 5, "options": {"corpus": "/etc/passwd"}},
    {"steps": 5, "options": {"nproc": 10_000}},  # over [jobs] max_nproc: no admin may fork that many
    {"steps": 5, "options": {"nproc": 0}},
    {"steps": 5, "options": ["--corpus=/x"]},
    {"steps": 5, "source": "²"},
    {"steps": 5, "source": "99999999999999999999"},
    {"steps": 5, "source": "9999999999"},
    {"steps": 10**12},
    {"steps": "5"},
    {"steps": True},
    {"seconds": 10.0**9},
    {"epochs": 10.0**9},
    {"steps": 5, "seconds": 5.0},
    {},
]


async def test_bad_job_bodies_get_a_4xx_error_body_and_queue_nothing(jobs_env: str) -> None:
    async with api_server(ApiSettings(unkeyed_admin=True)) as (url, service), client(url) as c:
        for extra in BAD_BODIES:
            body = {"model": "alpha", "corpus": "plays"} | extra
            response = await c.post("/v1/admin/jobs", json=body)
            assert response.status_code in (400, 422), (body, response.status_code, response.text)
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error" and error["message"], body
        assert await service.jobs.list() == []
        options = {"lr": 0.01, "bf16": False, "eval_every": 5, "nproc": 2}
        good = await c.post(
            "/v1/admin/jobs", json={"model": "alpha", "corpus": "plays", "steps": 5, "options": options}
        )
        assert good.status_code == 201, good.text
        [job] = await service.jobs.list()
    assert job.args["options"] == {"lr": 0.01, "bf16": False, "eval_every": 5, "nproc": 2}


def test_retrain_cli_refuses_a_bad_option_with_one_error_line(sqlite_jobs_env: str) -> None:
    for extra, message in [
        (["--eval-every", "0"], "error: --eval-every: input should be greater than or equal to 1 (got 0)"),
        (["--cell", "transformer", "--from", "scratch"], "error: --cell: input should be 'rnn', 'lstm' or 'gru'"),
        (["--steps", "99999999"], "error: --steps must be above 0 and at most 1,000,000 ([jobs] max_steps)"),
        (["--from", "²"], "error: --from must be 'active', 'scratch' or a version number, got '²'"),
    ]:
        argv = ["retrain", "alpha", "--corpus", "plays", *(["--steps", "5"] if "--steps" not in extra else []), *extra]
        proc = genbot_here(*argv)
        assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
        assert proc.stderr.strip().startswith(message), proc.stderr
    listed = genbot_here("jobs", "list")
    assert listed.returncode == 0 and listed.stdout.strip() == ""


def test_train_cli_checks_its_options_against_the_same_schema(corpus_file: Path, tmp_path: Path) -> None:
    for extra, message in [
        (["--warmup", "-1"], "error: --warmup: input should be greater than or equal to 0 (got -1)"),
        (["--eval-every", "-5"], "error: --eval-every: input should be greater than or equal to 1 (got -5)"),
        (["--weight-decay", "nan"], "error: --weight-decay: input should be a finite number"),
        (["--seed", "-3"], "error: --seed: input should be greater than or equal to 0 (got -3)"),
    ]:
        argv = ["train", "--corpus", str(corpus_file), "--out", str(tmp_path / "m"), "--steps", "2", *extra]
        proc = genbot_here(*argv)
        assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
        assert proc.stderr.strip().startswith(message), proc.stderr
        assert not (tmp_path / "m").exists()
