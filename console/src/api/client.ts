// The typed client of the facade: paths and bodies come from schema.d.ts, generated
// from the facade's OpenAPI document (`kaizen-api openapi`, then `npm run generate`).
import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type Json = Record<string, unknown>;

/** The facade's RFC 9457 problem, with the per-field errors it lists for a bad body. */
export interface Problem {
  status: number;
  title: string;
  detail?: string;
  code?: string;
  errors?: { field: string; message: string }[];
  requestId?: string;
}

export class ApiError extends Error {
  constructor(public problem: Problem) {
    super(describe(problem));
  }
}

/** A problem in words: its title, its detail, and each field's message. */
export function describe(p: Problem): string {
  const parts = [p.title];
  if (p.detail) parts.push(p.detail);
  if (Array.isArray(p.detail)) parts.pop(); // FastAPI's own 422 lists errors in detail
  for (const e of p.errors ?? []) parts.push(`${e.field}: ${e.message}`);
  return parts.join(" — ");
}

// ------------------------------------------------------------------ session tokens
// Kept in sessionStorage: one browser tab's login survives a reload, not the tab.
const STORE = "kaizen.session";
interface Session {
  access: string;
  refresh: string;
}
let session: Session | null = (() => {
  try {
    return JSON.parse(sessionStorage.getItem(STORE) ?? "null") as Session | null;
  } catch {
    return null;
  }
})();
const listeners = new Set<() => void>();

export function signedIn(): boolean {
  return session !== null;
}
export function onSessionChange(fn: () => void): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
export function setSession(tokens: { access_token: string; refresh_token: string } | null) {
  session = tokens ? { access: tokens.access_token, refresh: tokens.refresh_token } : null;
  if (session) sessionStorage.setItem(STORE, JSON.stringify(session));
  else sessionStorage.removeItem(STORE);
  listeners.forEach((fn) => fn());
}
export function refreshToken(): string | null {
  return session?.refresh ?? null;
}

// One refresh at a time: refresh tokens rotate, and a second use of the same one is
// taken by the facade for a stolen token (it revokes the whole login).
let refreshing: Promise<boolean> | null = null;
async function refresh(): Promise<boolean> {
  const current = session;
  if (!current) return false;
  refreshing ??= (async () => {
    try {
      const r = await fetch("/api/v1/auth/refresh", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ refresh_token: current.refresh }),
      });
      if (!r.ok) {
        setSession(null);
        return false;
      }
      setSession(await r.json());
      return true;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

async function authFetch(request: Request): Promise<Response> {
  const retry = request.clone();
  const send = (r: Request) => {
    if (session) r.headers.set("authorization", `Bearer ${session.access}`);
    return fetch(r);
  };
  const response = await send(request);
  const auth = new URL(request.url).pathname.startsWith("/api/v1/auth/");
  if (response.status === 401 && !auth && session && (await refresh())) return send(retry);
  if (response.status === 401 && !auth) setSession(null);
  return response;
}

export const api = createClient<paths>({ baseUrl: location.origin, fetch: authFetch });

/** The data of a call, or an ApiError carrying the problem the facade answered. */
export async function ok<T>(
  call: Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  const { data, error, response } = await call;
  if (!response.ok) {
    const body = (error ?? {}) as Partial<Problem> & { detail?: unknown };
    let problem: Problem = {
      status: response.status,
      title: body.title ?? response.statusText ?? "Request failed",
      detail: typeof body.detail === "string" ? body.detail : undefined,
      code: body.code,
      errors: body.errors,
      requestId: body.requestId,
    };
    if (Array.isArray(body.detail)) {
      // FastAPI's request validation: [{loc, msg}] -> field messages
      problem = {
        ...problem,
        title: "The request is not valid",
        errors: (body.detail as { loc: (string | number)[]; msg: string }[]).map((e) => ({
          field: e.loc.filter((l) => l !== "body").join("."),
          message: e.msg,
        })),
      };
    }
    throw new ApiError(problem);
  }
  return data as T;
}
