"""Held-out measurements of critique-in-the-loop and ExIt (docs/llm_part3.md), paired by problem.

    OMP_NUM_THREADS=1 python benchmarks/critique_exit.py critique outputs/critique-arith outputs/critique-arith-control
    OMP_NUM_THREADS=1 python benchmarks/critique_exit.py exploration outputs/critique-arith
    OMP_NUM_THREADS=1 python benchmarks/critique_exit.py exit base=assets/lm-arith exit=outputs/exit-arith/pipeline

``critique``: on 500 held-out ``add_hard`` problems, for the seed actor (iteration 0) and the trained
actor (iteration 1) with the run's critic: majority@4, critique-refine@4 and majority@8, the critic's
verdict and step agreement, and greedy accuracy of the seed actor, the trained actor and the control.
``exploration``: the seed actor's E-step on 500 fresh training problems, 4 samples + one refinement
under critique of each wrong one against 2..8 plain samples (the first k of 8), distinct correct
solutions and problems solved per problem. ``exit``: first attempt + 6 revisions (each seeing the
latest attempt), greedy and at T = 1, for each ``name=model`` folder; Acc@t1..t7, per-step deltas,
i->c / c->i, and each model minus the first per turn. Every difference carries the standard error
of the per-problem difference.
"""

from __future__ import annotations

import sys

import numpy as np

from selfgen.data.reasoning import step_feedback
from selfgen.data.tasks import derive_seed, get_task
from selfgen.eval.statistics import mean_difference, standard_error
from selfgen.train.llm.critique import critic_feedback, critique_refine, majority_vote, needs_refinement
from selfgen.train.llm.exploratory_iteration import revision_chain
from selfgen.train.llm.lm import EVAL_SEED
from selfgen.train.llm.modeling import load_policy
from selfgen.train.llm.prompts import PromptFormat
from selfgen.train.llm.revision import sample_revisions
from selfgen.train.llm.rewards import answer_key

TASK, FMT, COUNT, N = get_task("add_hard"), PromptFormat(), 500, 4
HELD_OUT = TASK.sample(COUNT, EVAL_SEED, "eval")


def verify(problem, text) -> bool:
    return TASK.verify(problem, text, FMT.answer)


def report(name: str, values: np.ndarray, reference: np.ndarray | None = None) -> None:
    line = f"{name:<58} {values.mean():.3f} +- {standard_error(values):.3f}"
    if reference is not None:
        line += "   diff %+.3f +- %.3f" % mean_difference(reference, values)
    print(line, flush=True)


def voted(rows: list[list[str]]) -> np.ndarray:
    """Per held-out problem: 1 when the majority answer of its texts verifies."""
    hits = []
    for problem, row in zip(HELD_OUT, rows):
        winner = majority_vote(row, FMT)
        chosen = next((t for t in row if answer_key(t, FMT.answer) == winner), None)
        hits.append(float(winner is not None and verify(problem, chosen)))
    return np.array(hits)


def critique(run: str, control: str) -> None:
    critic, tokenizer = load_policy(f"{run}/critic/model")
    for label in ("iteration-0", "iteration-1"):
        actor, _ = load_policy(f"{run}/{label}/model")
        result = critique_refine(actor, critic, tokenizer, HELD_OUT, prompt_format=FMT, num_samples=N, seed=derive_seed(0, "measure"))
        extra = sample_revisions(actor, tokenizer, FMT, HELD_OUT, rounds=1, num_samples=N, seed=derive_seed(1, "measure"))
        more = [[e.texts[0] for e in extra[i * N : (i + 1) * N]] for i in range(COUNT)]
        majority = voted(result.attempts)
        report(f"{label} majority@{N}", majority)
        report(f"{label} critique-refine@{N}", voted(result.finals), majority)
        report(f"{label} majority@{2 * N}", voted([a + b for a, b in zip(result.attempts, more)]), majority)
        rows = [
            (p, a, final, note)
            for p, attempts, finals, notes in zip(HELD_OUT, result.attempts, result.finals, result.feedback)
            for a, final, note in zip(attempts, finals, notes)
        ]
        right = np.array([verify(p, a) for p, a, _, _ in rows])
        flagged = np.array([needs_refinement(note) for *_, note in rows])
        named = [note == step_feedback(TASK, p, a, FMT.answer) for (p, a, _, note), ok in zip(rows, right) if not ok]
        fixed = [verify(p, final) for (p, _, final, _), ok, flag in zip(rows, right, flagged) if flag and not ok]
        broken = [not verify(p, final) for (p, _, final, _), ok, flag in zip(rows, right, flagged) if flag and ok]
        print(
            f"{label} critic: attempt accuracy {right.mean():.3f}, flagged {flagged.mean():.3f}, verdict accuracy "
            f"{(flagged != right).mean():.3f}, recall of wrong {flagged[~right].mean():.3f}, false alarms "
            f"{flagged[right].mean():.3f}, first wrong step named {np.mean(named):.3f}, flagged wrong fixed "
            f"{np.mean(fixed):.3f}, flagged right broken {np.mean(broken or [0.0]):.3f}", flush=True,
        )
    greedy = {}
    models = (("control", f"{control}/iteration-1/model"), ("seed actor", f"{run}/iteration-0/model"), ("critique-in-the-loop", f"{run}/iteration-1/model"))
    for name, path in models:
        actor, _ = load_policy(path)
        episodes = sample_revisions(actor, tokenizer, FMT, HELD_OUT, rounds=1, temperature=0.0)
        greedy[name] = np.array([float(verify(p, e.texts[0])) for p, e in zip(HELD_OUT, episodes)])
        report(f"greedy {name} (diff vs control)", greedy[name], greedy["control"] if name != "control" else None)


