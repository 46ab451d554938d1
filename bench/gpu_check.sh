#!/usr/bin/env bash
# One prepared GPU check (issue #28): <= 8 minutes on one GPU, results under $OUT (else bench/results/).
#
#   bash bench/gpu_check.sh            # on a CUDA machine
#   bash bench/gpu_check.sh --dry-run  # the same steps on CPU at tiny sizes (Triton interpreter)
#
# Steps, in order, each time-boxed with `timeout` so one failure cannot eat the rest:
#   1. environment: GPU name, driver, torch / triton / CUDA versions         -> gpu_check.json
#   2. kernel tests compiled on CUDA, in 9 parallel pytest shards (compiling dominates)
#                                                                            -> tests-*.log, tests-*.xml
#   3. bench/attention.py: TFLOP/s vs SDPA flash, % of peak                  -> attention-<gpu>.json/.md
#   4. train.py headline and induction with --device cuda (run side by side: their wall times
#      overlap), report.json copied as headline-report.json / induction-report.json; then
#      bench/train_step.py, which has no CUDA mode (noted, not run)
# Ends with one summary line per step (ok / failed / timed out / skipped); exit 1 if any failed.
# Time limits (seconds) may be raised with GPU_CHECK_T_ENV, _T_TESTS, _T_BENCH, _T_TRAIN.
# PYTHON picks the interpreter (default: python).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python}"
DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$arg' (use --dry-run or nothing)" >&2; exit 2 ;;
  esac
done

if [ "$DRY" = 1 ]; then
  RES="${OUT:-$(mktemp -d /tmp/gpu_check-dry-run.XXXXXX)}"
  DEVICE=cpu; T_ENV=60; T_TESTS=120; T_BENCH=120; T_TRAIN=150
  # tiny sizes; train.py keeps its CPU default backend (its runs in the interpreter take minutes)
  HEADLINE_SET=(--set steps=10 --set relation_steps=5 --set phase2_steps=5 --set eval_every=1000 --set warmup=2
                --set batch_size=4 --set n_entities=80 --set n_fixed_entities=20 --set n_chain_entities=20
                --set n_fixed_facts=20 --set n_new_facts=16 --set d_model=32 --set d_head=8 --set n_layers=1)
  INDUCTION_SET=(--set steps=10 --set eval_every=1000 --set warmup=2 --set batch_size=4)
  BENCH_ARGS=(--dry-run)
else
  RES="${OUT:-$ROOT/bench/results}"
  DEVICE=cuda; T_ENV=20; T_TESTS=140; T_BENCH=180; T_TRAIN=130  # 470 s at most, + ~10 s of bookkeeping
  HEADLINE_SET=(); INDUCTION_SET=()
fi
T_ENV="${GPU_CHECK_T_ENV:-$T_ENV}"; T_TESTS="${GPU_CHECK_T_TESTS:-$T_TESTS}"
T_BENCH="${GPU_CHECK_T_BENCH:-$T_BENCH}"; T_TRAIN="${GPU_CHECK_T_TRAIN:-$T_TRAIN}"
# the benchmark starts no new shape after its budget, leaving time to finish one and write files
[ "$DRY" = 1 ] || BENCH_ARGS=(--budget-s $((T_BENCH * 3 / 4)))
mkdir -p "$RES"
RES="$(cd "$RES" && pwd)"
RUNS="$(mktemp -d /tmp/gpu_check-runs.XXXXXX)"  # run folders (weights, plots) stay out of the results
STEPS="$RES/gpu_check-steps.tsv"
: > "$STEPS"
echo "gpu_check: results in $RES (dry run: $DRY)"

