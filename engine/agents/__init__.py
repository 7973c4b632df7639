"""Agents that act: typed tools, a bounded loop over the chat model with grammar-constrained tool
calls, runs stored step by step in DuckDB and resumable as durable jobs. See docs/agents.md."""

from engine.agents.service import AgentRun, AgentService, AgentSpec, Route, ToolSpec
from engine.agents.tools import Tool, ToolResult, builtin_tools
from engine.agents.webhooks import WebhookService, WebhookSpec

__all__ = [
    "AgentRun",
    "AgentService",
    "AgentSpec",
    "Tool",
    "ToolResult",
    "builtin_tools",
    "ToolSpec",
    "Route",
    "WebhookService",
    "WebhookSpec",
]
