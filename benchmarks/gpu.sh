#!/usr/bin/env bash
# One GPU, under 8 minutes: the throughput benchmark (the models alone in bf16: Transformer++ with the fused
# causal kernel, the EBT's default path and its full-recompute reference, and the authors' EBT when
# --authors-repo names a checkout of their code; MFU against a bf16 GEMM peak measured in the same run) and two
# real trials (both families, one size, DeepSpeed bf16), results in one folder.
#
#   bash benchmarks/gpu.sh [--out DIR] [--authors-repo DIR] [--dry-run]
#
# --out: the results folder (default benchmarks/results/gpu-<date>-<time>); it gets throughput-plain.json/.txt,
#   gpu-trial.yaml, gpu-sweep.yaml, sweep.txt and the trials' own outputs under sweep/.
# --authors-repo: a checkout of github.com/alexiglad/EBT (never vendored), timed beside ours.
# --dry-run: no GPU needed. Prints what a GPU run would do, then runs its CPU-side parts at a tiny size: the
#   benchmark on CPU (fp32) and the sweep's plan (validation and dry-run plan, no training).
# The trials: a 2-trial sweep (Ray Tune + MLflow) when PYTHON can import ray and mlflow; otherwise (a GPU
#   image without them) the same two trials through `ebtscale train --no-track`: DeepSpeed alone.
# Environment: PYTHON (default .venv/bin/python, else python3), BENCH_TIMEOUT (default 300 s), SWEEP_TIMEOUT
#   (180 s).
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
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
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

if [[ $DRY_RUN == 1 ]]; then
  echo "dry run: a GPU run would do, in $OUT:"
  echo "  $PYTHON benchmarks/bench_throughput.py --plain --device cuda --sizes 128,384,1024 --vocabs 512,50277 --micro-batch 16 --rounds 5 ${AUTHORS[*]}"
  echo "  ${EBTSCALE[*]} sweep run $OUT/gpu-sweep.yaml  (without ray/mlflow: ${EBTSCALE[*]} train --no-track $OUT/gpu-trial.yaml, per family)"
  "$PYTHON" benchmarks/bench_throughput.py --plain --device cpu --sizes 64 --context 32 --vocabs 64 \
    --micro-batch 2 --rounds 1 --json-out "$OUT/throughput-plain.json" | tee "$OUT/throughput-plain.txt"
  "${EBTSCALE[@]}" sweep plan "$OUT/gpu-sweep.yaml" --throughput 1e12 | tee "$OUT/sweep-plan.txt"
  exit 0
fi

command -v nvidia-smi >/dev/null && nvidia-smi > "$OUT/nvidia-smi.txt"
export DS_ACCELERATOR=cuda
timeout "${BENCH_TIMEOUT:-300}" "$PYTHON" benchmarks/bench_throughput.py --plain --device cuda \
  --sizes 128,384,1024 --vocabs 512,50277 --micro-batch 16 --rounds 5 --warmup 2 "${AUTHORS[@]}" \
  --json-out "$OUT/throughput-plain.json" | tee "$OUT/throughput-plain.txt"
if "$PYTHON" -c "import ray, mlflow" 2>/dev/null; then
  timeout "${SWEEP_TIMEOUT:-180}" "${EBTSCALE[@]}" sweep run "$OUT/gpu-sweep.yaml" 2>&1 | tee "$OUT/sweep.txt"
else
  echo "ray/mlflow not importable by $PYTHON: the two trials under DeepSpeed alone (ebtscale train --no-track)" \
    | tee "$OUT/sweep.txt"
  for family in ebt transformer_pp; do
    timeout "${SWEEP_TIMEOUT:-180}" "${EBTSCALE[@]}" train --no-track "$OUT/gpu-trial.yaml" \
      --set model.family=$family --set name=gpu-check-$family > "$OUT/trial-$family.txt" 2>&1 &
  done
  status=0; wait -n || status=$?; wait -n || status=$?
  tail -n 5 "$OUT"/trial-*.txt | tee -a "$OUT/sweep.txt"
  [[ $status == 0 ]] || { echo "a trial failed (exit $status)" | tee -a "$OUT/sweep.txt"; exit "$status"; }
fi
echo "results in $OUT"