status_of() {  # exit code -> ok / timed out / failed
  case "$1" in 0) echo ok ;; 124|137) echo "timed out" ;; *) echo failed ;; esac
}
record() {  # name status seconds rc log note
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${6:-}" >> "$STEPS"
  write_json
}
write_json() {  # gpu_check.json from env.json, the steps table, the tests' junit files and train wall times
  "$PY" - "$RES" "$DRY" <<'EOF' || echo "gpu_check: could not write gpu_check.json" >&2
import glob, json, os, sys, xml.etree.ElementTree as ET
res, dry = sys.argv[1], sys.argv[2] == "1"
def load(name):
    try:
        with open(os.path.join(res, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
steps = []
with open(os.path.join(res, "gpu_check-steps.tsv")) as f:
    for line in f:
        name, status, secs, rc, log, note = line.rstrip("\n").split("\t")
        steps.append({"step": name, "status": status, "seconds": int(secs), "exit_code": int(rc), "log": log, "note": note})
tests = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
for path in glob.glob(os.path.join(res, "tests-*.xml")):
    try:
        suite = ET.parse(path).getroot()
        suite = suite if suite.tag == "testsuite" else suite[0]
        n = int(suite.get("tests", 0)); fail, err, skip = (int(suite.get(k, 0)) for k in ("failures", "errors", "skipped"))
        tests["failed"] += fail; tests["errors"] += err; tests["skipped"] += skip; tests["passed"] += n - fail - err - skip
    except (ET.ParseError, IndexError, OSError):
        pass
out = {"dry_run": dry, "environment": load("env.json"), "steps": steps, "kernel_tests": tests,
       "train": {name: load(f"{name}-wall.json") for name in ("headline", "induction")},
       "attention_bench": sorted(os.path.basename(p) for p in glob.glob(os.path.join(res, "attention-*.json")))}
with open(os.path.join(res, "gpu_check.json"), "w") as f:
    json.dump(out, f, indent=2)
EOF
}
run_step() {  # name limit_s log command...: time-boxed, output to the terminal and the log
  local name="$1" limit="$2" log="$3"; shift 3
  local t0=$SECONDS
  echo "== $name (limit ${limit} s) =="
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$RES/$log"
  local rc=${PIPESTATUS[0]}
  record "$name" "$(status_of "$rc")" $((SECONDS - t0)) "$rc" "$log"
  return "$rc"
}

# 1. environment ---------------------------------------------------------------------------------
run_step "environment" "$T_ENV" env.log "$PY" - "$RES" "$DEVICE" <<'EOF'
import json, platform, subprocess, sys
import torch
res, device = sys.argv[1], sys.argv[2]
env = {"python": platform.python_version(), "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
       "device": device, "cuda_available": torch.cuda.is_available()}
try:
    import triton
    env["triton"] = triton.__version__
except ImportError as e:
    env["triton"] = f"not importable: {e}"
try:
    env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    pass
if device == "cuda":
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU visible to torch: run with --dry-run on a CPU machine")
    p = torch.cuda.get_device_properties(0)
    env.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count(),
               compute_capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1),
               multiprocessors=p.multi_processor_count)
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
        env["driver"] = q.stdout.strip().splitlines()[0] if q.returncode == 0 else "nvidia-smi failed"
    except (OSError, subprocess.TimeoutExpired, IndexError):
        env["driver"] = "nvidia-smi unavailable"
else:
    env.update(gpu="none (dry run on CPU, Triton interpreter)", driver=None)
with open(f"{res}/env.json", "w") as f:
    json.dump(env, f, indent=2)
print(json.dumps(env, indent=2))
EOF

# 2. kernel tests ----------------------------------------------------------------------------------
# parallel pytest shards (-k expressions), grouped so that each compiles few kernel variants; the
# last takes every test the others do not, so nothing is left out
M="test_forward_backward_match_float64_reference"
if [ "$DRY" = 1 ]; then  # a small slice, in the interpreter
  SHARDS=("$M and cpu-32-33-True" "test_low_precision and True" "test_long_sequences"
          "each_dtype or unsupported_reason or bad_input or non_contiguous")
else
  SHARDS=("$M and cuda-16-" "$M and cuda-32-" "$M and cuda-64-" "test_every_gpu_block_config"
          "test_low_precision or test_each_dtype" "test_long_sequences and float16 and not bfloat16"
          "test_long_sequences and bfloat16" "test_long_sequences and float32")
  rest=$(printf ' or (%s)' "${SHARDS[@]}")
  SHARDS+=("not (${rest# or })")
