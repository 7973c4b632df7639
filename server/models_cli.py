"""``hearth models``: bring your own model, offline. Works on the data directory, not through a
running server (restart the server, or name the model in a request, to serve a new card).

    hearth models add ./my-model.gguf --id my-model     # copies it into <data dir>/models/
    hearth models add /mnt/disk/model.gguf --link       # hashes it and keeps it where it is
    hearth models list
    hearth models export my-model --out my-model.hearth-model
    hearth models import my-model.hearth-model          # on the other machine
    hearth models remove my-model
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from configs import Settings
from models import registry
from models.cards import ModelCard
from models.registry import ModelRegistryError
from models.store import ModelFileError
from models.templates import BUILTIN_TEMPLATES

log = logging.getLogger("hearth")


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="models_command", required=True)
    add = sub.add_parser("add", help="register a GGUF file or a Hugging Face folder")
    add.add_argument("path", type=Path)
    add.add_argument("--id", dest="model_id", help="card id (default: from the file name)")
    add.add_argument(
        "--link", action="store_true", help="keep the file where it is instead of copying it"
    )
    add.add_argument(
        "--chat-template",
        choices=sorted(BUILTIN_TEMPLATES),
        help="built-in chat template for a model whose file carries none",
    )
    sub.add_parser("list", help="every model card: shipped and added")
    remove = sub.add_parser("remove", help="forget an added model (and delete its copy)")
    remove.add_argument("model_id")
    export = sub.add_parser("export", help="write an added model to one archive")
    export.add_argument("model_id")
    export.add_argument("--out", type=Path, required=True)
    imp = sub.add_parser("import", help="add the model in an archive (checked before adding)")
    imp.add_argument("archive", type=Path)
    imp.add_argument("--id", dest="model_id", help="card id (default: the archive's)")


def _size(n: int | None) -> str:
    if not n:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return "-"


def _row(card: ModelCard) -> str:
    source = "linked" if card.linked else card.origin
    return (
        f"{card.id:<32} {card.format:<22} {_size(card.weight_bytes):>9}  {card.sha256[:12]}  "
        f"{','.join(card.capabilities):<16} {source}"
    )


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def run(args: argparse.Namespace, settings: Settings) -> int:
    data_dir = settings.data_dir
    try:
        match args.models_command:
            case "add":
                card = registry.add_model(
                    args.path,
                    data_dir=data_dir,
                    model_id=args.model_id,
                    link=args.link,
                    chat_template=args.chat_template,
                )
                _out(f"added {card.id}: {card.file} (sha256 {card.sha256})")
            case "list":
                _out(
                    f"{'id':<32} {'format':<22} {'size':>9}  {'sha256':<12}  "
                    f"{'capabilities':<16} source"
                )
                for card in registry.all_cards(data_dir).values():
                    _out(_row(card))
            case "remove":
                card = registry.remove_model(args.model_id, data_dir=data_dir)
                _out(f"removed {card.id}" + (f" (file kept at {card.file})" if card.linked else ""))
            case "export":
                out = registry.export_model(args.model_id, args.out, data_dir=data_dir)
                _out(f"exported {args.model_id} to {out}")
            case "import":
                card = registry.import_model(
                    args.archive, data_dir=data_dir, model_id=args.model_id
                )
                _out(f"imported {card.id}: {card.file} (sha256 {card.sha256})")
    except (ModelRegistryError, ModelFileError, OSError) as exc:
        sys.stderr.write(f"hearth models: {exc}\n")
        return 1
    return 0


MODEL_COMMANDS = {"models": (configure, run)}
