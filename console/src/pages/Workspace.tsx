import { useMutation, useQueries, useQuery, useQueryClient } from "@tanstack/react-query";
import { useEffect, useState } from "react";
import { parse, stringify } from "yaml";
import { api, ok, type Json } from "../api/client";
import { POLL_MS, keys, useResource, useResources, useWorkspaces } from "../data";
import { wsCan } from "../roles";
import { Link, navigate } from "../router";
import { Button, ErrorBox, Field, Loading, ReadyBadge, meta, when } from "../ui";

type Ws = { org: string; ws: string };

/** The caller's role in the workspace (admin, developer, viewer or none). */
function useWsRole(org: string, ws: string): string | null | undefined {
  return useWorkspaces(org).data?.find((w) => w.name === ws)?.role;
}

function spec(obj: Json): Json {
  return (obj.spec ?? {}) as Json;
}
function status(obj: Json): Json {
  return (obj.status ?? {}) as Json;
}

function ReadOnlyNote({ role, action }: { role: string | null | undefined; action: string }) {
  return (
    <p className="muted note">
      Your role here is {role ?? "none"}: you cannot {action}.
    </p>
  );
}

export function Agents({ org, ws }: Ws) {
  const role = useWsRole(org, ws);
  const agents = useResources(org, ws, "agents");
  const canCreate = wsCan(role, "agents:create");
  return (
    <section>
      <div className="title-row">
        <h1>Agents</h1>
        {canCreate ? (
          <Link className="button" to={`/o/${org}/w/${ws}/agents/new`}>
            New agent
          </Link>
        ) : (
          <button type="button" disabled title="Your role cannot create agents">
            New agent
          </button>
        )}
      </div>
      {!canCreate && role !== undefined && <ReadOnlyNote role={role} action="create agents" />}
      <ErrorBox error={agents.error} />
      {agents.isPending ? (
        <Loading what="agents" />
      ) : (
        <table aria-label="Agents">
          <thead>
            <tr>
              <th>Name</th>
              <th>Ready</th>
              <th>Lifecycle</th>
              <th>Revision</th>
              <th>Model</th>
              <th>Created</th>
            </tr>
          </thead>
          <tbody>
            {agents.data?.items.map((a) => {
              const m = meta(a);
              const model = (spec(a).model ?? {}) as { provider?: string; name?: string };
              return (
                <tr key={m.name} data-agent={m.name}>
                  <td>
                    <Link to={`/o/${org}/w/${ws}/agents/${m.name}`}>{m.name}</Link>
                  </td>
                  <td>
                    <ReadyBadge obj={a} />
                  </td>
                  <td>{String(spec(a).lifecycle ?? "active")}</td>
                  <td className="revision">{String(status(a).latestRevision ?? "—")}</td>
                  <td>
                    {model.provider}/{model.name}
                  </td>
                  <td>{when(m.creationTimestamp)}</td>
                </tr>
              );
            })}
            {agents.data?.items.length === 0 && (
              <tr>
                <td colSpan={6}>No agent yet.</td>
              </tr>
            )}
          </tbody>
        </table>
      )}
    </section>
  );
}

const PROVIDERS = ["mock", "openai", "anthropic", "azure-openai", "openai-compatible"];

