#!/usr/bin/env bash
# Install what a fresh machine lacks, idempotently and quickly when nothing is missing:
#   - Debian packages: PostgreSQL and Redis servers (tests and `make dev` run real ones);
#   - the Go toolchain check (the control plane is built from Go modules);
#   - this project with its test extras (pip, editable);
#   - Debian's chromium (the console's browser tests drive it; Playwright downloads no
#     browser) and the web console built from its lockfile (npm ci && npm run build),
#     when Node.js is present and the build is older than its sources.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v runuser >/dev/null || missing+=(util-linux)
command -v chromium >/dev/null || missing+=(chromium)
if ((${#missing[@]})); then
  if [[ "$(id -u)" == 0 ]]; then
    echo "[bootstrap] apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "[bootstrap] missing Debian packages: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

if ! command -v go >/dev/null; then
  echo "[bootstrap] Go >= 1.26 is needed to build the local control plane (or set KUBECONFIG to a cluster)" >&2
  [[ -n "${KUBECONFIG:-}" ]] || exit 1
fi

# Re-install only when the dependency list changed (pip's resolver takes ~10s even as a no-op).
stamp_dir="${XDG_CACHE_HOME:-$HOME/.cache}/kaizen-studio"
stamp="$stamp_dir/pip-$(cat pyproject.toml | sha256sum | cut -c1-16)-$("$PYTHON" -c 'import sys; print(sys.prefix.replace("/", "_"))')"
# The editable install must point at *this* checkout (a CI clone is not the dev tree).
here="$(pwd -P)"
if [[ ! -f "$stamp" ]] || ! "$PYTHON" -c "import kaizen_api, kopf, kubernetes, pytest, sys; sys.exit(not kaizen_api.__file__.startswith('$here/'))" 2>/dev/null; then
  echo "[bootstrap] pip install -e .[test]"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$PYTHON" -m pip install -q --disable-pip-version-check -e ".[test]"
  mkdir -p "$stamp_dir" && touch "$stamp"
fi

# The web console (console/): served by the facade at / from console/dist. Rebuilt only
# when a source, the lockfile or the build settings are newer than the last build.
if command -v npm >/dev/null; then
  # Dependencies from the lockfile (`make lint` type-checks with them), then the build.
  if [[ ! -f console/node_modules/.package-lock.json ]] ||
    [[ console/package-lock.json -nt console/node_modules/.package-lock.json ]]; then
    echo "[bootstrap] npm ci (console/)"
    (cd console && npm ci --no-audit --no-fund --loglevel=error)
  fi
  sources=(console/src console/index.html console/package.json console/package-lock.json
    console/vite.config.ts console/tsconfig.json console/scripts)
  if [[ ! -f console/dist/index.html ]] ||
    [[ -n "$(find "${sources[@]}" -newer console/dist/index.html -print -quit)" ]]; then
    echo "[bootstrap] npm run build (console/)"
    (cd console && npm run --silent build)
  fi
else
  echo "[bootstrap] no Node.js (>= 20.19): the web console is not built (docs/console.md)" >&2
fi
