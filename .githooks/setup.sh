#!/usr/bin/env bash
# Install the project's git hooks: makes them executable and points core.hooksPath at .githooks
# (for this clone only). Run from anywhere inside the work tree: bash .githooks/setup.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(git -C "$here" rev-parse --show-toplevel)

chmod +x "$here/pre-commit" "$here/commit-msg" "$here/pre-push"
git -C "$top" config core.hooksPath .githooks
echo "git hooks installed: core.hooksPath=.githooks (pre-commit, commit-msg, pre-push)"
