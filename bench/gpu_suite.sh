#!/usr/bin/env bash
# One prepared check of every GPU path, at most ~8 minutes on one GPU; writes one JSON of figures.
#
#   bench/gpu_suite.sh [--out FILE.json]            on a GPU host (ViT-B-32, random weights, generated data)
#   bench/gpu_suite.sh --smoke [--out FILE.json]    the same steps at tiny sizes on CPU (run by the test suite)
#
# Steps (each under its own time limit; a failed step is recorded and the others still run; exit 1 if any failed):
#   encoder      bench/encoder.py: prompted sketch/photo branches vs bare open_clip (bf16 autocast on CUDA)
#   search       bench/search.py: FAISS at 1M vectors, the auto index searched on CPU and on the GPU(s)
#   index_build  bench/index_build.py: the real builder on generated JPEGs (GPU encoder, GPU IVF training)
#   training     bench/training_steps.py: 200 AMP steps of the real training loop (ViT-B-32)
#   serve        bench/serve.py: the service on the GPU vs the in-process path, and an index swap under load
# Environment: PYTHON (default: python3), SBIR_GPU_SUITE_WORKERS (DataLoader workers, default min(8, CPUs)).
set -uo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
OUT=bench/gpu_suite.json
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --out) OUT="$2"; shift ;;
        *) echo "usage: bench/gpu_suite.sh [--smoke] [--out FILE.json]" >&2; exit 2 ;;
    esac
    shift
done
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 SBIR_PRETRAINED=none
unset SBIR_CHECKPOINT
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-suite-XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
CPUS="$(nproc 2>/dev/null || echo 2)"
WORKERS="${SBIR_GPU_SUITE_WORKERS:-$(( CPUS < 8 ? CPUS : 8 ))}"

if [ "$SMOKE" = 1 ]; then
    DEVICE=cpu; BACKBONE=sbir-tiny; WORKERS=0
    ENCODER_ARGS=(--batch-sizes 1,4 --min-seconds 0.05 --min-reps 2); ENCODER_LIMIT=300
    SEARCH_ARGS=(--sizes 3000 --dim 32 --clusters 20 --queries 20 --devices cpu,auto); SEARCH_LIMIT=300
    export SBIR_INDEX_FLAT_MAX=500  # an IVF index at smoke size, so the calibrated path runs
    PHOTOS=48; PHOTO_SIZE=96x72; BUILD_BATCH=16; BUILD_LIMIT=300
    TRAIN_ARGS=(--steps 3 --batch-size 4 --classes 5 --log-every 1); TRAIN_LIMIT=300
    SERVE_ARGS=(--vectors 2000 --c1-requests 3 --c16-requests 16 --rounds 1 --swap-settle-s 0.5); SERVE_LIMIT=300
else
    DEVICE=cuda; BACKBONE=ViT-B-32
    ENCODER_ARGS=(--batch-sizes 1,32,256 --min-seconds 1); ENCODER_LIMIT=60
    SEARCH_ARGS=(--sizes 1000000 --queries 1000 --devices cpu,cuda); SEARCH_LIMIT=130
    PHOTOS=4096; PHOTO_SIZE=640x480; BUILD_BATCH=256; BUILD_LIMIT=80
    TRAIN_ARGS=(--steps 200 --batch-size 64 --classes 10 --log-every 10); TRAIN_LIMIT=110
    SERVE_ARGS=(--vectors 100000); SERVE_LIMIT=100
fi

# step NAME LIMIT_S COMMAND...: run with a time limit; its log goes to WORK/NAME.log (shown when it fails).
step() {
    local name="$1" limit="$2"; shift 2
    local started=$SECONDS
    echo "== $name (limit ${limit}s)" >&2
    if timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1; then
        echo "== $name ok in $(( SECONDS - started ))s" >&2
    else
        echo "== $name FAILED (exit $?) after $(( SECONDS - started ))s; last lines:" >&2
        tail -n 20 "$WORK/$name.log" >&2
        touch "$WORK/$name.failed"
    fi
    echo "$(( SECONDS - started ))" >"$WORK/$name.seconds"
}
# On the GPU the steps run one after another (their figures must not disturb each other); the smoke runs them
# side by side (it checks that they work, not how fast), which halves its time on a 2-core CI machine.
run_step() {
    if [ "$SMOKE" = 1 ]; then step "$@" & else step "$@"; fi
}

run_step encoder "$ENCODER_LIMIT" "$PY" bench/encoder.py --device "$DEVICE" --backbone "$BACKBONE" \
    "${ENCODER_ARGS[@]}" --json "$WORK/encoder.json"
run_step search "$SEARCH_LIMIT" "$PY" bench/search.py "${SEARCH_ARGS[@]}" --json "$WORK/search.json"
run_step index_build "$BUILD_LIMIT" bash -c '"$1" bench/synthetic.py photos "$2/gallery" --count "$3" --size "$4" &&
    "$1" bench/index_build.py --source "$2/gallery" --photos "$3" --backbone "$5" --device "$6" --batch-size "$7" \
        --workers "$8" --json "$2/index_build.json"' _ "$PY" "$WORK" "$PHOTOS" "$PHOTO_SIZE" "$BACKBONE" "$DEVICE" \
    "$BUILD_BATCH" "$WORKERS"
run_step training "$TRAIN_LIMIT" "$PY" bench/training_steps.py --backbone "$BACKBONE" --device "$DEVICE" \
    --workers "$WORKERS" "${TRAIN_ARGS[@]}" --json "$WORK/training.json"
run_step serve "$SERVE_LIMIT" bash -c '"$1" bench/synthetic.py sketch "$2/sketch.png" &&
    "$1" bench/synthetic.py photos "$2/serve-photos" --count 32 --size 320x240 &&
    "$1" bench/serve.py --backbone "$3" --device "$4" --photos "$2/serve-photos" --sketch "$2/sketch.png" "${@:5}" \
        --json "$2/serve.json"' _ "$PY" "$WORK" "$BACKBONE" "$DEVICE" "${SERVE_ARGS[@]}"
wait
FAILED=()
for name in encoder search index_build training serve; do
    [ -e "$WORK/$name.failed" ] && FAILED+=("$name")
done

"$PY" - "$WORK" "$OUT" "$SMOKE" "${FAILED[@]}" <<'PYTHON'
import json
import sys
from pathlib import Path

work, out, smoke, failed = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1", sys.argv[4:]
figures = {"smoke": smoke, "failed": failed}
for name in ("encoder", "search", "index_build", "training", "serve"):
    path = work / f"{name}.json"
    figures[name] = json.loads(path.read_text()) if path.is_file() else None
    seconds = work / f"{name}.seconds"
    figures.setdefault("step_seconds", {})[name] = int(seconds.read_text()) if seconds.is_file() else None
figures["host"] = (figures["encoder"] or {}).get("host")  # the encoder step describes the machine (no extra import)
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(figures, indent=2) + "\n")
print(f"wrote {out}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
PYTHON
[ ${#FAILED[@]} -eq 0 ]
