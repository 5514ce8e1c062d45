"""EAGLE-3 training-time self-feeding, measured: a head trained with --steps-ahead K (1 = no self-feeding, the
EAGLE-1/2 step) on N tokens of the training split, then its held-out top-1 agreement with the target at draft
depths 1-4 (unrolled on its own outputs, as it drafts). README "EAGLE draft trees"; docs/results/eagle/ttt.json.

    .venv/bin/python scripts/eagle_ttt_ablation.py 1 300000 && .venv/bin/python scripts/eagle_ttt_ablation.py 4 300000
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from cascade_eagle.head import load_head
from cascade_eagle.train import TrainSettings, evaluate, train

from cascade.runtime import models

torch.set_num_threads(1)
k, tokens = int(sys.argv[1]), int(sys.argv[2])
out = Path(f"/tmp/cascade-eagle-ttt/head-k{k}")
s = TrainSettings(tokens=tokens, steps_ahead=k, seed=0)
train(Path("models/target"), out, Path(f"/tmp/cascade-eagle-ttt/work-k{k}"), s, log=lambda m: print(m, flush=True))
target = models.load_model("models/target", torch.float32, torch.device("cpu")).eval()
held = np.load(f"/tmp/cascade-eagle-ttt/work-k{k}/heldout.npy")
r = evaluate(load_head(out), target, held, TrainSettings(tokens=1, steps_ahead=4, eval_windows=64))
print(json.dumps({"steps_ahead": k, "tokens": tokens, **r}), flush=True)
