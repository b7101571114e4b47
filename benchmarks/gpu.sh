#!/usr/bin/env bash
# One GPU, under 8 minutes (issue #29 item 4): the throughput benchmark, then two real trials, then a summary
# against the targets, results in one folder.
#
#   bash benchmarks/gpu.sh [--out DIR] [--authors-repo DIR] [--dry-run]
#
# The benchmark (bench_throughput.py --plain): each model alone in bf16 (forward, loss, backward, AdamW), at
#   1024/24 and 768/12 (the paper's shapes; the targets are judged there) and 384/6, context 256, vocabulary
#   50,277: Transformer++ and our EBT with the kernels the trainer would use (compile and chunked CE 'auto',
#   resolved by TrialConfig.kernels: both on here), each again eager (compile and chunked CE off), and the
#   authors' EBT when --authors-repo names a checkout of their code; micro-batch per family from the
#   planner's memory model; MFU against a bf16 GEMM peak measured in the same run; peak memory per model.
# The trials: one EBT and one Transformer++ of 256/4/4 (DeepSpeed bf16, kernels auto), half the GPU each: a
#   2-trial sweep (Ray Tune + MLflow) when PYTHON can import ray and mlflow, else `ebtscale train --no-track`.
# The summary (bench_throughput.py --summary): per size, MFU of each family, EBT/T++ time ratio beside the
#   FLOP ratio, ours against the authors', peak memory, compiled against eager; each target met, NOT met or
#   not measurable. Printed last, also into summary.txt; it reads the JSON, which the benchmark rewrites
#   after every model, so a benchmark cut short by its timeout still leaves the sizes it finished.
#
# --out: the results folder (default benchmarks/results/gpu-<date>-<time>); it gets throughput-plain.json/.txt,
#   summary.txt, gpu-trial.yaml, gpu-sweep.yaml, sweep.txt and the trials' own outputs under sweep/.
# --authors-repo: a checkout of github.com/alexiglad/EBT (never vendored), timed beside ours.
# --dry-run: no GPU needed. Prints what a GPU run would do, then runs its CPU-side parts at a tiny size: the
#   benchmark on CPU (fp32; compile and chunked CE forced on, the eager twins beside), its summary, and the
#   sweep's plan (validation and dry-run plan, no training).
# Time (estimate, not yet measured; benchmarks/NOTES.md "To run on a GPU"): benchmark ~4.5 min, trials ~1.5,
#   bounded by BENCH_TIMEOUT + SWEEP_TIMEOUT = 440 s; the script prints its own duration at the end.
# Environment: PYTHON (default .venv/bin/python, else python3), BENCH_TIMEOUT (default 320 s), SWEEP_TIMEOUT
#   (120 s).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)"
DRY_RUN=0
AUTHORS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
    --authors-repo) AUTHORS=(--authors-repo "${2:?--authors-repo needs a folder}"); shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
EBTSCALE=("$PYTHON" -m orchestrator.cli)
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

# One EBT and one Transformer++ trial of 256/4/4 at context 256 on the stdlib corpus, sharing the GPU (half
# each, so they run at once); a few hundred steps each. The trial config is the sweep's base, written once.
cat > "$OUT/gpu-trial.yaml" <<TRIAL
name: gpu-check-ebt
model: {family: ebt, d_model: 256, n_layers: 4, n_heads: 4, vocab_size: 512, context_length: 256}
data: {source: stdlib, tokenizer: bpe, vocab_size: 512}
optim: {lr: 0.0018}
train: {tokens: 2000000, global_batch_size: 32, micro_batch_size: 32, eval_every: 100, checkpoint_every: 1000}
deepspeed: {zero_stage: 1, precision: auto}
resources: {num_workers: 1, cpus_per_worker: 4, gpus_per_worker: 0.5}
output_dir: $OUT/sweep
TRIAL
{
  printf 'name: gpu-check\ndescription: two real trials on one GPU (benchmarks/gpu.sh)\n'
  printf 'families: [ebt, transformer_pp]\nseeds: [0]\noutput_dir: %s/sweep\n' "$OUT"
  printf 'axes:\n  params: {d_model: [256], head_dim: 64}\nbase:\n'
  grep -vE '^(name|output_dir):' "$OUT/gpu-trial.yaml" | sed -e 's/^/  /' -e 's/{family: ebt, /{/'
} > "$OUT/gpu-sweep.yaml"

