// Server state shared by the pages (TanStack Query keys in one place).
import { useQuery } from "@tanstack/react-query";
import { api, ok, type Json, type Schemas } from "./api/client";

export const POLL_MS = 3_000; // live pages re-read the state this often

export const keys = {
  me: ["me"] as const,
  orgs: ["orgs"] as const,
  workspaces: (org: string) => ["workspaces", org] as const,
  resources: (org: string, ws: string, kind: string) => ["resources", org, ws, kind] as const,
  resource: (org: string, ws: string, kind: string, name: string) =>
    ["resources", org, ws, kind, name] as const,
};

export function useMe() {
  return useQuery({
    queryKey: keys.me,
    queryFn: () => ok(api.GET("/api/v1/auth/me")),
  });
}

export function useOrgs() {
  return useQuery({ queryKey: keys.orgs, queryFn: () => ok(api.GET("/api/v1/orgs")) });
}

export function useWorkspaces(org: string) {
  return useQuery({
    queryKey: keys.workspaces(org),
    queryFn: () => ok(api.GET("/api/v1/orgs/{org}/workspaces", { params: { path: { org } } })),
  });
}

export type Kind = Schemas["Kind"];

export function useResources(org: string, ws: string, kind: Kind, poll = true) {
  return useQuery({
    queryKey: keys.resources(org, ws, kind),
    queryFn: () =>
      ok(
        api.GET("/api/v1/orgs/{org}/workspaces/{ws}/{kind}", {
          params: { path: { org, ws, kind }, query: { limit: 500 } },
        }),
      ),
    refetchInterval: poll ? POLL_MS : false,
  });
}

export function useResource(org: string, ws: string, kind: Kind, name: string) {
  return useQuery({
    queryKey: keys.resource(org, ws, kind, name),
    queryFn: () =>
      ok(
        api.GET("/api/v1/orgs/{org}/workspaces/{ws}/{kind}/{name}", {
          params: { path: { org, ws, kind, name } },
        }),
      ) as Promise<Json>,
    refetchInterval: POLL_MS,
  });
}