fi
kernel_tests() {  # shard expressions...: one pytest process each, all at once
  local pids=() i rc=0 r
  for i in $(seq 1 $#); do
    MINITF_KERNEL_DEVICE="$DEVICE" "$PY" -m pytest tests/test_flash_attention.py -q -p no:cacheprovider \
      -k "${!i}" --junitxml="$RES/tests-shard$i.xml" > "$RES/tests-shard$i.log" 2>&1 &
    pids+=($!)
  done
  for i in $(seq 1 $#); do
    wait "${pids[$((i - 1))]}"; r=$?
    echo "shard $i (${!i}): exit $r — $(tail -n 1 "$RES/tests-shard$i.log")"
    [ "$r" -ne 0 ] && rc=$r
  done
  return "$rc"
}
export -f kernel_tests
export RES DEVICE PY
rm -f "$RES"/tests-shard*.xml "$RES"/tests-shard*.log
run_step "kernel tests ($DEVICE)" "$T_TESTS" tests.log bash -c 'kernel_tests "$@"' _ "${SHARDS[@]}"

# 3. attention benchmark -----------------------------------------------------------------------------
run_step "attention benchmark" "$T_BENCH" bench.log "$PY" bench/attention.py --out "$RES" "${BENCH_ARGS[@]}"

# 4. experiments and the training-step benchmark ---------------------------------------------------
train_one() {  # name set-args...: one run folder in $RUNS; wall time and report.json into $RES
  local name="$1"; shift
  local t0=$SECONDS rc
  "$PY" train.py "$name" --device "$DEVICE" --out "$RUNS/$name" "$@"
  rc=$?
  printf '{"exit_code": %d, "wall_s": %d, "device": "%s", "concurrent_with": "%s"}\n' "$rc" $((SECONDS - t0)) \
    "$DEVICE" "$([ "$name" = headline ] && echo induction || echo headline)" > "$RES/$name-wall.json"
  [ -f "$RUNS/$name/report.json" ] && cp "$RUNS/$name/report.json" "$RES/$name-report.json"
  return "$rc"
}
export -f train_one
export RUNS
for name in headline induction; do
  if [ "$name" = headline ]; then set_args=("${HEADLINE_SET[@]}"); else set_args=("${INDUCTION_SET[@]}"); fi
  # side by side: each records its step line in its own file, appended below in a fixed order
  ( STEPS="$RES/.steps-$name.tsv"; : > "$STEPS"
    run_step "train.py $name" "$T_TRAIN" "$name.log" bash -c 'train_one "$@"' _ "$name" "${set_args[@]}" \
      > /dev/null ) &
done
echo "== train.py headline and induction side by side (limit $T_TRAIN s each; logs: headline.log, induction.log) =="
wait
for name in headline induction; do
  cat "$RES/.steps-$name.tsv" >> "$STEPS" && rm -f "$RES/.steps-$name.tsv"
  echo "-- $name: last lines of $name.log"; tail -n 4 "$RES/$name.log"
done
echo "== bench/train_step.py =="
if "$PY" bench/train_step.py --help 2>/dev/null | grep -q -- "--device"; then
  run_step "bench/train_step.py" "$T_TRAIN" train_step.log "$PY" bench/train_step.py --device "$DEVICE"
else
  note="bench/train_step.py has no CUDA mode (a CPU benchmark: no --device flag); not run"
  echo "$note"
  record "bench/train_step.py" skipped 0 0 "" "$note"
fi

# summary ------------------------------------------------------------------------------------------
write_json
echo
echo "== gpu_check summary ($([ "$DRY" = 1 ] && echo "dry run, CPU" || echo GPU); results in $RES) =="
fail=0
while IFS=$'\t' read -r name status secs rc log note; do
  printf '%-28s %-10s %5s s  %s\n' "$name" "$status" "$secs" "${note:-$log}"
  case "$status" in ok|skipped) ;; *) fail=1 ;; esac
done < "$STEPS"
rm -rf "$RUNS"
exit "$fail"
