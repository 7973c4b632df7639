"""``hearth examples list`` and ``hearth examples install NAME``: the shipped example systems
(``configs/examples/NAME.json``: tables, tools, agents, webhooks) put into a running server over
HTTP, for the tenant of ``--api-key``. Installing again replaces them.

    hearth examples install shop        # prints a few example order ids to ask about
    hearth examples install crm --callback-url http://crm.internal:8443/hearth   # signed results
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

from configs import PROFILES_DIR, Settings
from server.documents_cli import CliError, _check, _client

log = logging.getLogger("hearth")

EXAMPLES_DIR = PROFILES_DIR / "examples"


def available() -> list[str]:
    return sorted(p.stem for p in EXAMPLES_DIR.glob("*.json"))


def load_example(name: str) -> dict[str, Any]:
    path = EXAMPLES_DIR / f"{name}.json"
    if not path.is_file():
        raise CliError(f"no example {name!r}; available: {', '.join(available())}")
    return json.loads(path.read_text())


def install(http: Any, example: dict[str, Any], callback_url: str | None = None) -> dict[str, Any]:
    """Tables, then tools, then agents, then webhooks (each step needs the one before), the
    webhooks posting their results to ``callback_url`` when given. Returns what was made;
    webhook secrets are in it (shown once)."""
    made: dict[str, Any] = {"tables": [], "tools": [], "agents": [], "webhooks": {}}
    for table, rows in example.get("tables", {}).items():
        _check(http.put(f"/v1/tables/{table}", json={"rows": rows}))
        made["tables"].append(table)
    for tool in example.get("tools", []):
        _check(http.post("/v1/tools", json=tool))
        made["tools"].append(tool["name"])
    for agent in example.get("agents", []):
        _check(http.post("/v1/agents", json=agent))
        made["agents"].append(agent["name"])
    for hook in example.get("webhooks", []):
        body = {**hook, "callback_url": callback_url} if callback_url else hook
        made["webhooks"][hook["name"]] = _check(http.post("/v1/webhooks", json=body))["secret"]
    return made


def configure_examples(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["list", "install"])
    p.add_argument("name", nargs="?", help="the example to install: " + ", ".join(available()))
    p.add_argument("--url", help="server URL (default: from the profile)")
    p.add_argument("--api-key", default=os.environ.get("HEARTH_API_KEY"), help="[HEARTH_API_KEY]")
    p.add_argument(
        "--callback-url", help="where the example's webhooks post results (an allow-listed host)"
    )


def run_examples(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.action == "list":
            for name in available():
                print(f"{name}: {load_example(name)['description']}")  # noqa: T201
            return 0
        if not args.name:
            raise CliError("name the example to install: " + ", ".join(available()))
        example = load_example(args.name)
        with _client(args, settings, args.api_key) as http:
            made = install(http, example, args.callback_url)
    except CliError as exc:
        log.error("%s", exc)
        return 1
    _report(args.name, example, made)
    return 0


def _report(name: str, example: dict[str, Any], made: dict[str, Any]) -> None:
    lines = [
        f"installed example {name!r}: tables {made['tables']}, tools {made['tools']}, "
        f"agents {made['agents']}"
    ]
    orders = example.get("tables", {}).get("orders", [])
    if orders:
        lines.append("example order ids: " + ", ".join(o["id"] for o in orders[:4]))
    for hook, secret in made["webhooks"].items():
        lines.append(f"webhook {hook!r} secret (shown once): {secret}")
    for text in example.get("examples", []):
        agent = made["agents"][0] if made["agents"] else "?"
        lines.append(
            f"try: curl -s localhost:8000/v1/agents/{agent}/runs -H 'content-type: "
            f"application/json' -d '{json.dumps({'input': text})}'"
        )
    print("\n".join(lines))  # noqa: T201 - the command's output


EXAMPLE_COMMANDS = {"examples": (configure_examples, run_examples)}
__all__ = ["EXAMPLE_COMMANDS", "install", "load_example"]