def exploration(run: str) -> None:
    critic, tokenizer = load_policy(f"{run}/critic/model")
    actor, _ = load_policy(f"{run}/iteration-0/model")
    problems = TASK.sample(COUNT, derive_seed(0, "exploration-measure"))
    first = sample_revisions(actor, tokenizer, FMT, problems, rounds=1, num_samples=N, seed=11, verify=verify)
    texts, owners, ok = [e.texts[0] for e in first], [e.problem for e in first], [e.correct[0] for e in first]
    wrong = [i for i, good in enumerate(ok) if not good]
    fixes = sample_revisions(
        actor, tokenizer, FMT, [owners[i] for i in wrong], rounds=2, first_attempts=[texts[i] for i in wrong],
        feedback=critic_feedback(critic, tokenizer, FMT), seed=12, verify=verify,
    )
    found = [{t for t, good in zip(texts[i * N : (i + 1) * N], ok[i * N : (i + 1) * N]) if good} for i in range(COUNT)]
    for index, episode in zip(wrong, fixes):
        if episode.correct[1]:
            found[index // N].add(episode.texts[1])
    plain = sample_revisions(actor, tokenizer, FMT, problems, rounds=1, num_samples=2 * N, seed=13, verify=verify)
    critique_distinct = np.array([len(f) for f in found], float)
    print(f"critique E-step: {(len(texts) + len(fixes)) / COUNT:.2f} actor generations per problem", flush=True)
    for k in range(2, 2 * N + 1):
        distinct = np.array([len({e.texts[0] for e in plain[i * 2 * N : i * 2 * N + k] if e.correct[0]}) for i in range(COUNT)], float)
        report(f"ReST-EM {k} samples: distinct correct (critique - this)", critique_distinct, distinct)
        report(f"ReST-EM {k} samples: solved (critique - this)", (critique_distinct > 0).astype(float), (distinct > 0).astype(float))
    report("critique 4 + refinements: distinct correct", critique_distinct)
    report("critique 4 + refinements: solved", (critique_distinct > 0).astype(float))


def exit_chains(models: list[str]) -> None:
    for temperature in (0.0, 1.0):
        tables = {}
        for name, path in (model.split("=", 1) for model in models):
            policy, tokenizer = load_policy(path)
            chains = revision_chain(policy, tokenizer, FMT, HELD_OUT, 6, temperature=temperature, seed=5)
            table = np.array([[verify(p, t) for t in chain] for p, chain in zip(HELD_OUT, chains)], float)
            tables[name] = table
            key = f"{name} T={temperature}"
            print(key, "Acc@t1..t7", " ".join(f"{m:.3f}+-{standard_error(c):.3f}" for m, c in zip(table.mean(0), table.T)), flush=True)
            print(key, "step deltas", " ".join("%+.3f+-%.3f" % mean_difference(table[:, k], table[:, k + 1]) for k in range(6)))
            print(key, "t7-t1 %+.3f+-%.3f" % mean_difference(table[:, 0], table[:, 6]), "t7-t2 %+.3f+-%.3f" % mean_difference(table[:, 1], table[:, 6]))
            steps = (f"{((1 - table[:, t - 1]) * table[:, t]).mean():.3f}/{(table[:, t - 1] * (1 - table[:, t])).mean():.3f}" for t in range(1, 7))
            print(key, "i->c / c->i per step", " ".join(steps), flush=True)
        first, *others = tables
        for other in others:
            diffs = (mean_difference(tables[first][:, t], tables[other][:, t]) for t in range(7))
            print(f"{other} - {first} T={temperature} per turn", " ".join("%+.3f+-%.3f" % d for d in diffs), flush=True)


if __name__ == "__main__":
    part, *arguments = sys.argv[1:]
    {"critique": critique, "exploration": exploration, "exit": lambda *m: exit_chains(list(m))}[part](*arguments)
