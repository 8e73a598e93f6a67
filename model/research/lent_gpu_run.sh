#!/bin/bash
# On a lent GPU machine, from the repository root, with .gpu/ carried (docs/training.md,
# "Training on a lent GPU"): install the carried wheels, prove the whole path on a tiny run
# (CUDA steps, the teacher, epochs kept, weights written), then fine-tune the shipped weights.
# MINUTES, EPOCH_STEPS, WORKERS and LAST override the run's budget, epoch, data processes and
# the epochs brought back under $OUT; GRU=512 grows the shipped weights wider first (model/widen.py:
# not shippable within the CPU budget, but it measures what capacity is worth).
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1 RAYON_NUM_THREADS=1
nvidia-smi -L; nproc
python3 -c "import torch, numba, numpy, onnx; print('torch', torch.__version__, 'numba', numba.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())" || exit 1
LENT="python3 -m model.research.lent_gpu train --libopus .gpu/libopus.so.0"
COMMON="--data-dir .gpu/data --device cuda --on-the-fly --dev-files 0 --keep-epochs --threads 1 --bf16 --augment-noise --noise-events"
date
$LENT --weights-out /tmp/smoke-weights --last 1 -- --out /tmp/smoke $COMMON \
  --gru-size 16 --gru-layers 1 --batch 4 --epoch-steps 3 --epochs 2 --data-workers 2 --teacher-blend 0.5 --teacher-pool-batches 50 --seed 1 \
  2>&1 | tail -25 || { echo "SMOKE FAILED"; exit 1; }
ls -la /tmp/smoke-weights || exit 1
date
$LENT --weights-out "$OUT" --last ${LAST:-5} -- --out /tmp/run $COMMON \
  --init-from model/weights/percepnet-fp32.onnx --gru-size ${GRU:-384} --batch 16 --lr 1e-4 \
  --budget-minutes ${MINUTES:-6.3} --epoch-steps ${EPOCH_STEPS:-150} --data-workers ${WORKERS:-14} \
  --teacher-blend 0.5 --teacher-pool-batches 100000 --mid-speech-starts 0.2 --seed 11 \
  2>&1 | tee "$OUT/train.log"
date
ls -la "$OUT"
