"""Agent: what an agent is — its model, prompt, tools and context.

Every change of ``spec`` becomes an immutable, content-hashed revision (a
ControllerRevision owned by the Agent); gateways serve revisions, not specs.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from kaizen_api.v1alpha1.common import (
    HTTP_URL_PATTERN,
    Duration,
    KaizenModel,
    LocalObjectReference,
    ObjectMeta,
    ResourceStatus,
    SecretKeySelector,
    cel,
    k8s_extra,
    parse_duration,
)

TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class Provider(StrEnum):
    """Which upstream API serves the model."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    AZURE_OPENAI = "azure-openai"
    OPENAI_COMPATIBLE = "openai-compatible"
    MOCK = "mock"


PROVIDERS_NEEDING_CREDENTIALS = ("openai", "anthropic", "azure-openai")
PROVIDERS_NEEDING_ENDPOINT = ("azure-openai", "openai-compatible")


class ModelParameters(KaizenModel):
    """Sampling parameters sent with every request (unset ones use the provider's default)."""

    temperature: float | None = Field(
        default=None, ge=0, le=2, description="Sampling temperature, 0 to 2."
    )
    top_p: float | None = Field(default=None, ge=0, le=1, description="Nucleus sampling, 0 to 1.")
    max_tokens: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Upper bound on generated tokens."
    )
    stop: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None, max_length=4, description="Up to 4 sequences that end generation."
    )


class ModelSpec(KaizenModel):
    """The language model behind the agent."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "!(self.provider in ['openai', 'anthropic', 'azure-openai']) || has(self.credentialsSecretRef)",
                    "credentialsSecretRef is required for providers openai, anthropic and azure-openai",
                    fieldPath=".credentialsSecretRef",
                    reason="FieldValueRequired",
                ),
                cel(
                    "!(self.provider in ['azure-openai', 'openai-compatible']) || has(self.endpoint)",
                    "endpoint is required for providers azure-openai and openai-compatible",
                    fieldPath=".endpoint",
                    reason="FieldValueRequired",
                ),
            ]
        )
    )

    provider: Provider = Field(
        description="openai, anthropic, azure-openai, openai-compatible, or mock "
        "(deterministic, offline; for demos and tests)."
    )
    name: str = Field(
        min_length=1,
        max_length=256,
        description="Model name at the provider, e.g. gpt-4o-mini or claude-sonnet-4.",
    )
    endpoint: str | None = Field(
        default=None,
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        description="Base URL of the API (required for azure-openai and openai-compatible).",
    )
    credentials_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description="Secret key holding the API key; mounted into gateway pods, never copied.",
    )
    parameters: ModelParameters | None = Field(
        default=None, description="Sampling parameters applied to every request."
    )
    fallback_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Model at the same provider tried once when the primary still fails "
        "after retries (e.g. a smaller or older model).",
    )

    @model_validator(mode="after")
    def _provider_requirements(self) -> ModelSpec:
        if self.provider in PROVIDERS_NEEDING_CREDENTIALS and self.credentials_secret_ref is None:
            raise ValueError(
                "credentialsSecretRef is required for providers openai, anthropic and azure-openai"
            )
        if self.provider in PROVIDERS_NEEDING_ENDPOINT and self.endpoint is None:
            raise ValueError(
                "endpoint is required for providers azure-openai and openai-compatible"
            )
        return self


class ToolType(StrEnum):
    """How a tool is invoked."""

    FUNCTION = "function"
    HTTP = "http"
    MCP = "mcp"


class HTTPMethod(StrEnum):
    """HTTP method of an http tool."""

    GET = "GET"
    POST = "POST"
    PUT = "PUT"
    PATCH = "PATCH"
    DELETE = "DELETE"


class HTTPTool(KaizenModel):
    """An HTTP endpoint the gateway calls with the tool's arguments."""

    url: str = Field(max_length=2048, pattern=HTTP_URL_PATTERN, description="URL to call.")
    method: HTTPMethod = Field(default=HTTPMethod.POST, description="HTTP method.")
    timeout: Duration = Field(default="30s", description="Per-call timeout, e.g. 10s.")
    headers_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description="Secret key whose value (JSON object) is sent as extra headers, e.g. auth.",
    )


class MCPTransport(StrEnum):
    """Transport of a Model Context Protocol server."""

    STREAMABLE_HTTP = "streamable-http"
    SSE = "sse"


class MCPTool(KaizenModel):
    """A tool served by a Model Context Protocol server."""

    url: str = Field(max_length=2048, pattern=HTTP_URL_PATTERN, description="MCP server URL.")
    transport: MCPTransport = Field(
        default=MCPTransport.STREAMABLE_HTTP, description="streamable-http or sse."
    )
    tool_name: str | None = Field(
        default=None,
        max_length=128,
        description="Tool name on the server, when it differs from this tool's name.",
    )


