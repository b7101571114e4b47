#!/usr/bin/env bash
# Headless Chromium for tests/orchestrator/cluster/test_jobs.py, which renders the MLflow UI: Debian's own `chromium` package
# (the browser cannot be downloaded any other way here). Needs root; does nothing when chromium is there.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
chromium --version
