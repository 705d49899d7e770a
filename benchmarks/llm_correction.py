"""Two-turn self-correction (SCoRe's metrics) of saved models on the same held-out problems, paired.

    OMP_NUM_THREADS=1 python benchmarks/llm_correction.py --models assets/lm-arith-llama
        runs/score-arith-llama/iteration-0/model runs/score-arith-llama/pipeline
        [--digits 4] [--problems 1000] [--prompt_format arith] [--out correction.json]

Each model answers the first ``--problems`` held-out ``d``-digit additions (seed ``EVAL_SEED``)
greedily, then revises its answer once (the shared revision sampler; the turn-2 context of
``--prompt_format``: ``arith`` the ``R:`` mark, ``arith_restate`` / ``arith_swap`` / ``arith_hint``
the mark and the restated question, :class:`~selfgen.train.llm.prompts.RestatedRevisionFormat`). Per model: Acc@t1,
Acc@t2, Delta(t1,t2) = Acc@t2 - Acc@t1 with its paired 95% interval, and the fractions fixed (i->c)
and broken (c->i); every model after the first is compared with the first on Acc@t1 and on Acc@t2
(paired differences, 95% intervals): "turn 1 not collapsed" is the first of these. ``changed``: the share
of right (and of wrong) first attempts whose turn 2 is not a verbatim copy (a changed right attempt can
only be broken or stay right by luck). ``--out`` saves ``{model: {"table": [[t1, t2], ...], "changed": [...]}}``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from selfgen.eval.statistics import mean_difference
from selfgen.train.llm.prompts import PROMPT_FORMATS
from selfgen.train.llm.score import SCoReConfig, SCoReTrainer


def interval(reference: list[bool], candidate: list[bool]) -> str:
    diff, se = mean_difference([float(x) for x in reference], [float(x) for x in candidate])
    return f"{diff:+.3f} [{diff - 1.96 * se:+.3f}, {diff + 1.96 * se:+.3f}]"


def share_changed(first: list[bool], changed: list[bool], right: bool) -> str:
    """``changed/count (share)`` over the first attempts that are right (``right``) or wrong."""
    picked = [c for ok, c in zip(first, changed) if ok == right]
    return f"{sum(picked)}/{len(picked)} ({sum(picked) / max(len(picked), 1):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--digits", type=int, default=4)
    parser.add_argument("--problems", type=int, default=1000)
    parser.add_argument("--prompt_format", default="arith", choices=PROMPT_FORMATS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    tables: dict[str, list[list[bool]]] = {}
    changed: dict[str, list[bool]] = {}
    for model in args.models:
        if not (Path(model) / "config.json").is_file():
            raise FileNotFoundError(f"--models: {model} is not a saved causal LM folder (no config.json)")
        with tempfile.TemporaryDirectory() as output_dir:
            config = SCoReConfig(output_dir=output_dir, task="arith", min_digits=args.digits, max_digits=args.digits, eval_problems=args.problems,
                                 prompt_format=args.prompt_format)
            trainer = SCoReTrainer(model=model, config=config)
            episodes = trainer.revisions(trainer.eval_set, rounds=2, temperature=0.0, num_samples=1)
            tables[model] = [[bool(ok) for ok in episode.correct] for episode in episodes]
            changed[model] = [e.turns[1].rollout.text.strip() != e.turns[0].rollout.text.strip() for e in episodes]
    first = args.models[0]
    print(f"{args.problems} held-out {args.digits}-digit additions, greedy, turn 2 {args.prompt_format}")
    for model in args.models:
        t1, t2 = [row[0] for row in tables[model]], [row[1] for row in tables[model]]
        n = len(t1)
        line = (f"{model:<48} Acc@t1 {sum(t1) / n:.3f} Acc@t2 {sum(t2) / n:.3f} Delta {interval(t1, t2)} "
                f"i->c {sum((not a) and b for a, b in zip(t1, t2)) / n:.3f} c->i {sum(a and not b for a, b in zip(t1, t2)) / n:.3f} "
                f"changed: right {share_changed(t1, changed[model], True)}, wrong {share_changed(t1, changed[model], False)}")
        if model != first:
            r1, r2 = [row[0] for row in tables[first]], [row[1] for row in tables[first]]
            line += f"\n    vs first: Acc@t1 {interval(r1, t1)}, Acc@t2 {interval(r2, t2)}"
        print(line, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({model: {"table": tables[model], "changed": changed[model]} for model in args.models}))


if __name__ == "__main__":
    main()