class Tool(KaizenModel):
    """A tool the model may call."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "self.type != 'http' || has(self.http)",
                    "http tools need the http block",
                    fieldPath=".http",
                ),
                cel(
                    "self.type != 'mcp' || has(self.mcp)",
                    "mcp tools need the mcp block",
                    fieldPath=".mcp",
                ),
                cel(
                    "(self.type == 'http' || !has(self.http)) && (self.type == 'mcp' || !has(self.mcp))",
                    "set only the block that matches the tool type",
                ),
            ]
        )
    )

    name: str = Field(pattern=TOOL_NAME_PATTERN, description="Tool name the model sees.")
    type: ToolType = Field(
        default=ToolType.FUNCTION,
        description="function (the caller executes it), http, or mcp.",
    )
    description: str = Field(
        default="", max_length=4096, description="What the tool does, shown to the model."
    )
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="JSON Schema of the tool's arguments.",
        json_schema_extra={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    )
    http: HTTPTool | None = Field(default=None, description="How to call an http tool.")
    mcp: MCPTool | None = Field(default=None, description="Where an mcp tool lives.")

    @model_validator(mode="after")
    def _blocks_match_type(self) -> Tool:
        if self.type == ToolType.HTTP and self.http is None:
            raise ValueError("http tools need the http block")
        if self.type == ToolType.MCP and self.mcp is None:
            raise ValueError("mcp tools need the mcp block")
        if (self.type != ToolType.HTTP and self.http is not None) or (
            self.type != ToolType.MCP and self.mcp is not None
        ):
            raise ValueError("set only the block that matches the tool type")
        return self


MIN_MEMORY_TTL, MAX_MEMORY_TTL = 60.0, 720 * 3600.0


class MemoryType(StrEnum):
    """How the agent remembers earlier turns."""

    NONE = "none"
    CONVERSATION = "conversation"
    SUMMARY = "summary"


class MemorySpec(KaizenModel):
    """Conversation memory, kept in the gateway's Redis per agent, caller and conversation."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "duration(self.ttl) >= duration('1m') && duration(self.ttl) <= duration('720h')",
                    "ttl must be between 1m and 720h",
                    fieldPath=".ttl",
                )
            ]
        )
    )

    type: MemoryType = Field(
        default=MemoryType.NONE,
        description="none; conversation: the last maxTurns turns are given to the model; "
        "summary: as conversation, and older turns are folded into a summary written by the "
        "agent's own model.",
    )
    max_turns: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Turns (a caller's message and the answer) kept word for word.",
    )
    ttl: Duration = Field(
        default="24h",
        description="A conversation is forgotten this long after its last turn (1m to 720h).",
    )

    @model_validator(mode="after")
    def _ttl_bounds(self) -> MemorySpec:
        if not MIN_MEMORY_TTL <= parse_duration(self.ttl) <= MAX_MEMORY_TTL:
            raise ValueError("ttl must be between 1m and 720h")
        return self


class KnowledgeSource(KaizenModel):
    """A document source the agent may draw on."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "has(self.configMapRef) != has(self.url)",
                    "set exactly one of configMapRef or url",
                )
            ]
        )
    )

    name: str = Field(pattern=TOOL_NAME_PATTERN, description="Name of the source.")
    config_map_ref: LocalObjectReference | None = Field(
        default=None,
        description="ConfigMap in the agent's namespace whose data entries are the documents (mounted into the gateway pods; an edit is served without a restart).",
    )
    url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        description="URL of one document (text, Markdown or HTML), fetched when the gateway loads the agent; link-local and metadata addresses are refused.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> KnowledgeSource:
        if (self.config_map_ref is None) == (self.url is None):
            raise ValueError("set exactly one of configMapRef or url")
        return self


class RetrievalSpec(KaizenModel):
    """How much of the agent's knowledge is indexed and given to the model."""

    top_k: int = Field(
        default=4,
        ge=1,
        le=20,
        description="Chunks given to the model per request: the most relevant to the latest user message (BM25).",
    )
    max_chunks: int = Field(
        default=5000,
        ge=1,
        le=50_000,
        description="Chunks indexed for this agent over all its sources; documents past the limit are left out (reported on the gateway's /readyz).",
    )
    max_document_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=8_388_608,
        description="Largest document read (a ConfigMap key, or the body of a url source); a longer one is cut at this size (reported on the gateway's /readyz).",
    )


class ContextSpec(KaizenModel):
    """What the agent knows and remembers."""

    knowledge: list[KnowledgeSource] | None = Field(
        default=None,
        max_length=32,
        description="Document sources, keyed by name: chunked and indexed when the gateway loads the agent; the chunks most relevant to each request are given to the model with their source names.",
        json_schema_extra=k8s_extra(list_type="map", list_map_keys=["name"]),
    )
    retrieval: RetrievalSpec | None = Field(
        default=None,
        description="Bounds of knowledge indexing and retrieval (defaults apply when unset).",
    )
    memory: MemorySpec | None = Field(default=None, description="Conversation memory settings.")


