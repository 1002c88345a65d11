#!/usr/bin/env bash
# kvae-serve alone (issue 30): build both wheels and check their metadata against setup.cfg, install ONLY the
# kvae-serve wheel (its requirements from the package index) into a fresh virtual environment where TensorFlow
# must not import, export a tiny model with kvae from the calling environment, serve the bundle from the fresh
# environment with `kvae-serve BUNDLE --port P`, and check GET /healthz and one POST /decode against Keras.
#
#   .ci/serve_alone.sh [WORK_DIR]      # run with the environment that has kvae[dev] active (.ci/run does)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-$(mktemp -d)}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
# the fresh environment sees nothing of this one (a PYTHONPATH pointing at a checkout, or the current directory
# on sys.path (python -I below), would leak kvae into it)
ALONE=(env -u PYTHONPATH -u PYTHONHOME -u PYTHONUSERBASE)
SERVER_PID=""
stop_server() {  # SIGTERM, then SIGKILL if it is still there after 10 s
  [ -n "$SERVER_PID" ] || return 0
  kill "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 20); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
trap stop_server EXIT

# 1. both wheels, and their metadata against setup.cfg (export/build/ is left by setuptools; .gitignore has it)
start=$(date +%s)
rm -rf "$WORK/wheels"
python -m pip wheel --quiet --no-deps -w "$WORK/wheels" . ./export
python .ci/check_wheels.py "$WORK/wheels"
echo "serve_alone: wheels built and checked in $(( $(date +%s) - start )) s"

# 2. a fresh environment with the kvae-serve wheel only; neither TensorFlow nor kvae may import there
start=$(date +%s)
rm -rf "$WORK/serve-venv"
python -m venv "$WORK/serve-venv"
"${ALONE[@]}" "$WORK/serve-venv/bin/python" -m pip install --quiet "$WORK"/wheels/kvae_serve-*.whl
"${ALONE[@]}" "$WORK/serve-venv/bin/python" -I - <<'PY'
import importlib.util, sys
present = [m for m in ("tensorflow", "keras", "kvae") if importlib.util.find_spec(m) is not None]
if present:
    sys.exit(f"serve_alone: error: the kvae-serve environment can import {', '.join(present)}")
import kvae_serve.server  # noqa: F401  (imports with its declared requirements only)
PY
echo "serve_alone: fresh environment with kvae-serve alone in $(( $(date +%s) - start )) s"

# 3. a tiny model, exported by kvae from this environment, and the decoder's answer in Keras for three codes
start=$(date +%s)
rm -rf "$WORK/run" "$WORK/bundle"
kvae train --model vae --dataset digits --epochs 1 --limit 200 --out "$WORK/run" >/dev/null
kvae export "$WORK/run" --out "$WORK/bundle" >/dev/null
python - "$WORK" <<'PY'
import json, os, sys
import kvae  # noqa: F401  (first: quiets TensorFlow's logging; registers the model classes with Keras)
import keras, numpy as np
work = sys.argv[1]
model = keras.models.load_model(os.path.join(work, "run", "model.keras"))
z = np.random.default_rng(0).standard_normal((3, model.latent_dim)).astype("float32")
json.dump({"z": z.tolist(), "mean": np.asarray(model.decode(z).mean()).tolist()},
          open(os.path.join(work, "expected.json"), "w"))
PY
echo "serve_alone: model trained, exported and decoded in Keras in $(( $(date +%s) - start )) s"

# 4. serve it from the fresh environment; /healthz, then one /decode compared with Keras
PORT=$(python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
# env execs kvae-serve, so $! is the server itself
"${ALONE[@]}" "$WORK/serve-venv/bin/kvae-serve" "$WORK/bundle" --port "$PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
python - "$WORK" "$PORT" <<'PY'
import json, os, sys, time, urllib.request
import numpy as np
work, port = sys.argv[1], int(sys.argv[2])
url = f"http://127.0.0.1:{port}"
deadline = time.monotonic() + 60
while True:
    try:
        health = json.load(urllib.request.urlopen(f"{url}/healthz", timeout=5))
        break
    except OSError as err:
        if time.monotonic() > deadline:
            log = open(os.path.join(work, "server.log")).read()[-2000:]
            sys.exit(f"serve_alone: error: no answer from {url}/healthz within 60 s ({err}); server log:\n{log}")
        time.sleep(0.5)
expected = json.load(open(os.path.join(work, "expected.json")))
assert health["status"] == "ok", health
request = urllib.request.Request(f"{url}/decode", data=json.dumps({"z": expected["z"]}).encode(),
                                 headers={"Content-Type": "application/json"})
answer = json.load(urllib.request.urlopen(request, timeout=30))
served = np.asarray(answer["probs"] if "probs" in answer else answer["loc"])
mean = np.asarray(expected["mean"])
assert served.shape == mean.shape, (served.shape, mean.shape)
err = float(np.abs(served - mean).max())
assert err <= 1e-5, f"/decode differs from Keras by {err}"
print(f"serve_alone: kvae-serve alone served the bundle on port {port}: /decode of {len(expected['z'])} codes "
      f"{list(served.shape)} matches Keras to {err:.1e}")
PY
stop_server
echo "serve_alone: ok"
