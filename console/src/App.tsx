import { useQueryClient } from "@tanstack/react-query";
import { useEffect, useSyncExternalStore } from "react";
import { api, onSessionChange, refreshToken, setSession, signedIn } from "./api/client";
import { useMe, useOrgs, useWorkspaces } from "./data";
import { Login, Register } from "./pages/Auth";
import { Audit, Keys, Members, NewOrg, OrgHome } from "./pages/Org";
import {
  AgentDetail,
  Agents,
  Gateways,
  NewAgent,
  Promotions,
  WorkspaceMembers,
} from "./pages/Workspace";
import { orgCan } from "./roles";
import { Link, Redirect, match, navigate, useLocation } from "./router";
import { Loading } from "./ui";

export function App() {
  const authed = useSyncExternalStore(onSessionChange, signedIn);
  const { path } = useLocation();
  if (!authed) {
    if (path === "/register") return <Register />;
    if (path !== "/login") return <Redirect to={`/login?next=${encodeURIComponent(path)}`} />;
    return <Login />;
  }
  if (path === "/login" || path === "/register") return <Redirect to="/" />;
  return <Shell path={path} />;
}

const ORG_PAGES: [string, (p: { org: string }) => React.ReactNode][] = [
  ["/o/:org", (p) => <OrgHome {...p} />],
  ["/o/:org/members", (p) => <Members {...p} />],
  ["/o/:org/keys", (p) => <Keys {...p} />],
  ["/o/:org/audit", (p) => <Audit {...p} />],
];
type WsParams = { org: string; ws: string };
const WS_PAGES: [string, (p: WsParams & { name: string }) => React.ReactNode][] = [
  ["/o/:org/w/:ws", (p) => <Agents {...p} />],
  ["/o/:org/w/:ws/agents/new", (p) => <NewAgent {...p} />],
  ["/o/:org/w/:ws/agents/:name", (p) => <AgentDetail {...p} />],
  ["/o/:org/w/:ws/gateways", (p) => <Gateways {...p} />],
  ["/o/:org/w/:ws/promotions", (p) => <Promotions {...p} />],
  ["/o/:org/w/:ws/members", (p) => <WorkspaceMembers {...p} />],
];

function page(path: string) {
  if (path === "/orgs/new") return { node: <NewOrg /> };
  for (const [pattern, render] of WS_PAGES) {
    const m = match(pattern, path);
    if (m) return { node: render(m as WsParams & { name: string }), org: m.org, ws: m.ws };
  }
  for (const [pattern, render] of ORG_PAGES) {
    const m = match(pattern, path);
    if (m) return { node: render(m as { org: string }), org: m.org };
  }
  return null;
}

function Shell({ path }: { path: string }) {
  const orgs = useOrgs();
  const found = page(path);
  if (path === "/") {
    if (orgs.isPending) return <Loading what="your organizations" />;
    const first = orgs.data?.[0];
    return <Redirect to={first ? `/o/${first.slug}` : "/orgs/new"} />;
  }
  return (
    <div className="shell">
      <Header org={found?.org} ws={found?.ws} />
      <div className="body">
        {found?.org && <Nav org={found.org} ws={found.ws} path={path} />}
        <main id="main">{found ? found.node : <p>No such page: {path}</p>}</main>
      </div>
    </div>
  );
}

function Header({ org, ws }: { org?: string; ws?: string }) {
  const me = useMe();
  const orgs = useOrgs();
  const queries = useQueryClient();
  const signOut = async () => {
    const token = refreshToken();
    if (token) await api.POST("/api/v1/auth/logout", { body: { refresh_token: token } });
    setSession(null);
    queries.clear();
  };
  return (
    <header className="top">
      <Link to="/" className="brand">
        Kaizen Studio
      </Link>
      <label className="switch">
        <span>Organization</span>
        <select
          aria-label="Organization"
          value={org ?? ""}
          onChange={(e) => navigate(e.target.value ? `/o/${e.target.value}` : "/orgs/new")}
        >
          {!org && <option value="">—</option>}
          {orgs.data?.map((o) => (
            <option key={o.slug} value={o.slug}>
              {o.name} ({o.slug})
            </option>
          ))}
          <option value="">+ New organization…</option>
        </select>
      </label>
      {org && <WorkspaceSwitch org={org} ws={ws} />}
      <span className="spacer" />
      <span className="who">{me.data?.email}</span>
      <button type="button" onClick={signOut}>
        Sign out
      </button>
    </header>
  );
}

function WorkspaceSwitch({ org, ws }: { org: string; ws?: string }) {
  const workspaces = useWorkspaces(org);
  return (
    <label className="switch">
      <span>Workspace</span>
      <select
        aria-label="Workspace"
        value={ws ?? ""}
        onChange={(e) => navigate(e.target.value ? `/o/${org}/w/${e.target.value}` : `/o/${org}`)}
      >
        <option value="">{workspaces.isPending ? "Loading…" : "— all —"}</option>
        {workspaces.data?.map((w) => (
          <option key={w.name} value={w.name}>
            {w.name}
            {w.role ? ` (${w.role})` : ""}
          </option>
        ))}
      </select>
    </label>
  );
}

function Nav({ org, ws, path }: { org: string; ws?: string; path: string }) {
  const role = useOrgs().data?.find((o) => o.slug === org)?.role;
  const item = (to: string, label: string) => (
    <li>
      <Link to={to} aria-current={path === to ? "page" : undefined}>
        {label}
      </Link>
    </li>
  );
  useEffect(() => {
    document.title = `Kaizen Studio · ${ws ? `${org}/${ws}` : org}`;
  }, [org, ws]);
  return (
    <nav aria-label="Sections">
      <ul>
        {item(`/o/${org}`, "Workspaces")}
        {item(`/o/${org}/members`, "Members & teams")}
        {item(`/o/${org}/keys`, "API keys")}
        {orgCan(role, "audit:read") && item(`/o/${org}/audit`, "Audit log")}
      </ul>
      {ws && (
        <>
          <h2 className="nav-ws">{ws}</h2>
          <ul>
            {item(`/o/${org}/w/${ws}`, "Agents")}
            {item(`/o/${org}/w/${ws}/gateways`, "Gateways")}
            {item(`/o/${org}/w/${ws}/promotions`, "Promotions")}
            {item(`/o/${org}/w/${ws}/members`, "Members")}
          </ul>
        </>
      )}
    </nav>
  );
}
