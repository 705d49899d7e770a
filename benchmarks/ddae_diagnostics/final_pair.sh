#!/bin/bash
# Issue #20's "What must be shown" for ONE self-conditioned / ablation pair trained at equal budget, on digits, with the
# existing tools only (no new metric code):
#   bash benchmarks/ddae_diagnostics/final_pair.sh METHOD_PIPELINE ABLATION_PIPELINE OUT [validation|all]
# validation (both modes; the test digits are not read):
#   1. 512 DPM-Solver++ 25 x0-clipped samples of each model from the seed-0 noise (sampler.py: classifier FD with its
#      bootstrap interval, judge confidence and confident share against the 288 validation digits); a model's
#      OUT/<arm>/*-dpm25-clip.npy already there (e.g. copied from an earlier draw of the same noise) is reused;
#   2. paired on the noise rows, method minus ablation (paired_gen.py --split validation);
#   3. the injected term u = W_s LN(z): ||u|| vs ||emb(t)||, its between-image share, the eps-MSE with u / its
#      per-image part / nothing (injection_shares.py, method only; an OUT/injection-validation.jsonl already there is kept).
# all (then, once, the test split):
#   4. probe sweep of each model (selfgen eval ddae: (t, layer) and L = 3's t chosen on the validation split, test
#      scored once; an OUT/<arm>/eval/metrics.json already there is kept) and the injection on test; McNemar per
#      probe, method vs ablation (eval.probe.paired_probe_comparison);
#   5. FD and judge confidence of the same samples against the 360 test digits, paired (paired_gen.py --split test).
set -euo pipefail
if [ $# -lt 3 ] || [ $# -gt 4 ]; then
  echo "usage: $0 METHOD_PIPELINE ABLATION_PIPELINE OUT [validation|all]" >&2; exit 2
fi
method=$1 ablation=$2 out=$3 mode=${4:-validation}
case $mode in validation|all) ;; *) echo "mode must be validation or all, got $mode" >&2; exit 2;; esac
for model in "$method" "$ablation"; do
  [ -f "$model/model_index.json" ] || { echo "$model: not a pipeline folder (no model_index.json)" >&2; exit 2; }
done
here=$(dirname "$0")
py=${PYTHON:-python}
stamp() { echo "=== $(date -u +%H:%M:%S) $*"; }
samples() {  # samples ARM MODEL: the arm's 512-sample file, drawn unless present
  local file
  file=$(ls "$out/$1"/*-dpm25-clip.npy 2>/dev/null | head -1 || true)
  if [ -z "$file" ]; then
    "$py" "$here/sampler.py" --models "$2" --settings dpm25-clip --out "$out/$1/validation.jsonl" >&2
    file=$(ls "$out/$1"/*-dpm25-clip.npy | head -1)
  fi
  echo "$file"
}
mkdir -p "$out/method" "$out/ablation"
stamp "samples"
method_npy=$(samples method "$method")
ablation_npy=$(samples ablation "$ablation")
stamp "paired, validation"
"$py" "$here/paired_gen.py" "$method_npy" "$ablation_npy" --split validation | tee "$out/paired-validation.json"
stamp "injection, validation"
[ -s "$out/injection-validation.jsonl" ] || "$py" "$here/injection_shares.py" --dataset digits "$method" > "$out/injection-validation.jsonl"
cat "$out/injection-validation.jsonl"
if [ "$mode" = all ]; then
  stamp "probe, test once"
  selfgen=${SELFGEN:-selfgen}
  for arm in method ablation; do
    [ "$arm" = method ] && model=$method || model=$ablation
    [ -s "$out/$arm/eval/metrics.json" ] || \
      "$selfgen" eval ddae --model "$model" --output "$out/$arm/eval" --timesteps "[0,25,100]" --num_samples 0
  done
  "$py" -c 'import json, sys; from selfgen.eval.probe import paired_probe_comparison as p
a, b = (json.load(open(f))["probe"] for f in sys.argv[1:]); print(json.dumps(p(a, b)))' \
    "$out/method/eval/metrics.json" "$out/ablation/eval/metrics.json" | tee "$out/paired-probe-test.json"
  stamp "paired, test"
  "$py" "$here/paired_gen.py" "$method_npy" "$ablation_npy" --split test | tee "$out/paired-test.json"
fi
stamp "done"