export function NewAgent({ org, ws }: Ws) {
  const queries = useQueryClient();
  const role = useWsRole(org, ws);
  const [form, setForm] = useState({
    name: "",
    provider: "mock",
    model: "echo",
    endpoint: "",
    secret: "",
    prompt: "You are a helpful assistant.",
    gateway: "",
  });
  const set = (k: keyof typeof form) => (e: { target: { value: string } }) =>
    setForm({ ...form, [k]: e.target.value });
  const create = useMutation({
    mutationFn: () => {
      const model: Json = { provider: form.provider, name: form.model };
      if (form.endpoint) model.endpoint = form.endpoint;
      if (form.secret) model.credentialsSecretRef = { name: form.secret, key: "api-key" };
      const body: Json = {
        metadata: { name: form.name },
        spec: {
          model,
          systemPrompt: form.prompt,
          ...(form.gateway ? { gatewayRef: { name: form.gateway } } : {}),
        },
      };
      return ok(
        api.POST("/api/v1/orgs/{org}/workspaces/{ws}/{kind}", {
          params: { path: { org, ws, kind: "agents" } },
          body,
        }),
      );
    },
    onSuccess: async () => {
      await queries.invalidateQueries({ queryKey: keys.resources(org, ws, "agents") });
      navigate(`/o/${org}/w/${ws}/agents/${form.name}`);
    },
  });
  return (
    <section>
      <h1>New agent</h1>
      {role !== undefined && !wsCan(role, "agents:create") && (
        <ReadOnlyNote role={role} action="create agents" />
      )}
      <form onSubmit={(e) => {
        e.preventDefault();
        create.mutate();
      }}>
        <Field label="Name" required value={form.name} onChange={set("name")}
          hint="Lowercase letters, digits, dashes and dots." />
        <div className="field">
          <label htmlFor="provider">Provider</label>
          <select id="provider" value={form.provider} onChange={set("provider")}>
            {PROVIDERS.map((p) => (
              <option key={p}>{p}</option>
            ))}
          </select>
        </div>
        <Field label="Model" required value={form.model} onChange={set("model")} />
        <Field label="Endpoint" value={form.endpoint} onChange={set("endpoint")}
          hint="Needed for azure-openai and openai-compatible." />
        <Field label="Credentials secret" value={form.secret} onChange={set("secret")}
          hint="A Secret in the workspace with key api-key (openai, anthropic, azure-openai)." />
        <div className="field">
          <label htmlFor="prompt">System prompt</label>
          <textarea id="prompt" rows={5} value={form.prompt} onChange={set("prompt")} />
        </div>
        <Field label="Dev gateway" value={form.gateway} onChange={set("gateway")}
          hint="Optional: the dev Gateway that serves the latest revision." />
        <ErrorBox error={create.error} />
        <Button type="submit" pending={create.isPending} busyLabel="Creating agent…"
          disabled={!wsCan(role, "agents:create")}>
          Create agent
        </Button>
      </form>
    </section>
  );
}

/** The object as a person edits it: no server-managed fields but the version. */
function editable(obj: Json): Json {
  const m = { ...(obj.metadata as Json) };
  for (const k of ["managedFields", "uid", "generation", "creationTimestamp", "namespace"])
    delete m[k];
  const { status: _status, ...rest } = obj;
  void _status;
  return { ...rest, metadata: m };
}

