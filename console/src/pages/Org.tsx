import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { api, ok, type Schemas } from "../api/client";
import { keys, useOrgs, useWorkspaces } from "../data";
import { ORG_ROLES, WORKSPACE_ROLES, orgCan } from "../roles";
import { Link, navigate } from "../router";
import { Button, ErrorBox, Field, Loading, when } from "../ui";

/** The caller's role in ``org`` (from the organizations list). */
export function useOrgRole(org: string): string | undefined {
  return useOrgs().data?.find((o) => o.slug === org)?.role;
}

export function NewOrg() {
  const queries = useQueryClient();
  const [slug, setSlug] = useState("");
  const [name, setName] = useState("");
  const create = useMutation({
    mutationFn: () => ok(api.POST("/api/v1/orgs", { body: { slug, name, plan: "free" } })),
    onSuccess: async (o) => {
      await queries.invalidateQueries({ queryKey: keys.orgs });
      navigate(`/o/${o.slug}`);
    },
  });
  return (
    <section>
      <h1>New organization</h1>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          create.mutate();
        }}
      >
        <Field label="Slug" required value={slug} onChange={(e) => setSlug(e.target.value)}
          hint="A DNS label of at most 20 characters: lowercase letters, digits and dashes." />
        <Field label="Display name" required value={name}
          onChange={(e) => setName(e.target.value)} />
        <ErrorBox error={create.error} />
        <Button type="submit" pending={create.isPending} busyLabel="Creating…">
          Create organization
        </Button>
      </form>
    </section>
  );
}

export function OrgHome({ org }: { org: string }) {
  const current = useOrgs().data?.find((o) => o.slug === org);
  const role = current?.role;
  const workspaces = useWorkspaces(org);
  const queries = useQueryClient();
  const [name, setName] = useState("");
  const create = useMutation({
    mutationFn: () =>
      ok(api.POST("/api/v1/orgs/{org}/workspaces", { params: { path: { org } }, body: { name } })),
    onSuccess: async (w) => {
      await queries.invalidateQueries({ queryKey: keys.workspaces(org) });
      navigate(`/o/${org}/w/${w.name}`);
    },
  });
  const canCreate = orgCan(role, "workspaces:create");
  return (
    <section>
      <h1>Workspaces of {org}</h1>
      <p className="muted">
        Plan: <strong>{current?.plan ?? "…"}</strong> · your role in this organization:{" "}
        <strong>{role ?? "…"}</strong>
      </p>
      <ErrorBox error={workspaces.error} />
      {workspaces.isPending ? (
        <Loading what="workspaces" />
      ) : (
        <table>
          <thead>
            <tr>
              <th>Workspace</th>
              <th>Namespace</th>
              <th>Your role</th>
            </tr>
          </thead>
          <tbody>
            {workspaces.data?.map((w) => (
              <tr key={w.name}>
                <td>
                  <Link to={`/o/${org}/w/${w.name}`}>{w.name}</Link>
                </td>
                <td>
                  <code>{w.namespace}</code>
                </td>
                <td>{w.role ?? "no access"}</td>
              </tr>
            ))}
            {workspaces.data?.length === 0 && (
              <tr>
                <td colSpan={3}>No workspace yet.</td>
              </tr>
            )}
          </tbody>
        </table>
      )}
      {canCreate && (
        <form
          className="inline"
          onSubmit={(e) => {
            e.preventDefault();
            create.mutate();
          }}
        >
          <h2>New workspace</h2>
          <Field label="Workspace name" required value={name}
            onChange={(e) => setName(e.target.value)}
            hint="A DNS label of at most 30 characters." />
          <Button type="submit" pending={create.isPending} busyLabel="Creating workspace…">
            Create workspace
          </Button>
          <ErrorBox error={create.error} />
        </form>
      )}
    </section>
  );
}

