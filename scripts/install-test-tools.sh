#!/usr/bin/env bash
# Tools some tests drive besides Python, installed when missing: git-lfs (LFS datasets are read through
# `git lfs`) and promptfoo (tests/pipeline/formats/test_promptfoo_parity.py runs `promptfoo eval` beside
# evalbot on the same stub; bench/promptfoo/install.sh puts it in $PF). Without them those tests skip,
# and CI fails on a skip (tests/conftest.py).
set -euo pipefail
apt_install() { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; }
git lfs version >/dev/null 2>&1 || apt_install git-lfs
command -v npm >/dev/null || apt_install nodejs npm
"$(dirname "$0")/../bench/promptfoo/install.sh" >/dev/null