export function AgentDetail({ org, ws, name }: Ws & { name: string }) {
  const role = useWsRole(org, ws);
  const queries = useQueryClient();
  const agent = useResource(org, ws, "agents", name);
  const revisions = useQuery({
    queryKey: ["revisions", org, ws, name],
    queryFn: () =>
      ok(
        api.GET("/api/v1/orgs/{org}/workspaces/{ws}/{kind}/{name}/revisions", {
          params: { path: { org, ws, kind: "agents", name } },
        }),
      ),
    refetchInterval: POLL_MS,
  });
  const [text, setText] = useState<string | null>(null);
  const save = useMutation({
    mutationFn: () =>
      ok(
        api.PUT("/api/v1/orgs/{org}/workspaces/{ws}/{kind}/{name}", {
          params: { path: { org, ws, kind: "agents", name } },
          body: parse(text ?? "") as Json,
        }),
      ),
    onSuccess: () => {
      setText(null);
      return queries.invalidateQueries({ queryKey: keys.resource(org, ws, "agents", name) });
    },
  });
  const rollback = useMutation({
    mutationFn: (revision: number) =>
      ok(
        api.POST("/api/v1/orgs/{org}/workspaces/{ws}/{kind}/{name}/rollback", {
          params: { path: { org, ws, kind: "agents", name } },
          body: { revision },
        }),
      ),
    onSuccess: () => queries.invalidateQueries({ queryKey: ["revisions", org, ws, name] }),
  });
  const remove = useMutation({
    mutationFn: () =>
      ok(
        api.DELETE("/api/v1/orgs/{org}/workspaces/{ws}/{kind}/{name}", {
          params: { path: { org, ws, kind: "agents", name } },
        }),
      ),
    onSuccess: () => navigate(`/o/${org}/w/${ws}`),
  });
  const canUpdate = wsCan(role, "agents:update");
  if (agent.isPending) return <Loading what={`agent ${name}`} />;
  if (agent.error) return <ErrorBox error={agent.error} />;
  const obj = agent.data;
  const st = status(obj);
  const yaml = stringify(editable(obj));
  return (
    <section>
      <div className="title-row">
        <h1>Agent {name}</h1>
        <ReadyBadge obj={obj} />
      </div>
      <dl className="facts">
        <dt>Latest revision</dt>
        <dd data-testid="latest-revision">{String(st.latestRevision ?? "—")}</dd>
        <dt>Lifecycle</dt>
        <dd>{String(spec(obj).lifecycle ?? "active")}</dd>
        <dt>Dev gateway</dt>
        <dd>{String((spec(obj).gatewayRef as Json | undefined)?.name ?? "—")}</dd>
      </dl>
      <h2>Definition (YAML)</h2>
      {text === null ? (
        <>
          <pre className="yaml" aria-label="Agent YAML">{yaml}</pre>
          <Button type="button" disabled={!canUpdate} onClick={() => setText(yaml)}>
            Edit
          </Button>{" "}
          <Button type="button" disabled={!wsCan(role, "agents:delete")}
            pending={remove.isPending} busyLabel="Deleting…"
            onClick={() => confirm(`Delete agent ${name}?`) && remove.mutate()}>
            Delete
          </Button>
          {!canUpdate && <ReadOnlyNote role={role} action="change this agent" />}
          <ErrorBox error={remove.error} />
        </>
      ) : (
        <form onSubmit={(e) => {
          e.preventDefault();
          save.mutate();
        }}>
          <label htmlFor="yaml-edit" className="sr-only">Agent YAML</label>
          <textarea id="yaml-edit" className="yaml" rows={20} value={text}
            onChange={(e) => setText(e.target.value)} spellCheck={false} />
          <ErrorBox error={save.error} />
          <Button type="submit" pending={save.isPending} busyLabel="Saving…">Save</Button>{" "}
          <button type="button" onClick={() => setText(null)}>Cancel</button>
        </form>
      )}
      <h2>Revisions</h2>
      <ErrorBox error={revisions.error ?? rollback.error} />
      <table aria-label="Revisions">
        <thead>
          <tr>
            <th>Revision</th>
            <th>Hash</th>
            <th>Created</th>
            <th>Prompt</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {revisions.data?.map((r) => {
            const n = Number(r.revision);
            return (
              <tr key={n}>
                <td>{n}</td>
                <td>
                  <code>{String(r.hash).slice(0, 10)}</code>
                </td>
                <td>{when(r.createdAt as string)}</td>
                <td className="clip">{String((r.spec as Json)?.systemPrompt ?? "")}</td>
                <td>
                  {n !== st.latestRevision && (
                    <Button type="button" disabled={!canUpdate}
                      pending={rollback.isPending && rollback.variables === n}
                      busyLabel="Rolling back…" onClick={() => rollback.mutate(n)}>
                      Roll back to {n}
                    </Button>
                  )}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </section>
  );
}

export function Gateways({ org, ws }: Ws) {
  const role = useWsRole(org, ws);
  const gateways = useResources(org, ws, "gateways");
  const names = (gateways.data?.items ?? []).map((g) => meta(g).name);
  const statuses = useQueries({
    queries: names.map((name) => ({
      queryKey: ["gateway-status", org, ws, name],
      queryFn: () =>
        ok(
          api.GET("/api/v1/orgs/{org}/workspaces/{ws}/gateways/{name}/status", {
            params: { path: { org, ws, name } },
          }),
        ),
      refetchInterval: POLL_MS,
    })),
  });
  const order = ["dev", "staging", "production"];
  const items = [...(gateways.data?.items ?? [])].sort(
    (a, b) =>
      order.indexOf(String(spec(a).environment)) - order.indexOf(String(spec(b).environment)),
  );
  return (
    <section>
      <h1>Gateways</h1>
      <ErrorBox error={gateways.error} />
      {gateways.isPending && <Loading what="gateways" />}
      {gateways.data?.items.length === 0 && <p>No gateway in this workspace.</p>}
      <div className="columns">
        {items.map((g) => {
          const name = meta(g).name;
          const s = statuses[names.indexOf(name)];
          const d = (s?.data ?? {}) as Json;
          const served = (d.servedRevisions ?? []) as Json[];
          const auto = d.autoscaler as Json | null | undefined;
          return (
            <article key={name} className="card" aria-label={`Gateway ${name}`}>
              <h2>
                {String(spec(g).environment ?? "")} · {name}
              </h2>
              <ReadyBadge obj={g} />
              <ErrorBox error={s?.error} />
              <dl className="facts">
                <dt>Endpoint</dt>
                <dd>{d.endpoint ? <code>{String(d.endpoint)}</code> : "—"}</dd>
                <dt>Replicas</dt>
                <dd>
                  {String(d.readyReplicas ?? 0)} ready of {String(d.replicas ?? 0)}
                  {auto ? ` (autoscaler ${auto.minReplicas}–${auto.maxReplicas})` : ""}
                </dd>
                <dt>Serves</dt>
                <dd>
                  {served.length === 0
                    ? "nothing yet"
                    : served.map((r, i) => (
                        <div key={i}>
                          {String(r.agent ?? r.name ?? "")} r{String(r.revision ?? "?")}
                          {r.weight !== undefined ? ` (${String(r.weight)}%)` : ""}
                        </div>
                      ))}
                </dd>
              </dl>
            </article>
          );
        })}
      </div>
      <Scaling org={org} ws={ws} role={role} />
    </section>
  );
}

/** The approval block: who may approve, from "kaizen:a@x, group:g". */
function approval(approvers: string): Json {
  const names = approvers.split(",").map((s) => s.trim()).filter(Boolean);
  const groups = names.filter((n) => n.startsWith("group:")).map((n) => n.slice(6));
  const users = names.filter((n) => !n.startsWith("group:"));
  return {
    required: true,
    approvers: { ...(users.length ? { users } : {}), ...(groups.length ? { groups } : {}) },
  };
}

const PHASE_DONE = new Set(["Succeeded", "Failed", "Rejected", "Aborted", "Errored"]);

export function Promotions({ org, ws }: Ws) {
  const role = useWsRole(org, ws);
  const queries = useQueryClient();
  const promotions = useResources(org, ws, "promotions");
  const agents = useResources(org, ws, "agents", false);
  const gateways = useResources(org, ws, "gateways", false);
  const [form, setForm] = useState({ name: "", agent: "", revision: "1", from: "", to: "",
    approval: false, approvers: "" });
  const [reasons, setReasons] = useState<Record<string, string>>({});
  const agentNames = (agents.data?.items ?? []).map((a) => meta(a).name);
  const gatewayNames = (gateways.data?.items ?? []).map((g) => meta(g).name);
  useEffect(() => {
    if (!form.agent && agentNames[0]) setForm((f) => ({ ...f, agent: agentNames[0] }));
  }, [agentNames, form.agent]);
  const create = useMutation({
    mutationFn: () =>
      ok(
        api.POST("/api/v1/orgs/{org}/workspaces/{ws}/{kind}", {
          params: { path: { org, ws, kind: "promotions" } },
          body: {
            metadata: { name: form.name },
            spec: {
              agentRef: { name: form.agent },
              revision: Number(form.revision),
              from: form.from,
              to: form.to,
              ...(form.approval ? { approval: approval(form.approvers) } : {}),
            },
          },
        }),
      ),
    onSuccess: () => queries.invalidateQueries({ queryKey: keys.resources(org, ws, "promotions") }),
  });
  const decide = useMutation({
    mutationFn: ({ name, verdict }: { name: string; verdict: "approve" | "reject" }) => {
      const path = { params: { path: { org, ws, name } }, body: { reason: reasons[name] ?? "" } };
      return ok(
        verdict === "approve"
          ? api.POST("/api/v1/orgs/{org}/workspaces/{ws}/promotions/{name}/approve", path)
          : api.POST("/api/v1/orgs/{org}/workspaces/{ws}/promotions/{name}/reject", path),
      );
    },
    onSuccess: () => queries.invalidateQueries({ queryKey: keys.resources(org, ws, "promotions") }),
  });
  const canApprove = wsCan(role, "promotions:approve");
  const set = (k: keyof typeof form) => (e: { target: { value: string } }) =>
    setForm({ ...form, [k]: e.target.value });
  return (
    <section>
      <h1>Promotions</h1>
      <ErrorBox error={promotions.error ?? decide.error} />
      {promotions.isPending ? (
        <Loading what="promotions" />
      ) : (
        <table aria-label="Promotions">
          <thead>
            <tr>
              <th>Name</th>
              <th>Agent</th>
              <th>From → to</th>
              <th>Phase</th>
              <th>Approvals</th>
              <th>Decision</th>
            </tr>
          </thead>
          <tbody>
            {promotions.data?.items.map((p) => {
              const name = meta(p).name;
              const sp = spec(p);
              const st = status(p);
              const phase = String(st.phase ?? "Pending");
              const approvals = (st.approvals ?? []) as Json[];
              return (
                <tr key={name}>
                  <td>{name}</td>
                  <td>
                    {String((sp.agentRef as Json)?.name)} r{String(sp.revision)}
                  </td>
                  <td>
                    {String(sp.from)} → {String(sp.to)}
                  </td>
                  <td>
                    <span className={`badge phase-${phase.toLowerCase()}`} title={String(st.message ?? "")}>
                      {phase}
                    </span>
                    {st.message ? <div className="muted small">{String(st.message)}</div> : null}
                  </td>
                  <td>
                    {approvals.map((a, i) => (
                      <div key={i}>
                        {String(a.user ?? "")}: {String(a.decision ?? "")}
                        {a.reason ? ` — ${String(a.reason)}` : ""}
                      </div>
                    ))}
                  </td>
                  <td>
                    {!PHASE_DONE.has(phase) && (
                      <div className="decide">
                        <input aria-label={`Reason for ${name}`} placeholder="reason"
                          disabled={!canApprove} value={reasons[name] ?? ""}
                          onChange={(e) => setReasons({ ...reasons, [name]: e.target.value })} />
                        <Button type="button" disabled={!canApprove || !reasons[name]}
                          pending={decide.isPending && decide.variables?.name === name}
                          onClick={() => decide.mutate({ name, verdict: "approve" })}>
                          Approve
                        </Button>
                        <Button type="button" disabled={!canApprove || !reasons[name]}
                          pending={decide.isPending && decide.variables?.name === name}
                          onClick={() => decide.mutate({ name, verdict: "reject" })}>
                          Reject
                        </Button>
                      </div>
                    )}
                  </td>
                </tr>
              );
            })}
            {promotions.data?.items.length === 0 && (
              <tr>
                <td colSpan={6}>No promotion yet.</td>
              </tr>
            )}
          </tbody>
        </table>
      )}
      <form className="inline" onSubmit={(e) => {
        e.preventDefault();
        create.mutate();
      }}>
        <h2>Promote an agent</h2>
        <fieldset disabled={!wsCan(role, "promotions:create")}>
          {role !== undefined && !wsCan(role, "promotions:create") && (
            <ReadOnlyNote role={role} action="create promotions" />
          )}
          <Field label="Promotion name" required value={form.name} onChange={set("name")} />
          <div className="field">
            <label htmlFor="promo-agent">Agent</label>
            <select id="promo-agent" value={form.agent} onChange={set("agent")}>
              {agentNames.map((n) => (
                <option key={n}>{n}</option>
              ))}
            </select>
          </div>
          <Field label="Revision" type="number" min={1} required value={form.revision}
            onChange={set("revision")} />
          <Field label="From gateway" required list="gateway-names" value={form.from}
            onChange={set("from")} />
          <Field label="To gateway" required list="gateway-names" value={form.to}
            onChange={set("to")} />
          <datalist id="gateway-names">
            {gatewayNames.map((n) => (
              <option key={n} value={n} />
            ))}
          </datalist>
          <div className="field check">
            <input id="promo-approval" type="checkbox" checked={form.approval}
              onChange={(e) => setForm({ ...form, approval: e.target.checked })} />
            <label htmlFor="promo-approval">Require an approval</label>
          </div>
          {form.approval && (
            <Field label="Approvers" value={form.approvers} onChange={set("approvers")}
              placeholder="kaizen:ada@example.com, group:kaizen:acme:team:ml"
              hint="Users (kaizen:<email>) and groups (group:<name>), comma-separated." />
          )}
          <Button type="submit" pending={create.isPending} busyLabel="Creating promotion…">
            Create promotion
          </Button>
        </fieldset>
        <ErrorBox error={create.error} />
      </form>
    </section>
  );
}

export function WorkspaceMembers({ org, ws }: Ws) {
  const role = useWsRole(org, ws);
  const queries = useQueryClient();
  const path = { params: { path: { org, ws } } };
  const members = useQuery({
    queryKey: ["ws-members", org, ws],
    queryFn: () => ok(api.GET("/api/v1/orgs/{org}/workspaces/{ws}/members", path)),
  });
  const access = useQuery({
    queryKey: ["ws-access", org, ws],
    queryFn: () => ok(api.GET("/api/v1/orgs/{org}/workspaces/{ws}/access", path)),
  });
  const refresh = () =>
    Promise.all([
      queries.invalidateQueries({ queryKey: ["ws-members", org, ws] }),
      queries.invalidateQueries({ queryKey: ["ws-access", org, ws] }),
    ]);
  const [subject, setSubject] = useState("");
  const [newRole, setNewRole] = useState<"admin" | "developer" | "viewer">("viewer");
  const put = useMutation({
    mutationFn: () =>
      ok(
        api.PUT("/api/v1/orgs/{org}/workspaces/{ws}/members", {
          ...path,
          body: { subject, role: newRole },
        }),
      ),
    onSuccess: refresh,
  });
  const remove = useMutation({
    mutationFn: (s: string) =>
      ok(
        api.DELETE("/api/v1/orgs/{org}/workspaces/{ws}/members/{subject}", {
          params: { path: { org, ws, subject: s } },
        }),
      ),
    onSuccess: refresh,
  });
  const canManage = wsCan(role, "members:update");
  return (
    <section>
      <h1>Members of workspace {ws}</h1>
      <ErrorBox error={members.error ?? remove.error} />
      {members.isPending ? (
        <Loading what="members" />
      ) : (
        <table aria-label="Workspace members">
          <thead>
            <tr>
              <th>Subject</th>
              <th>Role</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {members.data?.map((m) => (
              <tr key={m.subject}>
                <td>{m.subject}</td>
                <td>{m.role}</td>
                <td>
                  <Button type="button" disabled={!canManage}
                    pending={remove.isPending && remove.variables === m.subject}
                    onClick={() => remove.mutate(m.subject)}>
                    Remove
                  </Button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <form className="inline" onSubmit={(e) => {
        e.preventDefault();
        put.mutate();
      }}>
        <h2>Give a role</h2>
        <fieldset disabled={!canManage}>
          {role !== undefined && !canManage && <ReadOnlyNote role={role} action="change members" />}
          <Field label="Subject" required placeholder="user:ada@example.com or team:ml"
            value={subject} onChange={(e) => setSubject(e.target.value)} />
          <div className="field">
            <label htmlFor="ws-role">Workspace role</label>
            <select id="ws-role" value={newRole}
              onChange={(e) => setNewRole(e.target.value as typeof newRole)}>
              <option>viewer</option>
              <option>developer</option>
              <option>admin</option>
            </select>
          </div>
          <Button type="submit" pending={put.isPending} busyLabel="Saving…">Save role</Button>
        </fieldset>
        <ErrorBox error={put.error} />
      </form>
      <h2>Who has access (Kubernetes bindings)</h2>
      <ErrorBox error={access.error} />
      <ul>
        {access.data?.map((a) => (
          <li key={a.role}>
            <strong>{a.role}</strong> ({a.cluster_role}): {a.subjects.join(", ") || "nobody"}
          </li>
        ))}
      </ul>
    </section>
  );
}

type Override = {
  mode: "Pin" | "FreezeScaleDown" | "FreezeScaleUp";
  replicas?: number | null;
  expiresAt?: string | null;
  reason: string;
};

/** The workspace's ScalingPolicies with their manual override: set (with a reason and
 * an optional expiry) or clear. */
export function Scaling({ org, ws, role }: Ws & { role: string | null | undefined }) {
  const queries = useQueryClient();
  const policies = useResources(org, ws, "scalingpolicies");
  const [drafts, setDrafts] = useState<Record<string, Override & { until: string }>>({});
  const refresh = () => queries.invalidateQueries({ queryKey: keys.resources(org, ws, "scalingpolicies") });
  const set = useMutation({
    mutationFn: (name: string) => {
      const d = drafts[name] ?? { mode: "Pin", reason: "", until: "" };
      const body: Override = { mode: d.mode, reason: d.reason };
      if (d.mode === "Pin") body.replicas = Number(d.replicas ?? 1);
      if (d.until) body.expiresAt = new Date(d.until).toISOString();
      return ok(
        api.PUT("/api/v1/orgs/{org}/workspaces/{ws}/scalingpolicies/{name}/override", {
          params: { path: { org, ws, name } },
          body,
        }),
      );
    },
    onSuccess: refresh,
  });
  const clear = useMutation({
    mutationFn: (name: string) =>
      ok(
        api.DELETE("/api/v1/orgs/{org}/workspaces/{ws}/scalingpolicies/{name}/override", {
          params: { path: { org, ws, name } },
        }),
      ),
    onSuccess: refresh,
  });
  const can = wsCan(role, "scalingpolicies:update");
  const items = policies.data?.items ?? [];
  if (policies.isPending) return <Loading what="scaling policies" />;
  return (
    <>
      <h2>Scaling</h2>
      <ErrorBox error={policies.error ?? set.error ?? clear.error} />
      {items.length === 0 && <p>No ScalingPolicy in this workspace.</p>}
      {items.map((p) => {
        const name = meta(p).name;
        const sp = spec(p);
        const current = sp.override as Override | undefined;
        const d = drafts[name] ?? { mode: "Pin", replicas: 1, reason: "", until: "" };
        const edit = (patch: Partial<typeof d>) => setDrafts({ ...drafts, [name]: { ...d, ...patch } });
        return (
          <article key={name} className="card" aria-label={`Scaling policy ${name}`}>
            <h3>
              {name} → {String((sp.targetRef as Json)?.name ?? "")}
            </h3>
            <p>
              {String(sp.minReplicas ?? 1)}–{String(sp.maxReplicas)} replicas.{" "}
              {current
                ? `Override: ${current.mode}${current.replicas ? ` at ${current.replicas}` : ""}` +
                  `${current.expiresAt ? ` until ${when(current.expiresAt)}` : ""} — ${current.reason}`
                : "No override."}
            </p>
            <fieldset disabled={!can} className="decide">
              <select aria-label={`Override mode for ${name}`} value={d.mode}
                onChange={(e) => edit({ mode: e.target.value as Override["mode"] })}>
                <option>Pin</option>
                <option>FreezeScaleDown</option>
                <option>FreezeScaleUp</option>
              </select>
              {d.mode === "Pin" && (
                <input aria-label={`Replicas for ${name}`} type="number" min={0}
                  value={String(d.replicas ?? 1)}
                  onChange={(e) => edit({ replicas: Number(e.target.value) })} />
              )}
              <input aria-label={`Reason for ${name}`} placeholder="reason" value={d.reason}
                onChange={(e) => edit({ reason: e.target.value })} />
              <input aria-label={`Expires for ${name}`} type="datetime-local" value={d.until}
                onChange={(e) => edit({ until: e.target.value })} />
              <Button type="button" pending={set.isPending && set.variables === name}
                busyLabel="Setting…" onClick={() => set.mutate(name)}>
                Set override
              </Button>
              {current && (
                <Button type="button" pending={clear.isPending && clear.variables === name}
                  busyLabel="Clearing…" onClick={() => clear.mutate(name)}>
                  Clear
                </Button>
              )}
            </fieldset>
            {!can && <ReadOnlyNote role={role} action="override scaling" />}
          </article>
        );
      })}
    </>
  );
}
