import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// `npm run dev`: the dev server proxies the API to a running facade
// ($KAIZEN_API_URL, default the facade `make dev` starts on 127.0.0.1:18000).
const api = process.env.KAIZEN_API_URL ?? "http://127.0.0.1:18000";

export default defineConfig({
  plugins: [react()],
  server: {
    port: 5173,
    proxy: { "/api": api, "/.well-known": api, "/healthz": api },
  },
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false },
});
