#!/usr/bin/env bash
# The engine on a GPU, in one prepared run: any session lent a GPU runs this first (bench/GPU_CHECK.md).
#
# Stages, each under its own time limit, each writing its JSON to $OUT as soon as it ends (a run cut
# short still returns what finished); about 6 minutes on one H100 in all:
#   0 wheels      install the carried wheels of bench/gpu_wheels.txt (the server's stack)      20 s
#   1 env         GPU, driver, versions, copy bandwidth, bf16 matmul rate   -> env.json        20 s
#   2 tests       pytest tests/worker/test_engine_gpu.py, 60 s a test       -> gpu_tests.json   90 s
#   3 bench       bench/engine_gpu.py (256 requests, 100-1024 tokens)       -> engine_gpu.json 180 s
#   4 cold start  process start to /health and /ready, qwen2.5-0.5b bf16   -> cold_start.json  50 s
# plus summary.json (each stage's status, seconds, budget), verdict.json (the acceptance figures, also
# printed last) and gpu_check.log (everything printed).
#
# Before calling the device tool, once per session, here in the repository root:
#   bench/gpu_check.sh --fetch-wheels            # pip download of bench/gpu_wheels.txt into .whl/
# then run with the device tool: command "bench/gpu_check.sh", carry [".whl"], timeout_s 480.
#
#   bench/gpu_check.sh [--dry-run]               OUT=dir (default out/gpu_check)
# --dry-run runs every stage's code path on the CPU with tiny sizes (TRITON_INTERPRET=1 for the
# kernel), writing the same files; tests/bench/test_gpu_check_dry_run.py runs it in CI.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
WHEELS=bench/gpu_wheels.txt

wheel_specs() { grep -Ev '^\s*(#|$)' "$WHEELS"; }

if [[ ${1:-} == --fetch-wheels ]]; then
    mkdir -p .whl
    # shellcheck disable=SC2046
    exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl $(wheel_specs)
fi
DRY=0
case ${1:-} in
    --dry-run) DRY=1 ;;
    "") ;;
    *) echo "usage: $0 [--dry-run | --fetch-wheels]" >&2; exit 2 ;;
esac

OUT=${OUT:-$ROOT/out/gpu_check}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
: >"$LOG"
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
STAGES=()
FAILED=0

# stage NAME BUDGET_S COMMAND...: run it under `timeout`, log its output, record its outcome at once.
stage() {
    local name=$1 budget=$2 start rc status ms
    shift 2
    echo "=== $name (budget ${budget} s): $*" | tee -a "$LOG"
    start=$(date +%s%N)
    timeout -k 10 "$budget" "$@" >>"$LOG" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124 | 137) status=timed_out ;;
        *) status=failed ;;
    esac
    [[ $status == ok ]] || FAILED=1
    ms=$((($(date +%s%N) - start) / 1000000))
    STAGES+=("$(printf '{"stage": "%s", "status": "%s", "rc": %d, "seconds": %d.%03d, "budget_s": %d}' \
        "$name" "$status" "$rc" $((ms / 1000)) $((ms % 1000)) "$budget")")
    write_summary
    echo "=== $name: $status" | tee -a "$LOG"
}

write_summary() {
    local joined
    joined=$(IFS=,; echo "${STAGES[*]}")
    printf '{"dry_run": %s, "stages": [%s]}\n' "$([[ $DRY == 1 ]] && echo true || echo false)" "$joined" \
        >"$OUT/summary.json"
}

# Stage 0: the server's packages. On the GPU machine from the carried .whl/; in the rehearsal the venv
# already has them, and the check is that the list parses and names what the worker imports.
install_wheels() {
    local spec name missing=0
    for spec in $(wheel_specs); do
        [[ $spec == *==* ]] || { echo "$WHEELS: '$spec' is not name==version"; return 1; }
        name=${spec%%==*}
        if [[ $DRY == 0 ]] && ! compgen -G ".whl/${name//-/_}-${spec##*==}-*.whl" >/dev/null; then
            echo "missing .whl/${name//-/_}-${spec##*==}-*.whl: run bench/gpu_check.sh --fetch-wheels here and carry .whl"
            missing=1
        fi
    done
    [[ $missing == 0 ]] || return 1
    if [[ $DRY == 0 ]]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SCRATCH/site" .whl/*.whl || return 1
    fi
    PYTHONPATH=$SCRATCH/site${PYTHONPATH:+:$PYTHONPATH} "$PY" -c 'import fastapi, pydantic, starlette, uvicorn; print("server stack:", fastapi.__version__, pydantic.__version__, uvicorn.__version__)'
}
export -f install_wheels wheel_specs
export PY WHEELS DRY SCRATCH
stage wheels 20 bash -c install_wheels
export PYTHONPATH=$ROOT:$SCRATCH/site${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1

if [[ $DRY == 1 ]]; then
    stage env 60 "$PY" bench/gpu_env.py --cpu --json "$OUT/env.json"
    stage tests 150 env TRITON_INTERPRET=1 GOODPUT_GPU_TESTS_ON_CPU=1 \
        "$PY" bench/pytest_json.py --json "$OUT/gpu_tests.json" -- tests/worker/test_engine_gpu.py --timeout=120
    stage bench 120 "$PY" bench/engine_gpu.py --smoke --json "$OUT/engine_gpu.json"
    stage cold_start 90 "$PY" bench/cold_start.py --preset tiny --device cpu --dtype float32 \
        --timeout-s 80 --json "$OUT/cold_start.json" --log "$SCRATCH/cold_start.log"
else
    stage env 20 "$PY" bench/gpu_env.py --json "$OUT/env.json"
    stage tests 90 "$PY" bench/pytest_json.py --json "$OUT/gpu_tests.json" -- \
        tests/worker/test_engine_gpu.py --timeout=60
    stage bench 180 "$PY" bench/engine_gpu.py --json "$OUT/engine_gpu.json"
    stage cold_start 50 "$PY" bench/cold_start.py --preset qwen2.5-0.5b --device cuda --dtype bfloat16 \
        --timeout-s 45 --json "$OUT/cold_start.json" --log "$SCRATCH/cold_start.log"
fi
[[ -f $SCRATCH/cold_start.log ]] && cat "$SCRATCH/cold_start.log" >>"$LOG"
echo "--- summary ($OUT)"
cat "$OUT/summary.json"
echo "--- acceptance (verdict.json)" | tee -a "$LOG"
timeout 30 "$PY" bench/gpu_verdict.py --out "$OUT" 2>&1 | tee -a "$LOG"
exit $FAILED
