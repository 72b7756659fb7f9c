import { useMutation } from "@tanstack/react-query";
import { useState } from "react";
import { api, ok, setSession } from "../api/client";
import { Link, navigate, useLocation } from "../router";
import { Button, ErrorBox, Field } from "../ui";

async function logIn(email: string, password: string) {
  setSession(await ok(api.POST("/api/v1/auth/login", { body: { email, password } })));
}

export function Login() {
  const { query } = useLocation();
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const login = useMutation({
    mutationFn: () => logIn(email, password),
    onSuccess: () => navigate(safeNext(query.get("next")), true),
  });
  return (
    <main className="auth" id="main">
      <h1>Sign in to Kaizen Studio</h1>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          login.mutate();
        }}
      >
        <Field label="Email" type="email" autoComplete="username" required value={email}
          onChange={(e) => setEmail(e.target.value)} />
        <Field label="Password" type="password" autoComplete="current-password" required
          value={password} onChange={(e) => setPassword(e.target.value)} />
        <ErrorBox error={login.error} />
        <Button type="submit" pending={login.isPending} busyLabel="Signing in…">
          Sign in
        </Button>
      </form>
      <p>
        No account? <Link to="/register">Register</Link>
      </p>
    </main>
  );
}

export function Register() {
  const [email, setEmail] = useState("");
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const register = useMutation({
    mutationFn: async () => {
      await ok(api.POST("/api/v1/auth/register", { body: { email, password, name } }));
      await logIn(email, password);
    },
    onSuccess: () => navigate("/orgs/new", true),
  });
  return (
    <main className="auth" id="main">
      <h1>Create your account</h1>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          register.mutate();
        }}
      >
        <Field label="Email" type="email" autoComplete="username" required value={email}
          onChange={(e) => setEmail(e.target.value)} />
        <Field label="Name" autoComplete="name" value={name}
          onChange={(e) => setName(e.target.value)} />
        <Field label="Password" type="password" autoComplete="new-password" required
          hint="At least 12 characters." value={password}
          onChange={(e) => setPassword(e.target.value)} />
        <ErrorBox error={register.error} />
        <Button type="submit" pending={register.isPending} busyLabel="Creating account…">
          Register
        </Button>
      </form>
      <p>
        Have an account? <Link to="/login">Sign in</Link>
      </p>
    </main>
  );
}

/** Only a path of this console (no other origin) after signing in. */
function safeNext(next: string | null): string {
  return next && next.startsWith("/") && !next.startsWith("//") ? next : "/";
}
