#!/usr/bin/env bash
# One GPU, under 8 minutes: the throughput benchmark (the models alone in bf16: Transformer++ with the fused
# causal kernel, the EBT's default path and its full-recompute reference; MFU against a bf16 GEMM peak measured
# in the same run) and a real 2-trial sweep (both families, one size, DeepSpeed bf16), results in one folder.
#
#   bash benchmarks/gpu.sh [--out DIR] [--dry-run]
#
# --out: the results folder (default benchmarks/results/gpu-<date>-<time>); it gets throughput-plain.json/.txt,
#   gpu-sweep.yaml, sweep.txt and the sweep's own outputs (trials, MLflow store) under sweep/.
# --dry-run: no GPU needed. Prints what a GPU run would do, then runs its CPU-side parts at a tiny size: the
#   benchmark on CPU (fp32) and the sweep's plan (validation and dry-run plan, no training).
# Environment: PYTHON (default .venv/bin/python), BENCH_TIMEOUT (default 300 s), SWEEP_TIMEOUT (180 s).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)"
DRY_RUN=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
PYTHON="${PYTHON:-.venv/bin/python}"
EBTSCALE="$(dirname "$PYTHON")/ebtscale"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

# The sweep: one EBT and one Transformer++ trial of 256/4/4 at context 256 on the stdlib corpus, sharing the GPU
# (half each, so they run at once); a few hundred steps each.
cat > "$OUT/gpu-sweep.yaml" <<SPEC
name: gpu-check
description: two real trials on one GPU (benchmarks/gpu.sh)
families: [ebt, transformer_pp]
seeds: [0]
base:
  model: {d_model: 256, n_layers: 4, n_heads: 4, vocab_size: 512, context_length: 256}
  data: {source: stdlib, tokenizer: bpe, vocab_size: 512}
  optim: {lr: 0.0018}
  train: {tokens: 2000000, global_batch_size: 32, micro_batch_size: 32, eval_every: 100, checkpoint_every: 1000}
  deepspeed: {zero_stage: 1, precision: auto}
  resources: {num_workers: 1, cpus_per_worker: 4, gpus_per_worker: 0.5}
output_dir: $OUT/sweep
axes:
  params: {d_model: [256], head_dim: 64}
SPEC

if [[ $DRY_RUN == 1 ]]; then
  echo "dry run: a GPU run would do, in $OUT:"
  echo "  $PYTHON benchmarks/bench_throughput.py --plain --device cuda --sizes 128,384,1024 --vocabs 512,50277 --micro-batch 16 --rounds 3"
  echo "  $EBTSCALE sweep run $OUT/gpu-sweep.yaml"
  "$PYTHON" benchmarks/bench_throughput.py --plain --device cpu --sizes 64 --context 32 --vocabs 64 \
    --micro-batch 2 --rounds 1 --json-out "$OUT/throughput-plain.json" | tee "$OUT/throughput-plain.txt"
  "$EBTSCALE" sweep plan "$OUT/gpu-sweep.yaml" --throughput 1e12 | tee "$OUT/sweep-plan.txt"
  exit 0
fi

command -v nvidia-smi >/dev/null && nvidia-smi > "$OUT/nvidia-smi.txt"
export DS_ACCELERATOR=cuda
timeout "${BENCH_TIMEOUT:-300}" "$PYTHON" benchmarks/bench_throughput.py --plain --device cuda \
  --sizes 128,384,1024 --vocabs 512,50277 --micro-batch 16 --rounds 3 \
  --json-out "$OUT/throughput-plain.json" | tee "$OUT/throughput-plain.txt"
timeout "${SWEEP_TIMEOUT:-180}" "$EBTSCALE" sweep run "$OUT/gpu-sweep.yaml" 2>&1 | tee "$OUT/sweep.txt"
echo "results in $OUT"