# The sizes run largest first: a benchmark cut short by its timeout loses the small shape, which has no target.
GPU_BENCH=(benchmarks/bench_throughput.py --plain --device cuda --sizes 1024x24,768x12,384x6 --context 256
  --vocabs 50277 --micro-batch auto --compile auto --chunked-ce auto --eager-too
  --variants transformer_pp,ebt_reuse,authors --rounds 5 --warmup 2)
SUMMARY=(benchmarks/bench_throughput.py --summary "$OUT/throughput-plain.json")

if [[ $DRY_RUN == 1 ]]; then
  echo "dry run: a GPU run would do, in $OUT:"
  echo "  timeout ${BENCH_TIMEOUT:-320} $PYTHON ${GPU_BENCH[*]} ${AUTHORS[*]} --json-out $OUT/throughput-plain.json"
  echo "  timeout ${SWEEP_TIMEOUT:-120} ${EBTSCALE[*]} sweep run $OUT/gpu-sweep.yaml  (without ray/mlflow:" \
    "${EBTSCALE[*]} train --no-track $OUT/gpu-trial.yaml, per family, at once)"
  echo "  $PYTHON ${SUMMARY[*]}"
  "$PYTHON" benchmarks/bench_throughput.py --plain --device cpu --sizes 64x1 --context 32 --vocabs 64 \
    --micro-batch 2 --rounds 1 --compile on --chunked-ce on --ce-chunk-rows 16 --eager-too \
    --variants transformer_pp,ebt_reuse,ebt,authors "${AUTHORS[@]}" \
    --json-out "$OUT/throughput-plain.json" | tee "$OUT/throughput-plain.txt"
  "$PYTHON" "${SUMMARY[@]}" | tee "$OUT/summary.txt"
  "${EBTSCALE[@]}" sweep plan "$OUT/gpu-sweep.yaml" --throughput 1e12 | tee "$OUT/sweep-plan.txt"
  exit 0
fi

command -v nvidia-smi >/dev/null && nvidia-smi > "$OUT/nvidia-smi.txt"
export DS_ACCELERATOR=cuda
failed=()
timeout "${BENCH_TIMEOUT:-320}" "$PYTHON" "${GPU_BENCH[@]}" "${AUTHORS[@]}" \
  --json-out "$OUT/throughput-plain.json" 2>&1 | tee "$OUT/throughput-plain.txt" || failed+=("benchmark (exit $?)")
if "$PYTHON" -c "import ray, mlflow" 2>/dev/null; then
  timeout "${SWEEP_TIMEOUT:-120}" "${EBTSCALE[@]}" sweep run "$OUT/gpu-sweep.yaml" 2>&1 | tee "$OUT/sweep.txt" \
    || failed+=("sweep (exit $?)")
else
  echo "ray/mlflow not importable by $PYTHON: the two trials under DeepSpeed alone (ebtscale train --no-track)" \
    | tee "$OUT/sweep.txt"
  for family in ebt transformer_pp; do
    timeout "${SWEEP_TIMEOUT:-120}" "${EBTSCALE[@]}" train --no-track "$OUT/gpu-trial.yaml" \
      --set model.family=$family --set name=gpu-check-$family > "$OUT/trial-$family.txt" 2>&1 &
  done
  for _ in 1 2; do wait -n || failed+=("a trial (exit $?)"); done
  tail -n 5 "$OUT"/trial-*.txt | tee -a "$OUT/sweep.txt"
fi
if [[ -f "$OUT/throughput-plain.json" ]]; then
  "$PYTHON" "${SUMMARY[@]}" 2>&1 | tee "$OUT/summary.txt" || failed+=("summary (exit $?)")
else
  failed+=("benchmark: no throughput-plain.json")
fi
echo "results in $OUT; ${SECONDS} s in all"
if [[ ${#failed[@]} -gt 0 ]]; then
  printf 'failed: %s\n' "${failed[@]}" | tee -a "$OUT/summary.txt"
  exit 1
fi