export function Members({ org }: { org: string }) {
  const role = useOrgRole(org);
  const queries = useQueryClient();
  const path = { params: { path: { org } } };
  const members = useQuery({
    queryKey: ["members", org],
    queryFn: () => ok(api.GET("/api/v1/orgs/{org}/members", path)),
  });
  const teams = useQuery({
    queryKey: ["teams", org],
    queryFn: () => ok(api.GET("/api/v1/orgs/{org}/teams", path)),
  });
  const canManage = orgCan(role, "members:create");
  const refresh = () => queries.invalidateQueries({ queryKey: ["members", org] });
  const [email, setEmail] = useState("");
  const [newRole, setNewRole] = useState("developer");
  const add = useMutation({
    mutationFn: () =>
      ok(
        api.POST("/api/v1/orgs/{org}/members", {
          ...path,
          body: { email, role: newRole as Schemas["MemberIn"]["role"] },
        }),
      ),
    onSuccess: refresh,
  });
  const change = useMutation({
    mutationFn: (m: { user_id: string; email: string; role: string }) =>
      ok(
        api.PUT("/api/v1/orgs/{org}/members/{user_id}", {
          params: { path: { org, user_id: m.user_id } },
          body: { email: m.email, role: m.role as Schemas["MemberIn"]["role"] },
        }),
      ),
    onSuccess: refresh,
  });
  const remove = useMutation({
    mutationFn: (user_id: string) =>
      ok(api.DELETE("/api/v1/orgs/{org}/members/{user_id}", { params: { path: { org, user_id } } })),
    onSuccess: refresh,
  });
  const invite = useMutation({
    mutationFn: () =>
      ok(
        api.POST("/api/v1/orgs/{org}/invitations", {
          ...path,
          body: { email, role: newRole as Schemas["InvitationIn"]["role"] },
        }),
      ),
  });
  const [team, setTeam] = useState("");
  const createTeam = useMutation({
    mutationFn: () => ok(api.POST("/api/v1/orgs/{org}/teams", { ...path, body: { name: team } })),
    onSuccess: () => queries.invalidateQueries({ queryKey: ["teams", org] }),
  });
  const [teamMember, setTeamMember] = useState<Record<string, string>>({});
  const addToTeam = useMutation({
    mutationFn: (t: string) =>
      ok(
        api.POST("/api/v1/orgs/{org}/teams/{team}/members", {
          params: { path: { org, team: t } },
          body: { email: teamMember[t] ?? "" },
        }),
      ),
    onSuccess: () => queries.invalidateQueries({ queryKey: ["teams", org] }),
  });
  return (
    <section>
      <h1>Members of {org}</h1>
      <ErrorBox error={members.error ?? change.error ?? remove.error} />
      {members.isPending ? (
        <Loading what="members" />
      ) : (
        <table>
          <thead>
            <tr>
              <th>Email</th>
              <th>Role</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {members.data?.map((m) => (
              <tr key={m.user_id}>
                <td>{m.email}</td>
                <td>
                  <select aria-label={`Role of ${m.email}`} value={m.role}
                    disabled={!orgCan(role, "members:update") || change.isPending}
                    onChange={(e) => change.mutate({ ...m, role: e.target.value })}>
                    {ORG_ROLES.map((r) => (
                      <option key={r}>{r}</option>
                    ))}
                  </select>
                </td>
                <td>
                  <Button type="button" disabled={!orgCan(role, "members:delete")}
                    pending={remove.isPending && remove.variables === m.user_id}
                    onClick={() => remove.mutate(m.user_id)}>
                    Remove
                  </Button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {canManage && (
        <form className="inline" onSubmit={(e) => e.preventDefault()}>
          <h2>Add or invite someone</h2>
          <Field label="Member email" type="email" required value={email}
            onChange={(e) => setEmail(e.target.value)} />
          <div className="field">
            <label htmlFor="new-role">Role</label>
            <select id="new-role" value={newRole} onChange={(e) => setNewRole(e.target.value)}>
              {ORG_ROLES.map((r) => (
                <option key={r}>{r}</option>
              ))}
            </select>
          </div>
          <Button type="button" pending={add.isPending} onClick={() => add.mutate()}>
            Add existing user
          </Button>{" "}
          <Button type="button" pending={invite.isPending} onClick={() => invite.mutate()}>
            Invite by email
          </Button>
          <ErrorBox error={add.error ?? invite.error} />
          {invite.data && (
            <div className="secret" role="status">
              <p>
                Invitation for {invite.data.email} (expires {when(invite.data.expires_at)}). Send
                this token to them — it is shown only now:
              </p>
              <code>{invite.data.token}</code>
            </div>
          )}
        </form>
      )}
      <h2>Teams</h2>
      <ErrorBox error={teams.error ?? addToTeam.error} />
      <ul className="teams">
        {teams.data?.map((t) => (
          <li key={t.name}>
            <strong>{t.name}</strong>: {t.members.join(", ") || "no members"}
            {orgCan(role, "teams:update") && (
              <span className="inline-add">
                <input aria-label={`Add to team ${t.name}`} type="email" placeholder="email"
                  value={teamMember[t.name] ?? ""}
                  onChange={(e) => setTeamMember({ ...teamMember, [t.name]: e.target.value })} />
                <Button type="button" pending={addToTeam.isPending && addToTeam.variables === t.name}
                  onClick={() => addToTeam.mutate(t.name)}>
                  Add
                </Button>
              </span>
            )}
          </li>
        ))}
      </ul>
      {orgCan(role, "teams:create") && (
        <form className="inline" onSubmit={(e) => {
          e.preventDefault();
          createTeam.mutate();
        }}>
          <Field label="Team name" required value={team} onChange={(e) => setTeam(e.target.value)} />
          <Button type="submit" pending={createTeam.isPending}>Create team</Button>
          <ErrorBox error={createTeam.error} />
        </form>
      )}
      <p className="muted">
        Workspace roles ({WORKSPACE_ROLES.join(", ")}) are given per workspace; organization
        owners and admins are admins of every workspace.
      </p>
    </section>
  );
}

export function Keys({ org }: { org: string }) {
  const role = useOrgRole(org);
  const queries = useQueryClient();
  const list = useQuery({
    queryKey: ["keys", org],
    queryFn: () => ok(api.GET("/api/v1/orgs/{org}/keys", { params: { path: { org } } })),
  });
  const workspaces = useWorkspaces(org);
  const [name, setName] = useState("");
  const [workspace, setWorkspace] = useState("");
  const [permissions, setPermissions] = useState("agents:read");
  const [days, setDays] = useState("90");
  const create = useMutation({
    mutationFn: () =>
      ok(
        api.POST("/api/v1/orgs/{org}/keys", {
          params: { path: { org } },
          body: {
            name,
            workspace: workspace || null,
            permissions: permissions.split(/[\s,]+/).filter(Boolean),
            expires_in_days: days ? Number(days) : null,
          },
        }),
      ),
    onSuccess: () => queries.invalidateQueries({ queryKey: ["keys", org] }),
  });
  const revoke = useMutation({
    mutationFn: (key_id: string) =>
      ok(api.DELETE("/api/v1/orgs/{org}/keys/{key_id}", { params: { path: { org, key_id } } })),
    onSuccess: () => queries.invalidateQueries({ queryKey: ["keys", org] }),
  });
  const canCreate = orgCan(role, "keys:create");
  return (
    <section>
      <h1>API keys</h1>
      <ErrorBox error={list.error ?? revoke.error} />
      {create.data && (
        <div className="secret" role="status" data-testid="new-key">
          <p>
            Your new key <strong>{create.data.name}</strong>. Copy it now: it is shown only this
            once (only a hash is kept).
          </p>
          <code>{create.data.key}</code>{" "}
          <button type="button" onClick={() => navigator.clipboard?.writeText(create.data.key)}>
            Copy
          </button>{" "}
          <button type="button" onClick={() => create.reset()}>
            I have saved it
          </button>
        </div>
      )}
      {list.isPending ? (
        <Loading what="keys" />
      ) : (
        <table>
          <thead>
            <tr>
              <th>Name</th>
              <th>Prefix</th>
              <th>Workspace</th>
              <th>Permissions</th>
              <th>Expires</th>
              <th>Last used</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {list.data?.map((k) => (
              <tr key={k.id} className={k.revoked_at ? "revoked" : ""}>
                <td>{k.name}</td>
                <td>
                  <code>{k.prefix}</code>
                </td>
                <td>{k.workspace ?? "all"}</td>
                <td>{k.permissions.join(", ")}</td>
                <td>{when(k.expires_at)}</td>
                <td>{when(k.last_used_at)}</td>
                <td>
                  {k.revoked_at ? (
                    `revoked ${when(k.revoked_at)}`
                  ) : (
                    <Button type="button" disabled={!orgCan(role, "keys:delete")}
                      pending={revoke.isPending && revoke.variables === k.id}
                      onClick={() => revoke.mutate(k.id)}>
                      Revoke
                    </Button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <form className="inline" onSubmit={(e) => {
        e.preventDefault();
        create.mutate();
      }}>
        <h2>New key</h2>
        <fieldset disabled={!canCreate}>
          {!canCreate && <p className="muted">Your role ({role}) cannot create keys.</p>}
          <Field label="Key name" required value={name} onChange={(e) => setName(e.target.value)} />
          <div className="field">
            <label htmlFor="key-ws">Workspace</label>
            <select id="key-ws" value={workspace} onChange={(e) => setWorkspace(e.target.value)}>
              <option value="">every workspace</option>
              {workspaces.data?.map((w) => (
                <option key={w.name}>{w.name}</option>
              ))}
            </select>
          </div>
          <Field label="Permissions" value={permissions}
            onChange={(e) => setPermissions(e.target.value)}
            hint="Comma-separated, e.g. agents:read, agents:* (never more than your role)." />
          <Field label="Expires in days" type="number" min={1} max={3650} value={days}
            onChange={(e) => setDays(e.target.value)} />
          <Button type="submit" pending={create.isPending} busyLabel="Creating key…">
            Create key
          </Button>
        </fieldset>
        <ErrorBox error={create.error} />
      </form>
    </section>
  );
}

export function Audit({ org }: { org: string }) {
  const [filters, setFilters] = useState({ actor: "", action: "", outcome: "", since: "" });
  const [applied, setApplied] = useState(filters);
  const [offset, setOffset] = useState(0);
  const limit = 50;
  const records = useQuery({
    queryKey: ["audit", org, applied, offset],
    queryFn: () =>
      ok(
        api.GET("/api/v1/orgs/{org}/audit", {
          params: {
            path: { org },
            query: {
              actor: applied.actor || undefined,
              action: applied.action || undefined,
              outcome: applied.outcome ? Number(applied.outcome) : undefined,
              since: applied.since ? new Date(applied.since).toISOString() : undefined,
              limit,
              offset,
            },
          },
        }),
      ),
    refetchInterval: 10_000,
  });
  return (
    <section>
      <h1>Audit log</h1>
      <form className="filters" onSubmit={(e) => {
        e.preventDefault();
        setOffset(0);
        setApplied(filters);
      }}>
        <Field label="Actor" value={filters.actor}
          onChange={(e) => setFilters({ ...filters, actor: e.target.value })} />
        <Field label="Action" placeholder="POST or a path" value={filters.action}
          onChange={(e) => setFilters({ ...filters, action: e.target.value })} />
        <Field label="Outcome" type="number" placeholder="e.g. 403" value={filters.outcome}
          onChange={(e) => setFilters({ ...filters, outcome: e.target.value })} />
        <Field label="Since" type="datetime-local" value={filters.since}
          onChange={(e) => setFilters({ ...filters, since: e.target.value })} />
        <Button type="submit" pending={records.isFetching}>Filter</Button>
      </form>
      <ErrorBox error={records.error} />
      {records.isPending ? (
        <Loading what="the audit log" />
      ) : (
        <table>
          <thead>
            <tr>
              <th>Time</th>
              <th>Actor</th>
              <th>Action</th>
              <th>Resource</th>
              <th>Outcome</th>
              <th>Request</th>
            </tr>
          </thead>
          <tbody>
            {records.data?.map((r) => (
              <tr key={r.id}>
                <td>{when(r.time)}</td>
                <td>
                  {r.actor}
                  {r.key_id ? ` (key ${r.key_id.slice(0, 8)})` : ""}
                </td>
                <td>{r.action}</td>
                <td>
                  <code>{r.resource}</code>
                </td>
                <td className={r.outcome >= 400 ? "bad" : ""}>{r.outcome}</td>
                <td>
                  <code>{r.request_id.slice(0, 12)}</code>
                </td>
              </tr>
            ))}
            {records.data?.length === 0 && (
              <tr>
                <td colSpan={6}>No record matches.</td>
              </tr>
            )}
          </tbody>
        </table>
      )}
      <div className="pager">
        <button type="button" disabled={offset === 0} onClick={() => setOffset(offset - limit)}>
          Newer
        </button>
        <button type="button" disabled={(records.data?.length ?? 0) < limit}
          onClick={() => setOffset(offset + limit)}>
          Older
        </button>
      </div>
    </section>
  );
}