class RuntimeSpec(KaizenModel):
    """Bounds of the agent loop: how long and how far the gateway keeps calling the model
    and running the agent's http and mcp tools for one request."""

    model_config = ConfigDict(
        json_schema_extra=k8s_extra(
            validations=[
                cel(
                    "!has(self.timeout) || (duration(self.timeout) >= duration('1s') "
                    "&& duration(self.timeout) <= duration('1h'))",
                    "timeout must be between 1s and 60m",
                    fieldPath=".timeout",
                )
            ]
        )
    )

    max_steps: int = Field(
        default=8,
        ge=1,
        le=100,
        description="Model calls per request. When the model still asks for http or mcp "
        "tools at the last step, the answer ends with finish_reason max_steps.",
    )
    timeout: Duration = Field(
        default="120s",
        description="Deadline of the whole request (every model and tool call included), "
        "e.g. 120s. Past it the caller gets a 504 deadline_exceeded error.",
    )
    token_budget: int | None = Field(
        default=None,
        ge=1,
        le=100_000_000,
        description="Tokens (prompt and completion, summed over steps) a request may use. "
        "When a step's model answer reaches it and still asks for tools, the answer ends "
        "with finish_reason token_budget. Unset: no budget.",
    )
    max_concurrent_tools: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Tool calls of one step run at the same time, at most this many.",
    )

    @model_validator(mode="after")
    def _timeout_in_range(self) -> RuntimeSpec:
        if not 1 <= parse_duration(self.timeout) <= MAX_RUNTIME_SECONDS:
            raise ValueError(f"timeout must be between 1s and {MAX_RUNTIME_SECONDS // 60}m")
        return self


MAX_RUNTIME_SECONDS = 3600


class Lifecycle(StrEnum):
    """Whether gateways may serve the agent."""

    DRAFT = "Draft"
    ACTIVE = "Active"
    ARCHIVED = "Archived"


class AgentSpec(KaizenModel):
    """Desired state of an Agent."""

    model: ModelSpec = Field(description="The language model behind the agent.")
    system_prompt: str = Field(
        default="", max_length=100_000, description="Instructions prepended to every conversation."
    )
    tools: list[Tool] | None = Field(
        default=None,
        max_length=64,
        description="Tools the model may call, keyed by name.",
        json_schema_extra=k8s_extra(list_type="map", list_map_keys=["name"]),
    )
    context: ContextSpec | None = Field(default=None, description="Knowledge and memory.")
    runtime: RuntimeSpec | None = Field(
        default=None,
        description="Bounds of the agent loop (steps, deadline, token budget, concurrent "
        "tools); unset fields take their defaults.",
    )
    gateway_ref: LocalObjectReference | None = Field(
        default=None, description="The dev Gateway that serves this agent's latest revision."
    )
    lifecycle: Lifecycle = Field(
        default=Lifecycle.ACTIVE,
        description="Draft (not served), Active, or Archived (no longer served, kept for audit).",
    )
    revision_history_limit: int = Field(
        default=10, ge=1, le=100, description="How many past revisions to keep."
    )


class RevisionRecord(KaizenModel):
    """One immutable revision of the agent's spec."""

    revision: int = Field(ge=1, description="Revision number, increasing with each spec change.")
    name: str = Field(max_length=253, description="Name of the ControllerRevision holding it.")
    hash: str = Field(max_length=64, description="Content hash of the spec.")
    created_at: datetime | None = Field(default=None, description="When it was created.")
    retained_by: list[Annotated[str, Field(max_length=300)]] | None = Field(
        default=None,
        max_length=50,
        description=(
            "Why this revision is kept although it is older than revisionHistoryLimit: "
            "the Gateways that serve it and the unfinished Promotions that target it. "
            "It is pruned once none does."
        ),
    )


class AgentStatus(ResourceStatus):
    """Observed state of an Agent."""

    latest_revision: int | None = Field(
        default=None, ge=1, description="Number of the newest revision."
    )
    revisions: list[RevisionRecord] | None = Field(
        default=None,
        max_length=200,
        description=(
            "Kept revisions, newest last: the newest revisionHistoryLimit ones, plus older "
            "ones still served by a Gateway or targeted by a Promotion (see retainedBy)."
        ),
        json_schema_extra=k8s_extra(list_type="map", list_map_keys=["revision"]),
    )


class Agent(KaizenModel):
    """An AI agent: model, prompt, tools and context, versioned as immutable revisions."""

    api_version: Literal["kaizen.studio/v1alpha1"] = Field(
        default="kaizen.studio/v1alpha1", description="kaizen.studio/v1alpha1"
    )
    kind: Literal["Agent"] = Field(default="Agent", description="Agent")
    metadata: ObjectMeta = Field(default_factory=dict, description="Standard object metadata.")
    spec: AgentSpec = Field(description="Desired state.")
    status: AgentStatus | None = Field(default=None, description="Observed state.")
