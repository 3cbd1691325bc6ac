#!/usr/bin/env bash
# One-command GPU check, unattended (no prompts), under 8 minutes on one H100/H200-class GPU:
#   bash benchmarks/gpu_check.sh            # from the repository root or anywhere
# 1. a fresh venv that sees the calling interpreter's packages (its CUDA torch, also when that
#    interpreter is itself a venv's); when every dependency imports already it runs the checkout
#    as it is (PYTHONPATH: no download, nothing for a timeout to cut in half), else it takes the
#    README's install, and on a node that cannot reach a package index, the checkout as it is;
# 2. the CUDA-only tests: bf16 autocast training on both data paths, the torch LOF against
#    scikit-learn's on the same features, kNN on the GPU, and DDP over NCCL with >= 2 GPUs;
# 3. one CIFAR-10-5k MTaDCS cell timed at the paper's width (64): images/s, s/epoch, peak GPU
#    memory, and the projected wall time of one full-CIFAR-10 paper cell (250 + 70 epochs).
# Output: the test summary and a JSON report (also written to $GPU_CHECK_OUT, default gpu_check.json).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
venv="${GPU_CHECK_VENV:-$(mktemp -d)/venv}"
out="${GPU_CHECK_OUT:-$PWD/gpu_check.json}"
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

deps="import torch, torchvision, dvc, mlflow, numpy, pandas, pyarrow, sklearn, scipy, typer, rich, matplotlib, yaml, pydantic, PIL, pytest"
echo "== venv $venv"
caller_site=$(python3 -c "import site, sysconfig; print(':'.join(dict.fromkeys([*site.getsitepackages(), sysconfig.get_path('purelib'), sysconfig.get_path('platlib')])))")
make_venv() {
  rm -rf "$venv"
  if ! python3 -m venv --system-site-packages "$venv" >/dev/null 2>&1; then
    # an image without the venv module (Debian's python3-venv): the caller's Python itself
    echo "== no venv module here: running with the calling Python"
    mkdir -p "$venv/bin" && ln -sf "$(command -v python3)" "$venv/bin/python"
    export PATH="$venv/bin:$PATH"
    return
  fi
  . "$venv/bin/activate"
  # --system-site-packages reaches the base interpreter's packages only: a .pth file adds the caller's
  python -c "import site, sys; open(site.getsitepackages()[0] + '/gpu_check_caller.pth', 'w').write(sys.argv[1].replace(':', chr(10)))" "$caller_site"
}
make_venv
if python -c "$deps" 2>/dev/null; then
  echo "== every dependency imports already: the venv runs the checkout (PYTHONPATH), nothing downloaded"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
elif ! timeout 120 pip install -q --retries 0 --timeout 5 -e ".[dev]"; then
  echo "== no package index in reach (or too slow): running the checkout with the machine's packages"
  deactivate 2>/dev/null || true; make_venv  # a killed install may have left half a package shadowing the machine's copy
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
python - <<'PY'
import torch, torchvision
assert torch.cuda.is_available(), "no CUDA device visible: this check needs a GPU"
print("torch", torch.__version__, "| torchvision", torchvision.__version__, "| CUDA", torch.version.cuda,
      "|", torch.cuda.device_count(), "x", torch.cuda.get_device_name(0))
PY

echo "== CUDA tests"
# a failing test is reported at the end; the timing still runs, so one booking gives both
rc=0
timeout 150 python -m pytest -q -rs -p no:cacheprovider tests/test_gpu.py \
  tests/test_selection.py::test_torch_backend_on_cuda_matches_sklearn \
  tests/test_evaluate.py::test_knn_on_cuda_matches_sklearn || rc=$?

echo "== timing one CIFAR-10-5k MTaDCS cell at width 64"
data_args=()
for candidate in "${GPU_CHECK_DATA:-}" ../shared/data/cifar10_subset.npz shared/data/cifar10_subset.npz; do
  if [ -n "$candidate" ] && [ -f "$candidate" ]; then data_args=(--data "$candidate"); break; fi
done
timeout 170 python benchmarks/gpu_timing.py ${data_args[@]+"${data_args[@]}"} --epochs 3 --out "$out" || rc=$?
echo "== gpu_check finished in $(( $(date +%s) - start )) s; report: $out; exit status $rc (0: every check passed)"
exit "$rc"
