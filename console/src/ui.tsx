// Shared pieces: a problem shown where it happened, buttons that show progress,
// labelled fields, and a resource's Ready condition.
import type { ButtonHTMLAttributes, InputHTMLAttributes, ReactNode } from "react";
import { ApiError, type Json } from "./api/client";

export function ErrorBox({ error }: { error: unknown }) {
  if (!error) return null;
  const problem = error instanceof ApiError ? error.problem : null;
  return (
    <div className="error" role="alert">
      <strong>{problem ? problem.title : "Something went wrong"}</strong>
      {problem?.detail && <p>{problem.detail}</p>}
      {!problem && <p>{String((error as Error)?.message ?? error)}</p>}
      {problem?.errors && problem.errors.length > 0 && (
        <ul>
          {problem.errors.map((e, i) => (
            <li key={i}>
              <code>{e.field}</code>: {e.message}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

/** A button that shows its action in progress (and cannot be pressed twice meanwhile). */
export function Button(
  props: ButtonHTMLAttributes<HTMLButtonElement> & { pending?: boolean; busyLabel?: string },
) {
  const { pending, busyLabel, children, disabled, ...rest } = props;
  return (
    <button {...rest} disabled={disabled || pending} aria-busy={pending || undefined}>
      {pending ? (busyLabel ?? "Working…") : children}
    </button>
  );
}

export function Field(
  props: InputHTMLAttributes<HTMLInputElement> & { label: string; hint?: ReactNode },
) {
  const { label, hint, id, ...rest } = props;
  const fieldId = id ?? `f-${label.toLowerCase().replace(/\W+/g, "-")}`;
  return (
    <div className="field">
      <label htmlFor={fieldId}>{label}</label>
      <input id={fieldId} {...rest} />
      {hint && <small>{hint}</small>}
    </div>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p className="muted" role="status">
      Loading {what}…
    </p>
  );
}

type Condition = { type?: string; status?: string; reason?: string; message?: string };

export function readyOf(obj: Json): Condition | undefined {
  const status = (obj.status ?? {}) as { conditions?: Condition[] };
  return status.conditions?.find((c) => c.type === "Ready");
}

export function ReadyBadge({ obj }: { obj: Json }) {
  const ready = readyOf(obj);
  const state = ready?.status === "True" ? "ready" : ready ? "not-ready" : "pending";
  const text = state === "ready" ? "Ready" : state === "pending" ? "Pending" : "Not ready";
  return (
    <span className={`badge ${state}`} title={ready?.message ?? ""}>
      {text}
      {ready?.reason && state !== "ready" ? ` (${ready.reason})` : ""}
    </span>
  );
}

export function meta(obj: Json): { name: string; resourceVersion?: string; creationTimestamp?: string } {
  return (obj.metadata ?? { name: "" }) as { name: string };
}

export function when(iso: string | null | undefined): string {
  return iso ? new Date(iso).toLocaleString() : "—";
}
