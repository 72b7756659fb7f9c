// What the caller's role allows, from the facade's own role tables (roles.json is
// written by `kaizen-api openapi` from kaizen_api.server.permissions). The console
// only hides or disables actions with it: the facade and Kubernetes still decide.
import roles from "./api/roles.json";

type Table = Record<string, string[]>;

/** True when one of ``granted`` covers ``needed`` (``agents:create``). */
export function grants(granted: string[], needed: string): boolean {
  const [resource, verb] = needed.split(":");
  return granted.some((p) => {
    const [r, v] = p.split(":");
    return (r === "*" || r === resource) && (v === "*" || v === verb);
  });
}

export function orgCan(role: string | null | undefined, permission: string): boolean {
  return !!role && grants((roles.org as Table)[role] ?? [], permission);
}

export function wsCan(role: string | null | undefined, permission: string): boolean {
  return !!role && grants((roles.workspace as Table)[role] ?? [], permission);
}

export const ORG_ROLES = Object.keys(roles.org);
export const WORKSPACE_ROLES = Object.keys(roles.workspace);
